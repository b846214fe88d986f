"""The admin HTTP server (aiohttp on the broker's event loop): the console, the REST API,
``/metrics`` in Prometheus' text format, ``/healthz`` (alive) and ``/readyz`` (serving)."""

from __future__ import annotations

import logging

from aiohttp import web

from broker.admin import analyst_api, analyst_views, api, views
from broker.admin import html as h
from broker.admin.analyst import AnalystService
from broker.admin.auth import COOKIE, Guard, Handler, resolve_token
from broker.admin.fhir_http import FhirWeb
from broker.admin.headers import add_security_headers
from broker.admin.listen import ConnectionGate, GatedSite
from broker.admin.service import AdminService, BadRequest
from broker.admin.sessions import SessionStore
from broker.admin.throttle import FailureLimit
from broker.admin.ups_rs import UpsWeb
from broker.audit.trail import AuditTrail
from broker.config import AdminSettings, is_loopback
from broker.logs import event
from broker.metrics import CONTENT_TYPE, Metrics
from broker.net.tls import server_context

log = logging.getLogger("broker.admin")
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
MAX_BODY = 64 * 1024


class AdminServer:
    def __init__(self, settings: AdminSettings, metrics: Metrics, service: AdminService,
                 analyst: AnalystService | None = None,
                 audit: AuditTrail | None = None, dicomweb: UpsWeb | None = None,
                 fhir: FhirWeb | None = None) -> None:
        """``analyst`` adds the query log, preview, explanation, trace and replay;
        ``dicomweb`` the Worklist Service (UPS-RS) under /dicomweb; ``fhir`` FHIR R4 order
        intake under /fhir."""
        self.settings = settings
        self.host, self.port = settings.host, settings.port
        self.ssl_context = server_context(settings.tls, "admin.tls")
        self.guard = Guard(resolve_token(settings), metrics,
                           SessionStore(settings.session_idle_timeout, settings.session_max_age),
                           FailureLimit(settings.max_auth_failures, settings.auth_failure_window),
                           audit)
        self.gate = ConnectionGate(settings.max_connections,
                                   settings.max_connections_per_address,
                                   settings.request_read_timeout, metrics)
        self.service = service
        self.analyst = analyst
        self.dicomweb = dicomweb
        self.fhir = fhir
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        assert self._runner is not None and self._runner.addresses
        return int(self._runner.addresses[0][1])

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    @property
    def serving(self) -> bool:
        return self._runner is not None and bool(self._runner.addresses)

    async def start(self) -> None:
        await self.service.open()
        app = web.Application(middlewares=[self.gate.middleware, _errors,
                                           self.guard.middleware], client_max_size=MAX_BODY)
        app[api.SERVICE] = self.service
        app[api.READ_TIMEOUT] = self.settings.request_read_timeout
        app.on_response_prepare.append(add_security_headers)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_get("/logout", self.logout)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/static/{name}", static)
        api.add_routes(app)
        views.add_routes(app)
        if self.analyst is not None:
            app[analyst_api.ANALYST] = self.analyst
            analyst_api.add_routes(app)
            analyst_views.add_routes(app)
        if self.dicomweb is not None:
            self.dicomweb.install(app)
        if self.fhir is not None:
            self.fhir.install(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0,
                                     keepalive_timeout=self.settings.request_read_timeout)
        await self._runner.setup()
        try:
            await GatedSite(self._runner, self.host, self.port, self.gate, self.ssl_context,
                            self.settings.tls.handshake_timeout).start()
        except OSError:
            await self.stop()
            raise
        event(log, "admin_listening", host=self.host, port=self.bound_port,
              auth="token" if self.guard.required else "loopback-only",
              tls=self.ssl_context is not None)
        if self.ssl_context is None and not is_loopback(self.host):
            event(log, "admin_plain_http", logging.WARNING, host=self.host,
                  detail="the admin token and patient data cross the network unencrypted; "
                  "set admin.tls")

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
        form = await api.read_body(request, request.post())
        target = str(form.get("next", "/"))
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        if not self.guard.required:
            raise web.HTTPSeeOther(target)
        if wait := self.guard.retry_after(request):
            self.guard.metrics.rejected("admin", "rate_limited")
            page = _login_page(target, "too many failed sign-ins from this address; try "
                               f"again in {wait} s", 429)
            page.headers["Retry-After"] = str(wait)
            return page
        if not self.guard.check_token(str(form.get("token", ""))):
            self.guard.metrics.rejected("admin", "bad_token")
            event(log, "admin_login_refused", logging.WARNING, peer=request.remote or "?")
            self.guard.failed(request, "sign-in")
            return _login_page(target, "this token is not the admin token", 401)
        event(log, "admin_login", peer=request.remote or "?")
        self.guard.signed_in(request)
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, self.guard.sessions.create(), httponly=True,
                            samesite="Strict", path="/", secure=request.secure,
                            max_age=int(self.settings.session_max_age))
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        """Ends the session on the server (its cookie is worthless after) and in the browser."""
        if self.guard.sessions.revoke(request.cookies.get(COOKIE, "")):
            event(log, "admin_logout", peer=request.remote or "?")
            self.guard.signed_out(request)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/", secure=request.secure, httponly=True,
                            samesite="Strict")
        raise response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def static(request: web.Request) -> web.Response:
    """Only the files shipped under static/ (no other name reaches the file system)."""
    name = request.match_info["name"]
    kind = next((t for ext, t in STATIC_TYPES.items() if name.endswith(ext)), None)
    if kind is None or name not in h.static_names():
        return web.json_response({"error": f"no static file {name[:40]!r}"}, status=404)
    return web.Response(body=h.static_file(name), content_type=kind, charset="utf-8",
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
        return h.page("Request not understood", f"<p><a href=\"{h.esc(request.rel_url.raw_path)}"
                      "\">start again</a></p>", "", notice=str(exc), error=True,
                      status_code=400)
