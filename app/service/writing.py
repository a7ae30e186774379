"""Writing the manuscript: a new story from its premise, the next paragraph from a plan or an
instruction, and the head paragraph written again as a new version beside the old one."""

from __future__ import annotations

from app.service.context import StoryContext, checked_text, pick
from app.service.steps import Steps
from app.service.stories import StoryView, view_of
from common.errors import InvalidInput
from generation.recurrence import OnText
from storage import repo


class Writing:
    def __init__(self, context: StoryContext, steps: Steps):
        self.context = context
        self.steps = steps

    def new_story(self, premise: str, title: str | None = None, on_text: OnText | None = None) -> StoryView:
        limits = self.context.limits
        premise = checked_text(premise, "premise", limits.premise_chars)
        title = checked_text(title, "title", limits.title_chars) if title and title.strip() else None
        opening = self.context.writer_for(None).init(premise, title, on_text)
        record = self.steps.record("", opening)
        with self.context.db.Session.begin() as session:
            story = repo.create_story(session, title=opening.title, premise=premise, outline=opening.outline,
                                      owner=self.context.owner_name)
            self.steps.commit(session, story.id, self.steps.as_head(story.id, None), record)
            story_id = story.id
        return view_of(self.context, story_id)

    def step(self, story_id: int, plan: int | None = None, instruction: str | None = None,
             on_text: OnText | None = None, seen_head: int | None = None) -> StoryView:
        """Write the next paragraph after the head, following plan `plan` of the head or an instruction."""
        if (plan is None) == (instruction is None):
            raise InvalidInput("give either a plan number or an instruction")
        if instruction is not None:
            instruction = checked_text(instruction, "instruction", self.context.limits.plan_chars)
        with self.context.lock(story_id):
            with self.context.db.Session() as session:
                head = self.context.head(session, story_id, seen_head)
                chosen = instruction if instruction is not None else pick(head.plans, plan)
            self.steps.write(story_id, head.id, chosen, self.steps.as_head(story_id, head.id), on_text)
        return view_of(self.context, story_id)

    def write_next(self, story_id: int, plan: int | None, text: str | None, on_text: OnText | None = None,
                   seen_head: int | None = None) -> StoryView:
        """step() from the page's choice: plan `plan` as it stands when the text box is empty or
        still holds that plan, else the box's text as the instruction (a plan the person edited)."""
        text = (text or "").strip()
        if not text and plan is None:
            raise InvalidInput("Pick one of the plans or write your own instruction.")
        if plan is not None and text in ("", pick(view_of(self.context, story_id).plans, int(plan))):
            return self.step(story_id, int(plan), None, on_text, seen_head)
        return self.step(story_id, None, text, on_text, seen_head)

    def regenerate(self, story_id: int, on_text: OnText | None = None, seen_head: int | None = None) -> StoryView:
        """Write the head paragraph again, as a new version beside it; the old one is kept."""
        with self.context.lock(story_id):
            with self.context.db.Session() as session:
                story = self.context.story(session, story_id)
                head = self.context.head(session, story_id, seen_head)
                premise, title, outline = story.premise, story.title, story.outline
            replace_head = self.steps.as_head(story_id, head.id)
            if head.parent_id is None:  # the opening: write it again from the premise
                opening = self.context.writer_for(story_id).init(premise, title, on_text, outline=outline)
                record = self.steps.record("", opening)
                with self.context.db.Session.begin() as session:
                    self.steps.commit(session, story_id, replace_head, record)
            else:
                self.steps.write(story_id, head.parent_id, head.plan, replace_head, on_text)
        return view_of(self.context, story_id)
