"""The analysts' pages: the catalogue, a dataset's page, access requests, disputes and the SQL console.

Reads of the platform's own ledgers (loads, quality runs, requests, disputes) go through the
engine's read-only lake connection; every read of shared data goes through governed SQL as the
signed-in department. Writes (a request, a decision, a dispute) open the lake for one commit.
Owner decisions need a user with the ``owner`` role in the owning department.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lakehouse.lake import CATALOG, OPS, Lake
from metrics.calendar import WorkCalendar
from sharing import disputes, requests
from sharing.exceptions import QueryFailed, QueryRefused, RequestError
from sharing.grants import MASKED_LEVEL
from sharing.users import User

if TYPE_CHECKING:
    from portal.web import Site

CONSOLE_ROWS = 500
"""Rows shown in the console; downloads carry up to the engine's row limit."""
OWNER = "owner"


def register(app: FastAPI, site: Site) -> None:
    engine = site.engine  # engine.registry at each request: it is re-read when a version is registered

    def ledger(sql: str, params: list | None = None) -> list[tuple]:
        with engine.cursor() as lake:
            return lake.con.execute(sql, params or []).fetchall()

    def access(user: User) -> dict:
        with engine.cursor() as lake:
            return engine._access(lake.con, user.department)

    def visible_disputes(user: User, **filters) -> list[disputes.Dispute]:
        """Disputes as the user's department may see them: of datasets it reads, keys masked as it reads them."""
        with engine.cursor() as lake:
            readable = engine._access(lake.con, user.department)
            found = disputes.listing(lake, **filters)
            return disputes.for_department(found, engine.registry, readable, user.department,
                                           disputes.rows_checker(lake.con))

    def writable() -> Lake:
        return Lake(engine.settings.lake)

    def last_loads() -> dict[str, tuple]:
        return {r[0]: r[1:] for r in ledger(
            f"""SELECT dataset, status, finished_at FROM {CATALOG}.{OPS}.loads WHERE sha256 IS NOT NULL
                QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC) = 1""")}

    @app.get("/catalogue", include_in_schema=False)
    def catalogue(request: Request, q: str = "", department: str = "", element: str = "", share_type: str = "",
                  cycle: str = "") -> HTMLResponse:
        user = site.user(request)
        readable, last = access(user), last_loads()
        needle = q.strip().lower()
        rows = []
        for ds in engine.registry.datasets:
            haystack = " ".join([ds.name, ds.title, ds.description, *(c.name for c in ds.columns),
                                 *(engine.registry.element(c.element).name_zh for c in ds.columns if c.element)]).lower()
            if needle and needle not in haystack:
                continue
            if (department and ds.owner != department) or (share_type and ds.share_type != share_type) or \
                    (cycle and ds.update_cycle != cycle) or (element and element not in {c.element for c in ds.columns}):
                continue
            status, at = last.get(ds.name, (None, None))
            rows.append({"ds": ds, "owner": engine.registry.department(ds.owner).name, "readable": ds.name in readable,
                         "status": status, "at": at, "fresh": at is not None and _now() - at <= ds.freshness})
        return site.page(request, "catalogue.html", user=user, rows=rows, q=q, department=department, element=element,
                         share_type=share_type, cycle=cycle, departments=engine.registry.departments,
                         elements=engine.registry.elements, cycles=sorted({d.update_cycle for d in engine.registry.datasets}))

    @app.get("/catalogue/{name}", include_in_schema=False)
    def dataset_page(request: Request, name: str, notice: str = "") -> HTMLResponse:
        user = site.user(request)
        try:
            ds = engine.registry.dataset(name)
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=f"no dataset {name!r} in the catalogue") from exc
        acc = access(user).get(name)
        columns = []
        for col in ds.columns:
            el = engine.registry.element(col.element) if col.element else None
            authority = engine.registry.dataset(el.authority) if el else None
            columns.append({"col": col, "element": el, "sensitive": bool(el and el.sensitivity >= MASKED_LEVEL),
                            "masked": bool(acc and col.name in acc.masked), "visible": bool(acc and col.name in acc.columns),
                            "authority": authority})
        status, at = last_loads().get(name, (None, None))
        quality = ledger(f"""SELECT passed, checks, blocking_failed, warnings, run_at FROM {CATALOG}.{OPS}.quality_runs
                             WHERE dataset = ? ORDER BY run_at DESC LIMIT 1""", [name])
        since = _now() - dt.timedelta(days=90)
        consumers = sorted({r[0] for r in ledger(
            f"""SELECT DISTINCT department FROM {CATALOG}.{OPS}.audit_events
                WHERE decision = 'allowed' AND list_contains(tables, ?) AND department <> ? AND event_at >= ?""",
            [name, ds.owner, since])} | {r[0] for r in ledger(
            f"""SELECT DISTINCT department FROM {CATALOG}.{OPS}.grants WHERE dataset = ? AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?)""", [name, _now()])})
        # lineage: which authorities this dataset's elements come from, and which datasets take elements from it
        derived = sorted({d.name for d in engine.registry.datasets for c in d.columns
                          if c.element and engine.registry.element(c.element).authority == name and d.name != name})
        # a dispute names a record: shown only to departments that read the dataset, its key masked as they see it
        open_disputes = visible_disputes(user, dataset=name, status=disputes.OPEN) if acc is not None else []
        with engine.cursor() as lake:
            mine = [r for r in requests.listing(lake, department=user.department) if r.dataset == name]
        return site.page(request, "dataset.html", user=user, ds=ds, owner=engine.registry.department(ds.owner),
                         columns=columns, readable=acc is not None, row_filtered=bool(acc and acc.row_filters),
                         status=status, at=at, fresh=at is not None and _now() - at <= ds.freshness,
                         quality=quality[0] if quality else None, consumers=consumers, derived=derived,
                         disputes=open_disputes, my_requests=mine, notice=notice,
                         can_request=ds.owner != user.department and ds.share_type != "not_shared" and acc is None)

    @app.post("/catalogue/{name}/request", include_in_schema=False)
    def request_access(request: Request, name: str, purpose: str = Form(""), columns: list[str] = Form(default=[]),
                       row_filter: str = Form(""), days: int = Form(365)) -> Response:
        user = site.user(request)
        try:
            with writable() as lake:
                req = requests.create(lake, engine.registry, user.department, name, purpose=purpose, requested_by=user.name,
                                      columns=columns or None, row_filter=row_filter.strip() or None,
                                      period_days=days, calendar=WorkCalendar.for_settings(engine.settings))
        except (RequestError, KeyError) as exc:
            return _back(f"/catalogue/{name}", str(exc))
        return _back(f"/catalogue/{name}", f"request {req.request_id}: {req.status}")

    @app.post("/catalogue/{name}/dispute", include_in_schema=False)
    def flag_record(request: Request, name: str, key_value: str = Form(""), column: str = Form(""),
                    description: str = Form("")) -> Response:
        user = site.user(request)
        if name not in access(user):  # as the API: only a department that reads the dataset flags its records
            return _back(f"/catalogue/{name}", f"{name} is not readable by {user.department}")
        try:
            with writable() as lake:
                d = disputes.flag(lake, engine.registry, user.department, name, key_value, description,
                                  reported_by=user.name, column=column or None)
        except RequestError as exc:
            return _back(f"/catalogue/{name}", str(exc))
        return _back(f"/catalogue/{name}", f"dispute {d.dispute_id} recorded; {d.owner} will verify it")

    @app.get("/requests", include_in_schema=False)
    def request_list(request: Request, notice: str = "") -> HTMLResponse:
        user = site.user(request)
        now = _now()
        with engine.cursor() as lake:
            everything = [r for r in requests.listing(lake) if not r.request_id.startswith("hist-")]
        flagged = visible_disputes(user)
        mine = [r for r in everything if r.department == user.department]
        to_decide = [r for r in everything if r.owner == user.department]
        overdue = [r for r in everything if r.overdue(now)] if user.department == _bureau(engine.registry) else []
        return site.page(request, "requests.html", user=user, mine=mine, to_decide=to_decide, overdue=overdue,
                         now=now, owner=user.role == OWNER, notice=notice,
                         my_disputes=[d for d in flagged if d.department == user.department],
                         disputes_to_resolve=[d for d in flagged if d.owner == user.department and d.status == "open"],
                         dataset_columns={d.name: [c.name for c in d.columns] for d in engine.registry.datasets})

    def owner_only(user: User) -> None:
        if user.role != OWNER:
            raise HTTPException(status_code=403, detail="owner decisions need a user with the owner role")

    @app.post("/requests/{request_id}/{action}", include_in_schema=False)
    def decide(request: Request, request_id: str, action: str, reason: str = Form(""),
               columns: list[str] = Form(default=[])) -> Response:
        user = site.user(request)
        owner_only(user)
        try:
            with writable() as lake:
                if action == "approve":
                    requests.approve(lake, engine.registry, request_id, owner=user.department, decided_by=user.name,
                                     columns=columns or None, reason=reason.strip() or None)
                elif action == "refuse":
                    requests.refuse(lake, request_id, owner=user.department, decided_by=user.name, reason=reason)
                elif action == "revoke":
                    requests.revoke(lake, request_id, owner=user.department, decided_by=user.name, reason=reason)
                else:
                    raise HTTPException(status_code=404, detail=f"no action {action!r}")
        except RequestError as exc:
            return _back("/requests", str(exc))
        return _back("/requests", f"request {request_id}: {action} done")

    @app.post("/disputes/{dispute_id}/{action}", include_in_schema=False)
    def resolve(request: Request, dispute_id: str, action: str, resolution: str = Form("")) -> Response:
        user = site.user(request)
        owner_only(user)
        if action not in ("corrected", "rejected"):
            raise HTTPException(status_code=404, detail=f"no action {action!r}")
        try:
            with writable() as lake:
                disputes.resolve(lake, dispute_id, owner=user.department, resolved_by=user.name,
                                 corrected=action == "corrected", resolution=resolution)
        except RequestError as exc:
            return _back("/requests", str(exc))
        return _back("/requests", f"dispute {dispute_id}: {action}")

    @app.get("/console", include_in_schema=False)
    def console_form(request: Request) -> HTMLResponse:
        user = site.user(request)
        return site.page(request, "console.html", user=user, sql="", purpose="", result=None, refusal=None)

    @app.post("/console", include_in_schema=False)
    def console(request: Request, sql: str = Form(""), purpose: str = Form(""),
                download: str = Form("")) -> Response:
        user = site.user(request)
        try:
            result = engine.query(user.department, sql, user=user.name, purpose=purpose or "console")
        except (QueryRefused, QueryFailed) as exc:
            kind = "refused" if isinstance(exc, QueryRefused) else "failed"
            # the page itself is fine (200): it shows the refusal and its reason, as recorded in the audit log
            return site.page(request, "console.html", user=user, sql=sql, purpose=purpose, result=None,
                             refusal=(kind, str(exc)))
        if download in ("csv", "xlsx"):
            return _download(result.columns, result.rows, download)
        flagged = _flagged_rows(engine, visible_disputes(user, status=disputes.OPEN), result.columns, result.rows)
        return site.page(request, "console.html", user=user, sql=sql, purpose=purpose, result=result,
                         shown=result.rows[:CONSOLE_ROWS], flagged=flagged, refusal=None)


