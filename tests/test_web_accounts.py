"""Accounts over HTTP: the real `storyloom serve` with STORYLOOM_AUTH=true, users made with
`storyloom user add`, and clients that log in through the login route (gradio_client, and plain
HTTP for the lockout). Stories come in as JSON backups, so no model call is needed."""

from __future__ import annotations

import hashlib
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from app.ui.manuscript import text_of
from tests.conftest import EXE, storyloom_env, storyloom_here

# eve is for the lockout test, dan for ending sessions: the others' logins stay as they are for
# every other test on the server
PASSWORDS = {"ada": "ada's long password", "bob": "bob's long password", "eve": "eve's long password",
             "dan": "dan's long password"}
HOME, AWAY = "198.51.100.7", "203.0.113.9"  # an owner's address, and someone else's (X-Forwarded-For)


def add_users(data: Path) -> None:
    """ada, bob and eve, made with `storyloom user add --password-stdin` (in this process) in `data`."""
    for name, password in PASSWORDS.items():
        status, _, err = storyloom_here(data, "user", "add", name, "--password-stdin", stdin=password + "\n")
        assert status == 0 and err.endswith(f"added {name}\n"), err


@pytest.fixture
def server(accounts_server):
    return accounts_server


# what a page-changing event returns to an API client, in order (the story's id is session state)
PAGE = ("stories", "manuscript", "short_memory", "plans", "instruction", "writing", "version", "status")


def page(outputs: tuple) -> dict:
    """The outputs by name; "manuscript" as the text the update carries (app.ui.manuscript: only
    what changed since this session was last sent the manuscript), "pane" as the update itself."""
    assert len(outputs) == len(PAGE), outputs
    shown = dict(zip(PAGE, outputs))
    shown["pane"] = shown["manuscript"]
    shown["manuscript"] = text_of(shown["pane"])
    return shown


def client(url: str, name: str) -> Client:
    return Client(url, auth=(name, PASSWORDS[name]), verbose=False)


def log_in(url: str, name: str, password: str, address: str = HOME) -> tuple[int, str]:
    """A login through the login route from `address` (the server trusts X-Forwarded-For from
    loopback, as from a proxy on its own machine)."""
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    asked = urllib.request.Request(url + "login", data=form, headers={"X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(asked, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def own_stories(person: Client) -> list[int]:
    return [value for _, value in person.predict(api_name="/list_own_stories")["choices"]]


def import_backup(person: Client, path) -> int:
    status = page(person.predict(handle_file(str(path)), "", api_name="/import_story"))["status"]
    return int(re.search(r"as story (\d+)", status).group(1))


def test_without_a_login_nothing_is_served(server):
    with pytest.raises(Exception, match="(?i)auth|login|401|credentials"):
        Client(server, verbose=False)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server + "gradio_api/info", timeout=30)
    assert refused.value.code == 401


def test_each_person_sees_and_opens_only_their_own_stories(server, story_backup):
    ada, bob = client(server, "ada"), client(server, "bob")
    adas = import_backup(ada, story_backup)
    bobs = import_backup(bob, story_backup)
    assert adas in own_stories(ada) and bobs not in own_stories(ada)
    assert bobs in own_stories(bob) and adas not in own_stories(bob)

    opened = page(client(server, "bob").predict(str(bobs), api_name="/open_story"))  # a new page: all of it
    assert "The Keeper" in opened["manuscript"] and "Mara climbed" in opened["manuscript"]
    for person, other in ((bob, adas), (ada, bobs)):  # typed into the story box, as a person could
        refused = page(person.predict(str(other), api_name="/open_story"))
        assert refused["status"] == f"**Nothing was written:** no story with id {other}"
        assert "Mara" not in str(refused)
    nowhere = page(bob.predict("999999", api_name="/open_story"))  # as a story nobody has
    assert nowhere["status"] == "**Nothing was written:** no story with id 999999"


def test_a_hundred_wrong_guesses_cannot_lock_the_owner_out(server):
    answers = [log_in(server, "eve", f"guess number {n}", AWAY) for n in range(100)]
    assert {code for code, _ in answers} == {400}
    wrong = '"Wrong name or password"'
    locked = '"Too many failed logins for this account from your address: try again in'
    assert all(wrong in detail for _, detail in answers[:5])
    assert all(wrong in detail or locked in detail for _, detail in answers)
    # locked after the 5th: 2 s, then 4, 8...; a miss is counted (and hashed) only when a lock ran
    # out, which a slow machine may let happen once or twice in a hundred quick tries
    assert 5 <= sum(wrong in detail for _, detail in answers) <= 8
    assert log_in(server, "nobody", "some password", AWAY) == (400, f'{{"detail":{wrong}}}')  # as a wrong password
    right = log_in(server, "eve", PASSWORDS["eve"], AWAY)
    assert right[0] == 400 and locked in right[1]  # from the guesser's address, even the right password waits
    assert log_in(server, "eve", PASSWORDS["eve"], HOME) == (200, '{"success":true}')  # eve, from her own
    assert isinstance(own_stories(client(server, "eve")), list)


def test_one_login_is_checked_at_a_time_per_address(server):
    from concurrent.futures import ThreadPoolExecutor

    def burst(addresses: list[str]) -> list[int]:
        with ThreadPoolExecutor(len(addresses)) as pool:
            return [code for code, _ in pool.map(lambda a: log_in(server, "dan", PASSWORDS["dan"], a), addresses)]

    crowd = burst(["192.0.2.50"] * 4)  # a hash takes about half a second: the others come while it runs
    assert 200 in crowd and 429 in crowd and set(crowd) <= {200, 429}, crowd
    assert burst([f"192.0.2.{n}" for n in range(60, 63)]) == [200] * 3  # different addresses: all checked


def session_cookie(url: str, name: str) -> str:
    form = urllib.parse.urlencode({"username": name, "password": PASSWORDS[name]}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "login", data=form), timeout=30) as response:
        status, headers = response.status, response.headers
    cookie = headers["set-cookie"]
    assert status == 200 and cookie.startswith("storyloom-session=")
    assert "HttpOnly" in cookie and "Max-Age=43200" in cookie and "SameSite=Lax" in cookie, cookie
    return cookie.split(";")[0]


