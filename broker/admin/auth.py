"""Who may use the admin server: a bearer token (or a console session opened with it) when
one is configured, loopback-only Host names when none is, and no cross-site writes.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

from broker.admin.sessions import SessionStore
from broker.admin.throttle import FailureLimit
from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.config import AdminSettings, ConfigError, is_loopback
from broker.logs import event
from broker.metrics import Metrics

log = logging.getLogger("broker.admin")

COOKIE = "mwl_console"
#: paths served without credentials: sign-in and sign-out, the console's CSS/JS
PUBLIC_PREFIXES = ("/login", "/logout", "/static/")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the user of the audit trail's authentication events: whoever holds admin.token
ADMIN_USER = "admin"


def resolve_token(settings: AdminSettings) -> str:
    """The configured token (``token``, else the first line of ``token_file``); refuses a
    non-loopback address without one."""
    token = settings.token.strip()
    if not token and settings.token_file:
        path = Path(settings.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"admin.token_file {str(path)!r} cannot be read: "
                              f"{exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"admin.token_file {str(path)!r} is empty")
    if not token and not is_loopback(settings.host):
        raise ConfigError(f"admin.host {settings.host!r} is not a loopback address, so the "
                          "admin console needs admin.token or admin.token_file (or bind "
                          "admin.host to 127.0.0.1)")
    return token


class Guard:
    """aiohttp middleware enforcing the rules above; counts each refusal.

    Failed credentials (a wrong bearer token, a wrong sign-in) are counted per source
    address by ``failures``; an address past its limit gets 429 for every credential it
    offers until the window lets it try again. A live console session is still served."""

    def __init__(self, token: str, metrics: Metrics, sessions: SessionStore,
                 failures: FailureLimit, audit: AuditTrail | None = None) -> None:
        self.token = token
        self.metrics = metrics
        self.sessions = sessions
        self.failures = failures
        self.audit = audit or DisabledAuditTrail()

    @property
    def required(self) -> bool:
        return bool(self.token)

    def check_token(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def retry_after(self, request: web.Request) -> int:
        """Seconds this request's address must wait before offering credentials (0: none)."""
        return self.failures.retry_after(request.remote or "?")

    def failed(self, request: web.Request, what: str) -> None:
        """Count a failed credential (never logged: only that it failed)."""
        peer = request.remote or "?"
        locked = self.failures.failed(peer)
        if locked:
            event(log, "admin_peer_locked_out", logging.WARNING, peer=peer, after=what,
                  failures=self.failures.max_failures, window_s=self.failures.window)
        self.audit.user_authentication(ADMIN_USER, peer, False, locked_out=locked,
                                       detail=f"{what}: not the admin token")

    def signed_in(self, request: web.Request) -> None:
        """A console sign-in with the token (audited; a bearer token on each API request
        is not, only its failures are)."""
        self.audit.user_authentication(ADMIN_USER, request.remote or "?", True,
                                       detail="console sign-in")

    def signed_out(self, request: web.Request) -> None:
        self.audit.user_authentication(ADMIN_USER, request.remote or "?", True, logout=True,
                                       detail="console sign-out")

    def rate_limited(self, request: web.Request, retry_after: int) -> web.Response:
        response = self._refuse(request, 429, "rate_limited",
                                "too many failed credentials from this address; try again "
                                f"in {retry_after} s")
        response.headers["Retry-After"] = str(retry_after)
        return response

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in UNSAFE_METHODS and not _same_origin(request):
            return self._refuse(request, 403, "cross_site",
                                "cross-site request refused (its Origin or Referer is not "
                                "this server)")
        public = request.path.startswith(PUBLIC_PREFIXES)
        if not self.token:
            if not _loopback_host(request.host):
                return self._refuse(request, 403, "host", f"Host {request.host!r} is not a "
                                    "loopback name; without admin.token only 127.0.0.1, ::1 "
                                    "and localhost are served")
            return await handler(request)
        if public or self.sessions.check(request.cookies.get(COOKIE, "")):
            return await handler(request)
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and offered.strip():
            if wait := self.retry_after(request):
                return self.rate_limited(request, wait)
            if self.check_token(offered.strip()):
                return await handler(request)
            self.failed(request, "bearer")
        if _wants_html(request):
            self.metrics.rejected("admin", "unauthorized")
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/?=')}")
        response = self._refuse(request, 401, "unauthorized", "this server needs "
                                "'Authorization: Bearer <admin token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="mwl-broker"'
        return response

    def _refuse(self, request: web.Request, status: int, reason: str,
                text: str) -> web.Response:
        self.metrics.rejected("admin", reason)
        event(log, "admin_request_refused", logging.WARNING, peer=request.remote or "?",
              method=request.method, path=request.path, status=status, reason=reason)
        return web.json_response({"error": text}, status=status)


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a write comes from (Origin, else Referer); it must be this
    server. With neither it is not a browser (curl …), which cannot be tricked into sending
    the console's cookie; the session cookie is SameSite=Strict besides."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return urlsplit(origin).netloc.lower() == request.host.lower()


def _loopback_host(host: str) -> bool:
    """The Host header names this machine (refuses DNS-rebinding pages on loopback)."""
    name = urlsplit(f"//{host}").hostname or ""
    return is_loopback(name)


def _wants_html(request: web.Request) -> bool:
    return (request.method == "GET" and not request.path.startswith("/api/")
            and "text/html" in request.headers.get("Accept", ""))
