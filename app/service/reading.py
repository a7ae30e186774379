"""Reader mode (interactive fiction): a reader plays a story from the writer's latest scene,
choosing what the main character does next; each choice writes the next scene. Every
playthrough is its own branch of the step tree, so the writer's manuscript is untouched."""

from __future__ import annotations

from dataclasses import dataclass

from app.service.context import StoryContext, checked_text, pick
from app.service.steps import Steps
from generation.recurrence import OnText
from storage import repo
from common.errors import NotFound
from storage.models import Playthrough, Step


@dataclass(frozen=True)
class ReaderView:
    playthrough_id: int
    story_id: int
    title: str
    reader: str
    scenes: list[str]  # from the writer's scene where it began to the current one
    choices: list[str]


class Reading:
    def __init__(self, context: StoryContext, steps: Steps):
        self.context = context
        self.steps = steps
        self.db = context.db

    def start(self, story_id: int, reader: str = "reader", on_text: OnText | None = None) -> ReaderView:
        """Begin a playthrough at the writer's current scene, with three choices for the reader."""
        reader = checked_text(reader or "reader", "reader name", 200)
        with self.db.Session() as session:
            scene = self.context.head(session, story_id)
        choices, _ = self.context.writer.choices(scene.short_memory, scene.paragraph, on_text)
        with self.db.Session.begin() as session:
            playthrough = Playthrough(story_id=story_id, reader=reader, start_step_id=scene.id,
                                      head_step_id=scene.id, choices=choices)
            session.add(playthrough)
            session.flush()
            playthrough_id = playthrough.id
        return self.view(playthrough_id)

    def _playthrough(self, session, playthrough_id: int):
        """The playthrough and its story, when the story is this person's: another's is "not found"."""
        playthrough = repo.get_playthrough(session, playthrough_id)
        try:
            return playthrough, self.context.story(session, playthrough.story_id)
        except NotFound:
            raise NotFound(f"no playthrough with id {playthrough_id}") from None

    def choose(self, playthrough_id: int, number: int, on_text: OnText | None = None) -> ReaderView:
        """Follow choice `number` of the current scene: write the next scene and its choices."""
        with self.db.Session() as session:
            playthrough, _ = self._playthrough(session, playthrough_id)
            action = pick(playthrough.choices, number, "choice")
            story_id, head_id = playthrough.story_id, playthrough.head_step_id

        def add(session, parent: Step, fields: dict) -> Step:
            return repo.add_scene(session, repo.get_playthrough(session, playthrough_id), parent=parent, **fields)

        with self.context.lock(story_id):
            self.steps.write(story_id, head_id, f"The main character decides to {action[0].lower()}{action[1:]}",
                             add, on_text, reader=True)
        return self.view(playthrough_id)

    def view(self, playthrough_id: int) -> ReaderView:
        with self.db.Session() as session:
            playthrough, story = self._playthrough(session, playthrough_id)
            path = repo.path_to(session, playthrough.head_step_id)
            start = [s.id for s in path].index(playthrough.start_step_id)
            scenes = [s.paragraph for s in path[start:]]
            return ReaderView(playthrough.id, story.id, story.title, playthrough.reader, scenes,
                              list(playthrough.choices))

    def playthroughs(self, story_id: int) -> list[tuple[int, str, int]]:
        """(id, reader, scenes so far) of each playthrough of a story."""
        with self.db.Session() as session:
            self.context.story(session, story_id)
            ids = [(p.id, p.reader) for p in repo.playthroughs(session, story_id)]
        return [(i, reader, len(self.view(i).scenes)) for i, reader in ids]
