"""Story steps through a real inference server: Hugging Face's `transformers serve`, started here
with the embedded model (written as a plain folder with DITTO merged in, as `storyloom
model-folder` does), asked through the OpenAI-compatible backend with both of its APIs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from generation.remote import OpenAIBackend
from tests.conftest import free_port

pytestmark = pytest.mark.model
PREMISE = "A lighthouse keeper on a remote island finds a message in a bottle addressed to her."


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_folder):
    """(base URL, model name = its folder) of a running `transformers serve`."""
    from generation.adapters import DEFAULT_ADAPTER
    from generation.local import TransformersBackend, save_folder

    folder = tmp_path_factory.mktemp("served") / "smollm2"
    model, tokenizer = TransformersBackend(str(model_folder), "cpu", adapter=DEFAULT_ADAPTER, weights="float32").load()
    save_folder(model, tokenizer, folder)
    port = free_port()
    log = (folder.parent / "serve.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("transformers")), "serve", str(folder), "--host", "127.0.0.1",
         "--port", str(port), "--device", "cpu", "--dtype", "float32"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"transformers serve did not start:\n{(folder.parent / 'serve.log').read_text()[-3000:]}")
        time.sleep(1)
    yield base, str(folder)
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def sqlite_db(tmp_path):
    from storage.db import open_database, sqlite_url

    database = open_database(sqlite_url(tmp_path / "served.db"))  # the server is under test here, not storage
    yield database
    database.close()


def _service(backend, embedder, db):
    from app.service import StoryService
    from generation.recurrence import Writer
    from memory.longterm import LongTermMemory

    return StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend, retries=5))


def test_a_story_opens_through_the_chat_api(served, embedder, sqlite_db):
    base, name = served
    backend = OpenAIBackend(base, name, api="chat", timeout=120)
    service = _service(backend, embedder, sqlite_db)
    opening = service.new_story(PREMISE)
    assert len(opening.paragraphs) == 1 and len(opening.paragraphs[0].split()) >= 60
    assert opening.short_memory and opening.plans  # chat cannot start the reply with "Next,": fewer plans pass
    trace = service.inspect(opening.id)
    assert trace["model"] == backend.name and "chat" in trace["model"]
    assert trace["decoding"]["adapter"].startswith("no DITTO switch here and no decode-time guard")


def test_story_steps_through_the_completions_api_with_exact_prompts(served, embedder, sqlite_db, story_backup):
    base, name = served
    backend = OpenAIBackend(base, name, api="completions", tokenizer=name, timeout=120)
    service = _service(backend, embedder, sqlite_db)
    opened = service.manuscripts.import_backup(story_backup.read_bytes())  # a story to go on with, no model call
    assert len(opened.plans) == 3
    view = service.step(opened.id, plan=2)
    assert len(view.paragraphs) == 3 and view.paragraphs[2] not in view.paragraphs[:2]
    trace = service.inspect(opened.id)
    assert trace["plan"] == opened.plans[1] and trace["model"] == backend.name
    assert all(c["prompt"] and c["output"] for c in trace["calls"])
    assert all("<|im_start|>assistant" in c["prompt"] for c in trace["calls"])  # rendered here, template and all
    hits = service.search_memory(opened.id, view.paragraphs[2][:300])
    assert any(view.paragraphs[2][:40] in h.text for h in hits)  # filed in the long-term memory
