"""Access requests: a department asks for a dataset; the owner decides within the SLA.

* ``unconditional`` datasets are readable by everyone already: the request is approved at once;
* ``conditional`` ones wait for the owner, who approves (possibly narrowing the columns or rows) or
  refuses with a reason; the SLA is :data:`SLA_WORKING_DAYS` working days (core.calendar);
* ``not_shared`` ones cannot be requested (the refusal names the legal basis).

An approval writes a grant (sharing.grants); a revocation revokes it, effective on the next query.
Every request and decision is a row of ``ops.access_requests`` with who and when: the request
fulfilment KPI is computed from it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from core.calendar import WorkCalendar
from core.citytime import utc_now
from lakehouse import ledger
from lakehouse.lake import Lake
from schemas.model import Registry
from sharing.exceptions import RequestError
from sharing.grants import add_grant, revoke_grant

SLA_WORKING_DAYS = 5
MAX_PERIOD_DAYS = 3 * 366
"""The longest access a request may ask for (days): beyond it, ask again (a grant never lasts forever)."""
PENDING, APPROVED, REFUSED, REVOKED = "pending", "approved", "refused", "revoked"
REQUEST_STATUSES = (PENDING, APPROVED, REFUSED, REVOKED)
_COLUMNS = ("request_id", "department", "dataset", "owner", "share_type", "columns", "row_filter", "purpose",
            "period_days", "status", "requested_by", "requested_at", "due_at", "decided_at", "decided_by", "reason",
            "grant_id")
_SCOPED = (*_COLUMNS, "scope")
"""With the grant's scope (sharing.grants.SCOPES), a column lakes written before it came lack until their next write."""


@dataclass(frozen=True)
class AccessRequest:
    request_id: str
    department: str
    dataset: str
    owner: str
    share_type: str
    columns: tuple[str, ...] | None
    row_filter: str | None
    purpose: str
    period_days: int | None
    status: str
    requested_by: str
    requested_at: dt.datetime
    due_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    reason: str | None
    grant_id: str | None
    scope: str = "all"
    """The grant's scope asked for (and, once approved, given): ``all`` or ``jurisdiction``."""

    def overdue(self, now: dt.datetime) -> bool:
        return self.status == PENDING and now >= self.due_at


def create(lake: Lake, registry: Registry, department: str, dataset: str, *, purpose: str, requested_by: str,
           columns: list[str] | None = None, row_filter: str | None = None, period_days: int | None = None,
           calendar: WorkCalendar | None = None, now: dt.datetime | None = None, scope: str = "all") -> AccessRequest:
    """Record a request; an unconditional dataset's is approved at once (no grant needed). ``scope``
    ``jurisdiction``: each user of the department would read only the rows of its organisation's jurisdiction."""
    ds = registry.dataset(dataset)
    registry.department(department)
    _scope(scope, ds)
    if not purpose.strip():
        raise RequestError("state the purpose of the request (it is shown to the owner and audited)")
    if ds.owner == department:
        raise RequestError(f"{dataset} belongs to {department} already")
    if ds.share_type == "not_shared":
        raise RequestError(f"{dataset} is not shared ({ds.legal_basis}); it cannot be requested")
    unknown = sorted(set(columns or ()) - {c.name for c in ds.columns})
    if unknown:
        raise RequestError(f"{dataset} has no column(s) {', '.join(unknown)}")
    row_filter = _row_filter(row_filter, ds)
    if period_days is not None and not 1 <= period_days <= MAX_PERIOD_DAYS:
        raise RequestError(f"the access period is {period_days} days; ask for 1 to {MAX_PERIOD_DAYS} days "
                           "(a longer need is asked for again when it ends)")
    now = now or utc_now()
    at_once = ds.share_type == "unconditional"
    due = now if at_once else (calendar or WorkCalendar()).add_working_days(now, SLA_WORKING_DAYS)
    req = AccessRequest(uuid.uuid4().hex[:12], department, dataset, ds.owner, ds.share_type,
                        tuple(columns) if columns else None, row_filter, purpose, period_days,
                        APPROVED if at_once else PENDING, requested_by, now, due, now if at_once else None,
                        "platform" if at_once else None, "unconditional: readable by every department" if at_once
                        else None, None, scope)
    lake.append(f"request {dataset} for {department}", "access_requests", {
        "request_id": req.request_id, "department": req.department, "dataset": req.dataset, "owner": req.owner,
        "share_type": req.share_type, "columns": list(req.columns) if req.columns is not None else None,
        "row_filter": req.row_filter, "purpose": req.purpose, "period_days": req.period_days, "status": req.status,
        "requested_by": req.requested_by, "requested_at": req.requested_at, "due_at": req.due_at,
        "decided_at": req.decided_at, "decided_by": req.decided_by, "reason": req.reason, "grant_id": req.grant_id,
        "scope": req.scope})
    return req


def _scope(scope: str, ds) -> None:
    from sharing.exceptions import QueryRefused
    from sharing.grants import checked_scope

    try:
        checked_scope(scope, ds)
    except QueryRefused as exc:
        raise RequestError(str(exc)) from exc


