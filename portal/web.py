"""The web pages `onesource serve` adds beside the HTTP API: sign-in and the data bureau's dashboard.

Every figure on a page is read with governed SQL as the signed-in department (the KPI tables are
shared datasets like any other), so page views are audited like any query. Sessions are random
tokens kept in the server's memory (in the catalog database with a PostgreSQL catalog, shared by every
server: sharing.shared_state), sent as an HttpOnly, SameSite=Strict cookie, and expire after
:data:`SESSION_HOURS` (restarting a server that keeps them in memory signs everyone out).

Cross-site request forgery: every POST to a page (not to ``/api/``, whose bearer tokens a browser does not
send by itself) must come from this site: a foreign ``Origin`` (or, without one, ``Referer``) is refused
with 403, and, but for the sign-in form, it must carry the session's own CSRF token (the hidden
``csrf_token`` field every form has, or an ``X-CSRF-Token`` header). Sign-ins are throttled and lock a
user name or address after repeated failures (sharing.signin), answered with 429.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metrics.kpis import KPI_NAMES, LOWER_IS_BETTER, TARGETS
from portal import charts
from portal.labels import LABELS, code, kpi_label, note
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.roles import BUREAU
from sharing.signin import LockedOut, SignInGuard
from sharing.users import User, authenticate, still_valid

if TYPE_CHECKING:
    from sharing.shared_state import SessionStore

SESSION_COOKIE = "onesource_session"
SESSION_HOURS = 8
CSRF_FIELD, CSRF_HEADER = "csrf_token", "x-csrf-token"
PERCENT_KPIS = tuple(k for k in KPI_NAMES if k != "reuse_factor")


NAV = (("/catalogue", "catalogue"), ("/requests", "requests"), ("/console", "console"), ("/dashboard", "dashboard"),
       ("/admin/users", "admin_users"))
"""The portal's top links, each shown to the roles that may open it."""


def may(user: User, href: str) -> bool:
    """Whether ``user``'s role may open the page at ``href`` (a path, its department code in the path)."""
    from sharing.roles import check

    path = href.split("?")[0]
    code = path.rsplit("/", 1)[-1] if path.startswith("/dashboard/departments/") else None
    return check(user.role, user.department, "GET", path, {"code": code} if code else None) is None


class Sessions:
    """Signed-in users by session token, each with its own CSRF token (the synchroniser token its forms carry).

    ``store``: the catalog database's session table (sharing.shared_state.SessionStore), shared by every server
    on a PostgreSQL catalog, so a session begun on one works on the others and a sign-out on one ends it on
    all; None: this process's memory (one server)."""

    def __init__(self, hours: float = SESSION_HOURS, store: SessionStore | None = None):
        self.ttl = dt.timedelta(hours=hours)
        self.store = store
        self._lock = threading.Lock()
        self._by_token: dict[str, tuple[User, dt.datetime, str]] = {}

    @classmethod
    def of(cls, engine: GovernedEngine) -> Sessions:
        """In the catalog database when the engine's audit chain is shared there, else in memory."""
        from sharing.shared_state import SessionStore

        dsn = getattr(engine.audit, "shared", None)
        return cls(store=SessionStore(dsn) if dsn else None)

    def start(self, user: User) -> str:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        if self.store is not None:
            self.store.put(token, user, csrf, self.ttl)
            return token
        with self._lock:
            self._by_token[token] = (user, dt.datetime.now(dt.UTC) + self.ttl, csrf)
        return token

    def _live(self, token: str | None) -> tuple[User, dt.datetime, str] | None:
        if self.store is not None:
            return self.store.get(token) if token else None
        with self._lock:
            hit = self._by_token.get(token or "")
            if hit is None:
                return None
            if hit[1] <= dt.datetime.now(dt.UTC):
                del self._by_token[token or ""]
                return None
            return hit

    def user(self, token: str | None) -> User | None:
        hit = self._live(token)
        return hit[0] if hit else None

    def csrf(self, token: str | None) -> str | None:
        """The CSRF token of the session ``token``; None when there is no such session (or it expired)."""
        hit = self._live(token)
        return hit[2] if hit else None

    def end(self, token: str | None) -> None:
        if self.store is not None:
            if token:
                self.store.end(token)
            return
        with self._lock:
            self._by_token.pop(token or "", None)


