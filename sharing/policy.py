"""The governed query planner: from a department's SQL to the SQL that may run, or a refusal.

Rules run in order (sqlglot does the parsing; nothing is matched by regular expression):

1. ``one_select``      exactly one statement, and it is a query (no ATTACH, COPY, SET, PRAGMA, ...)
2. ``known_tables``    every table is ``shared.<dataset>`` the department may read (no table functions,
                       no file paths, no other catalog or schema)
3. ``safe_functions``  every function is on the allowlist (no read_*, glob, getenv, duckdb_* ...)
4. ``qualify``         columns are resolved against the department's own schema: only its visible
                       columns exist, so ``*`` expands to them and any other column is unknown
5. ``masked_only_shown`` a masked column may only be shown, never filtered, joined, grouped, ordered
                       or computed on (each would leak the value)
6. rewrites: row filters become subqueries, masked projections become masks, a row limit caps it.

The locked-down DuckDB connection (sharing.engine) is the second line: a mistake here still meets
no file access, no extensions and a read-only lake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.qualify import qualify

from schemas.model import Registry
from sharing.exceptions import QueryRefused
from sharing.grants import Access

SCHEMA = "shared"
CATALOG = "lake"

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
""".split())

MASKS = {
    "resident_id": "CASE WHEN {c} IS NULL THEN NULL ELSE left({c}, 6) || '********' || right({c}, 4) END",
    "mobile": "CASE WHEN {c} IS NULL THEN NULL ELSE '*******' || right({c}, 4) END",
    "phone": "CASE WHEN {c} IS NULL THEN NULL ELSE '*******' || right({c}, 4) END",
    "text": "CASE WHEN {c} IS NULL THEN NULL ELSE '***' END",
    "null": "NULL",
}


@dataclass(frozen=True)
class Plan:
    sql_run: str
    tables: tuple[str, ...]
    columns: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    filtered: tuple[str, ...] = field(default_factory=tuple)


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(reason)


def one_select(sql: str, dialect: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, sqlglot.errors.TokenError) as exc:
        raise _refuse(f"the query cannot be parsed as {dialect} SQL: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise _refuse(f"one statement at a time: {len(statements)} statements were sent")
    stmt = statements[0]
    if not isinstance(stmt, exp.Query):
        kind = (sql.strip().split() or ["?"])[0].upper()
        raise _refuse(f"only SELECT queries are allowed; {kind} was refused")
    return stmt


def known_tables(root: exp.Query, access: dict[str, Access], department: str) -> list[str]:
    ctes = {c.alias_or_name for c in root.find_all(exp.CTE)}
    tables = []
    for t in root.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier):
            raise _refuse(f"table functions are not allowed ({t.this.sql()}); query shared tables by name")
        if not t.db and t.name in ctes:
            continue
        if t.catalog or (t.db and t.db != SCHEMA) or "/" in t.name or "." in t.name:
            raise _refuse(f"{t.sql()} is not a shared table; shared tables are named {SCHEMA}.<dataset>")
        if t.name not in access:
            raise _refuse(f"table {SCHEMA}.{t.name} does not exist or is not granted to {department}; "
                          "request access to it (onesource requests create)")
        tables.append(t.name)
    if not tables:
        raise _refuse("the query reads no shared table")
    return sorted(set(tables))


def safe_functions(root: exp.Query) -> None:
    for f in root.find_all(exp.Func):
        if isinstance(f, exp.Connector):
            continue  # AND / OR / XOR: sqlglot models them as functions too
        if isinstance(f, exp.Anonymous):
            name = str(f.this).lower()
        else:
            name = f.sql_name().lower()
        if name not in ALLOWED_FUNCTIONS and f.key.lower() not in ALLOWED_FUNCTIONS:
            raise _refuse(f"function {name}() is not allowed in governed queries")


def department_schema(access: dict[str, Access], registry: Registry) -> dict:
    schema: dict[str, dict[str, str]] = {}
    for name, acc in access.items():
        ds = registry.dataset(name)
        schema[name] = {c: ds.column(c).duck_type for c in acc.columns}
    return {SCHEMA: schema}


def _aliases(root: exp.Expression) -> dict[str, str]:
    return {t.alias_or_name: t.name for t in root.find_all(exp.Table)}


def masked_only_shown(root: exp.Query, access: dict[str, Access]) -> list[exp.Column]:
    """The masked columns in the outermost projection; refuses any other use of a masked column."""
    aliases = _aliases(root)
    shown = []
    for col in root.find_all(exp.Column):
        dataset = aliases.get(col.table)
        if dataset is None or col.name not in access.get(dataset, Access(dataset or "", ())).masked:
            continue
        parent = col.parent
        in_projection = isinstance(root, exp.Select) and (
            (isinstance(parent, exp.Alias) and parent.parent is root and parent.arg_key == "expressions")
            or (parent is root and col.arg_key == "expressions"))
        if not in_projection:
            where = parent.key.upper() if parent is not None else "the query"
            raise _refuse(f"column {dataset}.{col.name} is masked for this department: it can be shown, but not "
                          f"used in {where} (filters, joins, grouping, ordering and functions would reveal it)")
        shown.append(col)
    return shown


def plan(sql: str, access: dict[str, Access], registry: Registry, department: str, *, dialect: str = "postgres",
         row_limit: int = 10_000) -> Plan:
    root = one_select(sql, dialect)
    tables = known_tables(root, access, department)
    safe_functions(root)
    try:
        root = qualify(root, schema=department_schema(access, registry), dialect=dialect,
                       validate_qualify_columns=True, quote_identifiers=True)
    except OptimizeError as exc:
        raise _refuse(f"{exc}: the column does not exist or is not granted to {department}") from exc
    shown = masked_only_shown(root, access)
    aliases = _aliases(root)
    columns = sorted({f"{aliases.get(c.table, c.table)}.{c.name}" for c in root.find_all(exp.Column)
                      if aliases.get(c.table) in access})
    masked = []
    for col in shown:
        dataset = aliases[col.table]
        rule = access[dataset].masked[col.name]
        col.replace(sqlglot.parse_one(MASKS[rule].format(c=col.sql(dialect="duckdb")), read="duckdb"))
        masked.append(f"{dataset}.{col.name}")
    filtered = []
    for t in list(root.find_all(exp.Table)):
        acc = access.get(t.name)
        if acc is None or t.db != SCHEMA:
            continue
        # Catalog-qualified, so the query means the lake on any cursor, whatever its default catalog.
        t.set("catalog", exp.to_identifier(CATALOG, quoted=True))
        if not acc.row_filters:
            continue
        cond = " OR ".join(f"({f})" for f in acc.row_filters)
        sub = sqlglot.parse_one(f'(SELECT * FROM "{CATALOG}"."{SCHEMA}"."{t.name}" WHERE {cond})', read="duckdb")
        t.replace(exp.Subquery(this=sub.this if isinstance(sub, exp.Subquery) else sub,
                               alias=exp.TableAlias(this=exp.to_identifier(t.alias_or_name, quoted=True))))
        filtered.append(t.name)
    body = root.sql(dialect="duckdb")
    return Plan(f"SELECT * FROM ({body}) AS governed LIMIT {int(row_limit)}", tuple(tables), tuple(columns),
                tuple(sorted(masked)), tuple(sorted(set(filtered))))
