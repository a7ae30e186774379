"""How one search of long-term memory ranks, fuses and de-duplicates entries: what it is asked
(Query), what it returns (Hit), and the entries it loads on the way (Candidates)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from storage import repo
from storage.models import MemoryEntry


@dataclass(frozen=True)
class Hit:
    entry_id: int
    score: float  # the fused rank score that ordered the hits
    text: str
    kind: str
    step_id: int | None
    cosine: float = 0.0  # similarity of meaning to the query text
    words: float = 0.0  # BM25 score of the words it shares with the query text (0: none)


@dataclass(frozen=True)
class Query:
    """What a step asks long-term memory: `text` (the plan), by meaning and by words, and
    `context` (the recent text), by meaning, with less weight."""

    text: str
    context: str = ""


# Reciprocal rank fusion: a ranking's say in the score is weight / (RRF_K + rank). A small RRF_K lets
# the top of each ranking count; CONTEXT_WEIGHT keeps the recent text from drowning the plan
# (benchmarks/memory_recall.py measured the choices).
RRF_K = 10
CONTEXT_WEIGHT = 0.5


# Two hits at least this similar (cosine of their vectors) say the same thing: only the better one is kept.
DUPLICATE = 0.95


class Candidates:
    """The entries one search has loaded, and which of them it may return."""

    def __init__(self, session: Session, story_id: int, depth: int, only_steps: set[int] | None,
                 exclude_steps: set[int], exclude_ids: set[int]):
        self.session, self.story_id = session, story_id
        self.depth = depth  # how far down each ranking is read, counting only acceptable entries
        self.only_steps, self.exclude_steps, self.exclude_ids = only_steps, exclude_steps, exclude_ids
        self.loaded: dict[int, MemoryEntry] = {}

    def acceptable(self, entry_id: int) -> bool:
        e = self.loaded.get(entry_id)
        return e is not None and not e.stale and e.id not in self.exclude_ids \
            and e.step_id not in self.exclude_steps and not _keyed(e) \
            and (self.only_steps is None or e.step_id is None or e.step_id in self.only_steps)

    def ranking(self, find: Callable[[int], list[tuple[int, float]]]) -> list[tuple[int, int, float]]:
        """(entry id, rank, score) of the acceptable entries, best first; equal scores share a rank."""
        fetch = self.depth
        while True:  # ask for more until `depth` entries pass the filters or the index is exhausted
            raw = find(fetch)
            missing = [i for i, _ in raw if i not in self.loaded]
            if missing:
                self.loaded.update((e.id, e) for e in repo.memory_entries(self.session, self.story_id, missing))
            good = [(i, score) for i, score in raw if self.acceptable(i)]
            if len(good) >= self.depth or len(raw) < fetch:
                ranked, rank = [], 0
                for n, (i, score) in enumerate(good[:self.depth], 1):
                    rank = rank if n > 1 and score == good[n - 2][1] else n
                    ranked.append((i, rank, score))
                return ranked
            fetch *= 4

    def distinct_hits(self, fused: dict[int, float], asked: np.ndarray, words: dict[int, float], k: int) -> list[Hit]:
        """The k best fused entries, best first, each saying something the better ones do not."""
        cosine = {i: float(np.frombuffer(self.loaded[i].vector, dtype=np.float32) @ asked) for i in fused}
        hits: list[Hit] = []
        kept: list[np.ndarray] = []
        seen: set[str] = set()
        for entry_id in sorted(fused, key=lambda i: (-fused[i], -cosine[i])):
            e = self.loaded[entry_id]
            vector = np.frombuffer(e.vector, dtype=np.float32)
            said = " ".join(re.findall(r"\w+", e.text.lower()))
            if said in seen or any(float(vector @ v) >= DUPLICATE for v in kept):
                continue
            hits.append(Hit(e.id, round(fused[entry_id], 4), e.text, e.kind, e.step_id,
                            round(cosine[entry_id], 4), round(words.get(entry_id, 0.0), 2)))
            kept.append(vector)
            seen.add(said)
            if len(hits) == k:
                break
        return hits


def fuse(rankings: list[tuple[float, list[tuple[int, int, float]]]]) -> dict[int, float]:
    """Reciprocal rank fusion: entry id -> the sum of weight / (RRF_K + rank) over the rankings."""
    fused: dict[int, float] = {}
    for weight, ranked in rankings:
        for entry_id, rank, _ in ranked:
            fused[entry_id] = fused.get(entry_id, 0.0) + weight / (RRF_K + rank)
    return fused


def _keyed(entry: MemoryEntry) -> bool:
    return entry.kind == "lore" and bool(entry.keys)
