"""Tokens per second of the same model written two ways: in this process (the local transformers
backend) and through `transformers serve` (the OpenAI-compatible backend, completions API, the
prompt rendered here), on this machine.

The embedded model is written once as a plain folder with DITTO merged in (`storyloom
model-folder`); both ways load that folder in float32 on the CPU, so they run the same weights.
Each prompt is asked both ways in turn, `--rounds` times, for `--tokens` new tokens, sampled at
temperature 0.8; a reply's tokens are counted with the model's tokenizer. Tokens per second is
the reply's tokens over the whole call, first token included; the first token's delay is
reported apart.

    .venv/bin/python benchmarks/serving_bench.py [--rounds 3] [--tokens 200]

Prints a table and writes benchmarks/results/serving.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.backend import Request  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.local import TransformersBackend, save_folder  # noqa: E402
from generation.remote import OpenAIBackend  # noqa: E402
from tests.conftest import free_port  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "serving.json"
PROMPTS = [
    "Write the opening paragraph of a story about a lighthouse keeper who finds a message in a bottle.",
    "Write a paragraph in which a baker discovers that her bread makes people tell the truth.",
    "Write a paragraph about an astronaut alone on a station who hears a knock on the hull.",
]


def timed(backend, request: Request, tokenizer) -> dict:
    started = time.perf_counter()
    first = None
    text = ""
    for chunk in backend.generate(request):
        if first is None and chunk.strip():
            first = time.perf_counter() - started
        text += chunk
    seconds = time.perf_counter() - started
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return {"tokens": tokens, "seconds": round(seconds, 3), "first_token": round(first or seconds, 3),
            "tokens_per_second": round(tokens / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2"
        model, tokenizer = TransformersBackend(adapter=DEFAULT_ADAPTER, device="cpu", weights="float32").load()
        save_folder(model, tokenizer, folder)
        del model
        local = TransformersBackend(str(folder), device="cpu")
        _, tokenizer = local.load()
        with served(folder, Path(tmp) / "serve.log") as base:
            remote = OpenAIBackend(base, str(folder), api="completions", tokenizer=str(folder), timeout=300)
            ways = {"local": local, "transformers serve": remote}
            rows = measure(ways, tokenizer, args.rounds, args.tokens)

    summary = summarize(rows, list(ways))
    ratio = summary["transformers serve"]["tokens_per_second_median"] / summary["local"]["tokens_per_second_median"]
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()},
              "model": "SmolLM2-135M-Instruct, DITTO merged, float32, CPU", "tokens": args.tokens,
              "summary": summary, "served_over_local": round(ratio, 3), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name:<20} median {s['tokens_per_second_median']:.1f} tokens/s, first token "
              f"{s['first_token_median']:.2f} s")
    print(f"transformers serve / local = {ratio:.2f}; written to {args.out}")


@contextmanager
def served(folder: Path, log_path: Path) -> Iterator[str]:
    """`transformers serve` of the folder on a free port, once it answers: its base URL. Stopped after."""
    port = free_port()
    log = log_path.open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(folder),
                               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                               "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"transformers serve did not start: {log_path.read_text()[-2000:]}")
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def measure(ways: dict, tokenizer, rounds: int, tokens: int) -> list[dict]:
    """Each prompt asked each way in turn, `rounds` times, after one warm-up call each."""
    warm = Request(messages=[{"role": "user", "content": "Say hello."}], max_new_tokens=8)
    for backend in ways.values():  # the first call of each pays for loading and warm-up
        "".join(backend.generate(warm))
    rows = []
    for round_number in range(rounds):
        for prompt in PROMPTS:
            request = Request(messages=[{"role": "user", "content": prompt}], max_new_tokens=tokens,
                              min_new_tokens=tokens, temperature=0.8, repetition_penalty=1.0)
            for name, backend in ways.items():
                row = {"way": name, "round": round_number, "prompt": prompt[:40], **timed(backend, request, tokenizer)}
                rows.append(row)
                print(f"{name:<20} {row['tokens']:4d} tokens {row['seconds']:6.1f} s "
                      f"{row['tokens_per_second']:6.1f} tok/s, first token {row['first_token']:.2f} s",
                      flush=True)
    return rows


def summarize(rows: list[dict], names: list[str]) -> dict[str, dict]:
    summary = {}
    for name in names:
        mine = [r for r in rows if r["way"] == name]
        summary[name] = {"tokens_per_second_median": statistics.median(r["tokens_per_second"] for r in mine),
                         "first_token_median": statistics.median(r["first_token"] for r in mine),
                         "calls": len(mine)}
    return summary


if __name__ == "__main__":
    main()
