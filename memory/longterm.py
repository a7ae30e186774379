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
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from memory.embedder import Embedder
from memory.index import VectorIndex, gpu_count
from storage import repo
from storage.errors import InvalidInput, NotFound, StoryloomError
from storage.models import MEMORY_KINDS, MemoryEntry


@dataclass(frozen=True)
class Hit:
    entry_id: int
    score: float
    text: str
    kind: str
    step_id: int | None


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
        embedded = texts if isinstance(texts, Embedded) else self.embed(texts)
        entries = [MemoryEntry(story_id=story_id, step_id=step_id, kind=kind, text=t, pinned=pinned,
                               keys=list(keys or []), vector=_blob(v), revision=0)
                   for t, v in zip(embedded.texts, embedded.vectors)]
        session.add_all(entries)
        repo.bump_memory_version(session, story_id)
        session.flush()
        return entries

    def update(self, session: Session, entry_id: int, text: str) -> MemoryEntry:
        entry = self._entry(session, entry_id)
        entry.text = _clean(text)
        entry.vector = _blob(self.embedder.encode([entry.text])[0])
        entry.revision += 1
        repo.bump_memory_version(session, entry.story_id)
        session.flush()
        return entry

    def delete(self, session: Session, entry_id: int) -> None:
        entry = self._entry(session, entry_id)
        session.delete(entry)
        repo.bump_memory_version(session, entry.story_id)
        session.flush()

    def mark_stale(self, session: Session, story_id: int, step_id: int) -> int:
        """Mark the entries derived from a step as stale (kept for reading, never retrieved)."""
        result = session.execute(
            update(MemoryEntry)
            .where(MemoryEntry.story_id == story_id, MemoryEntry.step_id == step_id, MemoryEntry.stale.is_(False))
            .values(stale=True).execution_options(synchronize_session=False))
        repo.bump_memory_version(session, story_id)
        return result.rowcount

    # -- retrieval ------------------------------------------------------------------

    def search(self, session: Session, story_id: int, query: str, k: int, *,
               only_steps: set[int] | None = None, exclude_steps: set[int] = frozenset()) -> list[Hit]:
        """The k entries nearest to `query` by meaning, with cosine scores, best first.

        only_steps keeps entries from those steps (the current branch) plus the writer's own
        entries (no step); exclude_steps drops entries of those steps."""
        if k <= 0 or not query.strip():
            return []
        vector = self.embedder.encode([query])[0]
        fetch = max(4 * k, 32)
        while True:  # ask FAISS for more until k entries pass the filters or the index is exhausted
            with self._lock:
                raw = self.sync(session, story_id).index.search(vector, fetch)
            entries = {e.id: e for e in repo.memory_entries(session, story_id, [i for i, _ in raw])}
            hits = [Hit(e.id, score, e.text, e.kind, e.step_id) for e, score in
                    ((entries.get(i), score) for i, score in raw)
                    if e is not None and not e.stale and e.step_id not in exclude_steps
                    and (only_steps is None or e.step_id is None or e.step_id in only_steps)]
            if len(hits) >= k or len(raw) < fetch:
                return hits[:k]
            fetch *= 4

    def mark_retrieved(self, session: Session, hits: list[Hit]) -> None:
        if hits:
            session.execute(update(MemoryEntry).where(MemoryEntry.id.in_([h.entry_id for h in hits]))
                            .values(last_retrieved_at=datetime.now(timezone.utc))
                            .execution_options(synchronize_session=False))

    # -- keeping the index in step ------------------------------------------------------

    def sync(self, session: Session, story_id: int) -> _StoryIndex:
        """The story's index, brought up to the database's memory_version. Call under self._lock."""
        version = repo.memory_version(session, story_id)  # read first: entries can only be newer
        current = self._indexes.get(story_id)
        if current is not None and current.version == version:
            return current
        if current is None:
            current = _StoryIndex(-1, {}, self._new_index())
        wanted = repo.memory_revisions(session, story_id)
        changed = [i for i, r in wanted.items() if current.revisions.get(i) != r]
        gone = [i for i in current.revisions if i not in wanted]
        current.index.remove(gone + [i for i in changed if i in current.revisions])
        rows = repo.memory_vectors(session, changed)
        if any(len(blob) != 4 * current.index.dim for _, blob in rows):
            raise StoryloomError(f"story {story_id}'s memory was embedded by a different model than the one "
                                 f"configured now ({current.index.dim} dimensions); use the same embedder")
        if rows:
            ids = np.array([i for i, _ in rows], dtype=np.int64)
            current.index.add(ids, np.stack([np.frombuffer(b, dtype=np.float32) for _, b in rows]))
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

    def _entry(self, session: Session, entry_id: int) -> MemoryEntry:
        entry = session.get(MemoryEntry, entry_id)
        if entry is None:
            raise NotFound(f"no memory entry with id {entry_id}")
        return entry


def _clean(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidInput("a memory entry cannot be empty")
    return text


def chunks(text: str, max_words: int = 60) -> list[str]:
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
