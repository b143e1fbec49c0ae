"""Load figures from the loads ledger and the shared zone: what is published, what failed and why.

The demo summary and ``onesource status`` read these; the sharing KPIs build on the same ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from lakehouse import ledger
from lakehouse.integrity import missing_files
from lakehouse.lake import CATALOG, SHARED, Lake
from schemas.model import Registry


@dataclass(frozen=True)
class DatasetStatus:
    dataset: str
    owner: str
    share_type: str
    table: str
    rows: int | None
    """Rows in the shared table now; None when nothing was ever published."""
    last_status: str | None
    last_load_at: dt.datetime | None
    last_error: str | None
    loads: int
    missing_files: tuple[str, ...] = ()
    """Data files the shared table's current snapshot reads that do not exist: the table is damaged, not
    published as it stands (lakehouse.integrity)."""

    @property
    def damaged(self) -> bool:
        return bool(self.missing_files)


def dataset_statuses(lake: Lake, registry: Registry, since: dt.datetime | None = None,
                     check_files: bool = True) -> list[DatasetStatus]:
    """One line per registered dataset: rows published and the outcome of its last load; with
    ``check_files``, whether each shared table's data files exist (a table whose files are gone is damaged)."""
    last = {dataset: (load.status, load.finished_at, load.error, n)
            for dataset, (load, n) in ledger.last_loads(lake.con, since or dt.datetime(1970, 1, 1)).items()}
    tables = set(lake.tables(SHARED))
    names = [ds.name for ds in registry.source_datasets if ds.name in tables]
    missing = missing_files(lake, tables=names) if check_files else {}
    out = []
    for ds in registry.source_datasets:
        rows = None
        if ds.name in tables:
            try:
                rows = lake.con.execute(f'SELECT count(*) FROM {CATALOG}.{SHARED}."{ds.name}"').fetchone()[0]
            except duckdb.Error:
                if ds.name not in missing:
                    raise  # the count reads delete files; a damaged table's may be gone
        status, at, error, n = last.get(ds.name, (None, None, None, 0))
        out.append(DatasetStatus(ds.name, ds.owner, ds.share_type, ds.table, rows, status, at, error, n,
                                 tuple(missing.get(ds.name, ()))))
    return out
