"""Recall of long-term memory on a synthetic long story: 20 facts planted in the first 20 steps,
then, as the story grows, each fact asked for by a plan that needs it, the way a step asks
(plan and recent text together, the current branch, the last paragraphs left out since they
are in the prompt already). A fact is recalled when an entry holding it is among the top k.

    .venv/bin/python benchmarks/memory_recall.py [--lengths 25,50,100,300,600,1000,1350] [--k 5]

Prints a table (recall@k per story length, for several ways of asking) and writes
benchmarks/results/memory_recall.json. Real SQLite file, real embedder, real FAISS."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.longstory import FACTS, story  # noqa: E402

# storyloom's retrieval (plan by meaning and by words, recent text by meaning, fused), and single
# rankings for comparison.
WAYS = ["storyloom", "meaning, plan", "meaning, plan+recent", "words, plan"]


class LongStory:
    """A story written straight into storage and memory, paragraph by paragraph, without a model."""

    def __init__(self, db, memory):
        from storage import repo

        self.db, self.memory, self.repo = db, memory, repo
        with db.Session.begin() as session:
            self.story_id = repo.create_story(session, title="Recall", premise="A synthetic long story.").id
        self.step_ids: list[int] = []
        self.paragraphs: list[str] = []

    def extend(self, paragraphs: list[str], batch: int = 200) -> None:
        from memory.longterm import Embedded, chunks

        for start in range(0, len(paragraphs), batch):
            part = paragraphs[start:start + batch]
            pieces = [chunks(p) for p in part]
            embedded = self.memory.embed([c for cs in pieces for c in cs])
            at = 0
            with self.db.Session.begin() as session:
                story = self.repo.get_story(session, self.story_id)
                for paragraph, cs in zip(part, pieces):
                    parent = self.repo.get_step(session, self.step_ids[-1]) if self.step_ids else None
                    step = self.repo.add_step(session, story, parent=parent, paragraph=paragraph, short_memory="",
                                              plans=[])
                    self.memory.add(session, self.story_id, Embedded(embedded.texts[at:at + len(cs)],
                                                                     embedded.vectors[at:at + len(cs)]),
                                    "paragraph", step_id=step.id)
                    at += len(cs)
                    self.step_ids.append(step.id)
            self.paragraphs += part

    def recall(self, k: int = 5, way: str = "storyloom") -> tuple[float, list[int]]:
        """Recall@k over the facts planted so far, asked as a step after the last paragraph would
        ask; also the rank (1-based, 0 for missed) of each fact. `way` is one of WAYS."""
        from memory.retrieval import Query

        recent = " ".join(self.paragraphs[-2:])  # the service's recent text for paragraphs this short
        shown = set(self.step_ids[-2:])
        ranks = []
        with self.db.Session() as session:
            for fact, plan in FACTS[:len(self.paragraphs) - 2]:
                if way == "storyloom":
                    texts = [h.text for h in self.memory.search(session, self.story_id, Query(plan, recent), k,
                                                                only_steps=set(self.step_ids), exclude_steps=shown)]
                else:
                    texts = self._one_ranking(session, way, plan, recent, k, shown)
                ranks.append(next((n for n, text in enumerate(texts, 1) if fact in text), 0))
        return (sum(r > 0 for r in ranks) / len(ranks) if ranks else 0.0), ranks

    def _one_ranking(self, session, way: str, plan: str, recent: str, k: int, shown: set[int]) -> list[str]:
        """A single ranking, for comparison: by meaning (of the plan, or of plan and recent text as one
        text, as storyloom asked before) or by words."""
        with self.memory.current_index(session, self.story_id) as index:
            if way == "words, plan":
                raw = index.words.search(plan, 4 * k + 64)
            else:
                text = plan if way == "meaning, plan" else f"{plan} {recent}"
                raw = index.index.search(self.memory.embedder.encode([text])[0], 4 * k + 64)
        entries = {e.id: e for e in self.repo.memory_entries(session, self.story_id, [i for i, _ in raw])}
        return [entries[i].text for i, _ in raw if entries[i].step_id not in shown][:k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="25,50,100,300,600,1000,1350")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/memory_recall.json")
    args = ap.parse_args()
    lengths = sorted(int(n) for n in args.lengths.split(","))

    from memory.embedder import Embedder
    from memory.longterm import LongTermMemory
    from storage import repo
    from storage.db import open_database, sqlite_url

    db = open_database(sqlite_url(Path(tempfile.mkdtemp(prefix="storyloom-recall-")) / "recall.db"))
    memory = LongTermMemory(Embedder(), use_gpu=False)
    long = LongStory(db, memory)
    paragraphs = story(lengths[-1])
    rows = []
    print(f"{'paragraphs':>10} {'entries':>8} " + " ".join(f"{name:>22}" for name in WAYS), flush=True)
    for length in lengths:
        started = time.monotonic()
        long.extend(paragraphs[len(long.paragraphs):length])
        row = {"paragraphs": length, "build_s": round(time.monotonic() - started, 1)}
        for name in WAYS:
            recall, ranks = long.recall(args.k, name)
            row[name] = {"recall": round(recall, 3), "ranks": ranks}
        with db.Session() as session:
            row["entries"] = len(repo.memory_revisions(session, long.story_id))
        rows.append(row)
        print(f"{length:>10} {row['entries']:>8} " + " ".join(f"{row[name]['recall']:>22.2f}" for name in WAYS),
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"k": args.k, "facts": len(FACTS), "ways": WAYS, "rows": rows},
                              indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
