"""The models load in the background as the server starts (app/service/readiness.py): where that
stands, what a step asked for meanwhile shows, and the page's header, in the real browser with a
scripted model whose loading a test holds. test_browser_model.py checks the same header with the
embedded model loading for real."""

from __future__ import annotations

import threading
import time

import pytest

from app.service.readiness import FAILED, IDLE, LOADING, READY, Readiness
from app.ui.page import stream
from tests.web import PacedBackend, chromium, paragraphs, scripted_app, shot


def until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return found


def test_loading_moves_from_idle_to_ready_once_and_says_what_loads():
    gate, calls = threading.Event(), []

    def slow():
        calls.append("model")
        gate.wait(10)

    ready = Readiness([("the language model", slow), ("the embedding model", lambda: calls.append("embedder"))])
    assert ready.state().state == IDLE and ready.waiting() is None
    ready.start()
    ready.start()  # a second start loads nothing again
    now = until(lambda: ready.state() if calls else None)
    assert now.state == LOADING and now.part == "the language model"
    assert "Loading the language model" in ready.waiting()
    gate.set()
    done = until(lambda: ready.state() if ready.state().state == READY else None)
    assert calls == ["model", "embedder"]
    assert ready.waiting() is None and done.line.startswith("Model ready (loaded in")


def test_a_load_that_fails_says_why_and_leaves_steps_to_try_again(caplog):
    def broken():
        raise OSError("no such file: model.gguf")

    ready = Readiness([("the language model", broken)])
    ready.start()
    failed = until(lambda: ready.state() if ready.state().state == FAILED else None)
    assert "OSError: no such file: model.gguf" in failed.line and "Each step will try again" in failed.line
    assert ready.waiting() is None  # a step is not held back: it loads (and fails) on its own
    assert "loading the language model failed" in caplog.text


def test_an_action_waiting_on_loading_says_so_until_its_text_comes():
    gate = threading.Event()
    lines = iter(["Loading the model … 1 s", "Loading the model … 2 s"])

    def action(on_text):
        gate.wait(10)
        on_text("paragraph", "The lamp")
        return "done"

    def waiting():
        line = next(lines, None)
        if line is None:
            gate.set()  # loaded: the action goes on
        return line

    events = list(stream(action, waiting=waiting))
    assert events[:2] == [("wait", "Loading the model … 1 s"), ("wait", "Loading the model … 2 s")]
    assert events[-2][:3] == ("text", "paragraph", "The lamp") and events[-1] == "done"


class LoadingBackend(PacedBackend):
    """The scripted model with a load that waits for the test, as the real one takes its 17 s: a
    call waits for the load, as the real backend's does."""

    def __init__(self):
        super().__init__()
        self.loaded = threading.Event()

    def load(self):
        self.loaded.wait(60)

    def generate(self, request):
        self.load()
        yield from super().generate(request)


@pytest.mark.browser
def test_the_page_shows_the_model_loading_and_a_step_asked_meanwhile_waits_in_view(tmp_path, embedder):
    model = LoadingBackend()
    ready = Readiness([("the language model", model.load)])
    with scripted_app(tmp_path, embedder, model, readiness=ready) as (url, _), chromium() as browser:
        ready.start()
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("#model-status").get_by_text("Loading the language model").wait_for(timeout=30_000)
        page.locator("#premise textarea").fill("A lighthouse keeper finds a letter in a bottle.")
        page.locator("#start").click()
        page.locator("#writing").get_by_text("Your step starts as soon as it is loaded").wait_for(timeout=30_000)
        shot(page, "loading-1-step-waits")
        assert paragraphs(page) == 0
        model.loaded.set()
        page.locator("#model-status").get_by_text("Model ready (loaded in").wait_for(timeout=30_000)
        page.locator("#plans input[type=radio]").nth(2).wait_for(timeout=60_000)
        assert paragraphs(page) == 1
        shot(page, "loading-2-ready")
