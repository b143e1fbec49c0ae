"""The HTTP API (FastAPI): the catalogue a department may see, and governed queries.

Every request carries ``Authorization: Bearer <department token>``; the user's role (sharing.roles)
decides which calls it may make (403 otherwise, and for every role on a call no rule lists). Queries go
through the same governed engine as the CLI and the Postgres-wire endpoint. Results come whole (never cut short: a result
beyond the limits of core.config.QueryLimits is an error) and streamed, in the format the ``format``
field names, or else the ``Accept`` header: JSON by default (``{"columns", "row_count", "rows"}``, streamed
a slice of rows at a time, not paged), CSV (``text/csv``), Arrow IPC stream
(``application/vnd.apache.arrow.stream``: the bulk path, a million rows to pandas or polars at close to
DuckDB's own speed) or Parquet (``application/vnd.apache.parquet``). ``X-Row-Count`` gives the row count
before the body. The OpenAPI document is at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from sharing import roles
from sharing.docs import mount_docs
from sharing.engine import GovernedEngine
from sharing.exceptions import InvalidSQL, QueryFailed, QueryRefused
from sharing.export import MEDIA_TYPES, chunks
from sharing.limits import BodyLimit
from sharing.signin import SignInGuard
from sharing.users import User

ARROW = MEDIA_TYPES["arrow"]
PARQUET = MEDIA_TYPES["parquet"]
QUERY_PATH = "/api/v1/query"
"""The governed query's route: the engine itself refuses a frozen user there (and audits it)."""
ACCEPTED = (("text/csv", "csv"), (ARROW, "arrow"), (PARQUET, "parquet"), ("application/x-parquet", "parquet"))
"""Accept header media types and the format each asks for (anything else: JSON)."""


class QueryIn(BaseModel):
    sql: str = Field(description="one SELECT, in the dialect named below")
    purpose: str | None = Field(default=None, description="why the data is needed (recorded in the audit log)")
    dialect: str = Field(default="postgres", pattern="^(postgres|mysql|duckdb)$")
    format: str | None = Field(default=None, pattern="^(json|csv|arrow|parquet)$",
                               description="the result's format; when omitted, the Accept header decides "
                                           "(JSON by default)")