class _SignIn(Exception):
    """Raised by a page that needs a signed-in user: answered with a redirect to /login."""


class PageError(HTTPException):
    """A page's 404 or 400, its message a label of portal.labels (``key``) filled with ``values``:
    answered with an HTML page in the reader's language (``/api/`` keeps its JSON errors)."""

    def __init__(self, status_code: int, key: str, **values: Any):
        super().__init__(status_code=status_code, detail=LABELS["en"][key].format(**values))
        self.key, self.values = key, values

    def message(self, lang: str) -> str:
        return LABELS[lang][self.key].format(**self.values)


PERIOD_FORM = r"\d{4}-(0[1-9]|1[0-2])"


def chosen_period(period: str | None, periods: list[str]) -> str:
    """The period a page shows: ``period`` when published, the latest when none is asked; an unknown or
    malformed one is a 400 naming the valid range (a silent fallback showed another month's figures)."""
    import re

    if period is None or period == "":
        return periods[-1] if periods else ""
    if periods and re.fullmatch(PERIOD_FORM, period) and period in periods:
        return period
    if not periods:
        raise PageError(400, "no_periods", period=period)
    raise PageError(400, "bad_period", period=period, first=periods[0], last=periods[-1])


def kpi_state(kpi: str, figure: dict | None) -> str:
    """``ontarget``, ``behind`` or ``""`` (no value or no target): the colour of a KPI figure against the
    city's target (metrics.kpis.TARGETS; LOWER_IS_BETTER KPIs meet it from below)."""
    if not figure or figure.get("value") is None:
        return ""
    target = figure.get("target")
    target = TARGETS.get(kpi) if target is None else target
    if target is None:
        return ""
    value = figure["value"]
    met = value <= target if kpi in LOWER_IS_BETTER else value >= target
    return "ontarget" if met else "behind"


