"""Disputes (异议处理): a consuming department flags a record of a shared dataset as wrong.

The owner sees the flag, verifies, and either corrects the record at the source (the next load
carries the fix) or rejects the dispute with a reason. Until then the record carries the flag: the
dataset page and the SQL console mark it. Every step is a row of ``ops.disputes`` with who and when.

A dispute names a record by its key, so it is shown only as the record itself would be
(:func:`for_department`): to departments that can read the dataset now, among the rows they may read,
with the key masked where their access masks that column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.citytime import utc_now
from lakehouse import ledger
from lakehouse.lake import CATALOG, SHARED, Lake
from schemas.model import Dataset, Registry
from sharing.exceptions import RequestError

if TYPE_CHECKING:
    import duckdb

    from sharing.grants import Access

OPEN, CORRECTED, REJECTED = "open", "corrected", "rejected"
DISPUTE_STATUSES = (OPEN, CORRECTED, REJECTED)
_COLUMNS = ("dispute_id", "dataset", "owner", "key_value", "column_name", "description", "department", "reported_by",
            "reported_at", "status", "resolved_by", "resolved_at", "resolution")


@dataclass(frozen=True)
class Dispute:
    dispute_id: str
    dataset: str
    owner: str
    key_value: str
    column_name: str | None
    description: str
    department: str
    reported_by: str
    reported_at: dt.datetime
    status: str
    resolved_by: str | None
    resolved_at: dt.datetime | None
    resolution: str | None


def flag(lake: Lake, registry: Registry, department: str, dataset: str, key_value: str, description: str, *,
         reported_by: str, column: str | None = None) -> Dispute:
    ds = registry.dataset(dataset)
    if not key_value.strip() or not description.strip():
        raise RequestError("name the record (its key value) and say what is wrong with it")
    if column and column not in {c.name for c in ds.columns}:
        raise RequestError(f"{dataset} has no column {column!r}")
    d = Dispute(uuid.uuid4().hex[:12], dataset, ds.owner, key_value.strip(), column or None, description.strip(),
                department, reported_by, utc_now(), OPEN, None, None, None)
    lake.append(f"dispute on {dataset}", "disputes", {
        "dispute_id": d.dispute_id, "dataset": d.dataset, "owner": d.owner, "key_value": d.key_value,
        "column_name": d.column_name, "description": d.description, "department": d.department,
        "reported_by": d.reported_by, "reported_at": d.reported_at, "status": d.status, "resolved_by": d.resolved_by,
        "resolved_at": d.resolved_at, "resolution": d.resolution})
    return d


def listing(lake: Lake, *, dataset: str | None = None, owner: str | None = None, department: str | None = None,
            status: str | None = None, dispute_id: str | None = None) -> list[Dispute]:
    where, params = [], []
    for column, value in (("dataset", dataset), ("owner", owner), ("department", department), ("status", status),
                          ("dispute_id", dispute_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM {ledger.ref('disputes')}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [Dispute(*r) for r in lake.con.execute(sql + " ORDER BY reported_at", params).fetchall()]


def resolve(lake: Lake, dispute_id: str, *, owner: str, resolved_by: str, corrected: bool, resolution: str) -> Dispute:
    """``corrected=True``: fixed at the source; otherwise rejected, and then a reason is mandatory."""
    found = listing(lake, dispute_id=dispute_id)
    if not found:
        raise RequestError(f"no dispute {dispute_id!r}")
    d = found[0]
    if d.owner != owner:
        raise RequestError(f"only {d.owner}, the owner of {d.dataset}, resolves this dispute")
    if d.status != OPEN:
        raise RequestError(f"dispute {dispute_id} is {d.status} already")
    if not corrected and not resolution.strip():
        raise RequestError("rejecting a dispute needs a reason: the reporting department sees it")
    at = utc_now()
    lake.change(f"resolve dispute {dispute_id}", lambda con: ledger.resolve_dispute(
        con, dispute_id, CORRECTED if corrected else REJECTED, by=resolved_by, at=at, resolution=resolution.strip()))
    return listing(lake, dispute_id=dispute_id)[0]


# -- who sees which dispute ----------------------------------------------------------------------

HIDDEN = "***"
"""A key the department may not see at all (its column is not granted, or masked to nothing)."""


def mask_value(value: str, rule: str | None) -> str:
    """``value`` as a column masked with ``rule`` shows it: sharing.policy.MASKS, in Python (a resident ID
    keeps its first 6 and last 4 characters, a phone number its last 4; any other rule shows nothing)."""
    if not rule:
        return value
    if rule == "resident_id":
        return value[:6] + "********" + value[-4:]
    if rule in ("mobile", "phone"):
        return "*******" + value[-4:]
    return HIDDEN


def shown_key(d: Dispute, ds: Dataset, acc: Access) -> str:
    """The dispute's key as ``acc`` shows the key column(s): as is, masked, or hidden."""
    if len(ds.key) != 1:  # a composite key typed as one text: whole, or not at all
        visible = all(k in acc.columns and k not in acc.masked for k in ds.key)
        return d.key_value if visible else HIDDEN
    column = ds.key[0]
    if column not in acc.columns:
        return HIDDEN
    return mask_value(d.key_value, acc.masked.get(column))


