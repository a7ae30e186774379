"""The import graph of the project's packages: no module imports one that imports it back (directly
or around a longer circle), and imports point down the layers of DESIGN.md only:
app -> generation -> memory -> storage -> common. Every import counts, at module level or inside a
function: an import hidden in a function still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("common", "storage", "memory", "generation", "app")  # bottom to top
UI_LIBRARIES = ("gradio",)  # only app/ lays out pages


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in LAYERS for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every name an import statement anywhere in the file refers to: `import a.b` gives a.b,
    `from a import b` gives a.b and a (b may be a module or a name in a); relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> the project modules it imports, project module -> everything it imports)."""
    modules = project_modules()
    edges, everything = {}, {}
    for module, path in modules.items():
        names = imported_names(path, module)
        everything[module] = names
        edges[module] = {name for name in names if name in modules and name != module}
    return edges, everything


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """A shortest circle through each group of modules that reach each other (Tarjan's strongly
    connected components), as a path that starts and ends at the same module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [circle(edges, group) for group in groups]


def circle(edges: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        reached = []
        for node in frontier:
            for target in sorted(edges[node] & group):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    reached.append(target)
        frontier = reached
    raise AssertionError(f"no circle in {sorted(group)}")


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_module_imports_one_that_imports_it_back():
    edges, _ = graph()
    found = cycles(edges)
    assert not found, "import cycles (each module is tied to the others of its group):\n" + "\n".join(
        " -> ".join(c) for c in found)


def test_imports_point_down_the_layers_only():
    edges, _ = graph()
    upward = [f"{a} -> {b}" for a, targets in sorted(edges.items()) for b in sorted(targets) if layer(b) > layer(a)]
    assert not upward, f"imports that point up ({' -> '.join(reversed(LAYERS))}):\n" + "\n".join(upward)


def test_only_app_imports_the_ui_library():
    _, everything = graph()
    found = [f"{module} imports {name}" for module, names in sorted(everything.items()) if layer(module) < layer("app")
             for name in sorted(names) if name.split(".")[0] in UI_LIBRARIES]
    assert not found, "\n".join(found)


def test_the_checks_see_a_circle_and_the_modules_of_every_layer():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    edges, _ = graph()
    assert {m.split(".")[0] for m in edges} == set(LAYERS)
    assert "generation.backend" in edges["generation.recurrence"]  # a module-level import
    assert "generation.sca" in edges["app.service"] or any(  # a function-level one, wherever the service lives
        "generation.sca" in targets for m, targets in edges.items() if m.startswith("app.service"))
