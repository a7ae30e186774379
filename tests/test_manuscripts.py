"""Export and import through the service: a JSON backup restores a story exactly, a draft becomes
a story that can go on, and bad files change nothing. Real SQLite, embedder and FAISS; scripted model."""

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from app.ui.inspect import inspector_markdown
from generation.backend import Decoding
from common.errors import GenerationFailed
from storage import backup
from common.errors import InvalidInput
from storage.db import open_database, sqlite_url
from storage.models import MemoryEntry, Playthrough, Step, Story
from tests.test_service import make_service

DRAFT = """# The Lighthouse at Greyhaven

## Chapter One

Mara kept the light on Greyhaven for thirty years. Nobody had written to her in ten.

One morning a bottle washed up on the shingle with a letter inside, addressed to her in her own hand.

## Chapter Two

She rowed to the village with the letter in her oilskin pocket. Tomas the baker read it twice.

"It is dated fifty years from now," he said, and gave it back as if it were hot.
"""


def counts(db):
    with db.Session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Story, Step, MemoryEntry, Playthrough))


@pytest.fixture
def written(db, embedder):
    return write_story(db, embedder)


@pytest.fixture(scope="module")
def backup_bytes(tmp_path_factory, embedder) -> bytes:
    """The JSON backup of write_story's story, made once (on SQLite) for the tests that spoil it."""
    db = open_database(sqlite_url(tmp_path_factory.mktemp("backup") / "written.db"))
    try:
        service, story_id = write_story(db, embedder)
        return service.manuscripts.export(story_id, "json").data
    finally:
        db.close()


def write_story(db, embedder):
    """A story with branches, a reader's playthrough, lore, edited memory and its own settings."""
    service, _ = make_service(db, embedder)
    view = service.new_story("A keeper finds a letter from the future.")
    service.step(view.id, plan=1)
    service.regenerate(view.id)  # a second version: the tree branches
    view = service.step(view.id, instruction="Mara burns the letter.")
    service.set_chapter(view.id, view.step_ids[1], "Chapter Two: The Reef")
    service.memories.add(view.id, "Ilse is Mara's twin sister.", kind="lore", keys=["Ilse"])
    reading = service.reading
    reading.choose(reading.start(view.id, "Ben").playthrough_id, 1)  # a reader's scene: a step off the manuscript
    service.set_decoding(view.id, Decoding(guard_lambda=0.2, repetition_penalty=1.1))
    return service, view.id


def test_a_backup_restores_the_story_exactly(written, db):
    service, story_id = written
    manuscripts = service.manuscripts
    first = manuscripts.export(story_id, "json")
    assert first.filename == "The Keeper's Letter.json" and first.media_type == "application/json"
    before = counts(db)
    restored = manuscripts.import_file(first.filename, first.data)
    assert restored.id != story_id
    assert counts(db) == tuple(2 * n for n in before)  # every step, entry and playthrough, once more
    again = manuscripts.export(restored.id, "json")
    assert json.loads(again.data) == json.loads(first.data)  # the same document, ids included (they are its own)
    document = json.loads(first.data)
    assert len(document["steps"]) == 5 and len(document["playthroughs"]) == 1  # both versions, the reader's scene
    assert {m["kind"] for m in document["memories"]} >= {"paragraph", "summary", "lore"}
    original, copy = service.view(story_id), service.view(restored.id)
    assert (copy.title, copy.paragraphs, copy.chapters, copy.plans, copy.short_memory) == \
        (original.title, original.paragraphs, original.chapters, original.plans, original.short_memory)
    assert service.decoding(restored.id) == service.decoding(story_id)
    with db.Session() as s:  # the Inspect tab shows every step, the reader's scene too
        step_ids = s.scalars(select(Step.id).where(Step.story_id == restored.id)).all()
    shown = [inspector_markdown(service.stories.inspect(restored.id, i)) for i in step_ids]
    assert len(shown) == 5 and "Retrieved memories" in shown[-1]
    reading = service.reading  # and the Read tab the playthrough
    [(played, reader, scenes)] = reading.playthroughs(story_id)
    [(replayed, *copied)] = reading.playthroughs(restored.id)
    assert copied == [reader, scenes] and reading.view(replayed).scenes == reading.view(played).scenes
    assert reading.view(replayed).choices == reading.view(played).choices
    hits = service.search_memory(restored.id, "the reef where the Kestrel sank", k=3)  # an index from the vectors
    assert hits and "Kestrel" in hits[0].text
    assert len(service.step(restored.id, plan=1).paragraphs) == len(copy.paragraphs) + 1  # and writing goes on


