"""The app in a real browser: Debian's Chromium driven by Playwright, against `storyloom serve`
with the embedded model. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EXE = str(Path(sys.executable).with_name("storyloom"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env["STORYLOOM_DATA_DIR"] = str(tmp_path_factory.mktemp("browser"))
    log = open(tmp_path_factory.mktemp("log") / "serve.log", "w+")
    process = subprocess.Popen([EXE, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert process.poll() is None, open(log.name).read()
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the app did not start: " + open(log.name).read())
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        yield page
        browser.close()


def paragraphs(page) -> int:
    return page.locator("#manuscript p").count()


@pytest.mark.slow
def test_stepping_before_a_story_exists_shows_a_message(page):
    page.locator("#step").click()
    page.locator("#status").get_by_text("Start or open a story first.").wait_for(timeout=15_000)
    page.screenshot(path=ARTIFACTS / "00-error-no-story.png")


@pytest.mark.slow
def test_start_a_story_pick_a_plan_and_step(page):
    page.locator("#premise textarea").fill(
        "A lighthouse keeper on a remote island finds a message in a bottle addressed to her.")
    page.locator("#start").click()
    page.locator("#writing").get_by_text("Writing").first.wait_for(timeout=120_000)  # it streams
    page.screenshot(path=ARTIFACTS / "01-writing.png")
    page.locator("#plans input[type=radio]").nth(2).wait_for(timeout=300_000)
    assert paragraphs(page) == 1
    assert page.locator("#short-memory textarea").input_value().strip()
    page.screenshot(path=ARTIFACTS / "02-opening.png", full_page=True)

    page.locator("#plans label").nth(1).click()
    page.wait_for_function("document.querySelector('#instruction textarea').value.length > 10")
    plan = page.locator("#instruction textarea").input_value()
    assert plan in page.locator("#plans").inner_text()
    page.locator("#step").click()
    page.wait_for_function("document.querySelectorAll('#manuscript p').length == 2", timeout=300_000)
    page.locator("#status").get_by_text("Paragraph 2 written").wait_for(timeout=30_000)
    assert page.locator("#plans input[type=radio]").count() == 3
    page.screenshot(path=ARTIFACTS / "03-after-step.png", full_page=True)
