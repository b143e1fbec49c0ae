"""Gather what a suite needs from the lake: authorities' key values and the previous load's size."""

from __future__ import annotations

from lakehouse.lake import CATALOG, OPS, SHARED, Lake
from quality.suite import SuiteContext, reference_key
from schemas.model import Dataset, Registry


def gather(lake: Lake, ds: Dataset, registry: Registry) -> SuiteContext:
    published = set(lake.tables(SHARED))
    refs: dict[str, frozenset[str] | None] = {}
    for col in ds.columns:
        ref = reference_key(registry, col, ds)
        if ref is None or ref[0].name in refs:
            continue
        authority, key = ref
        if authority.name not in published:
            refs[authority.name] = None
            continue
        rows = lake.con.execute(f'SELECT DISTINCT "{key}" FROM {CATALOG}.{SHARED}."{authority.name}" '
                                f'WHERE "{key}" IS NOT NULL').fetchall()
        refs[authority.name] = frozenset(r[0] for r in rows)
    prev = lake.con.execute(
        f"SELECT rows_in FROM {CATALOG}.{OPS}.loads WHERE dataset = ? AND status = 'published' "
        "ORDER BY finished_at DESC LIMIT 1", [ds.name]).fetchone()
    return SuiteContext(references=refs, previous_rows=prev[0] if prev else None)
