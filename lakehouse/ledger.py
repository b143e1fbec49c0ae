"""The ledger: the platform's own tables (``lake.ops.*``), what each one holds, and the one way rows are
written to them.

Every row is written by name (``INSERT ... BY NAME``): a writer names each value's column, a column it leaves
out is NULL, and a name the table does not have is refused here, before any SQL runs, so a column added to a
table (at its end: :data:`TABLES`) never shifts another writer's values. The tables themselves are created,
and their new columns added, by :meth:`lakehouse.lake.Lake.ensure_zones`.

Each table has a row type (a ``TypedDict`` whose keys are its columns: :class:`LoadRow`, :class:`GrantRow`, ...,
:data:`ROW_TYPES`), and :func:`append` is typed per table, so mypy checks the keys and values of every writer.

This module is also the only one that names the tables and the only one that changes their rows: SQL elsewhere
reads one by :func:`ref` (its owner's joins and filters, such as the KPIs'), the reads that recur are typed readers
here (:func:`last_published_load`, :func:`loads_since`, :func:`last_delivered_loads`, :func:`first_published`,
:func:`quality_runs`, :func:`user`, ...), each row a frozen dataclass named by column, and each update is a named
function here (:func:`revoke_grant`, :func:`update_user`, :func:`unfreeze`, ...) run in the caller's transaction.
``tests/test_ledger_owner.py`` fails on any other module that spells ``ops.``. The words of a load's status are
defined here too (:data:`LoadStatus`, :data:`PUBLISHED`, ...).

The module reads top to bottom: declarations (tables, columns, statuses), row types, writing, reading, updates.

>>> append(con, "grant_matches", {"grant_id": g, "column_name": "phone", "daily_quota": 100})
>>> insert_select(con, "quality_rows", "SELECT ? AS load_id, ? AS dataset, m._row AS _row, ... FROM m", [...])
>>> con.execute(f"SELECT dataset, count(*) FROM {ref('loads')} WHERE status = 'failed' GROUP BY dataset")
>>> last_published_load(con, "firms").rows_in
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final, Literal, Required, TypedDict, overload

if TYPE_CHECKING:
    import duckdb

# =============================================================================================================
# Declarations: the tables, their columns, the words a load's status is spelled with
# =============================================================================================================

CATALOG, OPS = "lake", "ops"

LoadStatus = Literal["published", "quarantined", "failed"]
"""A load's ``status`` in ``ops.loads``: published, quarantined (a blocking check failed, the batch is kept aside)
or failed (the source or the system: ``error_stage``, ``error``)."""
PUBLISHED: Final = "published"
QUARANTINED: Final = "quarantined"
FAILED: Final = "failed"
LOAD_STATUSES: tuple[LoadStatus, ...] = (PUBLISHED, QUARANTINED, FAILED)
UNCHANGED: Final = "unchanged"
"""A load that found nothing new: its result says so (``ingest.load.LoadResult``), and it writes no row."""
LoadOutcome = LoadStatus | Literal["unchanged"]
"""What a load run ended with: a status it recorded, or :data:`UNCHANGED`."""
LOAD_OUTCOMES: tuple[LoadOutcome, ...] = (*LOAD_STATUSES, UNCHANGED)

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
    return bool(columns_in(con, table))  # a table has at least one column


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


# =============================================================================================================
# Row types: one TypedDict per table, its keys the table's columns (tests/test_ledger.py keeps them equal)
# =============================================================================================================



class LoadRow(TypedDict):
    """``ops.loads``: a load of a dataset, published or not, with its reason."""

    load_id: str
    dataset: str
    owner: str | None
    status: LoadStatus
    source: str | None
    landed_path: str | None
    sha256: str | None
    registry_version: str | None
    rows_in: int | None
    rows_published: int | None
    watermark: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    error_stage: str | None
    error: str | None
    quarantine_path: str | None


class QualityRunRow(TypedDict):
    """``ops.quality_runs``: one validated batch and its suite's verdict."""

    load_id: str
    dataset: str
    owner: str | None
    run_at: dt.datetime
    stage: str
    rows: int | None
    passed: bool
    checks: int | None
    blocking_failed: int | None
    warnings: int | None
    skipped: int | None
    suite_version: str | None
    registry_version: str | None


