"""The ledger: the platform's own tables (``lake.ops.*``), what each one holds, and the one way rows are
written to them.

Every row is written by name (``INSERT ... BY NAME``): a writer names each value's column, a column it leaves
out is NULL, and a name the table does not have is refused here, before any SQL runs, so a column added to a
table (at its end: :data:`TABLES`) never shifts another writer's values. The tables themselves are created,
and their new columns added, by :meth:`lakehouse.lake.Lake.ensure_zones`.

>>> append(con, "grant_matches", {"grant_id": g, "column_name": "phone", "daily_quota": 100})
>>> insert_select(con, "quality_rows", "SELECT ? AS load_id, ? AS dataset, m._row AS _row, ... FROM m", [...])
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

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
        sql = f"INSERT INTO {CATALOG}.{OPS}.{table} BY NAME SELECT {select}"
        if len(values) == 1:
            con.execute(sql, values[0])
        else:
            con.executemany(sql, values)


def insert_select(con: Any, table: str, select: str, params: Sequence[Any] = ()) -> None:
    """Write the rows of ``select`` to ``ops.<table>``, each column of the select (``... AS name``) to the
    table's column of that name."""
    con.execute(f"INSERT INTO {CATALOG}.{OPS}.{table} BY NAME {select}", list(params))
