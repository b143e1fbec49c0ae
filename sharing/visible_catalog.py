"""What a client sees when it asks the catalog: only the tables and columns its department may read.

Tools like Superset (SQLAlchemy), DBeaver (PgJDBC) and psql's ``\\d`` family ask ``pg_catalog`` and
``information_schema`` before they query. Those questions are answered by a per-department *sandbox*: an
in-memory DuckDB holding PostgreSQL 15's catalog built from the department's grants (sharing.pgcatalog):
its shared tables with their granted columns, the dataset's Chinese title as the table's comment and each
element's as the column's. It has no rows, no lake, no file access and a locked configuration, and a
question is rewritten so that every relation it names is one of those shims (or one of the department's
own empty tables): a name outside them is unknown, as in PostgreSQL. So whatever a catalog question
asks, it can only learn what the department was granted.

Session questions get PostgreSQL's answers: ``current_user`` (and ``session_user``, ``user``) is the
signed-in user, ``current_database()`` and ``current_catalog`` ``onesource``, ``current_schema()``
``shared``, ``version()`` a PostgreSQL version string that says OneSource; an unnamed output column is
named as PostgreSQL names it (``count``, ``current_user``, ``?column?``).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading

import duckdb
import sqlglot
from sqlglot import exp

from core.duck import literal
from schemas.model import Registry
from sharing import pgcatalog, pgnames
from sharing.exceptions import InvalidSQL, QueryFailed, QueryRefused
from sharing.grants import Access
from sharing.limits import Watch
from sharing.pgcatalog import DATABASE, INFO, PG, SCHEMA, VERSION
from sharing.pgcatalog_pg15 import RELATIONS
from sharing.sql import QueryResult

CATALOG_SCHEMAS = {"pg_catalog", "information_schema"}
SETTINGS = {"standard_conforming_strings": "on", "transaction isolation level": "read committed",
            "transaction_isolation": "read committed", "server_version": pgcatalog.SERVER_VERSION,
            "server_version_num": "150000", "server_encoding": "UTF8", "client_encoding": "UTF8",
            "datestyle": "ISO, MDY", "timezone": "UTC", "search_path": SCHEMA, "integer_datetimes": "on",
            "default_table_access_method": "heap", "max_identifier_length": "63", "max_index_keys": "32",
            "is_superuser": "off", "lc_collate": "C.UTF-8", "lc_ctype": "C.UTF-8",
            "default_transaction_read_only": "on", "transaction_read_only": "on", "application_name": "",
            "intervalstyle": "postgres", "block_size": "8192"}
TABLE_FUNCTIONS = {"generate_series", "exploding_generate_series", "generate_subscripts", "unnest", "explode",
                   "pg_get_keywords", "range"}
"""Functions a catalog question may read rows from (``FROM generate_series(...)``): none reaches out."""
GENERIC_FUNCTIONS = frozenset("""
array_to_string string_to_array array_position array_append array_cat array_remove array_dims array_ndims
array_positions generate_series exploding_generate_series generate_subscripts unnest range json_object
json_build_object to_char to_number regexp_split_to_array regexp_full_match regexp_matches regexp_like
regexp_replace split_part btrim initcap translate chr ascii quote_literal quote_nullable trunc div
cbrt pi random bit_and bit_or any all array some exists in not between like ilike similar to_timestamp
date_part datepart coalesce nullif greatest least typeof pg_typeof string_agg array_agg max min count sum
avg bool_and bool_or logical_and logical_or every lower upper length substring substr trim left right lpad rpad replace position
strpos concat concat_ws format row_number rank dense_rank abs round floor ceil mod power sqrt sign
""".split())
MACROS = pgcatalog.macros(SETTINGS)
SESSION_WORDS = {"user", "current_role"}
"""PostgreSQL keywords that sqlglot reads as column names: they are session values when unqualified."""


class Sandbox:
    """A department's sandbox: its DuckDB, the names of its tables, and the catalog relations made so far
    (each made when a question first names it: PostgreSQL 15 has 208, a question names a few)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str]):
        self.con = con
        self.tables = tables
        """table name -> the DDL of its empty stand-in in schema ``shared``."""
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self._rewritten: dict[tuple[str, str], tuple[str, set[str]]] = {}

    def rewritten(self, text: str, user: str) -> tuple[str, set[str]]:
        """:func:`rewrite`, remembered: clients ask the same catalog questions on every connection."""
        key = (text, user)
        hit = self._rewritten.get(key)
        if hit is None:
            hit = rewrite(text, set(self.tables), user)
            if len(self._rewritten) >= 512:
                self._rewritten.clear()
            self._rewritten[key] = hit
        return hit

    def make(self, items: set[str]) -> None:
        """Make what a question names: catalog relations (``pg_catalog.x``, ``information_schema.x``),
        the department's empty tables (``shared.x``) and functions (``fn:x``), each with what it reads."""
        if items <= self._made:
            return
        with self._lock:
            for item in sorted(items):
                self._make(item)

    def _make(self, item: str) -> None:
        if item in self._made:
            return
        schema, name = item.split(":" if item.startswith("fn:") else ".", 1)
        if schema == "fn":
            statement = MACROS[name]
        elif schema == SCHEMA:
            statement = self.tables[name]
        else:
            statement = pgcatalog.definition(item, SETTINGS)
        for needed in sorted(pgcatalog.requirements(statement, set(MACROS)) - {item}):
            self._make(needed)
        self.con.execute(statement)
        self._made.add(item)

    def close(self) -> None:
        self.con.close()