class QualityResultRow(TypedDict):
    """``ops.quality_results``: one expectation of a validation run."""

    load_id: str
    dataset: str
    run_at: dt.datetime
    check_name: str
    expectation: str | None
    column_name: str | None
    blocking: bool
    success: bool
    skipped: str | None
    unexpected_count: int | None
    sample_rows: str | None
    sample_values: str | None
    error: str | None


class QualityRowsRow(TypedDict):
    """``ops.quality_rows``: a failing row of a validated batch, with every check it failed."""

    load_id: str
    dataset: str
    _row: int
    _reasons: Sequence[str] | None
    key_value: str | None


class ConsistencyResultRow(TypedDict):
    """``ops.consistency_results``: one copy of an element compared with its authority in a consistency run."""

    run_id: str
    checked_at: dt.datetime
    dataset: str
    owner: str | None
    element: str
    column_name: str
    authority: str
    authority_owner: str | None
    compared: int | None
    equal: int | None


class ConsistencyMismatchRow(TypedDict):
    """``ops.consistency_mismatches``: a copied value that differs from the authority's."""

    run_id: str
    checked_at: dt.datetime
    dataset: str
    owner: str | None
    element: str
    column_name: str
    key_value: str | None
    value: str | None
    authority: str | None
    authority_value: str | None


class GrantRow(TypedDict):
    """``ops.grants``: a department's grant on a conditional dataset."""

    grant_id: str
    department: str
    dataset: str
    columns: Sequence[str] | None
    row_filter: str | None
    expires_at: dt.datetime | None
    granted_by: str | None
    granted_at: dt.datetime
    revoked_at: dt.datetime | None
    purpose: str | None
    scope: str | None


class GrantMatchRow(TypedDict):
    """``ops.grant_matches``: a masked column a grant allows matching values against."""

    grant_id: str
    column_name: str
    daily_quota: int


class SchemaVersionRow(TypedDict):
    """``ops.schema_versions``: one immutable version of a dataset or an element of the registry."""

    subject: str
    kind: str
    version: int
    fingerprint: str
    definition: str
    compatibility: str | None
    registry_version: str | None
    registered_at: dt.datetime


class AccessRequestRow(TypedDict, total=False):
    """``ops.access_requests``: an access request and, once decided, its decision."""

    request_id: Required[str]
    department: str | None
    dataset: str | None
    owner: str | None
    share_type: str | None
    columns: Sequence[str] | None
    row_filter: str | None
    purpose: str | None
    period_days: int | None
    status: str | None
    requested_by: str | None
    requested_at: dt.datetime | None
    due_at: dt.datetime | None
    decided_at: dt.datetime | None
    decided_by: str | None
    reason: str | None
    grant_id: str | None
    scope: str | None


class DisputeRow(TypedDict, total=False):
    """``ops.disputes``: a dispute (异议) on a record, and its resolution."""

    dispute_id: Required[str]
    dataset: str | None
    owner: str | None
    key_value: str | None
    column_name: str | None
    description: str | None
    department: str | None
    reported_by: str | None
    reported_at: dt.datetime | None
    status: str | None
    resolved_by: str | None
    resolved_at: dt.datetime | None
    resolution: str | None


class AuditEventRow(TypedDict, total=False):
    """``ops.audit_events``: an audit log entry copied into the lake."""

    seq: Required[int]
    event_at: dt.datetime | None
    department: str | None
    user_name: str | None
    decision: str | None
    tables: Sequence[str] | None
    rows: int | None
    kind: str | None
    purpose: str | None
    reason: str | None
    exposed: Sequence[str] | None
    address: str | None
    channel: str | None
    result_values: int | None
    result_text_bytes: int | None


class AuditSyncRow(TypedDict):
    """``ops.audit_sync``: how far the audit log was copied into the lake."""

    byte_offset: int
    seq: int
    synced_at: dt.datetime


