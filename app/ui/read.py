"""The Read tab: play the story as interactive fiction from its latest scene, each choice writing
the reader's own branch (the manuscript is not changed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr

from app.service import StoryService
from app.service.reading import ReaderView
from app.ui.page import Page, Shown, action, literal, problem, render, stream

READING_PAGE = ("scene", "choices", "playthrough", "writing", "status")


def build(page: Page) -> None:
    with gr.Tab("Read", id="read"):
        gr.Markdown("Play the story as interactive fiction from its latest scene. Your "
                    "choices write your own branch; the manuscript is not changed.")
        with gr.Row():
            reader = gr.Textbox(label="Reader", value="reader", elem_id="reader-name")
            start = gr.Button("Start a new playthrough", elem_id="read-start")
        playthrough = gr.Dropdown(label="…or continue a playthrough", choices=[], elem_id="playthroughs")
        scene = gr.Markdown(elem_id="scene")
        choices = gr.Radio(label="What do you do?", choices=[], elem_id="choices")
        choose_button = gr.Button("Do it", variant="primary", elem_id="choose")
    page.add(reader_name=reader, read_button=start, playthrough=playthrough, scene=scene, choices=choices,
             choose_button=choose_button)


def show_play(service: StoryService, play: ReaderView) -> Shown:
    scenes = "\n\n".join(literal(s) for s in play.scenes[:-1])
    recent = f"{scenes}\n\n---\n\n{literal(play.scenes[-1])}" if scenes else literal(play.scenes[-1])
    options = [(f"{p[1]} ({p[2]} scenes)", p[0]) for p in service.reading.playthroughs(play.story_id)]
    return {"scene": f"{literal(f'{play.title} · played by {play.reader}', 'h2')}\n\n{recent}", "writing": "",
            "choices": gr.update(choices=[(c, n) for n, c in enumerate(play.choices, 1)], value=None),
            "playthrough": gr.update(choices=options, value=play.playthrough_id),
            "status": f"Scene {len(play.scenes)}."}


def play(service: StoryService, act: Callable, *args) -> Iterator[Shown]:
    for event in stream(act, *args, waiting=service.readiness.waiting):
        yield show_play(service, event) if isinstance(event, ReaderView) else render(service, event)


@action
def start_reading(service: StoryService, sid, name):
    yield from play(service, service.reading.start, int(sid), name)


@action(story=False)
def choose(service: StoryService, pid, number):
    if pid is None or number is None:
        yield problem("Start a playthrough and pick what to do.")
        return
    yield from play(service, service.reading.choose, int(pid), int(number))


@action(story=False)
def resume(service: StoryService, pid) -> Shown:
    return show_play(service, service.reading.view(int(pid))) if pid is not None else {}


def wire(page: Page) -> None:
    shown = page.of(*READING_PAGE)
    page["read_button"].click(page.on(start_reading), page.of("story_id", "reader_name"), shown, **page.model)
    page["choose_button"].click(page.on(choose), page.of("playthrough", "choices"), shown, **page.model)
    page["playthrough"].input(page.on(resume), page["playthrough"], shown)