def sandbox(access: dict[str, Access], registry: Registry, *, memory_limit: str | None = None,
            threads: int = 0) -> Sandbox:
    """The department's sandbox; ``memory_limit`` and ``threads``: a query's limits (QueryLimits)."""
    config: dict[str, str | int | bool] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads and threads > 0:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    facts = table_facts(access, registry)
    for statement in [f"CREATE SCHEMA {SCHEMA}", f"CREATE SCHEMA {PG}", f"CREATE SCHEMA {INFO}",
                      *pgcatalog.facts_statements(facts)]:
        con.execute(statement)
    box = Sandbox(con, {t.name: f'CREATE TABLE {SCHEMA}."{t.name}" ('
                        + ", ".join(f'"{c.name}" {c.duck_type}' for c in t.columns) + ")" for t in facts})
    # nothing of the server's own paths to tell (the sandbox holds no data: it never spills or needs secrets)
    con.execute("SET temp_directory = ''")
    con.execute("SET secret_directory = ''")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return box


def table_facts(access: dict[str, Access], registry: Registry) -> list[pgcatalog.TableFact]:
    """The department's tables as the catalog shows them: granted columns only, with their titles."""
    facts = []
    for name, acc in sorted(access.items()):
        ds = registry.dataset(name)
        columns = tuple(pgcatalog.ColumnFact(c, ds.column(c).duck_type, column_title(registry, ds.column(c)))
                        for c in acc.columns)
        facts.append(pgcatalog.TableFact(name, ds.title or None, columns))
    return facts


def column_title(registry: Registry, column) -> str | None:
    """A column's Chinese title: its element's, else the header of the department's extract when that is
    a title rather than a field code (``注册资本``, not ``gxsj``)."""
    if column.element:
        with contextlib.suppress(Exception):
            return registry.element(column.element).name_zh
    source = column.source or ""
    return source if any(ord(ch) > 127 for ch in source) else None


