"""How long `clarify` takes on this machine: 5 rewordings and Integrated Gradients (8 steps) for
every wording kept, on the first N instructions of the SCA development set, with nothing else
running. The time of one plain paragraph is measured in the same process as a baseline.

    .venv/bin/python benchmarks/clarify_time.py [--items 10]

Prints the times and writes benchmarks/results/clarify_time.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sca_bench import DEV, write  # noqa: E402
from generation.backend import Decoding  # noqa: E402
from generation.adapters import DEFAULT_ADAPTER  # noqa: E402
from generation.local import TransformersBackend  # noqa: E402
from generation.recurrence import Writer  # noqa: E402
from generation.sca import SCASettings, clarify  # noqa: E402
from memory.embedder import Embedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10)
    args = parser.parse_args()
    items = json.loads(DEV.read_text())["items"][: args.items]
    backend = TransformersBackend(adapter=DEFAULT_ADAPTER)
    backend.load()
    embedder = Embedder()
    embedder.encode(["warm up"])
    writer = Writer(backend, decoding=Decoding())
    rows = []
    for item in items:
        _, paragraph_seconds = write(writer, item, item["instruction"], 1000 + item["id"])
        result = clarify(backend, embedder, item["instruction"], item["summary"], SCASettings(), last=item["last"])
        kept = sum(not c.drifted for c in result.candidates)
        rows.append({"id": item["id"], "clarify_seconds": round(result.seconds, 1), "wordings_scored": kept,
                     "paragraph_seconds": round(paragraph_seconds, 1)})
        print(f"item {item['id']:2d}: clarify {result.seconds:5.1f} s ({kept} wordings scored by IG), "
              f"one paragraph {paragraph_seconds:5.1f} s", flush=True)
    times = sorted(r["clarify_seconds"] for r in rows)
    report = {"items": len(rows), "candidates": 5, "ig_steps": SCASettings().ig_steps,
              "clarify_seconds": {"mean": round(sum(times) / len(times), 1), "median": times[len(times) // 2],
                                  "max": times[-1]},
              "ratio_to_one_paragraph": round(sum(times) / sum(r["paragraph_seconds"] for r in rows), 2),
              "rows": rows}
    out = Path(__file__).resolve().parent / "results" / "clarify_time.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
