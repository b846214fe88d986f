"""The admin HTTP server (aiohttp on the broker's event loop): the console, the REST API,
``/metrics`` in Prometheus' text format, ``/healthz`` (alive) and ``/readyz`` (serving)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from broker.admin import api, views
from broker.admin import html as h
from broker.admin.auth import COOKIE, Guard, Handler, resolve_token, session_value
from broker.admin.service import AdminService, BadRequest
from broker.logs import event
from broker.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from broker.app import Broker

log = logging.getLogger("broker.admin")
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
MAX_BODY = 64 * 1024


class AdminServer:
    def __init__(self, broker: Broker) -> None:
        settings = broker.settings.admin
        self.host, self.port = settings.host, settings.port
        metrics: Metrics = broker.metrics
        self.guard = Guard(resolve_token(settings), metrics)
        self.service = AdminService(broker)
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        assert self._runner is not None and self._runner.addresses
        return int(self._runner.addresses[0][1])

    @property
    def serving(self) -> bool:
        return self._runner is not None and bool(self._runner.addresses)

    async def start(self) -> None:
        await self.service.open()
        app = web.Application(middlewares=[_errors, self.guard.middleware],
                              client_max_size=MAX_BODY)
        app[api.SERVICE] = self.service
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_get("/logout", logout)
        app.router.add_get("/static/{name}", static)
        api.add_routes(app)
        views.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            await self.stop()
            raise
        event(log, "admin_listening", host=self.host, port=self.bound_port,
              auth="token" if self.guard.required else "loopback-only")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.service.close()
        event(log, "admin_stopped")

    async def readyz(self, request: web.Request) -> web.Response:
        ready, checks = self.service.ready()
        return web.json_response({"ready": ready, "checks": checks},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.service.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def login_form(self, request: web.Request) -> web.Response:
        return _login_page(request.query.get("next", "/"), "")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = str(form.get("next", "/"))
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        if not self.guard.required:
            raise web.HTTPSeeOther(target)
        if not self.guard.check_token(str(form.get("token", ""))):
            self.guard.metrics.rejected("admin", "bad_token")
            event(log, "admin_login_refused", logging.WARNING, peer=request.remote or "?")
            await asyncio.sleep(0.5)  # slows guessing down
            return _login_page(target, "this token is not the admin token", 401)
        event(log, "admin_login", peer=request.remote or "?")
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, session_value(self.guard.token), httponly=True,
                            samesite="Strict", path="/")
        raise response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = next((t for ext, t in STATIC_TYPES.items() if name.endswith(ext)), None)
    if kind is None or "/" in name or name.startswith("."):
        raise web.HTTPNotFound()
    try:
        body = h.static_file(name)
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    return web.Response(body=body, content_type=kind, charset="utf-8",
                        headers={"Cache-Control": "max-age=300"})


def _login_page(target: str, notice: str, status: int = 200) -> web.Response:
    note = f'<p class="notice error">{h.esc(notice)}</p>' if notice else ""
    text = h.template("login.html").substitute(next=h.esc(target), notice=note)
    return web.Response(text=text, content_type="text/html", status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A parameter error becomes a 400 that says what to correct, as JSON or as a page."""
    try:
        return await handler(request)
    except BadRequest as exc:
        if request.path.startswith("/api/") or request.method != "GET":
            return web.json_response({"error": str(exc)}, status=400)
        return h.page("Request not understood", f"<p><a href=\"{quote(request.path)}\">"
                      "start again</a></p>", "", notice=str(exc), error=True, status_code=400)
