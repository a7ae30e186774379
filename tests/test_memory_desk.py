"""The memory the writer sees and edits, and what the next prompt contains after each edit.
Real SQLite file, real embedder and FAISS; the model is scripted, and its requests are the prompts."""

import threading

import pytest

from app.service import Limits, StoryService
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from storage import repo
from common.errors import Busy, Conflict, InvalidInput, NotFound
from tests.fakes import ScriptedBackend


@pytest.fixture
def desk(db, embedder):
    backend = ScriptedBackend()
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend), Limits())
    return service, service.memories, backend


def next_prompt(service, backend, story_id, instruction="Mara climbs to the lamp room."):
    """The paragraph prompt of the next step."""
    backend.requests.clear()
    service.step(story_id, instruction=instruction)
    return next(r.messages[-1]["content"] for r in backend.requests if "paragraph of the story" in
                r.messages[-1]["content"])


def index_agrees(service, story_id):
    """The story's FAISS index holds exactly the live entries of the database, at their revisions."""
    with service.context.db.Session() as s:
        with service.context.memory.current_index(s, story_id) as index:
            return index.revisions == repo.memory_revisions(s, story_id) and len(index.index) == len(index.revisions)


def test_an_edited_short_term_memory_is_what_the_next_prompt_contains(desk):
    service, _, backend = desk
    story = service.new_story("A keeper finds a letter from the future.")
    edited = "Mara has a twin sister named Ilse who runs the ferry, and the letter is signed with an I."
    view = service.edit_short_memory(story.id, edited, seen_head=story.head_step_id)
    assert view.short_memory == edited
    prompt = next_prompt(service, backend, story.id)
    assert f"Summary of the story so far: {edited}" in prompt and story.short_memory not in prompt
    with pytest.raises(InvalidInput, match="short-term memory is empty"):
        service.edit_short_memory(story.id, "  ")
    with pytest.raises(Conflict):  # the page showed an older head
        service.edit_short_memory(story.id, "anything", seen_head=story.head_step_id)


def test_notes_edits_and_deletions_reach_the_prompt(desk):
    service, memories, backend = desk
    story = service.new_story("premise")
    note = memories.add(story.id, "The ferry to the mainland leaves only on Sundays at noon.")
    assert note.kind == "note" and note.where == "the writer"
    prompt = next_prompt(service, backend, story.id, "Mara waits for the ferry to the mainland.")
    assert "The ferry to the mainland leaves only on Sundays at noon." in prompt
    memories.update(story.id, note.id, "The ferry to the mainland was cancelled for the whole winter.")
    prompt = next_prompt(service, backend, story.id, "Mara waits for the ferry to the mainland.")
    assert "cancelled for the whole winter" in prompt and "Sundays at noon" not in prompt
    assert memories.entry(story.id, note.id).last_retrieved is not None
    memories.delete(story.id, note.id)
    prompt = next_prompt(service, backend, story.id, "Mara waits for the ferry to the mainland.")
    assert "ferry to the mainland was cancelled" not in prompt
    assert index_agrees(service, story.id)


def test_pinned_entries_are_always_in_the_prompt_and_lore_when_its_key_appears(desk):
    service, memories, backend = desk
    story = service.new_story("premise")
    pinned = memories.add(story.id, "It always rains on the island, even in August.", pinned=True)
    lore = memories.add(story.id, "Tomas is the village baker; he is afraid of boats.", kind="lore",
                        keys=["Tomas"])
    prompt = next_prompt(service, backend, story.id, "A gull steals a fish from the dock.")
    facts = prompt.split("Facts to keep in mind:")[1].split("Summary of the story so far")[0]
    assert pinned.text in facts and lore.text not in prompt
    prompt = next_prompt(service, backend, story.id, "TOMAS rows across with the bread.")  # any case
    facts = prompt.split("Facts to keep in mind:")[1].split("Summary of the story so far")[0]
    assert pinned.text in facts and lore.text in facts
    assert prompt.count(lore.text) == 1  # not again among the passages found by meaning
    trace = service.inspect(story.id)
    assert [(r["id"], r["reason"]) for r in trace["lore"]] == [(pinned.id, "pinned"), (lore.id, "key: Tomas")]
    memories.update(story.id, pinned.id, pinned=False)
    prompt = next_prompt(service, backend, story.id, "A gull steals a fish from the dock.")
    assert pinned.text not in prompt.split("Summary of the story so far")[0]


def test_lore_stays_within_its_allowance_however_much_is_triggered(desk):
    service, memories, backend = desk
    story = service.new_story("premise")
    for n in range(30):
        memories.add(story.id, f"Fact {n} about Greyhaven: " + "the old stones remember everything " * 8,
                     kind="lore", keys=["Greyhaven"])
    prompt = next_prompt(service, backend, story.id, "Mara walks around Greyhaven.")
    parts = service.inspect(story.id)["parts"]
    assert 0 < parts["lore"]["tokens"] <= parts["lore"]["budget"]
    assert prompt.count("Fact ") == len(parts["lore"]["each"]) <= service.context.limits.lore
    trace = service.inspect(story.id)
    assert len(trace["lore"]) == len(parts["lore"]["each"]) and trace["lore_left_out"] == 30 - len(trace["lore"])


