"""Grants and what each department may see: deny by default.

* ``unconditional`` datasets: every department reads every column (sensitive ones masked);
* ``conditional`` datasets: only with an active grant (its columns, its row filter, until it expires);
* ``not_shared`` datasets: nobody but the owner;
* the owner always reads its own datasets in full.

Grants live in the lake (``ops.grants``), so a revocation or an expiry takes effect on the next query.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from lakehouse.lake import CATALOG, OPS, Lake, retrying
from schemas.model import Dataset, Registry
from sharing.exceptions import QueryRefused

MASKED_LEVEL = 3
"""Elements at this sensitivity level or above are masked for every department but the owner."""


@dataclass(frozen=True)
class Grant:
    grant_id: str
    department: str
    dataset: str
    columns: tuple[str, ...] | None
    row_filter: str | None
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Access:
    """What one department may read of one dataset."""

    dataset: str
    columns: tuple[str, ...]
    row_filters: tuple[str, ...] = ()
    """OR-ed together; empty means every row."""
    masked: dict[str, str] = field(default_factory=dict)
    """column -> masking rule (see sharing.policy.MASKS)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def add_grant(lake: Lake, registry: Registry, department: str, dataset: str, *, columns: list[str] | None = None,
              row_filter: str | None = None, expires_at: dt.datetime | None = None, granted_by: str = "owner",
              purpose: str | None = None) -> str:
    ds = registry.dataset(dataset)
    registry.department(department)
    if ds.share_type == "not_shared":
        raise QueryRefused(f"{dataset} is not_shared ({ds.legal_basis}); it cannot be granted")
    unknown = sorted(set(columns or ()) - {c.name for c in ds.columns})
    if unknown:
        raise QueryRefused(f"{dataset} has no column(s) {', '.join(unknown)}")
    grant_id = uuid.uuid4().hex[:12]

    def write() -> None:
        with lake.transaction() as con:
            con.execute(f"INSERT INTO {CATALOG}.{OPS}.grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                        [grant_id, department, dataset, columns, row_filter, expires_at, granted_by, _now(), purpose])
            lake.commit_message(f"grant {dataset} to {department}", {"grant_id": grant_id})

    retrying(write, lake.settings.commit_retries, "recording a grant")
    return grant_id


def revoke_grant(lake: Lake, grant_id: str) -> None:
    def write() -> None:
        with lake.transaction() as con:
            con.execute(f"UPDATE {CATALOG}.{OPS}.grants SET revoked_at = ? WHERE grant_id = ?", [_now(), grant_id])
            lake.commit_message(f"revoke grant {grant_id}", {"grant_id": grant_id})

    retrying(write, lake.settings.commit_retries, "revoking a grant")


def active_grants(lake: Lake, department: str, at: dt.datetime | None = None) -> list[Grant]:
    if "grants" not in lake.tables(OPS):
        return []
    at = at or _now()
    rows = lake.con.execute(
        f"SELECT grant_id, department, dataset, columns, row_filter, expires_at FROM {CATALOG}.{OPS}.grants "
        "WHERE department = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", [department, at]
    ).fetchall()
    return [Grant(g, d, ds, tuple(c) if c is not None else None, f, e) for g, d, ds, c, f, e in rows]


def _masks(ds: Dataset, registry: Registry) -> dict[str, str]:
    out = {}
    for col in ds.columns:
        if not col.element:
            continue
        el = registry.element(col.element)
        if el.sensitivity >= MASKED_LEVEL:
            fmt = col.format or el.format
            out[col.name] = fmt if fmt in ("resident_id", "mobile", "phone") else ("text" if col.type == "string"
                                                                                     else "null")
    return out


def visible(registry: Registry, grants: list[Grant], department: str) -> dict[str, Access]:
    """dataset -> Access, for every dataset the department may read now; absent means refused."""
    registry.department(department)
    by_dataset: dict[str, list[Grant]] = {}
    for g in grants:
        by_dataset.setdefault(g.dataset, []).append(g)
    out = {}
    for ds in registry.datasets:
        every = tuple(c.name for c in ds.columns)
        if ds.owner == department:
            out[ds.name] = Access(ds.name, every)
        elif ds.share_type == "unconditional":
            out[ds.name] = Access(ds.name, every, masked=_masks(ds, registry))
        elif ds.share_type == "conditional" and ds.name in by_dataset:
            gs = by_dataset[ds.name]
            cols = every if any(g.columns is None for g in gs) else tuple(
                c for c in every if any(c in g.columns for g in gs))
            filters = () if any(not g.row_filter for g in gs) else tuple(g.row_filter for g in gs)
            masks = {k: v for k, v in _masks(ds, registry).items() if k in cols}
            out[ds.name] = Access(ds.name, cols, filters, masks)
    return out
