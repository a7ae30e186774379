"""The Gradio UI: lays out components and wires them to the story service. No story logic here;
every action is one service call, run in a worker thread so its text can stream in."""

from __future__ import annotations

import functools
import html
import logging
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from app import clarify_panel, repetition_tab
from app.inspector import inspector_markdown
from app.people import People
from app.service.manuscripts import read_file
from app.service.memories import EntryRow
from app.service.reading import ReaderView
from app.service import StoryService, StoryView
from storage import repo
from storage.db import OUTAGES, unavailable
from common.errors import Conflict, InvalidInput, StoryloomError

log = logging.getLogger("storyloom.ui")

PART_NAMES = {"title": "the title", "outline": "the outline", "paragraph": "the paragraph",
              "short_memory": "the short-term memory", "plan_1": "plan 1", "plan_2": "plan 2", "plan_3": "plan 3",
              "choice": "the choice of plan", "revised_plan": "the revised plan",
              "clarify": "a clearer wording of the revised plan (SCA)"}
MEMORY_HEADERS = ["id", "kind", "from", "pinned", "stale", "keys", "last retrieved", "text"]
MEMORY_ROWS = 500  # the table shows the newest entries; search finds any


def memory_rows(rows: list[EntryRow]) -> list[list]:
    return [[r.id, r.kind, r.where, "📌" if r.pinned else "", "stale" if r.stale else "", ", ".join(r.keys),
             r.last_retrieved.strftime("%Y-%m-%d %H:%M") if r.last_retrieved else "", r.text]
            for r in reversed(rows[-MEMORY_ROWS:])]


def parse_keys(text: str | None) -> list[str]:
    return [k for k in (text or "").split(",") if k.strip()]


class Problem(str):
    """A message for the person, yielded by `stream` instead of a result. `draft`: the paragraph
    the model had written when saving it failed, shown so that it is not lost."""

    def __new__(cls, error: StoryloomError, draft: str = ""):
        problem = super().__new__(cls, str(error))
        problem.stale_page = isinstance(error, Conflict)  # the story moved on: show it as it is now
        problem.draft = draft
        return problem


def stream(action: Callable, *args, steps: bool = False, **kwargs) -> Iterator[tuple | StoryView | Problem]:
    """Run a service action in a worker thread. Yields ("text", part, text) while it writes,
    ("step", number, total, view) after each step of a run (with steps=True), then the resulting
    StoryView, or a Problem when it failed with a message for the person."""
    events: queue.Queue = queue.Queue()
    outcome: dict = {}
    written: dict[str, str] = {}  # the latest text of each part of the step in progress
    if steps:
        def on_step(number: int, total: int, view) -> None:
            written.clear()  # that step is saved
            events.put(("step", number, total, view))
        kwargs["on_step"] = on_step

    def on_text(part: str, text: str) -> None:
        written[part] = text
        events.put(("text", part, text))

    def work() -> None:
        try:
            outcome["view"] = action(*args, on_text=on_text, **kwargs)
        except StoryloomError as e:
            outcome["error"] = e
        except OUTAGES as e:  # the database went away mid-action: rolled back, the text kept on screen
            log.warning("action %s: %s", getattr(action, "__name__", action), e)
            outcome["error"] = unavailable(e)
            outcome["draft"] = written.get("paragraph", "")
        except Exception as e:  # a bug: logged with its traceback, one line for the person
            log.exception("action %s failed", getattr(action, "__name__", action))
            outcome["error"] = StoryloomError(f"unexpected error ({type(e).__name__}: {e}); nothing was written")
        finally:
            events.put(None)

    threading.Thread(target=work, name="storyloom-action", daemon=True).start()
    while (event := events.get()) is not None:
        yield event
    yield Problem(outcome["error"], outcome.get("draft", "")) if "error" in outcome else outcome["view"]


def literal(text: str, tag: str = "p") -> str:
    """Model text as an HTML block for a Markdown component: shown as written, never read as Markdown
    or HTML (a stray `<unk>`, `#` or `---` in a paragraph would otherwise eat it or split it)."""
    return f"<{tag}>{html.escape(text.strip()).replace(chr(10), '<br>')}</{tag}>"


def manuscript_markdown(view: StoryView) -> str:
    """One <h2> title, then one <p> per paragraph (the page counts them) with chapter titles as <h3>."""
    parts = [literal(view.title, "h2")]
    for paragraph, chapter in zip(view.paragraphs, view.chapters):
        if chapter:
            parts.append(literal(chapter, "h3"))
        parts.append(literal(paragraph))
    return "\n\n".join(parts)


