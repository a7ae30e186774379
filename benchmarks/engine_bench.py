"""The batched engine's throughput through the local backend, as the app calls it: 1, 8 and 16
concurrent sampled replies with the app's decoding (the DITTO adapter, the sentence-repetition
guard, repetition penalty 1.1, top-k 50, top-p 0.95), each with its own prompt (eight lengths,
about 60 to 800 tokens, read as part of the time) and its own seed, in float32 and in int8
(STORYLOOM_WEIGHTS), one process. Ratios are against one float32 reply in the same run, each
figure the best of `--rounds`.

    .venv/bin/python benchmarks/engine_bench.py [--tokens 120] [--rounds 2]

Writes benchmarks/results/engine.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.backend import Decoding, Request  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LINE = "The storm came in over the harbour, and the boats pulled at their ropes while the keeper watched. "


def ask(n: int, tokens: int) -> Request:
    content = LINE * (2 + 3 * (n % 8)) + f"Go on with the story, part {n + 1}."
    return Request(messages=[{"role": "user", "content": content}],
                   max_new_tokens=tokens, min_new_tokens=tokens, temperature=0.8, top_p=0.95, seed=n,
                   decoding=Decoding(), repetition_penalty=1.1)


def rate(backend: TransformersBackend, rows: int, tokens: int) -> float:
    """Tokens a second of `rows` replies asked at once (their prompts read included)."""
    failures: list[BaseException] = []

    def reply(n: int) -> None:
        try:
            list(backend.generate(ask(n, tokens)))
        except Exception as e:  # reported below: a failed reply must not pass for a fast one
            failures.append(e)

    threads = [threading.Thread(target=reply, args=(n,)) for n in range(rows)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} of {rows} replies failed: {failures[0]}")
    return rows * tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--out", default=str(RESULTS / "engine.json"))
    args = parser.parse_args()
    backends = {fmt: TransformersBackend(adapter=DEFAULT_ADAPTER, weights=fmt, max_batch=max(args.rows))
                for fmt in ("float32", "int8")}
    for backend in backends.values():
        backend.load()
        list(backend.generate(ask(0, 8)))  # the engine's thread started, its first call paid
    best = {fmt: {rows: 0.0 for rows in args.rows} for fmt in backends}
    for r in range(args.rounds):
        for rows in args.rows:
            for fmt, backend in backends.items():  # alternated, so noise hits both formats alike
                best[fmt][rows] = max(best[fmt][rows], round(rate(backend, rows, args.tokens), 2))
        print(f"round {r + 1}: {best}", flush=True)
    base = best["float32"][args.rows[0]]
    out = {"machine": {"cpus": os.cpu_count()}, "tokens": args.tokens, "rounds": args.rounds,
           "tokens_per_second": best,
           "over_one_float32_row": {fmt: {rows: round(v / base, 2) for rows, v in by.items()}
                                    for fmt, by in best.items()}}
    print("| rows at once | float32 tokens/s | × | int8 tokens/s | × |\n|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        print(f"| {rows} | {best['float32'][rows]} | {best['float32'][rows] / base:.2f} "
              f"| {best['int8'][rows]} | {best['int8'][rows] / base:.2f} |")
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
