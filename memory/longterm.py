"""LongTermMemory: entries in the database, vectors in a FAISS index per story, kept in step.

Changes happen inside the caller's transaction and bump the story's memory_version. An
index remembers the version it reflects; before each search it compares that number with
the database's (one small query) and, when they differ, catches up by diffing entry ids
and revisions and loading only the vectors it lacks. So an index that is absent (a new
process) or behind (another process wrote, or this one died between commit and update)
is rebuilt or repaired from the stored vectors, never by re-embedding."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from memory.embedder import Embedder
from memory.index import VectorIndex, gpu_count
from memory.lexical import STOP_WORDS, LexicalIndex
from memory.retrieval import CONTEXT_WEIGHT, Candidates, Hit, Query, fuse
from storage import repo
from common.errors import InvalidInput, NotFound, StoryloomError
from storage.models import MEMORY_KINDS, MemoryEntry


@dataclass(frozen=True)
class Lore:
    """An entry that enters the prompt by rule, not by similarity: pinned, or a lore entry
    whose trigger key appears in the plan or the recent text."""

    entry_id: int
    text: str
    kind: str
    reason: str  # "pinned" or "key: NAME"


@dataclass(frozen=True)
class Gathered:
    hits: list[Hit]  # found by search, best first
    lore: list[Lore]  # in by rule
    left_out: int  # entries that matched a rule but found no room


MAX_KEYS = 20
MAX_KEY_CHARS = 60


@dataclass(frozen=True)
class Embedded:
    """Texts with their vectors, computed before a transaction opens (embedding takes time)."""

    texts: list[str]
    vectors: np.ndarray


@dataclass
class _StoryIndex:
    version: int
    revisions: dict[int, int]
    index: VectorIndex
    words: LexicalIndex


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


class LongTermMemory:
    def __init__(self, embedder: Embedder, use_gpu: bool | None = None):
        self.embedder = embedder
        self.use_gpu = use_gpu
        self._gpu_resources = None  # one faiss.StandardGpuResources shared by every story's index
        self._indexes: dict[int, _StoryIndex] = {}
        self._lock = threading.Lock()

    # -- changes (inside the caller's transaction) ---------------------------------

    def embed(self, texts: list[str]) -> Embedded:
        texts = [_clean(t) for t in texts]
        return Embedded(texts, self.embedder.encode(texts))

    def add(self, session: Session, story_id: int, texts: list[str] | Embedded, kind: str, *,
            step_id: int | None = None, pinned: bool = False, keys: list[str] | None = None) -> list[MemoryEntry]:
        """New entries in the caller's transaction. Pass `embed(texts)` made beforehand to keep
        the model's time out of the transaction."""
        if kind not in MEMORY_KINDS:
            raise InvalidInput(f"unknown memory kind {kind!r}; use one of {', '.join(MEMORY_KINDS)}")
        keys = clean_keys(keys or [])
        embedded = texts if isinstance(texts, Embedded) else self.embed(texts)
        entries = [MemoryEntry(story_id=story_id, step_id=step_id, kind=kind, text=t, pinned=pinned,
                               keys=keys, vector=_blob(v), revision=0)
                   for t, v in zip(embedded.texts, embedded.vectors)]
        session.add_all(entries)
        repo.bump_memory_version(session, story_id)
        session.flush()
        return entries

    def add_many(self, session: Session, story_id: int, embedded: Embedded, kind: str,
                 step_ids: list[int | None]) -> None:
        """Many entries at once, each from its own step (an imported draft's paragraphs)."""
        if kind not in MEMORY_KINDS:
            raise InvalidInput(f"unknown memory kind {kind!r}; use one of {', '.join(MEMORY_KINDS)}")
        if len(step_ids) != len(embedded.texts):
            raise ValueError("one step id per text")
        session.add_all([MemoryEntry(story_id=story_id, step_id=step_id, kind=kind, text=t, vector=_blob(v),
                                     revision=0, keys=[])
                         for t, v, step_id in zip(embedded.texts, embedded.vectors, step_ids)])
        repo.bump_memory_version(session, story_id)
        session.flush()

    def update(self, session: Session, entry_id: int, text: str | Embedded | None = None, *,
               keys: list[str] | None = None, pinned: bool | None = None, story_id: int | None = None) -> MemoryEntry:
        """Change an entry's text (re-embedded: pass `embed([text])` made beforehand to keep the
        model's time out of the transaction), trigger keys or pin. With story_id, an entry of
        another story is not found."""
        entry = self._entry(session, entry_id, story_id)
        if text is not None:
            embedded = text if isinstance(text, Embedded) else self.embed([text])
            if embedded.texts[0] != entry.text:
                entry.text, entry.vector = embedded.texts[0], _blob(embedded.vectors[0])
                entry.revision += 1
        if keys is not None:
            entry.keys = clean_keys(keys)
        if pinned is not None:
            entry.pinned = pinned
        repo.bump_memory_version(session, entry.story_id)
        session.flush()
        return entry

    def delete(self, session: Session, entry_id: int, story_id: int | None = None) -> None:
        entry = self._entry(session, entry_id, story_id)
        session.delete(entry)
        repo.bump_memory_version(session, entry.story_id)
        session.flush()

    def mark_stale(self, session: Session, story_id: int, step_id: int, kinds: tuple[str, ...] = MEMORY_KINDS) -> int:
        """Mark the entries of these kinds derived from a step as stale (kept for reading, never retrieved)."""
        result = session.execute(
            update(MemoryEntry)
            .where(MemoryEntry.story_id == story_id, MemoryEntry.step_id == step_id, MemoryEntry.stale.is_(False),
                   MemoryEntry.kind.in_(kinds))
            .values(stale=True).execution_options(synchronize_session=False))
        repo.bump_memory_version(session, story_id)
        return result.rowcount

    # -- retrieval ------------------------------------------------------------------

    def search(self, session: Session, story_id: int, query: str | Query, k: int, *,
               only_steps: set[int] | None = None, exclude_steps: set[int] = frozenset(),
               exclude_ids: set[int] = frozenset()) -> list[Hit]:
        """The k entries that best answer `query`, best first.

        Three rankings are fused by reciprocal rank (score = sum of weight / (RRF_K + rank)): the
        query text by meaning (cosine, FAISS), the query text by words (BM25), and the query's
        context by meaning at CONTEXT_WEIGHT. A hit that says the same as a better one (cosine of
        the two entries at least DUPLICATE, or the same words) is left out, so k hits are k things.

        only_steps keeps entries from those steps (the current branch) plus the writer's own
        entries (no step); exclude_steps drops entries of those steps; exclude_ids drops entries
        already in the prompt by another way (pinned, lore). Lore with trigger keys enters by its
        keys only (by_rule), never by meaning: the person decides when it applies."""
        query = Query(query) if isinstance(query, str) else query
        if k <= 0 or not query.text.strip():
            return []
        asked = [query.text] + ([query.context] if query.context.strip() else [])
        # one call each: in one batch the short plan would be padded to the long recent text's length
        vectors = np.concatenate([self.embedder.encode([text]) for text in asked])
        found = Candidates(session, story_id, max(4 * k, 32), only_steps, exclude_steps, exclude_ids)
        with self.current_index(session, story_id) as index:
            rankings = [(1.0, found.ranking(lambda n: index.index.search(vectors[0], n))),
                        (1.0, found.ranking(lambda n: index.words.search(query.text, n)))]
            if len(asked) > 1:
                rankings.append((CONTEXT_WEIGHT, found.ranking(lambda n: index.index.search(vectors[1], n))))
        words = {entry_id: score for entry_id, _, score in rankings[1][1]}
        return found.distinct_hits(fuse(rankings), vectors[0], words, k)

    def gather(self, session: Session, story_id: int, query: Query, k: int, *, lore_limit: int,
               only_steps: set[int] | None = None, exclude_steps: set[int] = frozenset()) -> Gathered:
        """What a prompt gets from long-term memory for `query`: the entries that enter by rule
        (pinned, or lore with a key in the query's text or context), at most lore_limit, and the
        k best others by search; entries matched by rule are never searched for again."""
        matched = self.by_rule(session, story_id, f"{query.text}\n{query.context}", only_steps=only_steps)
        hits = self.search(session, story_id, query, k, only_steps=only_steps, exclude_steps=exclude_steps,
                           exclude_ids={e.entry_id for e in matched})
        return Gathered(hits, matched[:lore_limit], len(matched) - len(matched[:lore_limit]))

    def by_rule(self, session: Session, story_id: int, text: str, *, only_steps: set[int] | None = None) -> list[Lore]:
        """The entries that enter the prompt whatever the query: pinned ones first, then lore
        entries with a trigger key in `text` (whole words, any case), oldest first."""
        found: list[Lore] = []
        for e in repo.memory_entries(session, story_id, rule_based=True, live=True, vectors=False):
            if e.stale or not (only_steps is None or e.step_id is None or e.step_id in only_steps):
                continue
            if e.pinned:
                found.append(Lore(e.id, e.text, e.kind, "pinned"))
            elif e.kind == "lore":
                key = next((k for k in e.keys if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text, re.IGNORECASE)),
                           None)
                if key:
                    found.append(Lore(e.id, e.text, e.kind, f"key: {key}"))
        found.sort(key=lambda lore: lore.reason != "pinned")  # stable: pinned first, each group oldest first
        return found

    def mark_retrieved(self, session: Session, ids: list[int]) -> None:
        if ids:
            session.execute(update(MemoryEntry).where(MemoryEntry.id.in_(list(ids)))
                            .values(last_retrieved_at=datetime.now(timezone.utc))
                            .execution_options(synchronize_session=False))

    # -- keeping the index in step ------------------------------------------------------

    @contextmanager
    def current_index(self, session: Session, story_id: int) -> Iterator[_StoryIndex]:
        """The story's index, brought up to date and left unchanged by other threads until the block ends."""
        with self._lock:
            yield self.sync(session, story_id)

    def sync(self, session: Session, story_id: int) -> _StoryIndex:
        """The story's index, brought up to the database's memory_version. Call under the lock
        (current_index holds it)."""
        version = repo.memory_version(session, story_id)  # read first: entries can only be newer
        current = self._indexes.get(story_id)
        if current is not None and current.version == version:
            return current
        try:
            return self._catch_up(session, story_id, current, version)
        except BaseException:  # an index half caught up is dropped, and rebuilt from the database next time
            self._indexes.pop(story_id, None)
            raise

    def _catch_up(self, session: Session, story_id: int, current: _StoryIndex | None, version: int) -> _StoryIndex:
        if current is None:
            current = _StoryIndex(-1, {}, self._new_index(), LexicalIndex())
        wanted = repo.memory_revisions(session, story_id)
        changed = [i for i, r in wanted.items() if current.revisions.get(i) != r]
        gone = [i for i in current.revisions if i not in wanted]
        current.index.remove(gone + [i for i in changed if i in current.revisions])
        current.words.remove(gone)
        rows = repo.memory_vectors(session, changed)
        if any(len(blob) != 4 * current.index.dim for _, blob, _ in rows):
            raise StoryloomError(f"story {story_id}'s memory was embedded by a different model than the one "
                                 f"configured now ({current.index.dim} dimensions); use the same embedder")
        if rows:
            ids = np.array([i for i, _, _ in rows], dtype=np.int64)
            current.index.add(ids, np.stack([np.frombuffer(b, dtype=np.float32) for _, b, _ in rows]))
            current.words.add(ids, [text for _, _, text in rows])
        current.revisions = wanted
        current.version = version
        self._indexes[story_id] = current
        return current

    def _new_index(self) -> VectorIndex:
        if self.use_gpu is None:
            self.use_gpu = gpu_count() > 0
        if self.use_gpu and self._gpu_resources is None:
            import faiss

            self._gpu_resources = faiss.StandardGpuResources()
        return VectorIndex(self.embedder.dim, self.use_gpu, self._gpu_resources)

    def _entry(self, session: Session, entry_id: int, story_id: int | None = None) -> MemoryEntry:
        entry = repo.row(session, MemoryEntry, entry_id)
        if entry is None or (story_id is not None and entry.story_id != story_id):
            raise NotFound(f"no memory entry with id {entry_id}" + (f" in story {story_id}" if story_id else ""))
        return entry


