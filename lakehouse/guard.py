"""The lake refuses to be destroyed by accident: a catalog that lost the lake is never recreated.

DuckLake creates a new, empty lake whenever it attaches a catalog database that holds none: a missing
``catalog.sqlite``, a zero-length one, or an empty SQLite file. Beside an existing lake that is a
disaster: every other dataset reads "never loaded", users, grants and the loads ledger are gone, and the
next maintenance run deletes the old data files as orphans. So before the lake is attached:

* a catalog that is missing or empty is accepted only where nothing shows that a lake existed: the data
  folder holds no file and (embedded layout) the landing zone and quarantine hold nothing;
* a SQLite catalog whose first bytes are not SQLite's header, or that is shorter than its own header
  says (truncated), is always refused;
* on a writable open where a lake existed, the catalog must be the one of these data files: a SQLite
  file without DuckLake's tables, a DuckLake catalog that never held a data file, or one none of whose
  recent files is in the data folder, is refused as replaced. (A PostgreSQL catalog database without
  DuckLake's tables beside a data path that holds files is refused the same way.)

Each refusal is a :class:`CatalogLostError` naming the file, what shows the lake existed, and the remedy
(restore from the backup: ``onesource restore``). Nothing is written before the check.

Where this process already has the catalog attached (a server's open lake), the checks read its header with
``pread`` on a descriptor opened once and never closed: closing any descriptor of a file drops every POSIX
lock the process holds on it, including the ones DuckDB's SQLite holds on the catalog (the same reason the
audit anchor is a separate file).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from core.config import LakeSettings
from core.duck import literal, one
from lakehouse.exceptions import CatalogLostError, LakeCatalogError

SQLITE_MAGIC = b"SQLite format 3\x00"
PROBE = "__onesource_catalog_probe"

_fds: dict[tuple[str, int, int], int] = {}
_fds_lock = threading.Lock()
_holding: dict[str, int] = {}
"""Catalog files this process has attached (Lake instances not closed yet), by path."""


def sqlite_path(settings: LakeSettings) -> Path | None:
    """The SQLite catalog file, or None for another kind of catalog."""
    if not settings.catalog.startswith("sqlite:"):
        return None
    return Path(settings.catalog.removeprefix("sqlite:")).expanduser()


def local_data(settings: LakeSettings) -> Path | None:
    return None if "://" in settings.data_path else Path(settings.data_path).expanduser()


def embedded(settings: LakeSettings) -> bool:
    """The embedded layout: a SQLite catalog with its data folder ``data/`` beside it (``lake/catalog.sqlite``
    and ``lake/data/``). The pair moves with the home (a copied or restored home), so the lake is attached
    with the data path where the catalog is now, not the absolute path stored in the catalog
    (``OVERRIDE_DATA_PATH``)."""
    path, data = sqlite_path(settings), local_data(settings)
    return path is not None and data is not None and data.resolve() == (path.parent / "data").resolve()


def home_of(settings: LakeSettings) -> Path | None:
    """The home of an embedded lake (``<home>/lake/catalog.sqlite``)."""
    path = sqlite_path(settings)
    if path is None or not embedded(settings) or path.parent.name != "lake":
        return None
    return path.parent.parent.resolve()


def remedy(settings: LakeSettings) -> str:
    home = home_of(settings)
    if home is not None:
        return (f"Restore the home from its last backup: `onesource restore BACKUP --home {home}` into an empty "
                f"folder (or move {home} aside first), then point ONESOURCE_HOME at it (docs/deploy.md, \"Backup and "
                "restore\"). If you truly mean to start a new, empty lake here, move the data folder and the landing "
                "zone aside first. Nothing was changed")
    if settings.catalog.startswith("postgres:"):
        return ("Restore the catalog database from its backup (PostgreSQL point-in-time recovery, docs/deploy.md), "
                "or point ONESOURCE_CATALOG at the right database. Nothing was changed")
    return ("Restore the catalog from its backup (`onesource restore`, docs/deploy.md), or point ONESOURCE_CATALOG "
            "at the right file. Nothing was changed")


def _files(folder: Path) -> Iterator[Path]:
    """The files under ``folder`` (none if it is not a folder), in name order, dot files left out."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        yield from (Path(root) / name for name in sorted(files) if not name.startswith("."))


def _first_file(folder: Path) -> Path | None:
    return next(_files(folder), None)