class SubscriptionRow(TypedDict, total=False):
    """``ops.subscriptions``: a subscription (数据回流); written without its cancellation."""

    subscription_id: Required[str]
    department: str | None
    user_name: str | None
    dataset: str | None
    target_kind: str | None
    target: str | None
    mode: str | None
    created_by: str | None
    created_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    cancelled_by: str | None


class DeliveryRow(TypedDict):
    """``ops.deliveries``: a delivery tried for a subscription, delivered or not."""

    delivery_id: str
    subscription_id: str
    dataset: str
    department: str
    snapshot_id: int | None
    load_id: str | None
    kind: str | None
    rows: int | None
    deleted: int | None
    status: str
    attempts: int | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class SecurityAlertRow(TypedDict, total=False):
    """``ops.security_alerts``: a misuse alert, open or closed."""

    alert_id: Required[str]
    kind: str | None
    severity: str | None
    user_name: str | None
    department: str | None
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    observed: float | None
    baseline: float | None
    threshold: float | None
    evidence: str | None
    raised_at: dt.datetime | None
    status: str | None
    closed_by: str | None
    closed_at: dt.datetime | None
    close_reason: str | None


class UsersRow(TypedDict, total=False):
    """``ops.users``: a department user's row as written (read back, without its hashes, as :class:`UserRow`)."""

    user_name: Required[str]
    department: str | None
    role: str | None
    password_scrypt: str | None
    password_pg_md5: str | None
    token_sha256: str | None
    created_at: dt.datetime | None
    disabled_at: dt.datetime | None
    added_at: dt.datetime | None
    changed_at: dt.datetime | None
    changed_by: str | None
    password_scram: str | None
    organisation: str | None


class UserChanges(TypedDict, total=False):
    """What :func:`update_user` may set on a user (columns of ``ops.users``)."""

    role: str
    password_scrypt: str
    password_scram: str
    password_pg_md5: str | None
    token_sha256: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    changed_at: dt.datetime
    changed_by: str | None


class SecurityFreezeRow(TypedDict, total=False):
    """``ops.security_freezes``: a freeze of a user, a department or a dataset; written without its end."""

    freeze_id: Required[str]
    kind: str | None
    subject: str | None
    reason: str | None
    frozen_by: str | None
    frozen_at: dt.datetime | None
    unfrozen_by: str | None
    unfrozen_at: dt.datetime | None
    unfreeze_reason: str | None


ROW_TYPES: dict[str, type[Any]] = {
    "loads": LoadRow,
    "quality_runs": QualityRunRow,
    "quality_results": QualityResultRow,
    "quality_rows": QualityRowsRow,
    "consistency_results": ConsistencyResultRow,
    "consistency_mismatches": ConsistencyMismatchRow,
    "grants": GrantRow,
    "grant_matches": GrantMatchRow,
    "schema_versions": SchemaVersionRow,
    "access_requests": AccessRequestRow,
    "disputes": DisputeRow,
    "audit_events": AuditEventRow,
    "audit_sync": AuditSyncRow,
    "subscriptions": SubscriptionRow,
    "deliveries": DeliveryRow,
    "security_alerts": SecurityAlertRow,
    "users": UsersRow,
    "security_freezes": SecurityFreezeRow,
}
"""Each ledger table's row type (:data:`TABLES`: declare a new table's row type here too)."""

Table = Literal["loads", "quality_runs", "quality_results", "quality_rows", "consistency_results", "consistency_mismatches", "grants", "grant_matches", "schema_versions", "access_requests", "disputes", "audit_events", "audit_sync", "subscriptions", "deliveries", "security_alerts", "users", "security_freezes"]
"""The name of a ledger table."""
Row = LoadRow | QualityRunRow | QualityResultRow | QualityRowsRow | ConsistencyResultRow | ConsistencyMismatchRow | GrantRow | GrantMatchRow | SchemaVersionRow | AccessRequestRow | DisputeRow | AuditEventRow | AuditSyncRow | SubscriptionRow | DeliveryRow | SecurityAlertRow | UsersRow | SecurityFreezeRow
"""A row of any ledger table."""


# =============================================================================================================
# Writing: every row by name, each checked against its table (its keys by mypy, its names again at run time)
# =============================================================================================================

