"""Accounts on both databases: hashing, names and passwords checked, the lockout after failures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage import accounts
from common.errors import Conflict, InvalidInput, NotFound
from storage.models import User


def test_passwords_are_salted_scrypt_hashes(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "correct horse")
        accounts.add_user(s, "bob", "correct horse")
    with db.Session() as s:
        hashes = {u.name: u.password_hash for u in s.query(User)}
    assert hashes["ada"] != hashes["bob"]  # the same password, different salts
    assert all(h.startswith("scrypt$16384$8$1$") and "correct horse" not in h for h in hashes.values())
    assert accounts.password_matches("correct horse", hashes["ada"])
    assert not accounts.password_matches("correct horsE", hashes["ada"])
    assert not accounts.password_matches("x", "not a hash")


@pytest.mark.parametrize("name, password, message", [
    ("", "long enough", "a name is 1 to 64"),
    ("has space", "long enough", "a name is 1 to 64"),
    ("x" * 65, "long enough", "a name is 1 to 64"),
    ("ada", "short", "8 to 1024 characters"),
])
def test_bad_names_and_passwords_are_refused(db, name, password, message):
    with db.Session.begin() as s, pytest.raises(InvalidInput, match=message):
        accounts.add_user(s, name, password)


def test_a_name_is_taken_once_and_passwords_can_be_reset(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "first password")
    with db.Session.begin() as s, pytest.raises(Conflict, match="already a user named 'ada'"):
        accounts.add_user(s, "ada", "another password")
    with db.Session.begin() as s:
        accounts.set_password(s, "ada", "second password")
        with pytest.raises(NotFound):
            accounts.set_password(s, "nobody", "whatever123")
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "second password") == ("ada", "")
        assert accounts.log_in(s, "ada", "first password")[0] is None
        assert accounts.list_users(s) == ["ada"]


def test_an_unknown_name_and_a_wrong_password_get_the_same_answer(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "wrong password") == (None, "wrong name or password")
        assert accounts.log_in(s, "nobody", "wrong password") == (None, "wrong name or password")


def test_a_hundred_wrong_passwords_lock_the_account_and_cost_little(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    answers = []
    for _ in range(100):
        with db.Session.begin() as s:  # each try its own request, as over HTTP
            answers.append(accounts.log_in(s, "ada", "wrong password", now=now))
    assert all(name is None for name, _ in answers)
    assert answers[4][1] == "wrong name or password"  # the fifth failure sets the lock
    assert answers[5][1].startswith("too many failed logins") and "try again in 2 s" in answers[5][1]
    with db.Session() as s:
        user = s.query(User).one()
        assert user.failed_logins == 5  # locked tries are refused before any hashing and counting
    with db.Session.begin() as s:  # the right password while locked is refused too
        assert accounts.log_in(s, "ada", "right password", now=now)[0] is None
    later = now + timedelta(seconds=3)
    with db.Session.begin() as s:  # a failure after the lock ends doubles it
        assert accounts.log_in(s, "ada", "wrong password", now=later)[0] is None
    with db.Session.begin() as s:
        assert "try again in 4 s" in accounts.log_in(s, "ada", "right password", now=later)[1]
    with db.Session.begin() as s:  # once the lock has passed, the right password works and resets it
        assert accounts.log_in(s, "ada", "right password", now=later + timedelta(seconds=5)) == ("ada", "")
    with db.Session() as s:
        assert s.query(User).one().failed_logins == 0


def test_stories_written_without_accounts_can_be_claimed(db):
    from storage import repo

    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "long enough")
        repo.create_story(s, title="Nobody's", premise="p", outline="")
        repo.create_story(s, title="Bob's", premise="p", outline="", owner="bob")
    with db.Session.begin() as s:
        with pytest.raises(NotFound, match="no user named 'carl'"):
            accounts.claim_unowned(s, "carl")
        assert accounts.claim_unowned(s, "ada") == 1
    with db.Session() as s:
        assert [t.title for t in repo.list_stories(s, "ada")] == ["Nobody's"]
        assert [t.title for t in repo.list_stories(s, "bob")] == ["Bob's"]


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("192.168.1.20", False), ("example.org", False)])
def test_only_loopback_is_served_without_accounts_unless_allowed(host, loopback):
    from app.people import check_binding

    if loopback:
        check_binding(host, accounts_on=False, allow_no_auth=False)
    else:
        with pytest.raises(InvalidInput, match=f"refusing to serve on {host} without accounts"):
            check_binding(host, accounts_on=False, allow_no_auth=False)
    check_binding(host, accounts_on=True, allow_no_auth=False)
    check_binding(host, accounts_on=False, allow_no_auth=True)


def test_an_unknown_name_costs_a_hash_as_a_wrong_password_does(db, monkeypatch):
    from storage import accounts as module

    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    checked = []
    real = module.password_matches
    monkeypatch.setattr(module, "password_matches", lambda pw, stored: checked.append(stored) or real(pw, stored))
    with db.Session.begin() as s:
        assert accounts.log_in(s, "nobody", "some password") == (None, "wrong name or password")
        assert accounts.log_in(s, "ada", "some password") == (None, "wrong name or password")
    assert checked[0] == module.NOBODY and checked[1].startswith("scrypt$") and len(checked) == 2


def test_guesses_sent_in_parallel_all_count(db):
    from concurrent.futures import ThreadPoolExecutor

    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")

    def guess(n: int) -> str:
        with db.Session.begin() as s:
            return accounts.log_in(s, "ada", f"guess {n}")[1]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(16)))
    counted = answers.count("wrong name or password")
    with db.Session() as s:
        failures = s.query(User).filter_by(name="ada").one().failed_logins
    assert counted >= accounts.LOCK_AFTER and failures == counted  # no guess was lost to another's write
