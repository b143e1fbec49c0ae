"""The ledger: the platform's own tables (``lake.ops.*``), what each one holds, and the one way rows are
written to them.

Every row is written by name (``INSERT ... BY NAME``): a writer names each value's column, a column it leaves
out is NULL, and a name the table does not have is refused here, before any SQL runs, so a column added to a
table (at its end: :data:`TABLES`) never shifts another writer's values. The tables themselves are created,
and their new columns added, by :meth:`lakehouse.lake.Lake.ensure_zones`.

This module is also the only one that names the tables: SQL elsewhere reads one by :func:`ref` (its owner's
joins and filters, such as the KPIs'), and the reads that recur are typed readers here (:func:`last_published_load`,
:func:`loads_since`, :func:`last_delivered_loads`, :func:`quality_runs`, :func:`user`), each row a frozen
dataclass named by column. ``tests/test_ledger_owner.py`` fails on any other module that spells ``ops.``.

>>> append(con, "grant_matches", {"grant_id": g, "column_name": "phone", "daily_quota": 100})
>>> insert_select(con, "quality_rows", "SELECT ? AS load_id, ? AS dataset, m._row AS _row, ... FROM m", [...])
>>> con.execute(f"SELECT dataset, count(*) FROM {ref('loads')} WHERE status = 'failed' GROUP BY dataset")
>>> last_published_load(con, "firms").rows_in
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

CATALOG, OPS = "lake", "ops"

# The lake's own tables: name -> columns. Created on first write; new tables and new columns (add them at
# the end) appear in older lakes too, on their next write (Lake.ensure_zones).
TABLES: dict[str, str] = {
    "loads": """load_id VARCHAR, dataset VARCHAR, owner VARCHAR, status VARCHAR,
        source VARCHAR, landed_path VARCHAR, sha256 VARCHAR, registry_version VARCHAR,
        rows_in BIGINT, rows_published BIGINT, watermark VARCHAR,
        started_at TIMESTAMP, finished_at TIMESTAMP,
        error_stage VARCHAR, error VARCHAR, quarantine_path VARCHAR""",
    # one row per validated batch (published or quarantined): feeds the quality pass rate KPI
    "quality_runs": """load_id VARCHAR, dataset VARCHAR, owner VARCHAR, run_at TIMESTAMP, stage VARCHAR,
        rows BIGINT, passed BOOLEAN, checks INTEGER, blocking_failed INTEGER, warnings INTEGER, skipped INTEGER,
        suite_version VARCHAR, registry_version VARCHAR""",
    # one row per expectation of each run
    "quality_results": """load_id VARCHAR, dataset VARCHAR, run_at TIMESTAMP, check_name VARCHAR,
        expectation VARCHAR, column_name VARCHAR, blocking BOOLEAN, success BOOLEAN, skipped VARCHAR,
        unexpected_count BIGINT, sample_rows VARCHAR, sample_values VARCHAR, error VARCHAR""",
    # every failing row of each validated batch (published or quarantined), with every check it failed
    # (quality.marks); _row is the 1-based row of the batch, key_value the row's key (compound: joined by |)
    "quality_rows": """load_id VARCHAR, dataset VARCHAR, _row BIGINT, _reasons VARCHAR[], key_value VARCHAR""",
    # 多元校核: copies of an element compared with the authority, per run
    "consistency_results": """run_id VARCHAR, checked_at TIMESTAMP, dataset VARCHAR, owner VARCHAR,
        element VARCHAR, column_name VARCHAR, authority VARCHAR, authority_owner VARCHAR,
        compared BIGINT, equal BIGINT""",
    "consistency_mismatches": """run_id VARCHAR, checked_at TIMESTAMP, dataset VARCHAR, owner VARCHAR,
        element VARCHAR, column_name VARCHAR, key_value VARCHAR, value VARCHAR, authority VARCHAR,
        authority_value VARCHAR""",
    # departments' access to conditional datasets (sharing.grants); scope: 'all' (NULL in older rows) or
    # 'jurisdiction' (each user sees the rows under its organisation's division code)
    "grants": """grant_id VARCHAR, department VARCHAR, dataset VARCHAR, columns VARCHAR[], row_filter VARCHAR,
        expires_at TIMESTAMP, granted_by VARCHAR, granted_at TIMESTAMP, revoked_at TIMESTAMP, purpose VARCHAR,
        scope VARCHAR""",
    # masked columns a grant allows the department to match values against, with a daily quota each
    "grant_matches": "grant_id VARCHAR, column_name VARCHAR, daily_quota INTEGER",
    # registry versions (schemas.versions): one immutable row per version of a dataset or element
    "schema_versions": """subject VARCHAR, kind VARCHAR, version INTEGER, fingerprint VARCHAR, definition VARCHAR,
        compatibility VARCHAR, registry_version VARCHAR, registered_at TIMESTAMP""",
    # access requests and their decisions (sharing.requests): feed the request fulfilment KPI
    "access_requests": """request_id VARCHAR, department VARCHAR, dataset VARCHAR, owner VARCHAR, share_type VARCHAR,
        columns VARCHAR[], row_filter VARCHAR, purpose VARCHAR, period_days INTEGER, status VARCHAR,
        requested_by VARCHAR, requested_at TIMESTAMP, due_at TIMESTAMP, decided_at TIMESTAMP, decided_by VARCHAR,
        reason VARCHAR, grant_id VARCHAR, scope VARCHAR""",
    # 异议处理: a consumer flags a record as wrong; the owner corrects it at the source or rejects the flag
    "disputes": """dispute_id VARCHAR, dataset VARCHAR, owner VARCHAR, key_value VARCHAR, column_name VARCHAR,
        description VARCHAR, department VARCHAR, reported_by VARCHAR, reported_at TIMESTAMP, status VARCHAR,
        resolved_by VARCHAR, resolved_at TIMESTAMP, resolution VARCHAR""",
    # the audit log's entries, copied into the lake for the usage KPIs (sharing.audit.sync_to_lake)
    # (kind: NULL for a governed query, 'signin' for a failed sign-in, 'users' for user administration;
    # exposed: dataset.column the query's policy relations exposed unmasked; reason: a refusal's, clipped;
    # result_values, result_text_bytes: list elements and text bytes of an allowed answer's fullest column)
    "audit_events": """seq BIGINT, event_at TIMESTAMP, department VARCHAR, user_name VARCHAR, decision VARCHAR,
        tables VARCHAR[], rows BIGINT, kind VARCHAR, purpose VARCHAR, reason VARCHAR, exposed VARCHAR[],
        address VARCHAR, channel VARCHAR, result_values BIGINT, result_text_bytes BIGINT""",
    "audit_sync": "byte_offset BIGINT, seq BIGINT, synced_at TIMESTAMP",
    # 数据回流 (sharing.subscriptions): a department's user subscribes to a dataset under a grant; the target's
    # settings are JSON without secrets (a DSN names its password as ${VARIABLE}, resolved at delivery)
    "subscriptions": """subscription_id VARCHAR, department VARCHAR, user_name VARCHAR, dataset VARCHAR,
        target_kind VARCHAR, target VARCHAR, mode VARCHAR, created_by VARCHAR, created_at TIMESTAMP,
        cancelled_at TIMESTAMP, cancelled_by VARCHAR""",
    # the delivery ledger: every delivery tried, delivered or not, with the lake snapshot and load it carried
    "deliveries": """delivery_id VARCHAR, subscription_id VARCHAR, dataset VARCHAR, department VARCHAR,
        snapshot_id BIGINT, load_id VARCHAR, kind VARCHAR, rows BIGINT, deleted BIGINT, status VARCHAR,
        attempts INTEGER, error VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP""",
    # 应急响应: misuse alerts (sharing.security.alerts); alert_id is derived from the rule, the subject and
    # the window, so a rescan never raises one twice; evidence: JSON with the audit seqs behind it; status open,
    # or closed (onesource security close) with who closed it, when and why
    "security_alerts": """alert_id VARCHAR, kind VARCHAR, severity VARCHAR, user_name VARCHAR, department VARCHAR,
        window_start TIMESTAMP, window_end TIMESTAMP, observed DOUBLE, baseline DOUBLE, threshold DOUBLE,
        evidence VARCHAR, raised_at TIMESTAMP, status VARCHAR, closed_by VARCHAR, closed_at TIMESTAMP,
        close_reason VARCHAR""",
    # department users; only hashes (sharing.users); organisation: a division code (organisations.yaml), NULL
    # for the whole city. password_pg_md5: no longer written (md5 verifiers of
    # users created before SCRAM-SHA-256 came; such users must have their password reset)
    "users": """user_name VARCHAR, department VARCHAR, role VARCHAR, password_scrypt VARCHAR,
        password_pg_md5 VARCHAR, token_sha256 VARCHAR, created_at TIMESTAMP, disabled_at TIMESTAMP,
        added_at TIMESTAMP, changed_at TIMESTAMP, changed_by VARCHAR, password_scram VARCHAR,
        organisation VARCHAR""",
    # 应急响应: users, departments and datasets the data bureau froze (sharing.security.freeze); a row is
    # never removed: unfreezing fills in unfrozen_*
    "security_freezes": """freeze_id VARCHAR, kind VARCHAR, subject VARCHAR, reason VARCHAR, frozen_by VARCHAR,
        frozen_at TIMESTAMP, unfrozen_by VARCHAR, unfrozen_at TIMESTAMP, unfreeze_reason VARCHAR""",
}



def column_specs(spec: str) -> list[tuple[str, str]]:
    """``"a INTEGER, b DECIMAL(9, 2)"`` -> ``[("a", "INTEGER"), ("b", "DECIMAL(9, 2)")]`` (a :data:`TABLES` entry)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec + ","):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            name, _, type_ = spec[start:i].strip().partition(" ")
            parts.append((name, type_.strip()))
            start = i + 1
    return parts