def _checked(table: str, names: Sequence[str]) -> dict[str, str]:
    known = columns(table)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"ops.{table} has no column {', '.join(unknown)} (its columns: {', '.join(known)})")
    return known


@overload
def append(con: Any, table: Literal["loads"], *rows: LoadRow) -> None: ...
@overload
def append(con: Any, table: Literal["quality_runs"], *rows: QualityRunRow) -> None: ...
@overload
def append(con: Any, table: Literal["quality_results"], *rows: QualityResultRow) -> None: ...
@overload
def append(con: Any, table: Literal["quality_rows"], *rows: QualityRowsRow) -> None: ...
@overload
def append(con: Any, table: Literal["consistency_results"], *rows: ConsistencyResultRow) -> None: ...
@overload
def append(con: Any, table: Literal["consistency_mismatches"], *rows: ConsistencyMismatchRow) -> None: ...
@overload
def append(con: Any, table: Literal["grants"], *rows: GrantRow) -> None: ...
@overload
def append(con: Any, table: Literal["grant_matches"], *rows: GrantMatchRow) -> None: ...
@overload
def append(con: Any, table: Literal["schema_versions"], *rows: SchemaVersionRow) -> None: ...
@overload
def append(con: Any, table: Literal["access_requests"], *rows: AccessRequestRow) -> None: ...
@overload
def append(con: Any, table: Literal["disputes"], *rows: DisputeRow) -> None: ...
@overload
def append(con: Any, table: Literal["audit_events"], *rows: AuditEventRow) -> None: ...
@overload
def append(con: Any, table: Literal["audit_sync"], *rows: AuditSyncRow) -> None: ...
@overload
def append(con: Any, table: Literal["subscriptions"], *rows: SubscriptionRow) -> None: ...
@overload
def append(con: Any, table: Literal["deliveries"], *rows: DeliveryRow) -> None: ...
@overload
def append(con: Any, table: Literal["security_alerts"], *rows: SecurityAlertRow) -> None: ...
@overload
def append(con: Any, table: Literal["users"], *rows: UsersRow) -> None: ...
@overload
def append(con: Any, table: Literal["security_freezes"], *rows: SecurityFreezeRow) -> None: ...


def append(con: Any, table: Table, *rows: Mapping[str, object]) -> None:
    """Write ``rows`` to ``ops.<table>`` on ``con`` (a lake connection or cursor, in the caller's transaction),
    each value to the column its key names, cast to that column's type; each row is the table's row type
    (:data:`ROW_TYPES`), a column it leaves out is NULL."""
    append_rows(con, table, rows)


def append_rows(con: Any, table: str, rows: Iterable[Mapping[str, object]]) -> None:
    """:func:`append` for a caller that names the table at run time (:meth:`lakehouse.lake.Lake.append`): the
    table and the rows' keys are checked here, before any row is written."""
    groups: dict[tuple[str, ...], list[list[object]]] = {}
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


def insert_select(con: Any, table: Table, select: str, params: Sequence[Any] = ()) -> None:
    """Write the rows of ``select`` to ``ops.<table>``, each column of the select (``... AS name``) to the
    table's column of that name."""
    sql = f"INSERT INTO {ref(table)} BY NAME {select}"  # an undeclared table is refused before any SQL runs
    con.execute(sql, list(params))


# =============================================================================================================
# Reading: the reads that recur, each row a frozen dataclass whose fields are the table's columns, by name
# =============================================================================================================

@dataclass(frozen=True)
class Load:
    """A row of ``ops.loads``: one load of a dataset, published or not, with its reason."""

    load_id: str
    dataset: str
    owner: str | None
    status: LoadStatus
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
    found = con.execute(f"SELECT {_select(Load)} FROM {ref('loads')} WHERE dataset = ? AND status = ? "
                        "ORDER BY finished_at DESC, load_id DESC LIMIT 1", [dataset, PUBLISHED]).fetchone()
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


