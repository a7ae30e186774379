"""Two tabs edit the same thing: each loaded it (with its version), one saves, and the other's save
from the version it loaded is refused with what is there now, instead of writing over it. First
through the service (a real SQLite file, the real embedder, the scripted model), then through the
real page with two gradio_client sessions."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client

from app.service import Limits, StoryService
from app.service.stories import decoding_version
from common.errors import Conflict
from generation.backend import Decoding
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from tests.fakes import ScriptedBackend
from tests.test_web_accounts import page
from tests.web import scripted_app

A_TEXT = "Mara painted the lighthouse door violet and waited for the ferry on the step."
B_TEXT = "Mara sold the lighthouse to a man who collected clocks."


@pytest.fixture
def tabs(db, embedder):
    """The service with the scripted model, and a story of two paragraphs both tabs have open."""
    backend = ScriptedBackend()
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend), Limits())
    view = service.step(service.new_story("A keeper finds a letter from the future.").id, plan=1)
    return service, backend, view


def test_a_paragraph_saved_in_another_tab_is_not_written_over(tabs):
    service, backend, view = tabs
    step, seen = view.step_ids[1], view.paragraph_version(1)  # what both tabs loaded into the box
    service.edit_paragraph(view.id, step, A_TEXT, seen_head=view.head_step_id, seen=seen)  # tab A
    asked = len(backend.requests)
    with pytest.raises(Conflict) as refused:  # tab B, from the paragraph as it was
        service.edit_paragraph(view.id, step, B_TEXT, seen_head=view.head_step_id, seen=seen)
    assert len(backend.requests) == asked  # refused before the model was asked for a summary
    message = str(refused.value)
    assert message.startswith("paragraph 2 changed since this page showed it") and f"«{A_TEXT}»" in message
    now = service.view(view.id)
    assert now.paragraphs[1] == A_TEXT and refused.value.version == now.paragraph_version(1)
    # saving again from the version the refusal showed writes over it, knowingly
    assert service.edit_paragraph(view.id, step, B_TEXT, seen=refused.value.version).paragraphs[1] == B_TEXT


def test_a_paragraph_edited_while_the_model_rewrote_the_summary_is_not_written_over(tabs):
    """Tab B's edit passes the first check; tab A saves while the model writes B's summary; B's
    edit is refused when it is written, and A's text stays."""
    service, backend, view = tabs
    step, seen = view.step_ids[1], view.paragraph_version(1)

    def meanwhile(request):  # the first summary asked for is B's: tab A saves then
        if "Rewrite the summary" in request.messages[-1]["content"]:
            backend.override = None
            service.edit_paragraph(view.id, step, A_TEXT, seen=seen)
        return None

    backend.override = meanwhile
    with pytest.raises(Conflict, match="paragraph 2 changed since this page showed it") as refused:
        service.edit_paragraph(view.id, step, B_TEXT, seen=seen)
    assert f"«{A_TEXT}»" in str(refused.value) and service.view(view.id).paragraphs[1] == A_TEXT


def test_a_chapter_title_set_in_another_tab_is_not_written_over(tabs):
    service, _, view = tabs
    step, seen = view.step_ids[1], view.paragraph_version(1)
    service.set_chapter(view.id, step, "The Reef", seen=seen)  # tab A
    with pytest.raises(Conflict, match="Its chapter title is now «The Reef»"):
        service.set_chapter(view.id, step, "The Letter", seen=seen)  # tab B
    with pytest.raises(Conflict, match="Its chapter title is now «The Reef»"):  # the Edit tab saves both
        service.edit_paragraph(view.id, step, view.paragraphs[1], chapter="The Letter", seen=seen)
    now = service.view(view.id)
    assert now.chapters[1] == "The Reef" and now.paragraphs == view.paragraphs


