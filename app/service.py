"""The story service: the use cases the CLI and the UI share. Each action opens its own
short transactions; generation runs between them, outside any transaction, so a failed or
killed step writes nothing, and a step commits paragraph, memory entries and plans at once."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from generation.backend import Decoding
from generation.recurrence import Continuation, OnText, Opening, StepContext, Usage, Writer
from memory.longterm import Embedded, LongTermMemory, Query, chunks
from storage import repo
from storage.db import Database
from common.errors import Busy, Cancelled, Conflict, InvalidInput, NotFound, StoryloomError
from storage.models import Step


RECENT_WORDS = 150  # a last paragraph shorter than this brings the end of the one before into the prompt

# add(session, parent, fields) inserts a step and moves the head it belongs to
AddStep = Callable[..., Step]


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
    version: tuple[int, int] = (1, 1)  # the head paragraph is version i of n (regenerations)
    step_ids: tuple[int, ...] = ()  # the step of each paragraph
    chapters: tuple[str | None, ...] = ()  # a chapter title where a chapter starts, else None
    notice: str = ""  # something the person should know about the action just done


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


class StoryService:
    def __init__(self, db: Database, memory: LongTermMemory, writer: Writer, limits: Limits = Limits(),
                 decoding: Decoding = Decoding(), scorer=None):
        self.db = db
        self.memory = memory
        self.writer = writer
        self.limits = limits
        self.default_decoding = decoding  # for stories whose decoding settings were never changed
        self.scorer = scorer  # a local model for clarify's gradients when the writer's backend has none
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.owner = repo.ANYONE  # accounts off; as_user scopes a copy to one person

    def as_user(self, name: str) -> "StoryService":
        """This service for one logged-in person: they see, change and export their own stories
        only; another's story id is "not found". Shares the database, the model and the locks."""
        scoped = copy.copy(self)
        scoped.owner = name
        return scoped

    def story(self, session, story_id: int):
        """The story, when this service's person may see it (NotFound otherwise)."""
        return repo.get_story(session, story_id, self.owner)

    # -- reading ---------------------------------------------------------------------

    def list_stories(self) -> list[tuple[int, str]]:
        with self.db.Session() as session:
            return [(s.id, s.title) for s in repo.list_stories(session, self.owner)]

    def view(self, story_id: int) -> StoryView:
        with self.db.Session() as session:
            story = self.story(session, story_id)
            path = repo.path_to(session, story.head_step_id)
            head = path[-1] if path else None
            versions = [s.id for s in repo.children(session, story_id, head.parent_id)] if head else []
            return StoryView(
                story.id, story.title, story.premise, story.outline, [s.paragraph for s in path],
                head.short_memory if head else "", list(head.plans) if head else [],
                story.head_step_id, _cost(head) if head else {},
                (versions.index(head.id) + 1, len(versions)) if head else (1, 1),
                tuple(s.id for s in path), tuple(s.chapter for s in path))

    def manuscript(self, story_id: int) -> str:
        """The current branch as Markdown: the title, chapter headings, paragraphs."""
        view = self.view(story_id)
        parts = [f"# {view.title}\n\n"]
        for paragraph, chapter in zip(view.paragraphs, view.chapters):
            if chapter:
                parts.append(f"## {chapter}\n\n")
            parts.append(paragraph + "\n\n")
        return "".join(parts)

    def inspect(self, story_id: int, step_id: int | None = None) -> dict:
        """What a step sent and got back: each call's exact prompt and raw output, the tokens of
        each prompt part against its allowance, and the memories retrieved with their scores."""
        with self.db.Session() as session:
            step = self.head(session, story_id) if step_id is None else self._step_of(session, story_id, step_id)
            return {"step_id": step.id, "plan": step.plan, "model": step.model, **_cost(step), **(step.trace or {})}

    def search_memory(self, story_id: int, query: str, k: int = 8):
        with self.db.Session() as session:
            self.story(session, story_id)
            return self.memory.search(session, story_id, query, k)

    def decoding(self, story_id: int) -> Decoding:
        """The story's anti-repetition settings (the defaults until the person changes them)."""
        with self.db.Session() as session:
            saved = (self.story(session, story_id).settings or {}).get("decoding")
        return Decoding.from_dict({**asdict(self.default_decoding), **saved}) if saved else self.default_decoding

    def set_decoding(self, story_id: int, decoding: Decoding) -> Decoding:
        """Save the story's anti-repetition settings; later steps of this story decode with them."""
        decoding.check()
        with self.db.Session.begin() as session:
            story = self.story(session, story_id)
            story.settings = {**(story.settings or {}), "decoding": asdict(decoding)}  # a new dict: JSON change seen
        return decoding

    def clarify_automatically(self, story_id: int) -> bool:
        """Whether auto mode clarifies each revised plan with SCA before writing from it."""
        with self.db.Session() as session:
            return bool((self.story(session, story_id).settings or {}).get("sca_auto", False))

    def set_clarify_automatically(self, story_id: int, on: bool) -> bool:
        with self.db.Session.begin() as session:
            story = self.story(session, story_id)
            story.settings = {**(story.settings or {}), "sca_auto": bool(on)}
        return bool(on)

    def clarify(self, story_id: int | None, text: str, progress=None):
        """SCA's ranked rewordings of `text` (nothing is changed): the story's short-term memory and
        last paragraph, when there is a story, give the names for its pronouns."""
        from generation.sca import clarify

        context = last = ""
        if story_id is not None:
            with self.db.Session() as session:
                head = self.head(session, story_id)
                context, last = head.short_memory, head.paragraph
        return clarify(self.writer.backend, self.memory.embedder, text, context, progress=progress, last=last,
                       scorer=self.scorer)

    def repetition(self, story_id: int) -> list[dict]:
        """Per paragraph of the current branch: rep-4 over its words, and how many of its sentences
        repeat an earlier sentence of the story (for the repetition chart)."""
        from generation.ditto import rep_n, repeated_sentences

        rows, before = [], ""
        for number, paragraph in enumerate(self.view(story_id).paragraphs, 1):
            words = [w.strip(".,;:!?\"'“”‘’()").lower() for w in paragraph.split()]
            rows.append({"paragraph": number, "rep_4": round(rep_n(words, 4), 4),
                         "repeated_sentences": repeated_sentences(paragraph, before)})
            before += "\n" + paragraph
        return rows

    def _writer(self, story_id: int | None) -> Writer:
        """The writer with this story's decoding settings (a shallow copy: the backend is shared)."""
        return replace(self.writer, decoding=self.default_decoding if story_id is None else self.decoding(story_id))

    # -- writing ---------------------------------------------------------------------

    def new_story(self, premise: str, title: str | None = None, on_text: OnText | None = None) -> StoryView:
        premise = checked_text(premise, "premise", self.limits.premise_chars)
        title = checked_text(title, "title", self.limits.title_chars) if title and title.strip() else None
        opening = self._writer(None).init(premise, title, on_text)
        filed = self._derive(opening.paragraph, opening.short_memory)
        with self.db.Session.begin() as session:
            story = repo.create_story(session, title=opening.title, premise=premise, outline=opening.outline,
                                      owner=None if self.owner is repo.ANYONE else self.owner)
            self._commit_step(session, story.id, self._as_head(story.id, None), None, "", opening, [], filed)
            story_id = story.id
        return self.view(story_id)

    def step(self, story_id: int, plan: int | None = None, instruction: str | None = None,
             on_text: OnText | None = None, seen_head: int | None = None) -> StoryView:
        """Write the next paragraph after the head, following plan `plan` of the head or an instruction."""
        if (plan is None) == (instruction is None):
            raise InvalidInput("give either a plan number or an instruction")
        if instruction is not None:
            instruction = checked_text(instruction, "instruction", self.limits.plan_chars)
        with self.lock(story_id):
            with self.db.Session() as session:
                head = self.head(session, story_id, seen_head)
                chosen = instruction if instruction is not None else pick(head.plans, plan)
            self.write(story_id, head.id, chosen, self._as_head(story_id, head.id), on_text)
        return self.view(story_id)

    def regenerate(self, story_id: int, on_text: OnText | None = None, seen_head: int | None = None) -> StoryView:
        """Write the head paragraph again, as a new version beside it; the old one is kept."""
        with self.lock(story_id):
            with self.db.Session() as session:
                story = self.story(session, story_id)
                head = self.head(session, story_id, seen_head)
                premise, title, outline = story.premise, story.title, story.outline
            if head.parent_id is None:  # the opening: write it again from the premise
                opening = self._writer(story_id).init(premise, title, on_text, outline=outline)
                filed = self._derive(opening.paragraph, opening.short_memory)
                with self.db.Session.begin() as session:
                    self._commit_step(session, story_id, self._as_head(story_id, head.id), None, "", opening, [],
                                      filed)
            else:
                self.write(story_id, head.parent_id, head.plan, self._as_head(story_id, head.id), on_text)
        return self.view(story_id)

    def auto(self, story_id: int, steps: int, on_text: OnText | None = None,
             on_step: Callable[[int, int, StoryView], None] | None = None,
             cancel: threading.Event | None = None) -> StoryView:
        """Write `steps` steps unattended: before each, the simulated human picks the most promising
        plan and revises it into an outline. `cancel` stops cleanly: the step in progress is dropped."""
        if not 1 <= steps <= self.limits.auto_steps:
            raise InvalidInput(f"auto mode writes 1 to {self.limits.auto_steps} steps at a time, not {steps}")
        cancel = cancel or threading.Event()

        def watched(part: str, text: str) -> None:
            if cancel.is_set():
                raise Cancelled("stopped; the step in progress was not saved")
            if on_text:
                on_text(part, text)

        try:
            for number in range(1, steps + 1):
                if cancel.is_set():
                    break
                with self.lock(story_id):
                    with self.db.Session() as session:
                        head = self.head(session, story_id)
                    choice = self._writer(story_id).choose(head.short_memory, head.paragraph, list(head.plans), watched)
                    instruction = choice.instruction
                    if self.clarify_automatically(story_id):
                        if on_text:
                            on_text("clarify", instruction)
                        clarified = self.clarify(story_id, instruction)
                        choice.usage.calls.append({  # shown by the inspector with the step's other calls
                            "part": "clarify", "attempt": 1, "prompt": instruction, "output": clarified.best.text,
                            "candidates": [f"{c.origin}: {c.comprehension}: {c.text}" for c in clarified.candidates]})
                        instruction = clarified.best.text
                    self.write(story_id, head.id, instruction, self._as_head(story_id, head.id),
                                watched, prelude=choice.usage)
                if on_step:
                    on_step(number, steps, self.view(story_id))
        except Cancelled:
            pass
        return self.view(story_id)

    def write(self, story_id: int, parent_id: int, plan: str, add: AddStep, on_text: OnText | None,
               prelude: Usage | None = None, reader: bool = False):
        """Gather the context after `parent_id`, generate outside any transaction, then commit the
        step under it in one transaction with `add` (which also moves the right head)."""
        with self.db.Session() as session:
            story = self.story(session, story_id)
            parent = repo.get_step(session, parent_id)
            recent, shown = self._recent_text(session, parent)
            branch = repo.path_ids(session, parent.id)
            found = self.memory.gather(session, story_id, Query(plan, recent), self.limits.top_k,
                                       lore_limit=self.limits.lore, only_steps=branch, exclude_steps=shown)
            hits, lore = found.hits, found.lore
            context = StepContext(story.premise, story.outline, parent.short_memory, recent,
                                  plan, [h.text for h in hits], [e.text for e in lore])
        result = self._writer(story_id).step(context, on_text, reader=reader)
        # what reached the prompt: the allowances may have left the last passages out
        parts = result.usage.parts
        hits = hits[:len(parts["memories"]["each"])] if parts else hits
        lore = lore[:len(parts["lore"]["each"])] if parts else lore
        if prelude:  # calls made to decide the plan (auto mode) belong to this step's trace
            result.usage.calls[:0] = prelude.calls
            result.usage.retries += prelude.retries
            result.usage.prompt_tokens += prelude.prompt_tokens
            result.usage.completion_tokens += prelude.completion_tokens
        filed = self._derive(result.paragraph, result.short_memory)
        with self.db.Session.begin() as session:
            self._commit_step(session, story_id, add, parent, plan, result, hits, filed, lore,
                              lore_left_out=found.left_out + len(found.lore) - len(lore))

    def edit_paragraph(self, story_id: int, step_id: int, text: str, chapter: str | None = None,
                       seen_head: int | None = None, on_text: OnText | None = None) -> StoryView:
        """Replace a written paragraph by hand and, unless `chapter` is None, set the title of the
        chapter starting there ("" for none), in one transaction. Memories drawn from the old text
        (its chunks and its summary) are marked stale and derived again from the new text: the
        step's short-term memory is rewritten by the model, so the model sees the edit from then on.
        Pins carry over to the new entries. If the model cannot rewrite the summary, the edit is
        still saved, the old summary is kept, and the view's notice says so."""
        text = checked_text(text, "paragraph", self.limits.paragraph_chars)
        title = _chapter_title(chapter, self.limits.title_chars)
        with self.db.Session() as session:
            if seen_head is not None:
                self.head(session, story_id, seen_head)
            step = self._step_of(session, story_id, step_id)
            changed = text != step.paragraph
            before = (repo.get_step(session, step.parent_id).short_memory if step.parent_id is not None
                      else self.story(session, story_id).premise)
        memory, notes = None, []
        if changed:
            try:
                memory, _ = self._writer(story_id).summarize(before, text, on_text)
            except StoryloomError as e:  # the model failed or could not load: the edit itself is kept
                notes.append(f"The paragraph was saved, but the model could not rewrite its summary ({e}). The "
                             "old summary is kept and may still describe the old text: correct it in the Memory tab.")
        filed = self._derive(text, memory) if changed else []
        with self.lock(story_id), self.db.Session.begin() as session:
            if seen_head is not None:
                self.head(session, story_id, seen_head)
            step = self._step_of(session, story_id, step_id)
            if text != step.paragraph:
                live = [e for e in repo.memory_entries(session, story_id, steps=[step_id]) if not e.stale]
                replaced = [e for e in live if memory is not None or e.kind == "paragraph"]
                pinned = {e.kind for e in replaced if e.pinned}
                edited = [e.id for e in replaced if e.revision > 0]
                step.paragraph = text
                self.memory.mark_stale(session, story_id, step_id, tuple({e.kind for e in replaced}))
                if memory is not None:
                    step.short_memory = memory
                for kind, embedded in filed:
                    self.memory.add(session, story_id, embedded, kind, step_id=step_id, pinned=kind in pinned)
                if edited:
                    notes.append(f"Memory entries you had edited by hand ({', '.join(map(str, edited))}) were "
                                 "replaced by entries drawn from the new text; the old ones are kept, marked stale.")
            if chapter is not None:
                step.chapter = title
        return replace(self.view(story_id), notice=" ".join(notes))

    def edit_short_memory(self, story_id: int, text: str, seen_head: int | None = None) -> StoryView:
        """Replace the short-term memory the next step starts from (the head's) by hand; its
        summary entry in long-term memory follows. Refused while a step is being written for this
        story, since that step would carry the old memory forward."""
        text = checked_text(text, "short-term memory", self.limits.memory_chars)
        embedded = self.memory.embed([text])
        lock = self.lock(story_id)
        if not lock.acquire(blocking=False):
            raise Busy("a step is being written for this story; save the short-term memory when it is done "
                       "(your text is still in the box)")
        try:
            with self.db.Session.begin() as session:
                head = self.head(session, story_id, seen_head)
                head.short_memory = text
                live = [e for e in repo.memory_entries(session, story_id, kinds=["summary"], steps=[head.id])
                        if not e.stale]
                if live:
                    self.memory.update(session, live[-1].id, embedded)
                else:
                    self.memory.add(session, story_id, embedded, "summary", step_id=head.id)
        finally:
            lock.release()
        return self.view(story_id)

    def set_chapter(self, story_id: int, step_id: int, title: str | None) -> StoryView:
        """Start a chapter titled `title` at this paragraph (None or empty: no chapter starts here)."""
        title = _chapter_title(title or "", self.limits.title_chars)
        with self.lock(story_id), self.db.Session.begin() as session:
            self._step_of(session, story_id, step_id).chapter = title
        return self.view(story_id)

    def switch(self, story_id: int, step_id: int) -> StoryView:
        """Continue from another branch: the head moves to the newest paragraph below `step_id`."""
        with self.lock(story_id), self.db.Session.begin() as session:
            story = self.story(session, story_id)
            step = self._step_of(session, story_id, step_id)
            repo.move_head(session, story, story.head_step_id, repo.newest_tip(session, step).id)
        return self.view(story_id)

    def other_version(self, story_id: int, delta: int, seen_head: int | None = None) -> StoryView:
        """Switch to the previous (-1) or next (+1) version of the head paragraph."""
        with self.db.Session() as session:
            head = self.head(session, story_id, seen_head)
            versions = [s.id for s in repo.children(session, story_id, head.parent_id)]
        target = versions.index(head.id) + delta
        if not 0 <= target < len(versions):
            raise InvalidInput(f"there is no {'earlier' if delta < 0 else 'later'} version of this paragraph")
        return self.switch(story_id, versions[target])

    def undo(self, story_id: int, seen_head: int | None = None) -> StoryView:
        """Move the head back to the previous paragraph; the undone one stays as a branch."""
        with self.lock(story_id), self.db.Session.begin() as session:
            head = self.head(session, story_id, seen_head)
            if head.parent_id is None:
                raise InvalidInput("this is the first paragraph; there is nothing to undo")
            repo.move_head(session, self.story(session, story_id), head.id, head.parent_id)
        return self.view(story_id)

    # -- helpers ---------------------------------------------------------------------

    def _step_of(self, session, story_id: int, step_id: int) -> Step:
        self.story(session, story_id)
        step = session.get(Step, step_id)
        if step is None or step.story_id != story_id:
            raise NotFound(f"no paragraph with id {step_id} in story {story_id}")
        return step

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

    def _recent_text(self, session, last: Step) -> tuple[str, set[int]]:
        """The end of the manuscript for the prompt: the last paragraph, and before it the one
        before when the last is short, so this part of the prompt has about the same size at
        every step. Also the steps it shows (retrieval skips them: they are in the prompt)."""
        if len(last.paragraph.split()) >= RECENT_WORDS or last.parent_id is None:
            return last.paragraph, {last.id}
        before = repo.get_step(session, last.parent_id)
        return f"{before.paragraph} {last.paragraph}", {last.id, before.id}

    def _as_head(self, story_id: int, expected_head: int | None) -> AddStep:
        """Add a step to the writer's manuscript: it becomes the story's head, if the head is
        still `expected_head`."""
        def add(session, parent: Step | None, fields: dict) -> Step:
            story = self.story(session, story_id)
            return repo.add_step(session, story, parent=parent, expected_head=expected_head, **fields)
        return add

    def _derive(self, paragraph: str, short_memory: str | None) -> list[tuple[str, Embedded]]:
        """The long-term memory entries a step's text gives (computed before any transaction):
        its paragraph in chunks, and its summary (the short-term memory after it)."""
        pieces = chunks(paragraph)
        embedded = self.memory.embed(pieces + ([short_memory] if short_memory else []))
        split = len(pieces)
        derived = [("paragraph", Embedded(embedded.texts[:split], embedded.vectors[:split]))]
        if short_memory:
            derived.append(("summary", Embedded(embedded.texts[split:], embedded.vectors[split:])))
        return derived

    def _commit_step(self, session, story_id: int, add: AddStep, parent: Step | None, plan: str,
                     result: Opening | Continuation, hits, filed: list[tuple[str, Embedded]], lore=(),
                     lore_left_out: int = 0) -> Step:
        """Paragraph, short-term memory, plans and long-term memory entries: one transaction."""
        usage = result.usage
        trace = {"calls": usage.calls, "retries": usage.retries, "parts": usage.parts,
                 "retrieved": [{"id": h.entry_id, "score": h.score, "cosine": h.cosine, "words": h.words,
                                "text": h.text} for h in hits],
                 "lore": [{"id": e.entry_id, "reason": e.reason, "text": e.text} for e in lore],
                 "lore_left_out": lore_left_out}
        if usage.decoding:
            describe = getattr(self.writer.backend, "describe_adapter", None)
            trace["decoding"] = {**usage.decoding, "adapter": describe() if describe else None}
        step = add(session, parent, dict(
            plan=plan, paragraph=result.paragraph, short_memory=result.short_memory, plans=result.plans,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            seconds=round(usage.seconds, 3), model=self.writer.backend.name, trace=trace))
        for kind, embedded in filed:
            self.memory.add(session, story_id, embedded, kind, step_id=step.id)
        self.memory.mark_retrieved(session, [h.entry_id for h in hits] + [e.entry_id for e in lore])
        return step

    def lock(self, story_id: int) -> threading.Lock:
        """One action at a time per story in this process (other processes: see repo.add_step)."""
        with self._locks_guard:
            return self._locks.setdefault(story_id, threading.Lock())



def checked_text(value: str | None, what: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"the {what} is empty")
    if len(value) > limit:
        raise InvalidInput(f"the {what} has {len(value):,} characters; the limit is {limit:,}")
    return value


def _chapter_title(title: str | None, limit: int) -> str | None:
    return checked_text(title, "chapter title", limit) if title and title.strip() else None


def pick(options: list[str], number: int, what: str = "plan") -> str:
    if not 1 <= number <= len(options):
        raise InvalidInput(f"there is no {what} {number}; choose 1 to {len(options)}" if options
                           else f"there are no {what}s to choose from")
    return options[number - 1]


def _cost(step: Step) -> dict:
    return {"prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
            "seconds": step.seconds, "retries": (step.trace or {}).get("retries", 0), "model": step.model}