def answer(url: str, path: str, cookie: str, method: str = "GET") -> int:
    asked = urllib.request.Request(url + path, headers={"Cookie": cookie}, method=method)
    try:
        with urllib.request.urlopen(asked, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_logging_out_takes_a_post_and_ends_that_session(server):
    first, second = session_cookie(server, "dan"), session_cookie(server, "dan")
    assert answer(server, "gradio_api/info", first) == 200
    assert answer(server, "logout", first) == 405  # a link (a GET) logs nobody out
    assert answer(server, "gradio_api/info", first) == 200
    out = urllib.request.Request(server + "logout", data=b"", headers={"Cookie": first})
    with urllib.request.urlopen(out, timeout=30) as response:  # sent on to the login page
        assert response.url == server + "login"
    assert answer(server, "gradio_api/info", first) == 401
    assert answer(server, "gradio_api/info", second) == 200  # dan's other session goes on


def test_a_session_ends_when_it_expires_and_when_the_password_changes(server, accounts_folder):
    import sqlite3

    old, new = session_cookie(server, "dan"), session_cookie(server, "dan")
    with sqlite3.connect(accounts_folder / "storyloom.db") as database:  # the clock moves past 12 hours
        token_hash = hashlib.sha256(old.split("=", 1)[1].encode()).hexdigest()
        assert database.execute("UPDATE login_session SET expires_at = '2000-01-01 00:00:00' WHERE token_hash = ?",
                                (token_hash,)).rowcount == 1
    assert answer(server, "gradio_api/info", old) == 401
    assert answer(server, "gradio_api/info", new) == 200
    for password in ("a new password for dan", PASSWORDS["dan"]):
        status, _, err = storyloom_here(accounts_folder, "user", "passwd", "dan", "--password-stdin",
                                        stdin=password + "\n")
        assert status == 0, err
        assert answer(server, "gradio_api/info", new) == 401  # every session of dan's ended at once


def test_the_page_sends_a_browser_without_a_session_to_the_login_page(server):
    page = urllib.request.Request(server, headers={"Accept": "text/html"})
    with urllib.request.urlopen(page, timeout=30) as response:  # followed to the login page
        assert response.url.endswith("/login") and 'name="password"' in response.read().decode()
    form = urllib.parse.urlencode({"username": "ada", "password": "not it"}).encode()
    refused = urllib.request.Request(server + "login", data=form, headers={"Accept": "text/html",
                                                                            "X-Forwarded-For": "192.0.2.99"})
    with pytest.raises(urllib.error.HTTPError) as shown:
        urllib.request.urlopen(refused, timeout=30)
    text = shown.value.read().decode()
    assert shown.value.code == 400 and 'role="alert"' in text and "Wrong name or password" in text
    assert 'value="ada"' in text  # the name stays typed


def test_no_accounts_on_every_network_and_no_empty_accounts(tmp_path):
    def serve(folder, *args, **settings):  # both at once: each is a process start
        return subprocess.Popen([EXE, "serve", "--port", "9", *args], env=storyloom_env(tmp_path / folder, **settings),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    open_to_all, nobody = serve("open", "--host", "0.0.0.0"), serve("nobody", auth="true")
    said = [process.communicate(timeout=300)[1] for process in (open_to_all, nobody)]
    assert open_to_all.returncode == 1 and "refusing to serve on 0.0.0.0 without accounts" in said[0]
    assert nobody.returncode == 1 and "accounts are on (STORYLOOM_AUTH) but there are none" in said[1]
