"""The first step after a restart: `storyloom serve` started afresh with the embedded model, a
writer who arrives `--arrive` seconds after the server answers (the time to open the page and type
a premise) and starts a story through the page's API; the seconds from asking to the opening
written (title, outline, paragraph, memory, plans). Today's way (STORYLOOM_PRELOAD=false: the
model loads on the first step) and the new one (it loads as the server starts) alternate, each
server a process of its own.

    .venv/bin/python benchmarks/first_step_bench.py [--rounds 2] [--arrive 20]

Writes benchmarks/results/first_step.json."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import running_app, storyloom_env  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PREMISE = "A lighthouse keeper on a remote island finds a message in a bottle addressed to her."


def first_step(preload: bool, arrive: float) -> dict:
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.log"
        env = storyloom_env(Path(folder), preload=str(preload).lower())
        with running_app(env, log) as url:
            answered = time.perf_counter()
            time.sleep(arrive)
            client = Client(url, verbose=False)
            asked = time.perf_counter()
            outputs = client.predict(PREMISE, "", api_name="/start")
            seconds = time.perf_counter() - asked
            status = outputs[-1]
        text = log.read_text()
    loaded = re.search(r"loaded the language model .* in ([\d.]+) s", text)
    ready = re.search(r"models ready in ([\d.]+) s", text)
    if "Paragraph 1 written" not in str(status):
        raise RuntimeError(f"the step failed: {status}\n{text[-2000:]}")
    return {"preload": preload, "seconds_to_opening": round(seconds, 1),
            "model_load_seconds": float(loaded.group(1)) if loaded else None,
            "models_ready_seconds": float(ready.group(1)) if ready else None,
            "asked_after_server_answered": round(asked - answered, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arrive", type=float, default=20.0, help="seconds from the server answering to the step")
    parser.add_argument("--out", default=str(RESULTS / "first_step.json"))
    args = parser.parse_args()
    runs = []
    for r in range(args.rounds):
        for preload in (False, True):
            runs.append(first_step(preload, args.arrive))
            print(json.dumps(runs[-1]), flush=True)

    def median(preload: bool) -> float:
        values = sorted(run["seconds_to_opening"] for run in runs if run["preload"] is preload)
        return values[len(values) // 2]

    out = {"arrive_seconds": args.arrive, "runs": runs, "median_today": median(False), "median_preloaded": median(True),
           "preloaded_over_today": round(median(True) / median(False), 3)}
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
