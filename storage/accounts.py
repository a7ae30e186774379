"""Accounts: names, salted scrypt password hashes, and a lockout that makes guessing slow.

A wrong password locks the account for a while once it has failed LOCK_AFTER times in a row:
2 s, then twice as long after each further failure, at most MAX_LOCK. A locked account is refused
at once, before any hashing, so a hundred guesses cost the server almost nothing and everyone
else keeps being served. The lockout lives in the database, so it holds across restarts and
between the processes of one deployment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.errors import Conflict, InvalidInput, NotFound
from storage.models import Story, User

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOCK_AFTER = 5
MAX_LOCK = timedelta(minutes=15)
# scrypt with n = 2**14, r = 8, p = 1: 16 MiB and about 50 ms a check on one core
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# an unknown name's password is checked against this (of a random password nobody knows)
NOBODY = "scrypt$16384$8$1$ug7a97Xj8MjXLUlcWYfxZQ==$19YO9hqD3IMaFMvl8yXUfTJ78GTRHLuNVKdhTc4xvs4="


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt)}${b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _check(name: str, password: str) -> None:
    if not NAME.match(name or ""):
        raise InvalidInput("a name is 1 to 64 letters, digits or . _ @ -, starting with a letter or digit")
    if not MIN_PASSWORD <= len(password or "") <= MAX_PASSWORD:
        raise InvalidInput(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def add_user(session: Session, name: str, password: str) -> User:
    _check(name, password)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"there is already a user named {name!r}")
    user = User(name=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, name: str, password: str) -> User:
    _check(name, password)
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    user.password_hash, user.failed_logins, user.locked_until = hash_password(password), 0, None
    return user


def claim_unowned(session: Session, name: str) -> int:
    """Give the stories that belong to nobody (written while accounts were off) to `name`; how many."""
    if session.scalar(select(User).where(User.name == name)) is None:
        raise NotFound(f"no user named {name!r}")
    return session.execute(update(Story).where(Story.owner.is_(None)).values(owner=name)).rowcount


def list_users(session: Session) -> list[str]:
    return list(session.scalars(select(User.name).order_by(User.name)))


def log_in(session: Session, name: str, password: str, now: datetime | None = None) -> tuple[str | None, str]:
    """(the user's name, "") when the password is right; (None, why) otherwise, with the same reason,
    after the same hashing, for an unknown name and a wrong password. A locked account says so
    (and so that the name exists): a person locked out should know why, and names are not secret
    here. The failure count changes in `session`: commit it either way."""
    now = now or datetime.now(timezone.utc)
    user = session.scalar(select(User).where(User.name == name)) if name and len(name) <= 64 else None
    if user is not None and user.locked_until is not None and _aware(user.locked_until) > now:
        wait = math.ceil((_aware(user.locked_until) - now).total_seconds())
        return None, f"too many failed logins for this account: try again in {wait} s"
    # an unknown name is checked against a hash too, so its answer takes as long as a wrong password's
    usable = bool(password) and len(password) <= MAX_PASSWORD
    if not (usable and password_matches(password, user.password_hash if user else NOBODY)) or user is None:
        if user is not None:  # counted in one statement: guesses sent in parallel all count
            failures = session.execute(update(User).where(User.id == user.id)
                                       .values(failed_logins=User.failed_logins + 1)
                                       .returning(User.failed_logins)).scalar_one()
            if failures >= LOCK_AFTER:
                lock = timedelta(seconds=2) * 2 ** min(failures - LOCK_AFTER, 20)
                user.locked_until = now + min(lock, MAX_LOCK)
        return None, "wrong name or password"
    user.failed_logins, user.locked_until = 0, None
    return user.name, ""


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes
