"""SCA prompting on the development set of unclear instructions (benchmarks/data/sca_dev.json).

For each of the 30 instructions, in one process with the embedded SmolLM2-135M (DITTO and the
guard on, as the app writes), the next paragraph is written three ways from the same story
context, once for each of --seeds random seeds (the same seeds for each way: one sampled
paragraph per way is too noisy to compare):

1. from the person's instruction as written;
2. from SCA's choice: `clarify` with 5 rewordings (names from the story's memory for the
   pronouns, then the model's paraphrases), ranked by Integrated Gradients;
3. from SCA's choice with [PAUSE] tokens, by the pause-tuned model (--pause-adapter; skipped
   without one).

Element coverage: the share of the item's required elements (names, objects, actions) that the
paragraph contains; an element is found when one of its accepted words starts a word of the
paragraph (alternatives of three letters or fewer must be whole words). Contradiction: the
paragraph contains one of the item's phrases that the instruction or the story's memory rules
out (a lexical check, case-insensitive, on word boundaries).

    .venv/bin/python benchmarks/sca_bench.py [--items 30] [--seeds 3] [--pause-adapter DIR (default: assets/pause-smollm2-135m)]

Prints a table and writes benchmarks/results/sca.json."""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.backend import Decoding  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from common.errors import GenerationFailed  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402
from generation.recurrence import StepContext, Writer  # noqa: E402
from generation.sca import SCASettings, clarify  # noqa: E402
from memory.embedder import Embedder  # noqa: E402

DEV = Path(__file__).resolve().parent / "data" / "sca_dev.json"
OUT = Path(__file__).resolve().parent / "results" / "sca.json"
PAUSES = Path(__file__).resolve().parents[1] / "assets" / "pause-smollm2-135m"


def found(paragraph: str, word: str) -> bool:
    pattern = rf"\b{re.escape(word)}\b" if len(word) <= 3 else rf"\b{re.escape(word)}"
    return re.search(pattern, paragraph, re.I) is not None


def coverage(paragraph: str, elements: list[list[str]]) -> int:
    return sum(any(found(paragraph, w) for w in alternatives) for alternatives in elements)


def contradicts(paragraph: str, phrases: list[str]) -> list[str]:
    return [p for p in phrases if re.search(rf"\b{re.escape(p)}\b", paragraph, re.I)]


def write(writer: Writer, item: dict, instruction: str, seed: int) -> tuple[str, float]:
    """The paragraph ("" when the model gave no usable one in its tries: it then covers nothing)."""
    import torch

    torch.manual_seed(seed)
    ctx = StepContext(item["premise"], "", item["summary"], item["last"], instruction)
    started = time.perf_counter()
    try:
        text, _ = writer.paragraph(ctx)
    except GenerationFailed:
        text = ""
    return text, time.perf_counter() - started


WAYS = ("original", "sca", "sca_pauses")


