"""The `storyloom` command. With the embedded LLM in separate processes, as a person runs it: a
new story, a step killed mid-way, clarify, and a second process reading the memory the first
filed. In this process, on stories imported from a backup: steps written by the script behind
an OpenAI-compatible API, memory, export and import, and the bad-input cases (each one clear
line, nothing written)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXE, storyloom_here
from tests.fakes import scripted_server

PREMISE = "A lighthouse keeper on a remote island finds a message in a bottle addressed to her."


def run(env, *args, timeout=900):
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def env_for(data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    return {**env, "STORYLOOM_DATA_DIR": str(data_dir), **extra}


@dataclass
class Written:
    """What the processes of `written` printed and left."""

    env: dict
    story_id: str
    new: subprocess.CompletedProcess
    opened: str  # `show` after `new`
    seen: bytes  # the terminal of a `step` killed while it wrote
    after_kill: str  # `show` after that
    step: subprocess.CompletedProcess  # `step --plan 2` after the kill (in this process, the script writing)


@pytest.fixture(scope="module")
def written(tmp_path_factory, model_folder) -> Written:
    """One story: `new` and a `step` killed while it writes, with the embedded model, then a
    `step` that completes, with the script behind an OpenAI-compatible API (the embedded model's
    steps are tested in test_browser_model.py); shared by the tests below. The processes read the
    model's weights from the folder that loads at once, with the shipped DITTO adapter as by
    default (tests/conftest.py); the GGUF itself is read by every `storyloom serve` test."""
    from generation.adapters import DEFAULT_ADAPTER

    data = tmp_path_factory.mktemp("cli")
    env = env_for(data, STORYLOOM_MODEL=str(model_folder), STORYLOOM_DITTO_ADAPTER=str(DEFAULT_ADAPTER),
                  STORYLOOM_WEIGHTS="int8")  # the faster setting: its copies made at load, DITTO folded in
    new = run(env, "new", "--premise", PREMISE)
    assert new.returncode == 0, new.stderr
    story_id = new.stdout.strip().splitlines()[-1]
    assert story_id.isdigit()
    opened = run(env, "show", story_id).stdout
    seen = killed_mid_step(env, story_id)
    after_kill = run(env, "show", story_id).stdout
    with scripted_server() as base:
        args = ["step", story_id, "--plan", "2"]
        status, out, err = storyloom_here(data, *args, **served_by(base))
    return Written(env, story_id, new, opened, seen, after_kill, subprocess.CompletedProcess(args, status, out, err))


def served_by(base: str) -> dict[str, str]:
    """The settings for a model behind an OpenAI-compatible API at `base`."""
    return {"STORYLOOM_BACKEND": "openai", "STORYLOOM_OPENAI_BASE_URL": base, "STORYLOOM_OPENAI_MODEL": "script"}


def killed_mid_step(env: dict, story_id: str) -> bytes:
    """`step` killed (SIGKILL) once it has written 20 words or more; what its terminal showed."""
    controller, terminal = pty.openpty()  # a terminal on stderr, so the CLI reports its progress
    process = subprocess.Popen([EXE, "step", story_id], env=env, stdout=subprocess.DEVNULL,
                               stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    seen, deadline = b"", time.monotonic() + 300
    while b"writing paragraph: 2" not in seen and time.monotonic() < deadline:  # 20+ words in
        if select.select([controller], [], [], 1.0)[0]:
            seen += os.read(controller, 4096)
    process.send_signal(signal.SIGKILL)
    process.wait()
    os.close(controller)
    return seen


def _paragraphs(markdown: str) -> list[str]:
    return [p for p in markdown.split("\n\n")[1:] if p.strip()]


@pytest.mark.model
def test_new_and_a_step_write_two_paragraphs_with_plans(written):
    assert "Plans:\n  1. " in written.new.stdout and "  3. " in written.new.stdout
    assert written.step.returncode == 0, written.step.stderr
    assert "step 1/1: paragraph 2 written" in written.step.stderr
    shown = run(written.env, "show", written.story_id)  # a second process reads the same manuscript
    assert shown.returncode == 0
    paragraphs = _paragraphs(shown.stdout)
    assert len(paragraphs) == 2
    assert all(len(p.split()) >= 60 for p in paragraphs)
    assert paragraphs[-1] in written.step.stdout
    listed = run(written.env, "list")
    assert listed.stdout.startswith(f"{written.story_id}\t")


@pytest.mark.model
def test_a_process_killed_mid_step_leaves_the_story_as_it_was(written):
    assert b"writing paragraph" in written.seen, written.seen[-500:]
    assert written.after_kill == written.opened and len(_paragraphs(written.opened)) == 1
    # the story still works after the crash: the next step wrote paragraph 2
    assert written.step.returncode == 0, written.step.stderr
    assert len(_paragraphs(run(written.env, "show", written.story_id).stdout)) == 2


def test_step_count_writes_each_step_and_shows_its_progress(tmp_path, story_backup):
    """`step --count 2`, with the script behind an OpenAI-compatible API."""
    story_id = import_into(tmp_path, story_backup)
    with scripted_server() as base:
        status, out, err = storyloom_here(tmp_path, "step", story_id, "--count", "2", **served_by(base))
    assert status == 0, err
    assert "step 1/2: paragraph 3 written" in err and "step 2/2: paragraph 4 written" in err, err
    paragraphs = _paragraphs(storyloom_here(tmp_path, "show", story_id)[1])
    assert len(paragraphs) == 4 and paragraphs[-1] in out


@pytest.mark.model
def test_a_second_process_retrieves_from_the_rebuilt_index(written):
    env, story_id = written.env, written.story_id
    second_paragraph = _paragraphs(run(env, "show", story_id).stdout)[1]
    probe = (
        "from app.config import Settings\n"
        "from app.wiring import build_service\n"
        "import sys\n"
        "service = build_service(Settings())\n"
        f"hits = service.search_memory({story_id}, sys.stdin.read(), k=3)\n"
        "import json; print(json.dumps([[h.score, h.text] for h in hits]))\n"
    )
    query = " ".join(second_paragraph.split()[:40])
    out = subprocess.run([sys.executable, "-c", probe], env=env, input=query, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(hits) == 3
    assert hits[0][0] > 0.1  # the fused rank score of a hit found by meaning and by words
    # the paragraph's own chunk is among them (its summary, which shares its words, may rank above it)
    assert any(text.split()[:10] == second_paragraph.split()[:10] for _, text in hits)


def test_memory_lists_entries_with_provenance_and_searches_with_scores(own_story):
    data, story_id = own_story
    status, listed, err = storyloom_here(data, "memory", story_id)
    assert status == 0, err
    rows = [line.split("\t") for line in listed.strip().splitlines()[1:]]
    assert {r[1] for r in rows} == {"paragraph", "summary"}
    assert {r[2] for r in rows} == {"paragraph 1", "paragraph 2"}
    second = _paragraphs(storyloom_here(data, "show", story_id)[1])[1]
    status, found, err = storyloom_here(data, "memory", story_id, "--query", " ".join(second.split()[:30]), "--k", "3",
                                        "--json")
    assert status == 0, err
    hits = json.loads(found)["by_meaning"]
    assert len(hits) == 3 and hits[0]["where"] == "paragraph 2"
    closest = max(hits, key=lambda h: h["cosine"])  # the chunk that starts with the query's words
    assert closest["where"] == "paragraph 2" and closest["kind"] == "paragraph" and closest["cosine"] > 0.7
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


BAD_INPUT = [
    (["new", "--premise", ""], {}, "the premise is empty"),
    (["new", "--premise", "x" * 100_000], {}, "100,000 characters"),
    (["step", "9999"], {}, "no story with id 9999"),
    (["show", "9999"], {}, "no story with id 9999"),
    (["step", "{id}", "--plan", "7"], {}, "there is no plan 7"),
    (["step", "{id}", "--count", "0"], {}, "--count must be at least 1"),
    (["new", "--premise", "p"], {"STORYLOOM_MODEL": "/no/such/model.gguf"}, "model not found"),
    (["list"], {"STORYLOOM_DATABASE_URL": "sqlite:////no/such/dir/x.db"}, "cannot open database"),
    (["list"], {"STORYLOOM_DATABASE_URL": "nosuchdriver://x"}, "cannot use database URL"),
    (["list"], {"STORYLOOM_RETRIES": "0"}, "bad setting: STORYLOOM_RETRIES"),
    (["list"], {"STORYLOOM_DATA_DIR": "/proc/no/such/place"}, "cannot create the data directory"),
    (["step", "{id}", "--plan", "0"], {}, "there is no plan 0"),
    (["memory", "9999"], {}, "no story with id 9999"),
    (["memory", "{id}", "--query", "harbour", "--k", "0"], {}, "ask for 1 to 50 entries"),
    (["memory", "{id}", "--query", "x" * 50_000], {}, "the query has 50,000 characters"),
    (["import", "/no/such/draft.txt"], {}, "cannot read /no/such/draft.txt"),
    (["import", "/dev/null"], {}, "null is empty"),
    (["export", "{id}", "--format", "pdf", "--out", "/no/such/dir/x.pdf"], {}, "cannot write /no/such/dir/x.pdf"),
    (["sca", "clarify", " "], {}, "the instruction is empty"),
    (["sca", "clarify", "x" * 20_000], {}, "20,000 characters"),
    (["sca", "clarify", "Ella lleva la llave al faro después de la pelea."], {}, "does not look like English"),
    (["sca", "clarify", "Mara climbs the tower.", "--candidates", "20"], {}, "candidates must be 0 to 10"),
    (["sca", "clarify", "Mara climbs the tower.", "--story", "9999"], {}, "no story with id 9999"),
]


def import_into(data: Path, backup: Path) -> str:
    """A two-paragraph story (from the backup: no model call) in `data`; its id."""
    status, out, err = storyloom_here(data, "import", str(backup))
    assert status == 0, err
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def imported(tmp_path_factory, story_backup) -> tuple[Path, str]:
    """A data directory with one story, for the bad-input cases (which change nothing)."""
    data = tmp_path_factory.mktemp("cli-here")
    return data, import_into(data, story_backup)


@pytest.fixture
def own_story(tmp_path, story_backup) -> tuple[Path, str]:
    """A data directory of this test's own, with one story."""
    data = tmp_path / "data"
    return data, import_into(data, story_backup)


