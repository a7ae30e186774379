"""The manuscript pane: the story in a scrolling pane of its own (the writing controls stay on
screen), the newest paragraph in view, each paragraph numbered as the Edit and Inspect tabs count
them, and a chapter list that jumps to any chapter.

The page is sent what changed, not the manuscript: a per-session state (`manuscript_seen`) keeps
the version of each paragraph this page was sent, and an update carries only the paragraphs
that differ from it, and the count. A step on a 100,000-word story sends one paragraph. The
browser keeps the rest; an update made from another version than the one it holds (two actions
crossing) makes it ask for the whole manuscript again (`resend`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import gradio as gr

from app.service import StoryView

# A static skeleton: Gradio re-renders the template when the value changes, and leaves the DOM as
# it is when the template's text is the same, so the paragraphs the script puts in stay.
SKELETON = """<div class="ms">
  <div class="ms-bar"><select class="ms-chapters" aria-label="Jump to a chapter"></select></div>
  <div class="ms-pane" tabindex="0"></div>
</div>"""

CSS = """
.ms-bar { display: flex; justify-content: flex-end; min-height: 0; }
.ms-chapters { max-width: 60%; font-size: 0.85em; margin-bottom: 4px; }
.ms-chapters:empty { display: none; }
.ms-pane { max-height: 55vh; overflow-y: auto; padding-right: 8px; scroll-behavior: auto; }
.ms-pane p { white-space: pre-line; position: relative; margin-left: 3.2em; }
.ms-pane p::before { content: attr(data-n); position: absolute; left: -3.4em; width: 2.8em; text-align: right;
                     color: var(--body-text-color-subdued); font-size: 0.75em; line-height: 2.1; }
.ms-pane h3 { margin-left: 2.7em; }
"""

# The browser side: apply each update to the paragraphs it holds; ask for all of them when an
# update was made from another version than the one it holds.
SCRIPT = """
const pane = element.querySelector(".ms-pane");
const chapters = element.querySelector(".ms-chapters");
let held = {story: null, token: null};

function paragraph(n, chapter, text) {
  const part = document.createElement("div");
  part.className = "ms-par";
  if (chapter) {
    const h = document.createElement("h3");
    h.textContent = chapter;
    part.appendChild(h);
  }
  const p = document.createElement("p");
  p.dataset.n = n;
  p.textContent = text;
  part.appendChild(p);
  return part;
}

function listChapters() {
  chapters.replaceChildren();
  const heads = pane.querySelectorAll(".ms-par h3");
  if (!heads.length) return;
  const first = document.createElement("option");
  first.textContent = "Jump to a chapter…";
  first.value = "";
  chapters.appendChild(first);
  heads.forEach((h, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = h.textContent + " (¶ " + h.nextElementSibling.dataset.n + ")";
    chapters.appendChild(o);
  });
}

chapters.addEventListener("change", () => {
  const heads = pane.querySelectorAll(".ms-par h3");
  const h = heads[Number(chapters.value)];
  if (h) pane.scrollTop = h.offsetTop - pane.offsetTop;
  chapters.value = "";
});

function apply() {
  const v = props.value;
  if (!v || typeof v !== "object" || !v.token) {
    pane.replaceChildren();
    chapters.replaceChildren();
    held = {story: null, token: null};
    return;
  }
  if (v.base !== null && (v.story !== held.story || v.base !== held.token)) {
    trigger("click");  // made from another version than this page holds: ask for all of it
    return;
  }
  if (v.base === null) pane.replaceChildren();
  let title = pane.querySelector("h2");
  if (!title) {
    title = document.createElement("h2");
    pane.prepend(title);
  }
  title.textContent = v.title;
  const parts = pane.getElementsByClassName("ms-par");
  while (parts.length > v.count) parts[parts.length - 1].remove();
  let last = null;
  for (const [i, chapter, text] of v.at) {
    const part = paragraph(i + 1, chapter, text);
    if (i < parts.length) parts[i].replaceWith(part);
    else pane.appendChild(part);
    last = part;
  }
  held = {story: v.story, token: v.token};
  listChapters();
  if (v.base === null || (last && last === parts[parts.length - 1])) pane.scrollTop = pane.scrollHeight;
  else if (last) last.scrollIntoView({block: "nearest"});
}

watch("value", apply);
apply();
"""


@dataclass(frozen=True)
class Pane:
    """A story's manuscript as a handler shows it; the page turns it into an update (`update`)
    against what this page was sent before. `whole`: send all of it."""

    view: StoryView
    whole: bool = False


def versions(view: StoryView) -> list[str]:
    """The version of each paragraph as shown: its step, text and chapter title."""
    return [view.paragraph_version(i) for i in range(len(view.paragraphs))]


def token_of(story_id: int, shown: list[str]) -> str:
    return hashlib.sha256(f"{story_id}:{','.join(shown)}".encode()).hexdigest()[:16]


def update(pane: Pane, seen: dict | None) -> tuple[dict, dict]:
    """(what the browser is sent, the new `manuscript_seen`): the paragraphs whose version differs
    from the one this page was sent (all of them for another story, or when `whole`), as
    [index, chapter title or None, text], with the count, the title, and the token of the version
    the update was made from (`base`, None: replace all) and of the one it makes."""
    view = pane.view
    shown = versions(view)
    token = token_of(view.id, shown)
    before = seen.get("versions", []) if seen and seen.get("story") == view.id and not pane.whole else None
    changed = range(len(shown)) if before is None else [i for i, v in enumerate(shown)
                                                        if i >= len(before) or before[i] != v]
    sent = {"story": view.id, "title": view.title, "count": len(shown), "token": token,
            "base": None if before is None else seen["token"],
            "at": [[i, view.chapters[i], view.paragraphs[i]] for i in changed]}
    return sent, {"story": view.id, "versions": shown, "token": token}


class Held:
    """The manuscript as a page holds it, kept from the updates it is sent as the browser's
    script keeps it: for API clients (a gradio_client session is a page) and tests."""

    def __init__(self):
        self.story: int | None = None
        self.token: str | None = None
        self.title = ""
        self.paragraphs: list[str] = []

    def apply(self, sent) -> bool:
        """Apply an update (anything else is no update: True); False when it was made from another
        version than the one held, which a page then asks to be sent whole."""
        if not isinstance(sent, dict) or "at" not in sent:
            return True
        if sent["base"] is not None and (sent["story"] != self.story or sent["base"] != self.token):
            return False
        held = [] if sent["base"] is None else self.paragraphs[:sent["count"]]
        for i, _, text in sent["at"]:  # in order: changed ones in place, new ones at the end
            if i < len(held):
                held[i] = text
            else:
                held.append(text)
        self.story, self.token, self.title, self.paragraphs = sent["story"], sent["token"], sent["title"], held
        return True


def text_of(sent: dict | None) -> str:
    """The text an update carries (its title and paragraphs), for API clients and tests ("" for
    an output that is no update: the event left the manuscript as it was)."""
    if not isinstance(sent, dict) or "at" not in sent:
        return ""
    return "\n\n".join([sent["title"], *(f"{c}\n\n{t}" if c else t for _, c, t in sent["at"])])


def build() -> gr.HTML:
    return gr.HTML(None, html_template=SKELETON, css_template=CSS, js_on_load=SCRIPT, elem_id="manuscript",
                   padding=False)