def test_a_short_term_memory_saved_in_another_tab_is_not_written_over(tabs):
    service, _, view = tabs
    head, seen = view.head_step_id, view.memory_version
    service.edit_short_memory(view.id, A_TEXT, seen_head=head, seen=seen)  # tab A; the head did not move
    with pytest.raises(Conflict) as refused:
        service.edit_short_memory(view.id, B_TEXT, seen_head=head, seen=seen)  # tab B
    assert str(refused.value).startswith("the short-term memory changed since this page showed it")
    assert f"It now reads: «{A_TEXT}»" in str(refused.value)
    now = service.view(view.id)
    assert now.short_memory == A_TEXT and refused.value.version == now.memory_version
    # the summary entry in long-term memory followed A's text only
    summaries = [r.text for r in service.memories.entries(view.id, include_stale=False)
                 if r.kind == "summary" and r.step_id == head]
    assert summaries == [A_TEXT]


def test_an_entry_saved_in_another_tab_is_not_written_over(tabs):
    service, _, view = tabs
    memories = service.memories
    loaded = memories.add(view.id, "The ferry leaves on Sundays.")  # both tabs show it
    memories.update(view.id, loaded.id, A_TEXT, seen=loaded.version)  # tab A
    with pytest.raises(Conflict) as refused:
        memories.update(view.id, loaded.id, B_TEXT, seen=loaded.version)  # tab B
    assert str(refused.value).startswith(f"memory entry {loaded.id} changed since this page showed it")
    assert f"It now reads: «{A_TEXT}»" in str(refused.value)
    assert memories.entry(view.id, loaded.id).text == A_TEXT
    shown = refused.value.version
    memories.update(view.id, loaded.id, pinned=True, seen=shown)  # tab A pins it: a change as well
    with pytest.raises(Conflict, match="It is pinned"):
        memories.update(view.id, loaded.id, B_TEXT, seen=shown)
    now = memories.entry(view.id, loaded.id)
    assert (now.text, now.pinned) == (A_TEXT, True)
    assert memories.update(view.id, loaded.id, B_TEXT, seen=now.version).text == B_TEXT


def test_an_entry_changed_in_another_tab_is_not_deleted(tabs):
    service, _, view = tabs
    memories = service.memories
    loaded = memories.add(view.id, "The ferry leaves on Sundays.")
    memories.update(view.id, loaded.id, A_TEXT, seen=loaded.version)  # tab A
    with pytest.raises(Conflict, match="Delete it again to delete it as it is now") as refused:
        memories.delete(view.id, loaded.id, seen=loaded.version)  # tab B
    assert f"It now reads: «{A_TEXT}»" in str(refused.value)
    assert memories.entry(view.id, loaded.id).text == A_TEXT
    memories.delete(view.id, loaded.id, seen=refused.value.version)
    assert loaded.id not in {r.id for r in memories.entries(view.id)}


def test_settings_saved_in_another_tab_are_not_written_over(tabs):
    service, _, view = tabs
    seen = decoding_version(view.id, service.decoding(view.id))
    service.set_decoding(view.id, Decoding(guard=False), seen=seen)  # tab A
    with pytest.raises(Conflict) as refused:
        service.set_decoding(view.id, Decoding(no_repeat_ngram_size=4), seen=seen)  # tab B
    assert str(refused.value).startswith("the story's repetition settings changed since this page showed them")
    assert "They are now: ditto on, guard off," in str(refused.value)
    assert service.decoding(view.id) == Decoding(guard=False)
    # clarify-automatically is a setting of its own: turning it on does not refuse the decoding
    service.set_clarify_automatically(view.id, True)
    service.set_decoding(view.id, Decoding(no_repeat_ngram_size=4), seen=refused.value.version)
    assert service.decoding(view.id) == Decoding(no_repeat_ngram_size=4) and service.clarify_automatically(view.id)


