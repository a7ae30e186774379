"""How results reach the page: the page's components by name, the worker thread that streams an
action's text, and the one decorator that turns "no story open" and the app's errors into the
status line. Handlers are plain functions of (the person's service, inputs) that return (or
yield) the page's new values by component name; Page.on() makes them Gradio events."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator

import gradio as gr

from app.people import People
from app.service import StoryService, StoryView
from app.ui.manuscript import Pane, update
from common.errors import Conflict, StoryloomError
from storage.db import OUTAGES, unavailable

log = logging.getLogger("storyloom.ui")

PART_NAMES = {"title": "the title", "outline": "the outline", "paragraph": "the paragraph",
              "short_memory": "the short-term memory", "plan_1": "plan 1", "plan_2": "plan 2", "plan_3": "plan 3",
              "choice": "the choice of plan", "revised_plan": "the revised plan",
              "clarify": "a clearer wording of the revised plan (SCA)"}
# what an action on the story shows, in this order (API clients get the outputs in it, status last;
# the first three and the last are the page's state: the story, its head, the short-term memory's
# version shown, and the version of each paragraph the page holds, app/ui/manuscript.py)
STORY_PAGE = ("story_id", "seen_head", "memory_seen", "stories", "manuscript", "memory", "plans", "instruction",
              "writing", "version", "status", "manuscript_seen")
NO_STORY = "Start or open a story first."
# Text being written reaches the page at most this often: every update costs Gradio a copy of each
# output component, so a fast model would otherwise keep the server busy redrawing.
TEXT_EVERY = 0.1
WAIT_EVERY = 1.0  # seconds between updates of what an action waits on (the models loading)

Shown = dict[str, object]  # component name -> its new value (or gr.update)


class Page:
    """The page's components by name, and how a handler becomes an event: it runs on the scoped
    service of whoever sent the event, and what it returns by name reaches the components."""

    def __init__(self, people: People, writers: int, files_ttl: int = 3600):
        self.people = people
        self.writers = writers
        self.files_ttl = files_ttl  # seconds an export stays downloadable
        # events that call the model: `writers` at a time, in one line, first come first served
        self.model = {"concurrency_id": "model", "concurrency_limit": writers}
        self.parts: dict[str, gr.components.Component] = {}

    def add(self, **parts) -> None:
        self.parts.update(parts)

    def __getitem__(self, name: str):
        return self.parts[name]

    def of(self, *names: str) -> list:
        return [self.parts[name] for name in names]

    def on(self, fn: Callable, pane: bool = False) -> Callable:
        """fn(service, *inputs) as an event function. With `pane` (an event that shows the
        manuscript: its outputs are STORY_PAGE), the event takes `manuscript_seen` as its last
        input, after fn's, and the manuscript reaches the page as an update against it."""
        return self.people.handler(self.keyed(fn, pane))

    def story(self, *inputs: str) -> list:
        """An event's inputs by name, then `manuscript_seen`: for events made with on(..., pane=True)."""
        return self.of(*inputs, "manuscript_seen")

    def keyed(self, fn: Callable, pane: bool = False) -> Callable:
        """fn with its results' names turned into the components they update (and, with `pane`,
        the manuscript it shows turned into an update against what this page was sent)."""
        def parts(shown: Shown, seen: list) -> dict:
            if isinstance(shown.get("manuscript"), Pane):
                if not pane:
                    raise TypeError(f"{fn.__name__} shows the manuscript: make its event with on(..., pane=True)")
                shown = dict(shown)
                shown["manuscript"], seen[0] = update(shown["manuscript"], seen[0])
                shown["manuscript_seen"] = seen[0]
            if not shown:  # nothing to change (an empty dict would be read as one output's value)
                return gr.skip()
            return {self.parts[name]: value for name, value in shown.items()}

        def split(args: tuple) -> tuple[tuple, list]:
            return (args[:-1], [args[-1]]) if pane else (args, [None])

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def event(*args):
                args, seen = split(args)
                for shown in fn(*args):  # each update against the one before it
                    yield parts(shown, seen)
        else:
            @functools.wraps(fn)
            def event(*args):
                args, seen = split(args)
                return parts(fn(*args), seen)
        if pane:
            signature = inspect.signature(fn)
            extra = inspect.Parameter("manuscript_seen", inspect.Parameter.POSITIONAL_OR_KEYWORD)
            event.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        return event


def problem(message: str) -> Shown:
    """The message as a warning and on the status line, shown as written (it may quote the story)."""
    gr.Warning(html.escape(message))
    return {"writing": "", "status": f"**Nothing was written:** {plain(message)}"}


