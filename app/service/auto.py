"""Auto mode: steps written unattended. Before each, a simulated human picks the most promising
plan and revises it into an outline (clarified with SCA when the story asks for it). A run can
be stopped at any time by the person who started it; the step in progress is dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.service.context import StoryContext
from app.service.steps import Steps
from app.service.stories import Stories, StoryView, view_of
from common.errors import Cancelled, InvalidInput
from generation.recurrence import Choice, OnText

OnStep = Callable[[int, int, StoryView], None]  # (step number, steps in all, the story after it)


class Auto:
    def __init__(self, context: StoryContext, steps: Steps, stories: Stories):
        self.context = context
        self.steps = steps
        self.stories = stories

    @contextmanager
    def running(self, story_id: int) -> Iterator[threading.Event]:
        """Register a run of this person's on the story and give its stop signal (Busy when one
        is running already); the signal is set and the run forgotten when the block ends."""
        with self.context.runs.running((self.context.owner, story_id)) as cancel:
            yield cancel

    def stop(self, story_id: int | None) -> None:
        """Stop this person's run on the story (InvalidInput when none is running)."""
        if story_id is None:
            raise InvalidInput("Nothing is running on this story.")
        self.context.runs.stop((self.context.owner, story_id))

    def run(self, story_id: int, steps: int, on_text: OnText | None = None, on_step: OnStep | None = None,
            cancel: threading.Event | None = None) -> StoryView:
        """Write `steps` steps unattended. `cancel` stops cleanly: the step in progress is dropped."""
        limit = self.context.limits.auto_steps
        if not 1 <= steps <= limit:
            raise InvalidInput(f"auto mode writes 1 to {limit} steps at a time, not {steps}")
        cancel = cancel or threading.Event()

        def watched(part: str, text: str) -> None:
            if cancel.is_set():
                raise Cancelled("stopped; the step in progress was not saved")
            if on_text:
                on_text(part, text)

        for number in range(1, steps + 1):
            if cancel.is_set():
                break
            try:
                self._one_step(story_id, watched, on_text)
            except Cancelled:  # stopped on purpose: the story is as the last finished step left it
                break
            if on_step:
                on_step(number, steps, view_of(self.context, story_id))
        return view_of(self.context, story_id)

    def _one_step(self, story_id: int, watched: OnText, on_text: OnText | None) -> None:
        with self.context.lock(story_id):
            with self.context.db.Session() as session:
                head = self.context.head(session, story_id)
            choice = self.context.writer_for(story_id).choose(head.short_memory, head.paragraph,
                                                              list(head.plans), watched)
            instruction = (self._clarify(story_id, choice, on_text) if self.stories.clarify_automatically(story_id)
                           else choice.instruction)
            self.steps.write(story_id, head.id, instruction, self.steps.as_head(story_id, head.id),
                             watched, prelude=choice.usage)

    def _clarify(self, story_id: int, choice: Choice, on_text: OnText | None) -> str:
        """SCA's best wording of the choice's instruction; the call joins the choice's trace."""
        if on_text:
            on_text("clarify", choice.instruction)
        clarified = self.stories.clarify(story_id, choice.instruction)
        choice.usage.calls.append({  # shown by the inspector with the step's other calls
            "part": "clarify", "attempt": 1, "prompt": choice.instruction, "output": clarified.best.text,
            "candidates": [f"{c.origin}: {c.comprehension}: {c.text}" for c in clarified.candidates]})
        return clarified.best.text
