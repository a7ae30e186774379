"""What long-term memory costs, measured in one process.

    .venv/bin/python benchmarks/memory_bench.py [--lengths 100,300,1000,3000,10000] [--sizes 10000,100000,1000000]

1. Retrieval per step against story length, storyloom versus RecurrentGPT's way.
   storyloom, as a step does it: the current branch's step ids (a recursive query), pinned and
   lore entries, then the fused search (two query embeddings, FAISS, BM25, the database).
   Stored entries are the filler text in 40-word chunks (real text, so BM25 does real work);
   their vectors are random unit vectors, since search cost does not depend on the values
   and embedding 30,000 chunks first would only make the benchmark slow. Filing a step (embed
   its chunks and summary, write them, update the indexes) is timed too.
   RecurrentGPT: every stored paragraph encoded again with the same sentence-transformers
   model, then cosine top-k, at every step.
2. The vector index alone at 10k, 100k and 1M entries of 384 dimensions: search latency p50
   and p95 (one query at a time, top 8), recall@8 against exact search, bytes per entry
   (serialized, and growth of the process's resident memory). Vectors: real MiniLM embeddings
   of the filler, mixed in pairs and scattered (cosine about 0.8 to their centre), so that
   they cluster the way passages of a story do.

Prints tables and writes benchmarks/results/memory_bench.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.longstory import FACTS  # noqa: E402

DIM = 384


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def paragraphs(count: int) -> list[str]:
    """`count` filler paragraphs, all the shipped texts give, repeated when the story is longer."""
    from benchmarks.longstory import gatsby_paragraphs, wikitext_paragraphs

    available = gatsby_paragraphs() + wikitext_paragraphs()
    return [available[i % len(available)] for i in range(count)]


@dataclass
class GrowingStory:
    """The story part 1 measures: grown to each length in turn, its vectors random."""

    db: Any
    memory: Any
    embedder: Any
    story_id: int
    folder: Path
    texts: list[str]
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    step_ids: list[int] = field(default_factory=list)

    def grow(self, length: int) -> None:
        """The story grows to `length` paragraphs (vectors: random)."""
        from memory.longterm import Embedded, chunks
        from storage import repo

        with self.db.Session.begin() as session:
            story = repo.get_story(session, self.story_id)
            for text in self.texts[len(self.step_ids):length]:
                parent = repo.get_step(session, self.step_ids[-1]) if self.step_ids else None
                step = repo.add_step(session, story, parent=parent, paragraph=text, short_memory="", plans=[])
                pieces = chunks(text)
                vectors = unit(self.rng.normal(size=(len(pieces), DIM)))
                self.memory.add(session, self.story_id, Embedded(pieces, vectors), "paragraph", step_id=step.id)
                self.step_ids.append(step.id)

    def catch_up(self) -> tuple[int, float]:
        """(entries, seconds) of bringing the index up to the database."""
        with self.db.Session() as session:
            started = time.perf_counter()
            with self.memory.current_index(session, self.story_id) as index:
                entries = len(index.revisions)
            return entries, time.perf_counter() - started

    def retrievals(self, length: int) -> list[float]:
        """Seconds of each fact's retrieval, as a step after paragraph `length` asks."""
        from memory.retrieval import Query
        from storage import repo

        recent = " ".join(self.texts[length - 2:length])

        def retrieve(plan: str) -> None:
            with self.db.Session() as session:
                branch = repo.path_ids(session, self.step_ids[-1])
                self.memory.gather(session, self.story_id, Query(plan, recent), 4, lore_limit=8, only_steps=branch,
                                   exclude_steps=set(self.step_ids[-2:]))

        retrieve(FACTS[0][1])  # warm
        ours = []
        for _, plan in FACTS:
            started = time.perf_counter()
            retrieve(plan)
            ours.append(time.perf_counter() - started)
        return ours

    def filings(self) -> list[float]:
        """Seconds of filing one more step: embed its chunks and summary, write them, bring the index
        up to date; each is taken out again, so that the story stays the same."""
        from memory.longterm import chunks

        filing = []
        for text in self.texts[:3]:
            started = time.perf_counter()
            pieces = chunks(text)
            embedded = self.memory.embed(pieces + ["A summary of the story so far, rewritten after this step."])
            with self.db.Session.begin() as session:
                added = [e.id for e in self.memory.add(session, self.story_id, embedded, "paragraph")]
            self.catch_up()
            filing.append(time.perf_counter() - started)
            with self.db.Session.begin() as session:
                for entry_id in added:
                    self.memory.delete(session, entry_id)
        return filing

    def recurrentgpt(self, length: int) -> list[float]:
        """Seconds of RecurrentGPT's way: encode every stored paragraph again, then cosine top-k."""
        theirs = []
        for plan in [FACTS[1][1]] * (3 if length <= 1000 else 1):
            started = time.perf_counter()
            stored = self.embedder.encode(self.texts[:length - 1])
            query = self.embedder.encode([plan])[0]
            np.argsort(-(stored @ query))[:4]
            theirs.append(time.perf_counter() - started)
        return theirs


def growing_story(longest: int) -> GrowingStory:
    from memory.embedder import Embedder
    from memory.longterm import LongTermMemory
    from storage import repo
    from storage.db import open_database, sqlite_url

    embedder = Embedder()
    folder = Path(tempfile.mkdtemp(prefix="storyloom-membench-"))
    db = open_database(sqlite_url(folder / "bench.db"))
    memory = LongTermMemory(embedder, use_gpu=False)
    with db.Session.begin() as session:
        story_id = repo.create_story(session, title="Bench", premise="A long story.").id
    return GrowingStory(db, memory, embedder, story_id, folder, paragraphs(longest))


