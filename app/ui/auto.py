"""The Auto tab: steps written unattended, each shown as it is saved, and a Stop button (only the
person who started a run can stop it; the service keeps the runs and their stop signals)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.ui.clarify import build_auto
from app.ui.page import STORY_PAGE, Page, Shown, action, paced, stream


def build(page: Page) -> None:
    with gr.Tab("Auto", id="auto"):
        gr.Markdown("A simulated reader picks the most promising plan and revises it, step "
                    "after step. Stop at any time: the step in progress is dropped, "
                    "nothing half-written is kept.")
        steps = gr.Number(label="Steps", value=3, minimum=1, maximum=500, precision=0, elem_id="auto-steps")
        with gr.Row():
            start = gr.Button("Write unattended", variant="primary", elem_id="auto-start")
            stop_button = gr.Button("Stop", variant="stop", elem_id="auto-stop")
        progress = gr.Markdown(elem_id="auto-progress")
        page.add(auto_steps=steps, auto_button=start, stop_button=stop_button, auto_progress=progress)
        build_auto(page)


@action
def auto(service: StoryService, sid, steps):
    with service.auto_mode.running(int(sid)) as cancel:
        events = stream(service.auto, int(sid), int(steps or 0), cancel=cancel, steps=True,
                        waiting=service.readiness.waiting, expected=service.pace.expected("auto step"))
        yield from paced(service, "auto step", events,
                         lambda view: "Auto mode stopped." if cancel.is_set() else "Auto mode done.")


@action(story=False)
def stop(service: StoryService, sid) -> Shown:
    service.auto_mode.stop(None if sid is None else int(sid))
    return {"status": "Stopping… the step in progress will be dropped."}


def wire(page: Page, follow: Callable) -> None:
    follow(page["auto_button"].click(page.on(auto, pane=True), page.story("story_id", "auto_steps"),
                                     [*page.of(*STORY_PAGE), page["auto_progress"]],
                                     concurrency_id="auto", concurrency_limit=page.writers))  # not in line with steps
    page["stop_button"].click(page.on(stop), page["story_id"], page.of("writing", "status"), concurrency_limit=None)
