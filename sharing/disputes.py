"""Disputes (异议处理): a consuming department flags a record of a shared dataset as wrong.

The owner sees the flag, verifies, and either corrects the record at the source (the next load
carries the fix) or rejects the dispute with a reason. Until then the record carries the flag: the
dataset page and the SQL console mark it. Every step is a row of ``ops.disputes`` with who and when.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from lakehouse.lake import CATALOG, OPS, Lake
from schemas.model import Registry
from sharing.exceptions import RequestError

OPEN, CORRECTED, REJECTED = "open", "corrected", "rejected"
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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def flag(lake: Lake, registry: Registry, department: str, dataset: str, key_value: str, description: str, *,
         reported_by: str, column: str | None = None) -> Dispute:
    ds = registry.dataset(dataset)
    if not key_value.strip() or not description.strip():
        raise RequestError("name the record (its key value) and say what is wrong with it")
    if column and column not in {c.name for c in ds.columns}:
        raise RequestError(f"{dataset} has no column {column!r}")
    d = Dispute(uuid.uuid4().hex[:12], dataset, ds.owner, key_value.strip(), column or None, description.strip(),
                department, reported_by, _now(), OPEN, None, None, None)
    lake.write(f"dispute on {dataset}", f"INSERT INTO {CATALOG}.{OPS}.disputes VALUES "
           f"({', '.join('?' * len(_COLUMNS))})", [getattr(d, c) for c in _COLUMNS])
    return d


def listing(lake: Lake, *, dataset: str | None = None, owner: str | None = None, department: str | None = None,
            status: str | None = None, dispute_id: str | None = None) -> list[Dispute]:
    where, params = [], []
    for column, value in (("dataset", dataset), ("owner", owner), ("department", department), ("status", status),
                          ("dispute_id", dispute_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM {CATALOG}.{OPS}.disputes"
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
    lake.write(f"resolve dispute {dispute_id}",
           f"UPDATE {CATALOG}.{OPS}.disputes SET status = ?, resolved_by = ?, resolved_at = ?, resolution = ? "
           "WHERE dispute_id = ?", [CORRECTED if corrected else REJECTED, resolved_by, _now(), resolution.strip(),
                                    dispute_id])
    return listing(lake, dispute_id=dispute_id)[0]
