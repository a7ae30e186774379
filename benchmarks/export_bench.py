"""Export and import of a 100,000-word manuscript, through the service the app and CLI use.

The manuscript: The Great Gatsby's paragraphs (assets/texts), repeated until it has 100,000
words, a chapter every 40 paragraphs, written as a Markdown draft. Measured in one process:

1. importing it as a draft: reading, embedding every paragraph into long-term memory, the two
   model calls (short-term memory and plans; the real embedded model unless --scripted), and the
   one transaction that writes it;
2. exporting it in each format (md, txt, epub, docx, pdf, json with and without vectors), with the
   size of each file;
3. importing the JSON backup again (with vectors: no embedding).

Times are also given as ratios to the plain-text export, run in the same process, since the
machines here are noisy.

    .venv/bin/python benchmarks/export_bench.py [--words 100000] [--scripted]

Prints a table and writes benchmarks/results/export.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.longstory import TEXTS  # noqa: E402


def draft(words: int) -> bytes:
    from generation.corpus import paragraphs_of
    from storage.formats import manuscript_of, to_markdown

    source = paragraphs_of((TEXTS / "the-great-gatsby.txt").read_text())
    source = [p for p in source if len(p.split()) >= 8]
    paragraphs, total = [], 0
    while total < words:
        p = source[len(paragraphs) % len(source)]
        paragraphs.append(p)
        total += len(p.split())
    chapters = [f"Chapter {i // 40 + 1}" if i % 40 == 0 else None for i in range(len(paragraphs))]
    return to_markdown(manuscript_of("The Long Summer", paragraphs, chapters, author="storyloom bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--scripted", action="store_true", help="a scripted model instead of the embedded LLM")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "export.json"))
    args = parser.parse_args()

    service = _service(args.scripted)
    manuscripts = service.manuscripts
    raw = draft(args.words)
    loaded = time.perf_counter()
    service.context.memory.embedder.encode(["warm up"])  # model loading is not import time
    if not args.scripted:
        service.context.writer.backend.load()
    print(f"models loaded in {time.perf_counter() - loaded:.0f} s; draft {len(raw):,} bytes", flush=True)

    view, import_seconds, phases = _import_draft(manuscripts, raw)
    words = sum(len(p.split()) for p in view.paragraphs)
    exports, backup = _exports(manuscripts, view.id)
    base = exports["txt"]["seconds"]
    t = time.perf_counter()
    again = manuscripts.import_file("long-summer.json", backup)
    restore_seconds = time.perf_counter() - t
    assert again.paragraphs == view.paragraphs
    print(f"import the JSON backup: {restore_seconds:.1f} s", flush=True)

    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "model": "scripted" if args.scripted else service.context.writer.backend.name,
        "manuscript": {"words": words, "paragraphs": len(view.paragraphs), "chapters": len(set(filter(None, view.chapters))),
                       "draft_bytes": len(raw)},
        "import_draft": {"seconds": round(import_seconds, 1), "phases": {k: round(v, 1) for k, v in phases.items()},
                         "x_txt": round(import_seconds / base, 1) if base else None},
        "exports": exports,
        "import_backup": {"seconds": round(restore_seconds, 1), "x_txt": round(restore_seconds / base, 1) if base else None},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


def _service(scripted: bool):
    """The service the app builds, over a new data folder; with a scripted model when asked."""
    from app.config import Settings
    from app.wiring import build_service, quiet_libraries

    quiet_libraries()
    folder = Path(tempfile.mkdtemp(prefix="storyloom-export-bench-"))
    service = build_service(Settings(data_dir=folder))
    if not scripted:
        return service
    from dataclasses import replace

    from app.service import StoryService
    from tests.fakes import ScriptedBackend

    built = service.context
    return StoryService(built.db, built.memory, replace(built.writer, backend=ScriptedBackend()))


def _import_draft(manuscripts, raw: bytes):
    """(the imported story's view, seconds, seconds by phase) of importing the Markdown draft."""
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    view = manuscripts.import_file("long-summer.md", raw, on_progress=lambda line: marks.append(
        (time.perf_counter() - started, line)))
    import_seconds = time.perf_counter() - started
    phases = _phases(marks, import_seconds)
    words = sum(len(p.split()) for p in view.paragraphs)
    print(f"import as a draft: {import_seconds:.1f} s for {words:,} words, {len(view.paragraphs)} paragraphs "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in phases.items())})", flush=True)
    return view, import_seconds, phases


def _exports(manuscripts, story_id: int) -> tuple[dict[str, dict], bytes]:
    """(seconds, bytes and ratio to txt of each export, the JSON backup with vectors)."""
    exports = {}
    for fmt, vectors in [("txt", True), ("md", True), ("epub", True), ("docx", True), ("pdf", True),
                         ("json", True), ("json", False)]:
        name = fmt if fmt != "json" else ("json (with vectors)" if vectors else "json (no vectors)")
        t = time.perf_counter()
        done = manuscripts.export(story_id, fmt, vectors=vectors)
        exports[name] = {"seconds": round(time.perf_counter() - t, 2), "bytes": len(done.data)}
        if fmt == "json" and vectors:
            backup = done.data
    base = exports["txt"]["seconds"]
    for name, e in exports.items():
        e["x_txt"] = round(e["seconds"] / base, 1) if base else None
        print(f"export {name:22s} {e['seconds']:7.2f} s  {e['bytes']:>12,} bytes  ({e['x_txt']}x txt)", flush=True)
    return exports, backup


def _phases(marks: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds spent reading, embedding, in the model and writing, from the progress lines' times."""
    def at(prefix: str, last: bool = False) -> float:
        found = [t for t, line in marks if line.startswith(prefix)]
        return (found[-1] if last else found[0]) if found else 0.0

    read, embedded, model = at("Read "), at("Embedded ", last=True), at("The model writes")
    return {"read": read, "embed": embedded - read, "model": at("Saved") - model - _saved(marks),
            "write": _saved(marks), "total": total}


def _saved(marks: list[tuple[float, str]]) -> float:
    line = next((line for _, line in marks if line.startswith("Saved in ")), "Saved in 0 s.")
    return float(line.split()[2])


if __name__ == "__main__":
    main()
