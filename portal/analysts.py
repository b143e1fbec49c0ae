"""The analysts' pages: the catalogue, a dataset's page, access requests, disputes and the SQL console.

Reads of the platform's own ledgers (loads, quality runs, requests, disputes) go through the
engine's read-only lake connection; every read of shared data goes through governed SQL as the
signed-in department. Writes (a request, a decision, a dispute) open the lake for one commit.
Owner decisions need a user with the ``steward`` role (sharing.roles) in the owning department.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.calendar import WorkCalendar
from lakehouse.lake import CATALOG, SHARED, Lake, list_tables
from lakehouse.ledger import FAILED, QUARANTINED, last_delivered_loads, quality_runs, ref
from portal import charts
from portal.labels import LABELS, code
from schemas.model import SHARE_TYPES, UPDATE_CYCLES
from sharing import disputes, requests
from sharing.exceptions import QueryFailed, QueryRefused, RequestError
from sharing.grants import MASKED_LEVEL
from sharing.roles import STEWARD
from sharing.users import User

if TYPE_CHECKING:
    from portal.web import Site

CONSOLE_ROWS = 500
"""Rows shown in the console; downloads carry up to the engine's row limit."""
OWNER = STEWARD  # the role that decides its department's requests and disputes (sharing.roles)
PREVIEW_ROWS = 20
QUALITY_RUNS = 30
"""Quality runs shown in a dataset's trend, newest last."""
HEALTH_CLASS = {"ok": "ok", "stale": "warn", "bad": "bad", "empty": "warn", "never": "bad"}
"""A dataset's state -> its colour: green, amber for stale or empty, red for a failed or missing load."""


