"""What batching could gain: tokens per second of the embedded model (DITTO merged, CPU) when
`generate` writes 1, 4 or 8 replies at once, against one at a time, in this process.

The app today runs one generation at a time (concurrent steps take turns), so its throughput
does not grow with the number of writers (benchmarks/concurrency_bench.py). This probe measures
the ceiling a batched backend could reach on this machine: the same prompts (about 160 tokens,
left-padded), 100 sampled tokens each, after one untimed warm-up call per batch size.

    .venv/bin/python benchmarks/batching_probe.py [--sizes 1 4 8] [--tokens 100]

Prints a table and writes benchmarks/results/batching.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "batching.json"
PROMPT = ("Write the next paragraph of a story about keeper number {n}, who finds a letter from the future "
          "on the shore of a grey island. ")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args()

    model, tokenizer = TransformersBackend(adapter=DEFAULT_ADAPTER, weights="float32").load()
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for size in args.sizes:
        batch = tokenizer([PROMPT.format(n=n) * 6 for n in range(size)], return_tensors="pt", padding=True)
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=pad)
            started = time.perf_counter()
            model.generate(**batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=True,
                           temperature=0.8, top_p=0.95, pad_token_id=pad)
            seconds = time.perf_counter() - started
        rows.append({"batch": size, "prompt_tokens": batch["input_ids"].shape[1], "new_tokens": size * args.tokens,
                     "seconds": round(seconds, 2), "tokens_per_second": round(size * args.tokens / seconds, 1)})
    base = rows[0]["tokens_per_second"]
    print("| batch | new tokens | seconds | tokens/s | × one at a time |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        row["vs_first"] = round(row["tokens_per_second"] / base, 2)
        print(f"| {row['batch']} | {row['new_tokens']} | {row['seconds']} | {row['tokens_per_second']} | "
              f"{row['vs_first']} |")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "torch_threads": torch.get_num_threads()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
