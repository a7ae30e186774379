"""The Loom tab: the story's tree of steps, every branch, the manuscript's path highlighted, each
paragraph by its first words (its plan on hover). Clicking a paragraph continues the story from its
branch; "compare" puts it beside the manuscript's paragraph at that place, and its branch can be
named. A branch indents where the story forks, so a long straight story stays flat."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.service.loom import LoomView
from app.ui.page import STORY_PAGE, Page, Shown, action, literal, plain, show

TAB = "Loom"
COMPARED = ("loom_picked", "loom_current", "loom_name", "loom_step")

SKELETON = '<div class="loom-tree" tabindex="0"></div>'

CSS = """
.loom-tree { max-height: 60vh; overflow-y: auto; font-size: 0.9em; }
.loom-row { display: flex; gap: 0.5em; align-items: baseline; padding: 1px 0; border-left: 2px solid transparent; }
.loom-row.on { border-left-color: var(--color-accent); background: var(--background-fill-secondary); }
.loom-row.head .loom-go { font-weight: bold; }
.loom-n { color: var(--body-text-color-subdued); min-width: 4.5em; font-size: 0.85em; }
.loom-go { text-align: left; flex: 1; background: none; border: none; padding: 0; cursor: pointer; color: inherit;
           font: inherit; font-weight: normal; }
.loom-go:hover { text-decoration: underline; }
.loom-label { font-size: 0.8em; padding: 0 0.4em; border-radius: 4px; background: var(--color-accent-soft); }
.loom-cmp { font-size: 0.8em; }
"""

# Rows in depth-first order; children indent one step where a paragraph has more than one.
SCRIPT = """
const list = element.querySelector(".loom-tree");

function part(tag, cls, text) {
  const e = document.createElement(tag);
  e.className = cls;
  e.textContent = text;
  return e;
}

function render() {
  const v = props.value;
  list.replaceChildren();
  if (!v || !v.nodes) return;
  const kids = new Map();
  for (const n of v.nodes) {
    const parent = n[1] === null ? 0 : n[1];
    if (!kids.has(parent)) kids.set(parent, []);
    kids.get(parent).push(n);
  }
  const stack = (kids.get(0) || []).slice().reverse().map((n) => [n, 0]);
  while (stack.length) {
    const [n, indent] = stack.pop();
    const [id, , number, opening, plan, label, version, versions, onPath] = n;
    const row = part("div", "loom-row" + (onPath ? " on" : "") + (id === v.head ? " head" : ""), "");
    row.style.paddingLeft = indent * 1.4 + "em";
    row.dataset.step = id;
    row.appendChild(part("span", "loom-n", "¶ " + number + (versions > 1 ? " · " + version + "/" + versions : "")));
    const go = part("button", "loom-go", opening);
    go.title = plan ? "Plan: " + plan : "";
    go.addEventListener("click", () => trigger("select", {index: id, value: "switch:" + id}));
    row.appendChild(go);
    if (label) row.appendChild(part("span", "loom-label", label));
    const compare = part("button", "loom-cmp", "compare");
    compare.addEventListener("click", () => trigger("select", {index: id, value: "compare:" + id}));
    row.appendChild(compare);
    list.appendChild(row);
    const children = kids.get(id) || [];
    for (const c of children.slice().reverse()) stack.push([c, children.length > 1 ? indent + 1 : indent]);
  }
  const head = list.querySelector(".loom-row.head");
  if (head) list.scrollTop = head.offsetTop - list.offsetTop - list.clientHeight / 2;
}

watch("value", render);
render();
"""


def build(page: Page) -> gr.Tab:
    with gr.Tab(TAB, id="loom") as tab:
        gr.Markdown("Every version of every paragraph, as a tree; the manuscript's path is marked. Click a "
                    "paragraph to continue the story from its branch; *compare* puts it beside the manuscript's "
                    "paragraph at that place.")
        tree = gr.HTML(None, html_template=SKELETON, css_template=CSS, js_on_load=SCRIPT, elem_id="loom")
        with gr.Row(equal_height=False):
            picked = gr.Markdown(elem_id="loom-picked")
            current = gr.Markdown(elem_id="loom-current")
        with gr.Row():
            name = gr.Textbox(label="Name the branch that starts at the compared paragraph", scale=3,
                              elem_id="loom-name")
            save = gr.Button("Save the name", scale=1, elem_id="loom-name-save")
        step = gr.State(None)  # the compared step, which a name goes to (in the tab: a Tabs child that is
        # not a tab shifts the tabs' labels)
    page.add(loom_tab=tab, loom=tree, loom_picked=picked, loom_current=current, loom_name=name,
             loom_name_button=save, loom_step=step)
    return tab


def tree_value(view: LoomView) -> dict:
    return {"head": view.head, "nodes": [[n.id, n.parent, n.number, n.opening, n.plan, n.label, n.version, n.versions,
                                          n.on_path] for n in view.nodes]}


@action
def load(service: StoryService, sid) -> Shown:
    return {"loom": tree_value(service.loom.tree(int(sid)))}


def follow(service: StoryService, sid, shown_tab) -> Shown:
    """After the story changed or another opened: the tree again when the tab is shown."""
    if shown_tab != TAB or sid is None:
        return {}
    return {"loom": load(service, sid).get("loom")}  # a problem is the action's to report


@action(page=True)
def act(service: StoryService, sid, picked: gr.SelectData) -> Shown:
    """A click in the tree: "switch:ID" continues the story from that branch; "compare:ID" shows
    that paragraph beside the manuscript's."""
    what, _, step = str(picked.value).partition(":")
    if what == "switch":
        view = service.switch(int(sid), int(step))
        number = len(view.paragraphs)
        return {**show(service, view, f"Switched to another branch: the manuscript now ends at paragraph {number}."),
                "loom": tree_value(service.loom.tree(int(sid)))}
    found = service.loom.compare(int(sid), int(step))
    node = found.picked
    name = f" · *{plain(node.label)}*" if node.label else ""
    heading = f"**Paragraph {found.number}, version {node.version} of {node.versions}**{name}"
    if found.current == node.id:
        now = "**The same paragraph is in the manuscript now.**"
    elif found.current is None:
        now = f"**The manuscript has no paragraph {found.number} now.**"
    else:
        now = f"**In the manuscript now**\n\n{literal(found.current_text)}"
    return {"loom_picked": f"{heading}\n\n{literal(found.picked_text)}", "loom_current": now,
            "loom_name": node.label or "", "loom_step": node.id, "status": f"Comparing paragraph {found.number}."}


@action
def name(service: StoryService, sid, step, label: str) -> Shown:
    if step is None:
        return {"status": "**Nothing was saved:** click *compare* on a paragraph first; its branch gets the name."}
    view = service.loom.name(int(sid), int(step), label)
    number = next(n.number for n in view.nodes if n.id == int(step))
    said = f"named «{plain(label.strip())}»" if label and label.strip() else "no longer named"
    return {"loom": tree_value(view), "status": f"The branch from paragraph {number} is {said}."}


def wire(page: Page, follow_story: Callable) -> None:
    on = page.on
    page["loom_tab"].select(on(load), page["story_id"], page.of("loom", "writing", "status"), api_name="loom")
    follow_story(page["loom"].select(on(act, pane=True), page.story("story_id"),
                                     [*page.of(*STORY_PAGE), page["loom"], *page.of(*COMPARED)],
                                     api_visibility="undocumented"))
    page["loom_name_button"].click(on(name), page.of("story_id", "loom_step", "loom_name"),
                                   page.of("loom", "status"), api_name="name_branch")
