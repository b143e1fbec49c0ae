"""What a client sees when it asks the catalogue: only the tables and columns its department may read.

Tools like Superset (SQLAlchemy), DBeaver and psql's ``\\d`` ask ``pg_catalog`` and
``information_schema`` before they query. Those questions are answered by a per-department
*sandbox*: an in-memory DuckDB holding, in schema ``shared``, an empty table for each dataset the
department may read, with its visible columns only. It has no rows, no lake, no file access and a
locked configuration, so whatever a catalogue query asks, it can only learn what the department was
granted. Session questions (``SHOW ...``, ``version()``) get fixed answers.
"""

from __future__ import annotations

import contextlib
import re

import duckdb
import sqlglot
from sqlglot import exp

from schemas.model import Registry
from sharing import pgcatalog
from sharing.exceptions import QueryRefused
from sharing.grants import Access
from sharing.limits import Watch
from sharing.sql import QueryResult

CATALOG_SCHEMAS = {"pg_catalog", "information_schema"}
SESSION_FUNCTIONS = {"version", "current_version", "current_schema", "current_database", "current_user",
                     "session_user", "current_setting", "pg_backend_pid"}
SETTINGS = {"standard_conforming_strings": "on", "transaction isolation level": "read committed",
            "transaction_isolation": "read committed", "server_version": "14.0", "client_encoding": "UTF8",
            "datestyle": "ISO, MDY", "timezone": "UTC", "search_path": "shared", "integer_datetimes": "on",
            "default_table_access_method": "heap", "max_identifier_length": "63"}
VERSION = "PostgreSQL 14.0 (OneSource governed endpoint on DuckDB)"


def is_catalog_query(sql: str) -> bool:
    """True for SHOW and for queries that read only pg_catalog / information_schema (or no table at all
    but session functions such as version())."""
    text = sql.strip().rstrip(";")
    if text.lower().startswith("show "):
        return True
    try:
        stmt = sqlglot.parse_one(text, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return False
    if not isinstance(stmt, exp.Query):
        return False
    tables = list(stmt.find_all(exp.Table))
    if any(not isinstance(t.this, exp.Identifier) for t in tables):
        return False  # a table function (pg_catalog.duckdb_settings(), read_*): the planner refuses it
    if tables:
        return all(t.db in CATALOG_SCHEMAS or (not t.db and t.name.startswith("pg_")) for t in tables)
    names = {(f.name if isinstance(f, exp.Anonymous) else f.sql_name()).lower() for f in stmt.find_all(exp.Func)}
    return bool(names) and names <= SESSION_FUNCTIONS


def sandbox(access: dict[str, Access], registry: Registry, *, memory_limit: str | None = None,
            threads: int = 0) -> duckdb.DuckDBPyConnection:
    """The department's sandbox; ``memory_limit`` and ``threads``: a query's limits (QueryLimits)."""
    config: dict[str, str | int | bool] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads and threads > 0:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute("CREATE SCHEMA shared")
    for name, acc in sorted(access.items()):
        ds = registry.dataset(name)
        cols = ", ".join(f'"{c}" {ds.column(c).duck_type}' for c in acc.columns)
        con.execute(f'CREATE TABLE shared."{name}" ({cols})')
        con.execute(f"COMMENT ON TABLE shared.\"{name}\" IS '{ds.title.replace(chr(39), chr(39) * 2)}'")
    con.execute(_current_setting_macro())
    for statement in pgcatalog.STATEMENTS:
        con.execute(statement)
    con.execute(pgcatalog.SEARCH_PATH)
    # nothing of the server's own paths to tell (the sandbox holds no data: it never spills or needs secrets)
    con.execute("SET temp_directory = ''")
    con.execute("SET secret_directory = ''")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _current_setting_macro() -> str:
    """PostgreSQL's settings as ``current_setting(name)`` answers them (DuckDB knows other names)."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SETTINGS.items())
    return f"CREATE MACRO pg_current_setting(name) AS CASE lower(name) {cases} ELSE NULL END"


def answer(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, *, watch: Watch | None = None,
           max_rows: int | None = None) -> QueryResult:
    """Answer a catalogue question in the sandbox ``con``; with ``watch`` (sharing.limits) its rewriting
    and its run are under the query's deadline; more than ``max_rows`` rows are refused."""
    text = sql.strip().rstrip(";")
    if text.lower().startswith("show "):
        name = text[5:].strip().lower()
        return QueryResult([name.split()[-1] if " " in name else name], [(SETTINGS.get(name, ""),)])
    with watch.planning() if watch is not None else contextlib.nullcontext():
        text = _rewritten(text)
    cur = con.cursor()
    try:
        with watch.running(cur) if watch is not None else contextlib.nullcontext():
            cur.execute(pgcatalog.SEARCH_PATH)  # a cursor is a new session: it does not inherit the sandbox's
            cur.execute(text, params or None)
            rows = cur.fetchmany(max_rows + 1) if max_rows else cur.fetchall()
        if max_rows and len(rows) > max_rows:
            raise QueryRefused(f"the catalogue answer has more than {max_rows:,} rows; ask a narrower question")
        return QueryResult([d[0] for d in cur.description], rows)
    finally:
        cur.close()


def _rewritten(text: str) -> str:
    """A catalogue question in PostgreSQL's words, as DuckDB's catalogue and the shims answer it."""
    text = text.replace("pg_catalog.version()", f"'{VERSION}'").replace("version()", f"'{VERSION}'")
    # psql's \d family: anchored regex matches and the default collation
    text = re.sub(r"OPERATOR\(pg_catalog\.(~|!~)\)", r"\1", text)
    text = re.sub(r"\s+COLLATE\s+pg_catalog\.default\b", "", text, flags=re.I)
    text = _without_pg_catalog(text)
    # PostgreSQL's object-identifier types have no DuckDB counterpart; their text form is what clients use.
    # (Plain text edits are safe here: the sandbox holds no data and no way out.)
    text = re.sub(r"::\s*(pg_catalog\.)?reg(class|type|proc|namespace|role)\b", "::VARCHAR", text, flags=re.I)
    text = re.sub(r"\bAS\s+(pg_catalog\.)?reg(class|type|proc|namespace|role)\b", "AS VARCHAR", text, flags=re.I)
    text = re.sub(r"\bAS\s+oid\)", "AS BIGINT)", text, flags=re.I)
    text = re.sub(r"\bjson_build_object\(", "json_object(", text, flags=re.I)
    text = re.sub(r"\bformat_type\(", "pg_format_type(", text, flags=re.I)
    text = re.sub(r"\bcurrent_setting\(", "pg_current_setting(", text, flags=re.I)
    return re.sub(r"\bpg_get_expr\(([^(),]+),([^(),]+),\s*true\)", r"pg_get_expr3(\1,\2, true)", text, flags=re.I)


def _without_pg_catalog(sql: str) -> str:
    """DuckDB binds ``pg_class.relname`` but not ``pg_catalog.pg_class.relname`` nor
    ``pg_catalog.format_type(...)``: drop the schema from column and function references."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return sql

    def strip(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db == "pg_catalog":
            node.set("db", None)  # so that the shims on the search path are found first
        if isinstance(node, exp.Column) and node.args.get("db") is not None and node.db in CATALOG_SCHEMAS:
            node.set("db", None)
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name in CATALOG_SCHEMAS:
            return node.expression
        return node

    # twice: a function that lost its schema prefix is a new node whose arguments still carry theirs
    return tree.transform(strip).transform(strip).sql(dialect="duckdb")
