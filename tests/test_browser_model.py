"""End to end with the embedded model: `storyloom serve` as a person runs it, in Debian's
Chromium. Three tests, in order on one page: start a story and watch it stream, step it with
the story's own repetition settings, export it. Every other page flow is tested with the
scripted model in test_browser.py."""

from __future__ import annotations

import html
import re
import zipfile

import pytest

from tests.conftest import running_app, storyloom_env
from tests.web import chromium, inspect_step, pick_plan, shot, start_story, status_says, tab, wait_paragraphs

pytestmark = [pytest.mark.browser, pytest.mark.model]

MODEL_WAIT = 400_000  # ms: a step of the embedded model on two cores takes about a minute


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    env = storyloom_env(tmp_path_factory.mktemp("browser-model"))
    with running_app(env, tmp_path_factory.mktemp("log") / "serve.log") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        yield page


def test_1_start_a_story_and_watch_it_stream(page):
    start_story(page, MODEL_WAIT, ("model-1-streaming", "model-2-opening"))
    assert len(page.locator("#manuscript p").first.inner_text().split()) >= 30


def test_2_step_with_the_story_s_repetition_settings(page):
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
    page.locator("#step").click()
    wait_paragraphs(page, 2, MODEL_WAIT)
    status_says(page, "Paragraph 2 written", MODEL_WAIT)
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
