"""What a client sees when it asks the catalogue: only the tables and columns its department may read.

Tools like Superset (SQLAlchemy), DBeaver and psql's ``\\d`` ask ``pg_catalog`` and
``information_schema`` before they query. Those questions are answered by a per-department
*sandbox*: an in-memory DuckDB holding, in schema ``shared``, an empty table for each dataset the
department may read, with its visible columns only. It has no rows, no lake, no file access and a
locked configuration, so whatever a catalogue query asks, it can only learn what the department was
granted. Session questions (``SHOW ...``, ``version()``) get fixed answers.
"""

from __future__ import annotations

import re

import duckdb
import sqlglot
from sqlglot import exp

from schemas.model import Registry
from sharing.grants import Access
from sharing.sql import QueryResult

CATALOG_SCHEMAS = {"pg_catalog", "information_schema"}
SESSION_FUNCTIONS = {"version", "current_version", "current_schema", "current_database", "current_user",
                     "session_user", "current_setting", "pg_backend_pid"}
SETTINGS = {"standard_conforming_strings": "on", "transaction isolation level": "read committed",
            "transaction_isolation": "read committed", "server_version": "14.0", "client_encoding": "UTF8",
            "datestyle": "ISO, MDY", "timezone": "UTC", "search_path": "shared", "integer_datetimes": "on",
            "default_table_access_method": "heap", "max_identifier_length": "63"}
VERSION = "PostgreSQL 14.0 (OneSource governed endpoint on DuckDB)"
# PostgreSQL catalogue objects clients ask for that DuckDB's pg_catalog lacks, in a schema on the
# search path after ``shared``: unqualified names find them first, then DuckDB's own pg_catalog.
SHIM = "pg_shim"
SEARCH_PATH = f"SET search_path = 'shared,{SHIM}'"
PG_SHIMS = (
    "CREATE MACRO to_regtype(name) AS NULL::INTEGER",  # psycopg looks up optional types (hstore)
    "CREATE MACRO to_regclass(name) AS NULL::INTEGER",
    "CREATE MACRO pg_get_serial_sequence(tbl, col) AS NULL::VARCHAR",  # shared tables have no sequences
    "CREATE MACRO pg_get_indexdef(idx, col, pretty) AS NULL::VARCHAR",  # nor indexes
    # DuckDB's format_type answers 'varchar', 'int8'; clients map PostgreSQL's own names to types
    "CREATE MACRO pg_format_type(oid, mod) AS (SELECT CASE t WHEN 'varchar' THEN 'character varying' "
    "WHEN 'int8' THEN 'bigint' WHEN 'int4' THEN 'integer' WHEN 'int2' THEN 'smallint' WHEN 'float8' "
    "THEN 'double precision' WHEN 'float4' THEN 'real' WHEN 'bool' THEN 'boolean' WHEN 'timestamp' THEN "
    "'timestamp without time zone' WHEN 'timestamptz' THEN 'timestamp with time zone' WHEN 'list' THEN 'text[]' "
    "ELSE t END FROM (SELECT pg_catalog.format_type(oid, mod) AS t))",
    # SQLAlchemy's column reflection (Superset, DBeaver's SQL editor) joins these; they are empty here
    f"CREATE TABLE {SHIM}.pg_opclass (oid BIGINT, opcname VARCHAR, opcdefault BOOLEAN, opcmethod BIGINT)",
    f"CREATE TABLE {SHIM}.pg_inherits (inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN)",
    f"CREATE TABLE {SHIM}.pg_range (rngtypid BIGINT, rngsubtype BIGINT)",
    f"CREATE TABLE {SHIM}.pg_collation (oid BIGINT, collname VARCHAR, collnamespace BIGINT)",
    # psql's \\d asks pg_class for columns DuckDB's lacks
    f"CREATE VIEW {SHIM}.pg_class AS SELECT *, false AS relforcerowsecurity FROM pg_catalog.pg_class",
    f"CREATE TABLE {SHIM}.pg_policy (oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, "
    "polpermissive BOOLEAN, polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR)",
    f"CREATE TABLE {SHIM}.pg_statistic_ext (oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, "
    "stxkeys INTEGER[], stxkind VARCHAR[], stxstattarget INTEGER)",
    f"CREATE TABLE {SHIM}.pg_publication (oid BIGINT, pubname VARCHAR, puballtables BOOLEAN, pubinsert BOOLEAN, "
    "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN)",
    f"CREATE TABLE {SHIM}.pg_publication_rel (oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, "
    "prattrs INTEGER[])",
    f"CREATE TABLE {SHIM}.pg_publication_namespace (oid BIGINT, pnpubid BIGINT, pnnspid BIGINT)",
    f"CREATE TABLE {SHIM}.pg_trigger (oid BIGINT, tgrelid BIGINT, tgname VARCHAR, tgenabled VARCHAR, "
    "tgisinternal BOOLEAN, tgparentid BIGINT)",
    f"CREATE TABLE {SHIM}.pg_roles (oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN)",
    "CREATE MACRO pg_get_userbyid(oid) AS 'onesource'",
    "CREATE MACRO pg_relation_is_publishable(rel) AS false",
    "CREATE MACRO pg_get_expr3(expr, rel, pretty) AS NULL::VARCHAR",  # shared tables have no defaults
    "CREATE MACRO pg_get_statisticsobjdef_columns(oid) AS NULL::VARCHAR",
)


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
    if tables:
        return all(t.db in CATALOG_SCHEMAS or (not t.db and t.name.startswith("pg_")) for t in tables)
    names = {(f.name if isinstance(f, exp.Anonymous) else f.sql_name()).lower() for f in stmt.find_all(exp.Func)}
    return bool(names) and names <= SESSION_FUNCTIONS


def sandbox(access: dict[str, Access], registry: Registry) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("CREATE SCHEMA shared")
    for name, acc in sorted(access.items()):
        ds = registry.dataset(name)
        cols = ", ".join(f'"{c}" {ds.column(c).duck_type}' for c in acc.columns)
        con.execute(f'CREATE TABLE shared."{name}" ({cols})')
        con.execute(f"COMMENT ON TABLE shared.\"{name}\" IS '{ds.title.replace(chr(39), chr(39) * 2)}'")
    con.execute(_current_setting_macro())
    con.execute(f"CREATE SCHEMA {SHIM}")
    for statement in PG_SHIMS:
        con.execute(statement)
    con.execute(SEARCH_PATH)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _current_setting_macro() -> str:
    """PostgreSQL's settings as ``current_setting(name)`` answers them (DuckDB knows other names)."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SETTINGS.items())
    return f"CREATE MACRO pg_current_setting(name) AS CASE lower(name) {cases} ELSE NULL END"


def answer(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> QueryResult:
    text = sql.strip().rstrip(";")
    if text.lower().startswith("show "):
        name = text[5:].strip().lower()
        return QueryResult([name.split()[-1] if " " in name else name], [(SETTINGS.get(name, ""),)])
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
    text = re.sub(r"\bpg_get_expr\(([^(),]+),([^(),]+),\s*true\)", r"pg_get_expr3(\1,\2, true)", text, flags=re.I)
    cur = con.cursor()
    try:
        cur.execute(SEARCH_PATH)  # a cursor is a new session: it does not inherit the sandbox's
        cur.execute(text, params or None)
        return QueryResult([d[0] for d in cur.description], cur.fetchall())
    finally:
        cur.close()


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
