"""End to end with the embedded model: `storyloom serve` as a person runs it, in Debian's
Chromium. Three tests, in order on one page: start a story and watch it stream, step it with
the story's own repetition settings (while a second person steps their own story through the
API, on the same loaded model, the two batched), export it. The server decodes with int8 weights
(STORYLOOM_WEIGHTS=int8), the faster setting, so it is used end to end. Every other page flow is tested with the scripted
model in test_browser.py, and twenty writers at once in test_many_writers.py."""

from __future__ import annotations

import html
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client

from storage.db import open_database, sqlite_url
from tests.conftest import running_app, storyloom_env
from tests.test_many_writers import steps_of
from tests.test_web_accounts import import_backup
from tests.test_web_accounts import page as answer
from tests.web import chromium, inspect_step, pick_plan, shot, start_story, status_says, tab, wait_paragraphs

pytestmark = [pytest.mark.browser, pytest.mark.model]

MODEL_WAIT = 400_000  # ms: a step of the embedded model on two cores takes about a minute


@dataclass
class Served:
    url: str
    data: Path  # the server's data directory
    log: Path  # what it printed


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-model")
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with running_app(storyloom_env(data, weights="int8", preload="true"), log) as url:  # int8: the faster one
        yield Served(url, data, log)


@pytest.fixture(scope="module")
def page(served):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(served.url)
        yield page


def test_1_the_model_loads_as_the_server_starts_then_a_story_streams(page, served):
    # no step asked for yet: the server loads the model on its own as it starts, and says so
    page.locator("#model-status").get_by_text("Model ready (loaded in").wait_for(timeout=MODEL_WAIT)
    assert "models ready in" in served.log.read_text()
    start_story(page, MODEL_WAIT, ("model-1-streaming", "model-2-opening"))
    assert len(page.locator("#manuscript p").first.inner_text().split()) >= 30


def test_2_step_with_the_story_s_repetition_settings_as_another_person_steps(page, served, story_backup):
    tab(page, "Repetition")
    page.locator("#adapter-status").get_by_text("DITTO adapter").wait_for(timeout=30_000)
    guard = page.locator("#set-guard input")
    assert guard.is_checked()  # the default for a new story
    guard.uncheck()
    page.locator("#set-ngram input").fill("4")
    page.locator("#set-save").click()
    status_says(page, "Repetition settings saved", 30_000)
    tab(page, "Write")
    plan = pick_plan(page, 1)
    other = Client(served.url, verbose=False)  # a second person, in a session of their own
    theirs = import_backup(other, story_backup)
    with ThreadPoolExecutor(1) as pool:
        page.locator("#step").click()
        their_step = pool.submit(lambda: answer(other.predict(1, "", api_name="/step")))  # in line behind ours
        wait_paragraphs(page, 2, MODEL_WAIT)
        status_says(page, "Paragraph 2 written", MODEL_WAIT)
        stepped = their_step.result(timeout=MODEL_WAIT / 1000)
    assert "Paragraph 3 written" in stepped["status"], stepped["status"]
    db = open_database(sqlite_url(served.data / "storyloom.db"))
    try:
        paragraphs = steps_of(db, theirs)
    finally:
        db.close()
    assert len(paragraphs) == 3 and paragraphs[2].strip()[:80] in stepped["manuscript"]
    assert paragraphs[2].strip()[:80] not in page.locator("#manuscript").inner_text()  # each their own story
    assert served.log.read_text().count("loading the language model") == 1  # one model for both
    text = inspect_step(page, plan)
    assert "sentence guard off" in text and "no-repeat 4-grams" in text and "DITTO adapter on" in text
    assert "assets/ditto-smollm2-135m in use" in text  # the model really ran with the shipped adapter
    shot(page, "model-3-stepped")


def test_3_export_an_epub_that_passes_epubcheck(page, tmp_path):
    from tests.test_formats import epubcheck

    first = page.locator("#manuscript p").first.inner_text()
    tab(page, "Files")
    page.locator("#export-format").get_by_text("EPUB").click()
    page.locator("#export").click()
    status_says(page, "ready to download", 60_000)
    page.locator("#download").get_by_text(".epub").wait_for(timeout=30_000)
    with page.expect_download(timeout=60_000) as arriving:
        page.locator("#download").click()
    epub = tmp_path / arriving.value.suggested_filename
    arriving.value.save_as(epub)
    check = epubcheck(epub)
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(epub) as z:
        body = html.unescape(re.sub(r"<[^>]+>", " ", " ".join(z.read(n).decode() for n in z.namelist())))
    assert " ".join(first.split()[:8]) in " ".join(body.split())
    shot(page, "model-4-exported")