def test_near_duplicates_are_returned_once(desk):
    service, memories, _ = desk
    story = service.new_story("premise")
    memories.add(story.id, "The boathouse key hangs on a nail behind the blue door.")
    memories.add(story.id, "The boathouse key hangs on a nail behind the blue door.")
    memories.add(story.id, "the boathouse key hangs on a nail behind the blue door!")
    found = memories.search(story.id, "Where is the boathouse key?", k=3)
    texts = [h.text.lower() for h in found.hits]
    assert sum("boathouse key" in t for t in texts) == 1
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)


def test_the_memory_list_shows_provenance_and_marks_stale_entries(desk):
    service, memories, _ = desk
    story = service.new_story("premise")
    view = service.step(story.id, plan=1)
    rows = memories.entries(story.id)
    assert {r.kind for r in rows} == {"paragraph", "summary"}
    assert {r.where for r in rows} == {"paragraph 1", "paragraph 2"}
    service.edit_paragraph(story.id, view.step_ids[1], "Mara rowed to the reef and found nothing but gulls there.")
    rows = memories.entries(story.id)
    assert any(r.stale and r.where == "paragraph 2" for r in rows)
    assert not any(r.stale for r in memories.entries(story.id, include_stale=False))
    service.regenerate(story.id)  # the old version's entries stay with it, on its branch
    assert "other branch" in {r.where for r in memories.entries(story.id)}


def test_bad_input_gets_clear_messages_and_changes_nothing(desk, db):
    service, memories, _ = desk
    story = service.new_story("premise")
    other = service.new_story("another premise")
    note = memories.add(story.id, "The well in the yard is dry.")
    with pytest.raises(InvalidInput, match="memory entry is empty"):
        memories.update(story.id, note.id, "   ")
    assert memories.entry(story.id, note.id).text == "The well in the yard is dry."
    with pytest.raises(InvalidInput, match="the query has 50,000 characters"):
        memories.search(story.id, "x" * 50_000)
    for key in ("the", "*", "a"):
        with pytest.raises(InvalidInput, match="lore key"):
            memories.add(story.id, "Anything.", kind="lore", keys=[key])
    with pytest.raises(InvalidInput, match="only lore entries have trigger keys"):
        memories.add(story.id, "A note.", keys=["Tomas"])
    with pytest.raises(InvalidInput, match="only lore entries have trigger keys"):
        memories.update(story.id, note.id, keys=["Tomas"])
    with pytest.raises(InvalidInput, match="entries come from the story's steps"):
        memories.add(story.id, "A paragraph.", kind="paragraph")
    with pytest.raises(NotFound):  # one story's entry through another story
        memories.update(other.id, note.id, "stolen")
    with pytest.raises(NotFound):
        memories.delete(other.id, note.id)
    assert memories.entry(story.id, note.id).text == "The well in the yard is dry."
    assert index_agrees(service, story.id)


def test_deleting_an_entry_while_a_step_runs(db, embedder):
    writing, release = threading.Event(), threading.Event()

    def slow_paragraph(request):
        if "paragraph of the story" in request.messages[-1]["content"]:
            writing.set()
            assert release.wait(30)
        return None

    backend = ScriptedBackend()
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend), Limits())
    memories = service.memories
    story = service.new_story("premise")
    note = memories.add(story.id, "Mara keeps the letter in a tin box under the floorboards.")
    backend.override = slow_paragraph
    stepping = threading.Thread(target=service.step, args=(story.id,), kwargs={"instruction": "Mara opens the tin box."})
    stepping.start()
    assert writing.wait(30)
    try:
        memories.delete(story.id, note.id)  # does not wait for the step
        with pytest.raises(Busy, match="a step is being written"):
            service.edit_short_memory(story.id, "Mara burned the letter.")
    finally:
        release.set()
    stepping.join(30)
    view = service.view(story.id)
    assert len(view.paragraphs) == 2  # the step was written
    assert note.id not in {r.id for r in memories.entries(story.id)}
    assert index_agrees(service, story.id)


@pytest.mark.parametrize("huge", [10**20, 2**63, -1, 0])
def test_ids_no_database_can_hold_are_not_found(desk, huge):
    """An id typed as 1e20 was an OverflowError ("unexpected error") from the database driver."""
    service, memories, _ = desk
    story = service.new_story("A keeper finds a letter from the future.")
    with pytest.raises(NotFound, match=f"no memory entry with id {huge} in story {story.id}"):
        memories.update(story.id, huge, text="Mara has a twin.")
    with pytest.raises(NotFound, match=f"no memory entry with id {huge}"):
        memories.delete(story.id, huge)
    with pytest.raises(NotFound, match=f"no memory entry with id {huge}"):
        memories.entry(story.id, huge)
    with pytest.raises(NotFound, match=f"no story with id {huge}"):
        service.view(huge)
    assert len(memories.entries(story.id)) == memories.count(story.id)  # nothing changed
