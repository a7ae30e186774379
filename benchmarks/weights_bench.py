"""float32 against int8 weights (STORYLOOM_WEIGHTS=int8, generation/weights.py: int8 decoder layers,
per-token int8 activations after SmoothQuant, the output head in float32), in one process on the embedded
SmolLM2-135M with the DITTO adapter folded in:

- speed: tokens per second of one sampled reply at a time, as a writer's call decodes, and of 8
  greedy rows at once through generate, the two formats alternated so noise hits both alike;
- quality: the held-out DITTO evaluation (benchmarks/ditto_bench.py's samples), with DITTO alone
  and with the sentence-repetition guard (the app's default): rep-4, sentence repetition and the
  perplexity of the true continuations.

int8 is the default only if its perplexity stays within 1.03 times float32's and neither
repetition figure is worse by more than 5% (`verdict_of`; the verdict is printed and written).

    .venv/bin/python benchmarks/weights_bench.py [--samples 100] [--rounds 3]

Writes benchmarks/results/weights.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ditto_bench import GUARD, load  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER, fold_in  # noqa: E402
from generation.evaluation import PLAIN, evaluate  # noqa: E402
from generation.weights import converted  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ASK = [{"role": "user", "content": "Write a long story about a storm over a grey harbour and the keeper who "
                                   "watches it from the lighthouse."}]


def speed(models: dict, tokenizer, tokens: int, rounds: int) -> dict:
    """{format: {"one": tokens/s of one sampled reply, "eight": of 8 greedy rows at once}}, each
    the best of `rounds`, the formats alternated."""
    import torch

    chat = tokenizer.apply_chat_template(ASK, tokenize=False, add_generation_prompt=True)
    one = tokenizer(chat, return_tensors="pt", add_special_tokens=False)
    eight = {k: v.repeat(8, 1) for k, v in one.items()}
    best = {name: {"one": 0.0, "eight": 0.0} for name in models}
    for r in range(rounds):
        for name, model in models.items():
            for kind, ids, sample in (("one", one, True), ("eight", eight, False)):
                torch.manual_seed(r)
                started = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=sample,
                                         temperature=0.8 if sample else None, top_p=0.95 if sample else None,
                                         pad_token_id=tokenizer.eos_token_id)
                rate = out[:, ids["input_ids"].shape[1]:].numel() / (time.perf_counter() - started)
                best[name][kind] = max(best[name][kind], round(rate, 2))
        print(f"round {r + 1}: {best}", flush=True)
    return best


def paired(quality: dict) -> dict:
    """Which samples repeat a sentence under each format, counted as pairs: the formats decode the
    same samples, so only the samples where they disagree tell them apart."""
    f32, i8 = set(quality["float32"]["repeating_samples"]), set(quality["int8"]["repeating_samples"])
    return {"both": len(f32 & i8), "float32_only": len(f32 - i8), "int8_only": len(i8 - f32)}


def verdict_of(app: dict) -> dict:
    """The issue's bar for making int8 the default, on the app's decoding (guard + DITTO): the
    perplexity within 1.03 times float32's, and neither repetition figure worse (higher) by more
    than 5%. Less repetition passes."""
    return {"perplexity <= 1.03 x float32": app["perplexity"] <= 1.03,
            "rep-4 <= 1.05 x float32": app["rep_4"] <= 1.05,
            "sentence repetition <= 1.05 x float32": app["sentence_repetition"] is None
            or app["sentence_repetition"] <= 1.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="held-out samples per corpus")
    parser.add_argument("--unseen", type=int, default=0,
                        help="also this many samples of assets/texts/alice-in-wonderland.txt "
                             "(a novel nothing trains on)")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (the best is kept)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "weights.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    model, tokenizer, samples = load(str(DEFAULT_ADAPTER), args.samples, args.unseen)
    fp32 = fold_in(model)
    models = {"float32": fp32, "int8": converted(fp32, tokenizer)}
    print(f"{len(samples)} samples; loaded and quantized in {time.perf_counter() - started:.0f} s", flush=True)
    tps = speed(models, tokenizer, args.tokens, args.rounds)
    quality = {}
    for way, decoding in (("DITTO", PLAIN), ("guard+DITTO", GUARD)):
        for name, m in models.items():
            t = time.perf_counter()
            r = evaluate(m, tokenizer, samples, decoding)
            quality.setdefault(way, {})[name] = {k: r[k] for k in (
                "rep_2", "rep_4", "sentence_repetition", "perplexity", "impossible_reference_tokens", "by_source",
                "repeating_samples")}
            print(f"{way:12s} {name:8s} rep-4 {r['rep_4']:.4f} sentence rep {r['sentence_repetition']:.4f} "
                  f"ppl {r['perplexity']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    ratios = {way: {k: round(q["int8"][k] / q["float32"][k], 4) if q["float32"][k] else None
                    for k in ("rep_4", "sentence_repetition", "perplexity")} for way, q in quality.items()}
    verdict = verdict_of(ratios["guard+DITTO"])
    out = {"samples": len(samples), "tokens": args.tokens, "speed_tokens_per_second": tps,
           "speed_int8_over_float32": {k: round(tps["int8"][k] / tps["float32"][k], 3) for k in ("one", "eight")},
           "quality": quality, "int8_over_float32": ratios,
           "sentence_repetition_paired": {way: paired(q) for way, q in quality.items()}, "default_if_all_met": verdict,
           "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({k: out[k] for k in ("speed_int8_over_float32", "int8_over_float32", "sentence_repetition_paired",
                                          "default_if_all_met")},
                     indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
