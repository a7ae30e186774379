"""Memory and time to read a large JSON backup: the peak of Python's allocations (tracemalloc)
while `storage.backup.parse` reads and checks it, as a multiple of the file's size, beside the
way it was read before (decoded to text, parsed, and serialised again to bytes for the checksum)
in the same process. The backups are a real two-paragraph story, grown to N steps with four
memory entries each, with or without vectors, and resealed.

    .venv/bin/python benchmarks/backup_memory.py [--steps 2000 20000]

Writes benchmarks/results/backup_memory.json."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory.embedder import Embedder  # noqa: E402
from storage import backup  # noqa: E402
from tests.conftest import write_story_backup  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def grown(small: dict, steps: int, vectors: bool) -> bytes:
    """`small`'s second step and its first memory entry, repeated into a chain of `steps` steps."""
    step = small["steps"][1]
    entry = next(m for m in small["memories"] if m.get("step"))
    doc = copy.deepcopy(small)
    doc["steps"] = [{**copy.deepcopy(step), "id": i, "parent": i - 1 or None, "depth": i - 1, "playthrough": None}
                    for i in range(1, steps + 1)]
    doc["memories"] = [{**copy.deepcopy(entry), "id": 4 * (i - 1) + j, "step": i}
                       for i in range(1, steps + 1) for j in range(1, 5)]
    doc["playthroughs"], doc["story"]["head"] = [], steps
    if not vectors:
        doc["vectors"] = None
        for m in doc["memories"]:
            m.pop("vector", None)
    doc.pop("sha256")
    doc["sha256"] = backup.checksum(doc)
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


def before(raw: bytes) -> dict:
    """The reading of earlier versions: text, document, and the canonical bytes for the checksum."""
    document = json.loads(raw.decode("utf-8-sig"))
    content = {k: v for k, v in document.items() if k != "sha256"}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == document["sha256"]
    return document


def peak(read, raw: bytes) -> tuple[float, float]:
    """(peak allocations as a multiple of the file, seconds): two readings, the time taken
    without tracemalloc, which slows every allocation."""
    started = time.perf_counter()
    read(raw)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    document = read(raw)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del document
    return top / len(raw), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    small = json.loads(write_story_backup(Path(tempfile.mkdtemp()), Embedder()).read_text())
    rows = []
    for steps in args.steps:
        for vectors in (True, False):
            raw = grown(small, steps, vectors)
            old, old_s = peak(before, raw)
            new, new_s = peak(lambda r: backup.parse(r, "big.json"), raw)
            rows.append({"steps": steps, "vectors": vectors, "mb": round(len(raw) / 1e6, 1),
                         "peak_before_x": round(old, 2), "peak_now_x": round(new, 2),
                         "peak_now_over_before": round(new / old, 2),
                         "seconds_before": round(old_s, 1), "seconds_now": round(new_s, 1)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backup_memory.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
