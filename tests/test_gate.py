"""The HTTP door of `storyloom serve` (app/gate.py): other hosts (DNS rebinding) and other
sites' pages are refused over HTTP, listed ones are served, and the login cookie is SameSite=Lax.
Against the real server with accounts on; no model call."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from app.gate import allowed_hosts, host_name, origin_of
from common.errors import InvalidInput
from tests.test_web_accounts import PASSWORDS


def ask(url: str, method: str, path: str, headers: dict[str, str], body: str | None = None):
    """One request with exactly these headers (Host included, if given); (status, headers, text)."""
    where = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host="Host" in headers)
        for name, value in headers.items():
            connection.putheader(name, value)
        data = body.encode() if body is not None else None
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read().decode(errors="replace")
    finally:
        connection.close()


def log_in(url: str, origin: str | None):
    form = urllib.parse.urlencode({"username": "ada", "password": PASSWORDS["ada"]})
    headers = {"Content-Type": "application/x-www-form-urlencoded", **({"Origin": origin} if origin else {})}
    return ask(url, "POST", "/login", headers, form)


def test_a_foreign_host_is_refused_and_this_servers_names_are_served(accounts_server):
    port = urllib.parse.urlsplit(accounts_server).port
    status, _, text = ask(accounts_server, "GET", "/config", {"Host": f"rebind.evil.example:{port}"})
    assert status == 400 and "does not answer to the host 'rebind.evil.example" in text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "novels.example", f"NOVELS.example:{port}"):
        assert ask(accounts_server, "GET", "/login", {"Host": host})[0] == 200, host


def test_another_sites_page_is_refused_and_a_listed_origin_is_allowed(accounts_server):
    preflight = {"Access-Control-Request-Method": "POST"}
    status, headers, text = ask(accounts_server, "OPTIONS", "/gradio_api/queue/join",
                                {"Origin": "https://evil.example", **preflight})
    assert status == 403 and "another site (https://evil.example)" in text
    assert headers["access-control-allow-origin"] is None
    status, headers, _ = log_in(accounts_server, "https://evil.example")  # the right password, from a foreign page
    assert status == 403 and headers["set-cookie"] is None
    assert ask(accounts_server, "GET", "/", {"Origin": "null"})[0] == 403  # a sandboxed frame or a file

    status, headers, _ = ask(accounts_server, "OPTIONS", "/gradio_api/queue/join",
                             {"Origin": "https://friend.example", **preflight})
    assert status == 200 and headers["access-control-allow-origin"] == "https://friend.example"
    assert headers["access-control-allow-credentials"] == "true"


def test_the_login_cookie_is_same_site_lax(accounts_server):
    for origin in (accounts_server.rstrip("/"), None):  # the page itself; a client that is not a browser
        status, headers, _ = log_in(accounts_server, origin)
        cookies = headers.get_all("set-cookie")
        assert status == 200 and cookies and all(c.endswith("; SameSite=Lax") for c in cookies), cookies
        assert not any("samesite=none" in c.lower() for c in cookies)


def test_host_names_and_origins_are_read_strictly():
    assert host_name("Example.org:7860") == "example.org" and host_name("[::1]:7860") == "::1"
    assert host_name("::1") == "::1" and host_name("localhost") == "localhost"
    assert origin_of("HTTPS://Friend.Example/some/page") == "https://friend.example"
    with pytest.raises(InvalidInput, match="must look like https://example.org"):
        origin_of("friend.example")
    assert allowed_hosts("127.0.0.1", []) == {"localhost", "127.0.0.1", "::1"}
    assert "192.168.1.20" in allowed_hosts("192.168.1.20", [""])
    assert allowed_hosts("0.0.0.0", ["novels.example", " "]) == {"novels.example", "localhost", "127.0.0.1", "::1"}
    with pytest.raises(InvalidInput, match="set STORYLOOM_ALLOWED_HOSTS"):
        allowed_hosts("0.0.0.0", [" "])
