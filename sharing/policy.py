"""The governed query planner: policy applied at the scan, not guessed from the query.

A department's query never meets a raw table. Before anything else reads it, every reference to
``shared.<dataset>`` is replaced by the department's **policy relation** of that dataset:

    (SELECT <granted columns, masks already applied> FROM lake.shared.<dataset> [AT (...)]
     WHERE <row filter>) AS <the reference's alias>

so whatever shape the query takes (aliases reused across CTEs, a table alias used as a value, column-alias
lists, NATURAL/USING joins, recursion, lateral, pivots, time travel) it can only see what the relation
holds: granted columns, masked values, permitted rows. This is Unity Catalog's column masks and row filters
and Trino's access control: the mask replaces every reference at the scan.

The outer lines stay, in order (sqlglot parses; nothing is matched by regular expression):

0. ``explained``       ``EXPLAIN <query>`` is the plan of the governed query (plan only: never ANALYZE, which
                       runs it); the query itself goes through every line below
1. ``one_select``      exactly one statement, and it is a query (no ATTACH, COPY, SET, PRAGMA, ...); its output
                       columns get PostgreSQL's names (sharing.pgnames) and session values (``current_user``,
                       ``current_database()``, ``version()``) become the session's literals
2. ``resolve_tables``  every table is a shared dataset the department may read (``shared.x`` or, on the
                       search path, a bare ``x``), or a CTE of the query (renamed to a reserved name, so a
                       CTE that DuckDB would not see in scope can never fall back to a catalog table);
                       table functions, file paths and other schemas are refused. A query may read no
                       table at all (``SELECT 1``: every pool's connection check)
3. ``safe_functions``  every function is on the allowlist (no read_*, glob, getenv, duckdb_* ...)
4. ``matches``         ``match_value(col, 'value')`` on a masked column: equality against a value the department
                       supplies, with a grant that allows it and within its daily quota (sharing.match)
5. ``policy relations`` every dataset reference becomes its relation (above)
6. ``verify``          the SQL that will run is checked again as text, by two parsers (a node sqlglot writes
                       back unquoted, such as an EXTRACT unit, must not smuggle SQL in): sqlglot reads it back
                       and the function allowlist holds, and DuckDB's own parser (``json_serialize_sql``) finds
                       no table but the planned relations' scans and the query's CTEs, no table function and
                       no denied function

The locked-down DuckDB connection (sharing.engine) is the second line: a mistake here still meets
no file access, no extensions and a read-only lake.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from schemas.model import Dataset, Registry
from sharing.exceptions import InvalidSQL, QueryRefused
from sharing.grants import Access
from sharing.pgnames import Namer, name_outputs

SCHEMA = "shared"
CATALOG = "lake"
DATABASE = "onesource"
"""What ``current_database()`` answers: the database name clients connect to."""
RESERVED = "__os_"
"""Prefix of the names the planner makes (CTE renames, match columns): refused in a department's SQL."""
SCAN = f"{RESERVED}scan"
"""Alias of the lake table inside a policy relation: every column the relation reads is qualified with it."""

ALLOWED_FUNCTIONS = frozenset("""
count sum avg min max median mode stddev stddev_samp stddev_pop variance var_samp var_pop approx_distinct
count_if countif any_value first last string_agg group_concat array_agg list bool_and bool_or
abs round floor ceil ceiling mod power pow sqrt ln log log10 log2 exp sign greatest least
coalesce nullif if iif cast try_cast trycast case
lower upper length char_length character_length substring substr trim ltrim rtrim concat concat_ws replace
left right lpad rpad reverse strpos position instr starts_with ends_with contains split_part repeat
regexp_like regexp_matches regexp_replace regexp_extract like ilike
date_trunc datetrunc timestamp_trunc timestamptrunc extract date_part datepart year month day quarter week
dayofweek dayofyear hour minute second strftime time_to_str timetostr str_to_time strptime date to_date
current_date currentdate current_timestamp currenttimestamp now date_add dateadd date_sub datesub date_diff
datediff age make_date interval
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
match_value struct struct_pack row struct_extract array list_value list_extract list_contains list_has array_length
array_contains len cardinality unnest explode flatten hash md5 sha256 sha1 bit_length octet_length format
printf string_split str_split to_json json concat_ws nullifzero isnan isinf epoch date_diff exists columns
grouping grouping_id str_position
""".split())
"""Pure functions only. With policy relations a function can only compute on what the relation holds, so
the list keeps out what reaches past the query (files, settings, environment, other catalogs)."""