def test_a_backup_without_vectors_is_embedded_again_on_import(written, db):
    service, story_id = written
    manuscripts = service.manuscripts
    slim = manuscripts.export(story_id, "json", vectors=False)
    assert json.loads(slim.data)["vectors"] is None and len(slim.data) < len(manuscripts.export(story_id, "json").data)
    lines = []
    restored = manuscripts.import_file("slim.json", slim.data, on_progress=lines.append)
    assert any("Embedding" in line for line in lines)
    with db.Session() as s:
        def vectors(sid):
            rows = s.scalars(select(MemoryEntry).where(MemoryEntry.story_id == sid).order_by(MemoryEntry.id)).all()
            return np.stack([np.frombuffer(e.vector, dtype=np.float32) for e in rows])
        # the same model's vectors (batched differently: equal to bfloat16's precision)
        assert (vectors(story_id) * vectors(restored.id)).sum(axis=1).min() > 0.999


def _resealed(document: dict) -> bytes:
    document["sha256"] = backup.checksum(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize("spoil, message", [
    (lambda raw, d: raw[:len(raw) // 2], "not complete JSON.*truncated"),
    (lambda raw, d: raw.replace(b"Mara", b"Mira", 1), "changed after it was exported"),
    (lambda raw, d: _resealed({**d, "version": 2}), "newer storyloom.*version 2"),
    (lambda raw, d: _resealed({**d, "steps": [{**d["steps"][0], "parent": 3}] + d["steps"][1:]}),
     "damaged: step 1 has parent 3"),
    (lambda raw, d: _resealed({**d, "memories": [{**d["memories"][0], "kind": "gossip"}] + d["memories"][1:]}),
     "damaged: memory entry 1: kind is 'gossip', not one of"),
    (lambda raw, d: _resealed({k: v for k, v in d.items() if k != "playthroughs"}),
     "damaged: the backup has no 'playthroughs'"),
    (lambda raw, d: _resealed({**d, "steps": [{**d["steps"][0], "trace": {"retrieved": ["x", 3]}}] + d["steps"][1:]}),
     r"damaged: step 1: trace\.retrieved\[0\] is not an object"),
    (lambda raw, d: _resealed({**d, "story": {**d["story"], "title": "  "}}), "damaged: story: title is empty"),
    (lambda raw, d: b"[" * 100_000, "not a storyloom backup"),
    (lambda raw, d: raw.replace(b'"Mara', b'"\\ud800Mara', 1), "not valid Unicode"),
    (lambda raw, d: b"[1, 2, 3]", "not a storyloom backup"),
    (lambda raw, d: b"\xff\xfe\x00garbage", "not UTF-8"),
])
def test_bad_backups_are_refused_and_nothing_is_written(backup_bytes, db, embedder, spoil, message):
    manuscripts = make_service(db, embedder)[0].manuscripts
    manuscripts.import_file("story.json", backup_bytes)  # the database holds a story already
    before = counts(db)
    with pytest.raises(InvalidInput, match=message):
        manuscripts.import_file("story.json", spoil(backup_bytes, json.loads(backup_bytes)))
    assert counts(db) == before


def _changed(d: dict, part: str, number: int, **fields) -> dict:
    """The document with `fields` of its step, playthrough or memory entry `number` replaced."""
    items = [dict(item) for item in d[part]]
    items[number - 1].update(fields)
    return {**d, part: items}


def _traced(d: dict, number: int, **fields) -> dict:
    """The document with `fields` of step `number`'s trace replaced."""
    return _changed(d, "steps", number, trace={**d["steps"][number - 1]["trace"], **fields})


def _with_number(document: dict, literal: str) -> bytes:
    """The document, resealed, with `literal` (NaN, Infinity, 1e400) as step 2's seconds, as JSON
    edited by hand holds it: Python's json reads all of these (1e400 as infinity)."""
    spoilt = _changed(document, "steps", 2, seconds=float(literal))
    raw = _resealed(spoilt)
    return raw if literal in ("NaN", "Infinity", "-Infinity") else raw.replace(b"Infinity", literal.encode())


def _scene_under_scene(d: dict) -> dict:
    """A writer's step 6 under the reader's scene 5, and the story's head there."""
    scene = d["steps"][4]
    step = {**scene, "id": 6, "parent": 5, "depth": scene["depth"] + 1, "playthrough": None}
    return {**d, "steps": d["steps"] + [step], "story": {**d["story"], "head": 6}}


# Backups edited by hand and resealed with a checksum of their own: each imported before, and then
# broke the Read or Inspect tab, writing, or a PostgreSQL insert (the story of write_story: steps 1
# to 4 are the writer's, 3 a second version of 2, and 5 is playthrough 1's scene after step 4).
RESEALED = [
    (lambda d: _with_number(d, "NaN"), "step 2: seconds is NaN"),
    (lambda d: _with_number(d, "-Infinity"), "step 2: seconds is -Infinity"),
    (lambda d: _with_number(d, "1e400"), "step 2: seconds is 1e400"),
    (lambda d: _resealed(_traced(d, 5, retrieved=[{**d["steps"][4]["trace"]["retrieved"][0], "score": float("inf")}])),
     r"step 5: trace\.retrieved\[0\]\.score is Infinity"),
    (lambda d: _resealed(_traced(d, 1, calls="the prompt")), r"step 1: trace\.calls is not a list"),
    (lambda d: _resealed(_traced(d, 1, calls=[{"part": "title", "attempt": 1, "output": "x"}])),
     r"step 1: trace\.calls\[0\] has no 'prompt'"),
    (lambda d: _resealed(_traced(d, 2, parts={"premise": {"tokens": "8", "budget": 120}})),
     r"step 2: trace\.parts\.premise\.tokens is not a whole number"),
    (lambda d: _resealed(_traced(d, 2, parts={"<img src=x>": {"tokens": 8, "budget": 120}})),
     r"step 2: trace\.parts has a field '<img src=x>'"),
    (lambda d: _resealed(_traced(d, 5, retrieved=[{"id": 1, "score": "high", "text": "x"}])),
     r"step 5: trace\.retrieved\[0\]\.score is not a number"),
    (lambda d: _resealed(_traced(d, 1, step_id="<b>7</b>")), "step 1: trace has a field 'step_id'"),
    (lambda d: _resealed(_traced(d, 1, decoding=[0.2])), r"step 1: trace\.decoding is not an object"),
    (lambda d: _resealed(_changed(d, "steps", 1, prompt_tokens=2**40)),
     "step 1: prompt_tokens is not a whole number from 0 to 2,147,483,647"),
    (lambda d: _resealed(_changed(d, "steps", 1, plans=["Go on.", " "])), r"step 1: plans\[1\] is empty"),
    (lambda d: _resealed(_changed(d, "playthroughs", 1, choices=[1, 2])),
     r"playthrough 1: choices\[0\] is not text"),
    (lambda d: _resealed(_changed(d, "playthroughs", 1, choices=["Run.", ""])),
     r"playthrough 1: choices\[1\] is empty"),
    (lambda d: _resealed(_changed(d, "playthroughs", 1, start_step=2)),
     "playthrough 1: start_step 2 is not on the path to its head_step 5"),
    (lambda d: _resealed(_changed(d, "playthroughs", 1, start_step=5)),
     "playthrough 1: start_step 5 is not one of the writer's steps"),
    (lambda d: _resealed(_changed(d, "playthroughs", 1, head_step=2)),
     "playthrough 1: head_step 2 is neither its start_step nor one of its scenes"),
    (lambda d: _resealed(_scene_under_scene(d)), "step 6 is the writer's, under step 5 of playthrough 1"),
    (lambda d: _resealed({**d, "story": {**d["story"], "settings": {"decoding": [1.1]}}}),
     r"story: settings\.decoding is not an object"),
    (lambda d: _resealed({**d, "story": {**d["story"], "settings": {"author": 7}}}),
     r"story: settings\.author is not text"),
    (lambda d: _resealed(_changed(d, "steps", 2, paragraph="Mara\x00 climbed.")),
     "step 2: paragraph holds a NUL character"),  # PostgreSQL would fail on it at the insert
]


@pytest.mark.parametrize("spoil, message", RESEALED)
def test_resealed_backups_that_would_break_the_app_are_refused(backup_bytes, db, embedder, spoil, message):
    manuscripts = make_service(db, embedder)[0].manuscripts
    manuscripts.import_file("story.json", backup_bytes)
    before = counts(db)
    with pytest.raises(InvalidInput, match=f"^story.json is damaged: {message}"):
        manuscripts.import_file("story.json", spoil(json.loads(backup_bytes)))
    assert counts(db) == before


def test_a_markdown_draft_becomes_a_story_that_can_go_on(db, embedder):
    service, backend = make_service(db, embedder)
    manuscripts = service.manuscripts
    lines = []
    view = manuscripts.import_file("greyhaven.md", DRAFT.encode(), on_progress=lines.append)
    assert view.title == "The Lighthouse at Greyhaven" and len(view.paragraphs) == 4
    assert view.chapters == ("Chapter One", None, "Chapter Two", None)
    assert view.paragraphs[3].startswith('"It is dated fifty years from now," he said')
    assert "Mara, a lighthouse keeper" in view.short_memory  # written by the model from the draft's end
    assert len(view.plans) == 3 and any("Read 4 paragraphs in 2 chapters" in line for line in lines)
    with db.Session() as s:
        entries = s.scalars(select(MemoryEntry).where(MemoryEntry.story_id == view.id)).all()
        story = s.get(Story, view.id)
        assert story.premise.startswith("Mara kept the light on Greyhaven")
    assert {e.kind for e in entries} == {"paragraph", "summary"}
    assert {e.step_id for e in entries if e.kind == "paragraph"} == set(view.step_ids)
    hits = service.search_memory(view.id, "a bottle with a letter on the shingle", k=2)
    assert "bottle washed up" in hits[0].text
    assert len(service.step(view.id, plan=2).paragraphs) == 5
    exported = manuscripts.export(view.id, "md").data.decode()
    assert exported.startswith("# The Lighthouse at Greyhaven\n\n## Chapter One\n\nMara kept the light")


def test_a_draft_is_imported_even_when_the_model_fails(db, embedder):
    def broken(request):
        raise GenerationFailed("the model is not available")

    service, _ = make_service(db, embedder, override=broken)
    view = service.manuscripts.import_file("notes.txt", b"Chapter 1\n\nShe left the island.\n\nShe came back.\n",
                                            premise="A keeper leaves and returns.")
    assert view.paragraphs == ["She left the island.", "She came back."] and view.plans == []
    assert "could not write the short-term memory" in view.notice
    assert view.short_memory.startswith("From the draft so far: She left the island. She came back.")


@pytest.mark.parametrize("name, raw, message", [
    ("empty.txt", b"", "empty.txt is empty"), ("photo.md", b"\x89PNG\r\n\x1a\n\x00\x00" * 50, "binary"),
    ("book.pdf", b"%PDF-1.7", "takes a storyloom .json backup or a .md or .txt draft"),
])
def test_bad_drafts_change_nothing(db, embedder, name, raw, message):
    service, backend = make_service(db, embedder)
    with pytest.raises(InvalidInput, match=message):
        service.manuscripts.import_file(name, raw)
    assert counts(db) == (0, 0, 0, 0) and backend.requests == []


def test_a_draft_keeps_its_author_and_long_headings_are_cut_with_a_notice(db, embedder):
    service, _ = make_service(db, embedder)
    manuscripts = service.manuscripts
    heading = "The " + "very " * 100 + "long chapter"
    view = manuscripts.import_file("a.md", f"# Title\n\n*by Ann Wren*\n\n## {heading}\n\nShe left.\n".encode())
    assert view.chapters[0].endswith("…") and len(view.chapters[0]) <= 200
    assert "Chapter title" in view.notice and "was cut to 200 characters" in view.notice
    assert manuscripts.manuscript(view.id).author == "Ann Wren"
    assert b"*by Ann Wren*" in manuscripts.export(view.id, "md").data
    again = manuscripts.import_file("copy.json", manuscripts.export(view.id, "json").data)  # its backup imports
    assert again.chapters == view.chapters


def test_odd_titles_make_safe_file_names_and_stay_in_the_document(db, embedder):
    service, _ = make_service(db, embedder)
    manuscripts = service.manuscripts
    view = manuscripts.import_file("x.md", b"# ../../etc/passwd \xf0\x9f\xa6\x8a\n\nA fox came to the door.\n")
    assert view.title == "../../etc/passwd 🦊"
    for fmt in ("md", "txt", "epub", "docx", "pdf", "json"):
        done = manuscripts.export(view.id, fmt)
        assert done.filename == f"etc passwd.{fmt}" and done.data
    assert b"# ../../etc/passwd" in manuscripts.export(view.id, "md").data
    with pytest.raises(InvalidInput, match="unknown format 'rtf'"):
        manuscripts.export(view.id, "rtf")
