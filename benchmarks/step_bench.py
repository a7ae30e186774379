"""One writer's step, today's engine against the earlier way, in one process (the embedded model
with DITTO): the time of a step (a paragraph, the short-term memory, three plans) on the same
premises and seeds, three ways: before (STORYLOOM_BATCHING=off: one call after another through
transformers' generate), after (today's defaults: batched, the three plans decode together,
reading their prompt once) and int8 (batched, with STORYLOOM_WEIGHTS=int8). Then the backend's
own overhead: tokens per second of one long reply through the backend (default decoding: the
guard and the repetition penalty) against raw `model.generate` on the same float32 weights,
sampling the same way.

    .venv/bin/python benchmarks/step_bench.py [--premises 3] [--seeds 2] [--tokens 200]

A step that fails (the model gave nothing usable within its tries) is counted as failed for its
way, and the medians, totals and rates compare the steps every way wrote.

Writes benchmarks/results/step.json."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import GenerationFailed  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.backend import Decoding, Request  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402
from generation.recurrence import StepContext, Writer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONTEXTS = [
    StepContext("A lighthouse keeper on a remote island finds a letter from the future.",
                "Mara finds the letter, doubts it, and rows to the wreck it names.",
                "Mara, the keeper, found a letter dated fifty years ahead in her own hand.",
                "She read the letter again under the lamp. The storm had passed, and the harbour lay grey and "
                "flat below the cliffs.", "Mara decides to row out to the reef the letter names."),
    StepContext("A baker in a mountain town discovers that her bread makes people tell the truth.",
                "Ilse learns what her bread does and the mayor wants it.",
                "Ilse noticed that everyone who ate her rye bread told the truth for an hour.",
                "The mayor came in at noon and asked for two loaves. Ilse wrapped them slowly, watching his face.",
                "Ilse refuses to sell the mayor any more bread."),
    StepContext("An old cartographer is hired to map a forest that moves at night.",
                "Tomas maps the forest by day and finds it changed each morning.",
                "Tomas took the job to map the Weald, whose paths are never where they were.",
                "At dawn the oak he had marked stood a mile to the east. He sat on a stump and laughed.",
                "Tomas spends the night in the forest to watch it move."),
]


def step_seconds(backend: TransformersBackend, ctx: StepContext, seed: int) -> tuple[float, int | None, int | None]:
    """(seconds, completion tokens, retries) of one step; (seconds, None, None) when it failed."""
    import torch

    torch.manual_seed(seed)
    started = time.perf_counter()
    try:
        usage = Writer(backend, decoding=Decoding()).step(ctx).usage
    except GenerationFailed as e:
        print(f"a step failed: {e}", flush=True)
        return time.perf_counter() - started, None, None
    return time.perf_counter() - started, usage.completion_tokens, usage.retries


def overhead(backend: TransformersBackend, tokens: int) -> dict:
    """Tokens a second of one reply through the backend and through raw generate (best of 3)."""
    import torch

    model, tokenizer = backend.load()
    ask = [{"role": "user", "content": "Write a long story about a storm over a grey harbour and the keeper who "
                                       "watches it from the lighthouse."}]
    chat = tokenizer.apply_chat_template(ask, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(chat, return_tensors="pt", add_special_tokens=False)
    raw, ours = [], []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True,
                                 temperature=0.8, top_p=0.95, pad_token_id=tokenizer.eos_token_id)
        raw.append((out.shape[1] - ids["input_ids"].shape[1]) / (time.perf_counter() - started))
        request = Request(messages=ask, max_new_tokens=tokens, min_new_tokens=tokens, seed=seed, decoding=Decoding())
        started = time.perf_counter()
        text = "".join(backend.generate(request))
        written = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        ours.append(written / (time.perf_counter() - started))
    return {"raw_generate_tokens_per_second": round(max(raw), 2), "backend_tokens_per_second": round(max(ours), 2),
            "backend_over_raw": round(max(ours) / max(raw), 2)}


WAYS = {"before": {"batching": False, "weights": "float32"},  # one call at a time, as before issue 17
        "after": {"batching": True, "weights": "float32"},  # today's defaults
        "int8": {"batching": True, "weights": "int8"}}  # and with STORYLOOM_WEIGHTS=int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--premises", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2, help="steps per premise, each with its own seed")
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    backends = {name: TransformersBackend(adapter=DEFAULT_ADAPTER, **way) for name, way in WAYS.items()}
    for backend in backends.values():
        backend.load()
        step_seconds(backend, CONTEXTS[0], 0)  # warm-up, not counted
    rows = []
    for n, (ctx, seed) in enumerate((c, s) for c in CONTEXTS[:args.premises] for s in range(args.seeds)):
        order = list(backends.items())[:: 1 if n % 2 == 0 else -1]  # alternate which goes first
        row = {"premise": ctx.premise[:50], "seed": seed}
        for name, backend in order:
            seconds, tokens, retries = step_seconds(backend, ctx, seed)
            row.update({f"{name}_seconds": round(seconds, 1), f"{name}_tokens": tokens, f"{name}_retries": retries})
        rows.append(row)
        print(rows[-1], flush=True)
    failed = {name: sum(r[f"{name}_tokens"] is None for r in rows) for name in backends}
    everywhere = rows
    rows = [r for r in rows if all(r[f"{name}_tokens"] is not None for name in backends)]  # the same work each way
    medians = {name: statistics.median(r[f"{name}_seconds"] for r in rows) for name in backends}
    totals = {name: round(sum(r[f"{name}_seconds"] for r in rows), 1) for name in backends}
    # the text each way samples differs (its numbers differ), and so do its length and retries:
    # seconds per written token compares the engines on the work they did
    per_token = {name: sum(r[f"{name}_seconds"] for r in rows) / sum(r[f"{name}_tokens"] for r in rows)
                 for name in backends}
    result = {"ways": {name: {**way, "weights_used": backends[name].weights} for name, way in WAYS.items()},
              "steps": everywhere, "failed_steps": failed, "steps_compared": len(rows),
              "median_seconds": medians, "total_seconds": totals,
              "median_over_before": {name: round(m / medians["before"], 2) for name, m in medians.items()},
              "total_over_before": {name: round(t / totals["before"], 2) for name, t in totals.items()},
              "seconds_per_token_over_before": {name: round(v / per_token["before"], 2) for name, v in per_token.items()},
              "overhead": overhead(backends["after"], args.tokens)}
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
