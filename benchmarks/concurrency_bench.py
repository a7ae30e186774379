"""Many writers at once: the real `storyloom serve` with the embedded model, and 1, 5 and 20
clients (gradio_client, each its own session) that step their own stories at the same moment.

Each client imports a story (a JSON backup, no model call) and then asks for one step with plan 1;
a step's latency is from the client's request to its answer, queueing included. Throughput is
steps over the wall time of the round. Every answer is checked: the client's own story got
exactly one new paragraph, the one it was shown, and no story got another's. One warm-up step
loads the model first and is not counted.

    .venv/bin/python benchmarks/concurrency_bench.py [--clients 1 5 20] [--writers 1]
    .venv/bin/python benchmarks/concurrency_bench.py --compare [--clients 5 20]

Prints a table and writes benchmarks/results/concurrency.json (concurrency-writersN.json for
another --writers N). --compare runs two servers one after the other in the same run: the
earlier way (STORYLOOM_BATCHING=off, float32 weights, one writer at a time) and today's defaults
with the given extra settings (--after-env NAME=VALUE ...), and writes concurrency-compare.json
with each round's ratios (steps a minute after / before, p95 after / before), or the file --out
names there."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client, handle_file  # noqa: E402

from memory.embedder import Embedder  # noqa: E402
from storage import repo  # noqa: E402
from storage.db import open_database, sqlite_url  # noqa: E402
from tests.conftest import running_app, storyloom_env, write_story_backup  # noqa: E402
from tests.test_web_accounts import page  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COST = re.compile(r"\((\d+) prompt \+ (\d+) completion tokens")


def paragraphs(db_path: Path, story_id: int) -> list[str]:
    db = open_database(sqlite_url(db_path))
    try:
        with db.Session() as session:
            story = repo.get_story(session, story_id, repo.ANYONE)
            return [s.paragraph for s in repo.path_to(session, story.head_step_id)]
    finally:
        db.close()


def round_of(url: str, backup: Path, clients: int, db_path: Path) -> dict:
    people = [Client(url, verbose=False) for _ in range(clients)]
    stories = []
    for me in people:
        status = page(me.predict(handle_file(str(backup)), "", api_name="/import_story"))["status"]
        stories.append(int(re.search(r"as story (\d+)", status).group(1)))
    go = threading.Barrier(clients)

    def step(me: Client) -> dict:
        go.wait()
        started = time.perf_counter()
        answer = page(me.predict(1, "", api_name="/step"))
        return {"seconds": time.perf_counter() - started, **answer}

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(step, people))
    wall = time.perf_counter() - started

    problems = []
    written = []
    for story_id, answer in zip(stories, answers):
        kept = paragraphs(db_path, story_id)
        cost = COST.search(answer["status"])
        if len(kept) != 3 or cost is None:
            problems.append(f"story {story_id}: {len(kept)} paragraphs, status {answer['status'][:120]!r}")
            continue
        if kept[2].strip()[:80] not in answer["manuscript"]:  # the text the step's update carried
            problems.append(f"story {story_id}: the client was shown another paragraph")
        written.append(kept[2])
    if len(set(written)) != len(written):
        problems.append("two stories got the same paragraph")
    latencies = sorted(a["seconds"] for a in answers)
    tokens = sum(int(m.group(2)) for a in answers if (m := COST.search(a["status"])))
    return {"clients": clients, "steps": len(answers), "answered": sum(bool(COST.search(a["status"])) for a in answers),
            "problems": problems, "wall_seconds": round(wall, 1),
            "steps_per_minute": round(60 * len(answers) / wall, 2),
            "completion_tokens_per_second": round(tokens / wall, 2),
            "p50_seconds": round(statistics.median(latencies), 1),
            "p95_seconds": round(latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], 1),
            "latencies": [round(s, 1) for s in latencies]}


def serve_rounds(clients: list[int], **settings: str) -> tuple[dict, list[dict], int]:
    """(the warm-up round, a round for each number of clients, how many times the model loaded),
    against a fresh `storyloom serve` with `settings`."""
    with tempfile.TemporaryDirectory(prefix="storyloom-concurrency-") as tmp:
        folder = Path(tmp)
        backup = write_story_backup(folder, Embedder())
        data = folder / "data"
        with running_app(storyloom_env(data, **settings), folder / "serve.log") as url:
            warm = round_of(url, backup, 1, data / "storyloom.db")  # loads the model; not counted
            rounds = []
            for n in clients:
                rounds.append(round_of(url, backup, n, data / "storyloom.db"))
                print(f"{settings}: {n} clients: {rounds[-1]['steps_per_minute']} steps/min, "
                      f"p95 {rounds[-1]['p95_seconds']} s, problems {rounds[-1]['problems']}", flush=True)
            loads = (folder / "serve.log").read_text().count("loading the language model")
    return warm, rounds, loads


def compare(clients: list[int], after_env: list[str], file: str) -> None:
    before_settings = {"batching": "off", "weights": "float32", "writers": "1"}
    after_settings = dict(item.split("=", 1) for item in after_env)
    runs = {}
    for name, settings in (("before", before_settings), ("after", after_settings)):
        warm, rounds, loads = serve_rounds(clients, **settings)
        runs[name] = {"settings": settings, "model_loads": loads, "warm_up": warm, "rounds": rounds}
    ratios = []
    print("| clients | before: steps/min | p95 s | after: steps/min | p95 s | steps/min × | p95 × | problems |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b, a in zip(runs["before"]["rounds"], runs["after"]["rounds"]):
        r = {"clients": b["clients"], "steps_per_minute_ratio": round(a["steps_per_minute"] / b["steps_per_minute"], 2),
             "p95_ratio": round(a["p95_seconds"] / b["p95_seconds"], 2),
             "problems": len(a["problems"]) + len(b["problems"])}
        ratios.append(r)
        print(f"| {b['clients']} | {b['steps_per_minute']} | {b['p95_seconds']} | {a['steps_per_minute']} | "
              f"{a['p95_seconds']} | {r['steps_per_minute_ratio']} | {r['p95_ratio']} | {r['problems']} |")
    out = RESULTS / file
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               **runs, "ratios": ratios}, indent=1))
    print(f"wrote {out}")
    if any(r["problems"] for r in ratios) or any(run["model_loads"] != 1 for run in runs.values()):
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="default 1 5 20; 5 20 with --compare")
    parser.add_argument("--writers", type=int, default=1, help="STORYLOOM_WRITERS of the server")
    parser.add_argument("--compare", action="store_true", help="the earlier way and today's, one after the other")
    parser.add_argument("--out", default="concurrency-compare.json", help="the file's name in benchmarks/results (--compare only)")
    parser.add_argument("--after-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings of today's server in --compare (weights=int8 ...)")
    args = parser.parse_args()
    if args.compare:
        compare(args.clients or [5, 20], args.after_env, args.out)
        return
    warm, rounds, loads = serve_rounds(args.clients or [1, 5, 20], writers=str(args.writers))

    base = rounds[0]
    for r in rounds:
        r["throughput_vs_first"] = round(r["steps_per_minute"] / base["steps_per_minute"], 2)
        r["p50_vs_first"] = round(r["p50_seconds"] / base["p50_seconds"], 2)
    print(f"warm-up step {warm['latencies'][0]} s; the model was loaded {loads} time(s); writers={args.writers}")
    print("| clients | steps answered | problems | wall s | steps/min | tokens/s | p50 s | p95 s | "
          "throughput × | p50 × |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(f"| {r['clients']} | {r['answered']}/{r['steps']} | {len(r['problems'])} | {r['wall_seconds']} | "
              f"{r['steps_per_minute']} | {r['completion_tokens_per_second']} | {r['p50_seconds']} | "
              f"{r['p95_seconds']} | {r['throughput_vs_first']} | {r['p50_vs_first']} |")
    for r in rounds:
        for problem in r["problems"]:
            print(f"  {r['clients']} clients: {problem}")
    out = RESULTS / ("concurrency.json" if args.writers == 1 else f"concurrency-writers{args.writers}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "writers": args.writers, "model_loads": loads, "warm_up": warm,
                               "rounds": rounds}, indent=1))
    if any(r["problems"] for r in rounds) or loads != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
