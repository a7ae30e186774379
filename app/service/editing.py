"""Editing by hand: a written paragraph and its chapter title, the short-term memory the next step
starts from, and which branch and version of the story is the current one (switch, undo)."""

from __future__ import annotations

from dataclasses import replace

from app.service.context import StoryContext, check_seen, checked_text, quoted
from app.service.steps import Derived, Steps
from app.service.stories import StoryView, paragraph_version, short_memory_version, view_of
from common.errors import Busy, InvalidInput, StoryloomError
from generation.recurrence import OnText
from storage import repo
from storage.models import Step


class Editing:
    def __init__(self, context: StoryContext, steps: Steps):
        self.context = context
        self.steps = steps

    def edit_paragraph(self, story_id: int, step_id: int, text: str, chapter: str | None = None,
                       seen_head: int | None = None, on_text: OnText | None = None,
                       seen: str | None = None) -> StoryView:
        """Replace a written paragraph by hand and, unless `chapter` is None, set the title of the
        chapter starting there ("" for none), in one transaction. Memories drawn from the old text
        (its chunks and its summary) are marked stale and derived again from the new text: the
        step's short-term memory is rewritten by the model, so the model sees the edit from then on.
        Pins carry over to the new entries. If the model cannot rewrite the summary, the edit is
        still saved, the old summary is kept, and the view's notice says so. With `seen` (the
        paragraph_version the page showed), refused when the paragraph or its title changed since:
        before the model is asked, and again when the edit is written."""
        text = checked_text(text, "paragraph", self.context.limits.paragraph_chars)
        title = chapter_title(chapter, self.context.limits.title_chars)
        with self.context.db.Session() as session:
            if seen_head is not None:
                self.context.head(session, story_id, seen_head)
            step = self.context.step_of(session, story_id, step_id)
            check_paragraph(step, seen)
            changed = text != step.paragraph
            before = (repo.get_step(session, step.parent_id).short_memory if step.parent_id is not None
                      else self.context.story(session, story_id).premise)
        memory, notes = None, []
        if changed:
            try:
                memory, _ = self.context.writer_for(story_id).summarize(before, text, on_text)
            except StoryloomError as e:  # the model failed or could not load: the edit itself is kept
                notes.append(f"The paragraph was saved, but the model could not rewrite its summary ({e}). The "
                             "old summary is kept and may still describe the old text: correct it in the Memory tab.")
        derived = self.steps.derive(text, memory) if changed else []
        with self.context.lock(story_id), self.context.db.Session.begin() as session:
            self.context.claim(session, story_id)
            if seen_head is not None:
                self.context.head(session, story_id, seen_head)
            step = self.context.step_of(session, story_id, step_id)
            check_paragraph(step, seen)
            if text != step.paragraph:
                notes += self._replace_text(session, story_id, step, text, memory, derived)
            if chapter is not None:
                step.chapter = title
        return replace(view_of(self.context, story_id), notice=" ".join(notes))

    def _replace_text(self, session, story_id: int, step: Step, text: str, memory: str | None,
                      derived: Derived) -> list[str]:
        """The step's new text, and its memories derived again (pins kept); a note when entries the
        person had edited were replaced."""
        live = [e for e in repo.memory_entries(session, story_id, steps=[step.id]) if not e.stale]
        replaced = [e for e in live if memory is not None or e.kind == "paragraph"]
        pinned = {e.kind for e in replaced if e.pinned}
        edited = [e.id for e in replaced if e.revision > 0]
        step.paragraph = text
        self.context.memory.mark_stale(session, story_id, step.id, tuple({e.kind for e in replaced}))
        if memory is not None:
            step.short_memory = memory
        for kind, embedded in derived:
            self.context.memory.add(session, story_id, embedded, kind, step_id=step.id, pinned=kind in pinned)
        if not edited:
            return []
        return [f"Memory entries you had edited by hand ({', '.join(map(str, edited))}) were "
                "replaced by entries drawn from the new text; the old ones are kept, marked stale."]

    def edit_short_memory(self, story_id: int, text: str, seen_head: int | None = None,
                          seen: str | None = None) -> StoryView:
        """Replace the short-term memory the next step starts from (the head's) by hand; its
        summary entry in long-term memory follows. Refused while a step is being written for this
        story, since that step would carry the old memory forward, and with `seen` (the
        StoryView.memory_version the page showed) when it changed since."""
        text = checked_text(text, "short-term memory", self.context.limits.memory_chars)
        memory = self.context.memory
        embedded = memory.embed([text])
        lock = self.context.lock(story_id)
        if not lock.acquire(blocking=False):
            raise Busy("a step is being written for this story; save the short-term memory when it is done "
                       "(your text is still in the box)")
        try:
            with self.context.db.Session.begin() as session:
                self.context.claim(session, story_id)
                head = self.context.head(session, story_id, seen_head)
                check_seen(seen, short_memory_version(head.id, head.short_memory), "the short-term memory",
                           f"It now reads: {quoted(head.short_memory)}.")
                head.short_memory = text
                live = [e for e in repo.memory_entries(session, story_id, kinds=["summary"], steps=[head.id])
                        if not e.stale]
                if live:
                    memory.update(session, live[-1].id, embedded)
                else:
                    memory.add(session, story_id, embedded, "summary", step_id=head.id)
        finally:
            lock.release()
        return view_of(self.context, story_id)

    def set_chapter(self, story_id: int, step_id: int, title: str | None, seen: str | None = None) -> StoryView:
        """Start a chapter titled `title` at this paragraph (None or empty: no chapter starts here).
        With `seen`, as edit_paragraph."""
        title = chapter_title(title or "", self.context.limits.title_chars)
        with self.context.lock(story_id), self.context.db.Session.begin() as session:
            self.context.claim(session, story_id)
            step = self.context.step_of(session, story_id, step_id)
            check_paragraph(step, seen)
            step.chapter = title
        return view_of(self.context, story_id)

    def switch(self, story_id: int, step_id: int) -> StoryView:
        """Continue from another branch: the head moves to the newest paragraph below `step_id`."""
        with self.context.lock(story_id), self.context.db.Session.begin() as session:
            story = self.context.story(session, story_id)
            step = self.context.step_of(session, story_id, step_id)
            repo.move_head(session, story, story.head_step_id, repo.newest_tip(session, step).id)
        return view_of(self.context, story_id)

    def other_version(self, story_id: int, delta: int, seen_head: int | None = None) -> StoryView:
        """Switch to the previous (-1) or next (+1) version of the head paragraph."""
        with self.context.db.Session() as session:
            head = self.context.head(session, story_id, seen_head)
            versions = [s.id for s in repo.children(session, story_id, head.parent_id)]
        target = versions.index(head.id) + delta
        if not 0 <= target < len(versions):
            raise InvalidInput(f"there is no {'earlier' if delta < 0 else 'later'} version of this paragraph")
        return self.switch(story_id, versions[target])

    def undo(self, story_id: int, seen_head: int | None = None) -> StoryView:
        """Move the head back to the previous paragraph; the undone one stays as a branch."""
        with self.context.lock(story_id), self.context.db.Session.begin() as session:
            head = self.context.head(session, story_id, seen_head)
            if head.parent_id is None:
                raise InvalidInput("this is the first paragraph; there is nothing to undo")
            repo.move_head(session, self.context.story(session, story_id), head.id, head.parent_id)
        return view_of(self.context, story_id)


def check_paragraph(step: Step, seen: str | None) -> None:
    """A Conflict when the page's version of the paragraph (text and chapter title) is not this one."""
    title = f" Its chapter title is now {quoted(step.chapter)}." if step.chapter else ""
    check_seen(seen, paragraph_version(step.id, step.paragraph, step.chapter), f"paragraph {step.depth + 1}",
               f"It now reads: {quoted(step.paragraph)}.{title}")


def chapter_title(title: str | None, limit: int) -> str | None:
    return checked_text(title, "chapter title", limit) if title and title.strip() else None
