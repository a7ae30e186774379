"""The story service: the use cases the CLI and the page share, over one context (database,
long-term memory, writer, owner, per-story locks). Each action opens its own short
transactions; generation runs between them, outside any transaction, so a failed or killed step
writes nothing, and a step commits paragraph, memory entries and plans at once.

StoryService is the front door: it builds the context and the use cases, names them
(`service.writing`, `.editing`, `.auto_mode`, `.memories`, `.reading`, `.manuscripts`, `.stories`,
`.loom`) and
passes the everyday verbs (new_story, step, view, ...) on to them, so a caller holds one object."""

from __future__ import annotations

import copy

from app.service.auto import Auto
from app.service.context import Limits, StoryContext, checked_text, pick
from app.service.editing import Editing
from app.service.loom import Loom
from app.service.manuscripts import Manuscripts
from app.service.memories import Memories
from app.service.reading import Reading
from app.service.readiness import Pace, Readiness
from app.service.steps import Steps
from app.service.stories import Stories, StoryView
from app.service.writing import Writing
from generation.backend import Decoding
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from storage.db import Database

__all__ = ["Limits", "StoryContext", "StoryService", "StoryView", "checked_text", "pick"]


class StoryService:
    def __init__(self, db: Database, memory: LongTermMemory, writer: Writer, limits: Limits = Limits(),
                 decoding: Decoding = Decoding(), scorer=None, readiness: Readiness | None = None):
        self.readiness = readiness or Readiness()  # the models' loading, shared by every person's copy
        self.pace = Pace()  # how long recent steps took on this machine, shared too
        self._open(StoryContext(db, memory, writer, limits, decoding, scorer))

    def _open(self, context: StoryContext) -> None:
        self.context = context
        steps = Steps(context)
        self.stories = Stories(context)
        self.writing = Writing(context, steps)
        self.editing = Editing(context, steps)
        self.auto_mode = Auto(context, steps, self.stories)
        self.memories = Memories(context)
        self.reading = Reading(context, steps)
        self.manuscripts = Manuscripts(context)
        self.loom = Loom(context)

    def as_user(self, name: str) -> "StoryService":
        """This service for one logged-in person: they see, change and export their own stories
        only; another's story id is "not found". Shares the database, the model, locks and runs."""
        scoped = copy.copy(self)
        scoped._open(self.context.as_user(name))
        return scoped

    # the everyday verbs, each passed on to its use case

    def list_stories(self):
        return self.stories.list_stories()

    def view(self, story_id: int) -> StoryView:
        return self.stories.view(story_id)

    def manuscript(self, story_id: int) -> str:
        return self.stories.manuscript(story_id)

    def inspect(self, story_id: int, step_id: int | None = None) -> dict:
        return self.stories.inspect(story_id, step_id)

    def search_memory(self, story_id: int, query: str, k: int = 8):
        return self.stories.search_memory(story_id, query, k)

    def decoding(self, story_id: int) -> Decoding:
        return self.stories.decoding(story_id)

    def set_decoding(self, story_id: int, decoding: Decoding, seen: str | None = None) -> Decoding:
        return self.stories.set_decoding(story_id, decoding, seen)

    def clarify_automatically(self, story_id: int) -> bool:
        return self.stories.clarify_automatically(story_id)

    def set_clarify_automatically(self, story_id: int, on: bool) -> bool:
        return self.stories.set_clarify_automatically(story_id, on)

    def clarify(self, story_id: int | None, text: str, progress=None):
        return self.stories.clarify(story_id, text, progress)

    def repetition(self, story_id: int) -> list[dict]:
        return self.stories.repetition(story_id)

    def new_story(self, premise: str, title: str | None = None, on_text=None) -> StoryView:
        return self.writing.new_story(premise, title, on_text)

    def step(self, story_id: int, plan: int | None = None, instruction: str | None = None, on_text=None,
             seen_head: int | None = None) -> StoryView:
        return self.writing.step(story_id, plan, instruction, on_text, seen_head)

    def regenerate(self, story_id: int, on_text=None, seen_head: int | None = None) -> StoryView:
        return self.writing.regenerate(story_id, on_text, seen_head)

    def auto(self, story_id: int, steps: int, on_text=None, on_step=None, cancel=None) -> StoryView:
        return self.auto_mode.run(story_id, steps, on_text, on_step, cancel)

    def edit_paragraph(self, story_id: int, step_id: int, text: str, chapter: str | None = None,
                       seen_head: int | None = None, on_text=None, seen: str | None = None) -> StoryView:
        return self.editing.edit_paragraph(story_id, step_id, text, chapter, seen_head, on_text, seen)

    def edit_short_memory(self, story_id: int, text: str, seen_head: int | None = None,
                          seen: str | None = None) -> StoryView:
        return self.editing.edit_short_memory(story_id, text, seen_head, seen)

    def set_chapter(self, story_id: int, step_id: int, title: str | None, seen: str | None = None) -> StoryView:
        return self.editing.set_chapter(story_id, step_id, title, seen)

    def switch(self, story_id: int, step_id: int) -> StoryView:
        return self.editing.switch(story_id, step_id)

    def other_version(self, story_id: int, delta: int, seen_head: int | None = None) -> StoryView:
        return self.editing.other_version(story_id, delta, seen_head)

    def undo(self, story_id: int, seen_head: int | None = None) -> StoryView:
        return self.editing.undo(story_id, seen_head)