def is_catalog_query(sql: str) -> bool:
    """True for SHOW, for queries that read only pg_catalog / information_schema, and for queries that read
    no table at all (``SELECT 1``, ``SELECT current_user``, ``SELECT version()``)."""
    text = sql.strip().rstrip(";")
    if text.lower().startswith("show "):
        return True
    try:
        statements = [s for s in sqlglot.parse(_unoperator(text), read="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return False
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return False
    stmt = statements[0]
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    for t in stmt.find_all(exp.Table):
        if isinstance(t.this, exp.Identifier):
            if not _catalog_relation(t, ctes):
                return False
        elif not isinstance(t.this, exp.Func) or _function_name(t.this) not in TABLE_FUNCTIONS:
            return False  # a table function (pg_catalog.duckdb_settings(), read_*): the planner refuses it
    return True


def _catalog_relation(t: exp.Table, ctes: set[str]) -> bool:
    schema = t.db.lower()
    if schema in CATALOG_SCHEMAS:
        return True
    return not schema and t.name.lower() not in ctes and f"pg_catalog.{t.name.lower()}" in RELATIONS


def answer(box: Sandbox, sql: str, params: list | None = None, *, user: str | None = None,
           watch: Watch | None = None, max_rows: int | None = None, max_bytes: int = 0) -> QueryResult:
    """Answer a catalog question in the sandbox ``box`` for the signed-in ``user``; with ``watch``
    (sharing.limits) its rewriting and its run are under the query's deadline; more than ``max_rows`` rows
    are refused, and an answer over ``max_bytes`` (result_bytes: a query reading no table is answered here,
    ``SELECT repeat('x', 100000000) FROM (VALUES (1), (2), ...)``) is stopped as any other answer is."""
    text = sql.strip().rstrip(";").strip()
    if text.lower().startswith("show "):
        name = text[5:].strip().lower()
        return QueryResult([name.split()[-1] if " " in name else name], [(SETTINGS.get(name, ""),)])
    user = user or pgcatalog.PLATFORM_ROLE
    with watch.planning() if watch is not None else contextlib.nullcontext():
        duck_sql, relations = box.rewritten(text, user)
        box.make(relations)
    cur = box.con.cursor()
    try:
        with watch.running(cur) if watch is not None else contextlib.nullcontext():
            cur.execute(pgcatalog.SEARCH_PATH)  # a cursor is a new session: it does not inherit the sandbox's
            cur.execute(f"SET VARIABLE {pgcatalog.USER_VARIABLE} = {literal(user)}")
            cur.execute(duck_sql, params or None)
            rows = _fetch(cur, max_rows, max_bytes)
        if max_rows and len(rows) > max_rows:
            raise QueryRefused(f"the catalog answer has more than {max_rows:,} rows; ask a narrower question")
        return QueryResult([d[0] for d in cur.description], rows, types=[str(d[1]) for d in cur.description])
    finally:
        cur.close()


def _fetch(cur, max_rows: int | None, max_bytes: int) -> list[tuple]:
    """The answer's rows (one more than ``max_rows`` at most), counted in bytes as they come, every value."""
    if not max_bytes:
        return cur.fetchmany(max_rows + 1) if max_rows else cur.fetchall()
    from sharing.exceptions import ResultTooLarge
    from sharing.sql import shown_size

    rows: list[tuple] = []
    size = 0
    while chunk := cur.fetchmany(1000 if not max_rows else min(1000, max_rows + 1 - len(rows))):
        size += sum(sys.getsizeof(v) for row in chunk for v in row)
        if size > max_bytes:
            raise ResultTooLarge(f"the result is larger than {shown_size(max_bytes)}, the most one answer may have "
                                 "(ONESOURCE_QUERY_RESULT_BYTES); nothing was sent: ask for less")
        rows.extend(chunk)
        if max_rows and len(rows) > max_rows:
            break
    return rows


# psql qualifies its operators and collations: OPERATOR(pg_catalog.~) and COLLATE pg_catalog.default
_OPERATOR = re.compile(r"OPERATOR\s*\(\s*pg_catalog\s*\.\s*([~!=<>*@#%^&|`?+\-/]+)\s*\)", re.I)


def _unoperator(text: str) -> str:
    return _OPERATOR.sub(r"\1", text)


def rewrite(text: str, tables: set[str], user: str) -> tuple[str, set[str]]:
    """A catalog question in PostgreSQL's words as the sandbox answers it (DuckDB SQL), and the relations it
    names (``pg_catalog.x``, ``information_schema.x``, ``shared.x``). Unknown relations and functions are
    errors: the question can reach the department's catalog and nothing else."""
    try:
        statements = [s for s in sqlglot.parse(_unoperator(text), read="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        raise InvalidSQL.of(exc, "the catalog question") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise QueryRefused("a catalog question is one SELECT query")
    tree = statements[0]
    name_outputs(tree, _unoperator(text))
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    relations: set[str] = set()

    def visit(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            return _relation(node, tables, ctes, relations)
        if isinstance(node, exp.Column):
            return _column(node, user)
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier):
            if node.this.name.lower() in CATALOG_SCHEMAS:
                return node.expression  # pg_catalog.f(...): f(...), the shims' own on the search path
            if isinstance(node.expression, exp.Func | exp.Literal):
                raise QueryFailed(f"function {node.sql(dialect='postgres')} does not exist")
        if isinstance(node, exp.Collate):
            return node.this  # names compare byte-wise here; psql asks for the default collation anyway
        if isinstance(node, exp.Cast):
            return _cast(node)
        if isinstance(node, exp.Func):
            return _function(node, user)
        return node

    tree = _bottom_up(tree, visit)
    _written_back_safely(tree)
    for f in tree.find_all(exp.Func):
        name = _function_name(f)
        if not isinstance(f, exp.Connector) and name not in _ALLOWED and f.key.lower() not in _ALLOWED:
            raise _not_allowed(f"{name}()")
        if name in MACROS:
            relations.add(f"fn:{name}")  # made before the question runs, or DuckDB's own would answer
    duck_sql = tree.sql(dialect="duckdb")
    _verify(duck_sql, ctes)
    return duck_sql, relations


def _verify(duck_sql: str, ctes: set[str]) -> None:
    """DuckDB's own parse of the question as the sandbox will run it: one SELECT, reading only the shims, the
    department's empty tables, its CTEs and the allowed table functions (the text is checked, not only the
    tree it was written from, as sharing.policy.verify does for governed queries)."""
    from sharing.policy import duckdb_tree, tree_objects

    unsafe = QueryRefused("the catalog question could not be rewritten safely; ask it more plainly")
    tree = duckdb_tree(duck_sql)
    if tree.get("error") or len(tree.get("statements") or ()) != 1:
        raise unsafe
    for ref in (o for o in tree_objects(tree) if o.get("type") in ("BASE_TABLE", "TABLE_FUNCTION")):
        if ref["type"] == "TABLE_FUNCTION":
            if (ref.get("function") or {}).get("function_name", "").lower() not in TABLE_FUNCTIONS:
                raise unsafe
            continue
        schema, table = ref.get("schema_name", "").lower(), ref.get("table_name", "").lower()
        if ref.get("catalog_name") or not (schema in (SCHEMA, PG, INFO) or (not schema and table in ctes)):
            raise unsafe


def _written_back_safely(tree: exp.Expression) -> None:
    """The checks of the governed planner on nodes sqlglot writes back as bare text (sharing.policy.safe_text):
    a quoted EXTRACT unit, a ``date_part`` string or a type parameter would otherwise come back unquoted as
    SQL of the sandbox's own (``date_part('year FROM ...) AS y, * FROM duckdb_settings() --', d)``: DuckDB's
    catalog, further statements that redefine the department's shims for its other users)."""
    from sharing.policy import safe_text

    for node in list(tree.walk()):
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.USERDEFINED:
            # clients name PostgreSQL's types by schema (``::pg_catalog.int4``): a plain word, unqualified, is
            # DuckDB's type of that name or DuckDB's error; anything else would be written back as SQL
            name = _type_name(node)
            if not _PLAIN_WORD.fullmatch(name):
                raise QueryRefused(f"the catalog question was refused: type {node.sql()} is not a type name")
            node.replace(exp.DataType(this=exp.DataType.Type.USERDEFINED, kind=exp.to_identifier(name)))
    try:
        safe_text(tree, user_types=True)
    except QueryRefused as exc:
        raise QueryRefused(f"the catalog question was refused: {exc}") from exc


_PLAIN_WORD = re.compile(r"[a-z_][a-z0-9_]*")


def _bottom_up(node: exp.Expression, fun) -> exp.Expression:
    """``fun`` applied to every node, children first (sqlglot's transform goes top-down and does not visit
    the children of a node it replaced, such as the arguments of ``pg_catalog.f(...)`` once it is ``f(...)``)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            new = _bottom_up(value, fun)
            if new is not value:
                node.set(key, new)
        elif isinstance(value, list) and any(isinstance(v, exp.Expression) for v in value):
            node.set(key, [_bottom_up(v, fun) if isinstance(v, exp.Expression) else v for v in value])
    return fun(node)


def _not_allowed(function: str) -> QueryRefused:
    """A function neither the catalog nor a governed query may call (``getenv``, ``pg_read_file``): refused
    as the governed planner refuses it, so that it is audited as a refusal (a probe of the policy the misuse
    alerts count) and the client gets 42501, not a failure (XX000) the alerts never see."""
    return QueryRefused(f"function {function} is not allowed: neither a catalog function nor one governed "
                        "queries may use")


def _relation(t: exp.Table, tables: set[str], ctes: set[str], relations: set[str]) -> exp.Table:
    """A table of a catalog question, pointed at its shim (or the department's own empty table)."""
    if t.catalog and t.catalog.lower() != DATABASE:
        raise QueryFailed(f"cross-database references are not implemented: {t.sql(dialect='postgres')}")
    if t.catalog:
        t.set("catalog", None)
    if not isinstance(t.this, exp.Identifier):
        if not isinstance(t.this, exp.Func) or _function_name(t.this) not in TABLE_FUNCTIONS:
            raise _not_allowed(t.this.sql(dialect="postgres"))
        t.set("db", None)
        return t
    schema, name = t.db.lower(), t.name
    if schema in ("pg_catalog", PG) or (not schema and name.lower() not in ctes
                                       and f"pg_catalog.{name.lower()}" in RELATIONS):
        key, target = f"pg_catalog.{name.lower()}", PG
    elif schema in ("information_schema", INFO):
        key, target = f"information_schema.{name.lower()}", INFO
    elif schema == SCHEMA or (not schema and name.lower() not in ctes):
        if name not in tables:
            raise QueryFailed(f'relation "{SCHEMA}.{name}" does not exist')
        relations.add(f"{SCHEMA}.{name}")
        t.set("db", exp.to_identifier(SCHEMA))
        return t
    elif not schema:
        return t  # a common table expression of the question
    else:
        raise QueryFailed(f'relation "{schema}.{name}" does not exist')
    if key not in RELATIONS:
        raise QueryFailed(f'relation "{key}" does not exist')
    relations.add(key)
    t.set("db", exp.to_identifier(target))
    t.set("this", exp.to_identifier(name.lower()))
    return t


def _column(column: exp.Column, user: str) -> exp.Expression:
    """``pg_catalog.pg_class.relname`` binds as ``pg_class.relname``; ``user`` and ``current_role`` are
    session values (sqlglot reads these keywords as columns)."""
    if column.args.get("db") is not None and column.db.lower() in CATALOG_SCHEMAS:
        column.set("db", None)
    if not column.table and not column.this.quoted and column.name.lower() in SESSION_WORDS:
        return exp.Literal.string(user)
    return column


_SESSION = {exp.CurrentUser: "user", exp.SessionUser: "user", exp.CurrentDatabase: DATABASE,
            exp.CurrentCatalog: DATABASE, exp.CurrentSchema: SCHEMA, exp.CurrentVersion: VERSION}
_SESSION_CALLS = {"current_user": "user", "session_user": "user", "getpgusername": "user",
                  "current_database": DATABASE, "current_catalog": DATABASE, "current_schema": SCHEMA,
                  "version": VERSION}


def _function(f: exp.Func, user: str) -> exp.Expression:
    value = _SESSION.get(type(f))
    if value is None and isinstance(f, exp.Anonymous) and not f.expressions:
        value = _SESSION_CALLS.get(str(f.this).lower())
    if value is not None:
        return exp.Literal.string(user if value == "user" else value)
    if isinstance(f, exp.Anonymous) and str(f.this).lower() == "json_build_object":
        return exp.Anonymous(this="json_object", expressions=f.expressions)
    return f


_TEXT_TYPES = {"name", "char", "bpchar", "sql_identifier", "character_data", "yes_or_no", "regproc",
               "regprocedure", "regoper", "regoperator", "regconfig", "regdictionary", "pg_node_tree",
               "aclitem", "int2vector", "oidvector", "text", "varchar"}
_OID_TYPES = {"oid", "xid", "cid", "tid", "regcollation"}


def _type_name(to: exp.Expression) -> str:
    if isinstance(to, exp.ObjectIdentifier):
        return to.name.lower()
    if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.USERDEFINED:
        kind = to.args.get("kind")
        return (kind.expression.name if isinstance(kind, exp.Dot) else kind.name).lower() if kind else ""
    return ""


def _cast(cast: exp.Cast) -> exp.Expression:
    """PostgreSQL's object-identifier types: ``'pg_class'::regclass`` (a name, or a bound parameter) is the
    oid it names, ``c.oid::regclass`` the name of the oid; catalog domains and ``name`` are text."""
    kind = _type_name(cast.args["to"])
    if not kind:
        return cast
    value = cast.this
    named = isinstance(value, exp.Literal | exp.Placeholder | exp.Parameter) or (
        isinstance(value, exp.Cast) and isinstance(value.this, exp.Literal | exp.Placeholder | exp.Parameter))
    lookups = {"regclass": ("os_regclass", "os_regclass_name"), "regtype": ("os_regtype", None),
               "regnamespace": ("os_regnamespace", "os_regnamespace_name"), "regrole": ("os_regrole", "pg_get_userbyid")}
    if kind in lookups:
        by_name, by_oid = lookups[kind]
        if named:
            return exp.Anonymous(this=by_name, expressions=[exp.cast(value, "VARCHAR")])
        if kind == "regtype":
            return exp.Anonymous(this="format_type", expressions=[value, exp.Null()])
        return exp.Anonymous(this=by_oid, expressions=[value])
    if kind in _TEXT_TYPES:
        if named and isinstance(value, exp.Literal) and kind.startswith("regproc"):
            return exp.Literal.string(re.sub(r"^pg_catalog\.", "", value.name))
        return exp.cast(value, "VARCHAR")
    if kind in _OID_TYPES:
        return exp.cast(value, "BIGINT")
    if kind == "cardinal_number":
        return exp.cast(value, "INTEGER")
    return cast


def _function_name(f: exp.Func) -> str:
    return str(f.this).lower() if isinstance(f, exp.Anonymous) else f.sql_name().lower()


def _allowed() -> frozenset[str]:
    from sharing.policy import ALLOWED_FUNCTIONS

    return ALLOWED_FUNCTIONS | pgcatalog.CATALOG_FUNCTIONS | GENERIC_FUNCTIONS | TABLE_FUNCTIONS


_ALLOWED = _allowed()


# -- PostgreSQL's names for output columns: sharing.pgnames (FigureColname), as for governed queries ---------

def name_outputs(tree: exp.Query, text: str) -> None:
    """Name every unnamed output column as PostgreSQL would (DuckDB names them by their text:
    ``count_star()``, ``CURRENT_USER``): clients read columns by those names. ``user`` and ``current_role``
    are bare words that become the signed-in user's name: they keep their own name as an alias."""
    for select in list(tree.find_all(exp.Select)):
        select.set("expressions", [
            exp.alias_(p, p.name.lower(), quoted=True)
            if isinstance(p, exp.Column) and not p.table and not p.this.quoted and p.name.lower() in SESSION_WORDS
            else p for p in select.expressions])
    pgnames.name_outputs(tree, pgnames.Namer(text, "postgres", tree))
