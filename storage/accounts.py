"""Accounts: names, salted scrypt password hashes, login sessions, and a throttle that makes guessing slow.

Failed logins are counted per address and name together: LOCK_AFTER misses in a row for one name
from one address refuse that pair for a while (2 s, then twice as long after each further miss, at
most MAX_LOCK), and ADDRESS_LOCK_AFTER misses from one address for any names refuse that address.
So someone guessing at an account cannot lock its owner out from the owner's own address, and a
flood of made-up names from one address stops costing a hash each. A refused pair is answered at
once, before any hashing. Counts are forgotten FORGET_AFTER the last miss. All of it lives in the
database, so it holds across restarts and between the processes of one deployment.

A session is a random token in the person's cookie; the database keeps only its SHA-256 and
until when it holds. A password change ends the account's sessions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from common.errors import Conflict, InvalidInput, NotFound
from storage.models import LoginSession, LoginThrottle, Story, User

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOCK_AFTER = 5  # misses in a row for one name from one address
ADDRESS_LOCK_AFTER = 20  # misses in a row from one address, for any names
MAX_LOCK = timedelta(minutes=15)
FORGET_AFTER = timedelta(days=1)
# scrypt with n = 2**17, r = 8, p = 1 (OWASP's advice in 2026): 128 MiB and about 0.5 s a check on
# one core. Hashes made with other parameters still check, and are made again at the next login.
SCRYPT = {"n": 2**17, "r": 8, "p": 1}
MAXMEM = 2**28  # OpenSSL refuses scrypt above 32 MiB unless told
# an unknown name's password is checked against this (of a random password nobody knows)
NOBODY = "scrypt$131072$8$1$nl0vzSNXc4l1m93X1rvbhA==$MHVe6vETT8Qxgi1Z+0O7+Lauf1F46Y8E0Hto8ZSMH0U="


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=MAXMEM, **SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt)}${b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def outdated(stored: str) -> bool:
    """Whether a hash was made with other parameters than today's (to be made again)."""
    return not stored.startswith(f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}$")


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
    """A new password; every session of the account ends, and its failed logins are forgotten."""
    _check(name, password)
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    user.password_hash = hash_password(password)
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    session.execute(delete(LoginThrottle).where(LoginThrottle.name == name))
    return user


def claim_unowned(session: Session, name: str) -> int:
    """Give the stories that belong to nobody (written while accounts were off) to `name`; how many."""
    if session.scalar(select(User).where(User.name == name)) is None:
        raise NotFound(f"no user named {name!r}")
    return session.execute(update(Story).where(Story.owner.is_(None)).values(owner=name)).rowcount


def list_users(session: Session) -> list[str]:
    return list(session.scalars(select(User.name).order_by(User.name)))


def log_in(session: Session, name: str, password: str, address: str,
           now: datetime | None = None) -> tuple[str | None, str]:
    """(the user's name, "") when the password is right; (None, why) otherwise, with the same reason,
    after the same hashing, for an unknown name and a wrong password. A refused address or pair
    says so and for how long (and so that the name exists: a person locked out should know why,
    and names are not secret here). Counts change in `session`: commit it either way."""
    now = now or datetime.now(timezone.utc)
    name, address = (name or "")[:64], address[:64]
    session.execute(delete(LoginThrottle).where(LoginThrottle.updated_at < now - FORGET_AFTER))
    for key, whose in (("", "from your address"), (name, "for this account from your address")):
        row = session.scalar(select(LoginThrottle).where(LoginThrottle.address == address, LoginThrottle.name == key))
        if row is not None and row.locked_until is not None and _aware(row.locked_until) > now:
            wait = math.ceil((_aware(row.locked_until) - now).total_seconds())
            return None, f"too many failed logins {whose}: try again in {wait} s"
    user = session.scalar(select(User).where(User.name == name)) if name else None
    # an unknown name is checked against a hash too, so its answer takes as long as a wrong password's
    usable = bool(password) and len(password) <= MAX_PASSWORD
    if not (usable and password_matches(password, user.password_hash if user else NOBODY)) or user is None:
        _miss(session, address, "", ADDRESS_LOCK_AFTER, now)
        _miss(session, address, name, LOCK_AFTER, now)
        return None, "wrong name or password"
    session.execute(delete(LoginThrottle).where(LoginThrottle.address == address, LoginThrottle.name == name))
    if outdated(user.password_hash):
        user.password_hash = hash_password(password)
    return user.name, ""


def _miss(session: Session, address: str, name: str, after: int, now: datetime) -> None:
    """One more miss for (address, name), counted in one statement so that guesses sent in
    parallel all count; the pair is refused for a while from the `after`-th miss on."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    add = insert(LoginThrottle).values(address=address, name=name, failures=1, updated_at=now)
    failures = session.execute(
        add.on_conflict_do_update(index_elements=["address", "name"],
                                  set_={"failures": LoginThrottle.failures + 1, "updated_at": now})
        .returning(LoginThrottle.failures)).scalar_one()
    if failures >= after:
        lock = min(timedelta(seconds=2) * 2 ** min(failures - after, 20), MAX_LOCK)
        session.execute(update(LoginThrottle).where(LoginThrottle.address == address, LoginThrottle.name == name)
                        .values(locked_until=now + lock))


def open_session(session: Session, name: str, ttl: timedelta, now: datetime | None = None) -> str:
    """A new session for `name`, held for `ttl`: the token for the cookie (only its hash is kept)."""
    now = now or datetime.now(timezone.utc)
    session.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(token_hash=_digest(token), user_id=user.id, created_at=now, expires_at=now + ttl))
    return token


def session_user(session: Session, token: str, now: datetime | None = None) -> str | None:
    """The name a session token belongs to, while it holds; None for an unknown or expired one."""
    now = now or datetime.now(timezone.utc)
    return session.scalar(select(User.name).join(LoginSession, LoginSession.user_id == User.id)
                          .where(LoginSession.token_hash == _digest(token), LoginSession.expires_at > now))


def end_session(session: Session, token: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes
