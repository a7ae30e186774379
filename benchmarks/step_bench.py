"""One writer's step, today's engine against the earlier way, in one process on the same weights
(the embedded model with DITTO, float32): the time of a step (a paragraph, the short-term memory,
three plans) on the same premises and seeds, with batching on (the three plans decode together,
reading their prompt once) and off (STORYLOOM_BATCHING=off: one call after another through
transformers' generate). Then the backend's own overhead: tokens per second of one long reply
through the backend (default decoding: the guard and the repetition penalty) against raw
`model.generate` on the same weights, sampling the same way.

    .venv/bin/python benchmarks/step_bench.py [--premises 3] [--tokens 200]

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


def step_seconds(backend: TransformersBackend, ctx: StepContext, seed: int) -> float:
    import torch

    torch.manual_seed(seed)
    started = time.perf_counter()
    Writer(backend, decoding=Decoding()).step(ctx)
    return time.perf_counter() - started


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--premises", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    on, off = (TransformersBackend(adapter=DEFAULT_ADAPTER, batching=batching) for batching in (True, False))
    on.load(), off.load()
    step_seconds(on, CONTEXTS[0], 0), step_seconds(off, CONTEXTS[0], 0)  # warm-up, not counted
    rows = []
    for n, ctx in enumerate(CONTEXTS[:args.premises]):
        pair = [(name, step_seconds(backend, ctx, seed=n)) for name, backend in
                (("on", on), ("off", off))[:: 1 if n % 2 == 0 else -1]]  # alternate which goes first
        rows.append({"premise": ctx.premise[:50], **{f"batching_{k}_seconds": round(v, 1) for k, v in pair}})
        print(rows[-1], flush=True)
    on_median = statistics.median(r["batching_on_seconds"] for r in rows)
    off_median = statistics.median(r["batching_off_seconds"] for r in rows)
    result = {"steps": rows, "median_on_seconds": on_median, "median_off_seconds": off_median,
              "on_over_off": round(on_median / off_median, 2), "overhead": overhead(on, args.tokens)}
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
