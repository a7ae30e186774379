"""Accounts in the service: each person sees, changes and exports their own stories, memories and
playthroughs only; another person's story id is "not found" (in-process; the HTTP side is in the
server tests)."""

from __future__ import annotations

import pytest

from common.errors import NotFound
from tests.test_service import make_service


@pytest.fixture
def two(db, embedder):
    service, _ = make_service(db, embedder)
    ada, bob = service.as_user("ada"), service.as_user("bob")
    return service, ada, bob, ada.new_story("A keeper finds a letter from the future.")


def test_each_person_lists_and_opens_only_their_own_stories(two):
    service, ada, bob, story = two
    theirs = bob.new_story("A baker's bread makes people tell the truth.")
    assert ada.list_stories() == [(story.id, story.title)]
    assert bob.list_stories() == [(theirs.id, theirs.title)]
    assert len(service.list_stories()) == 2  # with accounts off, one person owns everything
    assert ada.view(story.id).paragraphs == story.paragraphs


@pytest.mark.parametrize("action", [
    lambda s, sid: s.view(sid),
    lambda s, sid: s.step(sid, plan=1),
    lambda s, sid: s.undo(sid),
    lambda s, sid: s.edit_short_memory(sid, "Bob was here."),
    lambda s, sid: s.inspect(sid),
    lambda s, sid: s.set_clarify_automatically(sid, True),
    lambda s, sid: s.manuscript(sid),
    lambda s, sid: s.memories.entries(sid),
    lambda s, sid: s.memories.add(sid, "Bob's note in Ada's story."),
    lambda s, sid: s.memories.search(sid, "letter"),
    lambda s, sid: s.manuscripts.export(sid, "json"),
    lambda s, sid: s.manuscripts.export(sid, "md"),
    lambda s, sid: s.reading.start(sid, "bob"),
], ids=["view", "step", "undo", "memory", "inspect", "settings", "manuscript", "entries", "add-memory",
        "search", "export-json", "export-md", "read"])
def test_another_persons_story_is_not_found_and_stays_unchanged(two, action):
    _, ada, bob, story = two
    before, memories = ada.view(story.id), [e.text for e in ada.memories.entries(story.id)]
    with pytest.raises(NotFound, match=f"no story with id {story.id}$"):
        action(bob, story.id)
    after = ada.view(story.id)
    assert (after.paragraphs, after.short_memory, after.head_step_id) == \
        (before.paragraphs, before.short_memory, before.head_step_id)
    assert [e.text for e in ada.memories.entries(story.id)] == memories


def test_an_imported_backup_belongs_to_whoever_imports_it(two):
    _, ada, bob, story = two
    backup = ada.manuscripts.export(story.id, "json")
    copy = bob.manuscripts.import_file(backup.filename, backup.data)
    assert [i for i, _ in bob.list_stories()] == [copy.id]
    assert copy.id not in [i for i, _ in ada.list_stories()]


def test_another_persons_playthrough_is_not_found(two):
    _, ada, bob, story = two
    play = ada.reading.start(story.id, "ada")
    for action in (lambda: bob.reading.view(play.playthrough_id),
                   lambda: bob.reading.choose(play.playthrough_id, 1),
                   lambda: bob.reading.choose(play.playthrough_id, 9)):  # not "there is no choice 9"
        with pytest.raises(NotFound, match=f"no playthrough with id {play.playthrough_id}$"):
            action()
    assert ada.reading.view(play.playthrough_id).scenes == play.scenes  # unchanged, and still hers


def test_another_persons_memory_entries_cannot_be_changed_or_deleted(two):
    """The page cannot reach this (it edits entries of the open story); the service checks anyway."""
    _, ada, bob, story = two
    before = [(e.id, e.text) for e in ada.memories.entries(story.id)]
    entry_id = before[0][0]
    with pytest.raises(NotFound, match=f"no story with id {story.id}$"):
        bob.memories.update(story.id, entry_id, text="Bob was here.")
    with pytest.raises(NotFound, match=f"no story with id {story.id}$"):
        bob.memories.delete(story.id, entry_id)
    assert [(e.id, e.text) for e in ada.memories.entries(story.id)] == before
