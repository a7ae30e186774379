"""A story as one versioned JSON document, and back: the story, its whole step tree (every branch,
readers' playthroughs), its long-term memory (with or without vectors) and its settings.

Ids inside a backup are its own: steps, playthroughs and memory entries are numbered 1, 2, ... in
the order they were written, so exporting a restored story gives the same document again. A
SHA-256 of the content catches a truncated or edited file; every reference is checked before
anything is written, and `restore` writes in the caller's transaction (all or nothing)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from common.errors import InvalidInput
from storage.models import MEMORY_KINDS, MemoryEntry, Playthrough, Step, Story

FORMAT = "storyloom-backup"
VERSION = 1
MAX_BYTES = 500_000_000

_STORY_TEXT = {"title": 500, "premise": None, "outline": None, "genre": 100, "language": 20}
_STEP_TEXT = {"plan": None, "paragraph": None, "short_memory": None, "model": 500}


def canonical(content: dict) -> bytes:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def checksum(document: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in document.items() if k != "sha256"})).hexdigest()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def dump(session: Session, story_id: int, vectors: bool = True, embedder: dict | None = None) -> dict:
    """The backup document of a story. `embedder` ({"name", "dim"}) says what made the vectors."""
    story = repo.get_story(session, story_id)
    steps = session.scalars(select(Step).where(Step.story_id == story_id).order_by(Step.id)).all()
    plays = repo.playthroughs(session, story_id)
    entries = repo.memory_entries(session, story_id, vectors=vectors)
    step_no = {s.id: n for n, s in enumerate(steps, 1)}
    play_no = {p.id: n for n, p in enumerate(plays, 1)}
    entry_no = {e.id: n for n, e in enumerate(entries, 1)}
    document: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "story": {
            "title": story.title, "premise": story.premise, "outline": story.outline, "genre": story.genre,
            "language": story.language, "owner": story.owner, "settings": story.settings or {},
            "head": step_no.get(story.head_step_id), "created_at": _time(story.created_at),
            "updated_at": _time(story.updated_at),
        },
        "steps": [{
            "id": step_no[s.id], "parent": step_no.get(s.parent_id), "depth": s.depth, "plan": s.plan,
            "paragraph": s.paragraph, "short_memory": s.short_memory, "plans": list(s.plans or []),
            "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "seconds": s.seconds,
            "model": s.model, "trace": _map_trace(s.trace or {}, entry_no), "chapter": s.chapter,
            "playthrough": play_no.get(s.playthrough_id), "created_at": _time(s.created_at),
        } for s in steps],
        "playthroughs": [{
            "id": play_no[p.id], "reader": p.reader, "start_step": step_no[p.start_step_id],
            "head_step": step_no[p.head_step_id], "choices": list(p.choices or []), "created_at": _time(p.created_at),
        } for p in plays],
        "memories": [{
            "id": entry_no[e.id], "step": step_no.get(e.step_id), "kind": e.kind, "text": e.text, "pinned": e.pinned,
            "stale": e.stale, "keys": list(e.keys or []), "revision": e.revision, "created_at": _time(e.created_at),
            "last_retrieved_at": _time(e.last_retrieved_at),
            **({"vector": base64.b64encode(e.vector).decode()} if vectors else {}),
        } for e in entries],
        "vectors": ({"dtype": "float32", **(embedder or {})} if vectors else None),
    }
    document["sha256"] = checksum(document)
    return document


def _map_trace(trace: dict, ids: dict) -> dict:
    """The trace with the ids of the memory entries it retrieved renumbered by `ids` (None for an
    entry no longer there)."""
    if not any(trace.get(k) for k in ("retrieved", "lore")):
        return trace
    return {**trace, **{k: [{**item, "id": ids.get(item.get("id"))} for item in trace.get(k) or []]
                        for k in ("retrieved", "lore") if k in trace}}


# -- reading a backup -----------------------------------------------------------------------

def parse(raw: bytes, name: str = "the backup") -> dict:
    """A backup document read and checked through: format, version, checksum, every field's type
    and every reference. InvalidInput says what is wrong; nothing is written."""
    if len(raw) > MAX_BYTES:
        raise InvalidInput(f"{name} has {len(raw):,} bytes; a backup may have at most {MAX_BYTES:,}")
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not UTF-8 text, so not a storyloom backup") from None
    except json.JSONDecodeError as e:
        cut = "; it stops before its end (truncated?)" if not raw.rstrip().endswith(b"}") else ""
        raise InvalidInput(f"{name} is not complete JSON ({e.msg}: line {e.lineno}, column {e.colno}){cut}") from None
    except (ValueError, RecursionError) as e:  # a number of thousands of digits, nesting thousands deep
        raise InvalidInput(f"{name} is not a storyloom backup ({type(e).__name__})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput(f"{name} is not a storyloom backup (no \"format\": \"{FORMAT}\")")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput(f"{name} has no valid version number")
    if version > VERSION:
        raise InvalidInput(f"{name} was written by a newer storyloom (backup version {version}); this one reads "
                           f"versions up to {VERSION}: update storyloom to import it")
    try:
        unchanged = document.get("sha256") == checksum(document)
    except UnicodeEncodeError:  # a lone surrogate (\\ud800) in a string: not text anyone wrote
        raise InvalidInput(f"{name} is damaged: it holds text that is not valid Unicode") from None
    if not unchanged:
        raise InvalidInput(f"{name} was changed after it was exported (its SHA-256 does not match the content); "
                           "use an unedited copy")
    try:
        _check(document)
    except (KeyError, TypeError, ValueError) as e:  # a field missing or of the wrong type
        raise InvalidInput(f"{name} is damaged: {_why(e)}") from None
    return document


def _why(e: Exception) -> str:
    return f"missing field {e}" if isinstance(e, KeyError) else str(e)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _text(record: dict, key: str, limit: int | None, what: str, optional: bool = False) -> None:
    value = record[key]
    if optional and value is None:
        return
    _need(isinstance(value, str), f"{what} {key} is not text")
    _need(limit is None or len(value) <= limit, f"{what} {key} is longer than {limit} characters")


def _int(value, what: str) -> None:
    _need(isinstance(value, int) and not isinstance(value, bool), f"{what} is not a whole number")


def _when(value, what: str) -> None:
    if value is not None:
        _need(isinstance(value, str), f"{what} is not a date")
        datetime.fromisoformat(value)


def _check(d: dict) -> None:
    story = d["story"]
    _check_story(story)
    steps, plays, memories = d["steps"], d["playthroughs"], d["memories"]
    _need(all(isinstance(x, list) for x in (steps, plays, memories)), "steps, playthroughs and memories must be lists")
    _need(bool(steps), "the backup has no steps (no paragraphs)")
    play_ids = set(range(1, len(plays) + 1))
    for n, step in enumerate(steps, 1):
        _check_step(step, n, steps, play_ids)
    head = story["head"]
    _need(head is None or (isinstance(head, int) and 1 <= head <= len(steps) and steps[head - 1]["playthrough"] is None),
          f"the story's head {head!r} is not one of the writer's steps")
    for n, play in enumerate(plays, 1):
        _check_playthrough(play, n, len(steps))
    _check_memories(memories, d["vectors"], len(steps))


def _check_story(story) -> None:
    _need(isinstance(story, dict), "story is not an object")
    for key, limit in _STORY_TEXT.items():
        _text(story, key, limit, "story")
    _need(bool(story["title"].strip()), "the story's title is empty")
    _text(story, "owner", 200, "story", optional=True)
    _need(isinstance(story["settings"], dict), "story settings are not an object")
    _when(story["created_at"], "story created_at")
    _when(story["updated_at"], "story updated_at")


def _check_step(step: dict, n: int, steps: list, play_ids: set[int]) -> None:
    what = f"step {n}"
    _need(step["id"] == n, f"{what} is numbered {step['id']!r}; steps must be numbered 1, 2, ... in order")
    parent = step["parent"]
    _need(parent is None or (isinstance(parent, int) and 1 <= parent < n),
          f"{what} has parent {parent!r}; a parent must be an earlier step")
    _int(step["depth"], f"{what} depth")
    _need(step["depth"] == (0 if parent is None else steps[parent - 1]["depth"] + 1),
          f"{what} depth does not follow its parent")
    for key, limit in _STEP_TEXT.items():
        _text(step, key, limit, what)
    _text(step, "chapter", 500, what, optional=True)
    _need(isinstance(step["plans"], list) and all(isinstance(p, str) for p in step["plans"]),
          f"{what} plans are not a list of text")
    _int(step["prompt_tokens"], f"{what} prompt_tokens")
    _int(step["completion_tokens"], f"{what} completion_tokens")
    _need(isinstance(step["seconds"], (int, float)), f"{what} seconds is not a number")
    _check_trace(step["trace"], what)
    _need(step["playthrough"] is None or step["playthrough"] in play_ids, f"{what} names no playthrough")
    _when(step["created_at"], f"{what} created_at")


def _check_trace(trace, what: str) -> None:
    _need(isinstance(trace, dict), f"{what} trace is not an object")
    for key in ("retrieved", "lore"):
        items = trace.get(key) or []
        _need(isinstance(items, list) and all(
            isinstance(i, dict) and (i.get("id") is None or (isinstance(i["id"], int) and not isinstance(i["id"], bool)))
            for i in items), f"{what} trace {key} is not a list of entries")


def _check_playthrough(play: dict, n: int, step_count: int) -> None:
    what = f"playthrough {n}"
    _need(play["id"] == n, f"{what} is numbered {play['id']!r}")
    _text(play, "reader", 200, what)
    for key in ("start_step", "head_step"):
        _need(isinstance(play[key], int) and 1 <= play[key] <= step_count, f"{what} {key} is not a step")
    _need(isinstance(play["choices"], list), f"{what} choices are not a list")
    _when(play["created_at"], f"{what} created_at")


def _check_memories(memories: list, vectors, step_count: int) -> None:
    _need(vectors is None or (isinstance(vectors, dict) and vectors.get("dtype") == "float32"),
          "vectors must be null or {\"dtype\": \"float32\", ...}")
    sizes = set()
    for n, entry in enumerate(memories, 1):
        what = f"memory entry {n}"
        _need(entry["id"] == n, f"{what} is numbered {entry['id']!r}")
        _need(entry["step"] is None or (isinstance(entry["step"], int) and 1 <= entry["step"] <= step_count),
              f"{what} names no step")
        _need(entry["kind"] in MEMORY_KINDS, f"{what} kind {entry['kind']!r} is not one of {', '.join(MEMORY_KINDS)}")
        _text(entry, "text", None, what)
        _need(isinstance(entry["pinned"], bool) and isinstance(entry["stale"], bool), f"{what} pinned/stale not true/false")
        _need(isinstance(entry["keys"], list) and all(isinstance(k, str) for k in entry["keys"]),
              f"{what} keys are not a list of text")
        _int(entry["revision"], f"{what} revision")
        _when(entry["created_at"], f"{what} created_at")
        _when(entry["last_retrieved_at"], f"{what} last_retrieved_at")
        if vectors is not None:
            sizes.add(_vector_size(entry["vector"], what))
    _need(len(sizes) <= 1, "memory vectors have different sizes")


def _vector_size(encoded, what: str) -> int:
    """Bytes of one memory entry's base64 vector, checked to be float32 numbers."""
    try:
        size = len(base64.b64decode(encoded, validate=True))
    except (ValueError, TypeError):
        raise ValueError(f"{what} vector is not base64") from None
    _need(size > 0 and size % 4 == 0, f"{what} vector is not float32 numbers")
    return size