RowCheck = Callable[[Dataset, "Access", list[str]], set[str]]
"""(dataset, access, key values) -> the key values among the rows the access lets its department read."""


def for_department(found: list[Dispute], registry: Registry, access: Mapping[str, Access], department: str,
                   in_rows: RowCheck | None = None, *, user: str | None = None) -> list[Dispute]:
    """The disputes ``department`` may see, as it may see them.

    ``access`` is the department's readable datasets (``GovernedEngine.access``): a dispute of a dataset
    it cannot read now is not shown, whoever raised it (a revoked grant takes the disputes with it). The
    key is shown as the key column is (:func:`shown_key`); with a row filter, a dispute is shown only when
    its record is among the department's rows (``in_rows``; without it, only the department's own
    disputes), or the department raised it. Where the access masks anything, descriptions and
    resolutions have resident IDs and phone numbers masked too (core.logsafe). ``user``: the user asking,
    when its rows are narrower than its department's (a district's or street's user, whose access is its
    jurisdiction's): then only the disputes it raised itself are shown outside its rows, not every one its
    department raised (a neighbouring street's dispute names a record of the other street, and says what is
    wrong with it)."""
    from core.logsafe import redact

    def own(d: Dispute) -> bool:
        return d.department == department and (user is None or d.reported_by == user)

    readable: dict[str, tuple[Dataset, Access]] = {}
    for name in {d.dataset for d in found}:
        acc = access.get(name)
        if acc is None or getattr(acc, "problem", None):
            continue
        try:
            readable[name] = (registry.dataset(name), acc)
        except KeyError:  # a dataset no longer registered: nobody reads it
            continue
    inside: dict[str, set[str]] = {}  # row-filtered datasets: the disputed keys among the department's rows
    for name, (ds, acc) in readable.items():
        if acc.row_filters:
            keys = sorted({d.key_value for d in found if d.dataset == name and not own(d)})
            inside[name] = in_rows(ds, acc, keys) if in_rows and keys else set()
    shown: list[Dispute] = []
    for d in found:
        if d.dataset not in readable:
            continue
        ds, acc = readable[d.dataset]
        if d.dataset in inside and not own(d) and d.key_value not in inside[d.dataset]:
            continue
        if acc.masked:
            d = dataclasses.replace(d, description=redact(d.description),
                                    resolution=redact(d.resolution) if d.resolution else d.resolution)
        shown.append(dataclasses.replace(d, key_value=shown_key(d, ds, acc)))
    return shown


def narrowed(con: duckdb.DuckDBPyConnection, user: str) -> str | None:
    """``user`` when it belongs to an organisation (a district's or street's user: its rows are its
    jurisdiction's, narrower than its department's), else None (:func:`for_department`'s ``user``)."""
    from sharing.users import organisation_of

    return user if organisation_of(con, user) is not None else None


def rows_checker(con: duckdb.DuckDBPyConnection) -> RowCheck:
    """A :data:`RowCheck` on a lake connection: which keys lie within the access's row filters (the filters
    are governed expressions, validated when granted and again when read: sharing.grants)."""
    def check(ds: Dataset, acc: Access, keys: list[str]) -> set[str]:
        if len(ds.key) != 1 or not keys:
            return set()
        key = '"' + ds.key[0].replace('"', '""') + '"'
        table = f'{CATALOG}.{SHARED}."{ds.name.replace(chr(34), chr(34) * 2)}"'
        where = " OR ".join(f"({f})" for f in acc.row_filters)
        found = con.execute(f"SELECT DISTINCT CAST({key} AS VARCHAR) FROM {table} WHERE ({where}) AND "
                            f"CAST({key} AS VARCHAR) IN ({', '.join('?' * len(keys))})", keys).fetchall()
        return {r[0] for r in found}

    return check
