"""The frame's own controls: the story list, a new story, the manuscript's buttons (write again,
undo, other versions) and the short-term memory box. Each handler takes the person's service."""

from __future__ import annotations

import html
from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.service.readiness import LOADING
import app.ui.manuscript as manuscript_pane
from app.ui.page import STORY_PAGE, Page, Shown, action, paced, problem, run, show, story_choices, stream
from common.errors import Conflict
from storage import repo


def build(page: Page) -> None:
    """The left column: the story list, the new-story box and the short-term memory."""
    stories = gr.Dropdown(label="Your stories (or type a story's number)", choices=[], value=None,
                          allow_custom_value=True, elem_id="stories")
    with gr.Accordion("New story", open=True):
        premise = gr.Textbox(label="Premise", lines=4, elem_id="premise",
                             placeholder="What is the story about? Who, where, what goes wrong?")
        title = gr.Textbox(label="Title (optional)", elem_id="title")
        with gr.Row():
            start = gr.Button("Start the story", variant="primary", elem_id="start", scale=2)
            clarify_premise = gr.Button("Clarify the premise (SCA)", elem_id="clarify-premise", scale=1)
    memory = gr.Textbox(label="Short-term memory (the story so far; the next step starts from it)",
                        lines=10, interactive=True, elem_id="short-memory")
    save_memory = gr.Button("Save the short-term memory", size="sm", elem_id="save-memory")
    page.add(stories=stories, premise=premise, title=title, start_button=start,
             clarify_premise_button=clarify_premise, memory=memory, save_memory_button=save_memory,
             memory_seen=gr.State(None))  # the version of the short-term memory shown (show() sets it)


def build_manuscript(page: Page) -> None:
    """The manuscript, its buttons, and the text being written."""
    manuscript = manuscript_pane.build()
    with gr.Row():
        regenerate = gr.Button("↻ Write this paragraph again", size="sm", elem_id="regenerate")
        undo = gr.Button("↶ Undo", size="sm", elem_id="undo")
        older = gr.Button("◀", size="sm", elem_id="older", scale=0)
        version = gr.Markdown("", elem_id="version")
        newer = gr.Button("▶", size="sm", elem_id="newer", scale=0)
    writing = gr.Markdown(elem_id="writing")
    page.add(manuscript=manuscript, manuscript_seen=gr.State(None), regenerate_button=regenerate, undo_button=undo,
             older_button=older, version=version, newer_button=newer, writing=writing)


def list_own_stories(service: StoryService) -> Shown:
    return {"stories": gr.update(choices=story_choices(service))}


def logged_in(service: StoryService) -> Shown:
    owner = service.context.owner
    if owner is repo.ANYONE:
        return {"who": ""}
    return {"who": f'<form method="post" action="logout" style="text-align: right">Logged in as '
                   f'<b>{html.escape(owner)}</b> · <button type="submit" id="logout">Log out</button></form>'}


def model_state(service: StoryService) -> Shown:
    """Whether the model is loaded, for the header; the timer runs only while it loads."""
    now = service.readiness.state()
    return {"model_status": now.line, "model_timer": gr.Timer(active=now.state == LOADING)}


@action
def resend(service: StoryService, sid) -> Shown:
    """All of the manuscript, for a page whose copy is out of step with its updates."""
    return {"manuscript": manuscript_pane.Pane(service.view(int(sid)), whole=True)}


@action(story=False)
def open_story(service: StoryService, sid) -> Shown:
    if sid is None or str(sid).strip() == "":
        return {}
    number = str(sid).split(":")[0].strip()  # a choice's value, or what the person typed
    if not (number.isascii() and number.isdecimal()) or int(number) >= 2**31:
        return problem(f"There is no story {str(sid)[:40]!r}: pick one of yours or type its number.")
    return show(service, service.view(int(number)))


@action(story=False)
def start(service: StoryService, text: str, title_text: str):
    yield from paced(service, "start", stream(service.new_story, text, title_text or None,
                                              waiting=service.readiness.waiting,
                                              expected=service.pace.expected("start")))


@action
def regenerate(service: StoryService, sid, head):
    yield from run(service, service.regenerate, int(sid), seen_head=head)


@action(page=True)
def undo(service: StoryService, sid, head) -> Shown:
    return show(service, service.undo(int(sid), head))


@action(page=True)
def older(service: StoryService, sid, head) -> Shown:
    return show(service, service.other_version(int(sid), -1, head))


@action(page=True)
def newer(service: StoryService, sid, head) -> Shown:
    return show(service, service.other_version(int(sid), +1, head))


@action
def save_memory(service: StoryService, sid, head, seen, text) -> Shown:
    """Refused when the short-term memory or the story changed since the page showed them: the
    story is shown as it is now, but the box keeps the person's text, and saving it again writes
    it over the memory the message quoted."""
    try:
        view = service.edit_short_memory(int(sid), text, seen_head=head, seen=seen or "")
    except Conflict as e:
        return {**show(service, service.view(int(sid))), **problem(str(e)), "memory": text,
                "memory_seen": e.version or seen}
    return show(service, view, "Short-term memory saved: the next step starts from it.")


def wire_opening(page: Page, app: gr.Blocks, follow: Callable) -> None:
    """The story list and who is logged in, as the page loads; opening and starting a story."""
    on, story_page = page.on, page.of(*STORY_PAGE)
    app.load(on(list_own_stories), None, page["stories"])  # stories made since launch
    app.load(on(logged_in), None, page["who"], api_visibility="undocumented")
    app.load(on(model_state), None, page.of("model_status", "model_timer"), api_visibility="undocumented")
    page["model_timer"].tick(on(model_state), None, page.of("model_status", "model_timer"),
                             api_visibility="undocumented")
    follow(page["stories"].input(on(open_story, pane=True), page.story("stories"), story_page))
    follow(page["start_button"].click(on(start, pane=True), page.story("premise", "title"), story_page,
                                      api_name="start", **page.model))
    page["manuscript"].click(on(resend, pane=True), page.story("story_id"),
                             page.of("manuscript", "manuscript_seen", "writing", "status"),
                             api_visibility="undocumented")


def wire_versions(page: Page, follow: Callable) -> None:
    """Write the head paragraph again, undo it, or show another version of it."""
    on, story_page, shown = page.on, page.of(*STORY_PAGE), page.story("story_id", "seen_head")
    follow(page["regenerate_button"].click(on(regenerate, pane=True), shown, story_page, **page.model))
    for name, handler in (("undo_button", undo), ("older_button", older), ("newer_button", newer)):
        follow(page[name].click(on(handler, pane=True), shown, story_page))


def wire_short_memory(page: Page, follow: Callable) -> None:
    follow(page["save_memory_button"].click(page.on(save_memory, pane=True),
                                            page.story("story_id", "seen_head", "memory_seen", "memory"),
                                            page.of(*STORY_PAGE)))
