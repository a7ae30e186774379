"""The GPU path, checked and measured in one go (benchmarks/gpu_check.sh runs it on a GPU machine):

1. the embedded model loads onto CUDA in bfloat16, with the DITTO adapter, and the batching engine
   gives a greedy row the same tokens in a batch of 8 as alone (bfloat16 rounding may move a few;
   how many rows match is printed, not asserted);
2. faiss-gpu, when installed, puts the memory index on the GPU, and its search agrees with the CPU
   index's;
3. tokens a second of 1 and of 8 rows at once through the engine;
4. steps a minute with 1, 8 and 32 writers, each writing one step (a paragraph, the memory, three
   plans) at the same moment through the local backend (STORYLOOM_MAX_BATCH = the writers).

    python benchmarks/gpu_check.py [--device cuda] [--writers 1 8 32] [--out FILE]

On a machine without a GPU, --device cpu runs the same checks (slowly: use --writers 1 2)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.step_bench import CONTEXTS  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.backend import Decoding  # noqa: E402
from generation.engine import Engine, Job  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402
from generation.recurrence import Writer  # noqa: E402


def model_checks(backend: TransformersBackend) -> dict:
    import torch

    model, tokenizer = backend.load()
    asks = [f"Write a sentence about {thing}." for thing in
            ("the sea", "a lighthouse", "bread", "a map", "the moon", "a storm", "a letter", "a forest")]
    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": a}], tokenize=False,
                                                       add_generation_prompt=True), add_special_tokens=False)["input_ids"]
               for a in asks]
    engine = Engine(model, max_batch=8)
    alone = [list(engine.submit(Job(p, 32))) for p in prompts]
    rows: list = [None] * len(prompts)

    def read(n: int) -> None:
        rows[n] = list(engine.submit(Job(prompts[n], 32)))

    threads = [threading.Thread(target=read, args=(n,)) for n in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = {}
    for width in (1, 8):
        jobs = [Job(prompts[n % len(prompts)], 128, min_new_tokens=128) for n in range(width)]
        started = time.perf_counter()
        outs: list = [None] * width
        threads = [threading.Thread(target=lambda n=n: outs.__setitem__(n, list(engine.submit(jobs[n]))))
                   for n in range(width)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates[f"{width}_rows_tokens_per_second"] = round(sum(map(len, outs)) / (time.perf_counter() - started), 1)
    return {"device": str(model.device), "dtype": str(model.dtype), "adapter_in_use": backend.has_adapter,
            "weights": backend.weights, "cuda": torch.cuda.is_available(),
            "greedy_rows_same_in_a_batch_of_8": sum(a == b for a, b in zip(alone, rows)), **rates}


def index_check() -> dict:
    import numpy as np

    from memory.index import VectorIndex, gpu_count

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors))
    cpu = VectorIndex(384, use_gpu=False)
    cpu.add(ids, vectors)
    out = {"faiss_gpus": gpu_count()}
    if not out["faiss_gpus"]:
        return {**out, "gpu_index": "faiss-gpu not installed (faiss-cpu has no GPUs): not checked"}
    gpu = VectorIndex(384, use_gpu=True)
    gpu.add(ids, vectors)
    queries = vectors[:50] + 0.01 * rng.normal(size=(50, 384)).astype(np.float32)
    same = sum([i for i, _ in cpu.search(q, 4)] == [i for i, _ in gpu.search(q, 4)] for q in queries)
    started = time.perf_counter()
    for q in queries:
        gpu.search(q, 4)
    return {**out, "gpu_index": type(gpu._gpu).__name__ if gpu._gpu is not None else None,
            "gpu_search_agrees_with_cpu": f"{same}/{len(queries)}",
            "gpu_search_ms": round(1000 * (time.perf_counter() - started) / len(queries), 3)}


def steps_a_minute(device: str, writers: int) -> dict:
    backend = TransformersBackend(device=device, adapter=DEFAULT_ADAPTER, max_batch=writers)
    backend.load()
    Writer(backend, decoding=Decoding()).step(CONTEXTS[0])  # warm-up
    go = threading.Barrier(writers)
    seconds: list[float] = []
    failures: list[str] = []

    def write(n: int) -> None:
        go.wait()
        started = time.perf_counter()
        try:
            Writer(backend, decoding=Decoding()).step(CONTEXTS[n % len(CONTEXTS)])
            seconds.append(time.perf_counter() - started)
        except Exception as e:  # counted and reported: the run measures, it does not stop
            failures.append(f"{type(e).__name__}: {e}")

    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"writers": writers, "steps": len(seconds), "failures": failures, "wall_seconds": round(wall, 1),
            "steps_per_minute": round(60 * len(seconds) / wall, 2),
            "median_step_seconds": round(statistics.median(seconds), 1) if seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu_check.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    result = {"machine": platform.platform(), "model": model_checks(TransformersBackend(device=args.device,
                                                                                        adapter=DEFAULT_ADAPTER))}
    print(json.dumps(result["model"]), flush=True)
    result["index"] = index_check()
    print(json.dumps(result["index"]), flush=True)
    result["writers"] = []
    for n in args.writers:
        result["writers"].append(steps_a_minute(args.device, n))
        print(json.dumps(result["writers"][-1]), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    if any(w["failures"] for w in result["writers"]) or (args.device == "cuda" and not result["model"]["cuda"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