ROW_FILTER_FUNCTIONS = ALLOWED_FUNCTIONS - frozenset("""
count sum avg min max median mode stddev stddev_samp stddev_pop variance var_samp var_pop approx_distinct
count_if countif any_value first last string_agg group_concat array_agg list bool_and bool_or
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value match_value
grouping grouping_id current_date currentdate current_timestamp currenttimestamp now
""".split()) | {"current_date", "currentdate", "current_timestamp", "currenttimestamp", "now"}
"""A row filter is a condition on one row: no aggregates, windows or matches (time functions are fine)."""

MASKS = {
    "resident_id": "CASE WHEN {c} IS NULL THEN NULL ELSE left({c}, 6) || '********' || right({c}, 4) END",
    "mobile": "CASE WHEN {c} IS NULL THEN NULL ELSE '*******' || right({c}, 4) END",
    "phone": "CASE WHEN {c} IS NULL THEN NULL ELSE '*******' || right({c}, 4) END",
    "text": "CASE WHEN {c} IS NULL THEN NULL ELSE '***' END",
    "null": "CAST(NULL AS {t})",
}
"""Masking rule -> the DuckDB expression that replaces the column in a policy relation."""

# Table arguments a policy relation carries: the alias (with its column list), pivots and samples stay on
# the relation; time travel moves inside it (the scan reads that snapshot). Any other clause on a table
# (index hints, partitions, CHANGES, ...) is refused: deny by default, whatever sqlglot learns next.
_OUTER_ARGS = ("alias", "pivots", "sample", "joins", "laterals")
_INNER_ARGS = ("when", "version")
_TABLE_ARGS = frozenset(("this", "db", "catalog", *_OUTER_ARGS, *_INNER_ARGS))


@dataclass(frozen=True)
class Match:
    """One ``match_value(column, 'value')`` of a query: what the quota is charged for."""

    dataset: str
    column: str
    value: str


@dataclass(frozen=True)
class Plan:
    sql_run: str
    tables: tuple[str, ...]
    columns: tuple[str, ...] = ()
    """``dataset.column`` of every column the policy relations read exposed."""
    masked: tuple[str, ...] = ()
    """``dataset.column`` of the masked ones among them."""
    filtered: tuple[str, ...] = field(default_factory=tuple)
    """Datasets read through a row filter."""
    matches: tuple[Match, ...] = ()
    explain: bool = False
    """``sql_run`` is ``EXPLAIN (FORMAT JSON) <the governed query>``: answer its plan (``explained``), never
    run it."""
    sql_lake: str | None = None
    """``sql_run`` with each file scan (sharing.filescan) written back as the DuckLake table it reads, the same
    relations otherwise: the replayable form the audit keeps (sharing.security.replay). None: ``sql_run``
    reads the tables already."""


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(reason)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def safe_text(root: exp.Expression, *, user_types: bool = False) -> None:
    """Nodes that sqlglot writes back as bare text must be bare words: a quoted identifier or a string that
    becomes an ``exp.Var`` (EXTRACT's unit, date_part's in postgres, a type parameter) would otherwise turn
    into SQL in the rewritten query, after every check ran on the tree. ``user_types``: a type that is not
    built in is let through (the catalog sandbox, which has made each such type's name a plain word)."""
    for node in root.walk():
        if isinstance(node, exp.Var) and not _WORD.fullmatch(node.name):
            raise _refuse(f"{node.name!r} is not allowed here: units and type parameters are plain words")
        if isinstance(node, exp.Operator):
            raise _refuse("OPERATOR(...) is not allowed in governed queries; write the operator itself")
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.USERDEFINED and not user_types:
            raise _refuse(f"type {node.sql()} is not a built-in type")
        if isinstance(node, exp.DataTypeParam) and not isinstance(node.this, exp.Literal | exp.DataType):
            raise _refuse(f"type parameter {node.sql()} is not a number")


STATEMENT_WORDS = frozenset("""
    ABORT ALTER ANALYZE ATTACH BEGIN CALL CHECKPOINT CLOSE CLUSTER COMMENT COMMIT COPY CREATE DEALLOCATE DECLARE DELETE
    DESCRIBE DETACH DISCARD DO DROP END EXECUTE EXPLAIN EXPORT FETCH FORCE GRANT IMPORT INSERT INSTALL LISTEN LOAD LOCK
    MERGE MOVE NOTIFY PRAGMA PREPARE REFRESH REINDEX RESET REVOKE ROLLBACK SAVEPOINT SET SHOW START SUMMARIZE
    TRUNCATE UNLISTEN UPDATE USE VACUUM""".split())
"""Words that begin a statement of DuckDB or PostgreSQL other than a query: SQL starting with one is refused as a
statement that is not a SELECT, not called unparsable, even where sqlglot reads it as an expression."""


