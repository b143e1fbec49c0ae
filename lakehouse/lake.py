"""The DuckLake lake: connection, zones, the loads ledger, and commits that retry on locks.

Zones inside the lake (catalog ``lake``):

* ``shared.<dataset>``  the shared zone: one table per dataset, one snapshot per load.
* the ledger (:mod:`lakehouse.ledger`, its own schema): every load, published or not, with its reason,
  every validation run and each expectation's result, the consistency checks, the audit and the grants.
* ``quarantine.<dataset>`` batches that failed a blocking check, row by row with the reasons.

Raw extracts stay as files in the landing zone; staged batches are Parquet files in ``staging/``
until they are published or moved to ``quarantine/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from core.config import LakeSettings
from core.duck import connect, literal, load, one
from lakehouse import guard, ledger
from lakehouse.exceptions import CatalogBusyError, SnapshotNotFound
from lakehouse.ledger import CATALOG as CATALOG  # re-exported: the layers above name the catalog from here

T = TypeVar("T")
SHARED = "shared"

QUARANTINE = "quarantine"

# How every data file of the lake is written: by DuckLake (inserts, compaction) and by a load (the staged
# batch it adopts as is). Parquet 2's encodings with zstd, measured on 5M rows against version 1: 25% smaller
# (16 MiB against 21), ~10% less CPU to write and ~15% less to scan; DuckDB, Arrow and Spark read them.
PARQUET_CODEC, PARQUET_VERSION = "zstd", 2
FILE_OPTIONS = {"parquet_compression": (literal(PARQUET_CODEC), PARQUET_CODEC),
                "parquet_version": (str(PARQUET_VERSION), f"V{PARQUET_VERSION}")}
"""DuckLake option -> (the value set_option takes, the value options() shows)."""
PARQUET_WRITE = f"FORMAT parquet, COMPRESSION {PARQUET_CODEC}, PARQUET_VERSION V{PARQUET_VERSION}"
"""The same, as COPY options (for the files a load writes itself)."""

# Messages of errors that a retry can cure: SQLite's lock, DuckLake's optimistic-commit conflicts, and
# two processes creating a new PostgreSQL catalog at once (the loser's CREATE TABLE meets the winner's
# type: "duplicate key value ... pg_type_typname_nsp_index"; seen with four first loads in parallel).
_TRANSIENT = ("database is locked", "conflict", "busy", "could not serialize", "deadlock",
              "failed to initialize ducklake", "duplicate key value")


def is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(t in text for t in _TRANSIENT)


def _extensions(lake: LakeSettings) -> tuple[str, ...]:
    needed = ["ducklake"]
    if lake.catalog.startswith("sqlite:"):
        needed.insert(0, "sqlite_scanner")
    elif lake.catalog.startswith("postgres:"):
        needed.insert(0, "postgres_scanner")
    if lake.data_path.startswith(("s3://", "http://", "https://", "gs://", "r2://")) or lake.encrypted:
        needed.append("httpfs")  # encryption: httpfs brings the OpenSSL crypto module DuckDB writes with
    return tuple(needed)


def _object_store(path: str) -> bool:
    return path.startswith(("s3://", "r2://", "gs://"))


def _s3_secret(env: Mapping[str, str]) -> str:
    """A DuckDB secret for the lake's object storage, from the environment only (never from files):
    the standard ``AWS_*`` variables, and ``ONESOURCE_S3_ENDPOINT`` (host:port) for an S3-compatible
    service (MinIO, Ceph, the test's moto server), with ``ONESOURCE_S3_USE_SSL=0`` for plain HTTP."""
    parts = ["TYPE S3"]
    for key, var in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"),
                     ("SESSION_TOKEN", "AWS_SESSION_TOKEN"), ("REGION", "AWS_REGION")):
        if env.get(var):
            parts.append(f"{key} {literal(env[var])}")
    if env.get("ONESOURCE_S3_ENDPOINT"):
        parts += [f"ENDPOINT {literal(env['ONESOURCE_S3_ENDPOINT'])}", "URL_STYLE 'path'"]
    if env.get("ONESOURCE_S3_USE_SSL", "1").lower() in ("0", "false", "no"):
        parts.append("USE_SSL false")
    return f"CREATE OR REPLACE SECRET onesource_lake ({', '.join(parts)})"


BUSY_TIMEOUT_MS = 10_000
"""How long a connection to a SQLite catalog waits for a lock before DuckDB sees "database is locked"
(SQLite's busy timeout; DuckDB's default is 5 s). In WAL mode only writers wait, for each other."""