class Site:
    """What every page needs: the engine, the sessions, the templates, and the signed-in user."""

    def __init__(self, engine: GovernedEngine, sessions: Sessions | None = None):
        self.engine = engine
        self.sessions = sessions or Sessions.of(engine)
        self.templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=select_autoescape(["html"]))
        self.templates.globals.update(kpi_label=kpi_label, pct=_pct, fmt=_fmt, code=code, note=note,
                                      kpi_state=kpi_state)

    @staticmethod
    def lang(request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("onesource_lang") or "zh"
        return lang if lang in LABELS else "zh"

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = self.lang(request)
        if context.get("notice"):  # a refusal of sharing.requests/disputes, in the reader's language
            context["notice"] = note(context["notice"], lang)
        csrf = self.sessions.csrf(request.cookies.get(SESSION_COOKIE)) or ""
        user = context.get("user")
        # links a page shows are the ones its reader's role may open (sharing.roles): an operator sees user
        # administration, an analyst its own department's figures and no one else's
        context.setdefault("nav", [(href, key) for href, key in NAV if user is None and key != "admin_users"
                                   or user is not None and may(user, href)])
        context.setdefault("may", (lambda href: may(user, href)) if user is not None else (lambda href: True))
        html = self.templates.get_template(name).render(t=LABELS[lang], lang=lang, path=request.url.path,
                                                        csrf_field=CSRF_FIELD, csrf=csrf, **context)
        response = HTMLResponse(html, status_code=status_code)
        if request.query_params.get("lang") in LABELS:
            response.set_cookie("onesource_lang", lang, samesite="strict", max_age=365 * 86400)
        response.headers["Content-Security-Policy"] = ("default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                       "img-src 'self' data:")
        return response

    def user(self, request: Request) -> User:
        token = request.cookies.get(SESSION_COOKIE)
        user = self.sessions.user(token)
        if user is None:
            raise _SignIn()
        with self.engine.cursor() as lake:  # disabled, or credentials reset since: the session is over
            valid = still_valid(lake, user)
        if valid and self.engine.freezes().stopping(user.name, user.department) is not None:
            valid = False  # frozen by the data bureau (sharing.security.freeze): the session is over
        if not valid:
            self.sessions.end(token)
            raise _SignIn()
        from portal.admin import authorise

        authorise(request, user)  # the role's rights (sharing.roles): 403, or its own home for the landing page
        return user

    def sql(self, user: User, query: str, purpose: str = "dashboard") -> list[tuple]:
        try:
            return self.engine.query(user.department, query, user=user.name, purpose=purpose).rows
        except QueryRefused as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from exc
        except QueryFailed as exc:  # no KPI table yet: nothing published
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return []
            raise


class CsrfGuard:
    """ASGI middleware: a POST (or any unsafe method) to a page must come from this site, and, but for the
    sign-in form, carry its session's CSRF token. ``/api/`` is left alone: its bearer tokens are not sent by
    a browser on its own, so a forged request has nothing to ride on."""

    UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp, sessions: Sessions, exempt: tuple[str, ...] = ("/api/",),
                 origin_only: tuple[str, ...] = ("/login",)):
        self.app, self.sessions, self.exempt, self.origin_only = app, sessions, exempt, origin_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.UNSAFE or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not _same_origin(request):
            await _refused("cross-site request refused: this form may only be sent from this site")(scope, receive, send)
            return
        if scope["path"] in self.origin_only:  # the sign-in form: no session yet (login CSRF: the Origin check)
            await self.app(scope, receive, send)
            return
        # (in a worker thread: with several servers the session is a row of the catalog database)
        expected = await run_in_threadpool(self.sessions.csrf, request.cookies.get(SESSION_COOKIE))
        if expected is None:  # no session: nothing runs; sign in first
            await RedirectResponse(f"/login?next={scope['path']}", status_code=303)(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        replay = _replay(body, receive)
        sent = request.headers.get(CSRF_HEADER)
        if sent is None:
            try:
                form = await Request(scope, _replay(body, receive)).form()
            except Exception:  # noqa: BLE001 - a body that is no form carries no token
                form = None
            if form is not None:
                sent = form.get(CSRF_FIELD)
                await form.close()
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
            await _refused("the form's security token is missing or out of date (CSRF): reload the page and send "
                           "it again")(scope, receive, send)
            return
        await self.app(scope, replay, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives ``body`` once, then whatever the client sends next (its disconnect)."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _same_origin(request: Request) -> bool:
    """The request's ``Origin`` (or, without one, its ``Referer``) names this site's host; a request with
    neither is not a browser's cross-site one. ``Origin: null`` (sandboxed or privacy-redirected) is refused."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def _refused(reason: str) -> Response:
    return PlainTextResponse(reason, status_code=403)


def mount_portal(app: FastAPI, engine: GovernedEngine, sessions: Sessions | None = None,
                 guard: SignInGuard | None = None) -> None:
    """The portal's pages on ``app``; ``guard`` throttles sign-ins (share one with the wire endpoint)."""
    site = Site(engine, sessions)
    sessions = site.sessions
    guard = guard or SignInGuard(engine.settings.signin, audit=engine.audit)
    app.add_middleware(CsrfGuard, sessions=sessions)

    @app.exception_handler(_SignIn)
    def _to_login(request: Request, _exc: _SignIn) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    def _is_page(request: Request) -> bool:
        return not request.url.path.startswith(("/api/", "/docs", "/redoc", "/openapi", "/healthz"))

    @app.exception_handler(StarletteHTTPException)
    async def _error_page(request: Request, exc: StarletteHTTPException) -> Response:
        """A page's error as a page in the reader's language; ``/api/`` keeps FastAPI's JSON."""
        if not _is_page(request) or exc.status_code not in (400, 403, 404):
            return await http_exception_handler(request, exc)
        lang = site.lang(request)
        if isinstance(exc, PageError):
            message = exc.message(lang)
        elif exc.status_code == 404 and exc.detail == "Not Found":  # no such route
            message = LABELS[lang]["no_page"].format(path=request.url.path)
        else:
            message = str(exc.detail)
        user = site.sessions.user(request.cookies.get(SESSION_COOKIE))
        return site.page(request, "error.html", status_code=exc.status_code, user=user, message=message,
                         heading=LABELS[lang][{404: "not_found", 403: "forbidden"}.get(exc.status_code, "bad_request")])

    @app.exception_handler(RequestValidationError)
    async def _bad_form(request: Request, exc: RequestValidationError) -> Response:
        """A page's malformed query or form (``days=abc``) as a 400 page; ``/api/`` keeps its 422 JSON."""
        if not _is_page(request):
            return await request_validation_exception_handler(request, exc)
        lang = site.lang(request)
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
                           for e in exc.errors())
        user = site.sessions.user(request.cookies.get(SESSION_COOKIE))
        return site.page(request, "error.html", status_code=400, user=user, heading=LABELS[lang]["bad_request"],
                         message=LABELS[lang]["bad_form"].format(detail=detail))

    lang_of, page, signed_in, sql = site.lang, site.page, site.user, site.sql

    from portal import admin, analysts

    analysts.register(app, site)
    admin.register(app, site)  # users administration (portal/admin.py), and where a refused landing page goes

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/dashboard", error: str | None = None) -> HTMLResponse:
        return page(request, "login.html", next=_local(next), error=error, user=None)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              next: str = Form("/dashboard")) -> Response:
        address = request.client.host if request.client else ""
        labels = LABELS[lang_of(request)]
        try:
            with guard.attempt(username, address, "portal"):
                with engine.cursor() as lake:
                    user = authenticate(lake, username, password)
                locked = guard.failed(username, address, "portal") if user is None else None
                if user is not None:
                    guard.succeeded(username, address)
        except LockedOut as exc:
            return page(request, "login.html", status_code=429, next=_local(next), user=None,
                        error=labels["locked"].format(minutes=exc.minutes))
        if user is None:
            if locked:
                return page(request, "login.html", status_code=429, next=_local(next), user=None,
                            error=f"{labels['bad_login']}. {labels['locked'].format(minutes=locked.minutes)}")
            return page(request, "login.html", next=_local(next), error=labels["bad_login"], user=None)
        frozen = engine.freezes().stopping(user.name, user.department)
        if frozen is not None:  # signed in right, but frozen by the data bureau: no session
            return page(request, "login.html", status_code=403, next=_local(next), user=None,
                        error=str(frozen.refusal(user.name)))
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, sessions.start(user), httponly=True, samesite="strict",
                            max_age=int(sessions.ttl.total_seconds()))
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:
        sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/dashboard", include_in_schema=False)
    def dashboard(request: Request, period: str | None = None) -> HTMLResponse:
        user = signed_in(request)
        security = _security(site.engine, lang_of(request)) if user.role == BUREAU else None
        try:
            periods = [r[0] for r in sql(user, "SELECT DISTINCT period FROM shared.kpi_figures ORDER BY period")]
        except HTTPException:
            if security is None:
                raise
            periods = []  # a registry without the KPI tables: the bureau still sees its security alerts
        if not periods and not period:
            return page(request, "empty.html", user=user, security=security)
        period = chosen_period(period, periods)
        figures = _figures(sql(user, "SELECT scope, scope_name, kpi, value, numerator, denominator, target "
                                     f"FROM shared.kpi_figures WHERE period = {_lit(period)}"))
        city = figures.pop("city", {"name": "", "kpis": {}})
        history = defaultdict(list)
        for p, kpi, value in sql(user, "SELECT period, kpi, value FROM shared.kpi_figures WHERE scope = 'city' "
                                       "ORDER BY period"):
            history[kpi].append((p, value))
        trends = {kpi: charts.trend(history.get(kpi, []), target=city["kpis"].get(kpi, {}).get("target"),
                                    percent=kpi != "reuse_factor", title=kpi_label(kpi, lang_of(request)))
                  for kpi in KPI_NAMES}
        ranking = sorted(figures.items(), key=lambda kv: (kv[1]["kpis"].get("sharing_rate", {}).get("value") is None,
                                                          -(kv[1]["kpis"].get("sharing_rate", {}).get("value") or 0)))
        ranked = [(code, d) for code, d in ranking if d["kpis"].get("sharing_rate", {}).get("denominator")]
        bars = charts.bars([(f"/dashboard/departments/{code}?period={period}"
                             if may(user, f"/dashboard/departments/{code}") else None, d["name"],
                             d["kpis"]["sharing_rate"]["value"]) for code, d in ranked],
                           target=city["kpis"].get("sharing_rate", {}).get("target") or TARGETS.get("sharing_rate"),
                           lower_is_better="sharing_rate" in LOWER_IS_BETTER)
        return page(request, "dashboard.html", user=user, period=period, periods=periods, city=city["kpis"],
                    kpis=KPI_NAMES, trends=trends, ranking=bars, departments=ranked,
                    prefill=annual_report_prefill(site.engine.registry, lambda q: sql(user, q)),
                    forms=forms_prefill(site.engine.registry, lambda q: sql(user, q)),
                    lower_is_better=LOWER_IS_BETTER, percent_kpis=PERCENT_KPIS, security=security)

    @app.get("/dashboard/departments/{code}", include_in_schema=False)
    def department(request: Request, code: str, period: str | None = None) -> HTMLResponse:
        user = signed_in(request)
        try:
            dept = engine.registry.department(code)
        except KeyError as exc:
            raise PageError(404, "no_department", code=code) from exc
        periods = [r[0] for r in sql(user, "SELECT DISTINCT period FROM shared.kpi_figures ORDER BY period")]
        period = chosen_period(period, periods)
        figures = _figures(sql(user, "SELECT scope, scope_name, kpi, value, numerator, denominator, target "
                                     f"FROM shared.kpi_figures WHERE period = {_lit(period)} "
                                     f"AND scope IN ('city', {_lit(code)})"))
        datasets = sql(user, "SELECT dataset, title, share_type, update_cycle, counted_shared, reason, "
                             "last_load_status, last_load_at, consumers FROM shared.kpi_dataset_status "
                             f"WHERE period = {_lit(period)} AND owner = {_lit(code)} "
                             "ORDER BY counted_shared, dataset")
        duplicates = sql(user, "SELECT element, element_name, authority_department, authority_dataset, datasets "
                               f"FROM shared.kpi_duplicate_pairs WHERE period = {_lit(period)} "
                               f"AND department = {_lit(code)} AND duplicate ORDER BY element")
        history = defaultdict(list)
        for p, kpi, value in sql(user, "SELECT period, kpi, value FROM shared.kpi_figures "
                                       f"WHERE scope = {_lit(code)} ORDER BY period"):
            history[kpi].append((p, value))
        trend = charts.trend(history.get("sharing_rate", []), target=TARGETS.get("sharing_rate"),
                             title=kpi_label("sharing_rate", lang_of(request)))
        return page(request, "department.html", user=user, dept=dept, period=period, periods=periods,
                    kpis=KPI_NAMES, mine=figures.get(code, {"kpis": {}})["kpis"],
                    city=figures.get("city", {"kpis": {}})["kpis"], datasets=datasets, duplicates=duplicates,
                    trend=trend, percent_kpis=PERCENT_KPIS)

    @app.get("/dashboard/kpis/{kpi}", include_in_schema=False)
    def kpi_members(request: Request, kpi: str, period: str | None = None,
                    department: str | None = None) -> HTMLResponse:
        """The items behind one figure: what each adds to its numerator and denominator (kpi_members)."""
        user = signed_in(request)
        if kpi not in KPI_NAMES:
            raise PageError(404, "no_kpi", kpi=kpi)
        names = {d.code: d.name for d in engine.registry.departments}
        if department is not None and department not in names:
            raise PageError(404, "no_department", code=department)
        periods = [r[0] for r in sql(user, "SELECT DISTINCT period FROM shared.kpi_members ORDER BY period")]
        period = chosen_period(period, periods)
        where = f"period = {_lit(period)} AND kpi = {_lit(kpi)}"
        if department:
            where += f" AND department = {_lit(department)}"
        # the items that hold the figure back first (a smaller share of their denominator)
        rows = sql(user, "SELECT department, item, numerator, denominator, note FROM shared.kpi_members "
                         f"WHERE {where} ORDER BY numerator / nullif(denominator, 0) NULLS FIRST, department, item")
        return page(request, "kpi_members.html", user=user, kpi=kpi, period=period, periods=periods, rows=rows,
                    department=department, department_name=names.get(department or "", ""), names=names,
                    numerator=sum(r[2] for r in rows), denominator=sum(r[3] for r in rows))

    @app.get("/dashboard/definitions", include_in_schema=False)
    def definitions(request: Request) -> HTMLResponse:
        """docs/kpis.md, shipped with the product: each KPI's formula, what counts, a worked example."""
        return page(request, "definitions.html", user=signed_in(request), body=_definitions_html())

    @app.get("/dashboard/duplicates", include_in_schema=False)
    def duplicates(request: Request, period: str | None = None) -> HTMLResponse:
        user = signed_in(request)
        periods = [r[0] for r in sql(user, "SELECT DISTINCT period FROM shared.kpi_duplicate_pairs ORDER BY period")]
        period = chosen_period(period, periods)
        pairs = sql(user, "SELECT department, element, element_name, duplicate FROM shared.kpi_duplicate_pairs "
                          f"WHERE period = {_lit(period)}")
        names = {d.code: d.name for d in engine.registry.departments}
        rows = sorted({p[0] for p in pairs}, key=lambda c: (-sum(1 for p in pairs if p[0] == c and p[3]), c))
        columns = sorted({p[1] for p in pairs}, key=lambda e: (-sum(1 for p in pairs if p[1] == e and p[3]), e))
        cells = {(p[0], p[1]): "duplicate" if p[3] else "authority" for p in pairs}
        svg = charts.matrix(rows, columns, cells, row_labels=names,
                            column_labels={p[1]: p[2] for p in pairs})
        count = sum(1 for p in pairs if p[3])
        return page(request, "duplicates.html", user=user, period=period, periods=periods, matrix=svg,
                    duplicates=count, pairs=len(pairs))

    @app.get("/dashboard/export.{fmt}", include_in_schema=False)
    def export(request: Request, fmt: str, period: str | None = None) -> Response:
        from metrics.publish import EXPORT_COLUMNS, write_csv, write_xlsx

        user = signed_in(request)
        if fmt not in ("xlsx", "csv"):
            raise HTTPException(status_code=404, detail="export as .xlsx or .csv")
        if period:
            chosen_period(period, [r[0] for r in sql(user, "SELECT DISTINCT period FROM shared.kpi_figures "
                                                           "ORDER BY period")])
        where = f"WHERE period = {_lit(period)}" if period else ""
        rows = sql(user, f"SELECT {', '.join(EXPORT_COLUMNS)} FROM shared.kpi_figures {where} "
                         "ORDER BY period, scope, kpi")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"kpis.{fmt}"
            (write_xlsx if fmt == "xlsx" else write_csv)(path, rows)
            body = path.read_bytes()
        name = f"onesource-kpis-{period or 'all'}.{fmt}"
        media = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" if fmt == "xlsx"
                 else "text/csv; charset=utf-8")
        return Response(body, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


DEFINITIONS = Path(__file__).resolve().parents[1] / "docs" / "kpis.md"


def _security(engine: GovernedEngine, lang: str) -> dict:
    """The bureau's security panel: open alerts (newest 50) and the alerts of the last 14 days per day and
    kind (sharing.security.alerts), read from the lake's ops tables, not through governed SQL (they are not
    a dataset any department is granted)."""
    from core.citytime import to_local
    from sharing.security.alerts import list_alerts, per_day

    tz = engine.settings.city_timezone
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=15)
    with engine.cursor() as lake:
        recent = list_alerts(lake.con, since=since)
        opened = list_alerts(lake.con, status="open", limit=50)
    labels, counts = per_day(recent, tz)
    title = "每日安全告警（按规则）" if lang == "zh" else "Security alerts per day, by rule"
    return {"open": [{**a, "local_start": f"{to_local(a['window_start'], tz):%Y-%m-%d %H:%M}"} for a in opened],
            "chart": charts.stacked(labels, counts, title=title)}


