"""Lake maintenance: merge small files, expire old snapshots, delete the files no snapshot needs.

Every load is one DuckLake commit with its own small Parquet files; a year of daily loads over 2,000
datasets is ~700,000 files. :func:`maintain` merges adjacent files (rows and time travel unchanged),
expires snapshots older than the retention (kept long enough for audits: 180 days by default,
``ONESOURCE_SNAPSHOT_RETENTION_DAYS``), then deletes the files only expired snapshots used and
orphaned files left by aborted writes, both only once they are a day old, so a query that started
before the run keeps its files. Returns what it did; the maintenance DAG prints it.

"Orphaned" means "not in *this* catalog". A catalog that is new or lost (recreated empty, replaced by an
older copy, pointed at the wrong database) would call every real data file an orphan, so before anything
:func:`orphan_refusal` compares the catalog with the data folder and the run is refused, with the reason,
when the catalog references no data file but the folder holds some, when an unreferenced file is older than
the catalog's oldest snapshot, or when most files in the folder are unreferenced. Nothing is deleted then;
the remedy is to restore the catalog that goes with the files (``onesource restore``), or, once a person
has checked that no catalog, current or backed up, needs them, to delete those files by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.duck import one
from core.errors import TerminalError
from lakehouse.lake import CATALOG, Lake, retrying

GRACE = dt.timedelta(days=1)
"""How old a file scheduled for deletion (or orphaned) must be before it is removed."""


class MaintenanceRefusedError(TerminalError):
    """The catalog looks new or lost next to the data folder: maintenance deleted nothing."""


@dataclass(frozen=True)
class MaintenanceReport:
    merged_tables: int
    files_merged: int
    snapshots_expired: int
    files_deleted: int
    orphans_deleted: int
    files_before: int | None
    files_after: int | None
    staging_removed: int = 0
    """Staging entries of killed or failed loads removed (lakehouse.staging)."""

    def __str__(self) -> str:
        files = (f"{self.files_before} -> {self.files_after} data files; " if self.files_before is not None else "")
        return (f"{files}merged {self.files_merged} file(s) in {self.merged_tables} table(s), expired "
                f"{self.snapshots_expired} snapshot(s), deleted {self.files_deleted} unreferenced and "
                f"{self.orphans_deleted} orphaned file(s), removed {self.staging_removed} leftover staging "
                "batch(es)")


def _count_files(lake: Lake) -> int | None:
    path = lake.settings.data_path
    if "://" in path:
        return None  # object storage: DuckLake's own listing is the record there
    return sum(1 for _, _, files in os.walk(path) for f in files if f.endswith(".parquet"))


def _metadata(lake: Lake) -> str:
    """The name DuckLake attached the catalog's own database under."""
    return f"__ducklake_metadata_{CATALOG}"


