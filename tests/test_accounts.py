"""Accounts on both databases: hashing, names and passwords checked, the throttle after failures
(per address and name), sessions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage import accounts
from common.errors import Conflict, InvalidInput, NotFound
from storage.models import LoginSession, LoginThrottle, User

HOME, AWAY = "198.51.100.7", "203.0.113.9"  # the owner's address, and someone else's


def test_passwords_are_salted_scrypt_hashes(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "correct horse")
        accounts.add_user(s, "bob", "correct horse")
    with db.Session() as s:
        hashes = {u.name: u.password_hash for u in s.query(User)}
    assert hashes["ada"] != hashes["bob"]  # the same password, different salts
    assert all(h.startswith("scrypt$131072$8$1$") and "correct horse" not in h for h in hashes.values())
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
        assert accounts.log_in(s, "ada", "second password", HOME) == ("ada", "")
        assert accounts.log_in(s, "ada", "first password", HOME)[0] is None
        assert accounts.list_users(s) == ["ada"]


def test_an_unknown_name_and_a_wrong_password_get_the_same_answer(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "wrong password", HOME) == (None, "wrong name or password")
        assert accounts.log_in(s, "nobody", "wrong password", HOME) == (None, "wrong name or password")


def test_a_hundred_wrong_guesses_lock_that_address_out_of_that_account_only(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def log_in(password: str, address: str = AWAY, when: datetime = now):
        with db.Session.begin() as s:  # each try its own request, as over HTTP
            return accounts.log_in(s, "ada", password, address, now=when)

    answers = [log_in("wrong password") for _ in range(100)]
    assert all(name is None for name, _ in answers)
    assert answers[4][1] == "wrong name or password"  # the fifth failure sets the lock
    assert answers[5][1] == "too many failed logins for this account from your address: try again in 2 s"
    with db.Session() as s:  # locked tries are refused before any hashing and counting
        assert s.query(LoginThrottle).filter_by(address=AWAY, name="ada").one().failures == 5
    assert log_in("right password")[0] is None  # the right password from that address waits too
    assert log_in("right password", HOME) == ("ada", "")  # the owner, from their own address, is let in
    later = now + timedelta(seconds=3)
    assert log_in("wrong password", when=later)[0] is None  # a failure after the lock ends doubles it
    assert "try again in 4 s" in log_in("right password", when=later)[1]
    # once the lock has passed, the right password works and forgets that pair's misses
    assert log_in("right password", when=later + timedelta(seconds=5)) == ("ada", "")
    with db.Session() as s:
        assert s.query(LoginThrottle).filter_by(address=AWAY, name="ada").count() == 0


def test_many_names_guessed_from_one_address_lock_that_address_for_all_names(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n in range(accounts.ADDRESS_LOCK_AFTER):
        with db.Session.begin() as s:
            assert accounts.log_in(s, f"name{n}", "a guess", AWAY, now=now) == (None, "wrong name or password")
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "right password", AWAY, now=now) == (
            None, "too many failed logins from your address: try again in 2 s")
        assert accounts.log_in(s, "ada", "right password", HOME, now=now) == ("ada", "")
    with db.Session.begin() as s:  # misses are forgotten a day after the last one
        accounts.log_in(s, "ada", "right password", HOME, now=now + accounts.FORGET_AFTER + timedelta(seconds=1))
    with db.Session() as s:
        assert s.query(LoginThrottle).count() == 0


def test_an_old_hash_is_made_again_at_the_next_login(db):
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"right password", salt=salt, n=2**14, r=8, p=1, dklen=32)
    old = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    with db.Session.begin() as s:
        s.add(User(name="ada", password_hash=old))
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "wrong password", HOME)[0] is None
    with db.Session() as s:
        assert s.query(User).one().password_hash == old  # a wrong password changes nothing
    with db.Session.begin() as s:
        assert accounts.log_in(s, "ada", "right password", HOME) == ("ada", "")
    with db.Session() as s:
        new = s.query(User).one().password_hash
    assert new.startswith("scrypt$131072$8$1$") and accounts.password_matches("right password", new)


def test_sessions_hold_until_they_expire_or_the_password_changes(db):
    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")
        accounts.add_user(s, "bob", "right password")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    hours = timedelta(hours=12)
    with db.Session.begin() as s:
        ada, ada2, bob = (accounts.open_session(s, name, hours, now=now) for name in ("ada", "ada", "bob"))
    with db.Session() as s:
        assert accounts.session_user(s, ada, now=now + hours - timedelta(seconds=1)) == "ada"
        assert accounts.session_user(s, ada, now=now + hours) is None  # expired
        assert accounts.session_user(s, "made up", now=now) is None
        assert ada not in {row.token_hash for row in s.query(LoginSession)}  # only its hash is kept
    with db.Session.begin() as s:
        accounts.end_session(s, ada2)  # logging out ends that session only
    with db.Session() as s:
        assert accounts.session_user(s, ada2, now=now) is None and accounts.session_user(s, ada, now=now) == "ada"
    with db.Session.begin() as s:
        accounts.set_password(s, "ada", "a new password")
    with db.Session() as s:
        assert accounts.session_user(s, ada, now=now) is None  # every session of ada's ended
        assert accounts.session_user(s, bob, now=now) == "bob"
    with db.Session.begin() as s:  # expired sessions are cleared as new ones open
        accounts.open_session(s, "bob", hours, now=now + 2 * hours)
    with db.Session() as s:
        assert s.query(LoginSession).count() == 1


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
        assert accounts.log_in(s, "nobody", "some password", HOME) == (None, "wrong name or password")
        assert accounts.log_in(s, "ada", "some password", HOME) == (None, "wrong name or password")
    assert checked[0] == module.NOBODY and checked[1].startswith("scrypt$") and len(checked) == 2


def test_guesses_sent_in_parallel_all_count(db):
    from concurrent.futures import ThreadPoolExecutor

    with db.Session.begin() as s:
        accounts.add_user(s, "ada", "right password")

    def guess(n: int) -> str:
        with db.Session.begin() as s:
            return accounts.log_in(s, "ada", f"guess {n}", AWAY)[1]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(16)))
    counted = answers.count("wrong name or password")
    with db.Session() as s:
        failures = s.query(LoginThrottle).filter_by(address=AWAY, name="ada").one().failures
    assert counted >= accounts.LOCK_AFTER and failures == counted  # no guess was lost to another's write
