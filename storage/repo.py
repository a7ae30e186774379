"""Repository functions. Each takes the session first; the caller owns the transaction."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, defer

from common.errors import Conflict, NotFound
from storage.models import MemoryEntry, Playthrough, Step, Story


def create_story(session: Session, *, title: str, premise: str, outline: str = "", **fields) -> Story:
    story = Story(title=title, premise=premise, outline=outline, **fields)
    session.add(story)
    session.flush()
    return story


ANYONE = object()  # get_story's owner when accounts are off: every story is the one person's


ID_LIMIT = 2**63 - 1  # the largest integer the drivers send (64 bits); a larger id in a column simply matches none


def holdable(row_id: int) -> bool:
    """Whether a database can hold this id: the drivers refuse others with OverflowError."""
    return 0 < row_id <= ID_LIMIT


def row(session: Session, model, row_id: int):
    """session.get, except that an id no database can hold is simply not there."""
    return session.get(model, row_id) if holdable(row_id) else None


def get_story(session: Session, story_id: int, owner=ANYONE) -> Story:
    """The story; NotFound when there is none, or when it belongs to someone other than `owner`
    (the same message: another person's story ids tell nothing)."""
    story = row(session, Story, story_id)
    if story is None or (owner is not ANYONE and story.owner != owner):
        raise NotFound(f"no story with id {story_id}")
    return story


def list_stories(session: Session, owner=ANYONE) -> Sequence[Story]:
    query = select(Story).order_by(Story.id)
    if owner is not ANYONE:
        query = query.where(Story.owner == owner)
    return session.scalars(query).all()


def get_step(session: Session, step_id: int) -> Step:
    step = row(session, Step, step_id)
    if step is None:
        raise NotFound(f"no step with id {step_id}")
    return step


_PARENT = object()


def add_step(session: Session, story: Story, *, parent: Step | None, expected_head=_PARENT, **fields) -> Step:
    """Add a step under `parent` and make it the head.

    The head must still be `expected_head` (a step id or None; by default the parent's id),
    else Conflict and nothing is written: another tab or process acted on the story first."""
    step = Step(story_id=story.id, parent_id=parent.id if parent else None,
                depth=parent.depth + 1 if parent else 0, **fields)
    session.add(step)
    session.flush()
    move_head(session, story, (parent.id if parent else None) if expected_head is _PARENT else expected_head,
              step.id)
    return step


def move_head(session: Session, story: Story, expected: int | None, to: int | None) -> None:
    """Point the story at step `to`, if its head is still `expected` (compare and set)."""
    head_unmoved = Story.head_step_id.is_(None) if expected is None else Story.head_step_id == expected
    moved = session.execute(
        update(Story).where(Story.id == story.id, head_unmoved).values(head_step_id=to)
        .execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise Conflict("the story changed while this action ran (another tab or process?); "
                       "nothing was saved, try again")
    session.expire(story, ["head_step_id", "head"])


def children(session: Session, story_id: int, parent_id: int | None) -> Sequence[Step]:
    """The writer's steps under `parent_id` (None: the story's openings), oldest first.
    Readers' scenes are not among them."""
    parent_is = Step.parent_id.is_(None) if parent_id is None else Step.parent_id == parent_id
    return session.scalars(select(Step).where(Step.story_id == story_id, parent_is, Step.playthrough_id.is_(None))
                           .order_by(Step.id)).all()


def tree(session: Session, story_id: int) -> Sequence:
    """Every step of the writer's manuscript, in every branch (readers' scenes left out), oldest
    first: rows of (id, parent_id, depth, plan, paragraph, label)."""
    return session.execute(select(Step.id, Step.parent_id, Step.depth, Step.plan, Step.paragraph, Step.label)
                           .where(Step.story_id == story_id, Step.playthrough_id.is_(None))
                           .order_by(Step.id)).all()


def add_scene(session: Session, playthrough: Playthrough, *, parent: Step, **fields) -> Step:
    """Add a scene to a reader's playthrough and make it its head (compare and set, as add_step)."""
    step = Step(story_id=playthrough.story_id, parent_id=parent.id, depth=parent.depth + 1,
                playthrough_id=playthrough.id, **fields)
    session.add(step)
    session.flush()
    moved = session.execute(
        update(Playthrough).where(Playthrough.id == playthrough.id, Playthrough.head_step_id == parent.id)
        .values(head_step_id=step.id, choices=list(step.plans)).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise Conflict("this playthrough moved on while the scene was being written; nothing was saved")
    session.expire(playthrough)
    return step


def scene_ids(session: Session, story_id: int) -> set[int]:
    """The steps of a story written in readers' playthroughs."""
    return set(session.scalars(select(Step.id).where(Step.story_id == story_id, Step.playthrough_id.is_not(None))))


def playthroughs(session: Session, story_id: int) -> Sequence[Playthrough]:
    return session.scalars(select(Playthrough).where(Playthrough.story_id == story_id).order_by(Playthrough.id)).all()


def get_playthrough(session: Session, playthrough_id: int) -> Playthrough:
    playthrough = session.get(Playthrough, playthrough_id)
    if playthrough is None:
        raise NotFound(f"no playthrough with id {playthrough_id}")
    return playthrough


def newest_tip(session: Session, step: Step) -> Step:
    """Follow the newest child down from `step` to a paragraph with nothing after it."""
    while (kids := children(session, step.story_id, step.id)):
        step = kids[-1]
    return step


def _ancestors(step_id: int):
    """A recursive CTE of the ids from `step_id` up to the first step."""
    anchor = select(Step.id, Step.parent_id).where(Step.id == step_id).cte("path", recursive=True)
    return anchor.union_all(select(Step.id, Step.parent_id).join(anchor, Step.id == anchor.c.parent_id))


def path_to(session: Session, step_id: int | None) -> list[Step]:
    """The steps from the first to `step_id`, in order (one recursive query)."""
    if step_id is None:
        return []
    path = _ancestors(step_id)
    steps = session.scalars(select(Step).join(path, Step.id == path.c.id)).all()
    return sorted(steps, key=lambda s: s.depth)


def path_ids(session: Session, step_id: int | None) -> set[int]:
    if step_id is None:
        return set()
    return set(session.scalars(select(_ancestors(step_id).c.id)).all())


IN_BATCH = 10_000


def bump_memory_version(session: Session, story_id: int) -> None:
    """Give the story's long-term memory a new version token. A random token, not a counter:
    a version seen inside a transaction that was rolled back must never come back later."""
    token = secrets.randbelow(2**31 - 2) + 1
    session.execute(
        update(Story).where(Story.id == story_id)
        .values(memory_version=token)
        .execution_options(synchronize_session=False)
    )


def memory_version(session: Session, story_id: int) -> int:
    version = session.scalar(select(Story.memory_version).where(Story.id == story_id))
    if version is None:
        raise NotFound(f"no story with id {story_id}")
    return version


def memory_revisions(session: Session, story_id: int) -> dict[int, int]:
    """id -> revision of every live (not stale) memory entry of a story."""
    rows = session.execute(
        select(MemoryEntry.id, MemoryEntry.revision)
        .where(MemoryEntry.story_id == story_id, MemoryEntry.stale.is_(False))
    )
    return {entry_id: revision for entry_id, revision in rows}


def memory_vectors(session: Session, ids: Sequence[int]) -> list[tuple[int, bytes, str]]:
    """(id, vector, text) of these entries: what the in-memory indexes hold."""
    ids = list(ids)
    found = []
    for start in range(0, len(ids), IN_BATCH):  # databases cap the parameters of one statement
        rows = session.execute(select(MemoryEntry.id, MemoryEntry.vector, MemoryEntry.text)
                               .where(MemoryEntry.id.in_(ids[start:start + IN_BATCH])))
        found += [(entry_id, vector, text) for entry_id, vector, text in rows]
    return found


def memory_entries(session: Session, story_id: int, ids: Sequence[int] | None = None, *,
                   rule_based: bool = False, kinds: Sequence[str] | None = None,
                   steps: Sequence[int] | None = None, live: bool = False, newest: int | None = None,
                   vectors: bool = True) -> Sequence[MemoryEntry]:
    """A story's memory entries, oldest first: those with `ids`; with rule_based, only the ones
    that enter prompts by rule (pinned, or lore); of `kinds`; of `steps`; only live (not stale)
    ones; only the `newest` so many. vectors=False leaves the vectors unloaded."""
    if ids is not None:
        ids = [i for i in ids if holdable(i)]  # the others cannot be there
    if ids is not None and len(ids) > IN_BATCH:  # databases cap the parameters of one statement
        ids = list(ids)
        return [e for start in range(0, len(ids), IN_BATCH) for e in memory_entries(
            session, story_id, ids[start:start + IN_BATCH], rule_based=rule_based, kinds=kinds, steps=steps,
            live=live, vectors=vectors)]
    query = select(MemoryEntry).where(MemoryEntry.story_id == story_id)
    query = query.order_by(MemoryEntry.id.desc()).limit(newest) if newest is not None else query.order_by(MemoryEntry.id)
    if not vectors:
        query = query.options(defer(MemoryEntry.vector))
    if live:
        query = query.where(MemoryEntry.stale.is_(False))
    if ids is not None:
        query = query.where(MemoryEntry.id.in_(list(ids)))
    if rule_based:
        query = query.where(MemoryEntry.pinned.is_(True) | (MemoryEntry.kind == "lore"))
    if kinds is not None:
        query = query.where(MemoryEntry.kind.in_(list(kinds)))
    if steps is not None:
        query = query.where(MemoryEntry.step_id.in_(list(steps)))
    found = session.scalars(query).all()
    return found[::-1] if newest is not None else found


def count_memory(session: Session, story_id: int, live: bool = False) -> int:
    query = select(func.count()).select_from(MemoryEntry).where(MemoryEntry.story_id == story_id)
    return session.scalar(query.where(MemoryEntry.stale.is_(False)) if live else query)
