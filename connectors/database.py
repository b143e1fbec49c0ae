"""Tables and queries in department databases (SQLite, PostgreSQL, MySQL/MariaDB).

DuckDB's scanner extensions read the source read-only and write the extract straight to a
Parquet file in the landing zone, so a large table never passes through Python rows.
Incremental by a watermark column: only rows above the last published watermark are extracted.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from connectors.base import Extract, SourceState
from connectors.exceptions import ExtractError, SourceUnavailableError
from connectors.landing import Landing
from core.duck import connect, literal
from core.logsafe import redact
from schemas.model import Dataset

# driver -> (DuckDB extension, ATTACH type)
DRIVERS = {"sqlite": ("sqlite_scanner", "sqlite"), "postgres": ("postgres_scanner", "postgres"),
           "mysql": ("mysql_scanner", "mysql")}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# What a server that went away mid-query says (libpq, MySQL client, DuckDB's scanners): worth a retry,
# not a change to the connector's settings.
_CONNECTION_LOST = ("server closed the connection", "terminating connection", "connection reset",
                    "lost connection", "gone away", "broken pipe", "connection refused", "ssl syscall",
                    "could not receive data", "no connection to the server", "connection timed out")
_DSN_PART = re.compile(r"(\w+)\s*=\s*('[^']*'|\S+)")


def endpoint(driver: str, dsn: str) -> str:
    """Where a source database is, for messages: ``postgres://host:port/db``, never the password."""
    if driver == "sqlite":
        return f"sqlite:{Path(dsn).name}"
    if "://" in dsn.split("?")[0]:  # libpq's URI form (postgresql://user:pw@host:port/db): not key=value pairs
        from urllib.parse import urlsplit

        uri = urlsplit(dsn.strip())
        try:
            port = uri.port
        except ValueError:
            port = None
        return (f"{driver}://{uri.hostname or 'localhost'}:{port or ('5432' if driver == 'postgres' else '3306')}"
                f"/{uri.path.lstrip('/')}")
    parts = {k.lower(): v.strip("'") for k, v in _DSN_PART.findall(dsn)}
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432" if driver == "postgres" else "3306")
    db = parts.get("dbname") or parts.get("database") or parts.get("db") or ""
    return f"{driver}://{host}:{port}/{db}"


def connection_lost(exc: BaseException) -> bool:
    return any(t in str(exc).lower() for t in _CONNECTION_LOST)


class DatabaseConnector:
    kind = "database"

    def __init__(self, sources_dir: Path, landing: Landing, environ: Mapping[str, str]):
        self.sources_dir = Path(sources_dir)
        self.landing = landing
        self.environ = environ

    def dsn(self, dataset: Dataset) -> str:
        settings = dataset.connector.settings
        try:
            # ${NAME} takes a secret from the environment (or an Airflow connection exported to it).
            dsn = string.Template(str(settings["dsn"])).substitute(self.environ)
        except KeyError as exc:
            raise ExtractError(f"dataset {dataset.name}: the dsn names environment variable {exc} which is not set; "
                               "export it (or define the Airflow connection) before loading") from None
        if settings["driver"] == "sqlite" and not Path(dsn).is_absolute():
            dsn = str(self.sources_dir / dsn)
        return dsn

    def describe(self, dataset: Dataset) -> str:
        settings = dataset.connector.settings
        return f"{settings['driver']}:{settings.get('table') or 'query'}"

    def extract(self, dataset: Dataset, state: SourceState) -> list[Extract]:
        settings = dataset.connector.settings
        extension, attach_type = DRIVERS[settings["driver"]]
        source = self.describe(dataset)
        con = connect(extensions=(extension,))
        try:
            try:
                con.execute(f"ATTACH {literal(self.dsn(dataset))} AS src (TYPE {attach_type}, READ_ONLY)")
            except duckdb.Error as exc:
                raise SourceUnavailableError(f"dataset {dataset.name}: cannot open source database {source} at "
                                             f"{endpoint(settings['driver'], self.dsn(dataset))}: {redact(str(exc))}") from exc
            con.execute("USE src")
            query, params = self._query(dataset, state, con)
            tmp = self.landing.scratch(dataset.name, ".parquet")
            try:
                con.execute(f"COPY ({query}) TO {literal(str(tmp))} (FORMAT parquet)", params)
                rows = _first(con.execute(f"SELECT count(*) FROM read_parquet({literal(str(tmp))})").fetchone())
                watermark = None
                if settings.get("watermark"):
                    watermark = _first(con.execute(
                        f"SELECT max({settings['watermark']})::VARCHAR FROM read_parquet({literal(str(tmp))})"
                    ).fetchone())
            except duckdb.Error as exc:
                tmp.unlink(missing_ok=True)  # a partial extract is never landed
                if connection_lost(exc):
                    raise SourceUnavailableError(
                        f"dataset {dataset.name}: the source database {endpoint(settings['driver'], self.dsn(dataset))}"
                        f" dropped the connection while {source} was read ({redact(str(exc))}); nothing was landed or published, "
                        "the load is retried (check the server if it keeps happening)") from exc
                raise ExtractError(f"dataset {dataset.name}: query on {source} failed: {exc}; "
                                   "check the connector's table/query/watermark settings") from exc
            if rows == 0:
                tmp.unlink(missing_ok=True)
                return []
            landed, sha = self.landing.land_temp(dataset.name, tmp, "parquet", source=source)
        finally:
            con.close()
        if sha in state.seen_sha256:
            return []
        return [Extract(dataset=dataset.name, path=landed, sha256=sha, source=source, format="parquet",
                        watermark=watermark or state.watermark)]

    def _query(self, dataset: Dataset, state: SourceState, con: duckdb.DuckDBPyConnection) -> tuple[str, list[Any]]:
        settings = dataset.connector.settings
        table = settings.get("table")
        if table and not _IDENT.match(str(table)):
            raise ExtractError(f"dataset {dataset.name}: table {table!r} is not a plain [schema.]table name")
        query = str(settings.get("query") or f"SELECT * FROM {table}")
        wm = settings.get("watermark")
        if not wm:
            return query, []
        if not _IDENT.match(str(wm)):
            raise ExtractError(f"dataset {dataset.name}: watermark {wm!r} is not a plain column name")
        if state.watermark is None:
            return f"SELECT * FROM ({query}) q ORDER BY {wm}", []
        described = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM ({query}) q").fetchall()}
        if wm not in described:
            raise ExtractError(f"dataset {dataset.name}: watermark column {wm!r} is not in the source "
                               f"(columns: {', '.join(described)})")
        wm_type = described[wm]
        return f"SELECT * FROM ({query}) q WHERE {wm} > CAST($1 AS {wm_type}) ORDER BY {wm}", [state.watermark]


def _first(row: tuple[Any, ...] | None) -> Any:
    """The first value of a one-row answer (an aggregate always has its row)."""
    if row is None:
        raise AssertionError("an aggregate query returned no row")
    return row[0]
