"""How a step is written, for the writer's manuscript and for a reader's playthrough alike: gather
the context after a parent step in one short read, generate outside any transaction (so a failed
or killed step writes nothing), then commit one StepRecord (paragraph, short-term memory, plans,
long-term memory entries, what it cost) in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.service.context import StoryContext
from generation.recurrence import Continuation, OnText, Opening, StepContext, Usage
from memory.longterm import Embedded, Lore, chunks
from memory.retrieval import Hit, Query
from storage import repo
from storage.models import Step

RECENT_WORDS = 150  # a last paragraph shorter than this brings the end of the one before into the prompt

# add(session, parent, fields) inserts a step and moves the head it belongs to
AddStep = Callable[..., Step]
Derived = list[tuple[str, Embedded]]  # (kind, entries) a step's text gives to long-term memory


@dataclass
class StepRecord:
    """Everything one step writes, computed before its transaction."""

    plan: str  # what it followed ("" for an opening)
    paragraph: str
    short_memory: str
    plans: list[str]  # the three it proposes
    usage: Usage  # tokens, seconds, retries and the calls made, for the trace
    derived: Derived  # its long-term memory entries, embedded
    parent: Step | None = None  # None: the story's opening
    hits: list[Hit] = field(default_factory=list)  # memories retrieved into its prompt
    lore: list[Lore] = field(default_factory=list)  # pinned entries and lore put in its prompt
    lore_left_out: int = 0  # pinned or triggered entries with no room in the prompt

    def trace(self) -> dict:
        usage = self.usage
        return {"calls": usage.calls, "retries": usage.retries, "parts": usage.parts,
                "retrieved": [{"id": h.entry_id, "score": h.score, "cosine": h.cosine, "words": h.words,
                               "text": h.text} for h in self.hits],
                "lore": [{"id": e.entry_id, "reason": e.reason, "text": e.text} for e in self.lore],
                "lore_left_out": self.lore_left_out}


@dataclass
class Gathered:
    """What a step's prompt is built from, and what of long-term memory went into it."""

    prompt: StepContext
    parent: Step
    hits: list[Hit]
    lore: list[Lore]
    left_out: int


class Steps:
    def __init__(self, context: StoryContext):
        self.context = context

    def write(self, story_id: int, parent_id: int, plan: str, add: AddStep, on_text: OnText | None,
              prelude: Usage | None = None, reader: bool = False) -> Step:
        """Gather the context after `parent_id`, generate outside any transaction, then commit the
        step under it in one transaction with `add` (which also moves the right head)."""
        gathered = self.gather(story_id, parent_id, plan)
        result = self.context.writer_for(story_id).step(gathered.prompt, on_text, reader=reader)
        # what reached the prompt: the allowances may have left the last passages out
        parts = result.usage.parts
        hits = gathered.hits[:len(parts["memories"]["each"])] if parts else gathered.hits
        lore = gathered.lore[:len(parts["lore"]["each"])] if parts else gathered.lore
        if prelude:  # calls made to decide the plan (auto mode) belong to this step's trace
            result.usage.calls[:0] = prelude.calls
            result.usage.retries += prelude.retries
            result.usage.prompt_tokens += prelude.prompt_tokens
            result.usage.completion_tokens += prelude.completion_tokens
        record = self.record(plan, result, gathered.parent, hits, lore,
                             gathered.left_out + len(gathered.lore) - len(lore))
        with self.context.db.Session.begin() as session:
            return self.commit(session, story_id, add, record)

    def gather(self, story_id: int, parent_id: int, plan: str) -> Gathered:
        with self.context.db.Session() as session:
            story = self.context.story(session, story_id)
            parent = repo.get_step(session, parent_id)
            recent, shown = self._recent_text(session, parent)
            branch = repo.path_ids(session, parent.id)
            limits = self.context.limits
            found = self.context.memory.gather(session, story_id, Query(plan, recent), limits.top_k,
                                               lore_limit=limits.lore, only_steps=branch, exclude_steps=shown)
            prompt = StepContext(story.premise, story.outline, parent.short_memory, recent,
                                 plan, [h.text for h in found.hits], [e.text for e in found.lore])
        return Gathered(prompt, parent, found.hits, found.lore, found.left_out)

    def record(self, plan: str, result: Opening | Continuation, parent: Step | None = None, hits=(), lore=(),
               lore_left_out: int = 0) -> StepRecord:
        """The record of a step the model wrote, with its long-term memory entries embedded."""
        return StepRecord(plan, result.paragraph, result.short_memory, result.plans, result.usage,
                          self.derive(result.paragraph, result.short_memory), parent, list(hits), list(lore),
                          lore_left_out)

    def commit(self, session, story_id: int, add: AddStep, record: StepRecord) -> Step:
        """Paragraph, short-term memory, plans and long-term memory entries: one transaction."""
        trace = record.trace()
        writer = self.context.writer
        if record.usage.decoding:
            trace["decoding"] = {**record.usage.decoding, "adapter": writer.backend.describe()}
        usage = record.usage
        step = add(session, record.parent, dict(
            plan=record.plan, paragraph=record.paragraph, short_memory=record.short_memory, plans=record.plans,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            seconds=round(usage.seconds, 3), model=writer.backend.name, trace=trace))
        for kind, embedded in record.derived:
            self.context.memory.add(session, story_id, embedded, kind, step_id=step.id)
        self.context.memory.mark_retrieved(session, [h.entry_id for h in record.hits] +
                                           [e.entry_id for e in record.lore])
        return step

    def derive(self, paragraph: str, short_memory: str | None) -> Derived:
        """The long-term memory entries a step's text gives (computed before any transaction):
        its paragraph in chunks, and its summary (the short-term memory after it)."""
        pieces = chunks(paragraph)
        embedded = self.context.memory.embed(pieces + ([short_memory] if short_memory else []))
        split = len(pieces)
        derived = [("paragraph", Embedded(embedded.texts[:split], embedded.vectors[:split]))]
        if short_memory:
            derived.append(("summary", Embedded(embedded.texts[split:], embedded.vectors[split:])))
        return derived

    def as_head(self, story_id: int, expected_head: int | None) -> AddStep:
        """Add a step to the writer's manuscript: it becomes the story's head, if the head is
        still `expected_head`."""
        def add(session, parent: Step | None, fields: dict) -> Step:
            story = self.context.story(session, story_id)
            return repo.add_step(session, story, parent=parent, expected_head=expected_head, **fields)
        return add

    def _recent_text(self, session, last: Step) -> tuple[str, set[int]]:
        """The end of the manuscript for the prompt: the last paragraph, and before it the one
        before when the last is short, so this part of the prompt has about the same size at
        every step. Also the steps it shows (retrieval skips them: they are in the prompt)."""
        if len(last.paragraph.split()) >= RECENT_WORDS or last.parent_id is None:
            return last.paragraph, {last.id}
        before = repo.get_step(session, last.parent_id)
        return f"{before.paragraph} {last.paragraph}", {last.id, before.id}