def action(fn: Callable | None = None, *, story: bool = True, page: bool = False, also: Shown | None = None):
    """The one way a handler reports a problem. With story=True its first input is the open
    story's id, and with none open the status line says so instead of running it. A StoryloomError
    it raises becomes "Nothing was written: …" on the status line (with `also` shown as well); with
    page=True (its outputs are STORY_PAGE) a Conflict also shows the story as it is now. (A database
    outage stops any event with the database's message: People.handler.)"""
    if fn is None:
        return functools.partial(action, story=story, page=page, also=also)
    extra = also or {}

    def failed(service: StoryService, args: tuple, error: StoryloomError) -> Shown:
        if page and isinstance(error, Conflict) and args[0] is not None:
            return {**show(service, service.view(int(args[0]))), **problem(str(error))}
        return {**problem(str(error)), **extra}

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def handler(service: StoryService, *args, **kwargs):
            if story and args[0] is None:
                yield {**problem(NO_STORY), **extra}
                return
            try:
                yield from fn(service, *args, **kwargs)
            except StoryloomError as e:
                yield failed(service, args, e)
    else:
        @functools.wraps(fn)
        def handler(service: StoryService, *args, **kwargs):
            if story and args[0] is None:
                return {**problem(NO_STORY), **extra}
            try:
                return fn(service, *args, **kwargs)
            except StoryloomError as e:
                return failed(service, args, e)
    return handler


class Problem(str):
    """A message for the person, yielded by `stream` instead of a result. `draft`: the paragraph
    the model had written when saving it failed, shown so that it is not lost."""

    def __new__(cls, error: StoryloomError, draft: str = ""):
        problem = super().__new__(cls, str(error))
        problem.stale_page = isinstance(error, Conflict)  # the story moved on: show it as it is now
        problem.version = getattr(error, "version", None)  # of the thing edited, as the message shows it
        problem.draft = draft
        return problem


class Progress:
    """Where an action stands, as one line: the parts written, the parts being written, and the
    time left, from how long the machine's recent actions of its kind took (`expected`, None
    before the first). A part is done once another has gone on writing for DONE_AFTER seconds
    past its last text (parts written together, as the memory and plans of a batch, all write
    every few tenths of a second); a part written again (a retry) is being written again."""

    DONE_AFTER = 2.0

    def __init__(self, expected: float | None = None):
        self.expected = expected
        self._lock = threading.Lock()  # parts arrive on the action's thread, lines are made on the page's
        self.restart()

    def restart(self, at: float | None = None) -> None:
        with self._lock:
            self.started = time.monotonic() if at is None else at
            self._last: dict[str, float] = {}  # part -> when it last wrote, in the order parts began

    def wrote(self, part: str, at: float | None = None) -> None:
        with self._lock:
            self._last[part] = time.monotonic() if at is None else at

    def line(self, now: float | None = None) -> str:
        with self._lock:
            latest = max(self._last.values(), default=0.0)
            done = [p for p, t in self._last.items() if latest - t >= self.DONE_AFTER]
            writing = [p for p in self._last if p not in done]
        elapsed = (time.monotonic() if now is None else now) - self.started
        if self.expected is None:
            left = f"{elapsed:.0f} s so far"
        elif elapsed < self.expected:
            left = f"about {self.expected - elapsed:.0f} s left"
        else:
            left = f"{elapsed:.0f} s so far, longer than the recent {self.expected:.0f} s"
        names = ", ".join
        return " · ".join([*([f"done: {names(PART_NAMES.get(p, p) for p in done)}"] if done else []),
                           f"writing: {names(PART_NAMES.get(p, p) for p in writing)}", left])


def stream(action: Callable, *args, steps: bool = False, waiting: Callable[[], str | None] | None = None,
           expected: float | None = None, **kwargs) -> Iterator[tuple | StoryView | Problem]:
    """Run a service action in a worker thread. Yields ("text", part, text, progress) while it
    writes (progress: a Progress line, with `expected` seconds for the action, or for each step of
    a run), ("step", number, total, view) after each step of a run (with steps=True), then the
    resulting StoryView, or a Problem when it failed with a message for the person. With `waiting`
    (what the action waits on, as a line, or None: the service's readiness), ("wait", line) every
    WAIT_EVERY seconds that nothing else comes while it says something."""
    events: queue.Queue = queue.Queue()
    outcome: dict = {}
    written: dict[str, str] = {}  # the latest text of each part of the step in progress
    progress = Progress(expected)
    if steps:
        def on_step(number: int, total: int, view) -> None:
            written.clear()  # that step is saved
            progress.restart()
            events.put(("step", number, total, view))
        kwargs["on_step"] = on_step

    def on_text(part: str, text: str) -> None:
        written[part] = text
        progress.wrote(part)
        events.put(("text", part, text))

    def work() -> None:
        try:
            outcome["view"] = action(*args, on_text=on_text, **kwargs)
        except StoryloomError as e:
            outcome["error"] = e
        except OUTAGES as e:  # the database went away mid-action: rolled back, the text kept on screen
            log.warning("action %r: %s", action, e)
            outcome["error"] = unavailable(e)
            outcome["draft"] = written.get("paragraph", "")
        except Exception as e:  # a bug: logged with its traceback, one line for the person
            log.exception("action %r failed", action)
            outcome["error"] = StoryloomError(f"unexpected error ({type(e).__name__}: {e}); nothing was written")
        finally:
            events.put(None)

    def next_event():
        while True:
            try:
                return events.get(timeout=WAIT_EVERY if waiting else None)
            except queue.Empty:
                if (line := waiting()) is not None:
                    return "wait", line

    threading.Thread(target=work, name="storyloom-action", daemon=True).start()
    event, shown_at = next_event(), 0.0
    while event is not None:
        after = False
        if event[0] == "text":  # at most TEXT_EVERY seconds apart, each the newest text
            time.sleep(max(0.0, shown_at + TEXT_EVERY - time.monotonic()))
            event, after = newest_text(event, events)
            shown_at = time.monotonic()
            event = (*event, progress.line())
        yield event
        event = next_event() if after is False else after
    yield Problem(outcome["error"], outcome.get("draft", "")) if "error" in outcome else outcome["view"]


