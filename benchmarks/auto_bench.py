"""Auto mode with the embedded model: N unattended steps on each of two premises, plus a few
plain steps to time the first streamed token after pressing Next.

    .venv/bin/python benchmarks/auto_bench.py [--steps 30] [--next-steps 3] [--out benchmarks/results/auto.json]

Reports per premise: wall time, words written, retries, failures, and the share of the
manuscript's sentences that repeat an earlier sentence; and for the plain steps, seconds to
the first streamed token of the paragraph and seconds per step. The JSON is rewritten after
every step, so an interrupted run still leaves its numbers."""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

PREMISES = [
    "A lighthouse keeper on a remote island finds a message in a bottle addressed to her, dated fifty years in the future.",
    "Two rival bakers in a small mountain town must work together when the only bridge to the valley collapses before the harvest festival.",
]


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", text)
    return [" ".join(re.findall(r"\w+", p.lower())) for p in parts if re.search(r"\w", p)]


def repeated_share(paragraphs: list[str]) -> float:
    seen, repeats, total = set(), 0, 0
    for sentence in (s for p in paragraphs for s in sentences(p)):
        total += 1
        repeats += sentence in seen
        seen.add(sentence)
    return round(repeats / total, 4) if total else 0.0


def time_next(service, story_id: int, steps: int) -> list[dict]:
    """Plain steps (plan 1), timing the first streamed paragraph token after 'Next'."""
    rows = []
    for _ in range(steps):
        first: dict = {}
        started = time.monotonic()

        def on_text(part: str, text: str) -> None:
            first.setdefault(part, time.monotonic() - started)

        view = service.step(story_id, plan=1, on_text=on_text)
        rows.append({"first_token_s": round(first.get("paragraph", -1), 2),
                     "step_s": round(time.monotonic() - started, 1), "retries": view.last_step["retries"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--next-steps", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/auto.json")
    args = ap.parse_args()

    from app.config import Settings
    from app.wiring import build_service, quiet_libraries
    from common.errors import StoryloomError

    quiet_libraries()
    service = build_service(Settings(data_dir=Path(tempfile.mkdtemp(prefix="storyloom-auto-"))))
    report: dict = {"steps_per_premise": args.steps, "premises": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(report, indent=2))

    for number, premise in enumerate(PREMISES):
        story = service.new_story(premise)
        run = {"premise": premise, "story_id": story.id, "failures": [], "steps": []}
        report["premises"].append(run)
        if number == 0 and args.next_steps:  # these plain steps are not counted in the auto run's wall time
            report["next"] = time_next(service, story.id, args.next_steps)
            run["plain_steps_before_auto"] = args.next_steps
        started = time.monotonic()
        def on_step(n: int, total: int, view) -> None:
            n = len(run["steps"]) + 1
            run["steps"].append({"step": n, "retries": view.last_step["retries"],
                                 "seconds": view.last_step["seconds"], "words": len(view.paragraphs[-1].split())})
            run["wall_s"] = round(time.monotonic() - started, 1)
            save()
            print(f"premise {number + 1} step {n}/{args.steps}: {view.last_step['seconds']:.0f} s", flush=True)

        for _ in range(args.steps):  # one call per step so that a failure does not end the run
            try:
                service.auto(story.id, 1, on_step=on_step)
            except StoryloomError as e:  # a failure the person would see: counted, and the run goes on
                run["failures"].append(f"{type(e).__name__}: {e}")
        view = service.view(story.id)
        run.update(wall_s=round(time.monotonic() - started, 1), paragraphs=len(view.paragraphs),
                   words=sum(len(p.split()) for p in view.paragraphs),
                   retries=sum(s["retries"] for s in run["steps"]),
                   repeated_sentence_share=repeated_share(view.paragraphs))
        save()
    print(json.dumps({k: v for k, v in report.items() if k != "premises"}, indent=2))
    for run in report["premises"]:
        print(json.dumps({k: v for k, v in run.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
