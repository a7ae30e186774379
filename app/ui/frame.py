"""The page's frame: the header, the story column, the manuscript with its tabs and the status
line; each tab lays out and wires its own part (app/ui/<tab>.py), and every action is one call of
the person's story service, run in a worker thread so its text can stream in."""

from __future__ import annotations

import logging
import os

import gradio as gr

from app.people import People
from app.service import StoryService
import app.ui.auto as auto  # each tab as a module (app.ui itself imports this frame)
import app.ui.clarify as clarify
import app.ui.edit as edit
import app.ui.files as files
import app.ui.inspect as inspect
import app.ui.loom as loom
import app.ui.memory as memory
import app.ui.read as read
import app.ui.repetition as repetition
import app.ui.story as story
import app.ui.write as write
from app.ui.page import Page
from common.errors import InvalidInput


def build_app(service: StoryService, people: People | None = None, writers: int = 1,
              files_ttl: int = 3600) -> gr.Blocks:
    """The page. `people` says whose stories each event may touch (default: accounts off, everyone's).
    Events that call the model (steps, clarify, reading) run `writers` at a time, and auto
    runs and imports `writers` at a time each beside them; the rest of the page is never held
    up behind them. The model calls inside all take turns, first come first served, on the one
    model. Exports and uploads are deleted from the server `files_ttl` seconds after they were
    made."""
    page = Page(people or People(service, accounts_on=False), writers, files_ttl)
    with gr.Blocks(title="storyloom", delete_cache=(max(1, files_ttl // 4), files_ttl)) as app:
        lay_out(page)
        repetition.wire(page)
        clarify.wire(page)
        wire(page, app)
    return app


def lay_out(page: Page) -> None:
    with gr.Row():
        gr.Markdown("# storyloom\nWrite a story with a local language model, one paragraph at a time.")
        # whether the model is loaded; the timer asks again each second while it loads
        page.add(model_status=gr.Markdown(elem_id="model-status"), model_timer=gr.Timer(1.0, active=False))
        page.add(who=gr.HTML(elem_id="who"))  # with accounts on: who is logged in, and a way out
    # the story open on this page, and the head step it shows (a stale tab cannot write past it)
    page.add(story_id=gr.State(None), seen_head=gr.State(None))
    with gr.Row():
        with gr.Column(scale=1):
            story.build(page)
        with gr.Column(scale=2):
            story.build_manuscript(page)
            with gr.Tabs() as tabs:
                for tab in (write, auto, edit, loom, read, memory, repetition, inspect, files):
                    tab.build(page)
            page.add(tabs=tabs, shown_tab=gr.State("Write"))  # the label of the tab shown
            page.add(status=gr.Markdown(elem_id="status"))


def wire(page: Page, app: gr.Blocks) -> None:
    """The events, in the order the page has always registered them (API names that repeat are
    numbered in that order)."""
    def follow(event) -> None:
        """After an action that changes the story (or opens another), the Memory, Repetition and
        Loom tabs follow (only when shown: the others load theirs when opened)."""
        event.then(page.on(memory.refresh_table), page.of("story_id", "show_stale", "shown_tab"),
                   page.of("memory_table", *memory.ENTRY), api_visibility="undocumented").then(
            page.on(repetition.follow), page.of("story_id", "shown_tab"), page.of(*repetition.SHOWN),
            api_visibility="undocumented").then(
            page.on(loom.follow), page.of("story_id", "shown_tab"), page["loom"], api_visibility="undocumented")

    page["tabs"].select(shown_tab, None, page["shown_tab"], api_visibility="undocumented")

    story.wire_opening(page, app, follow)
    write.wire(page, follow)
    write.wire_keys(app)
    story.wire_versions(page, follow)
    auto.wire(page, follow)
    edit.wire(page, follow)
    story.wire_short_memory(page, follow)
    memory.wire(page)
    inspect.wire(page)
    files.wire(page, follow)
    loom.wire(page, follow)
    read.wire(page)


def shown_tab(selected: gr.SelectData) -> str:
    return selected.value


def serve(settings, host: str | None = None, port: int | None = None, allow_no_auth: bool = False) -> None:
    import uvicorn

    from app.gate import allowed_hosts, origin_of, web_app
    from app.logins import Logins
    from app.people import check_binding
    from app.wiring import build_service
    from storage import accounts
    from storage.drafts import MAX_DRAFT_BYTES

    host = host or settings.host
    port = port or settings.port
    talk = logging.StreamHandler()  # what the server does, for whoever runs it: model loads, failures
    talk.setFormatter(logging.Formatter("storyloom: %(message)s"))
    logging.getLogger("storyloom").addHandler(talk)
    logging.getLogger("storyloom").setLevel(logging.INFO)
    check_binding(host, settings.auth, allow_no_auth or settings.allow_no_auth)
    # every file the server makes (database, Gradio's copies of uploads and exports) is its owner's only
    os.umask(0o077)
    hosts = allowed_hosts(host, settings.allowed_hosts.split(","))
    origins = frozenset(origin_of(o) for o in settings.allowed_origins.split(",") if o.strip())
    service = build_service(settings)
    if settings.auth:
        with service.context.db.Session() as session:
            if not accounts.list_users(session):
                raise InvalidInput("accounts are on (STORYLOOM_AUTH) but there are none: add one with "
                                   "`storyloom user add NAME` (and `storyloom user claim NAME` for the stories "
                                   "written while accounts were off)")
    if settings.preload:
        service.readiness.start()  # the models load while the server starts and the first writer arrives
    blocks = build_app(service, People(service, accounts_on=settings.auth), writers=settings.model_writers,
                       files_ttl=settings.files_ttl)
    blocks.queue(default_concurrency_limit=16)
    app = web_app(blocks, hosts=hosts, origins=origins, server_name=host, server_port=port, theme=gr.themes.Soft(),
                  show_error=True, ssr_mode=False,
                  max_file_size=max(settings.max_backup_bytes, MAX_DRAFT_BYTES),
                  logins=Logins(service.context.db, settings.session_ttl) if settings.auth else None)
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("storyloom.serve").info("serving on http://%s:%d/ (answering to %s)", shown, port,
                                              ", ".join(sorted(hosts)))
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
