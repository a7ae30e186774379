"""The Gradio UI: lays out components and wires them to the story service. No story logic here."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import gradio as gr

from app.service import StoryService, StoryView
from storage.errors import StoryloomError

PART_NAMES = {"title": "the title", "outline": "the outline", "paragraph": "the paragraph",
              "short_memory": "the short-term memory", "plan_1": "plan 1", "plan_2": "plan 2", "plan_3": "plan 3"}


class Problem(str):
    """A message for the person, yielded by `stream` instead of a result."""


def stream(action: Callable, *args) -> Iterator[tuple[str, str] | StoryView | Problem]:
    """Run a service action in a worker thread; yield (part, text) while it writes, then its
    result, or a Problem when it failed with a message for the person."""
    events: queue.Queue = queue.Queue()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["view"] = action(*args, on_text=lambda part, text: events.put((part, text)))
        except StoryloomError as e:
            outcome["error"] = e
        finally:
            events.put(None)

    threading.Thread(target=work, name="storyloom-action", daemon=True).start()
    while (event := events.get()) is not None:
        yield event
    yield Problem(outcome["error"]) if "error" in outcome else outcome["view"]


def manuscript_markdown(view: StoryView) -> str:
    return f"## {view.title}\n\n" + "\n\n".join(view.paragraphs)


def cost_line(view: StoryView) -> str:
    c = view.last_step
    return (f"Paragraph {len(view.paragraphs)} written in {c['seconds']:.1f} s "
            f"({c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, {c['retries']} retries).")


def build_app(service: StoryService) -> gr.Blocks:
    def story_choices() -> list[tuple[str, int]]:
        return [(f"{i}: {t}", i) for i, t in service.list_stories()]

    def show(view: StoryView, status: str):
        plans = [(f"{n}. {p}", n) for n, p in enumerate(view.plans, 1)]
        return (view.id, gr.update(choices=story_choices(), value=view.id), manuscript_markdown(view),
                view.short_memory, gr.update(choices=plans, value=None), "", "", status)

    def keep(story_id, writing="", status=""):
        """Leave the page as it is (nothing the person typed is lost), with a message."""
        return (story_id, gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), writing, status)

    def problem(story_id, message: str):
        gr.Warning(message)
        return keep(story_id, "", f"**Nothing was written:** {message}")

    def render(event, story_id):
        if isinstance(event, Problem):
            return problem(story_id, event)
        if isinstance(event, tuple):
            part, text = event
            return keep(story_id, f"*Writing {PART_NAMES.get(part, part)}…*\n\n{text}", "")
        return show(event, cost_line(event))

    def open_story(story_id):
        if story_id is None:
            return (None, gr.update(), "", "", gr.update(choices=[], value=None), "", "", "")
        try:
            return show(service.view(int(story_id)), "")
        except StoryloomError as e:
            return problem(None, str(e))

    def start(premise: str, title: str, story_id):
        for event in stream(service.new_story, premise, title or None):
            yield render(event, story_id)

    def pick(plan_number, story_id):
        if plan_number is None or story_id is None:
            return gr.update()
        return service.view(int(story_id)).plans[int(plan_number) - 1]

    def write_next(story_id, plan_number, instruction: str):
        if story_id is None:
            yield problem(story_id, "Start or open a story first.")
            return
        text = (instruction or "").strip()
        if not text and plan_number is None:
            yield problem(story_id, "Pick one of the plans or write your own instruction.")
            return
        plans = service.view(int(story_id)).plans
        if plan_number is not None and text in ("", plans[int(plan_number) - 1]):
            args = (int(story_id), int(plan_number), None)
        else:
            args = (int(story_id), None, text)
        for event in stream(service.step, *args):
            yield render(event, story_id)

    with gr.Blocks(title="storyloom") as app:
        gr.Markdown("# storyloom\nWrite a story with a local language model, one paragraph at a time.")
        story_id = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                stories = gr.Dropdown(label="Your stories", choices=story_choices(), value=None,
                                      elem_id="stories")
                with gr.Accordion("New story", open=True):
                    premise = gr.Textbox(label="Premise", lines=4, elem_id="premise",
                                         placeholder="What is the story about? Who, where, what goes wrong?")
                    title = gr.Textbox(label="Title (optional)", elem_id="title")
                    start_button = gr.Button("Start the story", variant="primary", elem_id="start")
                memory = gr.Textbox(label="Short-term memory (the story so far)", lines=10,
                                    interactive=False, elem_id="short-memory")
            with gr.Column(scale=2):
                manuscript = gr.Markdown(elem_id="manuscript")
                writing = gr.Markdown(elem_id="writing")
                plans = gr.Radio(label="What happens next? Pick a plan…", choices=[], elem_id="plans")
                instruction = gr.Textbox(label="…edit it, or write your own instruction", lines=2,
                                         elem_id="instruction")
                step_button = gr.Button("Write the next paragraph", variant="primary", elem_id="step")
                status = gr.Markdown(elem_id="status")

        outputs = [story_id, stories, manuscript, memory, plans, instruction, writing, status]
        stories.input(open_story, stories, outputs)
        start_button.click(start, [premise, title, story_id], outputs)
        plans.change(pick, [plans, story_id], instruction)
        step_button.click(write_next, [story_id, plans, instruction], outputs)
    return app


def serve(settings, host: str | None = None, port: int | None = None) -> None:
    from app.wiring import build_service

    service = build_service(settings)
    app = build_app(service)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host or settings.host, server_port=port or settings.port,
        theme=gr.themes.Soft(), show_error=True, ssr_mode=False)