def health(status: str | None, at: dt.datetime | None, rows: int | None, freshness: dt.timedelta) -> str:
    """``ok``, ``stale``, ``bad`` (the last load was quarantined or failed: the last good snapshot, if any, is
    still what queries read), ``empty`` (published, no rows) or ``never`` (nothing published)."""
    if status in (QUARANTINED, FAILED):
        return "bad"
    if rows is None:
        return "never"
    if rows == 0:
        return "empty"
    if at is not None and _now() - at > freshness:  # no load at all: a platform table, written by its job
        return "stale"
    return "ok"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register(app: FastAPI, site: Site) -> None:
    engine = site.engine  # engine.registry at each request: it is re-read when a version is registered

    def ledger(sql: str, params: list | None = None) -> list[tuple]:
        with engine.cursor() as lake:
            return lake.con.execute(sql, params or []).fetchall()

    def access(user: User) -> dict:
        with engine.cursor() as lake:
            return engine.access(lake.con, user.department, user=user.name)

    def visible_disputes(user: User, **filters) -> list[disputes.Dispute]:
        """Disputes as the user's department may see them: of datasets it reads, keys masked as it reads them."""
        with engine.cursor() as lake:
            readable = engine.access(lake.con, user.department, user=user.name)
            found = disputes.listing(lake, **filters)
            return disputes.for_department(found, engine.registry, readable, user.department,
                                           disputes.rows_checker(lake.con), user=disputes.narrowed(lake.con, user.name))

    def writable() -> Lake:
        return Lake(engine.settings.lake)

    def last_loads() -> dict[str, tuple]:
        """dataset -> (status, finished_at) of its last load that delivered data."""
        with engine.cursor() as lake:
            return {name: (load.status, load.finished_at) for name, load in last_delivered_loads(lake.con).items()}

    def row_counts(names: list[str], exact: bool = True) -> dict[str, int]:
        """Rows of each published shared table (a count, not a read of the data: no grant needed). Not
        ``exact``: the catalog's own figure (duckdb_tables' estimated_size, DuckLake's record counts),
        one metadata read for the whole list instead of a count per table (~10 ms each)."""
        with engine.cursor() as lake:
            if not exact:
                found = dict(lake.con.execute(
                    "SELECT table_name, estimated_size FROM duckdb_tables() WHERE database_name = ? AND "
                    "schema_name = ?", [CATALOG, SHARED]).fetchall())
                return {n: found[n] for n in names if n in found}
            present = set(list_tables(lake.con, SHARED))
            return {n: lake.con.execute(f"SELECT count(*) FROM {CATALOG}.{SHARED}.{_q(n)}").fetchone()[0]
                    for n in names if n in present}

    def preview(user: User, ds, acc, purpose: str = "dataset preview"):
        """The first rows as the department reads them, through governed SQL (audited like any query):
        ordered by the key where the department sees it, then by every column it sees unmasked."""
        visible = [c.name for c in ds.columns if c.name in acc.columns]
        plain = [c for c in visible if c not in acc.masked]
        order = [k for k in ds.key if k in plain] + [c for c in plain if c not in ds.key]
        sql = (f"SELECT {', '.join(_q(c) for c in visible)} FROM shared.{_q(ds.name)}"
               + (f" ORDER BY {', '.join(_q(c) for c in order)}" if order else "") + f" LIMIT {PREVIEW_ROWS}")
        return engine.query(user.department, sql, user=user.name, purpose=purpose)

    def record_key(ds, acc, columns: list[str], row: tuple) -> tuple[str | None, int]:
        """The real key of the one record among the department's rows whose unmasked visible values are
        ``row``'s: (key, 1), or (None, how many records match) when it is not exactly one."""
        plain = [(c, v) for c, v in zip(columns, row, strict=True) if c not in acc.masked]
        where = [f"{_q(c)} IS NOT DISTINCT FROM ?" for c, _ in plain]
        if acc.row_filters:
            where.append("(" + " OR ".join(f"({f})" for f in acc.row_filters) + ")")
        key = " || '|' || ".join(f"CAST({_q(k)} AS VARCHAR)" for k in ds.key)
        found = ledger(f"SELECT DISTINCT {key} FROM {CATALOG}.{SHARED}.{_q(ds.name)} "
                       f"WHERE {' AND '.join(where) or 'true'} LIMIT 2", [v for _, v in plain])
        return (found[0][0], 1) if len(found) == 1 else (None, len(found))

    @app.get("/catalogue", include_in_schema=False)
    def catalogue(request: Request, q: str = "", department: str = "", element: str = "", share_type: str = "",
                  cycle: str = "") -> HTMLResponse:
        user = site.user(request)
        from portal.web import PageError

        known = {"department": {d.code for d in engine.registry.departments}, "share_type": set(SHARE_TYPES),
                 "cycle": set(UPDATE_CYCLES), "element": {e.name for e in engine.registry.elements}}
        for field, value in (("department", department), ("share_type", share_type), ("cycle", cycle),
                             ("element", element)):
            if value and value not in known[field]:  # a typo in a link or a bookmark: not a silent empty list
                raise PageError(400, "bad_filter", field=field, value=value)
        readable, last = access(user), last_loads()
        counts = row_counts([d.name for d in engine.registry.datasets], exact=False)
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
            state = health(status, at, counts.get(ds.name), ds.freshness)
            rows.append({"ds": ds, "owner": engine.registry.department(ds.owner).name, "readable": ds.name in readable,
                         "status": status, "at": at, "health": state, "rows": counts.get(ds.name),
                         "queryable": ds.name in readable and bool(counts.get(ds.name))})
        return site.page(request, "catalogue.html", user=user, rows=rows, q=q, department=department, element=element,
                         share_type=share_type, cycle=cycle, departments=engine.registry.departments,
                         elements=engine.registry.elements, share_types=SHARE_TYPES, health_class=HEALTH_CLASS,
                         cycles=[c for c in UPDATE_CYCLES if any(d.update_cycle == c for d in engine.registry.datasets)])

    @app.get("/catalogue/{name}", include_in_schema=False)
    def dataset_page(request: Request, name: str, notice: str = "") -> HTMLResponse:
        from portal.web import PageError

        user = site.user(request)
        lang = site.lang(request)
        try:
            ds = engine.registry.dataset(name)
        except KeyError as exc:
            raise PageError(404, "no_dataset", name=name) from exc
        acc = access(user).get(name)
        if acc is not None and acc.problem:
            acc = None  # a grant that cannot be applied reads nothing
        columns = []
        for col in ds.columns:
            el = engine.registry.element(col.element) if col.element else None
            authority = engine.registry.dataset(el.authority) if el else None
            columns.append({"col": col, "element": el, "sensitive": bool(el and el.sensitivity >= MASKED_LEVEL),
                            "masked": bool(acc and col.name in acc.masked),
                            "granted": bool(acc and col.name in acc.columns), "authority": authority})
        status, at = last_loads().get(name, (None, None))
        rows = row_counts([name]).get(name)
        state = health(status, at, rows, ds.freshness)
        with engine.cursor() as lake:
            runs = quality_runs(lake.con, name, QUALITY_RUNS)[::-1]
        failing = ledger(f"""SELECT check_name, column_name, blocking, unexpected_count FROM {ref('quality_results')}
                             WHERE load_id = ? AND dataset = ? AND NOT success AND skipped IS NULL
                             ORDER BY blocking DESC, check_name, column_name""",
                         [runs[-1].load_id, name]) if runs else []
        t = LABELS[lang]
        trend = charts.runs([(f"{r.run_at:%Y-%m-%d %H:%M}", bool(r.passed), t["checks_summary"].format(
            checks=r.checks, blocking=r.blocking_failed, warnings=r.warnings)) for r in runs]) if runs else ""
        since = _now() - dt.timedelta(days=90)
        consumers = sorted({r[0] for r in ledger(
            f"""SELECT DISTINCT department FROM {ref('audit_events')}
                WHERE decision = 'allowed' AND list_contains(tables, ?) AND department <> ? AND event_at >= ?""",
            [name, ds.owner, since])} | {r[0] for r in ledger(
            f"""SELECT DISTINCT department FROM {ref('grants')} WHERE dataset = ? AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?)""", [name, _now()])})
        # lineage: which authorities this dataset's elements come from, and which datasets take elements from it
        derived = sorted({d.name for d in engine.registry.datasets for c in d.columns
                          if c.element and engine.registry.element(c.element).authority == name and d.name != name})
        # a dispute names a record: shown only to departments that read the dataset, its key masked as they see it
        open_disputes = visible_disputes(user, dataset=name, status=disputes.OPEN) if acc is not None else []
        with engine.cursor() as lake:
            mine = [r for r in requests.listing(lake, department=user.department) if r.dataset == name]
        # a quarantined or failed delivery leaves the last good snapshot shared: its rows are still read
        queryable = acc is not None and bool(rows)
        shown, refusal = None, None
        if queryable:
            try:
                shown = preview(user, ds, acc)
            except (QueryRefused, QueryFailed) as exc:
                refusal = str(exc)
        key_visible = acc is not None and all(k in acc.columns and k not in acc.masked for k in ds.key)
        return site.page(request, "dataset.html", user=user, ds=ds, owner=engine.registry.department(ds.owner),
                         columns=columns, readable=acc is not None, queryable=queryable,
                         row_filtered=bool(acc and acc.row_filters), status=status, at=at, rows=rows, health=state,
                         health_class=HEALTH_CLASS[state], runs=runs, failing=failing, quality_trend=trend,
                         history=schema_history(name), consumers=consumers, derived=derived,
                         disputes=open_disputes, my_requests=mine, notice=notice, preview=shown, refusal=refusal,
                         key_visible=key_visible,
                         can_request=ds.owner != user.department and ds.share_type != "not_shared" and acc is None)

    def schema_history(name: str) -> list[dict]:
        """The dataset's registered versions (schemas.versions), each with what changed from the one before."""
        out, before = [], None
        for version, definition, mode, at in ledger(
                f"""SELECT version, definition, compatibility, registered_at FROM {ref('schema_versions')}
                    WHERE kind = 'dataset' AND subject = ? ORDER BY version""", [name]):
            now = json.loads(definition)
            cols, old = now.get("columns", {}), (before or {}).get("columns", {})
            out.append({"version": version, "at": at, "mode": mode, "first": before is None,
                        "added": [f"{c} ({d.get('type')})" for c, d in cols.items() if c not in old] if before else [],
                        "removed": [c for c in old if c not in cols],
                        "changed": [c for c, d in cols.items() if c in old and old[c] != d],
                        "key": before is not None and before.get("key") != now.get("key"),
                        "columns": len(cols)})
            before = now
        return out[::-1]

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
        lang = site.lang(request)
        return _back(f"/catalogue/{name}", LABELS[lang]["request_done"].format(
            id=req.request_id, status=code("request_status", req.status, lang)))

    @app.post("/catalogue/{name}/dispute", include_in_schema=False)
    def flag_record(request: Request, name: str, key_value: str = Form(""), row: str = Form(""),
                    column: str = Form(""), description: str = Form("")) -> Response:
        """A record named by its key where the department sees the key, else picked by its row of the
        governed preview: the server finds that row's record among the department's rows by the values it
        sees unmasked (exactly one, or the pick is refused), so a masked key is never asked for."""
        user = site.user(request)
        t = LABELS[site.lang(request)]
        acc = access(user).get(name)
        if acc is None or acc.problem:  # as the API: only a department that reads the dataset flags its records
            return _back(f"/catalogue/{name}", f"{name} is not readable by {user.department}")
        ds = engine.registry.dataset(name)
        key_visible = all(k in acc.columns and k not in acc.masked for k in ds.key)
        if not (key_visible and key_value.strip()):
            if not row.isdigit():
                return _back(f"/catalogue/{name}", t["no_row"])
            try:
                shown = preview(user, ds, acc, purpose="dispute: the picked record")
            except (QueryRefused, QueryFailed) as exc:
                return _back(f"/catalogue/{name}", str(exc))
            if int(row) >= len(shown.rows):
                return _back(f"/catalogue/{name}", t["row_gone"])
            found, count = record_key(ds, acc, list(shown.columns), shown.rows[int(row)])
            if found is None:
                return _back(f"/catalogue/{name}", t["row_ambiguous"].format(n=count) if count else t["row_gone"])
            key_value = found
        try:
            with writable() as lake:
                d = disputes.flag(lake, engine.registry, user.department, name, key_value, description,
                                  reported_by=user.name, column=column or None)
        except RequestError as exc:
            return _back(f"/catalogue/{name}", str(exc))
        return _back(f"/catalogue/{name}", t["dispute_done"].format(id=d.dispute_id, owner=d.owner))

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
            raise HTTPException(status_code=403, detail="owner decisions need a user with the steward role")

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
        lang = site.lang(request)
        return _back("/requests", LABELS[lang]["decided_notice"].format(id=request_id,
                                                                        action=LABELS[lang][f"{action}_done"]))

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
        lang = site.lang(request)
        return _back("/requests", LABELS[lang]["dispute_resolved"].format(
            id=dispute_id, action=code("dispute_status", action, lang)))

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
