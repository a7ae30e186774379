"""DITTO and its decode-time companion against repetition, on the embedded SmolLM2-135M.

Held-out prefixes: 100 from the held-out last quarter of WikiText-2 valid and 100 from the
held-out last quarter of The Great Gatsby (the adapter trains on the first three quarters of
each; WikiText is read back as prose, as training reads it); 50-token prefix, 100-token greedy continuation. Four
ways of decoding, in one process on the same samples: the base model, the DITTO adapter, the
sentence-repetition guard alone, and guard + DITTO. Then the speed of one sequence at a time (as
the app writes), base vs guard and base vs DITTO, alternated so noise hits both alike.

    .venv/bin/python benchmarks/ditto_bench.py [--adapter DIR] [--samples 100]

Prints a table and writes benchmarks/results/ditto.json."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.longstory import TEXTS  # noqa: E402
from generation.backend import Decoding  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER, adapter_off, attach_adapter  # noqa: E402
from generation.corpus import paragraphs_of, read_corpus  # noqa: E402
from generation.evaluation import PLAIN, eval_samples, evaluate  # noqa: E402
from generation.local import load_model, resolve_model  # noqa: E402

GUARD = Decoding(guard=True, guard_lambda=Decoding().guard_lambda, repetition_penalty=1.0)  # the app's default λ
WAYS = [("base", False, PLAIN), ("DITTO", True, PLAIN), ("guard", False, GUARD), ("guard+DITTO", True, GUARD)]


def speed(model, tokenizer, samples, pairs, rounds: int) -> dict:
    """Tokens per second generating one sequence at a time, for each (name, ditto, decoding),
    alternated round by round."""
    import torch
    from transformers import LogitsProcessorList

    from generation.processors import breaker_ids, for_decoding, sentence_end_ids

    ends, breakers = sentence_end_ids(tokenizer, clauses=True), breaker_ids(tokenizer)
    totals = {name: [0, 0.0] for name, _, _ in pairs}
    for r in range(rounds):
        for name, ditto, decoding in pairs:
            sample = samples[r % len(samples)]
            ids = torch.tensor([sample.prefix])
            with torch.inference_mode(), (nullcontext() if ditto else adapter_off(model)):
                started = time.perf_counter()
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=100, min_new_tokens=100,
                                     logits_processor=LogitsProcessorList(for_decoding(decoding, ends, breakers)),
                                     pad_token_id=tokenizer.eos_token_id)
                totals[name][1] += time.perf_counter() - started
            totals[name][0] += out.shape[1] - ids.shape[1]
    return {name: round(n / s, 2) for name, (n, s) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER))
    parser.add_argument("--samples", type=int, default=100, help="per corpus")
    parser.add_argument("--speed-rounds", type=int, default=12)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ditto.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    model, tokenizer, samples = load(args.adapter, args.samples)
    print(f"{len(samples)} samples; model loaded in {time.perf_counter() - started:.0f} s", flush=True)
    results = evaluate_ways(model, tokenizer, samples)
    targets = against_base(results)
    print("speed, one sequence at a time ...", flush=True)
    tps = speed(model, tokenizer, samples, [("base", False, PLAIN), ("guard", False, GUARD), ("DITTO", True, PLAIN),
                                            ("guard+DITTO", True, GUARD)], args.speed_rounds)
    speed_ratios = {k: round(v / tps["base"], 3) for k, v in tps.items()}
    print(f"tokens/s {tps}; ratios to base {speed_ratios}")
    meta = json.loads((Path(args.adapter) / "storyloom-ditto.json").read_text())
    out = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "adapter": args.adapter,
           "adapter_training": {k: meta.get(k) for k in ("command", "seconds", "config", "loss", "device")},
           "samples": len(samples), "prefix_tokens": 50, "continuation_tokens": 100,
           "results": results, "targets": targets,
           "speed_tokens_per_second": tps, "speed_ratio_to_base": speed_ratios,
           "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


def load(adapter: str, per_corpus: int, unseen: int = 0):
    """(the embedded model with the adapter, its tokenizer, the held-out samples of both corpora),
    plus up to `unseen` samples of Alice's Adventures in Wonderland, a novel no adapter trained on."""
    model, tokenizer = load_model(resolve_model(None), "auto")
    model = attach_adapter(model, adapter)
    wiki = read_corpus(TEXTS / "wikitext-2-valid.txt")  # the adapter's split: the last quarter is held out
    gatsby = read_corpus(TEXTS / "the-great-gatsby.txt")
    alice = paragraphs_of((TEXTS / "alice-in-wonderland.txt").read_text(encoding="utf-8"))
    samples = (eval_samples(tokenizer, wiki.held_out, "wikitext (held out)", per_corpus)
               + eval_samples(tokenizer, gatsby.held_out, "gatsby (held out)", per_corpus)
               + eval_samples(tokenizer, alice, "alice (unseen)", unseen))
    return model, tokenizer, samples


def evaluate_ways(model, tokenizer, samples) -> dict[str, dict]:
    """Each way's repetition and perplexity, overall and by source, printed as they come."""
    results = {}
    for name, ditto, decoding in WAYS:
        t = time.perf_counter()
        with nullcontext() if ditto else adapter_off(model):
            results[name] = evaluate(model, tokenizer, samples, decoding)
        results[name]["seconds"] = round(time.perf_counter() - t, 1)
        r = results[name]
        print(f"{name:12s} rep-2 {r['rep_2']:.3f} rep-3 {r['rep_3']:.3f} rep-4 {r['rep_4']:.3f} "
              f"sentence rep {r['sentence_repetition']:.3f} ppl {r['perplexity']:.2f} "
              f"rep-w {r['rep_w']:.3f} rep-r {r['rep_r']:.3f} ({r['seconds']:.0f} s)", flush=True)
        for src, b in r["by_source"].items():
            print(f"    {src:20s} rep-4 {b['rep_4']:.3f} sentence rep {b['sentence_repetition']:.3f} "
                  f"ppl {b['perplexity']:.2f}", flush=True)
    return results


def ratio(value: float, base: float) -> float | None:
    """value / base, or None where the base is 0 (a small sample may have no repeats at all)."""
    return round(value / base, 3) if base else None


def against_base(results: dict[str, dict]) -> dict[str, dict]:
    """Each other way's ratios to the base model, and whether it meets the targets (judged by
    multiplying the base, so a base of 0 still gives a verdict)."""
    base = results["base"]
    targets = {}
    for name in ("DITTO", "guard", "guard+DITTO"):
        r = results[name]
        ratios = {k: ratio(r[k], base[k]) for k in ("rep_4", "sentence_repetition", "perplexity")}
        per_source = {src: ratio(r["by_source"][src]["perplexity"], base["by_source"][src]["perplexity"])
                      for src in base["by_source"]}
        targets[name] = {"ratios_to_base": ratios, "perplexity_ratio_by_source": per_source,
                         "met": {"rep_4 <= 1/2 base": r["rep_4"] <= base["rep_4"] / 2,
                                 "sentence repetition <= 1/3 base":
                                     r["sentence_repetition"] <= base["sentence_repetition"] / 3,
                                 "perplexity <= 1.1 x base": r["perplexity"] <= 1.1 * base["perplexity"]}}
        print(f"{name:12s} vs base: rep-4 x{ratios['rep_4']}, sentence rep x{ratios['sentence_repetition']}, "
              f"ppl x{ratios['perplexity']} (by source: {per_source})", flush=True)
    return targets


if __name__ == "__main__":
    main()