EXPORT_CHOICES = [("EPUB (e-book)", "epub"), ("DOCX (Word)", "docx"), ("PDF", "pdf"), ("Markdown", "md"),
                  ("Plain text", "txt"), ("JSON backup (whole story)", "json")]


class ExportFolder:
    """Where exports wait to be downloaded: a temporary folder per app, each export in its own
    subfolder (two stories may share a title); exports older than an hour are removed."""

    def __init__(self, keep_seconds: float = 3600):
        self.root = Path(tempfile.mkdtemp(prefix="storyloom-exports-"))
        self.keep_seconds = keep_seconds
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)  # gone with the app

    def save(self, filename: str, data: bytes) -> Path:
        cutoff = time.time() - self.keep_seconds
        for old in self.root.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        target = Path(tempfile.mkdtemp(dir=self.root)) / filename
        try:
            target.write_bytes(data)
        except OSError as e:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise InvalidInput(f"cannot save the export for download: {e.strerror}") from None
        return target


def cost_line(view: StoryView) -> str:
    c = view.last_step
    return (f"Paragraph {len(view.paragraphs)} written in {c['seconds']:.1f} s "
            f"({c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, {c['retries']} retries).")


def build_app(service: StoryService, people: People | None = None, writers: int = 1) -> gr.Blocks:
    """The page. `people` says whose stories each event may touch (default: accounts off, everyone's).
    Events that call the model (steps, clarify, reading, imports) run `writers` at a time, and auto
    runs `writers` at a time beside them; the rest of the page is never held up behind either. The
    model calls inside all take turns, first come first served, on the one model."""
    model = {"concurrency_id": "model", "concurrency_limit": writers}
    people = people or People(service, accounts_on=False)
    exports = ExportFolder()
    runs: dict[tuple, threading.Event] = {}  # (owner, story id) -> the stop signal of its running auto mode

    def story_choices(desk: StoryService) -> list[tuple[str, int]]:
        return [(f"{i}: {t}", i) for i, t in desk.list_stories()]

    with gr.Blocks(title="storyloom") as app:
        with gr.Row():
            gr.Markdown("# storyloom\nWrite a story with a local language model, one paragraph at a time.")
            who = gr.HTML(elem_id="who")  # with accounts on: who is logged in, and a way out
        story_id = gr.State(None)
        seen_head = gr.State(None)  # the head step this page shows, so a stale tab cannot write past it
        with gr.Row():
            with gr.Column(scale=1):
                stories = gr.Dropdown(label="Your stories (or type a story's number)", choices=[], value=None,
                                      allow_custom_value=True, elem_id="stories")
                with gr.Accordion("New story", open=True):
                    premise = gr.Textbox(label="Premise", lines=4, elem_id="premise",
                                         placeholder="What is the story about? Who, where, what goes wrong?")
                    title = gr.Textbox(label="Title (optional)", elem_id="title")
                    with gr.Row():
                        start_button = gr.Button("Start the story", variant="primary", elem_id="start", scale=2)
                        clarify_premise_button = gr.Button("Clarify the premise (SCA)", elem_id="clarify-premise",
                                                           scale=1)
                memory = gr.Textbox(label="Short-term memory (the story so far; the next step starts from it)",
                                    lines=10, interactive=True, elem_id="short-memory")
                save_memory_button = gr.Button("Save the short-term memory", size="sm", elem_id="save-memory")
            with gr.Column(scale=2):
                manuscript = gr.Markdown(elem_id="manuscript")
                with gr.Row():
                    regenerate_button = gr.Button("↻ Write this paragraph again", size="sm", elem_id="regenerate")
                    undo_button = gr.Button("↶ Undo", size="sm", elem_id="undo")
                    older_button = gr.Button("◀", size="sm", elem_id="older", scale=0)
                    version = gr.Markdown("", elem_id="version")
                    newer_button = gr.Button("▶", size="sm", elem_id="newer", scale=0)
                writing = gr.Markdown(elem_id="writing")
                with gr.Tabs():
                    with gr.Tab("Write", id="write"):
                        plans = gr.Radio(label="What happens next? Pick a plan…", choices=[], elem_id="plans")
                        instruction = gr.Textbox(label="…edit it, or write your own instruction", lines=2,
                                                 elem_id="instruction")
                        with gr.Row():
                            step_button = gr.Button("Write the next paragraph", variant="primary", elem_id="step",
                                                    scale=3)
                            clarify_button = gr.Button("Clarify the instruction (SCA)", elem_id="clarify", scale=1)
                        clarifying = clarify_panel.build_write(clarify_button)
                    with gr.Tab("Auto", id="auto"):
                        gr.Markdown("A simulated reader picks the most promising plan and revises it, step "
                                    "after step. Stop at any time: the step in progress is dropped, "
                                    "nothing half-written is kept.")
                        auto_steps = gr.Number(label="Steps", value=3, minimum=1, maximum=500, precision=0,
                                               elem_id="auto-steps")
                        with gr.Row():
                            auto_button = gr.Button("Write unattended", variant="primary", elem_id="auto-start")
                            stop_button = gr.Button("Stop", variant="stop", elem_id="auto-stop")
                        auto_progress = gr.Markdown(elem_id="auto-progress")
                        clarifying.auto = clarify_panel.build_auto()
                    with gr.Tab("Edit", id="edit"):
                        edit_number = gr.Number(label="Paragraph number", value=1, minimum=1, precision=0,
                                                elem_id="edit-number")
                        edit_text = gr.Textbox(label="Paragraph", lines=8, elem_id="edit-text")
                        chapter = gr.Textbox(label="Chapter title starting at this paragraph (empty: none)",
                                             elem_id="chapter")
                        save_button = gr.Button("Save paragraph and chapter", variant="primary", elem_id="save")
                    with gr.Tab("Read", id="read"):
                        gr.Markdown("Play the story as interactive fiction from its latest scene. Your "
                                    "choices write your own branch; the manuscript is not changed.")
                        with gr.Row():
                            reader_name = gr.Textbox(label="Reader", value="reader", elem_id="reader-name")
                            read_button = gr.Button("Start a new playthrough", elem_id="read-start")
                        playthrough = gr.Dropdown(label="…or continue a playthrough", choices=[],
                                                  elem_id="playthroughs")
                        scene = gr.Markdown(elem_id="scene")
                        choices = gr.Radio(label="What do you do?", choices=[], elem_id="choices")
                        choose_button = gr.Button("Do it", variant="primary", elem_id="choose")
                    with gr.Tab("Memory", id="memory") as memory_tab:
                        gr.Markdown("Long-term memory: what steps retrieve by meaning. Paragraph chunks and "
                                    "summaries come from the steps; add notes (found by meaning) and lore "
                                    "(put in the prompt when one of its keys is in the plan or the recent "
                                    "text). Pinned entries are in every prompt. Click a row to edit it.")
                        with gr.Row():
                            memory_query = gr.Textbox(label="Search as a step would", scale=4, elem_id="memory-query")
                            memory_k = gr.Number(label="Entries", value=8, minimum=1, maximum=50, precision=0,
                                                 scale=1, elem_id="memory-k")
                            memory_search_button = gr.Button("Search", scale=1, elem_id="memory-search")
                        found = gr.Dataframe(headers=["score or rule", "cosine", "words", "id", "kind", "from", "text"], value=[],
                                             interactive=False, wrap=True, max_height=300, elem_id="memory-found",
                                             column_widths=["9%", "8%", "7%", "6%", "9%", "12%", "49%"])
                        with gr.Row():
                            entry_id = gr.Number(label="Entry id (click a row; for a new entry use Add)", precision=0,
                                                 scale=1,
                                                 elem_id="entry-id")
                            entry_keys = gr.Textbox(label="Lore keys, comma-separated", scale=2, elem_id="entry-keys")
                            entry_pinned = gr.Checkbox(label="Pinned: in every prompt", scale=1,
                                                       elem_id="entry-pinned")
                        entry_text = gr.Textbox(label="Entry text", lines=3, elem_id="entry-text")
                        with gr.Row():
                            entry_save_button = gr.Button("Save entry", variant="primary", elem_id="entry-save")
                            entry_note_button = gr.Button("Add as a new note", elem_id="entry-add-note")
                            entry_lore_button = gr.Button("Add as new lore", elem_id="entry-add-lore")
                            entry_delete_button = gr.Button("Delete entry", variant="stop", elem_id="entry-delete")
                        show_stale = gr.Checkbox(label="Show stale entries (from text edited since)",
                                                 elem_id="show-stale")
                        memory_table = gr.Dataframe(headers=MEMORY_HEADERS, value=[], interactive=False, wrap=True,
                                                    max_height=600, elem_id="memory-table",
                                                    column_widths=["6%", "9%", "11%", "7%", "6%", "10%", "11%", "40%"])
                    repetition = repetition_tab.build(service, story_id, people.handler)
                    with gr.Tab("Inspect", id="inspect"):
                        inspect_number = gr.Number(label="Paragraph number (0 or empty: the last)", precision=0,
                                                   elem_id="inspect-number")
                        inspect_button = gr.Button("Show what the model saw", elem_id="inspect")
                        inspected = gr.Markdown(elem_id="inspected")
                    with gr.Tab("Files", id="files"):
                        gr.Markdown("**Export** the manuscript (the current branch, with its chapters) for "
                                    "readers and publishers, or the whole story as a JSON backup: every branch, "
                                    "the memories and the settings.")
                        with gr.Row():
                            export_format = gr.Radio(label="Format", choices=EXPORT_CHOICES, value="epub",
                                                     elem_id="export-format", scale=3)
                            export_vectors = gr.Checkbox(label="JSON: include memory vectors (larger file, "
                                                         "no re-embedding on import)", value=True,
                                                         elem_id="export-vectors", scale=1)
                        with gr.Row():
                            export_button = gr.Button("Export", variant="primary", elem_id="export")
                            download = gr.DownloadButton("Download", visible=False, elem_id="download")
                        gr.Markdown("**Import** a storyloom JSON backup (restored exactly, as a new story), or a "
                                    "Markdown / plain-text draft written elsewhere: it becomes a new story, one "
                                    "step per paragraph, with chapters from its headings and its memory built "
                                    "from the text, so you can write on from where it ends.")
                        import_file = gr.File(label="A .json backup, or a .md / .txt draft",
                                              file_types=[".json", ".md", ".markdown", ".txt"], type="filepath",
                                              elem_id="import-file")
                        import_premise = gr.Textbox(label="Premise of a draft (optional; default: its first "
                                                    "sentences)", lines=2, elem_id="import-premise")
                        import_button = gr.Button("Import as a new story", variant="primary", elem_id="import")
                status = gr.Markdown(elem_id="status")
                repetition.wire(status)
                clarify_panel.wire(people.handler, clarifying, story_id, instruction, premise, clarify_premise_button,
                                   status, model)

        # -- how results reach the page ------------------------------------------------

        def show(desk: StoryService, view: StoryView, note: str = "") -> dict:
            choices = [(f"{n}. {p}", n) for n, p in enumerate(view.plans, 1)]
            number, count = view.version
            return {story_id: view.id, seen_head: view.head_step_id,
                    stories: gr.update(choices=story_choices(desk), value=view.id),
                    manuscript: manuscript_markdown(view), memory: view.short_memory,
                    plans: gr.update(choices=choices, value=None), instruction: "", writing: "",
                    version: f"version {number} of {count}" if count > 1 else "", status: note}

        def problem(message: str) -> dict:
            gr.Warning(message)
            return {writing: "", status: f"**Nothing was written:** {message}"}

        def render(desk: StoryService, event, note: Callable[[StoryView], str] = cost_line, sid=None) -> dict:
            if isinstance(event, Problem):
                if event.stale_page and sid:
                    return {**show(desk, desk.view(sid)), **problem(event)}
                if event.draft:  # not saved: the text stays on screen, to copy
                    return {**problem(event), writing: f"*Not saved; the paragraph as written:*\n\n"
                                                       f"{literal(event.draft)}"}
                return problem(event)
            if isinstance(event, StoryView):
                return show(desk, event, note(event))
            if event[0] == "step":
                _, number, total, view = event
                return {**show(desk, view, ""), auto_progress: f"**Step {number} of {total} written.**"}
            _, part, text = event
            if part == "import":
                return {writing: f"*Importing…* {literal(text)}"}
            return {writing: f"*Writing {PART_NAMES.get(part, part)}…*\n\n{literal(text)}"}

        def run(desk: StoryService, action, sid, *args, **kwargs) -> Iterator[dict]:
            for event in stream(action, sid, *args, **kwargs):
                yield render(desk, event, sid=sid)

        def at_once(desk: StoryService, action, sid, *args, **kwargs) -> dict:
            try:
                view = action(sid, *args, **kwargs)
            except StoryloomError as e:
                return render(desk, Problem(e), sid=sid)
            return show(desk, view, "")

        def needs_story(sid) -> dict | None:
            return problem("Start or open a story first.") if sid is None else None

        # -- actions: each takes the desk of the person who asked, then the page's inputs ------

        def list_own_stories(desk: StoryService):
            return gr.update(choices=story_choices(desk))

        def logged_in(desk: StoryService) -> str:
            owner = desk.context.owner
            if owner is repo.ANYONE:
                return ""
            return (f'<p style="text-align: right">Logged in as <b>{html.escape(owner)}</b> · '
                    '<a href="logout">Log out</a></p>')

        def open_story(desk: StoryService, sid):
            if sid is None or str(sid).strip() == "":
                return {}
            number = str(sid).split(":")[0].strip()  # a choice's value, or what the person typed
            if not (number.isascii() and number.isdecimal()) or int(number) >= 2**31:
                return problem(f"There is no story {str(sid)[:40]!r}: pick one of yours or type its number.")
            return at_once(desk, desk.view, int(number))

        def start(desk: StoryService, text: str, title_text: str):
            for event in stream(desk.new_story, text, title_text or None):
                yield render(desk, event)

        def pick(desk: StoryService, plan_number, sid):
            if plan_number is None or sid is None:
                return gr.update()
            return desk.view(int(sid)).plans[int(plan_number) - 1]

        def write_next(desk: StoryService, sid, head, plan_number, text: str):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            text = (text or "").strip()
            if not text and plan_number is None:
                yield problem("Pick one of the plans or write your own instruction.")
                return
            try:
                plans_now = desk.view(int(sid)).plans
            except StoryloomError as e:
                yield problem(str(e))
                return
            if plan_number is not None and text in ("", plans_now[int(plan_number) - 1]):
                yield from run(desk, desk.step, int(sid), int(plan_number), None, seen_head=head)
            else:
                yield from run(desk, desk.step, int(sid), None, text, seen_head=head)

        def regenerate(desk: StoryService, sid, head):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            yield from run(desk, desk.regenerate, int(sid), seen_head=head)

        def simple(action: Callable[..., StoryView]) -> Callable:
            """A quick action(service, story id, seen head) that shows the story as it then is."""
            def handler(desk: StoryService, sid, head):
                return needs_story(sid) or at_once(desk, functools.partial(action, desk), int(sid), head)
            handler.__name__ = action.__name__
            return handler

        def undo(service: StoryService, sid, head):
            return service.undo(sid, head)

        def older(service: StoryService, sid, head):
            return service.other_version(sid, -1, head)

        def newer(service: StoryService, sid, head):
            return service.other_version(sid, +1, head)

        def auto(desk: StoryService, sid, steps):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            run_key = (desk.context.owner, int(sid))  # only its owner can stop it
            cancel = threading.Event()
            if runs.setdefault(run_key, cancel) is not cancel:  # one step: two tabs cannot both start
                yield problem("Auto mode is already running on this story.")
                return
            try:
                for event in stream(desk.auto, int(sid), int(steps or 0), cancel=cancel, steps=True):
                    yield render(desk, event,
                                 lambda view: "Auto mode stopped." if cancel.is_set() else "Auto mode done.")
            finally:  # also when the page went away mid-run: nobody could press Stop any more
                cancel.set()
                if runs.get(run_key) is cancel:
                    del runs[run_key]

        def stop(desk: StoryService, sid):
            cancel = runs.get((desk.context.owner, int(sid))) if sid is not None else None
            if cancel is None:
                return problem("Nothing is running on this story.")
            cancel.set()
            return {status: "Stopping… the step in progress will be dropped."}

        def load_paragraph(desk: StoryService, sid, number):
            if sid is None or number is None:
                return {}
            try:
                view = desk.view(int(sid))
            except StoryloomError as e:
                return problem(str(e))
            if not 1 <= int(number) <= len(view.paragraphs):
                return problem(f"There is no paragraph {int(number)}; the story has {len(view.paragraphs)}.")
            index = int(number) - 1
            return {edit_text: view.paragraphs[index], chapter: view.chapters[index] or ""}

        def save(desk: StoryService, sid, head, number, text, chapter_title):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            try:
                view = desk.view(int(sid))
            except StoryloomError as e:
                yield problem(str(e))
                return
            if number is None or not 1 <= int(number) <= len(view.paragraphs):
                yield problem(f"There is no paragraph {number}; the story has {len(view.paragraphs)}.")
                return
            changed = (text or "").strip() != view.paragraphs[int(number) - 1]
            saved = (f"Paragraph {int(number)} saved; its memories were derived again from the new text."
                     if changed else f"Paragraph {int(number)} saved (chapter only; the text did not change).")
            for event in stream(desk.edit_paragraph, int(sid), view.step_ids[int(number) - 1], text,
                                chapter_title or "", seen_head=head):  # its summary is written again
                yield render(desk, event, lambda result: result.notice or saved, sid=int(sid))

        def save_memory(desk: StoryService, sid, head, text):
            if (missing := needs_story(sid)) is not None:
                return missing
            try:
                return show(desk, desk.edit_short_memory(int(sid), text, seen_head=head),
                            "Short-term memory saved: the next step starts from it.")
            except StoryloomError as e:
                return render(desk, Problem(e), sid=int(sid))

        # -- the memory desk ----------------------------------------------------------------

        def memory_page(desk: StoryService, sid, stale: bool, note: str = "") -> dict:
            rows = desk.memories.entries(int(sid), include_stale=bool(stale), newest=MEMORY_ROWS)
            total = desk.memories.count(int(sid), include_stale=bool(stale))
            shown = f" (the newest {MEMORY_ROWS} shown; search finds any)" if total > MEMORY_ROWS else ""
            return {memory_table: memory_rows(rows), status: note or f"{total} memory entries{shown}."}

        def refresh_memory(desk: StoryService, sid, stale):
            if sid is None:
                return {}
            try:
                return memory_page(desk, sid, stale)
            except StoryloomError as e:
                return problem(str(e))

        def refresh_table(desk: StoryService, sid, stale):
            """After the story changed or another story opened: the table as it is now, no entry picked."""
            cleared = {entry_id: None, entry_text: "", entry_keys: "", entry_pinned: False}
            if sid is None:
                return {memory_table: [], **cleared}
            try:
                return {memory_table: memory_page(desk, sid, stale)[memory_table], **cleared}
            except StoryloomError as e:
                return {memory_table: [], **cleared, **problem(str(e))}

        def memory_action(action):
            """Run a memory-desk action; afterwards the table shows the memory as it is now."""
            def handler(desk: StoryService, sid, stale, number, text, keys, pinned):
                if (missing := needs_story(sid)) is not None:
                    return missing
                try:
                    note, fields = action(desk, int(sid), number, text, keys, pinned)
                    return {**memory_page(desk, sid, stale, note), **fields}
                except StoryloomError as e:
                    try:
                        return {**memory_page(desk, sid, stale), **problem(str(e))}
                    except StoryloomError:  # the story itself is not there (for this person)
                        return problem(str(e))
            handler.__name__ = action.__name__
            return handler

        def entry_number(number) -> int:
            if number is None or int(number) <= 0:
                raise InvalidInput("give the id of an entry (click a row of the table)")
            return int(number)

        def save_entry(desk: StoryService, sid, number, text, keys, pinned):
            row = desk.memories.entry(sid, entry_number(number))
            updated = desk.memories.update(sid, row.id, text, keys=parse_keys(keys), pinned=bool(pinned))
            if updated.stale:
                return (f"Entry {updated.id} saved. It is stale (its paragraph was edited since), so steps "
                        "do not retrieve it.", {})
            return f"Entry {updated.id} saved; the next step sees it as it is now.", {}

        def add_entry(kind):
            def action(desk: StoryService, sid, number, text, keys, pinned):
                row = desk.memories.add(sid, text, kind, keys=parse_keys(keys), pinned=bool(pinned))
                return f"{kind.capitalize()} {row.id} added.", {entry_id: row.id}
            action.__name__ = f"add_{kind}"
            return action

        def delete_entry(desk: StoryService, sid, number, text, keys, pinned):
            desk.memories.delete(sid, entry_number(number))
            return f"Entry {int(number)} deleted.", {entry_id: None, entry_text: "", entry_keys: "",
                                                     entry_pinned: False}

        def pick_entry(desk: StoryService, sid, evt: gr.SelectData):
            if sid is None or not evt.row_value:
                return {}
            try:
                row = desk.memories.entry(int(sid), int(evt.row_value[0]))
            except StoryloomError as e:
                return problem(f"{e}; the table was out of date and is shown as it is now")
            return {entry_id: row.id, entry_text: row.text, entry_keys: ", ".join(row.keys), entry_pinned: row.pinned}

        def search_memory(desk: StoryService, sid, query, k):
            if (missing := needs_story(sid)) is not None:
                return missing
            try:
                result = desk.memories.search(int(sid), query, int(k or 8))
            except StoryloomError as e:
                return problem(str(e))
            where = result.where
            rows = [[f"{h.score:.3f}", f"{h.cosine:.3f}", f"{h.words:.1f}", h.entry_id, h.kind,
                     where.get(h.entry_id, ""), h.text] for h in result.hits]
            rows += [[e.reason, "", "", e.entry_id, e.kind, where.get(e.entry_id, ""), e.text] for e in result.by_rule]
            return {found: rows, status: f"{len(result.hits)} found by meaning, {len(result.by_rule)} by rule."}

        def inspect(desk: StoryService, sid, number):
            if (missing := needs_story(sid)) is not None:
                return missing
            try:
                view = desk.view(int(sid))
                number = int(number or 0)  # 0 or empty: the last paragraph
                if number and not 1 <= number <= len(view.step_ids):
                    raise IndexError
                step_id = view.step_ids[number - 1] if number else None
                return {inspected: inspector_markdown(desk.inspect(int(sid), step_id))}
            except IndexError:
                return problem(f"There is no paragraph {int(number)}.")
            except StoryloomError as e:
                return problem(str(e))

        # -- reader mode ------------------------------------------------------------------

        def show_play(desk: StoryService, play: ReaderView) -> dict:
            scenes = "\n\n".join(literal(s) for s in play.scenes[:-1])
            recent = f"{scenes}\n\n---\n\n{literal(play.scenes[-1])}" if scenes else literal(play.scenes[-1])
            options = [(f"{p[1]} ({p[2]} scenes)", p[0]) for p in desk.reading.playthroughs(play.story_id)]
            return {scene: f"{literal(f'{play.title} · played by {play.reader}', 'h2')}\n\n{recent}", writing: "",
                    choices: gr.update(choices=[(c, n) for n, c in enumerate(play.choices, 1)], value=None),
                    playthrough: gr.update(choices=options, value=play.playthrough_id),
                    status: f"Scene {len(play.scenes)}."}

        def play(desk: StoryService, action, *args) -> Iterator[dict]:
            for event in stream(action, *args):
                if isinstance(event, ReaderView):
                    yield show_play(desk, event)
                else:
                    yield render(desk, event)

        def start_reading(desk: StoryService, sid, name):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            yield from play(desk, desk.reading.start, int(sid), name)

        def choose(desk: StoryService, pid, number):
            if pid is None or number is None:
                yield problem("Start a playthrough and pick what to do.")
                return
            yield from play(desk, desk.reading.choose, int(pid), int(number))

        def resume(desk: StoryService, pid):
            try:
                return show_play(desk, desk.reading.view(int(pid))) if pid is not None else {}
            except StoryloomError as e:
                return problem(str(e))

        # -- files -------------------------------------------------------------------------

        def export(desk: StoryService, sid, fmt, with_vectors):
            hidden = {download: gr.update(visible=False)}
            if (missing := needs_story(sid)) is not None:
                return {**missing, **hidden}
            try:
                done = desk.manuscripts.export(int(sid), fmt, vectors=bool(with_vectors))
                path = exports.save(done.filename, done.data)
            except StoryloomError as e:
                return {**problem(str(e)), **hidden}
            note = f"{done.filename}: {len(done.data):,} bytes, ready to download." + (
                f" {done.notice}" if done.notice else "")
            return {download: gr.update(value=str(path), label=f"⬇ Download {done.filename}", visible=True),
                    status: note, writing: ""}

        def import_story(desk: StoryService, path, premise_text):
            if not path:
                yield problem("Choose a file to import first.")
                return
            try:
                raw = read_file(Path(path))
            except StoryloomError as e:
                yield problem(str(e))
                return
            name = Path(path).name

            def action(on_text):
                return desk.manuscripts.import_file(name, raw, premise_text or None,
                                                    on_progress=lambda line: on_text("import", line))

            def imported(view: StoryView) -> str:
                return (f"Imported **{name}** as story {view.id}, {len(view.paragraphs)} paragraphs."
                        + (f" {view.notice}" if view.notice else ""))

            for event in stream(action):
                yield render(desk, event, note=imported)

        # -- wiring: `on` gives each action the desk of the person who sent the event --------

        on = people.handler
        # outputs are lists, so API clients get them in this order (the status line last)
        page = [story_id, seen_head, stories, manuscript, memory, plans, instruction, writing, version, status]
        app.load(on(list_own_stories), None, stories)  # stories made since launch
        app.load(on(logged_in), None, who, api_visibility="undocumented")
        table = [memory_table, entry_id, entry_text, entry_keys, entry_pinned]

        def then_table(event) -> None:
            """After an action that changes the story (or opens another), the Memory tab follows."""
            event.then(on(refresh_table), [story_id, show_stale], table, api_visibility="undocumented").then(
                repetition.refresh, story_id, repetition.outputs, api_visibility="undocumented")

        then_table(stories.input(on(open_story), stories, page))
        then_table(start_button.click(on(start), [premise, title], page, api_name="start", **model))
        plans.change(on(pick), [plans, story_id], instruction)
        then_table(step_button.click(on(write_next), [story_id, seen_head, plans, instruction], page,
                                     api_name="step", **model))
        then_table(regenerate_button.click(on(regenerate), [story_id, seen_head], page, **model))
        then_table(undo_button.click(on(simple(undo)), [story_id, seen_head], page))
        then_table(older_button.click(on(simple(older)), [story_id, seen_head], page))
        then_table(newer_button.click(on(simple(newer)), [story_id, seen_head], page))
        then_table(auto_button.click(on(auto), [story_id, auto_steps], [*page, auto_progress],
                                     concurrency_id="auto", concurrency_limit=writers))  # not in line with steps
        stop_button.click(on(stop), story_id, [writing, status], concurrency_limit=None)
        edit_number.change(on(load_paragraph), [story_id, edit_number], [edit_text, chapter, writing, status])
        then_table(save_button.click(on(save), [story_id, seen_head, edit_number, edit_text, chapter], page,
                                     api_name="save_paragraph", **model))
        then_table(save_memory_button.click(on(save_memory), [story_id, seen_head, memory], page))
        memory_tab.select(on(refresh_memory), [story_id, show_stale], [memory_table, status])
        show_stale.change(on(refresh_memory), [story_id, show_stale], [memory_table, status])
        entry_fields = [entry_id, entry_text, entry_keys, entry_pinned]
        desk_page = [memory_table, *entry_fields, writing, status]
        for button, action in ((entry_save_button, save_entry), (entry_note_button, add_entry("note")),
                               (entry_lore_button, add_entry("lore")), (entry_delete_button, delete_entry)):
            button.click(on(memory_action(action)), [story_id, show_stale, *entry_fields], desk_page)
        memory_table.select(on(pick_entry), story_id, [*entry_fields, memory_table, writing, status])
        memory_search_button.click(on(search_memory), [story_id, memory_query, memory_k], [found, writing, status])
        inspect_button.click(on(inspect), [story_id, inspect_number], [inspected, writing, status])
        export_button.click(on(export), [story_id, export_format, export_vectors], [download, writing, status])
        then_table(import_button.click(on(import_story), [import_file, import_premise], page, **model))
        reading_page = [scene, choices, playthrough, writing, status]
        read_button.click(on(start_reading), [story_id, reader_name], reading_page, **model)
        choose_button.click(on(choose), [playthrough, choices], reading_page, **model)
        playthrough.input(on(resume), playthrough, reading_page)
    return app