def per_step(lengths: list[int], out: dict, save) -> None:
    story = growing_story(max(lengths))
    rows = out.setdefault("per_step", [])
    print(f"{'paragraphs':>10} {'entries':>8} {'storyloom ms':>13} {'filing ms':>10} {'RecurrentGPT ms':>16} "
          f"{'ratio':>8}", flush=True)
    for length in lengths:
        story.grow(length)
        entries, catch_up = story.catch_up()
        ours = story.retrievals(length)
        filing = story.filings()
        theirs = story.recurrentgpt(length)
        row = {"paragraphs": length, "entries": entries, "storyloom_ms": round(1000 * statistics.median(ours), 2),
               "storyloom_p95_ms": round(1000 * sorted(ours)[int(0.95 * len(ours)) - 1], 2),
               "filing_ms": round(1000 * statistics.median(filing), 1),
               "index_catch_up_ms": round(1000 * catch_up, 1),
               "recurrentgpt_ms": round(1000 * statistics.median(theirs), 1),
               "ratio": round(statistics.median(theirs) / statistics.median(ours), 1),
               "db_bytes_per_entry": round((story.folder / "bench.db").stat().st_size / max(entries, 1))}
        rows.append(row)
        save()
        print(f"{length:>10} {entries:>8} {row['storyloom_ms']:>13.1f} {row['filing_ms']:>10.1f} "
              f"{row['recurrentgpt_ms']:>16.1f} {row['ratio']:>8.0f}", flush=True)
    story.db.close()


def clustered(embedder, count: int, rng) -> np.ndarray:
    """Vectors shaped like a story's passages: pairs of real embeddings mixed, then scattered."""
    base = embedder.encode([" ".join(p.split()[:60]) for p in dict.fromkeys(paragraphs(2000))])
    centres = unit(base[rng.integers(0, len(base), 50_000)] + base[rng.integers(0, len(base), 50_000)])
    out = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        out[start:start + n] = unit(centres[rng.integers(0, len(centres), n)]
                                    + 0.04 * rng.normal(size=(n, DIM)).astype(np.float32))
    return out


def index_sizes(sizes: list[int], out: dict, save) -> None:
    import faiss

    from memory.embedder import Embedder
    from memory.index import VectorIndex, probes_for

    rng = np.random.default_rng(1)
    embedder = Embedder()
    data = clustered(embedder, max(sizes) + 200, rng)
    queries, data = data[:200], data[200:]
    rows = out.setdefault("index", [])
    print(f"{'entries':>9} {'kind':>6} {'nprobe':>6} {'p50 ms':>7} {'p95 ms':>7} {'recall@8':>8} "
          f"{'bytes/entry':>11} {'rss/entry':>9} {'build s':>7}", flush=True)
    for size in sizes:
        vectors = data[:size]
        exact = faiss.IndexFlatIP(DIM)
        exact.add(vectors)
        _, truth = exact.search(queries, 8)  # a batch: fast, and exact
        del exact
        before = rss_bytes()
        started = time.perf_counter()
        index = VectorIndex(DIM, use_gpu=False)
        for start in range(0, size, 50_000):  # added the way a story grows, in batches
            index.add(np.arange(start, min(size, start + 50_000)), vectors[start:start + 50_000])
        build = time.perf_counter() - started
        grown = rss_bytes() - before
        serialized = index.serialized_bytes()
        probes = [None] if index.exact else sorted({8, 16, probes_for(index.nlist), 64, 128})
        for nprobe in probes:
            if nprobe:
                index.nprobe = nprobe
            times, found = [], 0
            for query, expected in zip(queries, truth):
                started = time.perf_counter()
                got = index.search(query, 8)
                times.append(time.perf_counter() - started)
                found += len(set(expected) & {i for i, _ in got})
            row = {"entries": size, "kind": "exact" if index.exact else "ivf", "nprobe": nprobe,
                   "nlist": None if index.exact else index.nlist,
                   "default": nprobe is None or nprobe == probes_for(index.nlist),
                   "p50_ms": round(1000 * statistics.median(times), 3),
                   "p95_ms": round(1000 * float(np.percentile(times, 95)), 3),
                   "recall_at_8": round(found / (8 * len(queries)), 4),
                   "serialized_bytes_per_entry": round(serialized / size, 1),
                   "rss_bytes_per_entry": round(grown / size, 1), "build_s": round(build, 1)}
            rows.append(row)
            save()
            print(f"{size:>9} {row['kind']:>6} {str(nprobe or '-'):>6} {row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} "
                  f"{row['recall_at_8']:>8.3f} {row['serialized_bytes_per_entry']:>11.0f} "
                  f"{row['rss_bytes_per_entry']:>9.0f} {row['build_s']:>7.1f}" + ("  (default)" if row["default"] else ""),
                  flush=True)
        del index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="100,300,1000,3000,10000", help="story lengths; empty: skip part 1")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--out", default="benchmarks/results/memory_bench.json")
    args = ap.parse_args()
    from app.wiring import quiet_libraries

    quiet_libraries()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": f"{os.cpu_count()} cores"}

    def save() -> None:
        out_path.write_text(json.dumps(out, indent=1))

    if args.lengths:
        per_step(sorted(int(n) for n in args.lengths.split(",")), out, save)
    if args.sizes:
        index_sizes(sorted(int(n) for n in args.sizes.split(",")), out, save)
    print(f"written to {out_path}")


if __name__ == "__main__":
    main()