class QueryOut(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int


class Refusal(BaseModel):
    error: str
    reason: str


class RequestIn(BaseModel):
    dataset: str
    purpose: str = Field(description="why the data is needed; shown to the owner")
    columns: list[str] | None = Field(default=None, description="all columns when omitted")
    row_filter: str | None = None
    days: int | None = Field(default=365, ge=1, le=3 * 366, description="how long the access is needed (days)")


class DecisionIn(BaseModel):
    reason: str | None = Field(default=None, description="mandatory to refuse or revoke")
    columns: list[str] | None = Field(default=None, description="approve: narrow the requested columns")


class DisputeIn(BaseModel):
    dataset: str
    key_value: str = Field(description="the disputed record's key")
    column: str | None = None
    description: str


def create_api(engine: GovernedEngine, guard: SignInGuard | None = None) -> FastAPI:
    """The HTTP API; ``guard`` records rejected bearer tokens (share the wire endpoint's and the portal's).
    ``onesource serve`` serves it with its health check and the portal's pages (onesource.serve)."""
    app = FastAPI(title="OneSource", version="1", description="Governed access to the city's shared data.",
                  docs_url=None, redoc_url=None)  # mount_docs serves them without a CDN
    mount_docs(app)
    guard = guard or SignInGuard(engine.settings.signin, audit=engine.audit)
    limits = engine.settings.limits  # 413 before a body is read; a worker thread for every query in flight, and 40 more
    app.add_middleware(BodyLimit, max_bytes=limits.request_bytes, threads=limits.concurrent + limits.queued + 40)
    def current_user(request: Request, authorization: str = Header(default="")) -> User:
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        user = engine.user_by_token(token) if token else None  # cached per lake snapshot
        if user is None:
            if token:  # a token that is no one's (revoked, mistyped, guessed): audited, for the misuse alerts
                guard.rejected(request.client.host if request.client else "", "http", "unknown bearer token")
            raise HTTPException(status_code=401, detail="a valid department bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        route = request.scope.get("route")  # the role's rights (sharing.roles): refused by default
        path = getattr(route, "path", request.url.path)
        # A freeze (sharing.security.freeze) revokes the tokens the user held then, not one issued during it (a
        # user added to a frozen department, a token rotated before the unfreeze): every route but the query's
        # (the engine refuses that one under the stamp it reads) checks the freezes, cached per catalog stamp.
        if path != QUERY_PATH and (frozen := engine.freezes().stopping(user.name, user.department)) is not None:
            raise HTTPException(status_code=403, detail=str(frozen.refusal(user.name)))
        refusal = roles.check(user.role, user.department, request.method, path, request.path_params)
        if refusal is not None:
            raise HTTPException(status_code=403, detail=refusal.reason)
        return user

    @app.get("/api/v1/catalogue", summary="datasets this department may query")
    def catalogue(user: User = Depends(current_user)) -> list[dict[str, Any]]:
        with engine.cursor() as lake:
            access = engine.access(lake.con, user.department, user=user.name)
        out = []
        for ds in engine.registry.datasets:
            acc = access.get(ds.name)
            if acc is None:
                continue
            out.append({"name": ds.name, "title": ds.title, "owner": ds.owner, "share_type": ds.share_type,
                        "update_cycle": ds.update_cycle, "table": ds.table,
                        "columns": [{"name": c, "type": ds.column(c).type, "masked": c in acc.masked}
                                    for c in acc.columns],
                        "row_filtered": bool(acc.row_filters)})
        return out

    @app.post(QUERY_PATH, response_model=QueryOut,
              responses={403: {"model": Refusal}, 400: {"model": Refusal}, 413: {"model": Refusal},
                         429: {"model": Refusal}},
              summary="run one governed SELECT; every row is answered, streamed as JSON, CSV, Arrow IPC or "
                      "Parquet (the format field, or the Accept header); 400: the SQL cannot be parsed ('invalid') "
                      "or failed (a result beyond the size limits too, nothing sent), 403: refused by policy, "
                      "413: the SQL is too long, 429: too many of this user's queries in flight")
    def query(body: QueryIn, request: Request, user: User = Depends(current_user)):
        try:
            result = engine.query(user.department, body.sql, user=user.name, purpose=body.purpose,
                                  dialect=body.dialect)
        except InvalidSQL as exc:  # the sender's SQL to correct (400), not a refusal by policy (403)
            return JSONResponse(status_code=exc.http_status, content={"error": "invalid", "reason": str(exc)})
        except QueryRefused as exc:  # by policy (403), or at a limit (LimitExceeded: 400, 413, 429)
            return JSONResponse(status_code=exc.http_status, content={"error": "refused", "reason": str(exc)},
                                headers={"Retry-After": "1"} if exc.http_status == 429 else None)
        except QueryFailed as exc:
            return JSONResponse(status_code=400, content={"error": "failed", "reason": str(exc)})
        fmt = body.format or _accepted(request.headers.get("accept", ""))
        headers = {"X-Row-Count": str(result.row_count)}
        if fmt == "parquet":
            headers["Content-Disposition"] = 'attachment; filename="result.parquet"'
        # the result is fetched whole already (the slot is free); encoding it goes a batch at a time
        return StreamingResponse(chunks(result, fmt), media_type=MEDIA_TYPES[fmt], headers=headers)

    _workflow_routes(app, engine, current_user)
    from sharing.subscriptions.links import add_routes as add_delivery_links

    add_delivery_links(app, engine, current_user)  # a webhook delivery's rows, by its signed link
    return app


def _workflow_routes(app: FastAPI, engine: GovernedEngine, current_user) -> None:
    """Access requests and disputes over HTTP: the same workflow as the portal and the CLI."""
    from dataclasses import asdict

    from core.calendar import WorkCalendar
    from lakehouse import Lake
    from sharing import disputes, requests
    from sharing.exceptions import RequestError

    def refused(exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=409, content={"error": "refused", "reason": str(exc)})

    @app.get("/api/v1/requests", summary="this department's access requests, and those it must decide")
    def list_requests(user: User = Depends(current_user)) -> dict[str, list[dict[str, Any]]]:
        with engine.cursor() as lake:
            found = requests.listing(lake)
        return {"mine": [asdict(r) for r in found if r.department == user.department],
                "to_decide": [asdict(r) for r in found if r.owner == user.department]}

    @app.post("/api/v1/requests", status_code=201, responses={409: {"model": Refusal}},
              summary="request a dataset (unconditional ones are approved at once)")
    def create_request(body: RequestIn, user: User = Depends(current_user)):
        try:
            with Lake(engine.settings.lake) as lake:
                req = requests.create(lake, engine.registry, user.department, body.dataset, purpose=body.purpose,
                                      requested_by=user.name, columns=body.columns, row_filter=body.row_filter,
                                      period_days=body.days, calendar=WorkCalendar.load(engine.settings.calendar_file))
        except (RequestError, KeyError) as exc:
            return refused(exc)
        return asdict(req)

    @app.post("/api/v1/requests/{request_id}/{action}", responses={409: {"model": Refusal}},
              summary="approve (optionally narrowing), refuse (with a reason) or revoke: the steward role only")
    def decide(request_id: str, action: str, body: DecisionIn, user: User = Depends(current_user)):
        if user.role != roles.STEWARD:  # (roles.RULES says so too)
            raise HTTPException(status_code=403, detail="owner decisions need a user with the steward role")
        if action not in ("approve", "refuse", "revoke"):
            raise HTTPException(status_code=404, detail=f"no action {action!r}")
        try:
            with Lake(engine.settings.lake) as lake:
                if action == "approve":
                    req = requests.approve(lake, engine.registry, request_id, owner=user.department,
                                           decided_by=user.name, columns=body.columns, reason=body.reason)
                elif action == "refuse":
                    req = requests.refuse(lake, request_id, owner=user.department, decided_by=user.name,
                                          reason=body.reason or "")
                else:
                    req = requests.revoke(lake, request_id, owner=user.department, decided_by=user.name,
                                          reason=body.reason or "")
        except RequestError as exc:
            return refused(exc)
        return asdict(req)

    @app.get("/api/v1/disputes", summary="disputes this department raised or must resolve (of datasets it "
                                         "can read now, keys masked as it reads them)")
    def list_disputes(user: User = Depends(current_user)) -> list[dict[str, Any]]:
        with engine.cursor() as lake:
            mine = [d for d in disputes.listing(lake) if user.department in (d.department, d.owner)]
            shown = disputes.for_department(mine, engine.registry, engine.access(lake.con, user.department,
                                                                                user=user.name),
                                            user.department, disputes.rows_checker(lake.con),
                                            user=disputes.narrowed(lake.con, user.name))
        return [asdict(d) for d in shown]

    @app.post("/api/v1/disputes", status_code=201, responses={409: {"model": Refusal}},
              summary="flag a record of a dataset this department may read as wrong")
    def flag(body: DisputeIn, user: User = Depends(current_user)):
        with engine.cursor() as lake:
            readable = body.dataset in engine.access(lake.con, user.department, user=user.name)
        if not readable:
            return refused(RequestError(f"{body.dataset} is not readable by {user.department}"))
        try:
            with Lake(engine.settings.lake) as lake:
                d = disputes.flag(lake, engine.registry, user.department, body.dataset, body.key_value,
                                  body.description, reported_by=user.name, column=body.column)
        except RequestError as exc:
            return refused(exc)
        return asdict(d)


def _accepted(accept: str) -> str:
    """The format an Accept header asks for: the first of ours it names, else JSON."""
    named = [kind.split(";")[0].strip().lower() for kind in accept.split(",")]
    for media in named:
        for accepted, fmt in ACCEPTED:
            if media == accepted:
                return fmt
    return "json"
