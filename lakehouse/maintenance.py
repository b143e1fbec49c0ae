"""Lake maintenance: merge small files, expire old snapshots, delete the files no snapshot needs.

Every load is one DuckLake commit with its own small Parquet files; a year of daily loads over 2,000
datasets is ~700,000 files. :func:`maintain` merges adjacent files (rows and time travel unchanged),
expires snapshots older than the retention (kept long enough for audits: 180 days by default,
``ONESOURCE_SNAPSHOT_RETENTION_DAYS``), then deletes the files only expired snapshots used and
orphaned files left by aborted writes, both only once they are a day old, so a query that started
before the run keeps its files. Returns what it did; the maintenance DAG prints it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from lakehouse.lake import CATALOG, Lake, retrying

GRACE = dt.timedelta(days=1)
"""How old a file scheduled for deletion (or orphaned) must be before it is removed."""


@dataclass(frozen=True)
class MaintenanceReport:
    merged_tables: int
    files_merged: int
    snapshots_expired: int
    files_deleted: int
    orphans_deleted: int
    files_before: int | None
    files_after: int | None

    def __str__(self) -> str:
        files = (f"{self.files_before} -> {self.files_after} data files; " if self.files_before is not None else "")
        return (f"{files}merged {self.files_merged} file(s) in {self.merged_tables} table(s), expired "
                f"{self.snapshots_expired} snapshot(s), deleted {self.files_deleted} unreferenced and "
                f"{self.orphans_deleted} orphaned file(s)")


def _count_files(lake: Lake) -> int | None:
    path = lake.settings.data_path
    if "://" in path:
        return None  # object storage: DuckLake's own listing is the record there
    return sum(1 for _, _, files in os.walk(path) for f in files if f.endswith(".parquet"))


def maintain(lake: Lake, retention: dt.timedelta, now: dt.datetime | None = None,
             grace: dt.timedelta = GRACE) -> MaintenanceReport:
    now = now or dt.datetime.now(dt.UTC)
    before = _count_files(lake)

    def call(sql: str, params: list | None = None) -> list[tuple]:
        return retrying(lambda: lake.con.execute(sql, params or []).fetchall(), lake.settings.commit_retries, sql)

    merged = call(f"CALL ducklake_merge_adjacent_files('{CATALOG}')")
    expired = call(f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - retention])
    deleted = call(f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - grace])
    orphans = call(f"CALL ducklake_delete_orphaned_files('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - grace])
    return MaintenanceReport(merged_tables=len(merged), files_merged=sum(int(r[2]) for r in merged),
                             snapshots_expired=len(expired), files_deleted=len(deleted), orphans_deleted=len(orphans),
                             files_before=before, files_after=_count_files(lake))