def _definitions_html() -> str:
    """The KPI definitions as HTML; each KPI's heading carries its name as id (the cards link to it)."""
    import re

    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(DEFINITIONS.read_text(encoding="utf-8"))
    # "## sharing_rate — ..." -> <h2 id="sharing_rate">
    return re.sub(r"<h2>(<code>)?([a-z_]+)(</code>)?", lambda m: f'<h2 id="{m.group(2)}">{m.group(0)[4:]}', html)


def annual_report_prefill(registry, query) -> dict | None:
    """The enterprise annual report's prefill over every enterprise in the data pool (the form of
    metrics.prefill: a field is filled when its element's authoritative source holds a value), read with
    governed SQL like every figure on the dashboard; ``query`` runs one statement. None before the
    enterprise profile is published."""
    from metrics.prefill import ANNUAL_REPORT, PROFILE

    if PROFILE not in {d.name for d in registry.datasets}:
        return None
    held = {c.name for c in registry.dataset(PROFILE).columns}
    elements = [e for _, e in ANNUAL_REPORT if e and e in held]
    rows = query(f"SELECT count(*), {', '.join(f'count({_ident(e)})' for e in elements) or '0'} "
                 f"FROM shared.{_ident(PROFILE)}") if elements else []
    if not rows or not rows[0][0]:
        return None
    enterprises, *counts = rows[0]
    filled, fields = sum(counts), len(ANNUAL_REPORT)
    return {"enterprises": enterprises, "fields": fields, "filled": filled, "per_report": filled / enterprises,
            "rate": filled / (enterprises * fields)}


