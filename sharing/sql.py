"""SQL on the lake for data engineers: one read-only statement on a locked-down connection.

Department-level governance (grants, row filters, masking, audit) is built on top of this in the
governed engine; this connection is already safe to hand a mistake: the lake is attached
read-only, file access is limited to the lake's data folder and the configuration is locked.
Every such query, allowed, refused or failed, is recorded in the audit log as operator access
(department ``operator``, the OS user).
"""

from __future__ import annotations

import getpass
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from lakehouse.lake import Lake
from onesource.config import Settings
from sharing.exceptions import QueryFailed, QueryRefused

READ_STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Describe, exp.Show, exp.Pivot)
INSPECT_COMMANDS = ("SHOW", "DESCRIBE", "SUMMARIZE")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _one_statement(sql: str) -> None:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise QueryRefused(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time, please ({len(statements)} given)")
    stmt = statements[0]
    if isinstance(stmt, exp.Command):  # statements sqlglot keeps as raw text: only the inspecting ones
        if str(stmt.this).upper() in INSPECT_COMMANDS:
            return
        raise QueryRefused(f"only queries run here; {str(stmt.this).upper()} was refused (the lake is read-only)")
    if not isinstance(stmt, READ_STATEMENTS):
        raise QueryRefused(f"only queries run here; {stmt.key.upper()} was refused (the lake is read-only)")


def lock_down(con: duckdb.DuckDBPyConnection, data_path: str, *, memory_limit: str | None = None,
              threads: int = 0) -> None:
    """No file, network or setting access beyond the lake's own data files (a folder or an
    object-store prefix). With ``memory_limit`` (a department's queries: QueryLimits.memory) the instance
    may use that much memory and spills nothing to disk, so a query that needs more is stopped (DuckDB's
    limit is per instance: the servers give each running query an instance of its own)."""
    if memory_limit:
        con.execute(f"SET memory_limit = {_size(memory_limit)}")
        con.execute("SET temp_directory = ''")
    if threads and threads > 0:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET allowed_directories = [?]", [data_path])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _size(text: str) -> str:
    """A DuckDB memory size as a SQL literal ('2GiB', '512 MB'), refused unless it is one."""
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*", text, re.I):
        raise ValueError(f"not a memory size: {text!r} (e.g. 2GiB, 512MB)")
    return "'" + text.strip() + "'"


def _relations(sql: str) -> list[str]:
    """The tables a statement names, as written (``shared.firms``, ``ops.loads``)."""
    try:
        return sorted({".".join(p for p in (t.db, t.name) if p)
                       for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table) if t.name})
    except sqlglot.errors.ParseError:
        return []


OPERATOR = "operator"
"""The department operator access is recorded under (it is no department's usage: ``tables`` stays
empty, so the usage KPIs do not count it; the relations read are in ``relations``)."""


def run_sql(settings: Settings, sql: str, limit: int | None = None, as_of=None, *, user: str | None = None,
            purpose: str | None = None) -> QueryResult:
    """``as_of``: a snapshot id or a datetime, to read the lake as it was then. Audited as operator
    access by ``user`` (default: the OS user)."""
    from sharing.audit import AuditLog
    from sharing.limits import clip

    started = time.perf_counter()
    try:
        os_user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container)
        os_user = f"uid {os.getuid()}"
    clipped = settings.limits.audit_sql_bytes
    record = {"department": OPERATOR, "user": user or os_user, "os_user": os_user, "purpose": purpose,
              **clip("sql_sent", sql, clipped), "dialect": "duckdb", "as_of": None if as_of is None else str(as_of)}

    def audit(decision: str, reason: str | None, rows: int | None = None, relations: list[str] | None = None) -> None:
        log = AuditLog.of(settings)
        try:
            log.append(**record, **clip("sql_run", sql if decision != "refused" else None, clipped), tables=[],
                       columns=[], masked=[],
                       relations=relations or [], rows=rows, decision=decision, reason=reason,
                       duration_ms=round((time.perf_counter() - started) * 1000, 2))
        finally:
            if log.anchor is not None:
                log.anchor.close()

    try:
        _one_statement(sql)
    except QueryRefused as exc:
        audit("refused", str(exc))
        raise
    try:
        with Lake(settings.lake, read_only=True, as_of=as_of) as lake:
            lock_down(lake.con, settings.lake.data_path)
            try:
                cur = lake.con.execute(sql)
                rows = cur.fetchmany(limit) if limit else cur.fetchall()
            except duckdb.Error as exc:
                raise QueryFailed(str(exc).split("\n")[0] + " (tables are named shared.<dataset>; "
                                  "`onesource registry list` shows them)") from exc
            columns = [d[0] for d in cur.description] if cur.description else []
    except Exception as exc:
        audit("failed", str(exc).split("\n")[0], relations=_relations(sql))
        raise
    audit("allowed", None, rows=len(rows), relations=_relations(sql))
    return QueryResult(columns, rows)
