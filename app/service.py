"""The story service: the use cases the CLI and the UI share. Each action opens its own
short transactions; generation runs between them, outside any transaction, so a failed or
killed step writes nothing, and a step commits paragraph, memory entries and plans at once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from generation.recurrence import OnText, StepContext, Usage, Writer
from memory.longterm import LongTermMemory, chunks
from storage import repo
from storage.db import Database
from storage.errors import InvalidInput
from storage.models import Step


@dataclass(frozen=True)
class StoryView:
    id: int
    title: str
    premise: str
    outline: str
    paragraphs: list[str]
    short_memory: str
    plans: list[str]
    head_step_id: int | None
    last_step: dict  # what the head step cost: tokens, seconds, retries


@dataclass(frozen=True)
class Limits:
    premise_chars: int = 4000
    plan_chars: int = 2000
    title_chars: int = 200
    top_k: int = 4


class StoryService:
    def __init__(self, db: Database, memory: LongTermMemory, writer: Writer, limits: Limits = Limits()):
        self.db = db
        self.memory = memory
        self.writer = writer
        self.limits = limits
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- reading ---------------------------------------------------------------------

    def list_stories(self) -> list[tuple[int, str]]:
        with self.db.Session() as session:
            return [(s.id, s.title) for s in repo.list_stories(session)]

    def view(self, story_id: int) -> StoryView:
        with self.db.Session() as session:
            story = repo.get_story(session, story_id)
            path = repo.path_to(session, story.head_step_id)
            head = path[-1] if path else None
            return StoryView(
                story.id, story.title, story.premise, story.outline, [s.paragraph for s in path],
                head.short_memory if head else "", list(head.plans) if head else [],
                story.head_step_id, _cost(head) if head else {})

    def manuscript(self, story_id: int) -> str:
        view = self.view(story_id)
        return f"# {view.title}\n\n" + "".join(p + "\n\n" for p in view.paragraphs)

    def search_memory(self, story_id: int, query: str, k: int = 8):
        with self.db.Session() as session:
            repo.get_story(session, story_id)
            return self.memory.search(session, story_id, query, k)

    # -- writing ---------------------------------------------------------------------

    def new_story(self, premise: str, title: str | None = None, on_text: OnText | None = None) -> StoryView:
        premise = self._text(premise, "premise", self.limits.premise_chars)
        title = self._text(title, "title", self.limits.title_chars) if title and title.strip() else None
        opening = self.writer.init(premise, title, on_text)
        with self.db.Session.begin() as session:
            story = repo.create_story(session, title=opening.title, premise=premise, outline=opening.outline)
            self._commit_step(session, story, None, "", opening.paragraph, opening.short_memory,
                              opening.plans, opening.usage, [])
            story_id = story.id
        return self.view(story_id)

    def step(self, story_id: int, plan: int | None = None, instruction: str | None = None,
             on_text: OnText | None = None) -> StoryView:
        if (plan is None) == (instruction is None):
            raise InvalidInput("give either a plan number or an instruction")
        if instruction is not None:
            instruction = self._text(instruction, "instruction", self.limits.plan_chars)
        with self._lock(story_id):
            with self.db.Session() as session:
                story = repo.get_story(session, story_id)
                head = repo.get_step(session, story.head_step_id) if story.head_step_id else None
                if head is None:
                    raise InvalidInput(f"story {story_id} has no opening yet")
                chosen = instruction if instruction is not None else _pick(head.plans, plan)
                on_path = repo.path_ids(session, head.id)
                hits = self.memory.search(session, story_id, f"{chosen} {head.paragraph}", self.limits.top_k,
                                          only_steps=on_path, exclude_steps={head.id})
                context = StepContext(story.premise, story.outline, head.short_memory, head.paragraph,
                                      chosen, [h.text for h in hits])
            result = self.writer.step(context, on_text)
            with self.db.Session.begin() as session:
                story = repo.get_story(session, story_id)
                self._commit_step(session, story, head, chosen, result.paragraph, result.short_memory,
                                  result.plans, result.usage, hits)
        return self.view(story_id)

    # -- helpers ---------------------------------------------------------------------

    def _commit_step(self, session, story, parent: Step | None, plan: str, paragraph: str,
                     short_memory: str, plans: list[str], usage: Usage, hits) -> Step:
        trace = {"calls": usage.calls, "retries": usage.retries,
                 "retrieved": [{"id": h.entry_id, "score": round(h.score, 4), "text": h.text} for h in hits]}
        step = repo.add_step(session, story, parent=parent, plan=plan, paragraph=paragraph,
                             short_memory=short_memory, plans=plans, prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens, seconds=round(usage.seconds, 3),
                             model=self.writer.backend.name, trace=trace)
        self.memory.add(session, story.id, chunks(paragraph), "paragraph", step_id=step.id)
        self.memory.mark_retrieved(session, hits)
        return step

    def _lock(self, story_id: int) -> threading.Lock:
        """One action at a time per story in this process (other processes: see repo.add_step)."""
        with self._locks_guard:
            return self._locks.setdefault(story_id, threading.Lock())

    @staticmethod
    def _text(value: str | None, what: str, limit: int) -> str:
        value = (value or "").strip()
        if not value:
            raise InvalidInput(f"the {what} is empty")
        if len(value) > limit:
            raise InvalidInput(f"the {what} has {len(value):,} characters; the limit is {limit:,}")
        return value


def _pick(plans: list[str], number: int) -> str:
    if not 1 <= number <= len(plans):
        raise InvalidInput(f"there is no plan {number}; choose 1 to {len(plans)}" if plans
                           else "this step proposed no plans; give an instruction")
    return plans[number - 1]


def _cost(step: Step) -> dict:
    return {"prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
            "seconds": step.seconds, "retries": (step.trace or {}).get("retries", 0), "model": step.model}
