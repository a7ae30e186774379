"""A story as one versioned JSON document, and back: the story, its whole step tree (every branch,
readers' playthroughs), its long-term memory (with or without vectors) and its settings.

Ids inside a backup are its own: steps, playthroughs and memory entries are numbered 1, 2, ... in
the order they were written, so exporting a restored story gives the same document again. A
SHA-256 of the content catches a truncated or edited file; the shape of every field and every
reference are checked before anything is written (a file edited and resealed with a new SHA-256
is no different), and `restore` writes in the caller's transaction (all or nothing)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator
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


def checksum(document: dict) -> str:
    """The SHA-256 of the document's canonical JSON (sorted keys, no spaces, UTF-8), without its
    own "sha256". Serialised and hashed one record at a time: a large backup is never held twice."""
    digest = hashlib.sha256()
    for piece in _canonical({k: v for k, v in document.items() if k != "sha256"}, depth=2):
        digest.update(piece.encode())
    return digest.hexdigest()


def _canonical(value, depth: int) -> Iterator[str]:
    """The pieces of json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")),
    opening objects and lists `depth` levels down (the document, its lists of records)."""
    if depth == 0 or not isinstance(value, (dict, list)):
        yield json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    elif isinstance(value, dict):
        yield "{"
        for n, key in enumerate(sorted(value)):
            yield ("," if n else "") + json.dumps(key, ensure_ascii=False) + ":"
            yield from _canonical(value[key], depth - 1)
        yield "}"
    else:
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _canonical(item, depth - 1)
        yield "]"


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
            **({"label": s.label} if s.label else {}),
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
    """A backup document read and checked through: format, version, checksum, the type and shape
    of every field, and every reference. InvalidInput says what is wrong and where; nothing is
    written. The checksum only catches accidents: a backup edited and resealed is checked as
    strictly, since what it holds is shown by the Read and Inspect tabs and written to the database."""
    if len(raw) > MAX_BYTES:
        raise InvalidInput(f"{name} has {len(raw):,} bytes; a backup may have at most {MAX_BYTES:,}")
    try:  # read from the bytes: no decoded copy of the whole file beside them
        if json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
            raise UnicodeDecodeError("utf-8", raw[:4], 0, 1, "UTF-16 or UTF-32")
        document = json.loads(raw, parse_constant=_not_finite, parse_float=_finite)
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not UTF-8 text, so not a storyloom backup") from None
    except json.JSONDecodeError as e:
        cut = "; it stops before its end (truncated?)" if not raw.rstrip().endswith(b"}") else ""
        raise InvalidInput(f"{name} is not complete JSON ({e.msg}: line {e.lineno}, column {e.colno}){cut}") from None
    except _NotFinite as e:  # read again, letting such numbers through, to say where it is
        raise InvalidInput(f"{name} is damaged: {_where(_first_not_finite(json.loads(raw)))} is {e}; "
                           "the numbers in a backup are finite") from None
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
    except _Damaged as e:
        raise InvalidInput(f"{name} is damaged: {e}") from None
    return document


class _NotFinite(ValueError):
    """NaN, Infinity or a number too large for a float: not JSON, though Python's json reads them."""


def _not_finite(literal: str):
    raise _NotFinite(literal)


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e400
        raise _NotFinite(literal)
    return value