def orphan_refusal(lake: Lake, older_than: dt.datetime | None = None) -> str | None:
    """Why deleting this lake's orphaned files (those last written before ``older_than``; all when None)
    could delete real data, or None when it looks safe.

    Counts the files the catalog knows (data and delete files of every snapshot it still keeps, and those
    already scheduled for deletion) against the files DuckLake would delete as orphans, and looks at the
    orphans' age (local data paths)."""
    meta = _metadata(lake)
    known = sum(one(lake.con, f"SELECT count(*) FROM {meta}.{t}")[0]
                for t in ("ducklake_data_file", "ducklake_delete_file", "ducklake_files_scheduled_for_deletion"))
    if lake.read_only:  # DuckLake's dry run needs a writable lake (doctor opens it read-only)
        orphans = _unreferenced_on_disk(lake, older_than)
    else:
        which = "cleanup_all => true" if older_than is None else "older_than => ?::TIMESTAMPTZ"
        orphans = [r[0] for r in lake.con.execute(
            f"SELECT * FROM ducklake_delete_orphaned_files('{CATALOG}', dry_run => true, {which})",
            [] if older_than is None else [older_than]).fetchall()]
    if not orphans:
        return None
    where = lake.settings.data_path

    def remedy(example: str) -> str:
        return (f"Nothing was deleted. If the catalog was lost or replaced, restore the one that goes with these "
                "files (`onesource restore BACKUP`, or the catalog database's own backup); if a person has checked "
                f"that no catalog, current or backed up, references them, delete them by hand (e.g. {example})")

    if known == 0:
        return (f"the catalog references no data file, but the data path {where} holds {len(orphans)}: the "
                f"catalog looks new or lost, and every one of those files would be deleted as an orphan. "
                f"{remedy(orphans[0])}")
    oldest, first = one(lake.con, f"SELECT min(snapshot_time), epoch(min(snapshot_time)) "
                                  f"FROM ducklake_snapshots('{CATALOG}')")
    if first is not None and "://" not in where:
        older = [o for o in orphans if (mtime := _mtime(o)) is not None and mtime < first - 60]
        if older:
            return (f"{len(older)} of the {len(orphans)} file(s) the catalog does not reference in {where} are older "
                    f"than the catalog's oldest snapshot ({oldest:%Y-%m-%d %H:%M}): the catalog looks newer than the "
                    f"data, as a recreated or replaced catalog does. "
                    f"{remedy(older[0])}")
    if len(orphans) > known:
        return (f"{len(orphans)} of the {len(orphans) + known} files in {where} are not referenced by the catalog: "
                f"the catalog looks lost or replaced. {remedy(orphans[0])}")
    return None


def _unreferenced_on_disk(lake: Lake, older_than: dt.datetime | None) -> list[str]:
    """The Parquet files under a local data path that the catalog does not name (by file name: DuckLake's
    and the loads' file names are unique), last written before ``older_than``. Empty on object storage."""
    data = lake.settings.data_path
    if "://" in data:
        return []
    meta = _metadata(lake)
    known = {r[0].replace("\\", "/").rsplit("/", 1)[-1] for r in lake.con.execute(
        " UNION ALL ".join(f"SELECT path FROM {meta}.{t}" for t in
                           ("ducklake_data_file", "ducklake_delete_file", "ducklake_files_scheduled_for_deletion"))
    ).fetchall()}
    limit = older_than.timestamp() if older_than is not None else None
    out = []
    for root, _, files in os.walk(data):
        for name in files:
            if name.endswith(".parquet") and name not in known:
                path = os.path.join(root, name)
                if limit is None or ((mtime := _mtime(path)) is not None and mtime < limit):
                    out.append(path)
    return sorted(out)


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return None


def maintain(lake: Lake, retention: dt.timedelta, now: dt.datetime | None = None,
             grace: dt.timedelta = GRACE, staging: Path | None = None) -> MaintenanceReport:
    """One maintenance run; ``staging``: the staging folder, swept of what killed loads left there.
    Raises :class:`MaintenanceRefusedError` (and does nothing) when the catalog looks new or lost."""
    now = now or dt.datetime.now(dt.UTC)

    def call(sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        return retrying(lambda: lake.con.execute(sql, params or []).fetchall(), lake.settings.commit_retries, sql)

    if refusal := retrying(lambda: orphan_refusal(lake, now - grace), lake.settings.commit_retries,
                           "comparing the catalog with the data files"):
        raise MaintenanceRefusedError(f"lake maintenance refused: {refusal}")
    swept = 0
    if staging is not None:
        from lakehouse.staging import sweep

        swept = len(sweep(staging))
    before = _count_files(lake)

    merged = call(f"CALL ducklake_merge_adjacent_files('{CATALOG}')")
    expired = call(f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - retention])
    deleted = call(f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - grace])
    orphans = call(f"CALL ducklake_delete_orphaned_files('{CATALOG}', older_than => ?::TIMESTAMPTZ)", [now - grace])
    return MaintenanceReport(merged_tables=len(merged), files_merged=sum(int(r[2]) for r in merged),
                             snapshots_expired=len(expired), files_deleted=len(deleted), orphans_deleted=len(orphans),
                             files_before=before, files_after=_count_files(lake), staging_removed=swept)