def last_loads(con: duckdb.DuckDBPyConnection, since: dt.datetime) -> dict[str, tuple[Load, int]]:
    """dataset -> (its last load among those finished at or after ``since`` (naive UTC), how many loads of it
    finished since then): what a load summary says of each dataset."""
    rows = con.execute(
        f"""SELECT {_select(Load)}, count(*) OVER (PARTITION BY dataset) FROM {ref('loads')} WHERE finished_at >= ?
            QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC) = 1""", [since]).fetchall()
    return {load.dataset: (load, r[-1]) for r in rows for load in (Load(*r[:-1]),)}


def first_published(con: duckdb.DuckDBPyConnection, *, excluding: str | None = None) -> dict[str, dt.datetime]:
    """dataset -> when its first published load finished; ``excluding``: a load-id prefix whose loads do not
    count (the demo city's simulated history, ``hist-``)."""
    found: list[tuple[str, dt.datetime]] = con.execute(
        f"SELECT dataset, min(finished_at) FROM {ref('loads')} WHERE status = ? "
        "AND (? IS NULL OR load_id NOT LIKE ?) GROUP BY dataset",
        [PUBLISHED, excluding, f"{excluding}%"]).fetchall()
    return dict(found)


def has_loads(con: duckdb.DuckDBPyConnection, prefix: str) -> bool:
    """Whether any load's id starts with ``prefix`` (the demo city's simulated history: ``hist-``)."""
    found: tuple[int] | None = con.execute(f"SELECT count(*) FROM {ref('loads')} WHERE load_id LIKE ?",
                                           [f"{prefix}%"]).fetchone()
    return bool(found and found[0])


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


# -- the readers of the load (ingest)

def handled_sha256(con: duckdb.DuckDBPyConnection, dataset: str, registry_version: str, *,
                   superseded_by_publish: bool) -> frozenset[str]:
    """The sha256 of every raw file of ``dataset`` that the loads ledger counts as handled (never loaded again):
    each one published, and each one quarantined under ``registry_version`` (under another version it is tried
    again: the fix may have been the registry's). With ``superseded_by_publish`` (a dataset whose batches replace
    what was there: snapshot, upsert) a file quarantined before a later load was published counts as handled too:
    loading it then would put older data over newer."""
    superseded = (f" OR EXISTS (SELECT 1 FROM {ref('loads')} p WHERE p.dataset = q.dataset "
                  f"AND p.status = '{PUBLISHED}' AND p.finished_at > q.finished_at)") if superseded_by_publish else ""
    found: list[tuple[str]] = con.execute(
        f"SELECT DISTINCT sha256 FROM {ref('loads')} q WHERE dataset = ? AND sha256 IS NOT NULL AND "
        f"(status = '{PUBLISHED}' OR (status = '{QUARANTINED}' AND (registry_version = ?{superseded})))",
        [dataset, registry_version],
    ).fetchall()
    return frozenset(sha256 for (sha256,) in found)


def published_watermark(con: duckdb.DuckDBPyConnection, dataset: str) -> str | None:
    """The watermark of ``dataset``'s latest published load that reached one, or None (no incremental load yet)."""
    found: tuple[str] | None = con.execute(
        f"SELECT watermark FROM {ref('loads')} WHERE dataset = ? AND status = ? "
        "AND watermark IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
        [dataset, PUBLISHED],
    ).fetchone()
    return None if found is None else found[0]


# =============================================================================================================
# Updates: the rows a ledger table changes in place, each by a named function run on the caller's connection,
# in the caller's transaction
# =============================================================================================================

def replace_user(con: Any, row: UsersRow) -> None:
    """Write ``row`` to ``ops.users`` in place of any user of its name."""
    con.execute(f"DELETE FROM {ref('users')} WHERE user_name = ?", [row["user_name"]])
    append(con, "users", row)


def update_user(con: Any, user_name: str, changes: UserChanges, *, disabled: bool) -> None:
    """Set ``changes`` on ``user_name`` if it is still disabled (``disabled``) or still not, as it was when the
    caller checked it."""
    _checked("users", list(changes))
    sets = ", ".join(f"{name} = ?" for name in changes)
    con.execute(f"UPDATE {ref('users')} SET {sets} WHERE user_name = ? "
                f"AND disabled_at IS {'NOT ' if disabled else ''}NULL", [*changes.values(), user_name])