def _select(lake: Lake, where: str, params: list) -> list[tuple]:
    """The requests' rows, with the scope (``all`` in a lake not written since scopes came)."""
    import duckdb

    try:
        return lake.con.execute(f"SELECT {', '.join(_COLUMNS)}, coalesce(scope, 'all') "
                                f"FROM {ledger.ref('access_requests')} {where}", params).fetchall()
    except duckdb.BinderException:
        return [(*r, "all") for r in lake.con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM {ledger.ref('access_requests')} {where}", params).fetchall()]


def _row_filter(text: str | None, ds) -> str | None:
    """A requested row filter, validated and normalised now: the owner decides on exactly what will run."""
    from sharing.exceptions import QueryRefused
    from sharing.grants import checked_row_filter

    if not (text or "").strip():
        return None
    try:
        return checked_row_filter(text, ds)
    except QueryRefused as exc:
        raise RequestError(str(exc)) from exc


def get(lake: Lake, request_id: str) -> AccessRequest:
    found = _select(lake, "WHERE request_id = ?", [request_id])
    row = found[0] if found else None
    if row is None:
        raise RequestError(f"no access request {request_id!r}; `onesource requests list` shows them")
    return _row(row)


def _row(row: tuple) -> AccessRequest:
    values = dict(zip(_SCOPED, row, strict=True))
    values["columns"] = tuple(values["columns"]) if values["columns"] is not None else None
    return AccessRequest(**values)


def listing(lake: Lake, *, department: str | None = None, owner: str | None = None,
            status: str | None = None) -> list[AccessRequest]:
    where, params = [], []
    for column, value in (("department", department), ("owner", owner), ("status", status)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = " WHERE " + " AND ".join(where) if where else ""
    return [_row(r) for r in _select(lake, sql + " ORDER BY requested_at", params)]


def _pending(lake: Lake, request_id: str, owner: str) -> AccessRequest:
    req = get(lake, request_id)
    if req.owner != owner:
        raise RequestError(f"request {request_id} is for {req.dataset}, owned by {req.owner}; only the owner decides")
    if req.status != PENDING:
        raise RequestError(f"request {request_id} is {req.status} already")
    return req


def approve(lake: Lake, registry: Registry, request_id: str, *, owner: str, decided_by: str,
            columns: list[str] | None = None, row_filter: str | None = None, reason: str | None = None,
            now: dt.datetime | None = None, scope: str | None = None) -> AccessRequest:
    """Approve, optionally narrowing the requested columns or rows, or scoping it to each user's jurisdiction
    (``scope``; a request for the jurisdiction is never approved for all rows); writes the grant."""
    req = _pending(lake, request_id, owner)
    scope = scope or req.scope
    if req.scope == "jurisdiction" and scope != "jurisdiction":
        raise RequestError(f"request {request_id} asks for each user's jurisdiction only; an approval may narrow a "
                           "request, not widen it to every row")
    _scope(scope, registry.dataset(req.dataset))
    cols = columns or (list(req.columns) if req.columns else None)
    if req.columns and columns and set(columns) - set(req.columns):
        raise RequestError(f"an approval may narrow the request, not widen it: {sorted(set(columns) - set(req.columns))}"
                           " were not requested")
    now = now or utc_now()
    row_filter = _row_filter(row_filter, registry.dataset(req.dataset))
    expires = now + dt.timedelta(days=req.period_days) if req.period_days else None
    grant_id = add_grant(lake, registry, req.department, req.dataset, columns=cols,
                         row_filter=row_filter or req.row_filter, expires_at=expires, granted_by=decided_by,
                         purpose=req.purpose, scope=scope)
    lake.change(f"approve request {request_id}", lambda con: ledger.approve_request(
        con, request_id, APPROVED, at=now, by=decided_by, reason=reason, grant_id=grant_id, columns=cols,
        row_filter=row_filter or req.row_filter, scope=scope))
    return get(lake, request_id)


def refuse(lake: Lake, request_id: str, *, owner: str, decided_by: str, reason: str,
           now: dt.datetime | None = None) -> AccessRequest:
    """Refuse; the reason is mandatory (a refusal without one does not count as decided)."""
    if not (reason or "").strip():
        raise RequestError("a refusal needs a reason: the requesting department and the data bureau see it")
    _pending(lake, request_id, owner)
    at = now or utc_now()
    lake.change(f"refuse request {request_id}", lambda con: ledger.refuse_request(
        con, request_id, REFUSED, at=at, by=decided_by, reason=reason.strip()))
    return get(lake, request_id)


def revoke(lake: Lake, request_id: str, *, owner: str, decided_by: str, reason: str) -> AccessRequest:
    req = get(lake, request_id)
    if req.owner != owner:
        raise RequestError(f"only {req.owner} may revoke access to {req.dataset}")
    if req.status != APPROVED or not req.grant_id:
        raise RequestError(f"request {request_id} is {req.status}; only an approved grant can be revoked")
    revoke_grant(lake, req.grant_id)
    lake.change(f"revoke request {request_id}", lambda con: ledger.set_request_status(
        con, request_id, REVOKED, f"revoked by {decided_by}: {reason}"))
    return get(lake, request_id)
