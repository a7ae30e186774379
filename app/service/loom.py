"""The loom: the story's tree of steps in view. Every paragraph ever written for the manuscript is
a step under the one it continues (regenerating makes a sibling, undo moves back and keeps the
branch), so the tree holds every branch. This use case lists it, compares a paragraph with the
version on the current path, and names branches; switching branches is Editing.switch."""

from __future__ import annotations

from dataclasses import dataclass

from app.service.context import StoryContext, checked_text
from common.errors import NotFound
from storage import repo
from storage.models import Step

OPENING_WORDS = 12  # of each paragraph, to tell the nodes apart
LABEL_CHARS = 200


@dataclass(frozen=True)
class Node:
    id: int
    parent: int | None
    number: int  # the paragraph's number in its branch, from 1
    opening: str  # its first words
    plan: str  # what it followed
    label: str | None  # the name of the branch from here
    version: int  # this is version `version` of `versions` of the paragraph after its parent
    versions: int
    on_path: bool  # in the manuscript now


@dataclass(frozen=True)
class LoomView:
    story_id: int
    head: int | None
    nodes: list[Node]  # parents before children, siblings oldest first


@dataclass(frozen=True)
class Comparison:
    number: int
    picked: Node
    picked_text: str
    current: int | None  # the step at that place in the manuscript now (None: the manuscript is shorter)
    current_text: str


def opening(text: str, words: int = OPENING_WORDS) -> str:
    split = text.split()
    return " ".join(split[:words]) + (" …" if len(split) > words else "")


class Loom:
    def __init__(self, context: StoryContext):
        self.context = context

    def tree(self, story_id: int) -> LoomView:
        with self.context.db.Session() as session:
            story = self.context.story(session, story_id)
            rows = repo.tree(session, story_id)
            path = repo.path_ids(session, story.head_step_id)
            head = story.head_step_id
        siblings: dict[int | None, list[int]] = {}
        for row in rows:
            siblings.setdefault(row.parent_id, []).append(row.id)
        nodes = [Node(r.id, r.parent_id, r.depth + 1, opening(r.paragraph), r.plan, r.label,
                      siblings[r.parent_id].index(r.id) + 1, len(siblings[r.parent_id]), r.id in path) for r in rows]
        return LoomView(story_id, head, nodes)

    def compare(self, story_id: int, step_id: int) -> Comparison:
        """Paragraph `step_id` beside the paragraph at its place in the manuscript now."""
        with self.context.db.Session() as session:
            story = self.context.story(session, story_id)
            step = self._step(session, story_id, step_id)
            path = repo.path_to(session, story.head_step_id)
            here = path[step.depth] if step.depth < len(path) else None
            ids = [r.id for r in repo.children(session, story_id, step.parent_id)]
            picked = Node(step.id, step.parent_id, step.depth + 1, opening(step.paragraph), step.plan, step.label,
                          ids.index(step.id) + 1, len(ids), here is not None and here.id == step.id)
            return Comparison(step.depth + 1, picked, step.paragraph, here.id if here else None,
                              here.paragraph if here else "")

    def name(self, story_id: int, step_id: int, label: str | None) -> LoomView:
        """Name the branch that starts at `step_id` (an empty name takes the name away)."""
        label = checked_text(label, "branch name", LABEL_CHARS) if label and label.strip() else None
        with self.context.lock(story_id), self.context.db.Session.begin() as session:
            self.context.claim(session, story_id)
            self._step(session, story_id, step_id).label = label
        return self.tree(story_id)

    def _step(self, session, story_id: int, step_id: int) -> Step:
        """A step of the writer's manuscript (a reader's scene is not in the loom)."""
        step = self.context.step_of(session, story_id, step_id)
        if step.playthrough_id is not None:
            raise NotFound(f"no paragraph with id {step_id} in story {story_id}")
        return step