def vector_dim(document: dict) -> int | None:
    """The length of the backup's vectors (None when it has none)."""
    if document["vectors"] is None or not document["memories"]:
        return None
    return len(base64.b64decode(document["memories"][0]["vector"])) // 4


# -- restoring -----------------------------------------------------------------------------

def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _created(value: str | None) -> dict:
    """created_at for a new row: the backup's, or the column's default when it has none."""
    return {"created_at": datetime.fromisoformat(value)} if value else {}


def restore(session: Session, document: dict, vectors: list[bytes] | None = None, title: str | None = None,
            owner=repo.ANYONE) -> Story:
    """A new story from a parsed backup, in the caller's transaction. `vectors` (one per memory
    entry) replaces the backup's own, e.g. when it has none or another embedder made them. With
    accounts on, `owner` (the person importing it) owns it, whoever owned the backup."""
    d = document
    if vectors is None:
        if d["vectors"] is None and d["memories"]:
            raise InvalidInput("this backup has no vectors; embed its memories first")
        vectors = [base64.b64decode(e["vector"]) for e in d["memories"]]
    s = d["story"]
    story = Story(title=title or s["title"], premise=s["premise"], outline=s["outline"], genre=s["genre"],
                  language=s["language"], owner=s["owner"] if owner is repo.ANYONE else owner,
                  settings=s["settings"],
                  **_created(s["created_at"]))
    session.add(story)
    session.flush()
    step_ids: dict[int, int] = {}
    rows: list[Step] = []
    for item in d["steps"]:
        step = Step(story_id=story.id, parent_id=step_ids.get(item["parent"]), depth=item["depth"], plan=item["plan"],
                    paragraph=item["paragraph"], short_memory=item["short_memory"], plans=item["plans"],
                    prompt_tokens=item["prompt_tokens"], completion_tokens=item["completion_tokens"],
                    seconds=item["seconds"], model=item["model"], trace={}, chapter=item["chapter"],
                    **_created(item["created_at"]))
        session.add(step)
        session.flush()
        step_ids[item["id"]] = step.id
        rows.append(step)
    play_ids: dict[int, int] = {}
    for item in d["playthroughs"]:
        play = Playthrough(story_id=story.id, reader=item["reader"], start_step_id=step_ids[item["start_step"]],
                           head_step_id=step_ids[item["head_step"]], choices=item["choices"],
                           **_created(item["created_at"]))
        session.add(play)
        session.flush()
        play_ids[item["id"]] = play.id
    entries = [MemoryEntry(story_id=story.id, step_id=step_ids.get(item["step"]), kind=item["kind"],
                           text=item["text"], pinned=item["pinned"], stale=item["stale"], keys=item["keys"],
                           vector=vector, revision=item["revision"], **_created(item["created_at"]),
                           last_retrieved_at=_parse_time(item["last_retrieved_at"]))
               for item, vector in zip(d["memories"], vectors, strict=True)]
    session.add_all(entries)
    session.flush()  # ids in the order added
    entry_ids = {item["id"]: entry.id for item, entry in zip(d["memories"], entries)}
    for step, item in zip(rows, d["steps"]):
        step.playthrough_id = play_ids.get(item["playthrough"])
        step.trace = _map_trace(item["trace"], entry_ids)
    repo.bump_memory_version(session, story.id)  # before the last update: it would stamp updated_at
    story.head_step_id = step_ids.get(s["head"])
    story.updated_at = _parse_time(s["updated_at"]) or story.created_at
    session.flush()
    return story