def evidence(settings: LakeSettings, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """What shows that this lake existed (empty: a genuinely new lake): files in its data folder, and in an
    embedded home raw extracts in the landing zone or batches in quarantine."""
    found = []
    data = local_data(settings)
    if data is not None:
        if (first := _first_file(data)) is not None:
            found.append(f"its data folder {data} holds files ({first.relative_to(data)}, ...)")
    elif con is not None:
        try:
            row = con.execute(f"SELECT file FROM glob({literal(settings.data_path.rstrip('/') + '/**')}) LIMIT 1"
                              ).fetchone()
        except duckdb.Error:
            row = None
        if row:
            found.append(f"its data path {settings.data_path} holds files ({row[0]}, ...)")
    home = home_of(settings)
    if home is not None:
        for name, what in (("landing", "raw extracts"), ("quarantine", "quarantined batches")):
            if (first := _first_file(home / name)) is not None:
                found.append(f"the {name} zone {home / name} holds {what} ({first.relative_to(home / name)}, ...)")
    return found


def hold(settings: LakeSettings) -> str | None:
    """This process attaches the catalog now (until :func:`release`): from here on its header is read through a
    descriptor that is never closed, since closing one would drop the locks DuckDB's SQLite holds on it."""
    path = sqlite_path(settings)
    if path is None:
        return None
    key = str(path.resolve())
    with _fds_lock:
        _holding[key] = _holding.get(key, 0) + 1
    return key


def release(key: str | None) -> None:
    if key is not None:
        with _fds_lock:
            _holding[key] = max(0, _holding.get(key, 0) - 1)


def _header(path: Path) -> tuple[bytes, int] | None:
    """The first 100 bytes of the catalog and its size (None: no such file). Where this process holds the
    catalog open (another Lake), through a descriptor opened once per file and never closed; otherwise
    through one opened for the read (nothing in this process holds a lock on the file to lose)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    with _fds_lock:
        kept = _holding.get(str(path.resolve()), 0) > 0
        if kept:
            key = (str(path), st.st_dev, st.st_ino)
            if key not in _fds:
                _fds[key] = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            fd = _fds[key]
    if kept:
        return os.pread(fd, 100, 0), os.fstat(fd).st_size
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        return os.pread(fd, 100, 0), os.fstat(fd).st_size
    finally:
        os.close(fd)


def _truncation(header: bytes, size: int) -> str | None:
    """Why a SQLite file of ``size`` bytes with this header cannot be whole, or None."""
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header is damaged (page size {page_size})"
    if size % page_size:
        return f"it is {size:,} bytes, not a whole number of its {page_size:,}-byte pages"
    pages, changes, valid_for = struct.unpack(">I", header[28:32])[0], *struct.unpack(">II", header[24:28] + header[92:96])
    if changes == valid_for and pages * page_size > size:
        return f"it is {size:,} bytes, but its header says {pages:,} pages of {page_size:,} bytes ({pages * page_size:,})"
    return None


def _refuse(settings: LakeSettings, path: object, problem: str, found: list[str]) -> CatalogLostError:
    because = f", but {'; '.join(found)}" if found else ""
    return CatalogLostError(
        f"the lake's catalog {path} {problem}{because}: the lake is refused, not recreated (a new catalog would forget "
        "every table, user, grant and load, and maintenance would then delete the data files as orphans). "
        + remedy(settings))


def check(settings: LakeSettings, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
    """Raise :class:`CatalogLostError` if attaching this catalog would lose (or misread) an existing lake."""
    path = sqlite_path(settings)
    if path is not None:
        _check_sqlite(settings, con, path, read_only)
    elif settings.catalog.startswith("postgres:") and not read_only:
        _check_postgres(settings, con)


def _check_sqlite(settings: LakeSettings, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
    head = _header(path)
    wal = Path(f"{path}-wal")
    if head is None or (head[1] == 0 and not (wal.exists() and wal.stat().st_size)):
        found = evidence(settings)
        problem = "is missing" if head is None else "is empty (0 bytes)"
        if found:
            raise _refuse(settings, path, problem, found)
        if read_only:
            raise LakeCatalogError(f"there is no lake at {path} yet: nothing has been loaded. Load a dataset first "
                                   "(`onesource ingest DATASET`)")
        return  # a new lake: DuckLake creates it
    if head[1] == 0:
        return  # a new catalog whose first transaction is still in its write-ahead log
    header, size = head
    if not header.startswith(SQLITE_MAGIC):
        raise _refuse(settings, path, "is not a SQLite database (its first bytes are not SQLite's header): it was "
                                      "replaced or overwritten", evidence(settings))
    why = _truncation(header, size)
    for _ in range(5):  # a checkpoint may write the header a moment before it extends the file
        if why is None:
            break
        time.sleep(0.1)
        head = _header(path)
        why = _truncation(*head) if head and head[1] else "is empty (0 bytes)"
    if why is not None:
        raise _refuse(settings, path, f"is truncated: {why}", evidence(settings))
    if read_only:
        return
    found = evidence(settings)
    if found:
        _check_contents(settings, con, path, found)


def _check_postgres(settings: LakeSettings, con: duckdb.DuckDBPyConnection) -> None:
    dsn = settings.catalog.removeprefix("postgres:")
    try:
        con.execute(f"ATTACH {literal(dsn)} AS {PROBE} (TYPE postgres, READ_ONLY)")
    except duckdb.Error:
        return  # unreachable now: the lake's own attach says so (and retries)
    try:
        # asked of PostgreSQL itself: listing the probe's tables through the scanner reads every table's
        # columns, and a lake's catalog gains tables with every schema version (DuckLake's inlined data)
        [(has_catalog,)] = con.execute(
            f"SELECT * FROM postgres_query({literal(PROBE)}, "
            "'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = ''ducklake_metadata'')')").fetchall()
    finally:
        con.execute(f"DETACH {PROBE}")
    if has_catalog:
        return  # DuckLake's own attach reads it; the data path is checked for new catalogs only
    found = evidence(settings, con)
    if found:
        raise _refuse(settings, "database", f"({dsn.split('password=')[0].strip()}) holds no DuckLake catalog",
                      found)


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = ?",
                                      [PROBE]).fetchall()}


def _check_contents(settings: LakeSettings, con: duckdb.DuckDBPyConnection, path: Path, found: list[str]) -> None:
    """The SQLite catalog is this lake's: DuckLake's tables, and (a local data folder) its files are there."""
    where = str(path)
    try:
        con.execute(f"ATTACH {literal(where)} AS {PROBE} (TYPE sqlite, READ_ONLY)")
        tables = _tables(con)
    except duckdb.Error as exc:
        text = str(exc).lower()
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            raise _refuse(settings, where, f"cannot be read as a SQLite database ({str(exc).splitlines()[0]})",
                          found) from exc
        with contextlib.suppress(duckdb.Error):
            con.execute(f"DETACH DATABASE IF EXISTS {PROBE}")
        return  # busy or locked now: the lake's own attach retries, and this check runs on the next open
    try:
        if "ducklake_metadata" not in tables:
            raise _refuse(settings, where, "holds no DuckLake catalog (an empty or foreign SQLite database replaced "
                                           "it)", found)
        data = local_data(settings)
        if data is None:
            return
        ever = one(con, f"SELECT (SELECT count(*) FROM {PROBE}.ducklake_data_file) + "
                        f"(SELECT count(*) FROM {PROBE}.ducklake_files_scheduled_for_deletion)")[0]
        if ever == 0 and (older := _file_older_than_catalog(con, data / "shared")) is not None:
            raise _refuse(settings, where, "is a new catalog that never held a data file, but the data folder holds "
                                           f"files written before it was created ({older.relative_to(data)}, ...): it "
                                           "replaced the lake's catalog", found)
        recent = con.execute(
            f"SELECT s.path, s.path_is_relative, t.path, t.path_is_relative, f.path, f.path_is_relative "
            f"FROM {PROBE}.ducklake_data_file f JOIN {PROBE}.ducklake_table t USING (table_id) "
            f"JOIN {PROBE}.ducklake_schema s ON s.schema_id = t.schema_id "
            "WHERE f.end_snapshot IS NULL AND t.end_snapshot IS NULL ORDER BY f.data_file_id DESC LIMIT 20").fetchall()
        if recent and not any(data_file_path(data, row).exists() for row in recent):
            raise _refuse(settings, where, f"lists data files none of which is in the data folder {data} (e.g. "
                                           f"{data_file_path(data, recent[0])}): it is another lake's catalog, or the "
                                           "data folder was replaced", found)
    finally:
        con.execute(f"DETACH {PROBE}")


def _file_older_than_catalog(con: duckdb.DuckDBPyConnection, folder: Path) -> Path | None:
    """A file in ``folder`` last written before the probed catalog's first snapshot, or None. A catalog that
    replaced the lake's is newer than every file the lake wrote; a load killed inside the first commit that
    writes a data file (DuckLake writes the file, then commits) leaves a file newer than its catalog, an
    orphan for maintenance, and the lake must still open for the load to run again."""
    if not folder.is_dir():
        return None
    created = one(con, f"SELECT epoch(min(snapshot_time)::TIMESTAMPTZ) FROM {PROBE}.ducklake_snapshot")[0]
    for path in _files(folder):
        with contextlib.suppress(OSError):
            if created is None or path.stat().st_mtime < created:
                return path
    return None


def data_file_path(data: Path, row: tuple[str, bool, str, bool, str, bool]) -> Path:
    """A data file's path from its schema, table and file paths (each relative to the one before, or absolute):
    ``row`` is a catalog's ``(schema path, is relative, table path, is relative, file path, is relative)``, the
    data folder ``data`` the base of a relative schema path (the guard's check; onesource/backup.py's copy)."""
    schema, schema_rel, table, table_rel, file, file_rel = row
    if not file_rel:
        return Path(file)
    base = Path(table) if not table_rel else (Path(schema) if not schema_rel else data / schema) / table
    return base / file