def replace_token(con: Any, user_name: str, *, token_sha256: str, at: dt.datetime, by: str | None) -> None:
    """Give ``user_name`` the token whose hash is ``token_sha256`` (its old token no longer works) and end its
    sessions (``created_at``), disabled or not."""
    con.execute(f"UPDATE {ref('users')} SET token_sha256 = ?, created_at = ?, changed_at = ?, changed_by = ? "
                "WHERE user_name = ?", [token_sha256, at, at, by, user_name])


def approve_request(con: Any, request_id: str, status: str, *, at: dt.datetime, by: str, reason: str | None,
                    grant_id: str, columns: Sequence[str] | None, row_filter: str | None, scope: str | None) -> None:
    """Record the approval of access request ``request_id`` (``status``: the requests' word for it) with the
    grant made for it and what the grant allows."""
    con.execute(f"UPDATE {ref('access_requests')} SET status = ?, decided_at = ?, decided_by = ?, reason = ?, "
                "grant_id = ?, columns = ?, row_filter = ?, scope = ? WHERE request_id = ?",
                [status, at, by, reason, grant_id, columns, row_filter, scope, request_id])


def refuse_request(con: Any, request_id: str, status: str, *, at: dt.datetime, by: str, reason: str) -> None:
    """Record the refusal of access request ``request_id`` (``status``: the requests' word for it), and why."""
    con.execute(f"UPDATE {ref('access_requests')} SET status = ?, decided_at = ?, decided_by = ?, reason = ? "
                "WHERE request_id = ?", [status, at, by, reason, request_id])


def set_request_status(con: Any, request_id: str, status: str, reason: str) -> None:
    """Give access request ``request_id`` a new ``status`` and its reason (a revoked approval)."""
    con.execute(f"UPDATE {ref('access_requests')} SET status = ?, reason = ? WHERE request_id = ?",
                [status, reason, request_id])


def revoke_grant(con: Any, grant_id: str, at: dt.datetime) -> None:
    """Grant ``grant_id`` ends at ``at``."""
    con.execute(f"UPDATE {ref('grants')} SET revoked_at = ? WHERE grant_id = ?", [at, grant_id])


def resolve_dispute(con: Any, dispute_id: str, status: str, *, by: str, at: dt.datetime, resolution: str) -> None:
    """Record how dispute ``dispute_id`` was resolved (``status``: the disputes' word for it)."""
    con.execute(f"UPDATE {ref('disputes')} SET status = ?, resolved_by = ?, resolved_at = ?, resolution = ? "
                "WHERE dispute_id = ?", [status, by, at, resolution, dispute_id])


def cancel_subscription(con: Any, subscription_id: str, *, at: dt.datetime, by: str) -> None:
    """Cancel subscription ``subscription_id`` at ``at``, unless it is cancelled already."""
    con.execute(f"UPDATE {ref('subscriptions')} SET cancelled_at = ?, cancelled_by = ? "
                "WHERE subscription_id = ? AND cancelled_at IS NULL", [at, by, subscription_id])


def unfreeze(con: Any, kind: str, subject: str, *, by: str, at: dt.datetime, reason: str) -> None:
    """End every active freeze of ``subject`` (a ``kind``: user, department or dataset): two operators freezing
    it at once made two."""
    con.execute(f"UPDATE {ref('security_freezes')} SET unfrozen_by = ?, unfrozen_at = ?, unfreeze_reason = ? "
                "WHERE kind = ? AND subject = ? AND unfrozen_at IS NULL", [by, at, reason, kind, subject])


def close_alerts(con: Any, alert_ids: Sequence[str], *, by: str, at: dt.datetime, reason: str) -> None:
    """Close the alerts of ``alert_ids`` that are still open."""
    con.execute(f"UPDATE {ref('security_alerts')} SET status = 'closed', closed_by = ?, closed_at = ?, "
                "close_reason = ? WHERE alert_id IN (SELECT unnest(?)) AND status = 'open'",
                [by, at, reason, list(alert_ids)])
