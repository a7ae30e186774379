"""The Gradio UI: lays out components and wires them to the story service. No story logic here;
every action is one service call, run in a worker thread so its text can stream in."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator

import gradio as gr

from app.inspector import inspector_markdown
from app.reading import Reading, ReaderView
from app.service import StoryService, StoryView
from storage.errors import Conflict, StoryloomError

log = logging.getLogger("storyloom.ui")

PART_NAMES = {"title": "the title", "outline": "the outline", "paragraph": "the paragraph",
              "short_memory": "the short-term memory", "plan_1": "plan 1", "plan_2": "plan 2", "plan_3": "plan 3",
              "choice": "the choice of plan", "revised_plan": "the revised plan"}


class Problem(str):
    """A message for the person, yielded by `stream` instead of a result."""

    def __new__(cls, error: StoryloomError):
        problem = super().__new__(cls, str(error))
        problem.stale_page = isinstance(error, Conflict)  # the story moved on: show it as it is now
        return problem


def stream(action: Callable, *args, steps: bool = False, **kwargs) -> Iterator[tuple | StoryView | Problem]:
    """Run a service action in a worker thread. Yields ("text", part, text) while it writes,
    ("step", number, total, view) after each step of a run (with steps=True), then the resulting
    StoryView, or a Problem when it failed with a message for the person."""
    events: queue.Queue = queue.Queue()
    outcome: dict = {}
    if steps:
        kwargs["on_step"] = lambda number, total, view: events.put(("step", number, total, view))

    def work() -> None:
        try:
            outcome["view"] = action(*args, on_text=lambda part, text: events.put(("text", part, text)), **kwargs)
        except StoryloomError as e:
            outcome["error"] = e
        except Exception as e:  # a bug or an outage: logged with its traceback, one line for the person
            log.exception("action %s failed", getattr(action, "__name__", action))
            outcome["error"] = StoryloomError(f"unexpected error ({type(e).__name__}: {e}); nothing was written")
        finally:
            events.put(None)

    threading.Thread(target=work, name="storyloom-action", daemon=True).start()
    while (event := events.get()) is not None:
        yield event
    yield Problem(outcome["error"]) if "error" in outcome else outcome["view"]


def manuscript_markdown(view: StoryView) -> str:
    parts = [f"## {view.title}"]
    for paragraph, chapter in zip(view.paragraphs, view.chapters):
        if chapter:
            parts.append(f"### {chapter}")
        parts.append(paragraph)
    return "\n\n".join(parts)


def cost_line(view: StoryView) -> str:
    c = view.last_step
    return (f"Paragraph {len(view.paragraphs)} written in {c['seconds']:.1f} s "
            f"({c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, {c['retries']} retries).")


def build_app(service: StoryService) -> gr.Blocks:
    reading = Reading(service)
    runs: dict[int, threading.Event] = {}  # story id -> the stop signal of its running auto mode

    def story_choices() -> list[tuple[str, int]]:
        return [(f"{i}: {t}", i) for i, t in service.list_stories()]

    with gr.Blocks(title="storyloom") as app:
        gr.Markdown("# storyloom\nWrite a story with a local language model, one paragraph at a time.")
        story_id = gr.State(None)
        seen_head = gr.State(None)  # the head step this page shows, so a stale tab cannot write past it
        with gr.Row():
            with gr.Column(scale=1):
                stories = gr.Dropdown(label="Your stories", choices=[], value=None, elem_id="stories")
                with gr.Accordion("New story", open=True):
                    premise = gr.Textbox(label="Premise", lines=4, elem_id="premise",
                                         placeholder="What is the story about? Who, where, what goes wrong?")
                    title = gr.Textbox(label="Title (optional)", elem_id="title")
                    start_button = gr.Button("Start the story", variant="primary", elem_id="start")
                memory = gr.Textbox(label="Short-term memory (the story so far)", lines=10,
                                    interactive=False, elem_id="short-memory")
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
                        step_button = gr.Button("Write the next paragraph", variant="primary", elem_id="step")
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
                    with gr.Tab("Inspect", id="inspect"):
                        inspect_number = gr.Number(label="Paragraph number (0 or empty: the last)", precision=0,
                                                   elem_id="inspect-number")
                        inspect_button = gr.Button("Show what the model saw", elem_id="inspect")
                        inspected = gr.Markdown(elem_id="inspected")
                status = gr.Markdown(elem_id="status")

        # -- how results reach the page ------------------------------------------------

        def show(view: StoryView, note: str = "") -> dict:
            choices = [(f"{n}. {p}", n) for n, p in enumerate(view.plans, 1)]
            number, count = view.version
            return {story_id: view.id, seen_head: view.head_step_id,
                    stories: gr.update(choices=story_choices(), value=view.id),
                    manuscript: manuscript_markdown(view), memory: view.short_memory,
                    plans: gr.update(choices=choices, value=None), instruction: "", writing: "",
                    version: f"version {number} of {count}" if count > 1 else "", status: note}

        def problem(message: str) -> dict:
            gr.Warning(message)
            return {writing: "", status: f"**Nothing was written:** {message}"}

        def render(event, note: Callable[[StoryView], str] = cost_line, sid=None) -> dict:
            if isinstance(event, Problem):
                return {**show(service.view(sid)), **problem(event)} if event.stale_page and sid else problem(event)
            if isinstance(event, StoryView):
                return show(event, note(event))
            if event[0] == "step":
                _, number, total, view = event
                return {**show(view, ""), auto_progress: f"**Step {number} of {total} written.**"}
            _, part, text = event
            return {writing: f"*Writing {PART_NAMES.get(part, part)}…*\n\n{text}"}

        def run(action, sid, *args, **kwargs) -> Iterator[dict]:
            for event in stream(action, sid, *args, **kwargs):
                yield render(event, sid=sid)

        def at_once(action, sid, *args, **kwargs) -> dict:
            try:
                view = action(sid, *args, **kwargs)
            except StoryloomError as e:
                return render(Problem(e), sid=sid)
            return show(view, "")

        def needs_story(sid) -> dict | None:
            return problem("Start or open a story first.") if sid is None else None

        # -- actions ----------------------------------------------------------------------

        def open_story(sid):
            return at_once(service.view, int(sid)) if sid is not None else {}

        def start(text: str, title_text: str):
            for event in stream(service.new_story, text, title_text or None):
                yield render(event)

        def pick(plan_number, sid):
            if plan_number is None or sid is None:
                return gr.update()
            return service.view(int(sid)).plans[int(plan_number) - 1]

        def write_next(sid, head, plan_number, text: str):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            text = (text or "").strip()
            if not text and plan_number is None:
                yield problem("Pick one of the plans or write your own instruction.")
                return
            plans_now = service.view(int(sid)).plans
            if plan_number is not None and text in ("", plans_now[int(plan_number) - 1]):
                yield from run(service.step, int(sid), int(plan_number), None, seen_head=head)
            else:
                yield from run(service.step, int(sid), None, text, seen_head=head)

        def regenerate(sid, head):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            yield from run(service.regenerate, int(sid), seen_head=head)

        def simple(action):
            def handler(sid, *args):
                return needs_story(sid) or at_once(action, int(sid), *args)
            return handler

        def auto(sid, steps):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            if int(sid) in runs:
                yield problem("Auto mode is already running on this story.")
                return
            runs[int(sid)] = cancel = threading.Event()
            try:
                for event in stream(service.auto, int(sid), int(steps or 0), cancel=cancel, steps=True):
                    yield render(event, lambda view: "Auto mode stopped." if cancel.is_set() else "Auto mode done.")
            finally:  # also when the page went away mid-run: nobody could press Stop any more
                cancel.set()
                runs.pop(int(sid), None)

        def stop(sid):
            cancel = runs.get(int(sid)) if sid is not None else None
            if cancel is None:
                return problem("Nothing is running on this story.")
            cancel.set()
            return {status: "Stopping… the step in progress will be dropped."}

        def load_paragraph(sid, number):
            if sid is None or number is None:
                return {}
            view = service.view(int(sid))
            if not 1 <= int(number) <= len(view.paragraphs):
                return problem(f"There is no paragraph {int(number)}; the story has {len(view.paragraphs)}.")
            index = int(number) - 1
            return {edit_text: view.paragraphs[index], chapter: view.chapters[index] or ""}

        def save(sid, head, number, text, chapter_title):
            if (missing := needs_story(sid)) is not None:
                return missing
            view = service.view(int(sid))
            if number is None or not 1 <= int(number) <= len(view.paragraphs):
                return problem(f"There is no paragraph {number}; the story has {len(view.paragraphs)}.")
            try:
                result = service.edit_paragraph(int(sid), view.step_ids[int(number) - 1], text,
                                                chapter_title or "", seen_head=head)
            except StoryloomError as e:
                return render(Problem(e), sid=int(sid))
            return show(result, f"Paragraph {int(number)} saved.")

        def inspect(sid, number):
            if (missing := needs_story(sid)) is not None:
                return missing
            try:
                view = service.view(int(sid))
                number = int(number or 0)  # 0 or empty: the last paragraph
                if number and not 1 <= number <= len(view.step_ids):
                    raise IndexError
                step_id = view.step_ids[number - 1] if number else None
                return {inspected: inspector_markdown(service.inspect(int(sid), step_id))}
            except IndexError:
                return problem(f"There is no paragraph {int(number)}.")
            except StoryloomError as e:
                return problem(str(e))

        # -- reader mode ------------------------------------------------------------------

        def show_play(play: ReaderView) -> dict:
            scenes = "\n\n".join(play.scenes[:-1])
            recent = f"{scenes}\n\n---\n\n**{play.scenes[-1]}**" if scenes else f"**{play.scenes[-1]}**"
            options = [(f"{p[1]} ({p[2]} scenes)", p[0]) for p in reading.playthroughs(play.story_id)]
            return {scene: f"## {play.title} · played by {play.reader}\n\n{recent}", writing: "",
                    choices: gr.update(choices=[(c, n) for n, c in enumerate(play.choices, 1)], value=None),
                    playthrough: gr.update(choices=options, value=play.playthrough_id),
                    status: f"Scene {len(play.scenes)}."}

        def play(action, *args) -> Iterator[dict]:
            for event in stream(action, *args):
                if isinstance(event, ReaderView):
                    yield show_play(event)
                else:
                    yield render(event)

        def start_reading(sid, name):
            if (missing := needs_story(sid)) is not None:
                yield missing
                return
            yield from play(reading.start, int(sid), name)

        def choose(pid, number):
            if pid is None or number is None:
                yield problem("Start a playthrough and pick what to do.")
                return
            yield from play(reading.choose, int(pid), int(number))

        def resume(pid):
            try:
                return show_play(reading.view(int(pid))) if pid is not None else {}
            except StoryloomError as e:
                return problem(str(e))

        # -- wiring ------------------------------------------------------------------------

        page = {story_id, seen_head, stories, manuscript, memory, plans, instruction, writing, version, status}
        app.load(lambda: gr.update(choices=story_choices()), None, stories)  # stories made since launch
        stories.input(open_story, stories, page)
        start_button.click(start, [premise, title], page)
        plans.change(pick, [plans, story_id], instruction)
        step_button.click(write_next, [story_id, seen_head, plans, instruction], page)
        regenerate_button.click(regenerate, [story_id, seen_head], page)
        undo_button.click(simple(service.undo), [story_id, seen_head], page)
        older_button.click(simple(lambda sid, head: service.other_version(sid, -1, head)), [story_id, seen_head], page)
        newer_button.click(simple(lambda sid, head: service.other_version(sid, +1, head)), [story_id, seen_head], page)
        auto_button.click(auto, [story_id, auto_steps], page | {auto_progress})
        stop_button.click(stop, story_id, {status, writing}, concurrency_limit=None)
        edit_number.change(load_paragraph, [story_id, edit_number], {edit_text, chapter, writing, status})
        save_button.click(save, [story_id, seen_head, edit_number, edit_text, chapter], page)
        inspect_button.click(inspect, [story_id, inspect_number], {inspected, writing, status})
        reading_page = {scene, choices, playthrough, writing, status}
        read_button.click(start_reading, [story_id, reader_name], reading_page)
        choose_button.click(choose, [playthrough, choices], reading_page)
        playthrough.input(resume, playthrough, reading_page)
    return app


def serve(settings, host: str | None = None, port: int | None = None) -> None:
    from app.wiring import build_service

    service = build_service(settings)
    app = build_app(service)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host or settings.host, server_port=port or settings.port,
        theme=gr.themes.Soft(), show_error=True, ssr_mode=False)