@functools.cache
def columns(table: str) -> dict[str, str]:
    """The ledger table's columns and their types, in order; a table the ledger does not have is a defect."""
    if table not in TABLES:
        raise ValueError(f"ops.{table} is not a ledger table (lakehouse.ledger.TABLES)")
    return dict(column_specs(" ".join(TABLES[table].split())))


def ref(table: str) -> str:
    """``lake.ops.<table>``: the name SQL reads (or updates) a ledger table by, wherever the SQL is the caller's
    own (the KPIs' joins, a listing's filters); a table not declared in :data:`TABLES` is refused here, before
    any SQL runs, rather than by DuckDB as a missing table in the middle of a request.

    >>> ref("loads")
    'lake.ops.loads'
    """
    if table not in TABLES:
        raise ValueError(f"{table!r} is not a ledger table; the ledger's tables are {', '.join(TABLES)} "
                         "(lakehouse.ledger.TABLES: declare a new one there, at the end)")
    return f"{CATALOG}.{OPS}.{table}"


def exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the lake on ``con`` has ``ops.<table>`` yet: a lake last written before the table was declared
    lacks it until it is next opened for writing (:meth:`lakehouse.lake.Lake.ensure_zones`)."""
    ref(table)
    found: list[tuple[int]] = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = ?", [CATALOG, OPS, table]).fetchall()
    return bool(found[0][0])


def columns_in(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The columns ``ops.<table>`` has in the lake on ``con``: none when it has no such table yet, and not a
    column declared since the lake was last opened for writing (a read-only reader of an older lake)."""
    ref(table)
    found: list[tuple[str]] = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = ?", [CATALOG, OPS, table]).fetchall()
    return {name for (name,) in found}


