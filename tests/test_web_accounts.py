"""Accounts over HTTP: the real `storyloom serve` with STORYLOOM_AUTH=true, users made with
`storyloom user add`, and clients that log in through the login route (gradio_client, and plain
HTTP for the lockout). Stories come in as JSON backups, so no model call is needed."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tests.conftest import EXE, storyloom_env, storyloom_here

# eve is for the lockout test: the others' logins stay open for every other test on the server
PASSWORDS = {"ada": "ada's long password", "bob": "bob's long password", "eve": "eve's long password"}


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
    assert len(outputs) == len(PAGE), outputs
    return dict(zip(PAGE, outputs))


def client(url: str, name: str) -> Client:
    return Client(url, auth=(name, PASSWORDS[name]), verbose=False)


def log_in(url: str, name: str, password: str) -> tuple[int, str]:
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    try:
        with urllib.request.urlopen(url + "login", data=form, timeout=30) as response:
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

    opened = page(bob.predict(str(bobs), api_name="/open_story"))
    assert "The Keeper" in opened["manuscript"] and "Mara climbed" in opened["manuscript"]
    for person, other in ((bob, adas), (ada, bobs)):  # typed into the story box, as a person could
        refused = page(person.predict(str(other), api_name="/open_story"))
        assert refused["status"] == f"**Nothing was written:** no story with id {other}"
        assert "Mara" not in str(refused)
    nowhere = page(bob.predict("999999", api_name="/open_story"))  # as a story nobody has
    assert nowhere["status"] == "**Nothing was written:** no story with id 999999"


def test_a_hundred_wrong_passwords_lock_that_account_only(server):
    answers = [log_in(server, "eve", f"guess number {n}") for n in range(100)]
    assert {code for code, _ in answers} == {400}  # the status Gradio's login page answers
    wrong = '"Wrong name or password"'
    locked = '"Too many failed logins for this account: try again in'
    assert all(wrong in detail for _, detail in answers[:5])
    assert all(wrong in detail or locked in detail for _, detail in answers)
    # locked after the 5th: 2 s, then 4, 8...; a miss is counted (and hashed) only when a lock ran
    # out, which a slow machine may let happen once or twice in a hundred quick tries
    assert 5 <= sum(wrong in detail for _, detail in answers) <= 8
    assert log_in(server, "nobody", "some password") == (400, f'{{"detail":{wrong}}}')  # as a wrong password
    right = log_in(server, "eve", PASSWORDS["eve"])
    assert right[0] == 400 and locked in right[1]  # locked, even with the right password
    assert log_in(server, "bob", PASSWORDS["bob"])[0] == 200  # everyone else is served
    assert isinstance(own_stories(client(server, "bob")), list)


def test_no_accounts_on_every_network_and_no_empty_accounts(tmp_path):
    def serve(folder, *args, **settings):  # both at once: each is a process start
        return subprocess.Popen([EXE, "serve", "--port", "9", *args], env=storyloom_env(tmp_path / folder, **settings),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    open_to_all, nobody = serve("open", "--host", "0.0.0.0"), serve("nobody", auth="true")
    said = [process.communicate(timeout=300)[1] for process in (open_to_all, nobody)]
    assert open_to_all.returncode == 1 and "refusing to serve on 0.0.0.0 without accounts" in said[0]
    assert nobody.returncode == 1 and "accounts are on (STORYLOOM_AUTH) but there are none" in said[1]
