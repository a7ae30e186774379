"""The login page in a real browser (Debian's Chromium via Playwright) against `storyloom serve`
with accounts on: a wrong password is refused on the page, the right one opens the app, each
person's story list holds their own stories only, and Log out ends the session. No model call: the story is imported."""

from __future__ import annotations

import pytest

from tests.test_web_accounts import PASSWORDS, client, import_backup
from tests.web import ARTIFACTS, chromium

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(accounts_server, story_backup):
    """The accounts server, with a story of ada's and one of bob's."""
    return accounts_server, {name: import_backup(client(accounts_server, name), story_backup) for name in ("ada", "bob")}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def log_in(browser, url: str, name: str, password: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    return page


def story_options(page, expected: str) -> list[str]:
    """The story list's options, once `expected` is among them (the page's load event fills it)."""
    for _ in range(30):
        page.locator("#stories input").click()
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        if any(option.startswith(expected) for option in options):
            return options
        page.wait_for_timeout(1000)
    raise AssertionError(f"{expected!r} never appeared among {options}")


def test_a_wrong_password_is_refused_on_the_login_page(server, browser):
    url, _ = server
    page = log_in(browser, url, "ada", "not the password")
    page.get_by_role("alert").get_by_text("Wrong name or password").wait_for(timeout=30_000)
    assert page.get_by_label("Name").input_value() == "ada"  # what was typed stays
    assert page.locator("#premise").count() == 0  # the app is not shown
    page.screenshot(path=ARTIFACTS / "login-refused.png")


def test_each_person_lists_only_their_own_stories(server, browser):
    url, stories = server
    for name, other in (("ada", "bob"), ("bob", "ada")):
        page = log_in(browser, url, name, PASSWORDS[name])
        page.locator("#premise").wait_for(timeout=60_000)
        options = story_options(page, f"{stories[name]}: ")
        assert not any(option.startswith(f"{stories[other]}: ") for option in options), options
        page.screenshot(path=ARTIFACTS / f"login-{name}.png")
        page.locator("#who").get_by_text(f"Logged in as {name}").wait_for(timeout=10_000)

    page.get_by_role("button", name="Log out").click()  # back to the login page, and the session ended
    page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    page.goto(url)
    page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    assert page.context.cookies() == []