def newest_text(event: tuple, events: queue.Queue) -> tuple[tuple, tuple | None | bool]:
    """The newest of the text events waiting behind `event` (each carries its part's whole text so
    far, so a page slower than the model skips to the latest instead of falling behind), and the
    first event after them: a step, the end (None), or False when none is waiting yet."""
    while True:
        try:
            after = events.get_nowait()
        except queue.Empty:
            return event, False
        if after is None or after[0] != "text":
            return event, after
        event = after


def plain(text: str) -> str:
    """Model or writer text inside a Markdown line, shown as written: one line, no HTML, and no
    inline Markdown (an image or a link in a plan or a memory would otherwise be fetched or
    followed)."""
    escaped = re.sub(r"([\\`*_\[\]!~|])", r"\\\1", html.escape(" ".join(text.split()), quote=False))
    return escaped.replace("://", "&#58;//").replace("www.", "www&#46;")  # no bare-URL links (GFM)


def literal(text: str, tag: str = "p") -> str:
    """Model text as an HTML block for a Markdown component: shown as written, never read as Markdown
    or HTML (a stray `<unk>`, `#` or `---` in a paragraph would otherwise eat it or split it)."""
    return f"<{tag}>{html.escape(text.strip()).replace(chr(10), '<br>')}</{tag}>"


def cost_line(view: StoryView) -> str:
    c = view.last_step
    return (f"Paragraph {len(view.paragraphs)} written in {c['seconds']:.1f} s "
            f"({c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, {c['retries']} retries).")


def story_choices(service: StoryService) -> list[tuple[str, int]]:
    return [(f"{i}: {t}", i) for i, t in service.list_stories()]


def show(service: StoryService, view: StoryView, note: str = "") -> Shown:
    """The story as it now is, on the page."""
    choices = [(f"{n}. {p}", n) for n, p in enumerate(view.plans, 1)]
    number, count = view.version
    return {"story_id": view.id, "seen_head": view.head_step_id, "memory_seen": view.memory_version,
            "stories": gr.update(choices=story_choices(service), value=view.id),
            "manuscript": Pane(view), "memory": view.short_memory,
            "plans": gr.update(choices=choices, value=None), "instruction": "", "writing": "",
            "version": f"version {number} of {count}" if count > 1 else "", "status": note}


def render(service: StoryService, event, note: Callable[[StoryView], str] = cost_line, sid=None) -> Shown:
    """One event of a stream on the page: text being written, a step of a run, the result, or a
    problem (a stale page shows the story as it is now; a draft that could not be saved stays)."""
    if isinstance(event, Problem):
        if event.stale_page and sid:
            return {**show(service, service.view(sid)), **problem(event)}
        if event.draft:  # not saved: the text stays on screen, to copy
            return {**problem(event), "writing": f"*Not saved; the paragraph as written:*\n\n{literal(event.draft)}"}
        return problem(event)
    if isinstance(event, StoryView):
        return show(service, event, note(event))
    if event[0] == "step":
        _, number, total, view = event
        return {**show(service, view, ""), "auto_progress": f"**Step {number} of {total} written.**"}
    if event[0] == "wait":
        return {"writing": f"*{plain(event[1])}. Your step starts as soon as it is loaded.*"}
    _, part, text, progress = event
    if part == "import":
        return {"writing": f"*Importing…* {literal(text)}"}
    return {"writing": f"*Writing {PART_NAMES.get(part, part)}…* ({progress})\n\n{literal(text)}"}


def run(service: StoryService, action: Callable, sid: int, *args, **kwargs) -> Iterator[Shown]:
    """Stream a step on story `sid` to the page, with its time left estimated from the recent
    steps (and its time added to them)."""
    yield from paced(service, "step", stream(action, sid, *args, waiting=service.readiness.waiting,
                                             expected=service.pace.expected("step"), **kwargs), sid=sid)


def paced(service: StoryService, kind: str, events: Iterator, note: Callable[[StoryView], str] = cost_line,
          sid=None) -> Iterator[Shown]:
    """A stream's events on the page; the time of an action that succeeds (or of each step of a
    run) joins the machine's recent ones of its `kind`, unless it waited for the models to load."""
    started, waited = time.monotonic(), False
    for event in events:
        waited = waited or (isinstance(event, tuple) and event[0] == "wait")
        if isinstance(event, StoryView) or (isinstance(event, tuple) and event[0] == "step"):
            if not waited:
                service.pace.add(kind, time.monotonic() - started)
            started, waited = time.monotonic(), False
        yield render(service, event, note, sid=sid)