@pytest.mark.parametrize("args, extra_env, message", BAD_INPUT)
def test_bad_input_is_one_clear_line_and_writes_nothing(imported, args, extra_env, message):
    data, story_id = imported
    before = storyloom_here(data, "show", story_id)[1]
    status, _, err = storyloom_here(data, *[a.replace("{id}", story_id) for a in args], **extra_env)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("storyloom: error: ") and message in lines[0], err
    assert storyloom_here(data, "show", story_id)[1] == before
    assert storyloom_here(data, "list")[1].count("\n") == 1


@pytest.mark.model
def test_clarify_prints_the_ranked_wordings_as_json(written):
    env, story_id = written.env, written.story_id
    text = "She goes up there with it after that and sees what happens."
    done = run(env, "sca", "clarify", text, "--story", story_id, "--candidates", "1", timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["original"] == text and result["ig_steps"] == 8
    assert any(c["origin"] == "yours" and c["text"] == text for c in result["candidates"])
    ranked = [c["comprehension"] for c in result["candidates"] if c["comprehension"] is not None]
    assert ranked == sorted(ranked, reverse=True) and "Integrated Gradients" in done.stderr  # progress shown


def test_export_a_backup_and_a_pdf_then_import_the_backup(own_story, tmp_path):
    data, story_id = own_story
    out = tmp_path / "out"
    out.mkdir()
    files = {}
    for fmt in ("json", "pdf"):
        status, done, err = storyloom_here(data, "export", story_id, "--format", fmt, "--out", str(out))
        assert status == 0, err
        files[fmt] = Path(done.strip().splitlines()[-1])
        assert files[fmt].parent == out and files[fmt].suffix == f".{fmt}" and files[fmt].stat().st_size > 1000
    text = subprocess.run(["pdftotext", str(files["pdf"]), "-"], capture_output=True, text=True, check=True).stdout
    shown = storyloom_here(data, "show", story_id)[1]
    assert " ".join(_paragraphs(shown)[0].split()[:6]) in " ".join(text.split())
    status, done, err = storyloom_here(data, "import", str(files["json"]))
    assert status == 0, err
    copy = done.strip().splitlines()[-1]
    assert copy.isdigit() and copy != story_id
    assert storyloom_here(data, "show", copy)[1] == shown
    status, _, err = storyloom_here(data, "export", copy, "--format", "json", "--out", str(out / "again.json"))
    assert status == 0, err
    assert json.loads((out / "again.json").read_text()) == json.loads(files["json"].read_text())


def test_export_does_not_replace_a_file_unless_forced(own_story, tmp_path):
    data, story_id = own_story
    kept = tmp_path / "mine.md"
    kept.write_text("my own notes")
    status, _, err = storyloom_here(data, "export", story_id, "--format", "md", "--out", str(kept))
    assert status == 1 and err == f"storyloom: error: {kept} exists; pass --force to replace it\n"
    assert kept.read_text() == "my own notes"
    status, _, err = storyloom_here(data, "export", story_id, "--format", "md", "--out", str(kept), "--force")
    assert status == 0, err
    assert kept.read_text().startswith("# ")


def test_a_password_on_stdin_that_is_not_utf8_is_one_clear_line(tmp_path):
    status, _, err = storyloom_here(tmp_path, "user", "add", "ada", "--password-stdin", stdin=b"\xff\xfe secret\n")
    assert status == 1 and err == "storyloom: error: the password on stdin is not UTF-8 text; nothing was changed\n"
    assert storyloom_here(tmp_path, "user", "list")[1] == ""


ESCAPES = "\x1b[2J\x1b[31m"  # clear the screen, then write in red


def test_stored_text_reaches_the_terminal_with_its_control_characters_made_visible(tmp_path, story_backup):
    """Text stored before the input checks, or imported from a backup, may hold terminal escapes:
    list, show and memory print them as visible escapes, never raw, and other text as it is."""
    from storage import backup

    document = json.loads(story_backup.read_bytes())
    document["story"]["title"] = f"The {ESCAPES}Keeper’s Letter 🦊\x9b"
    first = document["steps"][0]
    first.update(paragraph=f"{ESCAPES}{first['paragraph']}\rThe end.\x07", chapter=f"One{ESCAPES}")
    entry = document["memories"][0]
    text = entry["text"]
    entry.update(text=f"{text}{ESCAPES}", keys=[f"Mara{ESCAPES}"])
    document["sha256"] = backup.checksum(document)
    path = tmp_path / "escapes.json"
    path.write_text(json.dumps(document))
    data = tmp_path / "data"
    story_id = import_into(data, path)
    visible = "\\x1b[2J\\x1b[31m"
    query = " ".join(text.split()[:12])
    for args in (["list"], ["show", story_id], ["memory", story_id], ["memory", story_id, "--query", query]):
        status, out, err = storyloom_here(data, *args)
        assert status == 0, err
        assert not [c for c in "\x1b\x9b\x07\r" if c in out + err], (args, out)
        assert visible in out, (args, out)
    assert storyloom_here(data, "list")[1] == f"{story_id}\tThe {visible}Keeper’s Letter 🦊\\x9b\n"
    shown = storyloom_here(data, "show", story_id)[1]
    assert f"## One{visible}\n\n{visible}" in shown and "\\rThe end.\\x07\n" in shown
    listed = storyloom_here(data, "memory", story_id)[1]
    assert f"[keys: Mara{visible}] {text}{visible}\n" in listed