def sign_test(better: int, worse: int) -> float:
    """Two-sided sign test over the items where SCA and the original differ."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(better, worse) + 1)) / 2 ** n
    return round(min(1.0, 2 * tail), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3, help="paragraphs per way and item, one per seed")
    parser.add_argument("--pause-adapter", default=str(PAUSES) if PAUSES.is_dir() else None,
                        help="a pause-tuned adapter (storyloom sca pause-tune); default the one in assets/")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    items = json.loads(DEV.read_text())["items"][: args.items]

    setup = Setup.load(args.pause_adapter)
    rows = [setup.run_item(item, args.seeds, Path(args.out)) for item in items]
    summary = summarize(rows)
    better = sum(r["sca_covered"] > r["original_covered"] for r in rows)
    worse = sum(r["sca_covered"] < r["original_covered"] for r in rows)
    origins = by_origin(rows)
    clarify_times = sorted(r["clarify"]["seconds"] for r in rows)
    para_times = [p["seconds"] for r in rows for p in r["original"]][: len(rows)]  # one per item
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "model_load_seconds": round(setup.load_seconds, 1)},
        "items": len(rows), "seeds": args.seeds, "summary": summary, "chosen_by_origin": origins,
        "sca_vs_original": {"more_elements": better, "fewer": worse, "same": len(rows) - better - worse,
                            "kept_the_original": sum(r["clarify"]["chose_original"] for r in rows),
                            "chose_names_from_the_story": sum(r["clarify"]["chosen_origin"].startswith("names")
                                                              for r in rows),
                            "chose_a_paraphrase": sum(r["clarify"]["chosen_origin"].startswith("paraphrase")
                                                      for r in rows)},
        "sign_test_p": sign_test(better, worse),
        "clarify_seconds": {"mean": round(sum(clarify_times) / len(rows), 1),
                            "median": clarify_times[len(rows) // 2], "max": clarify_times[-1],
                            "ig_steps": rows[0]["clarify"]["ig_steps"], "candidates": 5,
                            "ratio_to_one_paragraph": round(sum(clarify_times) / sum(para_times), 2)},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print_report(report, better, worse, args.out)


@dataclass
class Setup:
    """The models one run uses: the backend (DITTO on) that writes and clarifies, the embedder, and
    the writers with and without the pause-tuned model."""

    backend: TransformersBackend
    embedder: Embedder
    writer: Writer
    paused: Writer | None
    load_seconds: float

    @classmethod
    def load(cls, pause_adapter: str | None) -> "Setup":
        decoding = Decoding()
        backend = TransformersBackend(adapter=DEFAULT_ADAPTER)
        started = time.perf_counter()
        backend.load()
        load_seconds = time.perf_counter() - started
        embedder = Embedder()
        embedder.encode(["warm up"])
        writer = Writer(backend, decoding=decoding, retries=5)
        paused = None
        if pause_adapter:
            pause_backend = TransformersBackend(adapter=DEFAULT_ADAPTER, pause_adapter=pause_adapter)
            pause_backend.load()
            if not pause_backend.pauses:
                sys.exit(f"the pause adapter did not load: {pause_backend.adapter_problem}")
            paused = Writer(pause_backend, decoding=decoding, retries=5)
        return cls(backend, embedder, writer, paused, load_seconds)

    def run_item(self, item: dict, seed_count: int, out: Path) -> dict:
        """One item written every way with each seed, scored, appended to the partial results and printed."""
        seeds = [1000 * (n + 1) + item["id"] for n in range(seed_count)]
        row = {"id": item["id"], "instruction": item["instruction"], "elements": len(item["elements"]),
               "seeds": seeds}
        row["original"] = [write(self.writer, item, item["instruction"], seed) for seed in seeds]
        result = clarify(self.backend, self.embedder, item["instruction"], item["summary"], SCASettings(),
                         last=item["last"])
        best = result.best
        row["clarify"] = {"seconds": round(result.seconds, 1), "ig_steps": result.ig_steps, "chosen": best.text,
                          "chose_original": best.origin == "yours",
                          "chosen_origin": best.origin,
                          "candidates": [{k: v for k, v in c.to_dict().items() if k != "words"}
                                         for c in result.candidates], "problems": result.problems}
        row["sca"] = [write(self.writer, item, best.text, seed) for seed in seeds]
        if self.paused:
            row["sca_pauses"] = [write(self.paused, item, best.text, seed) for seed in seeds]
        for way in WAYS:
            if way in row:
                row[way] = [{"paragraph": text, "seconds": round(seconds, 1),
                             "covered": coverage(text, item["elements"]),
                             "contradictions": contradicts(text, item["contradicts"])} for text, seconds in row[way]]
                row[f"{way}_covered"] = sum(p["covered"] for p in row[way])
        with out.with_suffix(".partial.jsonl").open("a") as partial:  # survives a crash
            partial.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"item {item['id']:2d}: clarify {result.seconds:5.1f} s, covered "
              + ", ".join(f"{w} {row[w + '_covered']}/{row['elements'] * len(seeds)}" for w in WAYS if w in row)
              + ("  (kept the original)" if best.origin == "yours" else ""), flush=True)
        return row


def summarize(rows: list[dict]) -> dict:
    """Per way: elements covered, coverage, contradicting and failed paragraphs."""
    total = sum(r["elements"] * len(r["seeds"]) for r in rows)
    summary = {}
    for way in WAYS:
        done = [r for r in rows if way in r]
        if not done:
            continue
        paragraphs = [p for r in done for p in r[way]]
        covered = sum(r[f"{way}_covered"] for r in done)
        summary[way] = {"covered": covered, "elements": total, "coverage": round(covered / total, 4),
                        "contradicting_paragraphs": sum(bool(p["contradictions"]) for p in paragraphs),
                        "failed_paragraphs": sum(not p["paragraph"] for p in paragraphs),
                        "paragraphs": len(paragraphs)}
    return summary


def by_origin(rows: list[dict]) -> dict[str, dict]:
    """Items and elements covered (original, SCA), by where SCA's chosen wording came from."""
    origins: dict[str, dict] = {}
    for r in rows:
        origin = r["clarify"]["chosen_origin"]
        kind = ("yours" if origin == "yours" else "paraphrase" if origin.startswith("paraphrase")
                else "names and a thing" if "it →" in origin.lower() else "names")
        entry = origins.setdefault(kind, {"items": 0, "original": 0, "sca": 0})
        entry["items"] += 1
        entry["original"] += r["original_covered"]
        entry["sca"] += r["sca_covered"]
    return origins


def print_report(report: dict, better: int, worse: int, out: str) -> None:
    print(f"\n{'way':<12}{'covered':>10}{'coverage':>10}{'contradicting':>15}")
    for way, s in report["summary"].items():
        print(f"{way:<12}{s['covered']:>5}/{s['elements']:<4}{s['coverage']:>10.3f}{s['contradicting_paragraphs']:>9}/"
              f"{s['paragraphs']}")
    for kind, entry in report["chosen_by_origin"].items():
        print(f"  SCA chose {kind} in {entry['items']} items: covered {entry['sca']} there, the original {entry['original']}")
    print(f"SCA vs original, per item: {better} more elements, {worse} fewer (sign test p = {sign_test(better, worse)}); "
          f"clarify "
          f"{report['clarify_seconds']['mean']} s mean, {report['clarify_seconds']['max']} s max "
          f"({report['clarify_seconds']['ig_steps']} IG steps); written to {out}")


if __name__ == "__main__":
    main()
