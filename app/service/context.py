"""What every use case of the story service shares: the database, the long-term memory, the
writer (the model), the limits, whose stories these are, and the per-story locks and auto runs.
One context per person (as_user); the database, the model, the locks and the runs are shared."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from sqlalchemy import update

from common.errors import Busy, Conflict, InvalidInput, NotFound
from generation.backend import Decoding, GradientScorer
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from storage import repo
from storage.db import Database
from storage.models import Step, Story, utcnow


@dataclass(frozen=True)
class Limits:
    premise_chars: int = 4000
    plan_chars: int = 2000
    title_chars: int = 200
    paragraph_chars: int = 20_000
    auto_steps: int = 500
    top_k: int = 4
    lore: int = 8  # pinned entries and triggered lore in one prompt, at most
    memory_chars: int = 4000  # a memory entry or the short-term memory
    query_chars: int = 2000  # a memory search typed by the person
    draft_paragraphs: int = 20_000  # paragraphs of a draft to import (a long novel has 5,000)
    draft_words: int = 1_000_000  # words of a draft to import
    backup_bytes: int = 200_000_000  # a JSON backup to import


class StoryLocks:
    """One action at a time per story in this process (other processes: see repo.add_step)."""

    def __init__(self):
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, story_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(story_id, threading.Lock())


class AutoRuns:
    """The auto runs going on, each with its stop signal, by (owner, story id): only the person
    who started one can stop it, and a story has one run at a time. (Imports are kept here too,
    by (owner, "import"): one at a time per person.)"""

    def __init__(self):
        self._runs: dict[tuple, threading.Event] = {}
        self._guard = threading.Lock()

    @contextmanager
    def running(self, key: tuple,
                busy: str = "Auto mode is already running on this story.") -> Iterator[threading.Event]:
        """Claim the story for a run, and give its stop signal; set and released when the run
        ends (also when the page that started it went away: nobody could press Stop any more)."""
        cancel = threading.Event()
        with self._guard:
            if self._runs.setdefault(key, cancel) is not cancel:  # two tabs cannot both start
                raise Busy(busy)
        try:
            yield cancel
        finally:
            cancel.set()
            with self._guard:
                if self._runs.get(key) is cancel:
                    del self._runs[key]

    def stop(self, key: tuple, idle: str = "Nothing is running on this story.") -> None:
        with self._guard:
            cancel = self._runs.get(key)
        if cancel is None:
            raise InvalidInput(idle)
        cancel.set()


@dataclass(frozen=True)
class StoryContext:
    db: Database
    memory: LongTermMemory
    writer: Writer
    limits: Limits = Limits()
    default_decoding: Decoding = Decoding()  # for stories whose decoding settings were never changed
    scorer: GradientScorer | None = None  # clarify's gradients (None: the writer's backend's own)
    owner: object = repo.ANYONE  # accounts off: everyone's stories; as_user scopes a copy to one person
    lock: StoryLocks = field(default_factory=StoryLocks)  # lock(story_id): that story's lock
    runs: AutoRuns = field(default_factory=AutoRuns)

    def as_user(self, name: str) -> "StoryContext":
        """This context for one logged-in person: they see, change and export their own stories
        only; another's story id is "not found". Shares the database, the model, locks and runs."""
        return replace(self, owner=name)

    @property
    def owner_name(self) -> str | None:
        """Who owns a story this context creates: the person, or nobody when accounts are off."""
        return None if self.owner is repo.ANYONE else self.owner

    def story(self, session, story_id: int) -> Story:
        """The story, when this context's person may see it (NotFound otherwise)."""
        return repo.get_story(session, story_id, self.owner)

    def head(self, session, story_id: int, seen_head: int | None = None) -> Step:
        """The story's head step; with `seen_head` (what the person's page shows), a Conflict when
        the story moved on since (another tab or window acted on it)."""
        story = self.story(session, story_id)
        if story.head_step_id is None:
            raise InvalidInput(f"story {story_id} has no opening yet")
        if seen_head is not None and seen_head != story.head_step_id:
            raise Conflict("the story changed in another tab or window; it is shown as it is now, "
                           "nothing was written")
        return repo.get_step(session, story.head_step_id)

    def claim(self, session, story_id: int) -> Story:
        """The story, for a write that depends on what it reads (a page's version of what it
        edits): its row is written first, so that this transaction holds the database's write lock
        from here to the commit, and what it reads next is what it writes over. (SQLite starts a
        transaction at its first write, not at a read; PostgreSQL locks the row.)"""
        story = self.story(session, story_id)
        session.execute(update(Story).where(Story.id == story.id).values(updated_at=utcnow())
                        .execution_options(synchronize_session=False))
        session.refresh(story)
        return story

    def step_of(self, session, story_id: int, step_id: int) -> Step:
        """A step of the story (NotFound for another story's)."""
        self.story(session, story_id)
        step = session.get(Step, step_id)
        if step is None or step.story_id != story_id:
            raise NotFound(f"no paragraph with id {step_id} in story {story_id}")
        return step

    def decoding(self, story_id: int) -> Decoding:
        """The story's anti-repetition settings (the defaults until the person changes them)."""
        with self.db.Session() as session:
            return self.decoding_of(self.story(session, story_id))

    def decoding_of(self, story: Story) -> Decoding:
        saved = (story.settings or {}).get("decoding")
        return Decoding.from_dict({**asdict(self.default_decoding), **saved}) if saved else self.default_decoding

    def writer_for(self, story_id: int | None) -> Writer:
        """The writer with this story's decoding settings (a shallow copy: the backend is shared)."""
        return replace(self.writer, decoding=self.default_decoding if story_id is None else self.decoding(story_id))


# control characters other than tab and line ends (ANSI escapes included), and lone surrogates,
# which no text needs and which break exports, terminals and the database's encoders
UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def checked_text(value: str | None, what: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"the {what} is empty")
    if len(value) > limit:
        raise InvalidInput(f"the {what} has {len(value):,} characters; the limit is {limit:,}")
    if bad := UNPRINTABLE.search(value):
        kind = "a lone surrogate" if 0xD800 <= ord(bad.group()) <= 0xDFFF else "a control character"
        raise InvalidInput(f"the {what} has {kind} (U+{ord(bad.group()):04X}) at character {bad.start() + 1}; "
                           "remove it")
    return value


def fingerprint(*fields) -> str:
    """The version of something a person edits, from its id and the fields they see (the first 16
    hex digits of their SHA-256): a page keeps the version it showed and sends it with a save."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


SAVE_AGAIN = "Your text is still in the box: save again to put it in place of this."


def check_seen(seen: str | None, version: str, what: str, now: str, again: str = SAVE_AGAIN,
               plural: bool = False) -> None:
    """Refuse a save made from another version of `what` than the current one, `version` (None:
    no check, for the CLI): a Conflict that says what it is `now` and carries its version, so a
    page that has shown the message can let the person save again over what they have seen."""
    if seen is not None and seen != version:
        raise Conflict(f"{what} changed since this page showed {'them' if plural else 'it'} (in another tab or "
                       f"window?); nothing was written. {now} {again}", version=version)


def quoted(text: str | None, limit: int = 1000) -> str:
    """Stored text inside a message: in «», its first `limit` characters."""
    text = text or ""
    return f"«{text[:limit]}…» ({len(text):,} characters)" if len(text) > limit else f"«{text}»"


def pick(options: list[str], number: int, what: str = "plan") -> str:
    if not 1 <= number <= len(options):
        raise InvalidInput(f"there is no {what} {number}; choose 1 to {len(options)}" if options
                           else f"there are no {what}s to choose from")
    return options[number - 1]
