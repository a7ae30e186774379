"""The Edit tab: a written paragraph by its number, and the chapter title that starts there."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService, StoryView
from app.ui.page import STORY_PAGE, Page, Problem, Shown, action, render, stream


def build(page: Page) -> None:
    with gr.Tab("Edit", id="edit"):
        number = gr.Number(label="Paragraph number", value=1, minimum=1, precision=0, elem_id="edit-number")
        text = gr.Textbox(label="Paragraph", lines=8, elem_id="edit-text")
        chapter = gr.Textbox(label="Chapter title starting at this paragraph (empty: none)", elem_id="chapter")
        save_button = gr.Button("Save paragraph and chapter", variant="primary", elem_id="save")
        seen = gr.State(None)  # the version of the paragraph in the box (text and chapter title), sent with a save
    page.add(edit_number=number, edit_text=text, chapter=chapter, save_button=save_button, edit_seen=seen)


@action(story=False)
def load_paragraph(service: StoryService, sid, number) -> Shown:
    if sid is None or number is None:
        return {}
    view = service.view(int(sid))
    index = view.index_of(number)
    return {"edit_text": view.paragraphs[index], "chapter": view.chapters[index] or "",
            "edit_seen": view.paragraph_version(index)}


@action
def save(service: StoryService, sid, head, seen, number, text, chapter_title):
    """Refused when the paragraph changed since it was loaded into the box (or was never loaded):
    the box keeps the person's text, and saving again writes it over the paragraph as the
    message quoted it."""
    view = service.view(int(sid))
    index = view.index_of(number)
    step_id = view.step_ids[index]
    changed = (text or "").strip() != view.paragraphs[index]
    saved = (f"Paragraph {int(number)} saved; its memories were derived again from the new text."
             if changed else f"Paragraph {int(number)} saved (chapter only; the text did not change).")
    for event in stream(service.edit_paragraph, int(sid), step_id, text, chapter_title or "", seen_head=head,
                        seen=seen or "", waiting=service.readiness.waiting):  # its summary is written again
        shown = render(service, event, lambda result: result.notice or saved, sid=int(sid))
        if isinstance(event, StoryView) and step_id in event.step_ids:
            shown["edit_seen"] = event.paragraph_version(event.step_ids.index(step_id))
        elif isinstance(event, Problem) and event.version:
            shown["edit_seen"] = event.version
        yield shown


def wire(page: Page, follow: Callable) -> None:
    page["edit_number"].change(page.on(load_paragraph), page.of("story_id", "edit_number"),
                               page.of("edit_text", "chapter", "edit_seen", "writing", "status"))
    follow(page["save_button"].click(page.on(save, pane=True),
                                     page.story("story_id", "seen_head", "edit_seen", "edit_number", "edit_text",
                                                "chapter"),
                                     page.of(*STORY_PAGE, "edit_seen"), api_name="save_paragraph", **page.model))