def test_a_save_waits_for_one_in_progress_and_sees_it(tabs, db):
    """Tab A's save holds its transaction open; tab B's save of the same entry, from the version
    both loaded, waits for it and is then refused: it reads the entry after A's write, not before."""
    service, _, view = tabs
    memories = service.memories
    loaded = memories.add(view.id, "The ferry leaves on Sundays.")
    outcome = {}

    def tab_b():
        try:
            memories.update(view.id, loaded.id, B_TEXT, seen=loaded.version)
            outcome["b"] = "saved"
        except Conflict as e:
            outcome["b"] = str(e)

    embedded = service.context.memory.embed([A_TEXT])
    with db.Session.begin() as session:  # tab A's save, in the middle
        service.context.claim(session, view.id)
        service.context.memory.update(session, loaded.id, embedded, story_id=view.id)
        b = threading.Thread(target=tab_b)
        b.start()
        time.sleep(1.5)
        assert b.is_alive()  # waiting for A's transaction
    b.join(30)
    assert "It now reads: «" + A_TEXT in outcome["b"]
    assert memories.entry(view.id, loaded.id).text == A_TEXT


# -- through the page ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder):
    with scripted_app(tmp_path_factory.mktemp("tabs"), embedder, ScriptedBackend()) as (url, service):
        yield url, service


def two_tabs(served) -> tuple[Client, Client, int]:
    """A new story of two paragraphs, open in two sessions of the page."""
    url, service = served
    story = service.step(service.new_story("A keeper finds a letter from the future.").id, plan=1).id
    tabs = Client(url, verbose=False), Client(url, verbose=False)
    for tab in tabs:
        assert "Mara" in page(tab.predict(str(story), api_name="/open_story"))["manuscript"]
    return *tabs, story


def test_two_pages_editing_one_paragraph(served):
    a, b, story = two_tabs(served)
    service = served[1]
    for tab in (a, b):
        loaded, *_ = tab.predict(2, api_name="/load_paragraph")
        assert loaded == service.view(story).paragraphs[1]
    assert "Paragraph 2 saved" in page(a.predict(2, A_TEXT, "", api_name="/save_paragraph"))["status"]
    refused = page(b.predict(2, B_TEXT, "The Clocks", api_name="/save_paragraph"))
    assert refused["status"].startswith("**Nothing was written:** paragraph 2 changed since this page showed it")
    assert A_TEXT in refused["status"] and A_TEXT in refused["manuscript"]  # the story as it is now
    assert service.view(story).paragraphs[1] == A_TEXT and service.view(story).chapters[1] is None
    # B has now seen A's text: saving again puts B's in its place
    assert "Paragraph 2 saved" in page(b.predict(2, B_TEXT, "The Clocks", api_name="/save_paragraph"))["status"]
    assert service.view(story).paragraphs[1] == B_TEXT and service.view(story).chapters[1] == "The Clocks"
    # and A's page, which showed its own text, is refused in turn
    assert "changed since" in page(a.predict(2, "Mara slept.", "", api_name="/save_paragraph"))["status"]


def test_two_pages_editing_the_short_term_memory(served):
    a, b, story = two_tabs(served)
    service = served[1]
    assert "saved" in page(a.predict(A_TEXT, api_name="/save_memory"))["status"]
    refused = page(b.predict(B_TEXT, api_name="/save_memory"))
    assert "the short-term memory changed since this page showed it" in refused["status"]
    assert A_TEXT in refused["status"] and refused["short_memory"] == B_TEXT  # the box keeps B's text
    assert service.view(story).short_memory == A_TEXT
    page(b.predict(B_TEXT, api_name="/save_memory"))
    assert service.view(story).short_memory == B_TEXT


def test_two_pages_editing_the_repetition_settings(served):
    a, b, story = two_tabs(served)
    service = served[1]
    fields = {"ditto": True, "guard": True, "guard_lambda": 0.01, "penalty": 1.1, "ngram": 0, "dry": 0.0,
              "dry_base": 1.75, "dry_allowed": 2}
    for tab in (a, b):
        tab.predict(api_name="/repetition_settings")
    saved = a.predict(*{**fields, "guard": False}.values(), api_name="/save_repetition_settings")
    assert "Repetition settings saved" in saved[-1]
    refused = b.predict(*{**fields, "ngram": 4}.values(), api_name="/save_repetition_settings")
    assert "the story's repetition settings changed since this page showed them" in refused[-1]
    assert "guard off" in refused[-1]
    assert service.decoding(story).guard is False and service.decoding(story).no_repeat_ngram_size == 0
