"""A story as the person sees it (the current branch, its plans and versions), what each step
sent to the model, and the story's settings: its anti-repetition decoding and whether auto mode
clarifies its plans. Reading only, except the settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from app.service.context import StoryContext, check_seen, fingerprint
from common.errors import InvalidInput
from generation.backend import Decoding
from storage import repo
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
    version: tuple[int, int] = (1, 1)  # the head paragraph is version i of n (regenerations)
    step_ids: tuple[int, ...] = ()  # the step of each paragraph
    chapters: tuple[str | None, ...] = ()  # a chapter title where a chapter starts, else None
    notice: str = ""  # something the person should know about the action just done

    def index_of(self, number: int | None) -> int:
        """Where paragraph `number` (counted from 1, as the page shows them) is in the lists."""
        if number is None or not 1 <= int(number) <= len(self.paragraphs):
            shown = number if number is None else int(number)
            raise InvalidInput(f"There is no paragraph {shown}; the story has {len(self.paragraphs)}.")
        return int(number) - 1

    def paragraph_version(self, index: int) -> str:
        """The version of paragraph `index` (from 0) and its chapter title, as shown."""
        return paragraph_version(self.step_ids[index], self.paragraphs[index], self.chapters[index])

    @property
    def memory_version(self) -> str:
        """The version of the short-term memory shown (the head's)."""
        return short_memory_version(self.head_step_id, self.short_memory)


# The versions of what a person edits (see context.check_seen): each from the fields they see.

def paragraph_version(step_id: int, text: str, chapter: str | None) -> str:
    return fingerprint(step_id, text, chapter)


def short_memory_version(head_id: int | None, text: str) -> str:
    return fingerprint(head_id, text)


def decoding_version(story_id: int, decoding: Decoding) -> str:
    return fingerprint(story_id, asdict(decoding))


def view_of(context: StoryContext, story_id: int) -> StoryView:
    with context.db.Session() as session:
        story = context.story(session, story_id)
        path = repo.path_to(session, story.head_step_id)
        head = path[-1] if path else None
        versions = [s.id for s in repo.children(session, story_id, head.parent_id)] if head else []
        return StoryView(
            story.id, story.title, story.premise, story.outline, [s.paragraph for s in path],
            head.short_memory if head else "", list(head.plans) if head else [],
            story.head_step_id, cost(head) if head else {},
            (versions.index(head.id) + 1, len(versions)) if head else (1, 1),
            tuple(s.id for s in path), tuple(s.chapter for s in path))


class Stories:
    def __init__(self, context: StoryContext):
        self.context = context

    def list_stories(self) -> list[tuple[int, str]]:
        with self.context.db.Session() as session:
            return [(s.id, s.title) for s in repo.list_stories(session, self.context.owner)]

    def view(self, story_id: int) -> StoryView:
        return view_of(self.context, story_id)

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
        with self.context.db.Session() as session:
            step = (self.context.head(session, story_id) if step_id is None
                    else self.context.step_of(session, story_id, step_id))
            return {"step_id": step.id, "plan": step.plan, "model": step.model, **cost(step), **(step.trace or {})}

    def inspect_paragraph(self, story_id: int, number: int | None) -> dict:
        """inspect() for paragraph `number` of the current branch (0 or None: the last)."""
        view = self.view(story_id)
        return self.inspect(story_id, view.step_ids[view.index_of(number)] if number else None)

    def search_memory(self, story_id: int, query: str, k: int = 8):
        with self.context.db.Session() as session:
            self.context.story(session, story_id)
            return self.context.memory.search(session, story_id, query, k)

    def decoding(self, story_id: int) -> Decoding:
        """The story's anti-repetition settings (the defaults until the person changes them)."""
        return self.context.decoding(story_id)

    def set_decoding(self, story_id: int, decoding: Decoding, seen: str | None = None) -> Decoding:
        """Save the story's anti-repetition settings; later steps of this story decode with them.
        With `seen` (decoding_version of the settings the page showed), refused when they have
        changed since."""
        decoding.check()
        with self.context.db.Session.begin() as session:
            story = self.context.claim(session, story_id)
            now = self.context.decoding_of(story)
            check_seen(seen, decoding_version(story_id, now), "the story's repetition settings",
                       f"They are now: {settings_line(now)}.",
                       "Yours are still on the page: save again to put them in place of these.", plural=True)
            story.settings = {**(story.settings or {}), "decoding": asdict(decoding)}
        return decoding

    def clarify_automatically(self, story_id: int) -> bool:
        """Whether auto mode clarifies each revised plan with SCA before writing from it."""
        with self.context.db.Session() as session:
            return bool((self.context.story(session, story_id).settings or {}).get("sca_auto", False))

    def set_clarify_automatically(self, story_id: int, on: bool) -> bool:
        """Turn it on or off. No version is checked: a page that showed the other value than the
        one there now asks for the one there now. (Claimed, as in set_decoding, so that neither
        writes back the settings as they were before the other's change.)"""
        with self.context.db.Session.begin() as session:
            story = self.context.claim(session, story_id)
            story.settings = {**(story.settings or {}), "sca_auto": bool(on)}  # a new dict: the JSON change is seen
        return bool(on)

    def clarify(self, story_id: int | None, text: str, progress=None):
        """SCA's ranked rewordings of `text` (nothing is changed): the story's short-term memory and
        last paragraph, when there is a story, give the names for its pronouns."""
        from generation.sca import clarify

        context = last = ""
        if story_id is not None:
            with self.context.db.Session() as session:
                head = self.context.head(session, story_id)
                context, last = head.short_memory, head.paragraph
        return clarify(self.context.writer.backend, self.context.memory.embedder, text, context,
                       progress=progress, last=last, scorer=self.context.scorer)

    def repetition(self, story_id: int) -> list[dict]:
        """Per paragraph of the current branch: rep-4 over its words, and how many of its sentences
        repeat an earlier sentence of the story (for the repetition chart)."""
        from generation.metrics import rep_n, repeats_by_paragraph

        paragraphs = self.view(story_id).paragraphs
        rows = []
        for number, (paragraph, repeats) in enumerate(zip(paragraphs, repeats_by_paragraph(paragraphs)), 1):
            words = [w.strip(".,;:!?\"'“”‘’()").lower() for w in paragraph.split()]
            rows.append({"paragraph": number, "rep_4": round(rep_n(words, 4), 4), "repeated_sentences": repeats})
        return rows


def settings_line(decoding: Decoding) -> str:
    """The settings in words, for a message."""
    def said(value) -> str:
        return "on" if value is True else "off" if value is False else "the default" if value is None else str(value)
    return ", ".join(f"{name.replace('_', ' ')} {said(value)}" for name, value in asdict(decoding).items())


def cost(step: Step) -> dict:
    return {"prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
            "seconds": step.seconds, "retries": (step.trace or {}).get("retries", 0), "model": step.model}