def _catalog_options(settings: LakeSettings, read_only: bool) -> list[str]:
    """ATTACH options for the catalog database itself (DuckLake passes ``META_*`` on to it).

    A SQLite catalog runs in WAL mode: readers never block the writer and the writer never blocks readers
    (in the default rollback journal every query's read lock held a load's commit off until the load gave up
    with "database is locked", and a commit's exclusive lock failed queries). WAL is persistent in the file:
    set when the catalog is created, and an existing catalog is switched on its next writable open (a
    read-only connection cannot switch it, and does not need to). The embedded layout (the data folder beside
    the catalog) takes its data path from where the catalog is now, so a copied or restored home opens."""
    if guard.sqlite_path(settings) is None:
        return []
    options = [f"META_BUSY_TIMEOUT {BUSY_TIMEOUT_MS}"]
    if not read_only:
        options.append("META_JOURNAL_MODE 'WAL'")
    if guard.embedded(settings):
        options.append("OVERRIDE_DATA_PATH true")
    return options


def retrying(fn: Callable[[], T], retries: int, what: str) -> T:
    """Run ``fn``, retrying with jittered exponential backoff while it fails on a lock or conflict."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except duckdb.Error as exc:
            if not is_transient(exc):
                raise
            if attempt == retries:
                raise CatalogBusyError(f"{what}: the lake catalog stayed locked after {retries} retries ({exc}); "
                                       "the load will be retried") from exc
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def list_tables(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """Names of the tables in one of the lake's schemas (on any connection or cursor to it).

    Read from the columns, not ``information_schema.tables``: DuckDB's table listing asks DuckLake each
    table's size (a catalog query per table), so it took a load ~1 ms per shared table (2 s in a city of
    2,000), where the column listing costs ~10 ms whatever the count (bench/cityday.py)."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "ORDER BY 1", [CATALOG, schema]).fetchall()]