def _first_not_finite(document) -> tuple:
    """The path to the first number that is not finite (in the order of the text, as json met it)."""
    stack: list[tuple[tuple, Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        inside = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend(reversed([((*path, key), item) for key, item in inside]))
    return ()


_NUMBERED = {"steps": "step", "playthroughs": "playthrough", "memories": "memory entry"}


def _where(path: tuple) -> str:
    """A place in a backup as a person looks for it: ("steps", 11, "trace", "calls", 0) is
    "step 12: trace.calls[0]" (steps, playthroughs and memory entries by their own numbers)."""
    if len(path) > 1 and path[0] in _NUMBERED and isinstance(path[1], int):
        head, rest = f"{_NUMBERED[path[0]]} {path[1] + 1}", path[2:]
    elif path:
        head, rest = str(path[0]), path[1:]
    else:
        return "the backup"
    inner = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in rest).removeprefix(".")
    return f"{head}: {inner}" if inner and not inner.startswith("[") else head + inner


class _Damaged(Exception):
    """What is wrong with a backup, and where."""

    def __init__(self, path: tuple, problem: str):
        super().__init__(f"{_where(path)} {problem}")


def _need(ok: bool, path: tuple, problem: str) -> None:
    if not ok:
        raise _Damaged(path, problem)


# -- the shape of a backup: each Shape checks the value at a path ------------------------

Shape = Callable[[Any, tuple], None]
WHOLE_LIMIT = 2**31 - 1  # the columns' INTEGER (32 bits on PostgreSQL)


def _text(limit: int | None = None, filled: bool = False) -> Shape:
    def text(value, path):
        _need(isinstance(value, str), path, "is not text")
        _need("\x00" not in value, path, "holds a NUL character")  # no database stores one in text
        _need(limit is None or len(value) <= limit, path, f"is longer than {limit} characters")
        _need(not filled or bool(value.strip()), path, "is empty")
    return text


def _whole(value, path) -> None:
    _need(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= WHOLE_LIMIT, path,
          f"is not a whole number from 0 to {WHOLE_LIMIT:,}")


def _number(value, path) -> None:
    _need(isinstance(value, (int, float)) and not isinstance(value, bool), path, "is not a number")
    _need(abs(value) <= sys.float_info.max, path, "is too large")


def _flag(value, path) -> None:
    _need(isinstance(value, bool), path, "is not true or false")


def _date(value, path) -> None:
    if value is not None:
        _need(isinstance(value, str), path, "is not a date")
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise _Damaged(path, f"{value[:40]!r} is not a date") from None


def _scalar(value, path) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _number(value, path)
    else:
        _need(value is None or isinstance(value, (str, bool)), path, "is not text, a number, true/false or null")


def _anything(value, path) -> None:
    """Any JSON value (its numbers finite, as parse reads them)."""


def _maybe(shape: Shape) -> Shape:
    def maybe(value, path):
        if value is not None:
            shape(value, path)
    return maybe


def _one_of(values: tuple) -> Shape:
    def one_of(value, path):
        _need(value in values, path, f"is {repr(value)[:50]}, not one of {', '.join(values)}")
    return one_of


def _list(item: Shape) -> Shape:
    def items(value, path):
        _need(isinstance(value, list), path, "is not a list")
        for n, x in enumerate(value):
            item(x, (*path, n))
    return items


def _record(required: dict[str, Shape], optional: dict[str, Shape] | None = None, others: Shape | None = None) -> Shape:
    """An object with the `required` fields and any of the `optional` ones; other fields are
    refused unless `others` says what they may hold."""
    optional = optional or {}

    def record(value, path):
        _need(isinstance(value, dict), path, "is not an object")
        for key, shape in required.items():
            _need(key in value, path, f"has no {key!r}")
            shape(value[key], (*path, key))
        for key, value_of in value.items():
            shape = optional.get(key) or (None if key in required else others)
            _need(key in required or shape is not None, path,
                  f"has a field {key[:50]!r} that storyloom never writes there")
            if shape is not None:
                shape(value_of, (*path, key))
    return record


# Settings and decoding settings are open: another version may save more of them, and readers
# ignore the ones they do not know. A trace is closed: the Inspect tab shows each of its fields.
_DECODING = _record({}, others=_scalar)
_PART = _record({"tokens": _whole, "budget": _whole}, {"each": _list(_whole)})
_ENTRY = _maybe(_whole)  # a memory entry's number in the backup; None for one deleted since
_TRACE = _record({}, {
    "calls": _list(_record({"part": _text(100), "attempt": _whole, "prompt": _text(), "output": _text()},
                           {"prompt_tokens": _whole, "completion_tokens": _whole, "problem": _text(),
                            "candidates": _list(_text())})),
    "retries": _whole,
    "parts": _record({}, dict.fromkeys(("premise", "short_memory", "memories", "lore", "last_paragraph",
                                        "instruction"), _PART)),
    "retrieved": _list(_record({"score": _number, "text": _text()},
                               {"id": _ENTRY, "cosine": _number, "words": _number})),
    "lore": _list(_record({"reason": _text(), "text": _text()}, {"id": _ENTRY})),
    "lore_left_out": _whole, "decoding": _DECODING, "imported": _text(),
})
_DOCUMENT = _record({
    "format": _text(), "version": _whole, "sha256": _text(),
    "story": _record({
        **{key: _text(limit, filled=key == "title") for key, limit in _STORY_TEXT.items()},
        "owner": _maybe(_text(200)), "head": _maybe(_whole), "created_at": _date, "updated_at": _date,
        "settings": _record({}, {"decoding": _DECODING, "sca_auto": _flag, "author": _text()}, others=_anything),
    }),
    "steps": _list(_record({
        **{key: _text(limit) for key, limit in _STEP_TEXT.items()}, "id": _whole, "parent": _maybe(_whole),
        "depth": _whole, "plans": _list(_text(filled=True)), "prompt_tokens": _whole, "completion_tokens": _whole,
        "seconds": _number, "trace": _TRACE, "chapter": _maybe(_text(500)), "playthrough": _maybe(_whole),
        "created_at": _date,
    }, {"label": _text(200)})),
    "playthroughs": _list(_record({
        "id": _whole, "reader": _text(200), "start_step": _whole, "head_step": _whole,
        "choices": _list(_text(filled=True)), "created_at": _date,
    })),
    "memories": _list(_record({
        "id": _whole, "step": _maybe(_whole), "kind": _one_of(MEMORY_KINDS), "text": _text(), "pinned": _flag,
        "stale": _flag, "keys": _list(_text()), "revision": _whole, "created_at": _date, "last_retrieved_at": _date,
    }, {"vector": _text()})),
    "vectors": _maybe(_record({"dtype": _one_of(("float32",))}, {"name": _text(), "dim": _whole})),
})


# -- what refers to what -----------------------------------------------------------------

def _check(d: dict) -> None:
    """The shape of every field, then every reference (on fields of the right types)."""
    _DOCUMENT(d, ())
    steps, plays = d["steps"], d["playthroughs"]
    _need(bool(steps), (), "has no steps (no paragraphs)")
    _check_steps(steps, len(plays))
    head = d["story"]["head"]
    _need(head is None or (1 <= head <= len(steps) and steps[head - 1]["playthrough"] is None), ("story", "head"),
          f"{head} is not one of the writer's steps")
    for n, play in enumerate(plays):
        _check_playthrough(play, n, steps)
    _check_memories(d["memories"], d["vectors"], len(steps))


def _check_steps(steps: list, play_count: int) -> None:
    """A tree: each step after its parent, one deeper. A reader's scene follows the writer's step
    its playthrough began at, or another of its scenes; the writer's steps never follow a scene."""
    for n, step in enumerate(steps):
        path, parent, play = ("steps", n), step["parent"], step["playthrough"]
        _need(step["id"] == n + 1, path, f"is numbered {step['id']}; steps must be numbered 1, 2, ... in order")
        _need(parent is None or 1 <= parent <= n, path, f"has parent {parent}; a parent must be an earlier step")
        _need(step["depth"] == (0 if parent is None else steps[parent - 1]["depth"] + 1), path,
              "has a depth that does not follow its parent")
        _need(play is None or 1 <= play <= play_count, path,
              f"names playthrough {play}, which the backup does not have")
        _need(play is None or parent is not None, path, "is a reader's scene with no step before it")
        above = None if parent is None else steps[parent - 1]["playthrough"]
        owner = "the writer's" if play is None else f"playthrough {play}'s"
        _need(above is None or above == play, path, f"is {owner}, under step {parent} of playthrough {above}")


def _check_playthrough(play: dict, n: int, steps: list) -> None:
    path, start, head = ("playthroughs", n), play["start_step"], play["head_step"]
    _need(play["id"] == n + 1, path, f"is numbered {play['id']}; playthroughs must be numbered 1, 2, ... in order")
    for key in ("start_step", "head_step"):
        _need(1 <= play[key] <= len(steps), (*path, key), f"{play[key]} is not a step")
    _need(steps[start - 1]["playthrough"] is None, (*path, "start_step"), f"{start} is not one of the writer's steps")
    _need(head == start or steps[head - 1]["playthrough"] == n + 1, (*path, "head_step"),
          f"{head} is neither its start_step nor one of its scenes")
    began = head  # back through its scenes to the writer's step it began at
    while steps[began - 1]["playthrough"] is not None:
        began = steps[began - 1]["parent"]
    _need(began == start, (*path, "start_step"), f"{start} is not on the path to its head_step {head}")


def _check_memories(memories: list, vectors: dict | None, step_count: int) -> None:
    sizes = set()
    for n, entry in enumerate(memories):
        path = ("memories", n)
        _need(entry["id"] == n + 1, path, f"is numbered {entry['id']}; entries must be numbered 1, 2, ... in order")
        _need(entry["step"] is None or 1 <= entry["step"] <= step_count, path,
              f"names step {entry['step']}, which the backup does not have")
        if vectors is not None:
            _need("vector" in entry, path, "has no 'vector'")
            sizes.add(_vector_size(entry["vector"], (*path, "vector")))
    _need(len(sizes) <= 1, (), "has memory vectors of different sizes")


def _vector_size(encoded: str, path: tuple) -> int:
    """Bytes of one memory entry's base64 vector, checked to be float32 numbers."""
    try:
        size = len(base64.b64decode(encoded, validate=True))
    except ValueError:
        raise _Damaged(path, "is not base64") from None
    _need(size > 0 and size % 4 == 0, path, "is not float32 numbers")
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
                    label=item.get("label"), **_created(item["created_at"]))
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