def one_select(sql: str, dialect: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        raise InvalidSQL.of(exc, dialect=dialect) from exc
    if not statements:
        raise InvalidSQL("the query is empty: send one SELECT")
    if len(statements) != 1:
        raise _refuse(f"one statement at a time: {len(statements)} statements were sent")
    stmt = statements[0]
    word = (sql.strip().split() or ["?"])[0]
    # "A", "1+1", "a b" (an aliased expression), "(1, 2)": an expression is no statement at all; but sqlglot reads
    # DuckDB's own statements it does not know ("INSTALL httpfs") as an aliased word too, and those are refused
    if isinstance(stmt, exp.Condition | exp.Star) or (
            isinstance(stmt, exp.Alias | exp.Tuple) and word.upper().strip("(;") not in STATEMENT_WORDS):
        raise InvalidSQL(f'the query cannot be parsed as {dialect} SQL: no statement starts at or near '
                         f'"{word[:40]}" (a query begins with SELECT, WITH, VALUES or TABLE); correct the SQL there '
                         "and send it again")
    if not isinstance(stmt, exp.Query):
        kind = (sql.strip().split() or ["?"])[0].upper()
        raise _refuse(f"only SELECT queries are allowed; {kind} was refused")
    return stmt


def _function_name(f: exp.Func) -> str:
    return str(f.this).lower() if isinstance(f, exp.Anonymous) else f.sql_name().lower()


def safe_functions(root: exp.Expression, allowed: frozenset[str] = ALLOWED_FUNCTIONS) -> None:
    for f in root.find_all(exp.Func):
        if isinstance(f, exp.Connector):
            continue  # AND / OR / XOR: sqlglot models them as functions too
        name = _function_name(f)
        if name not in allowed and f.key.lower() not in allowed:
            raise _refuse(f"function {name}() is not allowed in governed queries")


def no_reserved_names(root: exp.Expression) -> None:
    for ident in root.find_all(exp.Identifier):
        if str(ident.this).lower().startswith(RESERVED):
            raise _refuse(f"names starting with {RESERVED} are reserved for the platform ({ident.this})")


def _cte_names(root: exp.Expression) -> set[str]:
    return {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}


def resolve_tables(root: exp.Query, access: dict[str, Access], department: str) -> list[exp.Table]:
    """The dataset references of the query, each checked; CTE references renamed to reserved names.

    A bare name is a CTE when the query defines a CTE of that name anywhere, and a shared dataset
    otherwise (the search path is ``shared``). Every CTE definition and every bare reference to its name
    is renamed alike (``__os_cte_<name>``): scoping between them is unchanged, and should DuckDB disagree
    with the query's author about which CTE is in scope, the reserved name exists in no catalog and the
    query fails instead of reading a catalog table of the CTE's name."""
    ctes = _cte_names(root)
    datasets = []
    for t in list(root.find_all(exp.Table)):
        if not isinstance(t.this, exp.Identifier):  # a call, or none at all (ROWS FROM (f(...), ...))
            raise _refuse(f"table functions are not allowed ({(t.this or t).sql()}); query shared tables by name")
        name = t.name
        if t.catalog or (t.db and t.db.lower() != SCHEMA) or "/" in name or "." in name:
            raise _refuse(f"{t.sql()} is not a shared table; shared tables are named {SCHEMA}.<dataset>")
        if not t.db and name.lower() in ctes:
            if set(k for k, v in t.args.items() if v) - {"this", "alias", "pivots", "sample", "joins", "laterals"}:
                raise _refuse(f"{t.sql()}: only shared tables take time travel or other table clauses")
            if not t.alias:
                t.set("alias", exp.TableAlias(this=exp.to_identifier(name, quoted=True)))
            t.set("this", exp.to_identifier(f"{RESERVED}cte_{name.lower()}", quoted=True))
            continue
        name = name.lower()
        if name not in access:
            raise _refuse(f"table {SCHEMA}.{name} does not exist or is not granted to {department}; "
                          "request access to it (onesource requests create)")
        if access[name].problem:
            raise _refuse(f"{SCHEMA}.{name}: {access[name].problem}")
        t.set("this", exp.to_identifier(name))
        extra = set(k for k, v in t.args.items() if v) - _TABLE_ARGS
        if extra:
            raise _refuse(f"{t.sql()}: the table clause {', '.join(sorted(extra))} is not allowed in governed queries")
        datasets.append(t)
    for cte in root.find_all(exp.CTE):
        alias = cte.args["alias"]
        alias.set("this", exp.to_identifier(f"{RESERVED}cte_{cte.alias_or_name.lower()}", quoted=True))
    return datasets


def _masked_expression(rule: str, column: str, duck_type: str) -> exp.Expression:
    col = exp.column(column, quoted=True).sql(dialect="duckdb")
    return sqlglot.parse_one(MASKS[rule].format(c=col, t=duck_type), read="duckdb")


def relation(ds: Dataset, acc: Access, *, when: exp.Expression | None = None,
             version: exp.Expression | None = None, matches: dict[str, list[tuple[str, str]]] | None = None,
             row_filters: tuple[str, ...] = (), files: tuple[str, ...] | None = None) -> exp.Select:
    """The department's view of one dataset: granted columns, masks applied, row filter applied. ``files``:
    the table's Parquet files, read directly (sharing.filescan) instead of through DuckLake."""
    def either(filters: tuple[str, ...]) -> exp.Expression | None:
        return exp.or_(*(exp.paren(sqlglot.parse_one(f, read="duckdb")) for f in filters)) if filters else None

    cond = either(row_filters)

    def guarded(value: exp.Expression, column: str) -> exp.Expression:
        # A security barrier: should the optimizer ever evaluate a query's predicate on a row before the row
        # filter (pushdown, reordering), the predicate meets NULLs there, so no error or timing can reveal it.
        # A column that only some of the department's grants give is guarded by those grants' filters.
        own = either(acc.column_filters[column]) if column in acc.column_filters else cond
        return exp.Case(ifs=[exp.If(this=own.copy(), true=value)]) if own is not None else value

    projections: list[exp.Expression] = []
    for name in acc.columns:
        rule = acc.masked.get(name)
        value = _masked_expression(rule, name, ds.column(name).duck_type) if rule else exp.column(name, quoted=True)
        projections.append(exp.alias_(guarded(value, name), name, quoted=True))
    for column, pairs in (matches or {}).items():
        for alias, literal in pairs:  # match columns: whether the raw value equals the supplied one, nothing else
            equal = exp.EQ(this=exp.column(column, quoted=True), expression=exp.Literal.string(literal))
            projections.append(exp.alias_(guarded(equal, column), alias, quoted=True))
    # Every column of the relation is qualified with the scan's own alias: a name the scan lacks (a snapshot
    # read with time travel from before the column was added, a registry ahead of the data) is then an
    # error, never a correlated reference to a column of the department's query of the same name (DuckDB
    # binds an unknown name to an outer or lateral column, so ``(SELECT 'A' AS district) o, t AT (...)``
    # would decide the row filter ``district = 'A'`` itself).
    for part in [*projections, *([cond] if cond is not None else [])]:
        for col in part.find_all(exp.Column):
            col.set("table", exp.to_identifier(SCAN, quoted=True))
    scan = _file_scan(files) if files is not None and when is None and version is None else _lake_scan(ds.name)
    if when is not None:
        scan.set("when", when)
    if version is not None:
        scan.set("version", version)
    select = exp.select(*projections).from_(scan)
    if cond is not None:
        select = select.where(cond)
    return select


def _file_scan(files: tuple[str, ...]) -> exp.Table:
    return exp.Table(this=exp.ReadParquet(expressions=[exp.Array(expressions=[exp.Literal.string(f) for f in files])]),
                     alias=exp.TableAlias(this=exp.to_identifier(SCAN, quoted=True)))


def _lake_scan(dataset: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(dataset, quoted=True), db=exp.to_identifier(SCHEMA, quoted=True),
                     catalog=exp.to_identifier(CATALOG, quoted=True),
                     alias=exp.TableAlias(this=exp.to_identifier(SCAN, quoted=True)))


def lake_scan_sql(dataset: str) -> str:
    """A policy relation's DuckLake scan of ``dataset`` as the planner writes it in DuckDB's SQL (the audited
    ``sql_lake`` holds it: sharing/security/replay.py finds the datasets a query read by it)."""
    return _lake_scan(dataset).sql(dialect="duckdb")


def lake_form(sql_run: str, scans: dict[str, tuple[str, ...]]) -> str | None:
    """``sql_run`` with each dataset's file scan, exactly as the planner wrote it, replaced by its DuckLake table
    (a string substitution: 0.14 ms of CPU with one file, 0.7 ms with 100, once per plan, against 8 to 17 ms
    of planning; plans are cached). None when no table is read from its files."""
    if not scans:
        return None
    for name, files in scans.items():
        sql_run = sql_run.replace(_file_scan(files).sql(dialect="duckdb"), lake_scan_sql(name))
    return sql_run


def _matches(root: exp.Query, tables: list[exp.Table], access: dict[str, Access]) -> dict[str, dict[str, list]]:
    """Rewrites every ``match_value(col, 'value')`` into a reference to a boolean column of the relations whose
    grant allows matching ``col``; returns dataset -> column -> [(match column, value)]."""
    found: dict[str, dict[str, list[tuple[str, str]]]] = {}
    referenced = {t.name for t in tables}
    calls = [f for f in root.find_all(exp.Anonymous) if str(f.this).lower() == "match_value"]
    for n, call in enumerate(calls):
        args = call.expressions
        if len(args) != 2 or not isinstance(args[0], exp.Column) or not (
                isinstance(args[1], exp.Literal) and args[1].is_string):
            raise _refuse("match_value() takes a column and a string literal: match_value(resident_id, '430102...')")
        column, value = args[0].name, args[1].this
        alias = f"{RESERVED}match_{n}"
        hosts = [d for d in sorted(referenced) if column in access[d].columns]
        if not hosts:
            raise _refuse(f"match_value({column}, ...): no table of the query has a column {column} granted to you")
        for d in hosts:
            acc = access[d]
            if column in acc.masked and column not in acc.match:
                raise _refuse(f"column {d}.{column} is masked and your grant does not allow matching it; "
                              "the owner can grant match on it (onesource grants add --match)")
            found.setdefault(d, {}).setdefault(column, []).append((alias, value))
        call.replace(exp.Column(this=exp.to_identifier(alias, quoted=True),
                                table=args[0].args.get("table")))
    return found


def plan(sql: str, access: dict[str, Access], registry: Registry, department: str, *, dialect: str = "postgres",
         user: str | None = None, row_limit: int | None = None,
         files: Callable[[str], tuple[str, ...] | None] | None = None) -> Plan:
    """The governed query for ``sql``; ``user``: who asks (``current_user``; the department by default);
    ``row_limit``: a LIMIT on the answer (None: every row; the engine bounds results as it fetches them);
    ``files``: a dataset's Parquet files to scan directly, when they are the whole table (sharing.filescan)."""
    target = explained_query(sql, dialect)
    if target is not None:  # a plan shows the table, not the server's file paths
        inner = plan(target, access, registry, department, dialect=dialect, user=user)
        if inner.explain:
            raise _refuse("EXPLAIN takes a query, not another EXPLAIN")
        return replace(inner, sql_run=f"EXPLAIN (FORMAT JSON) {inner.sql_run}", explain=True)
    root = one_select(sql, dialect)
    no_reserved_names(root)
    name_outputs(root, Namer(sql, dialect, root))  # first: names are read from the text as written
    session_values(root, user or department)
    tables = resolve_tables(root, access, department)
    safe_functions(root)
    safe_text(root)
    matches = _matches(root, tables, access)
    for col in root.find_all(exp.Column):  # shared.x.col: the relation is named x
        if col.args.get("db") is not None and col.db.lower() == SCHEMA:
            col.set("db", None)
            col.set("catalog", None)
    columns, masked, filtered, charged = set(), set(), set(), []
    scans: dict[str, tuple[str, ...]] = {}
    for t in tables:
        ds, acc = registry.dataset(t.name), access[t.name]
        direct = files(t.name) if files is not None and not (t.args.get("when") or t.args.get("version")) else None
        if direct is not None:
            scans[t.name] = direct
        rel = relation(ds, acc, when=t.args.get("when"), version=t.args.get("version"),
                       matches=matches.get(t.name), row_filters=acc.row_filters, files=direct)
        alias = t.args.get("alias") or exp.TableAlias(this=exp.to_identifier(t.name, quoted=True))
        sub = exp.Subquery(this=rel, alias=alias)
        for arg in ("pivots", "sample", "joins", "laterals"):
            if t.args.get(arg):
                sub.set(arg, t.args[arg])
        t.replace(sub)
        columns |= {f"{t.name}.{c}" for c in acc.columns}
        masked |= {f"{t.name}.{c}" for c in acc.masked}
        if acc.row_filters:
            filtered.add(t.name)
    for d, by_column in matches.items():
        for column, pairs in by_column.items():
            if column in access[d].masked:
                charged += [Match(d, column, value) for _, value in pairs]
    sql_run = _limited(root, row_limit)
    read = {t.name for t in tables}
    verify(sql_run, read, scans)
    return Plan(sql_run, tuple(sorted(read)), tuple(sorted(columns)), tuple(sorted(masked)),
                tuple(sorted(filtered)), tuple(dict.fromkeys(charged)), sql_lake=lake_form(sql_run, scans))


def _limited(root: exp.Query, row_limit: int | None) -> str:
    """The query as DuckDB runs it. Not wrapped in ``SELECT * FROM (...)``: DuckDB renames repeated names
    there (``a``, ``a_1``), where PostgreSQL (and DuckDB at the top level) answers ``a``, ``a``."""
    if row_limit is None:
        return root.sql(dialect="duckdb", comments=False)
    limit = root.args.get("limit")
    if limit is None or (isinstance(limit, exp.Limit) and isinstance(limit.expression, exp.Literal)
                         and limit.expression.is_int):  # else FETCH FIRST, LIMIT <expression>, ...
        cap = min(int(row_limit), int(limit.expression.this)) if limit is not None else int(row_limit)
        return root.limit(cap, copy=False).sql(dialect="duckdb", comments=False)
    return f"SELECT * FROM ({root.sql(dialect='duckdb', comments=False)}) AS governed LIMIT {int(row_limit)}"


_USER_WORDS = frozenset(("user", "current_user", "session_user", "current_role"))
"""Written without parentheses, PostgreSQL's SQL value functions, parsed by sqlglot as a column when it
does not know them (``user``); a quoted name (``"user"``) stays a column."""


def session_values(root: exp.Expression, user: str) -> None:
    """The session's values as literals: ``current_user`` is the signed-in user (DuckDB would say
    ``duckdb``), ``current_database()`` and ``current_catalog`` are ``onesource``, ``current_schema`` is
    ``shared`` (the search path), ``version()`` the server's version string (sharing.visible_catalog)."""
    def value(node: exp.Expression) -> str | None:
        if isinstance(node, exp.CurrentUser | exp.SessionUser):
            return user
        if isinstance(node, exp.CurrentCatalog | exp.CurrentDatabase):
            return DATABASE
        if isinstance(node, exp.CurrentSchema):
            return SCHEMA
        if isinstance(node, exp.CurrentVersion):
            from sharing.visible_catalog import VERSION

            return VERSION
        if isinstance(node, exp.Column) and not node.table and not node.this.quoted:
            word = node.name.lower()
            if word in _USER_WORDS:
                return user
            if word == "current_catalog":
                return DATABASE
            if word == "current_schema":
                return SCHEMA
        return None

    for node in list(root.walk()):
        literal = value(node)
        if literal is None:
            continue
        if isinstance(node, exp.Column) and isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
            # an output column PostgreSQL names after the word (``SELECT user``), left unaliased as a column
            node.replace(exp.alias_(exp.Literal.string(literal), exp.to_identifier(node.name.lower(), quoted=True)))
        else:
            node.replace(exp.Literal.string(literal))


_EXPLAIN_OPTIONS = frozenset(("verbose", "costs", "settings", "buffers", "wal", "timing", "summary", "memory",
                              "format", "generic_plan", "serialize"))
_NO = frozenset(("false", "off", "0", "no"))


def explained_query(sql: str, dialect: str) -> str | None:
    """The query of ``EXPLAIN [VERBOSE | (option, ...)] <query>``, or None when ``sql`` is no EXPLAIN.

    Only the plan is answered: ``ANALYZE`` runs the query (its timings and row counts are the answer's
    side channel, and it costs what the query costs), so it is refused; the options that shape
    PostgreSQL's output are accepted and the plan is DuckDB's, as text."""
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError:
        return None  # one_select refuses it with the parser's reason
    if not tokens or tokens[0].text.upper() != "EXPLAIN":
        return None
    sql = sql[tokens[0].end + 1:]  # sqlglot keeps a COMMAND's arguments as one string: tokenized anew
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError:
        return sql
    i = 0
    if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        options: list[list[str]] = [[]]
        i += 1
        while i < len(tokens) and tokens[i].token_type != TokenType.R_PAREN:
            if tokens[i].token_type == TokenType.COMMA:
                options.append([])
            else:
                options[-1].append(tokens[i].text.lower())
            i += 1
        i += 1
        for words in options:
            if words and words[0] in ("analyze", "analyse") and words[1:2] and words[1] in _NO:
                continue
            if not words or words[0] not in _EXPLAIN_OPTIONS or (words[0] == "format" and words[1:] != ["text"]):
                raise _refuse(_explain_refusal(" ".join(words)))
    while i < len(tokens) and tokens[i].text.upper() == "VERBOSE":
        i += 1
    if i < len(tokens) and tokens[i].text.upper() in ("ANALYZE", "ANALYSE"):
        raise _refuse(_explain_refusal("ANALYZE"))
    if i >= len(tokens):
        raise _refuse("EXPLAIN takes a query: EXPLAIN SELECT ...")
    return sql[tokens[i].start:]


def _explain_refusal(option: str) -> str:
    if option.split()[:1] in (["analyze"], ["analyse"], ["ANALYZE"]):
        return ("EXPLAIN ANALYZE runs the query; only the plan is answered here (EXPLAIN <query>), "
                "and running the query itself shows what it costs")
    return f"EXPLAIN option {option!r} is not supported; EXPLAIN <query> answers the plan as text"


_COMPRESSED = re.compile(r"(__internal_(?:de)?compress_[a-z_]+)\(([^,()]+),[^()]*\)")
_HIDDEN_DETAILS = frozenset(("Estimated Cardinality",))


def explained(rows: list[tuple]) -> tuple[list[str], list[tuple[str]]]:
    """DuckDB's plan (``EXPLAIN (FORMAT JSON)``: operators with their details) as PostgreSQL shows one: a
    column ``QUERY PLAN``, an operator per line with its details below it and its inputs as ``->`` lines.

    What DuckDB derives from the table's statistics is left out, since under a row filter it would describe
    rows outside the department's: the estimated row counts, and the minimum DuckDB's compression of
    integers subtracts (``__internal_compress_integral_utinyint(#1, 0)``). The operators, the department's own
    relation (its masks and row filter) and the query's own filters stay."""
    lines: list[str] = []
    for _, text in rows:
        for node in json.loads(text):
            _explain_lines(node, 0, lines)
    return ["QUERY PLAN"], [(line,) for line in lines]


def _explain_lines(node: dict, depth: int, lines: list[str]) -> None:
    pad = " " * (6 * depth)
    lines.append(f"{pad}{'->  ' if depth else ''}{node.get('name', '?')}")
    for key, value in (node.get("extra_info") or {}).items():
        if key in _HIDDEN_DETAILS:
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        text = _COMPRESSED.sub(r"\1(\2)", " ".join(text.split()))
        lines.append(f"{pad}{'    ' if depth else '  '}{key}: {text}")
    for child in node.get("children") or ():
        _explain_lines(child, depth + 1, lines)


_PARSER_LOCK = threading.Lock()
_PARSER: list[duckdb.DuckDBPyConnection] = []


def duckdb_tree(sql: str) -> dict:
    """DuckDB's own parse of ``sql`` (no binding, no catalog, no data): a private in-memory connection."""
    with _PARSER_LOCK:
        if not _PARSER:
            con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                         "enable_external_access": False})
            _PARSER.append(con)
        return json.loads(_PARSER[0].execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])