def _flagged_rows(engine, open_: list[disputes.Dispute], columns: list[str], rows: list[tuple]) -> set[int]:
    """Indexes of result rows whose key value has an open dispute on a dataset with that key column.

    ``open_`` are the disputes the user's department may see, keys as it sees them (masked where it reads
    the key masked): a flag can never confirm a value the department could not read anyway."""
    if not open_:
        return set()
    keys = {}
    for d in open_:
        ds = engine.registry.dataset(d.dataset)
        if len(ds.key) == 1 and ds.key[0] in columns:
            keys.setdefault(columns.index(ds.key[0]), set()).add(d.key_value)
    return {i for i, row in enumerate(rows) for col, values in keys.items() if str(row[col]) in values}


def _download(columns: list[str], rows: list[tuple], fmt: str) -> Response:
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        return Response(("\ufeff" + buf.getvalue()).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="onesource-query.csv"'})
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(columns)
    for row in rows:
        ws.append([_cell(v) for v in row])
    out = io.BytesIO()
    wb.save(out)
    return Response(out.getvalue(),
                    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": 'attachment; filename="onesource-query.xlsx"'})


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if value is None or isinstance(value, int | float | str | dt.date):
        return value
    return str(value)


def _bureau(registry) -> str:
    """The data bureau: the owner of the platform's own tables (it watches every overdue request)."""
    return next((d.owner for d in registry.datasets if d.platform), "")


def _back(path: str, notice: str) -> RedirectResponse:
    from urllib.parse import quote

    return RedirectResponse(f"{path}?notice={quote(notice)}", status_code=303)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