class Lake:
    """An open connection to the lake, attached as catalog ``lake``."""

    def __init__(self, settings: LakeSettings, *, read_only: bool = False, extra_extensions: tuple[str, ...] = (),
                 as_of: int | dt.datetime | None = None, threads: int | None = None):
        """``as_of``: a snapshot id or a point in time, to read the lake as it was (read-only); ``threads``:
        DuckDB's threads (default: one per core)."""
        self.settings = settings
        self.read_only = read_only or as_of is not None
        # DuckDB checks each extension file's signature once, not on every open (core.duck): 0.2-0.3 s of a
        # load's fixed cost on two cores (0.4-0.6 CPU s for DuckLake's and the catalog scanner's files). A
        # writer runs only the platform's own SQL (no department's, no registry text as a statement), and any
        # later LOAD on it goes through core.duck.load, which verifies first.
        self.con = connect(extensions=_extensions(settings) + extra_extensions, verified_once=True,
                           threads=threads)
        if settings.catalog.startswith("sqlite:"):
            Path(settings.catalog.removeprefix("sqlite:")).parent.mkdir(parents=True, exist_ok=True)
        if "://" not in settings.data_path:
            Path(settings.data_path).mkdir(parents=True, exist_ok=True)
        if _object_store(settings.data_path):
            self.con.execute(_s3_secret(os.environ))
        guard.check(settings, self.con, self.read_only)  # never a new catalog over an existing lake's data
        self._held = guard.hold(settings)
        options = [f"DATA_PATH {literal(settings.data_path)}", *_catalog_options(settings, self.read_only)]
        if self.read_only:
            options.append("READ_ONLY")
        if settings.encrypted:
            # small inserts would otherwise be inlined into the catalog database, unencrypted
            options += ["ENCRYPTED", "DATA_INLINING_ROW_LIMIT 0"]
        if isinstance(as_of, int):
            options.append(f"SNAPSHOT_VERSION {as_of}")
        elif as_of is not None:
            options.append(f"SNAPSHOT_TIME {literal(as_of.isoformat(sep=' '))}")
        try:
            retrying(
                lambda: self.con.execute(f"ATTACH {literal('ducklake:' + settings.catalog)} AS {CATALOG} ({', '.join(options)})"),
                settings.commit_retries,
                "attaching the lake",
            )
        except duckdb.InvalidInputException as exc:  # time travel to before the lake, or past its last snapshot
            self.close()
            if as_of is None or "No snapshot found" not in str(exc):
                raise
            raise SnapshotNotFound(_no_snapshot(settings, as_of)) from exc
        self.con.execute(f"USE {CATALOG}")
        if self.encrypted and "httpfs" not in _extensions(settings):
            # attached without ONESOURCE_ENCRYPT: the catalog says encrypted, writes need httpfs's crypto
            load(self.con, "httpfs")
        if not self.read_only:
            if settings.encrypted and self._option("data_inlining_row_limit") != "0":
                # persisted in the catalog: a process that attaches without ONESOURCE_ENCRYPT (a
                # portal, a CLI query) must not inline small inserts into the catalog in clear either
                self.con.execute(f"CALL {CATALOG}.set_option('data_inlining_row_limit', 0)")
            self.ensure_zones()

    def _option(self, name: str) -> str | None:
        row = self.con.execute(f"SELECT value FROM {CATALOG}.options() WHERE option_name = ?", [name]).fetchone()
        return row[0] if row else None

    @cached_property
    def encrypted(self) -> bool:
        """Whether this lake writes encrypted files: fixed in its catalog when it was created."""
        return self._option("encrypted") == "true"

    def ensure_zones(self) -> None:
        """The zones and the ops tables exist with all their columns, and the lake writes its files as
        FILE_OPTIONS says (also in a lake created before a table, a column or an option was added)."""
        def create() -> None:
            exists = {r[0] for r in self.con.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ?", [CATALOG]).fetchall()}
            gap = ledger.schema_gap(self.con)
            have = dict(self.con.execute(
                f"SELECT option_name, value FROM {CATALOG}.options() WHERE scope = 'GLOBAL'").fetchall())
            options = {name: value for name, (value, shown) in FILE_OPTIONS.items() if have.get(name) != shown}
            if {SHARED, QUARANTINE} <= exists and not gap and not options:
                return
            with self.transaction():
                for schema in (SHARED, QUARANTINE):
                    self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{schema}")
                ledger.close_gap(self.con, gap)
                for name, value in options.items():
                    self.con.execute(f"CALL {CATALOG}.set_option({literal(name)}, {value})")

        retrying(create, self.settings.commit_retries, "creating the lake's zones")

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
        self.con.execute("COMMIT")

    def commit_message(self, message: str, extra: dict[str, Any]) -> None:
        """Label the current transaction's snapshot (shown by ``lake.snapshots()``)."""
        self.con.execute(
            f"CALL {CATALOG}.set_commit_message('onesource', ?, extra_info => ?)",
            [message, json.dumps(extra, ensure_ascii=False, default=str)],
        )

    def write(self, what: str, sql: str, params: Sequence[object]) -> None:
        """One statement as its own commit, labelled ``what``, retried on catalog contention."""
        self.change(what, lambda con: con.execute(sql, params))

    def change(self, what: str, step: Callable[[duckdb.DuckDBPyConnection], object]) -> None:
        """``step`` (such as an update of :mod:`lakehouse.ledger`, given the transaction's connection) as its own
        commit, labelled ``what``, retried on catalog contention."""
        def go() -> None:
            with self.transaction() as con:
                step(con)
                self.commit_message(what, {})

        retrying(go, self.settings.commit_retries, what)

    def append(self, what: str, table: ledger.Table, *rows: ledger.Row) -> None:
        """``rows`` added to the ledger table ``ops.<table>`` (lakehouse.ledger) as their own commit, labelled
        ``what``, retried on catalog contention."""
        self.change(what, lambda con: ledger.append_rows(con, table, rows))

    def table_columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [CATALOG, schema, table],
        ).fetchall()
        return dict(rows)

    def tables(self, schema: str) -> list[str]:
        return list_tables(self.con, schema)

    def close(self) -> None:
        self.con.close()
        guard.release(self.__dict__.pop("_held", None))

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_snapshot(settings: LakeSettings, as_of: int | dt.datetime) -> str:
    """What to ask for instead of a snapshot the lake does not have: its first and last ones."""
    try:
        with Lake(settings, read_only=True) as lake:
            first, first_at, last, last_at = one(
                lake.con, "SELECT min(snapshot_id), min(snapshot_time), max(snapshot_id), max(snapshot_time) "
                f"FROM {CATALOG}.snapshots()")
        span = (f"it holds snapshots {first} ({first_at:%Y-%m-%d %H:%M:%S} UTC) to {last} "
                f"({last_at:%Y-%m-%d %H:%M:%S} UTC)")
    except Exception:  # noqa: BLE001 - the message is still right without the span
        span = "ask for a later time or an existing snapshot id"
    asked = f"{as_of}" if isinstance(as_of, int) else f"at {as_of:%Y-%m-%d %H:%M:%S} UTC"
    return (f"the lake has no snapshot {asked}: {span}. Give --as-of a time or snapshot id in that range "
            f"(SELECT snapshot_id, snapshot_time FROM lake.snapshots() lists them)")