def forms_prefill(registry, query) -> dict | None:
    """The registry's forms filled from the lake, city-wide (the platform table ``form_prefill``, metrics.forms):
    each form's prefill rate (cells prefilled / cells: its fields x its subjects) and the city's, and the fields
    no longer typed (cells prefilled), with a bar per form; read with governed SQL like every figure here. None
    before the table is published or when no form has subjects."""
    from portal import charts

    if "form_prefill" not in {d.name for d in registry.datasets}:
        return None
    rows = query("SELECT form, any_value(form_name), sum(filled), sum(subjects), count(*), "
                 "count(*) FILTER (WHERE NOT typed) FROM shared.form_prefill GROUP BY form ORDER BY form")
    rows = [r for r in rows if r[3]]
    if not rows:
        return None
    filled, cells = sum(r[2] for r in rows), sum(r[3] for r in rows)
    per = [{"form": r[0], "name": r[1], "filled": r[2], "cells": r[3], "fields": r[4], "bound": r[5],
            "subjects": r[3] // r[4], "rate": r[2] / r[3]} for r in rows]
    return {"rate": filled / cells, "filled": filled, "cells": cells, "forms": per,
            "chart": charts.bars([(None, f["name"], f["rate"]) for f in per])}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _figures(rows: list[tuple]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for scope, name, kpi, value, num, den, target in rows:
        entry = out.setdefault(scope, {"name": name, "kpis": {}})
        entry["kpis"][kpi] = {"value": value, "numerator": num, "denominator": den, "target": target}
    return out


def _lit(value: str | None) -> str:
    return "'" + (value or "").replace("'", "''") + "'"


def _local(path: str) -> str:
    """Only redirect within this site (an open redirect would let a link send users elsewhere)."""
    return path if path.startswith("/") and not path.startswith("//") else "/dashboard"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _fmt(kpi: str, figure: dict | None) -> str:
    if not figure or figure.get("value") is None:
        return "–"
    return f"{figure['value']:.2f}" if kpi == "reuse_factor" else f"{figure['value']:.1%}"
