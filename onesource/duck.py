"""DuckDB connections with extensions loaded from their PyPI packages, never from the network.

DuckDB fetches extensions over the network on ``INSTALL``; here they come from the
``duckdb-extension-*`` packages pinned in constraints.txt and are ``LOAD``-ed from the package's
file. They are DuckDB's signed builds, so ``allow_unsigned_extensions`` stays off.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from onesource.errors import ConfigurationError

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
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``extensions`` loaded from their packages; nothing auto-installs."""
    config: dict[str, str | int | bool] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(database, config=config)
    for name in extensions:
        con.execute(f"LOAD '{extension_path(name)}'")
    return con
