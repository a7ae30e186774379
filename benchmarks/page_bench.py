"""The page with a long manuscript: the time to open a story and the bytes a step sends to the
browser, at about 1,000 and 100,000 words, in Debian's Chromium against the real page served in
this process with the scripted model (so the page is measured, not the model).

Each story is a draft imported through the service (novel and Wikipedia filler paragraphs of at
least 110 words, to the size named, a chapter every 30). The page opens it from the story box,
then takes three steps; the bytes are the body bytes the server sent in answer to the page's API
requests (counted by a wrapper around the web app; scripts and styles left out), from the action
until the server has been quiet for a while: the step's streaming, its result and the tabs that
follow it.

    .venv/bin/python benchmarks/page_bench.py [--before REF]

With --before, the same measurement runs first on a worktree of that commit (in a process of its
own), so both ways come from one run. Writes benchmarks/results/page.json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"1k words": 1_000, "100k words": 100_000}
QUIET = 1.5  # seconds without a byte that end a measurement


def draft(paragraphs: list[str]) -> bytes:
    parts = ["# The Long Harbour"]
    for n, paragraph in enumerate(paragraphs):
        if n % 30 == 0:
            parts.append(f"## Chapter {n // 30 + 1}")
        parts.append(paragraph)
    return ("\n\n".join(parts) + "\n").encode()


class Counted:
    """The web app, counting the body bytes of its API answers (the page's events and their
    results, as they leave the server; scripts and styles left out) and when it last sent one."""

    def __init__(self, app):
        self.app = app
        self.sent = 0
        self.last = time.monotonic()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or "/gradio_api/" not in scope.get("path", ""):
            return await self.app(scope, receive, send)

        async def counting(message):
            if message["type"] == "http.response.body":
                self.sent += len(message.get("body", b""))
                self.last = time.monotonic()
            await send(message)
        return await self.app(scope, receive, counting)


@contextmanager
def served(folder: Path):
    """The real page and server with the scripted model, as tests/web.py's scripted_app serves it,
    counted. Built here rather than through scripted_app: --before runs this on older commits,
    whose scripted_app has no way to wrap the app."""
    import uvicorn

    from app.gate import allowed_hosts, web_app
    from app.people import People
    from app.service import StoryService
    from app.ui import build_app
    from generation.recurrence import Writer
    from memory.embedder import Embedder
    from memory.longterm import LongTermMemory
    from storage.db import open_database, sqlite_url
    from tests.conftest import free_port
    from tests.web import PacedBackend

    db = open_database(sqlite_url(folder / "storyloom.db"))
    service = StoryService(db, LongTermMemory(Embedder(), use_gpu=False), Writer(PacedBackend(0.0)))
    blocks = build_app(service, People(service, accounts_on=False), writers=1)
    blocks.queue(default_concurrency_limit=16)
    counted = Counted(web_app(blocks, hosts=allowed_hosts("127.0.0.1", []), origins=frozenset(), ssr_mode=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(counted, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", service, counted
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        blocks.close()
        db.close()


def measure(repo: Path, steps: int) -> dict:
    """In `repo`'s code: import the stories, then open each in Chromium and step it."""
    sys.path.insert(0, str(repo))
    from benchmarks.longstory import filler
    from tests.web import chromium

    out = {}
    with tempfile.TemporaryDirectory() as folder, served(Path(folder)) as (url, service, counted), \
            chromium() as browser:
        stories = {}
        available = filler(1000)
        for name, target in SIZES.items():
            paragraphs = []
            while sum(len(p.split()) for p in paragraphs) < target:
                paragraphs.append(available[len(paragraphs)])
            view = service.manuscripts.import_draft(draft(paragraphs), f"{name}.md", "A ferry crosses the harbour.")
            stories[name] = (view.id, len(view.paragraphs), sum(len(p.split()) for p in view.paragraphs))

        def quiet() -> int:
            """The bytes sent since the last call, once the server has sent nothing for QUIET seconds."""
            while time.monotonic() - counted.last < QUIET:
                time.sleep(0.1)
            taken, counted.sent = counted.sent, 0
            return taken

        for name, (story, count, words) in stories.items():
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.locator("#step").wait_for()
            quiet()
            started = time.perf_counter()
            box = page.locator("#stories input")
            box.fill(str(story))
            box.press("Enter")
            page.wait_for_function(f"document.querySelectorAll('#manuscript p').length === {count}", timeout=120_000)
            opened = time.perf_counter() - started
            open_bytes = quiet()
            per_step = []
            for n in range(steps):
                page.locator("#instruction textarea").fill(f"The ferry crosses once more, time {n + 1}.")
                started = time.perf_counter()
                page.locator("#step").click()
                page.wait_for_function(f"document.querySelectorAll('#manuscript p').length === {count + n + 1}",
                                       timeout=120_000)
                page.locator("#status").get_by_text("written").wait_for(timeout=120_000)
                seconds = time.perf_counter() - started
                per_step.append({"seconds": round(seconds, 2), "bytes": quiet()})
            out[name] = {"paragraphs": count, "words": words, "open_seconds": round(opened, 2),
                         "open_bytes": open_bytes, "steps": per_step,
                         "median_step_bytes": sorted(s["bytes"] for s in per_step)[len(per_step) // 2]}
            print(name, json.dumps(out[name]), flush=True, file=sys.stderr)
            page.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a commit to measure first, from a worktree of its own")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "page.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # measure the code in this folder; print JSON
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    if args.worker:
        print(json.dumps(measure(Path(args.worker), args.steps)))
        return

    def run(repo: Path) -> dict:
        done = subprocess.run([sys.executable, __file__, "--worker", str(repo), "--steps", str(args.steps)],
                              cwd=repo, stdout=subprocess.PIPE, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    result = {}
    if args.before:
        with tempfile.TemporaryDirectory() as folder:
            tree = Path(folder) / "before"
            subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(tree), args.before],
                           check=True)
            try:
                result["before"] = {"commit": args.before, **run(tree)}
            finally:
                subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)], check=True)
    commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                            text=True, check=True).stdout.strip()
    result["after"] = {"commit": commit, **run(here)}
    if "before" in result:
        result["after_over_before"] = {
            name: {"open_seconds": round(result["after"][name]["open_seconds"] / result["before"][name]["open_seconds"],
                                         3),
                   "open_bytes": round(result["after"][name]["open_bytes"] / result["before"][name]["open_bytes"], 3),
                   "step_bytes": round(result["after"][name]["median_step_bytes"]
                                       / result["before"][name]["median_step_bytes"], 4)}
            for name in SIZES}
    print(json.dumps(result.get("after_over_before", result["after"]), indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