def serve(settings, host: str | None = None, port: int | None = None, allow_no_auth: bool = False) -> None:
    from app.people import LOGIN_MESSAGE, check_binding, login_check
    from app.wiring import build_service
    from storage import accounts

    host = host or settings.host
    talk = logging.StreamHandler()  # what the server does, for whoever runs it: model loads, failures
    talk.setFormatter(logging.Formatter("storyloom: %(message)s"))
    logging.getLogger("storyloom").addHandler(talk)
    logging.getLogger("storyloom").setLevel(logging.INFO)
    check_binding(host, settings.auth, allow_no_auth or settings.allow_no_auth)
    service = build_service(settings)
    if settings.auth:
        with service.context.db.Session() as session:
            if not accounts.list_users(session):
                raise InvalidInput("accounts are on (STORYLOOM_AUTH) but there are none: add one with "
                                   "`storyloom user add NAME` (and `storyloom user claim NAME` for the stories "
                                   "written while accounts were off)")
    app = build_app(service, People(service, accounts_on=settings.auth), writers=settings.writers)
    app.queue(default_concurrency_limit=16).launch(
        server_name=host, server_port=port or settings.port, theme=gr.themes.Soft(), show_error=True,
        ssr_mode=False, auth=login_check(service.context.db) if settings.auth else None,
        auth_message=LOGIN_MESSAGE)
