"""Gather what a suite needs from the lake: authorities' keys and the previous load's size."""

from __future__ import annotations

from pathlib import Path

from core.duck import literal
from lakehouse import ledger
from lakehouse.lake import CATALOG, SHARED, Lake
from quality import scratch
from quality.suite import SuiteContext, reference_key
from schemas.model import Dataset, Registry


def _keys_file(lake: Lake, authority: str, key: str, folder: Path) -> str:
    """The authority's published keys as a Parquet file in ``folder`` (the load's own, removed when it ends).

    Reference checks read it inside DuckDB, so a register of millions of codes is never a Python set
    or a SQL IN-list. The keys are resident IDs and credit codes: in an encrypted lake the file is
    encrypted with a key only this process holds (quality.scratch)."""
    encrypted = lake.encrypted
    path = scratch.path_for(folder, f"{authority}.{key}", encrypted)
    if not path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if encrypted:
            scratch.add_key(lake.con)
        tmp = path.with_name(path.name + ".tmp")
        lake.con.execute(f'COPY (SELECT DISTINCT "{key}" AS key FROM {CATALOG}.{SHARED}."{authority}" '
                         f"WHERE \"{key}\" IS NOT NULL) TO {literal(str(tmp))} ({scratch.write_options(encrypted)})")
        tmp.replace(path)
    return str(path)


def gather(lake: Lake, ds: Dataset, registry: Registry, folder: Path) -> SuiteContext:
    """``folder`` holds the authorities' key files for one load (under the home's staging zone): the
    caller removes it when the load ends, whatever happens."""
    published = set(lake.tables(SHARED))
    refs: dict[str, str | None] = {}
    for col in ds.columns:
        ref = reference_key(registry, col, ds)
        if ref is None or ref[0].name in refs:
            continue
        authority, key = ref
        refs[authority.name] = _keys_file(lake, authority.name, key, folder) if authority.name in published else None
    prev = ledger.last_published_load(lake.con, ds.name)
    return SuiteContext(references=refs, previous_rows=prev.rows_in if prev else None)