@dataclass(frozen=True)
class SchemaGap:
    """What the lake on a connection lacks of the ledger as declared: its tables, or columns added since."""

    tables: tuple[str, ...]
    columns: dict[str, list[tuple[str, str]]]

    def __bool__(self) -> bool:
        return bool(self.tables or self.columns)


def schema_gap(con: duckdb.DuckDBPyConnection) -> SchemaGap:
    """The ledger's tables (and their columns) that the lake on ``con`` does not have yet: all of them in a new
    lake, the columns declared since in an older one."""
    found: dict[str, set[str]] = {}
    rows: list[tuple[str, str]] = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ?",
        [CATALOG, OPS]).fetchall()
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    missing = {name: [(c, t) for c, t in column_specs(spec) if c not in found[name]]
               for name, spec in TABLES.items() if name in found}
    return SchemaGap(tables=tuple(name for name in TABLES if name not in found),
                     columns={name: cols for name, cols in missing.items() if cols})


def close_gap(con: duckdb.DuckDBPyConnection, gap: SchemaGap) -> None:
    """Create the ledger's schema and the tables ``gap`` names, and add its columns (older rows read NULL), in
    the caller's transaction (:meth:`lakehouse.lake.Lake.ensure_zones`)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{OPS}")
    for name in gap.tables:
        con.execute(f"CREATE TABLE IF NOT EXISTS {ref(name)} ({TABLES[name]})")
    for name, cols in gap.columns.items():
        for column, type_ in cols:
            con.execute(f"ALTER TABLE {ref(name)} ADD COLUMN IF NOT EXISTS {column} {type_}")


def _checked(table: str, names: Sequence[str]) -> dict[str, str]:
    known = columns(table)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"ops.{table} has no column {', '.join(unknown)} (its columns: {', '.join(known)})")
    return known


def append(con: Any, table: str, *rows: Mapping[str, Any]) -> None:
    """Write ``rows`` to ``ops.<table>`` on ``con`` (a lake connection or cursor, in the caller's transaction),
    each value to the column its key names, cast to that column's type."""
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(list(row.values()))
    for names in groups:  # every row checked before any is written
        _checked(table, names)
    for names, values in groups.items():
        types = columns(table)
        select = ", ".join(f'CAST(? AS {types[n]}) AS "{n}"' for n in names)
        sql = f"INSERT INTO {ref(table)} BY NAME SELECT {select}"
        if len(values) == 1:
            con.execute(sql, values[0])
        else:
            con.executemany(sql, values)


def insert_select(con: Any, table: str, select: str, params: Sequence[Any] = ()) -> None:
    """Write the rows of ``select`` to ``ops.<table>``, each column of the select (``... AS name``) to the
    table's column of that name."""
    sql = f"INSERT INTO {ref(table)} BY NAME {select}"  # an undeclared table is refused before any SQL runs
    con.execute(sql, list(params))


# -- the reads that recur: each row as a frozen dataclass whose fields are the table's columns, by name

@dataclass(frozen=True)
class Load:
    """A row of ``ops.loads``: one load of a dataset, published or not, with its reason."""

    load_id: str
    dataset: str
    owner: str | None
    status: str
    """``published``, ``quarantined`` (a blocking check failed) or ``failed`` (``error_stage``, ``error``)."""
    source: str | None
    landed_path: str | None
    sha256: str | None
    """The raw file's; None when no extract arrived (the source could not be read): the load delivered nothing."""
    registry_version: str | None
    rows_in: int | None
    rows_published: int | None
    watermark: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error_stage: str | None
    error: str | None
    quarantine_path: str | None


@dataclass(frozen=True)
class QualityRun:
    """A row of ``ops.quality_runs``: one validated batch (published or quarantined) and its suite's verdict."""

    load_id: str
    dataset: str
    owner: str | None
    run_at: dt.datetime
    stage: str | None
    rows: int | None
    passed: bool
    """Every blocking expectation held."""
    checks: int | None
    blocking_failed: int | None
    warnings: int | None
    skipped: int | None
    suite_version: str | None
    registry_version: str | None


@dataclass(frozen=True)
class UserRow:
    """Who ``ops.users`` says a department user is (never its hashes)."""

    user_name: str
    department: str
    role: str
    disabled_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def _select(row: type[Any]) -> str:
    return ", ".join(f.name for f in fields(row))


def last_published_load(con: duckdb.DuckDBPyConnection, dataset: str) -> Load | None:
    """``dataset``'s latest published load (by when it finished); None when none was published."""
    found = con.execute(f"SELECT {_select(Load)} FROM {ref('loads')} WHERE dataset = ? AND status = 'published' "
                        "ORDER BY finished_at DESC, load_id DESC LIMIT 1", [dataset]).fetchone()
    return None if found is None else Load(*found)


def loads_since(con: duckdb.DuckDBPyConnection, since: dt.datetime | None = None) -> list[Load]:
    """Every load started at or after ``since`` (naive UTC; None: every load), in the order they started."""
    rows = con.execute(f"SELECT {_select(Load)} FROM {ref('loads')} WHERE ? IS NULL OR started_at >= ? "
                       "ORDER BY started_at, load_id", [since, since]).fetchall()
    return [Load(*r) for r in rows]


def last_delivered_loads(con: duckdb.DuckDBPyConnection, as_of: dt.datetime | None = None) -> dict[str, Load]:
    """dataset -> its last load that delivered data (an extract arrived: published, quarantined, or failed after
    it landed), among those finished by ``as_of`` (naive UTC; None: all). What "shared" is decided on
    (metrics.kpis.sharing_reason) and what the catalogue shows as a dataset's state."""
    rows = con.execute(
        f"""SELECT {_select(Load)} FROM {ref('loads')} WHERE sha256 IS NOT NULL AND (? IS NULL OR finished_at <= ?)
            QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC, load_id DESC) = 1""",
        [as_of, as_of]).fetchall()
    return {load.dataset: load for load in (Load(*r) for r in rows)}


def quality_runs(con: duckdb.DuckDBPyConnection, dataset: str, limit: int | None = None) -> list[QualityRun]:
    """``dataset``'s validation runs, newest first; ``limit``: only the newest that many."""
    rows = con.execute(f"SELECT {_select(QualityRun)} FROM {ref('quality_runs')} WHERE dataset = ? "
                       "ORDER BY run_at DESC, load_id DESC LIMIT ?", [dataset, limit]).fetchall()
    return [QualityRun(*r) for r in rows]


def user(con: duckdb.DuckDBPyConnection, user_name: str) -> UserRow | None:
    """``user_name``'s row of ``ops.users``, disabled or not; None when there is no such user (also in a lake
    that has no users table yet)."""
    import duckdb  # loaded already: ``con`` is one of its connections

    try:
        found = con.execute(f"SELECT {_select(UserRow)} FROM {ref('users')} WHERE user_name = ?",
                            [user_name]).fetchone()
    except duckdb.CatalogException:
        return None
    return None if found is None else UserRow(*found)


# -- readers used by the load (ingest)

def handled_sha256(con: duckdb.DuckDBPyConnection, dataset: str, registry_version: str, *,
                   superseded_by_publish: bool) -> frozenset[str]:
    """The sha256 of every raw file of ``dataset`` that the loads ledger counts as handled (never loaded again):
    each one published, and each one quarantined under ``registry_version`` (under another version it is tried
    again: the fix may have been the registry's). With ``superseded_by_publish`` (a dataset whose batches replace
    what was there: snapshot, upsert) a file quarantined before a later load was published counts as handled too:
    loading it then would put older data over newer."""
    superseded = (f" OR EXISTS (SELECT 1 FROM {ref('loads')} p WHERE p.dataset = q.dataset "
                  "AND p.status = 'published' AND p.finished_at > q.finished_at)") if superseded_by_publish else ""
    found: list[tuple[str]] = con.execute(
        f"SELECT DISTINCT sha256 FROM {ref('loads')} q WHERE dataset = ? AND sha256 IS NOT NULL AND "
        f"(status = 'published' OR (status = 'quarantined' AND (registry_version = ?{superseded})))",
        [dataset, registry_version],
    ).fetchall()
    return frozenset(sha256 for (sha256,) in found)


def published_watermark(con: duckdb.DuckDBPyConnection, dataset: str) -> str | None:
    """The watermark of ``dataset``'s latest published load that reached one, or None (no incremental load yet)."""
    found: tuple[str] | None = con.execute(
        f"SELECT watermark FROM {ref('loads')} WHERE dataset = ? AND status = 'published' "
        "AND watermark IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
        [dataset],
    ).fetchone()
    return None if found is None else found[0]
