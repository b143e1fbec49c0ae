"""DuckDB connections with extensions loaded from their PyPI packages, never from the network.

DuckDB fetches extensions over the network on ``INSTALL``; here they come from the
``duckdb-extension-*`` packages pinned in constraints.txt and are ``LOAD``-ed from the package's
file. They are DuckDB's signed builds, so ``allow_unsigned_extensions`` stays off, except on a connection
that asks for ``verified_once``: there each extension file whose signature DuckDB has already checked, and that
has not changed since, is loaded without checking it again (see ``connect``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import duckdb

from core.errors import ConfigurationError, OneSourceError

# Extension name -> the Python package that ships it.
EXTENSION_PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "mysql_scanner": "duckdb_extension_mysql_scanner",
    "httpfs": "duckdb_extension_httpfs",
    "encodings": "duckdb_extension_encodings",
    "excel": "duckdb_extension_excel",
    "tpch": "duckdb_extension_tpch",  # TPC-H data and queries: the standard-SQL test and bench/tpch.py
}


def literal(text: str) -> str:
    """A SQL string literal (DuckDB takes no bound parameters in ATTACH, COPY TO or table functions)."""
    return "'" + text.replace("'", "''") + "'"


def one(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...]:
    """The row a query that always answers one (an aggregate, a ``SELECT`` of values) returned; raises
    :class:`~core.errors.OneSourceError` when it returned none, where ``fetchone()[0]`` would fail on None."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise OneSourceError(f"expected one row, the query returned none: {sql[:200]}")
    return row


def extension_path(name: str) -> Path:
    package = EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"DuckDB extension {name!r} is missing: install the {package.replace('_', '-')} package "
                                 "(`make setup` installs every pinned package)")
    root = Path(next(iter(spec.submodule_search_locations)))
    wanted = f"v{duckdb.__version__}"
    files = sorted(root.glob(f"extensions/*/{name}.duckdb_extension"))
    exact = [f for f in files if f.parent.name == wanted]
    if not (exact or files):
        raise ConfigurationError(f"no {name}.duckdb_extension file in {root}; reinstall {package}")
    return (exact or files)[-1]


def connect(database: str = ":memory:", extensions: tuple[str, ...] = (), *, threads: int | None = None,
            memory_limit: str | None = None, verified_once: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``extensions`` loaded from their packages; nothing auto-installs.

    DuckDB checks an extension's signature on every LOAD by hashing the whole file: about 0.2 s of CPU for each
    of DuckLake's and SQLite's 35 MB files, most of a short CLI query's time and a fifth of a small load's. With
    ``verified_once`` (every lake connection: a department's query locks its read-only connection down before it
    runs, and a locked-down connection refuses any LOAD; a writer runs only the platform's own SQL) DuckDB checks
    each file once: a file whose identity (inode, size, modification
    and change times) is recorded as verified is loaded as it is; any other (a first load, an upgrade, a file
    changed in any way) is first loaded on a throwaway connection that checks its signature, and recorded only
    when that passed. The connection itself then allows unsigned extensions, so every later LOAD on it goes
    through ``load`` (which verifies the same way), never a bare LOAD."""
    paths = [extension_path(name) for name in extensions]
    config: dict[str, str | bool | int | float | list[str]] = {"autoinstall_known_extensions": False,
                                                              "autoload_known_extensions": False}
    if verified_once and paths:
        _verify(paths)
        config["allow_unsigned_extensions"] = True
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(database, config=config)
    for path in paths:
        con.execute(f"LOAD {literal(str(path))}")
    return con


def load(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD one more extension on ``con``: verified first when ``con`` would not check its signature."""
    path = extension_path(name)
    allowed = con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()
    if allowed is None or allowed[0]:  # unknown is treated as allowed: verified first
        _verify([path])
    con.execute(f"LOAD {literal(str(path))}")


def _verify(paths: list[Path]) -> None:
    """Every file of ``paths`` has passed DuckDB's signature check: recorded before, or checked now (a bad
    signature raises DuckDB's error here, before any connection loads the file unchecked)."""
    record = _verified_record()
    known = _read_record(record)
    unknown = [p for p in paths if known.get(str(p)) != _identity(p)]
    if not unknown:
        return
    checking = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        for path in unknown:
            identity = _identity(path)  # taken before the check: a file changed meanwhile is not believed
            checking.execute(f"LOAD {literal(str(path))}")
            known[str(path)] = identity
    finally:
        checking.close()
    _write_record(record, known)


VERIFIED_FILE = "verified-extensions.json"


def _verified_record() -> Path:
    """Where the identities of extension files DuckDB has verified are kept: the user's own cache folder
    (``$XDG_CACHE_HOME/onesource``), shared by every home this user runs from the same installation."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onesource" / VERIFIED_FILE


def _identity(path: Path) -> list[int]:
    st = os.stat(path)
    # the change time cannot be set back by anyone but the kernel: any write, rename or chmod moves it
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _private(path: Path) -> bool:
    """Whether only this user could have written ``path`` (else its record is not believed)."""
    try:
        return all((st := os.stat(p)).st_uid == os.geteuid() and not st.st_mode & 0o022 for p in (path.parent, path))
    except OSError:
        return False


def _read_record(record: Path) -> dict[str, Any]:
    if not _private(record):
        return {}
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_record(record: Path, known: dict[str, Any]) -> None:
    """Best effort: a read-only cache folder only means DuckDB checks the files again next time."""
    try:
        record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = record.with_name(f".{VERIFIED_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, record)  # atomic: concurrent processes each leave a whole record
    except OSError:
        pass
