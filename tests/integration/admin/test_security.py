"""The admin server's defences against a real in-process broker over loopback HTTP(S):
TLS, server-side sessions, the failed-credential limit, security headers, malformed ids."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from broker.app import Broker
from broker.config import Settings, TlsSettings
from tests.support.broker import make_settings
from tests.support.certs import make_pki
from tests.support.mllp import msa, send
from tests.support.samples import order

TOKEN = "s3cret-admin-token"


async def started(settings: Settings) -> Broker:
    b = Broker(settings)
    await b.start()
    return b


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker whose admin server needs a token, with a small failure limit."""
    settings = make_settings(tmp_path)
    settings.admin.token = TOKEN
    settings.admin.max_auth_failures = 3
    b = await started(settings)
    try:
        yield b
    finally:
        await b.stop()


@pytest.fixture
async def open_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker whose admin server is loopback-only without a token."""
    b = await started(make_settings(tmp_path))
    try:
        yield b
    finally:
        await b.stop()


def base(b: Broker, scheme: str = "http") -> str:
    assert b.admin is not None
    return f"{scheme}://127.0.0.1:{b.admin.bound_port}"


def client(**kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=15), **kwargs)


async def sign_in(session: aiohttp.ClientSession, url: str, token: str = TOKEN
                  ) -> aiohttp.ClientResponse:
    async with session.post(url + "/login", data={"token": token, "next": "/outbox"},
                            allow_redirects=False) as response:
        await response.read()
        return response


# -- 1. TLS ----------------------------------------------------------------------------------
async def test_admin_over_tls_with_secure_cookie_and_hsts(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = make_settings(tmp_path)
    settings.admin.token = TOKEN
    settings.admin.tls = TlsSettings(enabled=True, cert_file=str(pki.server.cert),
                                     key_file=str(pki.server.key))
    b = await started(settings)
    trust = ssl.create_default_context(cafile=str(pki.ca))
    try:
        async with client(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            async with session.get(base(b, "https") + "/healthz",
                                   headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                assert response.status == 200 and await response.json() == {"alive": True}
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            signed = await sign_in(session, base(b, "https"))
            assert signed.status == 303
            cookie = signed.headers["Set-Cookie"]
            assert re.search(r"(?i);\s*secure", cookie), cookie
            assert re.search(r"(?i);\s*httponly", cookie) and "SameSite=Strict" in cookie
            async with session.get(base(b, "https") + "/api/outbox") as response:
                assert response.status == 200  # the session cookie, over TLS
        async with client() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(base(b) + "/healthz") as response:
                    await response.read()
    finally:
        await b.stop()


async def test_plain_http_cookie_is_not_secure_and_has_no_hsts(guarded: Broker) -> None:
    async with client() as session:
        signed = await sign_in(session, base(guarded))
        assert signed.status == 303
        assert not re.search(r"(?i);\s*secure", signed.headers["Set-Cookie"])
        assert "Strict-Transport-Security" not in signed.headers


# -- 2. sessions -----------------------------------------------------------------------------
async def test_logout_revokes_the_session_cookie(guarded: Broker) -> None:
    url = base(guarded)
    async with client() as session:
        assert (await sign_in(session, url)).status == 303
        cookie = session.cookie_jar.filter_cookies(URL(url))["mwl_console"].value
        assert TOKEN not in cookie
        async with session.get(url + "/api/outbox") as response:
            assert response.status == 200
        async with session.post(url + "/logout", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"
    async with client() as replay, replay.get(  # the old cookie, kept by an attacker
            url + "/api/outbox", cookies={"mwl_console": cookie}) as response:
        assert response.status == 401
    async with client() as other:  # a second sign-in gets another id
        assert (await sign_in(other, url)).status == 303
        assert other.cookie_jar.filter_cookies(URL(url))["mwl_console"].value != cookie


async def test_idle_session_expires(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.admin.token = TOKEN
    settings.admin.session_idle_timeout = 0.3
    b = await started(settings)
    try:
        async with client() as session:
            assert (await sign_in(session, base(b))).status == 303
            async with session.get(base(b) + "/api/outbox") as response:
                assert response.status == 200
            await asyncio.sleep(0.5)
            async with session.get(base(b) + "/api/outbox") as response:
                assert response.status == 401
    finally:
        await b.stop()


async def test_writes_from_another_site_are_refused(guarded: Broker) -> None:
    url = base(guarded)
    async with client() as session:
        assert (await sign_in(session, url)).status == 303
        for headers in ({"Origin": "http://evil.example"},
                        {"Referer": "http://evil.example/page"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            async with session.post(url + "/outbox/retry", headers=headers,
                                    allow_redirects=False) as response:
                assert response.status == 403, headers
                assert "cross-site" in (await response.json())["error"]
        async with session.post(url + "/outbox/retry", allow_redirects=False,
                                headers={"Origin": url, "Referer": url + "/outbox"}
                                ) as response:
            assert response.status == 303  # the console's own form


# -- 3. failed credentials -------------------------------------------------------------------
async def test_failed_tokens_and_sign_ins_are_rate_limited(
        guarded: Broker, caplog: pytest.LogCaptureFixture) -> None:
    url = base(guarded)
    caplog.set_level(logging.INFO, logger="broker.admin")
    async with client() as session:
        for n in range(3):
            async with session.get(url + "/api/worklist",
                                   headers={"Authorization": f"Bearer guess-{n}"}) as response:
                assert response.status == 401
        async with session.get(url + "/api/worklist",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 429  # even the right token, while locked out
            retry = int(response.headers["Retry-After"])
            assert 0 < retry <= 300
            assert "too many failed" in (await response.json())["error"]
        signed = await sign_in(session, url)
        assert signed.status == 429 and signed.headers["Retry-After"]
        async with session.get(url + "/login") as response:
            assert response.status == 200  # the form itself is still served
    logged = [f"{r.getMessage()} {getattr(r, 'fields', {})}" for r in caplog.records]
    assert any(line.startswith("admin_peer_locked_out") for line in logged)
    assert not [line for line in logged if "guess-" in line or TOKEN in line]
    assert guarded.metrics.registry.get_sample_value(
        "mwl_rejections_total", {"listener": "admin", "reason": "rate_limited"}) == 2


async def test_failed_sign_ins_count_too(guarded: Broker) -> None:
    url = base(guarded)
    async with client() as session:
        for n in range(3):
            assert (await sign_in(session, url, f"wrong-{n}")).status == 401
        assert (await sign_in(session, url)).status == 429


# -- 4. security headers ---------------------------------------------------------------------
async def test_security_headers_on_every_response(guarded: Broker) -> None:
    url = base(guarded)
    async with client() as anonymous, client() as session:
        assert (await sign_in(session, url)).status == 303
        answers = []
        for who, path, accept in (
                (session, "/worklist", "text/html"), (session, "/api/worklist", "*/*"),
                (session, "/messages/123", "text/html"), (session, "/nowhere", "*/*"),
                (session, "/api/messages/%C2%B2", "*/*"), (anonymous, "/api/outbox", "*/*"),
                (anonymous, "/outbox", "text/html"), (anonymous, "/login", "text/html"),
                (anonymous, "/static/console.css", "*/*")):
            async with who.get(URL(url + path, encoded=True), allow_redirects=False,
                               headers={"Accept": accept}) as response:
                answers.append((path, response.status, response.headers))
    assert {s for _, s, _ in answers} >= {200, 303, 400, 401, 404}
    for path, _, headers in answers:
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] in ("no-referrer", "same-origin"), path
        if path.startswith("/static/"):
            assert "no-store" not in headers.get("Cache-Control", "")
        else:
            assert headers["Cache-Control"] == "no-store", path


async def test_console_pages_need_no_inline_script_or_style(open_broker: Broker) -> None:
    """What the CSP (no 'unsafe-inline') would block: inline <script>, <style>, style=, on…="""
    assert msa((await send(open_broker.mllp.bound_port, order(1).encode()))[0])[1] == "AA"
    inline = re.compile(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", re.I)
    async with client() as session:
        for path in ("/worklist", "/messages", "/messages/1", "/outbox", "/mappings",
                     "/health", "/procedures/A0000001", "/login", "/messages/x"):
            async with session.get(base(open_broker) + path) as response:
                page = await response.text()
                assert response.status < 500 and "<html" in page, path
                assert not inline.search(page), (path, inline.search(page))


# -- 6. malformed ids ------------------------------------------------------------------------
async def test_malformed_ids_get_a_400_that_says_why(open_broker: Broker) -> None:
    url = base(open_broker)
    async with client() as session:
        for path in ("/api/messages/%C2%B2", "/api/messages/99999999999999999999999",
                     "/api/outbox/%D9%A1", "/api/messages/-1"):
            async with session.get(URL(url + path, encoded=True)) as response:
                assert response.status == 400, path
                assert "must be a whole number" in (await response.json())["error"]
        async with session.post(URL(url + "/api/outbox/99999999999999999999999/retry",
                                    encoded=True)) as response:
            assert response.status == 400
        async with session.get(URL(url + "/messages/%C2%B2", encoded=True),
                               headers={"Accept": "text/html"}) as response:
            assert response.status == 400 and "must be a whole number" in await response.text()
        async with session.get(URL(url + "/api/procedures/%00", encoded=True)) as response:
            assert response.status == 400
            assert "printable characters" in (await response.json())["error"]
        for path in ("/static/%00.css", "/static/console.css%00", "/static/..%2Fhttp.py",
                     "/static/%2e%2e%2fhttp.py", "/static/..%5Chttp.py", "/static/x.css",
                     "/static/..", "/static/%2e%2e"):
            async with session.get(URL(url + path, encoded=True)) as response:
                assert response.status == 404, path
        async with session.get(url + "/static/console.js") as response:
            assert response.status == 200 and "DOMContentLoaded" in await response.text()


MALFORMED = ("%C2%B2", "%D9%A1", "99999999999999999999999", "9223372036854775808",
             "9223372036854775807", "-1", "0", "%00", "%00.css", "a%00b", "%2e%2e",
             "..%2F..%2Fetc%2Fpasswd", "..%5C..", "%ED%A0%80", "%FF%FE", "%F0%9F%92%A9",
             "%0D%0AX-Injected:%201", "%20", "1e3", "0x10", "+1", "NaN", "inf",
             "%27%20OR%201=1--", "%25", "%25%25", "A" * 3000, "x.css", "console.css")


async def test_no_route_answers_5xx_to_malformed_values(open_broker: Broker) -> None:
    """Every route of the admin router, each path parameter and the usual query parameters
    set to each malformed value, as JSON and as a page."""
    assert open_broker.admin is not None
    routes = []
    for resource in open_broker.admin.app.router.resources():
        info = resource.get_info()
        template = info.get("formatter") or info.get("path")
        assert template, info
        for route in resource:
            if route.method != "HEAD":
                routes.append((route.method, str(template)))
    assert len(routes) >= 25
    url = base(open_broker)
    answered: dict[int, int] = {}
    async with client() as session:
        for method, template in routes:
            for n, value in enumerate(MALFORMED):
                path = re.sub(r"\{[^}]+\}", value, template)
                query = "&".join(f"{k}={value}" for k in (
                    "date", "station", "q", "status", "limit", "outcome", "state", "next",
                    "older_than_days"))
                # both kinds of answer where the path takes a value, else one in turn
                accepts = (("application/json", "text/html") if path != template else
                           (("application/json", "text/html")[n % 2],))
                for accept in accepts:
                    async with session.request(
                            method, URL(f"{url}{path}?{query}", encoded=True),
                            allow_redirects=False, headers={"Accept": accept}) as response:
                        body = await response.read()
                        assert response.status < 500, (method, path, response.status, body)
                        answered[response.status] = answered.get(response.status, 0) + 1
    assert 400 in answered and 404 in answered
