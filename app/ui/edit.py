"""The Edit tab: a written paragraph by its number, and the chapter title that starts there."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.ui.page import STORY_PAGE, Page, Shown, action, render, stream


def build(page: Page) -> None:
    with gr.Tab("Edit", id="edit"):
        number = gr.Number(label="Paragraph number", value=1, minimum=1, precision=0, elem_id="edit-number")
        text = gr.Textbox(label="Paragraph", lines=8, elem_id="edit-text")
        chapter = gr.Textbox(label="Chapter title starting at this paragraph (empty: none)", elem_id="chapter")
        save_button = gr.Button("Save paragraph and chapter", variant="primary", elem_id="save")
    page.add(edit_number=number, edit_text=text, chapter=chapter, save_button=save_button)


@action(story=False)
def load_paragraph(service: StoryService, sid, number) -> Shown:
    if sid is None or number is None:
        return {}
    view = service.view(int(sid))
    index = view.index_of(number)
    return {"edit_text": view.paragraphs[index], "chapter": view.chapters[index] or ""}


@action
def save(service: StoryService, sid, head, number, text, chapter_title):
    view = service.view(int(sid))
    index = view.index_of(number)
    changed = (text or "").strip() != view.paragraphs[index]
    saved = (f"Paragraph {int(number)} saved; its memories were derived again from the new text."
             if changed else f"Paragraph {int(number)} saved (chapter only; the text did not change).")
    for event in stream(service.edit_paragraph, int(sid), view.step_ids[index], text,
                        chapter_title or "", seen_head=head):  # its summary is written again
        yield render(service, event, lambda result: result.notice or saved, sid=int(sid))


def wire(page: Page, follow: Callable) -> None:
    page["edit_number"].change(page.on(load_paragraph), page.of("story_id", "edit_number"),
                               page.of("edit_text", "chapter", "writing", "status"))
    follow(page["save_button"].click(page.on(save), page.of("story_id", "seen_head", "edit_number", "edit_text",
                                                            "chapter"),
                                     page.of(*STORY_PAGE), api_name="save_paragraph", **page.model))
