"""Cross-source consistency (多元校核): copies of an element compared with its authority.

A dataset that is not an element's authority but holds a copy of it (the tax register's enterprise
name, say) is joined with the authority on the authority's key (the credit code) and each copied
value is compared with the authoritative one. Every run stores, in one lake commit, its figures per
(dataset, element) in ``ops.consistency_results`` and each disagreeing record in
``ops.consistency_mismatches``. The consistency rate (docs/kpi-definitions.md) is equal / compared, where
compared counts the copied values (non-null) whose key the authority knows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from core.duck import one
from lakehouse import ledger
from lakehouse.lake import CATALOG, SHARED, Lake, retrying
from quality.suite import reference_key
from schemas.model import Registry


@dataclass(frozen=True)
class CopyPair:
    """Dataset ``dataset`` holds ``column``, a copy of ``element`` whose authority is ``authority``."""

    dataset: str
    owner: str
    column: str
    element: str
    join_column: str
    authority: str
    authority_owner: str
    authority_column: str
    authority_key: str


@dataclass(frozen=True)
class ConsistencyRate:
    owner: str
    dataset: str
    element: str
    authority: str
    compared: int
    equal: int

    @property
    def rate(self) -> float | None:
        return self.equal / self.compared if self.compared else None


def copy_pairs(registry: Registry) -> list[CopyPair]:
    """Every (dataset, element) copy that can be checked: the dataset also holds the authority's key."""
    pairs = []
    for ds in registry.source_datasets:
        joins: dict[str, tuple[str, str]] = {}  # authority -> (the column here holding its key, its key column)
        for col in ds.columns:
            ref = reference_key(registry, col, ds)
            if ref:
                joins.setdefault(ref[0].name, (col.name, ref[1]))
        for col in ds.columns:
            if not col.element or any(col.name == j[0] for j in joins.values()):
                continue
            authority = registry.dataset(registry.element(col.element).authority)
            if authority.name == ds.name or authority.name not in joins:
                continue
            auth_col = next(c.name for c in authority.columns if c.element == col.element)
            join_column, key = joins[authority.name]
            pairs.append(CopyPair(ds.name, ds.owner, col.name, col.element, join_column, authority.name,
                                  authority.owner, auth_col, key))
    return pairs


def _sql(pair: CopyPair) -> tuple[str, str]:
    """(from-clause joining copy and authority, the disagreement condition)."""
    frm = (f'{CATALOG}.{SHARED}."{pair.dataset}" d JOIN {CATALOG}.{SHARED}."{pair.authority}" a '
           f'ON d."{pair.join_column}" = a."{pair.authority_key}" WHERE d."{pair.column}" IS NOT NULL')
    return frm, f'd."{pair.column}" IS DISTINCT FROM a."{pair.authority_column}"'


def run_consistency(lake: Lake, registry: Registry) -> tuple[str, list[ConsistencyRate]]:
    """Compare every checkable copy with its authority; store the results; return (run id, rates)."""
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    published = set(lake.tables(SHARED))
    pairs = [p for p in copy_pairs(registry) if p.dataset in published and p.authority in published]
    rates: list[ConsistencyRate] = []

    def write() -> None:
        rates.clear()
        with lake.transaction() as con:
            for p in pairs:
                frm, differs = _sql(p)
                compared, equal = one(con, f"SELECT count(*), count(*) FILTER (WHERE NOT ({differs})) FROM {frm}")
                pair = {"run_id": run_id, "checked_at": at, "dataset": p.dataset, "owner": p.owner,
                        "element": p.element, "column_name": p.column, "authority": p.authority}
                result: ledger.ConsistencyResultRow = {
                    "run_id": run_id, "checked_at": at, "dataset": p.dataset, "owner": p.owner, "element": p.element,
                    "column_name": p.column, "authority": p.authority, "authority_owner": p.authority_owner,
                    "compared": compared, "equal": equal}
                ledger.append(con, "consistency_results", result)
                ledger.insert_select(
                    con, "consistency_mismatches",
                    f"SELECT {', '.join(f'?::VARCHAR AS {k}' if k != 'checked_at' else '?::TIMESTAMP AS checked_at' for k in pair)}, "
                    f"CAST(d.\"{p.join_column}\" AS VARCHAR) AS key_value, CAST(d.\"{p.column}\" AS VARCHAR) AS value, "
                    f"CAST(a.\"{p.authority_column}\" AS VARCHAR) AS authority_value FROM {frm} AND {differs}",
                    list(pair.values()))
                rates.append(ConsistencyRate(p.owner, p.dataset, p.element, p.authority, compared, equal))
            lake.commit_message(f"consistency run {run_id}", {"run_id": run_id, "pairs": len(pairs)})

    retrying(write, lake.settings.commit_retries, "storing consistency results")
    return run_id, rates


def latest_rates(lake: Lake) -> list[ConsistencyRate]:
    """The last run's figures, per dataset and element."""
    rows = lake.con.execute(
        f"""SELECT owner, dataset, element, authority, compared, equal FROM {ledger.ref('consistency_results')}
            WHERE run_id = (SELECT max(run_id) FROM {ledger.ref('consistency_results')})
            ORDER BY owner, dataset, element""").fetchall()
    return [ConsistencyRate(*r) for r in rows]
