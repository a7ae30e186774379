"""The embedder in float32 and in bfloat16, in one process: texts a second on the long story's
chunks (the ones a step files), how close the two vectors of each text are, and recall@5 of the
twenty planted facts at paragraph 300 with each.

    python -m benchmarks.embedder_bench [--texts 1000] [--out benchmarks/results/embedder.json]

bfloat16 pays only where the hardware computes it (AVX512-BF16 or AMX on a CPU): elsewhere it is
emulated and slower, which is why the app's `auto` picks it only there (memory/embedder.py)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=1000, help="chunks of the long story to time")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per dtype (the best is kept)")
    ap.add_argument("--out", default="benchmarks/results/embedder.json")
    args = ap.parse_args()

    import numpy as np

    from benchmarks.longstory import story
    from benchmarks.memory_recall import LongStory
    from memory.embedder import Embedder, native_bfloat16
    from memory.longterm import LongTermMemory, chunks
    from storage.db import open_database, sqlite_url

    paragraphs = story(300)
    texts = [c for p in paragraphs for c in chunks(p)][:args.texts]
    embedders = {dtype: Embedder(dtype=dtype) for dtype in ("float32", "bfloat16")}
    vectors, seconds = {}, {dtype: [] for dtype in embedders}
    for embedder in embedders.values():
        embedder.encode(["a warm-up sentence"])
    for _ in range(args.rounds):  # alternating, so that both meet the same machine
        for dtype, embedder in embedders.items():
            started = time.perf_counter()
            vectors[dtype] = embedder.encode(texts)
            seconds[dtype].append(time.perf_counter() - started)
    cosines = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)

    recall = {}
    folder = Path(tempfile.mkdtemp(prefix="storyloom-embedder-"))
    for dtype, embedder in embedders.items():
        db = open_database(sqlite_url(folder / f"{dtype}.db"))
        try:
            long = LongStory(db, LongTermMemory(embedder, use_gpu=False))
            long.extend(paragraphs)
            recall[dtype] = long.recall(k=5)[0]
        finally:
            db.close()

    rate = {dtype: len(texts) / min(s) for dtype, s in seconds.items()}
    result = {"texts": len(texts), "native_bfloat16": native_bfloat16("cpu"),
              "texts_per_s": {d: round(r, 1) for d, r in rate.items()},
              "bfloat16_speed_ratio": round(rate["bfloat16"] / rate["float32"], 2),
              "cosine_to_float32": {"min": round(float(cosines.min()), 6), "mean": round(float(np.mean(cosines)), 6)},
              "recall_at_5_step_300": recall}
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
