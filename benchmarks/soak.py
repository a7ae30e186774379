"""A soak test of the shared server: the real `storyloom serve` with accounts on, on loopback, with
the scripted model behind an OpenAI-compatible API (so the server is what is measured, not the
model), and many clients, each a person with their own login, for a fixed time.

Each client, at random: starts stories, steps, regenerates, undoes, edits paragraphs, adds notes
to the memory, exports JSON backups and imports them again, sends bad input (an empty premise,
escape codes, a paragraph too long, a wrong password from another address, which must never lock
the person out of their own), edits from a stale tab (a second session
that loaded the paragraph before the first saved it), and opens other people's story ids. Each
keeps a ledger: its stories, the manuscript the server last showed for each, how many steps it
made in each, the notes it added, and every export's manuscript against the ledger of the time.

Afterwards the database is checked against the ledgers: every story of every person, its step
count, its manuscript (opened again through the page), its notes (each exactly once) and the
paragraph memories of its current branch. Reported: requests, answers by kind, anything lost or
duplicated (must be 0), anything seen across accounts (must be 0), stale edits that went through
(must be 0), and the server's peak memory.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--clients 20] [--database sqlite|postgresql]

PostgreSQL: the server of `make postgres` (or STORYLOOM_TEST_POSTGRES); a fresh database is made
and dropped. Writes benchmarks/results/soak-<database>.json."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client, handle_file  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from app.ui.manuscript import Held  # noqa: E402
from storage import accounts, repo  # noqa: E402
from storage.db import open_database, sqlite_url  # noqa: E402
from storage.models import MemoryEntry, Step, Story  # noqa: E402
from tests.conftest import EXE, free_port, storyloom_env  # noqa: E402
from tests.fakes import scripted_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = ("stories", "manuscript", "short_memory", "plans", "instruction", "writing", "version", "status")
NOTHING = "**Nothing was written:**"
MARK = re.compile(r"writer-c(\d\d)")


def password(n: int) -> str:
    return f"soak password {n:02d}"


@dataclass
class Ledger:
    """What one client knows it has: story id -> the manuscript last shown, steps made, notes."""
    me: int
    manuscripts: dict[int, list[str]] = field(default_factory=dict)  # its paragraphs
    steps: Counter = field(default_factory=Counter)
    notes: dict[int, list[str]] = field(default_factory=dict)
    answers: Counter = field(default_factory=Counter)  # kind -> count
    requests: int = 0
    leaks: list[str] = field(default_factory=list)
    overwrites: int = 0  # a stale edit that went through
    export_mismatches: int = 0
    exports: int = 0
    unanswered: list[str] = field(default_factory=list)  # requests that failed without an answer


class Person:
    """One client: a login (its own session), a ledger, and the actions it takes at random."""

    def __init__(self, url: str, n: int, others: dict[int, "Person"], rng: random.Random, folder: Path):
        self.url, self.n, self.others, self.rng, self.folder = url, n, others, rng, folder
        self.ledger = Ledger(n)
        self.address = f"10.0.0.{n + 1}"
        self.client = self.log_in()
        self.held = Held()  # the manuscript as this session's page holds it
        self.open: int | None = None

    def log_in(self) -> Client:
        """A session of its own, logged in from this person's own address (the server trusts
        X-Forwarded-For from loopback, as from a proxy on its machine)."""
        form = urllib.parse.urlencode({"username": f"c{self.n:02d}", "password": password(self.n)}).encode()
        asked = urllib.request.Request(self.url + "login", data=form, headers={"X-Forwarded-For": self.address})
        self.ledger.requests += 1
        with urllib.request.urlopen(asked, timeout=120) as response:
            name, value = response.headers["set-cookie"].split(";")[0].split("=", 1)
        return Client(self.url, verbose=False, download_files=str(self.folder), httpx_kwargs={"cookies": {name: value}})

    def call(self, *args, api: str, client: Client | None = None):
        self.ledger.requests += 1
        try:
            out = (client or self.client).predict(*args, api_name=api)
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind, none hidden
            self.ledger.unanswered.append(f"{api}: {type(e).__name__}: {str(e)[:200]}")
            self.ledger.answers[f"no answer ({type(e).__name__})"] += 1
            return None
        self.watch(out)
        return out

    def watch(self, out) -> None:
        """A leak is another person's marker in anything shown to this one."""
        for found in MARK.finditer(json.dumps(out, default=str)):
            if int(found.group(1)) != self.n:
                self.ledger.leaks.append(found.group(0))

    def page(self, out, held: Held | None = None) -> dict | None:
        """The outputs by name, the manuscript update applied to the session's copy (`held`: another
        session's, default this person's first)."""
        if out is None:
            return None
        shown = dict(zip(PAGE, out))
        if not (held or self.held).apply(shown["manuscript"]):  # one session calls one at a time: never out of step
            self.ledger.unanswered.append(f"a manuscript update out of step for c{self.n:02d}")
        status = shown["status"] or ""
        self.ledger.answers["refused: " + _kind(status) if status.startswith(NOTHING) else "done"] += 1
        return shown

    def story_id(self, shown: dict) -> int | None:
        value = shown["stories"].get("value") if isinstance(shown["stories"], dict) else shown["stories"]
        return int(value) if isinstance(value, (int, float)) or str(value).isdigit() else None

    def remember(self, shown: dict | None, made: int = 0, held: Held | None = None) -> bool:
        if shown is None or (shown["status"] or "").startswith(NOTHING):
            return False
        sid = self.story_id(shown)
        if sid is None:
            return False
        self.open = sid
        held = held or self.held
        if held.story == sid:
            self.ledger.manuscripts[sid] = list(held.paragraphs)
        self.ledger.steps[sid] += made
        return True

    # -- the actions ---------------------------------------------------------------------

    def start(self) -> None:
        premise = f"A keeper, writer-c{self.n:02d}, finds letter {uuid.uuid4().hex[:6]} from the future."
        title = f"The keeper of writer-c{self.n:02d}"  # in every manuscript shown: a leak would show it
        self.remember(self.page(self.call(premise, title, api="/start")), made=1)

    def switch(self) -> None:
        if self.ledger.manuscripts:
            sid = self.rng.choice(sorted(self.ledger.manuscripts))
            self.remember(self.page(self.call(str(sid), api="/open_story")))

    def step(self) -> None:
        if self.open is not None:
            self.remember(self.page(self.call(self.rng.randint(1, 3), "", api="/step")), made=1)

    def regenerate(self) -> None:
        if self.open is not None:
            self.remember(self.page(self.call(api="/regenerate")), made=1)

    def undo(self) -> None:
        if self.open is not None:
            self.remember(self.page(self.call(api="/undo")))

    def edit(self) -> None:
        if self.open is None:
            return
        if self.call(1, api="/load_paragraph") is None:
            return
        self.remember(self.page(self.call(1, f"Mara, writer-c{self.n:02d}, rewrote this at {time.time():.3f}.", "",
                                          api="/save_paragraph")))

    def stale_edit(self) -> None:
        """A second tab loads paragraph 1; the first saves it; the second's save must be refused."""
        if self.open is None:
            return
        tab, held = self.log_in(), Held()
        try:
            self.page(self.call(str(self.open), api="/open_story", client=tab), held)
            if self.call(1, api="/load_paragraph", client=tab) is None:
                return
            self.edit()
            stale = self.page(self.call(1, f"An old tab of writer-c{self.n:02d} writes over it.", "",
                                        api="/save_paragraph", client=tab), held)
            if stale is not None and not (stale["status"] or "").startswith(NOTHING):
                self.ledger.overwrites += 1
                self.remember(stale, held=held)  # the server took it: the ledger follows what is there
        finally:
            tab.close()

    def note(self) -> None:
        if self.open is None:
            return
        token = f"note {uuid.uuid4().hex[:8]} of writer-c{self.n:02d}"
        out = self.call(None, None, token, "", False, api="/add_note")
        if out is not None and not str(out[-1] or "").startswith(NOTHING):
            self.ledger.notes.setdefault(self.open, []).append(token)
            self.ledger.answers["done"] += 1
        elif out is not None:
            self.ledger.answers["refused: " + _kind(str(out[-1]))] += 1

    def export_import(self) -> None:
        if self.open is None:
            return
        out = self.call("json", True, api="/export")
        if out is None or not isinstance(out[0], dict) or not out[0].get("value"):
            return
        self.ledger.exports += 1
        backup = Path(out[0]["value"])  # downloaded by gradio_client over HTTP, with this person's session
        document = json.loads(backup.read_text())
        sid = self.open
        shown_paragraphs = [_flat(p) for p in self.ledger.manuscripts.get(sid, [])]
        steps = {s["id"]: s for s in document["steps"]}
        path, at = [], document["story"]["head"]
        while at is not None:
            path.append(steps[at]["paragraph"])
            at = steps[at]["parent"]
        if [_flat(p) for p in reversed(path)] != shown_paragraphs:
            self.ledger.export_mismatches += 1
        if self.rng.random() < 0.5:
            shown = self.page(self.call(handle_file(str(backup)), "", api="/import_story"))
            self.remember(shown, made=len(document["steps"]))

    def bad_input(self) -> None:
        choice = self.rng.randrange(4)
        if choice == 0:
            self.page(self.call("", "", api="/start"))
        elif choice == 1:
            self.page(self.call("\x1b[2J\x1b[31m a premise with escapes", "", api="/start"))
        elif choice == 2 and self.open is not None:
            self.page(self.call(1, "x" * 25_000, "", api="/save_paragraph"))
        else:
            form = urllib.parse.urlencode({"username": f"c{self.n:02d}", "password": "wrong guess"}).encode()
            elsewhere = f"203.0.113.{self.n + 1}"  # someone guessing: their misses never lock this person out
            asked = urllib.request.Request(self.url + "login", data=form, headers={"X-Forwarded-For": elsewhere})
            self.ledger.requests += 1
            try:
                urllib.request.urlopen(asked, timeout=60)
                self.ledger.answers["wrong password let in"] += 1
            except urllib.error.HTTPError as e:
                self.ledger.answers[f"refused: login {e.code}"] += 1

    def pry(self) -> None:
        """Open another person's story by its id: it must be "no story with id N"."""
        theirs = [sid for other in list(self.others.values()) if other is not self
                  for sid in list(other.ledger.manuscripts)]
        if not theirs:
            return
        sid = self.rng.choice(theirs)
        shown = self.page(self.call(str(sid), api="/open_story"))
        if shown is not None and shown["status"] != f"{NOTHING} no story with id {sid}":
            self.ledger.leaks.append(f"story {sid} opened by c{self.n:02d}: {shown['status']!r}")
        if self.open is not None:  # back to one's own story
            self.remember(self.page(self.call(str(self.open), api="/open_story")))

    ACTIONS = (("start", 1), ("switch", 2), ("step", 6), ("regenerate", 1), ("undo", 2), ("edit", 2),
               ("stale_edit", 1), ("note", 2), ("export_import", 2), ("bad_input", 2), ("pry", 2))

    def run(self, until: float) -> None:
        names, weights = zip(*self.ACTIONS)
        self.start()
        while time.monotonic() < until:
            action = self.rng.choices(names, weights)[0]
            if action == "start" and len(self.ledger.manuscripts) >= 4:
                action = "step"
            try:
                getattr(self, action)()
            except Exception as e:  # noqa: BLE001 - a fault of this client's own: reported, and it goes on
                self.ledger.unanswered.append(f"client fault in {action}: {type(e).__name__}: {e}")
                self.ledger.answers["client fault"] += 1
            time.sleep(self.rng.uniform(0, 0.3))


