"""Logging in to `storyloom serve` with accounts on (STORYLOOM_AUTH=true): storyloom's own login
page and session cookie in front of the Gradio app, which asks `Logins.user` who sent each request.

- POST /login checks a name and password (storage.accounts: scrypt, and the throttle per address
  and name) and sets a session cookie: HttpOnly, SameSite=Lax, Secure over HTTPS. A browser's form
  is sent on to the app (or gets the page again with why); other clients (gradio_client, curl) get
  JSON: 200, or 400/429/503 with {"detail": why}.
- A session holds for STORYLOOM_SESSION_TTL seconds (default 12 hours) and ends at once when the
  password changes (`storyloom user passwd`) or at POST /logout. A GET never logs anyone out: a
  link on another page must not be able to.
- Hashing is bounded: two checks at a time in all, and one at a time per client address, so a
  flood from one address cannot keep everyone else from logging in.

The client's address is the connection's, or, behind a proxy that uvicorn trusts (loopback by
default; FORWARDED_ALLOW_IPS), the one the proxy names in X-Forwarded-For."""

from __future__ import annotations

import html
import logging
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from storage import accounts
from storage.accounts import ADDRESS_LOCK_AFTER, LOCK_AFTER
from storage.db import Database

log = logging.getLogger("storyloom.logins")

COOKIE = "storyloom-session"
MAX_FORM = 4096  # bytes: a name and a password, urlencoded
HASHING = 2  # checks at a time, in all
PER_CLIENT = 1  # checks at a time from one address

LOGIN_MESSAGE = (f"Log in with the name and password from `storyloom user add`. After {LOCK_AFTER} wrong passwords "
                 f"in a row for one name (or {ADDRESS_LOCK_AFTER} for any names) from your address, logins from it "
                 "wait a while: 2 s, then twice as long after each further miss, at most 15 minutes.")


class Refused(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Logins:
    """The login routes, the session cookie, and who sent a request (Gradio's auth_dependency)."""

    def __init__(self, db: Database, ttl: int):
        self.db = db
        self.ttl = timedelta(seconds=ttl)
        self.hashing: anyio.CapacityLimiter | None = None  # made on the first login, in the event loop
        self.checking: Counter[str] = Counter()  # address -> checks running now

    async def user(self, request: Request) -> str | None:
        """The name of the person whose live session sent `request`, or None."""
        token = request.cookies.get(COOKIE)
        if not token or len(token) > 100:
            return None

        def look_up() -> str | None:
            with self.db.Session() as session:
                return accounts.session_user(session, token)

        try:
            return await anyio.to_thread.run_sync(look_up)
        except SQLAlchemyError as e:  # logged for whoever runs the server; the request is refused
            log.warning("session check failed: %s", e)
            return None

    def install(self, app: FastAPI) -> None:
        """The routes, on `app` before the Gradio app is mounted (so they come first)."""
        app.add_api_route("/login", self.page, methods=["GET"], response_class=HTMLResponse)
        app.add_api_route("/login", self.log_in, methods=["POST"])
        app.add_api_route("/logout", self.log_out, methods=["POST"])
        app.add_api_route("/logout", no_get, methods=["GET"])

    async def page(self, request: Request) -> Response:
        if await self.user(request) is not None:
            return RedirectResponse("./", status_code=303)
        return login_page()

    async def log_in(self, request: Request) -> Response:
        wants_page = "text/html" in request.headers.get("accept", "")
        name = ""
        try:
            form = await read_form(request)
            name, password = form.get("username", ""), form.get("password", "")
            token = await self.check(client_address(request), name, password)
        except Refused as e:
            if wants_page:
                return login_page(str(e), name, e.status)
            return JSONResponse({"detail": str(e)}, status_code=e.status)
        response = RedirectResponse("./", status_code=303) if wants_page else JSONResponse({"success": True})
        response.set_cookie(COOKIE, token, max_age=int(self.ttl.total_seconds()), httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def check(self, address: str, name: str, password: str) -> str:
        """The new session's token, or Refused with why."""
        if self.hashing is None:
            self.hashing = anyio.CapacityLimiter(HASHING)
        if self.checking[address] >= PER_CLIENT:
            raise Refused(429, "a login from your address is being checked: wait for its answer")
        self.checking[address] += 1
        try:
            return await anyio.to_thread.run_sync(self._check, address, name, password, limiter=self.hashing)
        except SQLAlchemyError as e:
            log.warning("login check failed: %s", e)
            raise Refused(503, "The accounts cannot be checked now (the database cannot be reached); "
                          "try again later") from e
        finally:
            self.checking[address] -= 1
            if not self.checking[address]:
                del self.checking[address]

    def _check(self, address: str, name: str, password: str) -> str:
        with self.db.Session.begin() as session:  # the throttle's counts are kept either way
            who, why = accounts.log_in(session, name, password, address)
        if who is None:
            raise Refused(400, why[:1].upper() + why[1:])
        with self.db.Session.begin() as session:
            return accounts.open_session(session, who, self.ttl)

    async def log_out(self, request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token and len(token) <= 100:
            def end() -> None:
                with self.db.Session.begin() as session:
                    accounts.end_session(session, token)

            await anyio.to_thread.run_sync(end)
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def no_get() -> Response:
    return Response("Log out with the page's Log out button (a POST): a link cannot log anyone out.\n",
                    status_code=405, headers={"Allow": "POST"}, media_type="text/plain")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form of a login, read up to MAX_FORM bytes."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise Refused(400, "Send the name and password as a form (username, password)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise Refused(413, "That login form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(400, "That login form cannot be read") from e
    return {key: values[0] for key, values in fields.items()}


class LoginFirst:
    """ASGI middleware: a browser that asks for the page without a live session is sent to the login
    page (Gradio itself would answer 401)."""

    def __init__(self, app, logins: Logins):
        self.app = app
        self.logins = logins

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/":
            request = Request(scope)
            if await self.logins.user(request) is None:
                return await RedirectResponse("login", status_code=303)(scope, receive, send)
        return await self.app(scope, receive, send)


def login_page(message: str = "", name: str = "", status: int = 200) -> HTMLResponse:
    alert = f'<p role="alert" id="login-message">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(status_code=status, content=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>storyloom: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f7fb; color: #1f2937; }}
main {{ max-width: 26rem; margin: 12vh auto; background: white; padding: 2rem; border-radius: 12px;
        box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input {{ width: 100%; box-sizing: border-box; padding: .6rem; margin-top: .3rem; font-size: 1rem;
         border: 1px solid #cbd5e1; border-radius: 8px; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .7rem; font-size: 1rem; border: 0; border-radius: 8px;
          background: #4f46e5; color: white; cursor: pointer; }}
[role=alert] {{ background: #fef2f2; color: #991b1b; padding: .6rem; border-radius: 8px; }}
small {{ color: #6b7280; }}
</style></head>
<body><main>
<h1>storyloom</h1>
{alert}
<form method="post" action="login">
<label for="username">Name</label>
<input id="username" name="username" autocomplete="username" required maxlength="64" value="{html.escape(name)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<button type="submit">Log in</button>
</form>
<p><small>{html.escape(LOGIN_MESSAGE)}</small></p>
</main></body></html>
""")
