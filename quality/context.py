"""Gather what a suite needs from the lake: authorities' keys and the previous load's size."""

from __future__ import annotations

from pathlib import Path

from lakehouse.lake import CATALOG, OPS, SHARED, Lake
from quality.suite import SuiteContext, reference_key
from schemas.model import Dataset, Registry


def _keys_file(lake: Lake, authority: str, key: str, folder: Path) -> str:
    """The authority's published keys as a Parquet file, one per lake snapshot (reused until it changes).

    Reference checks read it inside DuckDB, so a register of millions of codes is never a Python set
    or a SQL IN-list."""
    snapshot = lake.con.execute(f"SELECT id FROM {CATALOG}.current_snapshot()").fetchone()[0]
    path = folder / f"{authority}.{key}.{snapshot}.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        lake.con.execute(f'COPY (SELECT DISTINCT "{key}" AS key FROM {CATALOG}.{SHARED}."{authority}" '
                         f"WHERE \"{key}\" IS NOT NULL) TO '{tmp}' (FORMAT parquet)")
        tmp.replace(path)
    return str(path)


def gather(lake: Lake, ds: Dataset, registry: Registry, folder: Path) -> SuiteContext:
    """``folder`` holds the authorities' key files (under the home's staging zone)."""
    published = set(lake.tables(SHARED))
    refs: dict[str, str | None] = {}
    for col in ds.columns:
        ref = reference_key(registry, col, ds)
        if ref is None or ref[0].name in refs:
            continue
        authority, key = ref
        refs[authority.name] = _keys_file(lake, authority.name, key, folder) if authority.name in published else None
    prev = lake.con.execute(
        f"SELECT rows_in FROM {CATALOG}.{OPS}.loads WHERE dataset = ? AND status = 'published' "
        "ORDER BY finished_at DESC LIMIT 1", [ds.name]).fetchone()
    return SuiteContext(references=refs, previous_rows=prev[0] if prev else None)
