"""Who is asking. With accounts on (STORYLOOM_AUTH=true) the web app asks for a name and a password,
and every event runs on the service scoped to the person who sent it: they see and change their own
stories only, and another person's story id is "not found". With accounts off, everyone shares
every story, so the app then serves the loopback address only, unless told otherwise."""

from __future__ import annotations

import inspect
import ipaddress
import logging
import typing
from collections.abc import Callable

import anyio
import gradio as gr
from fastapi import HTTPException
from sqlalchemy.exc import SQLAlchemyError

from app.service import StoryService
from storage import accounts
from storage.accounts import LOCK_AFTER
from storage.db import OUTAGES, Database, unavailable
from common.errors import InvalidInput

log = logging.getLogger("storyloom.people")


class People:
    """Turns a Gradio request into the story service of the person who sent it (their desk: the
    service scoped to them, with its use cases: writing, editing, memories, reading, manuscripts)."""

    def __init__(self, service: StoryService, accounts_on: bool):
        self.service = service
        self.accounts_on = accounts_on

    def desk(self, request: gr.Request | None) -> StoryService:
        if not self.accounts_on:
            return self.service  # accounts off: one desk with every story
        name = request.username if request is not None else None
        if not name:  # the login page stands before every route; this would be a bug
            raise gr.Error("You are not logged in. Reload the page and log in.")
        return self.service.as_user(name)

    def handler(self, fn: Callable) -> Callable:
        """An event function for Gradio from fn(service, *inputs): it takes the inputs and the
        request, and calls fn with the requester's scoped service first."""
        signature = inspect.signature(fn)
        first, *params = signature.parameters.values()
        hints = {name: hint for name, hint in typing.get_type_hints(fn).items() if name != first.name}
        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request)

        if inspect.isgeneratorfunction(fn):
            def event(*args):
                *inputs, req = args
                try:
                    yield from fn(self.desk(req), *inputs)
                except OUTAGES as e:  # the database went away: say so, the page stays as it was
                    log.warning("event %s: %s", fn.__name__, e)
                    raise gr.Error(str(unavailable(e))) from e
        else:
            def event(*args):
                *inputs, req = args
                try:
                    return fn(self.desk(req), *inputs)
                except OUTAGES as e:
                    log.warning("event %s: %s", fn.__name__, e)
                    raise gr.Error(str(unavailable(e))) from e
        # Gradio reads the signature and type hints to count the inputs and to find where the
        # request (and event data such as gr.SelectData) go
        event.__signature__ = signature.replace(parameters=[*params, request])
        event.__annotations__ = {**hints, "request": gr.Request}
        event.__name__ = event.__qualname__ = fn.__name__
        return event


LOGIN_MESSAGE = (f"Log in with the name and password from `storyloom user add`. After {LOCK_AFTER} wrong "
                 "passwords in a row the account is locked for a while (2 s, then twice as long after each "
                 "further miss, at most 15 minutes), and the page says \"incorrect credentials\" until it opens.")


def login_check(db: Database) -> Callable:
    """Gradio's auth function: the database's accounts, checked in a worker thread (scrypt takes
    about 50 ms and must not stall other people's events). A refusal is 400 with why in its detail
    (a wrong name or password, or a locked account and how long to wait), never whether the name
    exists. Gradio's login page shows "incorrect credentials" for a 400 and nothing for any other
    status, so a locked account is a 400 too; the page's message explains the lockout."""

    def check(name: str, password: str) -> tuple[str | None, str]:
        with db.Session.begin() as session:  # the failure count is kept either way
            return accounts.log_in(session, name, password)

    hashing: list[anyio.CapacityLimiter] = []  # made on the first login, inside the event loop

    async def auth(name: str, password: str) -> bool:
        if not hashing:  # two checks at a time: a flood of logins cannot take every worker thread
            hashing.append(anyio.CapacityLimiter(2))
        try:
            who, why = await anyio.to_thread.run_sync(check, name, password, limiter=hashing[0])
        except SQLAlchemyError as e:  # logged for whoever runs the server; no details for strangers
            log.warning("login check failed: %s", e)
            raise HTTPException(status_code=503, detail="The accounts cannot be checked now (the database "
                                "cannot be reached); try again later") from e
        if who is not None:
            return True
        raise HTTPException(status_code=400, detail=why[:1].upper() + why[1:])

    return auth


LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_binding(host: str, accounts_on: bool, allow_no_auth: bool) -> None:
    """Refuse to serve every story to a network without logins, unless told to."""
    if accounts_on or allow_no_auth or is_loopback(host):
        return
    raise InvalidInput(
        f"refusing to serve on {host} without accounts: anyone who reaches it could read and change every "
        "story. Turn accounts on (STORYLOOM_AUTH=true, with users from `storyloom user add NAME`), or, on a "
        "network that is yours alone, pass --allow-no-auth (or STORYLOOM_ALLOW_NO_AUTH=true)")