def _kind(status: str) -> str:
    """A refusal's kind: its first words, without numbers."""
    words = re.sub(r"\d+", "N", status.removeprefix(NOTHING).strip()).split()
    return " ".join(words[:6])


def _flat(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def database(kind: str):
    """A database URL for the server: a SQLite file, or a fresh PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        yield sqlite_url(Path(tempfile.mkdtemp(prefix="soak-")) / "storyloom.db")
        return
    base = os.environ.get("STORYLOOM_TEST_POSTGRES") or subprocess.run(
        ["sh", "scripts/postgres-for-tests.sh"], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1]).stdout.strip().splitlines()[-1]
    name = f"soak_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def peak_memory(pid: int) -> int:
    """The peak resident memory of a process in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def soak(minutes: float, clients: int, kind: str, seed: int = 0) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    with database(kind) as url, scripted_server() as model:
        db = open_database(url)
        with db.Session.begin() as session:
            for n in range(clients):
                accounts.add_user(session, f"c{n:02d}", password(n))
        port = free_port()
        env = storyloom_env(folder, auth="true", database_url=url, backend="openai", openai_base_url=model,
                            openai_model="script")
        log = open(folder / "serve.log", "w+")
        server = subprocess.Popen([EXE, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
        site = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(site + "login", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None:
                        raise RuntimeError("the server stopped: " + (folder / "serve.log").read_text())
                    time.sleep(0.5)
            people: dict[int, Person] = {}
            for n in range(clients):
                people[n] = Person(site, n, people, random.Random(seed * 1000 + n), folder / f"c{n:02d}")
            started = time.monotonic()
            threads = [threading.Thread(target=p.run, args=(started + minutes * 60,), name=f"c{n:02d}")
                       for n, p in people.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - started
            checked = check(db, people)
            peak = peak_memory(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
            db.close()
    answers = sum((p.ledger.answers for p in people.values()), Counter())
    ledgers = [p.ledger for p in people.values()]
    return {
        "database": kind, "clients": clients, "minutes": round(took / 60, 2),
        "requests": sum(lg.requests for lg in ledgers),
        "requests_a_second": round(sum(lg.requests for lg in ledgers) / took, 1),
        "answers": dict(answers.most_common()),
        "unanswered": [u for lg in ledgers for u in lg.unanswered][:20],
        "stories": sum(len(lg.manuscripts) for lg in ledgers),
        "exports": sum(lg.exports for lg in ledgers),
        **checked,
        "export_mismatches": sum(lg.export_mismatches for lg in ledgers),
        "stale_edits_that_went_through": sum(lg.overwrites for lg in ledgers),
        "seen_across_accounts": sorted({leak for lg in ledgers for leak in lg.leaks}),
        "server_peak_memory_mb": round(peak / 2**20),
    }


def check(db, people: dict[int, Person]) -> dict:
    """The database and the page against every ledger."""
    lost, duplicated, wrong_steps, wrong_manuscripts, missing_memory, notes_off = [], [], [], [], [], []
    with db.Session() as session:
        for n, person in people.items():
            ledger = person.ledger
            owned = {s.id for s in repo.list_stories(session, f"c{n:02d}")}
            lost += [sid for sid in ledger.manuscripts if sid not in owned]
            duplicated += [sid for sid in owned if sid not in ledger.manuscripts]
            for sid in sorted(owned & set(ledger.manuscripts)):
                count = session.scalar(select(func.count()).select_from(Step).where(Step.story_id == sid))
                if count != ledger.steps[sid]:
                    wrong_steps.append(f"story {sid}: {count} steps, ledger {ledger.steps[sid]}")
                story = session.get(Story, sid)
                for step in repo.path_to(session, story.head_step_id):
                    live = session.scalar(select(func.count()).select_from(MemoryEntry).where(
                        MemoryEntry.step_id == step.id, MemoryEntry.kind == "paragraph", MemoryEntry.stale.is_(False)))
                    if not live:
                        missing_memory.append(f"story {sid} step {step.id}")
                texts = list(session.scalars(select(MemoryEntry.text).where(MemoryEntry.story_id == sid,
                                                                            MemoryEntry.kind == "note")))
                for token in ledger.notes.get(sid, []):
                    if texts.count(token) != 1:
                        notes_off.append(f"story {sid}: {token!r} {texts.count(token)} times")
    for person in people.values():  # the page shows each story as the ledger last saw it
        for sid, manuscript in person.ledger.manuscripts.items():
            out = person.client.predict(str(sid), api_name="/open_story")
            held = person.held
            if not held.apply(dict(zip(PAGE, out))["manuscript"]) or held.story != sid or held.paragraphs != manuscript:
                wrong_manuscripts.append(sid)
    return {"stories_lost": lost, "stories_unaccounted": duplicated, "step_counts_off": wrong_steps[:20],
            "manuscripts_off": wrong_manuscripts, "paragraphs_without_memory": missing_memory[:20],
            "notes_lost_or_doubled": notes_off[:20]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = soak(args.minutes, args.clients, args.database, args.seed)
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{args.database}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
