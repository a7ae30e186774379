"""Ten consecutive CLI steps on each of three premises with the embedded model; checks and timings.

    .venv/bin/python benchmarks/loop_quality.py [--steps 10] [--out benchmarks/results/loop_quality.json]
    .venv/bin/python benchmarks/loop_quality.py --compare [--steps 10]

--compare runs it twice in one go, the earlier way (STORYLOOM_BATCHING=off, STORYLOOM_WEIGHTS=float32:
one call at a time in float32) and today's defaults, and writes loop_quality-compare.json with
both reports and their summaries side by side.

Runs the real `storyloom` command in a fresh data directory, then reads the database:
paragraph words (target >= 60), short-term memory words (<= 250), three distinct non-empty
plans, retries, failures, prompt tokens per step (step 10 vs step 3), seconds per step."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREMISES = [
    "A lighthouse keeper on a remote island finds a message in a bottle addressed to her, dated fifty years in the future.",
    "Two rival bakers in a small mountain town must work together when the only bridge to the valley collapses before the harvest festival.",
    "A retired detective who has lost her memory keeps finding notes in her own handwriting warning her about her neighbour.",
]


def storyloom(env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("storyloom")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/loop_quality.json")
    ap.add_argument("--compare", action="store_true", help="the earlier way, then today's defaults")
    args = ap.parse_args()
    if not args.compare:
        report = run(args.steps, {})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
        return
    reports = {"before": run(args.steps, {"STORYLOOM_BATCHING": "off", "STORYLOOM_WEIGHTS": "float32"}),
               "after": run(args.steps, {})}
    keys = [k for k in reports["before"]["summary"] if k != "paragraph_prompt_tokens_step10_vs_step3"]
    print(f"| | {' | '.join(keys)} |")
    for name, report in reports.items():
        print(f"| {name} | {' | '.join(str(report['summary'][k]) for k in keys)} |")
    out = Path(args.out).with_name("loop_quality-compare.json")
    out.write_text(json.dumps({name: {"settings": r["settings"], "summary": r["summary"], "report": r}
                               for name, r in reports.items()}, indent=2))
    print(f"wrote {out}")


def run(steps: int, settings: dict[str, str]) -> dict:
    """Each premise's story, `steps` steps, written by the CLI with `settings` in a fresh data folder."""
    data = Path(tempfile.mkdtemp(prefix="storyloom-bench-"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")},
           "STORYLOOM_DATA_DIR": str(data), **settings}
    runs = []
    for premise in PREMISES:
        started = time.monotonic()
        new = storyloom(env, "new", "--premise", premise)
        failures = [] if new.returncode == 0 else [new.stderr.strip().splitlines()[-1]]
        story_id = int(new.stdout.strip().splitlines()[-1]) if new.returncode == 0 else None
        done, attempts = 0, 0
        while story_id is not None and done < steps and attempts < steps:
            # `step --count` writes consecutive steps in one process; after a failure, go on
            attempts += 1
            step = storyloom(env, "step", str(story_id), "--plan", "1", "--count", str(steps - done))
            done += step.stderr.count(" written (")
            if step.returncode != 0:
                failures.append(step.stderr.strip().splitlines()[-1])
        runs.append({"premise": premise, "story_id": story_id, "failures": failures,
                     "wall_seconds": round(time.monotonic() - started, 1)})
    report = {"settings": settings, "steps_per_premise": steps, "runs": runs, "steps": read_steps(data)}
    summarize(report)
    return report


def read_steps(data: Path) -> list[dict]:
    import sqlite3

    con = sqlite3.connect(data / "storyloom.db")
    rows = con.execute("SELECT story_id, depth, paragraph, short_memory, plans, prompt_tokens,"
                       " completion_tokens, seconds, trace FROM step ORDER BY story_id, depth").fetchall()
    steps = []
    for story_id, depth, paragraph, memory, plans, prompt_tokens, completion_tokens, seconds, trace in rows:
        plans, trace = json.loads(plans), json.loads(trace)
        paragraph_calls = [c for c in trace["calls"] if c["part"] == "paragraph"]
        steps.append({
            "story_id": story_id, "step": depth, "paragraph_words": len(paragraph.split()),
            "memory_words": len(memory.split()), "plans": plans,
            "plans_ok": len(plans) == 3 and all(p.strip() for p in plans) and len(set(plans)) == 3,
            "retries": trace.get("retries", 0), "prompt_tokens": prompt_tokens,
            "paragraph_prompt_tokens": paragraph_calls[-1]["prompt_tokens"] if paragraph_calls else 0,
            "completion_tokens": completion_tokens, "seconds": seconds})
    return steps


def summarize(report: dict) -> None:
    steps = [s for s in report["steps"] if s["step"] > 0]
    print(f"{'story':>5} {'step':>4} {'para w':>6} {'mem w':>5} {'plans':>5} {'retry':>5} {'para prompt':>11} "
          f"{'all prompts':>11} {'sec':>6}")
    for s in report["steps"]:
        print(f"{s['story_id']:>5} {s['step']:>4} {s['paragraph_words']:>6} {s['memory_words']:>5} "
              f"{'ok' if s['plans_ok'] else 'BAD':>5} {s['retries']:>5} {s['paragraph_prompt_tokens']:>11} "
              f"{s['prompt_tokens']:>11} {s['seconds']:>6.1f}")
    by_story: dict[int, dict[int, dict]] = {}
    for s in report["steps"]:
        by_story.setdefault(s["story_id"], {})[s["step"]] = s
    ratios = {sid: {"step3": st[3]["paragraph_prompt_tokens"], "step10": st[10]["paragraph_prompt_tokens"],
                    "ratio": round(st[10]["paragraph_prompt_tokens"] / st[3]["paragraph_prompt_tokens"], 3)}
              for sid, st in by_story.items() if 3 in st and 10 in st}
    summary = {
        "steps_written": len(steps),
        "failures": sum(len(r["failures"]) for r in report["runs"]),
        "paragraphs_under_60_words": sum(s["paragraph_words"] < 60 for s in report["steps"]),
        "memories_over_250_words": sum(s["memory_words"] > 250 for s in report["steps"]),
        "steps_without_3_distinct_plans": sum(not s["plans_ok"] for s in report["steps"]),
        "total_retries": sum(s["retries"] for s in report["steps"]),
        "mean_paragraph_words": round(sum(s["paragraph_words"] for s in report["steps"]) / max(len(report["steps"]), 1), 1),
        "mean_memory_words": round(sum(s["memory_words"] for s in report["steps"]) / max(len(report["steps"]), 1), 1),
        "mean_seconds_per_step": round(sum(s["seconds"] for s in steps) / max(len(steps), 1), 1),
        "paragraph_prompt_tokens_step10_vs_step3": ratios,
    }
    report["summary"] = summary
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
