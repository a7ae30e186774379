"""The Write tab: pick one of the three plans, edit it or write an instruction, and write the next
paragraph; the Clarify button ranks clearer wordings of the instruction (app/ui/clarify.py)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.ui.clarify import build_write
from app.ui.page import STORY_PAGE, Page, Shown, action, run


def build(page: Page) -> None:
    with gr.Tab("Write", id="write"):
        plans = gr.Radio(label="What happens next? Pick a plan…", choices=[], elem_id="plans")
        instruction = gr.Textbox(label="…edit it, or write your own instruction (Ctrl+Enter writes)", lines=2,
                                 elem_id="instruction")
        with gr.Row():
            step = gr.Button("Write the next paragraph", variant="primary", elem_id="step", scale=3)
            clarify_button = gr.Button("Clarify the instruction (SCA)", elem_id="clarify", scale=1)
        page.add(plans=plans, instruction=instruction, step_button=step)
        build_write(page, clarify_button)


def pick(service: StoryService, plan_number, sid) -> Shown:
    """The picked plan into the instruction box, to edit."""
    if plan_number is None or sid is None:
        return {}
    return {"instruction": service.view(int(sid)).plans[int(plan_number) - 1]}


@action
def write_next(service: StoryService, sid, head, plan_number, text: str):
    yield from run(service, service.writing.write_next, int(sid), plan_number, text, seen_head=head)


# Ctrl+Enter (⌘+Enter on a Mac) in a box presses its button: the instruction writes the next
# paragraph, the premise starts the story. Plain Enter stays a new line.
KEYS = """() => {
  const buttons = {instruction: "step", premise: "start"};
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || e.target.tagName !== "TEXTAREA") return;
    const box = Object.keys(buttons).find((id) => e.target.closest("#" + id));
    if (!box) return;
    e.preventDefault();
    document.getElementById(buttons[box]).click();
  });
}"""


def wire_keys(app: gr.Blocks) -> None:
    app.load(None, js=KEYS)


def wire(page: Page, follow: Callable) -> None:
    page["plans"].change(page.on(pick), page.of("plans", "story_id"), page["instruction"])
    follow(page["step_button"].click(page.on(write_next, pane=True),
                                     page.story("story_id", "seen_head", "plans", "instruction"),
                                     page.of(*STORY_PAGE), api_name="step", **page.model))
