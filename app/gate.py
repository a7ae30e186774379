"""The HTTP door of `storyloom serve`: the page is mounted in a FastAPI app whose outermost layer
refuses what a browser should never be made to send.

- A Host that is not one of this server's names is refused (400): a DNS-rebinding page cannot
  reach a server on loopback through a name of its own.
- A request a browser sends from another site's page (an Origin that is not this server's, nor
  listed in STORYLOOM_ALLOWED_ORIGINS) is refused (403) before it reaches the app, so another
  website cannot act with a writer's login cookie. CORS allows the listed origins only (Gradio
  would echo any origin with credentials).
- The login cookie is sent SameSite=Lax (Gradio sets SameSite=None).

Clients that are not browsers (gradio_client, curl) send no Origin and pass on the Host check."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from common.errors import InvalidInput

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")


def host_name(host: str) -> str:
    """"Example.org:7860" -> "example.org"; "[::1]:7860" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def origin_of(url: str) -> str:
    """The scheme://host:port of a URL, lowercased, as browsers send it in Origin."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"an allowed origin must look like https://example.org, not {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_hosts(bound: str, extra: Iterable[str]) -> frozenset[str]:
    """The host names this server answers to: loopback names, the address it is bound to (unless
    that is every address), and `extra` ("*" for any). Serving every address with no names given
    is refused: nobody could reach it, and guessing would reopen DNS rebinding."""
    names = {host_name(h) for h in extra if h.strip()}
    if bound in EVERY_ADDRESS and not names:
        raise InvalidInput(f"serving on every address ({bound or 'all'}): set STORYLOOM_ALLOWED_HOSTS to the names "
                           "people reach this server by (e.g. novels.example.org,192.168.1.20)")
    if bound not in EVERY_ADDRESS:
        names.add(host_name(bound))
    return frozenset(names | set(LOOPBACK_NAMES))


class Gate:
    """ASGI middleware: the Host and Origin checks, and SameSite=Lax on the cookies the app sets."""

    def __init__(self, app, hosts: frozenset[str], origins: frozenset[str]):
        self.app = app
        self.hosts = hosts
        self.origins = origins

    def refusal(self, host: str, origin: str | None) -> tuple[int, str] | None:
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            return 400, f"this server does not answer to the host {host!r} (STORYLOOM_ALLOWED_HOSTS)"
        if origin is None:
            return None
        if origin != "null" and urlsplit(origin).netloc.lower() == host.strip().lower():
            return None  # the page itself
        if origin.strip().lower() in self.origins:
            return None
        return 403, f"requests from the page of another site ({origin}) are refused (STORYLOOM_ALLOWED_ORIGINS)"

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refused = self.refusal(headers.get("host", ""), headers.get("origin"))
        if refused is not None:
            status, message = refused
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            body = message.encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})

        async def lax_cookies(message):
            if message["type"] == "http.response.start":
                message["headers"] = [(k, lax(v) if k.lower() == b"set-cookie" else v) for k, v in message["headers"]]
            await send(message)

        return await self.app(scope, receive, lax_cookies)


def lax(cookie: bytes) -> bytes:
    """A Set-Cookie value with SameSite=Lax in place of whatever SameSite it had."""
    parts = [p for p in cookie.split(b";") if not p.strip().lower().startswith(b"samesite")]
    return b";".join(parts) + b"; SameSite=Lax"


def web_app(blocks, *, hosts: frozenset[str], origins: frozenset[str], logins=None, **mount):
    """A FastAPI app serving `blocks` at /, behind the Gate and a CORS policy of `origins` only
    (with a CORS middleware of its own, Gradio adds none), and with `logins` (app.logins.Logins)
    its login page and sessions. `mount` goes to gr.mount_gradio_app."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.middleware.cors import CORSMiddleware

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(CORSMiddleware, allow_origins=sorted(origins), allow_credentials=True, allow_methods=["*"],
                       allow_headers=["*"])
    if logins is not None:
        from app.logins import LoginFirst

        logins.install(app)
        app.add_middleware(LoginFirst, logins=logins)
        mount["auth_dependency"] = logins.user
    app.add_middleware(Gate, hosts=hosts, origins=origins)  # added last: runs first
    return gr.mount_gradio_app(app, blocks, path="/", **mount)
