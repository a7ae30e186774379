"""The memory desk: a story's long-term memory as the person sees and edits it.

Every entry is plain text with its kind, its source step, and whether it is pinned, stale,
or when it was last retrieved. Edits are re-embedded and bump the story's memory version, so
the next step's retrieval (and the next prompt) sees them. Edits here do not wait for a step
being written: each is its own short transaction, and a step reads memory once, when it
gathers its context."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.service.context import SAVE_AGAIN, StoryContext, check_seen, checked_text, fingerprint, quoted
from memory.longterm import Lore
from memory.retrieval import Hit, Query
from storage import repo
from common.errors import InvalidInput, NotFound
from storage.models import MemoryEntry

PERSON_KINDS = ("note", "lore")  # the kinds a person adds; paragraph and summary entries come from steps
MAX_K = 50


@dataclass(frozen=True)
class EntryRow:
    id: int
    kind: str
    text: str
    step_id: int | None
    paragraph: int | None  # the paragraph number of its source step on the current branch
    where: str  # "paragraph 3", "other branch", "reader scene", or "the writer" for notes and lore
    pinned: bool
    stale: bool
    keys: tuple[str, ...]
    last_retrieved: datetime | None
    version: str  # of what the person edits (text, keys, pin): sent back with a save or a deletion


@dataclass(frozen=True)
class Found:
    """What retrieval returns for a query: the entries by meaning (with scores) and the entries
    that enter by rule (pinned, or lore whose key appears in the query)."""

    hits: list[Hit]
    by_rule: list[Lore]
    where: dict[int, str]  # entry id -> where it comes from, as in EntryRow.where


class Memories:
    def __init__(self, context: StoryContext):
        self.context = context
        self.db = context.db
        self.memory = context.memory
        self.limits = context.limits

    def entries(self, story_id: int, include_stale: bool = True, ids: list[int] | None = None,
                newest: int | None = None) -> list[EntryRow]:
        """The story's entries, oldest first (or those with `ids`, or the `newest` so many)."""
        with self.db.Session() as session:
            story = self.context.story(session, story_id)
            numbers = {s.id: n for n, s in enumerate(repo.path_to(session, story.head_step_id), 1)}
            scenes = repo.scene_ids(session, story_id)
            found = repo.memory_entries(session, story_id, ids, live=not include_stale, newest=newest, vectors=False)
            return [_row(e, numbers, scenes) for e in found]

    def count(self, story_id: int, include_stale: bool = True) -> int:
        with self.db.Session() as session:
            self.context.story(session, story_id)
            return repo.count_memory(session, story_id, live=not include_stale)

    def add(self, story_id: int, text: str, kind: str = "note", keys: list[str] | None = None,
            pinned: bool = False) -> EntryRow:
        """A note (found by meaning) or a lore entry (put in the prompt by its trigger keys; found by
        meaning only when it has none)."""
        if kind not in PERSON_KINDS:
            raise InvalidInput(f"you can add a {' or a '.join(PERSON_KINDS)}; {kind!r} entries come from the story's steps")
        text = checked_text(text, f"{kind} entry", self.limits.memory_chars)
        if kind != "lore" and keys:
            raise InvalidInput("only lore entries have trigger keys; add it as lore, or clear the keys")
        embedded = self.memory.embed([text])
        with self.db.Session.begin() as session:
            self.context.story(session, story_id)
            entry_id = self.memory.add(session, story_id, embedded, kind, keys=keys, pinned=pinned)[0].id
        return self.entry(story_id, entry_id)

    def update(self, story_id: int, entry_id: int, text: str | None = None, keys: list[str] | None = None,
               pinned: bool | None = None, seen: str | None = None) -> EntryRow:
        """Change an entry's text (re-embedded), lore keys or pin; with `seen` (the EntryRow.version
        the page showed), refused when the entry changed since."""
        embedded = None
        if text is not None:
            embedded = self.memory.embed([checked_text(text, "memory entry", self.limits.memory_chars)])
        with self.db.Session.begin() as session:
            self.context.claim(session, story_id)  # the caller's own story, or "no story with id …"
            self._check(session, story_id, entry_id, seen)
            entry = self.memory.update(session, entry_id, embedded, keys=keys, pinned=pinned, story_id=story_id)
            if entry.kind != "lore" and entry.keys:
                raise InvalidInput(f"only lore entries have trigger keys, and entry {entry_id} is a {entry.kind}")
        return self.entry(story_id, entry_id)

    def delete(self, story_id: int, entry_id: int, seen: str | None = None) -> None:
        """Delete an entry; with `seen`, as update."""
        with self.db.Session.begin() as session:
            self.context.claim(session, story_id)
            self._check(session, story_id, entry_id, seen, "Delete it again to delete it as it is now.")
            self.memory.delete(session, entry_id, story_id=story_id)

    def _check(self, session, story_id: int, entry_id: int, seen: str | None, again: str = SAVE_AGAIN) -> None:
        """A Conflict when the page's version of the entry is not this one (a missing entry is left
        to the change, which says it is not found)."""
        found = repo.memory_entries(session, story_id, [entry_id], vectors=False)
        if found:
            e = found[0]
            keys = f" Its keys: {', '.join(e.keys)}." if e.keys else ""
            check_seen(seen, entry_version(e), f"memory entry {entry_id}",
                       f"It now reads: {quoted(e.text)}.{keys}{' It is pinned.' if e.pinned else ''}", again)

    def entry(self, story_id: int, entry_id: int) -> EntryRow:
        found = self.entries(story_id, ids=[entry_id])
        if not found:
            raise NotFound(f"no memory entry with id {entry_id} in story {story_id}")
        return found[0]

    def search(self, story_id: int, query: str, k: int = 8) -> Found:
        """What retrieval returns for `query`, with the filters a step uses: the current branch
        only, near-duplicates left out, rule-based entries (pinned, lore by key) apart. (A step
        asks with its plan and its recent text together; the inspector shows what it got.)"""
        query = checked_text(query, "query", self.limits.query_chars)
        if not 1 <= k <= MAX_K:
            raise InvalidInput(f"ask for 1 to {MAX_K} entries, not {k}")
        with self.db.Session() as session:
            story = self.context.story(session, story_id)
            branch = repo.path_ids(session, story.head_step_id)
            found = self.memory.gather(session, story_id, Query(query), k, lore_limit=self.limits.lore,
                                       only_steps=branch)
        ids = [h.entry_id for h in found.hits] + [e.entry_id for e in found.lore]
        return Found(found.hits, found.lore, {r.id: r.where for r in self.entries(story_id, ids=ids)})


def _row(e: MemoryEntry, numbers: dict[int, int], scenes: set[int]) -> EntryRow:
    if e.step_id is None:
        where = "the writer"
    elif e.step_id in numbers:
        where = f"paragraph {numbers[e.step_id]}"
    else:
        where = "reader scene" if e.step_id in scenes else "other branch"
    return EntryRow(e.id, e.kind, e.text, e.step_id, numbers.get(e.step_id), where, e.pinned, e.stale,
                    tuple(e.keys or ()), e.last_retrieved_at, entry_version(e))


def entry_version(e: MemoryEntry) -> str:
    return fingerprint(e.id, e.text, list(e.keys or ()), e.pinned)