def _clean(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidInput("a memory entry cannot be empty")
    return text


def clean_keys(keys: list[str]) -> list[str]:
    """Lore trigger keys, checked: a key must be a name or a distinctive word, since a key found in
    every paragraph would put its entry in every prompt."""
    cleaned: list[str] = []
    for key in keys:
        key = " ".join(str(key).split())
        if not key:
            continue
        if not re.search(r"\w", key):
            raise InvalidInput(f"the lore key {key!r} has no letters or digits; use a name or a distinctive word")
        if len(key) < 2 or key.lower() in STOP_WORDS:  # words in almost every paragraph
            raise InvalidInput(f"the lore key {key!r} would match almost every paragraph; "
                               "use a name or a distinctive word")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidInput(f"the lore key {key[:20]!r}… has {len(key)} characters; the limit is {MAX_KEY_CHARS}")
        if key.lower() not in (k.lower() for k in cleaned):
            cleaned.append(key)
    if len(cleaned) > MAX_KEYS:
        raise InvalidInput(f"an entry has {len(cleaned)} lore keys; the limit is {MAX_KEYS}")
    return cleaned


def chunks(text: str, max_words: int = 40) -> list[str]:
    """Split text into pieces of at most about max_words, at sentence ends where possible."""
    sentences = re.split(r"(?<=[.!?…])\s+", " ".join(text.split()))
    pieces, current = [], []
    for sentence in sentences:
        if current and len(" ".join(current + [sentence]).split()) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        pieces.append(" ".join(current))
    return [p for p in pieces if p]