def tree_objects(node):
    """Every JSON object in DuckDB's parse tree, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from tree_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from tree_objects(value)


_DENIED_AT_DUCKDB = re.compile(r"(read_|glob|getenv|current_setting|getvariable|query|duckdb_|pg_|sqlite_|parquet_|"
                               r"iceberg_|delta_|ducklake_|json_serialize|json_deserialize|which_secret|"
                               r"current_query|error$)", re.I)
"""Function names DuckDB must never see in a governed query, whatever the allowlist above let through."""


def verify(sql_run: str, datasets: set[str], scans: dict[str, tuple[str, ...]] | None = None) -> None:
    """Refuse unless the SQL about to run is what the planner built (deny by default, at the text).
    ``scans``: the file lists (sharing.filescan) the planner put in place of those datasets' tables; a
    ``read_parquet`` is admitted only with one of them, exactly, and nothing else in its call."""
    unsafe = _refuse("the query could not be rewritten safely (a construct the planner does not support); "
                     "simplify it or name the columns and tables plainly")
    lists = {tuple(files) for name, files in (scans or {}).items() if name in datasets}
    try:
        again = sqlglot.parse_one(sql_run, read="duckdb")
        for table in list(again.find_all(exp.Table)):
            if isinstance(table.this, exp.Func):
                if _scanned_files(table.this) not in lists:
                    raise unsafe
                table.set("this", exp.to_identifier(SCAN))  # checked: the rest is checked without it
        safe_functions(again)
        safe_text(again)
    except (ParseError, TokenError, QueryRefused) as exc:
        raise unsafe from exc
    tree = duckdb_tree(sql_run)
    if tree.get("error"):
        raise _refuse(f"DuckDB cannot parse the rewritten query: {tree.get('error_message', '')}")
    admitted: set[int] = set()
    for ref in tree_objects(tree):
        if ref.get("type") == "TABLE_FUNCTION" and _duckdb_scan(ref) in lists:
            admitted |= {id(o) for o in tree_objects(ref["function"])}
    objects = [o for o in tree_objects(tree) if id(o) not in admitted]
    if any(o.get("class") == "FUNCTION" and _DENIED_AT_DUCKDB.match(str(o.get("function_name", ""))) for o in objects):
        raise unsafe
    for ref in (o for o in objects if o.get("type") in ("BASE_TABLE", "TABLE_FUNCTION")):
        if ref["type"] == "TABLE_FUNCTION":
            if id(ref["function"]) in admitted:
                continue
            if (ref.get("function") or {}).get("function_name", "").lower() != "unnest":
                raise unsafe
            continue
        where = (ref.get("catalog_name", ""), ref.get("schema_name", ""), ref.get("table_name", ""))
        if where[:2] == (CATALOG, SCHEMA) and where[2] in datasets:
            continue
        if where[:2] == ("", "") and where[2].startswith(f"{RESERVED}cte_"):
            continue
        raise unsafe


def _scanned_files(call: exp.Func) -> tuple[str, ...] | None:
    """The files of ``read_parquet(['a', 'b'])`` as sqlglot reads it; None for any other call or form."""
    if not isinstance(call, exp.ReadParquet) or len(call.expressions) != 1 or call.this is not None:
        return None
    [arg] = call.expressions
    if not isinstance(arg, exp.Array) or not all(isinstance(e, exp.Literal) and e.is_string for e in arg.expressions):
        return None
    return tuple(e.this for e in arg.expressions)


def _duckdb_scan(ref: dict) -> tuple[str, ...] | None:
    """The files of a ``read_parquet(['a', 'b'])`` table function in DuckDB's parse tree; None for any other
    call, an argument that is not a list of string constants, a named option, a column alias or a sample."""
    call = ref.get("function") or {}
    if (call.get("class") != "FUNCTION" or call.get("function_name") != "read_parquet" or call.get("schema")
            or call.get("catalog") or call.get("filter") or call.get("distinct") or call.get("is_operator")
            or (call.get("order_bys") or {}).get("orders") or ref.get("column_name_alias") or ref.get("sample")
            or len(call.get("children") or []) != 1):
        return None
    [arg] = call["children"]
    if (arg.get("class") != "FUNCTION" or arg.get("function_name") != "list_value" or arg.get("alias")
            or arg.get("schema") not in ("", "main") or arg.get("catalog") or arg.get("filter")):
        return None
    values = []
    for child in arg.get("children") or []:
        value = child.get("value") or {}
        if (child.get("class") != "CONSTANT" or child.get("alias") or value.get("is_null")
                or (value.get("type") or {}).get("id") != "VARCHAR"):
            return None
        values.append(value.get("value"))
    return tuple(values)


def normalise_row_filter(text: str, ds: Dataset) -> str:
    """A row filter as a governed expression: one condition on ``ds``'s own columns, allowlisted functions,
    no subqueries, no other tables, no aggregates; returned in its normal (DuckDB) form, quoted.

    >>> normalise_row_filter("division_code = '430102'", ds)
    '"division_code" = \\'430102\\''
    """
    try:
        tree = sqlglot.parse_one(text, read="duckdb", into=exp.Condition)
    except (ParseError, TokenError) as exc:
        raise InvalidSQL.of(exc, f"the row filter {text!r}", "duckdb",
                            f"write one condition on the columns of {ds.name}, e.g. {ds.columns[0].name} = 'value'") from exc
    if tree is None:
        raise _refuse("the row filter is empty")
    for node in tree.walk():
        if isinstance(node, exp.Query | exp.Subquery | exp.Table | exp.Star | exp.Placeholder | exp.Parameter
                      | exp.Window | exp.AggFunc | exp.Lambda | exp.Dot):
            raise _refuse(f"the row filter {text!r} may only compare this dataset's columns with values "
                          f"({node.key} is not allowed)")
    try:
        safe_functions(tree, ROW_FILTER_FUNCTIONS)
    except QueryRefused as exc:
        raise _refuse(f"the row filter {text!r}: {exc}") from exc
    names = {c.name for c in ds.columns}
    for col in tree.find_all(exp.Column):
        if col.table and col.table.lower() != ds.name:
            raise _refuse(f"the row filter names {col.sql()}: it may only use {ds.name}'s own columns")
        if col.name.lower() not in names:
            raise _refuse(f"the row filter names {col.name!r}, which {ds.name} does not have "
                          f"(its columns: {', '.join(sorted(names))})")
        col.set("this", exp.to_identifier(col.name.lower()))
        col.set("table", None)
    no_reserved_names(tree)
    for ident in tree.find_all(exp.Identifier):
        ident.set("quoted", True)
    return tree.sql(dialect="duckdb")
