"""Who is asking. With accounts on (STORYLOOM_AUTH=true) the web app asks for a name and a password
(app.logins), and every event runs on the service scoped to the person who sent it: they see and
change their own stories only, and another person's story id is "not found". With accounts off,
everyone shares every story, so the app then serves the loopback address only, unless told
otherwise."""

from __future__ import annotations

import inspect
import ipaddress
import logging
import typing
from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from storage.db import OUTAGES, unavailable
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
