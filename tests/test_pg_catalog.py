"""Fast tier: the Postgres catalog a department sees (sharing.visible_catalog, sharing.pgcatalog).

The questions are the ones real clients send (tests/clients/pg_catalog_queries.json: psql 15's meta-commands,
PgJDBC's DatabaseMetaData as DBeaver calls it, SQLAlchemy's inspector), answered in a department's sandbox.
Two oracles: a real PostgreSQL 15 holding the same tables with the same comments answers the same questions
(the catalog must say what PostgreSQL says), and for hypothesis-generated grants no name outside the grants
(a table, a column, a title, a department) appears anywhere in any answer.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas import load_registry
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import Access
from sharing.pgcatalog import FIRST_OID, VERSION
from sharing.visible_catalog import answer, is_catalog_query, sandbox
from tests.helpers import ELEMENTS, firms_dataset, write_registry
from tests.support.pg_catalog import TAXPAYERS

CORPUS = json.loads((Path(__file__).parent / "clients" / "pg_catalog_queries.json").read_text(encoding="utf-8"))
USER = "tax_analyst"
PG_DSN = os.environ.get("ONESOURCE_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two datasets with every column type, element titles and extract headers (Chinese or codes)."""
    elements = copy.deepcopy(ELEMENTS)
    elements["elements"].append({"name": "taxpayer_status", "name_zh": "纳税人状态", "name_en": "Taxpayer status",
                                 "type": "string", "authority": "taxpayers"})
    root = write_registry(tmp_path_factory.mktemp("registry"), [firms_dataset(), TAXPAYERS], elements=elements)
    return load_registry(root)


def access(registry, grants: dict[str, tuple[str, ...]]) -> dict[str, Access]:
    return {name: Access(name, tuple(c.name for c in registry.dataset(name).columns if c.name in columns))
            for name, columns in grants.items()}


def everything(registry) -> dict[str, tuple[str, ...]]:
    return {d.name: tuple(c.name for c in d.columns) for d in registry.datasets}


def fill(value, table: str, oid: int):
    """A corpus entry with {table} and {oid} standing for the table described."""
    if isinstance(value, list):
        return [fill(v, table, oid) for v in value]
    if value == "{oid:int}":
        return oid
    if isinstance(value, str):
        return value.replace("{table}", table).replace("{oid}", str(oid))
    return value


def ask(box, sql: str, params=None):
    return answer(box, sql, params, user=USER)


def describe(run, command: str, table: str) -> list[list[tuple]]:
    """psql's ``\\d[+] shared.<table>`` as psql runs it: look the table's oid up by name, then ask about it."""
    entries = CORPUS["psql"][command]
    lookup = run(fill(entries[0]["sql"], table, 0), None)
    if not lookup:
        return []
    oid = lookup[0][0]
    return [lookup] + [run(fill(e["sql"], table, oid), fill(e["params"], table, oid)) for e in entries[1:]]


def psql_columns(answers: list[list[tuple]]) -> list[tuple]:
    """The rows of \\d's column list (the question that reads pg_attribute with format_type)."""
    return next(a for a, e in zip(answers, CORPUS["psql"][r"\d+ shared.{table}"], strict=False)
                if "format_type" in e["sql"] and "attname" in e["sql"])


def test_psql_meta_commands_answer_as_postgresql_with_only_the_grants(registry):
    box = sandbox(access(registry, {"firms": everything(registry)["firms"],
                                    "taxpayers": ("taxpayer_id", "taxpayer_status")}), registry)

    def run(command: str):
        [entry] = CORPUS["psql"][command]
        return ask(box, entry["sql"], entry["params"]).rows

    assert run(r"\l") == [("onesource", "onesource", "UTF8", "C.UTF-8", "C.UTF-8", None, "libc", None)]
    assert [r[0] for r in run(r"\du")] == [USER]
    assert run(r"\dn") == [("shared", "onesource")]
    assert run(r"\dt") == [("shared", "firms", "table", "onesource"), ("shared", "taxpayers", "table", "onesource")]
    assert run(r"\d") == run(r"\dt")
    assert [(r[1], r[-1]) for r in run(r"\dt+")] == [("firms", "企业登记"), ("taxpayers", "纳税人登记")]
    assert run(r"\df") == []
    assert [r[1] for r in run(r"\dp")] == ["firms", "taxpayers"]

    def plain(sql, params):
        return ask(box, sql, params).rows

    columns = psql_columns(describe(plain, r"\d+ shared.{table}", "taxpayers"))
    # name, type, collation, not null, default, ..., description: the granted columns only, element titles
    assert [(c[0], c[1], c[-1]) for c in columns] == [("taxpayer_id", "character varying", None),
                                                    ("taxpayer_status", "character varying", "纳税人状态")]
    firms = psql_columns(describe(plain, r"\d+ shared.{table}", "firms"))
    assert [(c[0], c[1], c[-1]) for c in firms] == [
        ("uscc", "character varying", "统一社会信用代码"), ("enterprise_name", "character varying", "企业名称"),
        ("enterprise_status", "character varying", "登记状态"), ("capital", "numeric(18,2)", "注册资本"),
        ("staff", "bigint", "人数"), ("founded", "date", "成立日期")]
    assert describe(plain, r"\d shared.{table}", "nope") == []


def test_session_values_and_postgresql_output_names(registry):
    box = sandbox(access(registry, {"firms": ("uscc",)}), registry)
    got = ask(box, "SELECT current_user, session_user, user, current_database(), current_catalog, current_schema(), "
                   "current_schema, version(), pg_catalog.version(), count(*) FROM pg_catalog.pg_class")
    assert got.columns == ["current_user", "session_user", "user", "current_database", "current_catalog",
                           "current_schema", "current_schema", "version", "version", "count"]
    assert got.rows == [(USER, USER, USER, "onesource", "onesource", "shared", "shared", VERSION, VERSION, 1)]
    assert VERSION.startswith("PostgreSQL 15.") and "OneSource" in VERSION
    named = ask(box, "SELECT 1, 'a'::text, 1 + 1, CASE WHEN true THEN 1 END, c.relname, "
                     "(SELECT count(*) FROM pg_class) FROM pg_class c")
    assert named.columns == ["?column?", "text", "?column?", "case", "relname", "count"]
    # each user of a department sees their own name from the department's one sandbox
    assert answer(box, "SELECT current_user", user="tax_boss").rows == [("tax_boss",)]
    assert answer(box, "SELECT rolname FROM pg_roles", user="tax_boss").rows == [("tax_boss",)]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM duckdb_tables()",
    "SELECT name, value FROM pg_catalog.duckdb_settings()",
    "SELECT main.current_setting('home_directory')",
    "SELECT * FROM os_facts.tables",
    "SELECT * FROM main.anything",
    "SELECT * FROM memory.os_pg_catalog.pg_class",
    "SELECT * FROM information_schema.no_such_view",
    "SELECT * FROM shared.taxpayers",  # not granted
    "SELECT getvariable('onesource_user')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT getenv('HOME')",
    "SELECT * FROM pg_class; SELECT 1",
    "ATTACH '/tmp/x.db' AS x",
])
def test_a_catalog_question_reaches_the_department_catalog_and_nothing_else(registry, sql):
    box = sandbox(access(registry, {"firms": ("uscc",)}), registry)
    with pytest.raises((QueryFailed, QueryRefused)):
        ask(box, sql)


def test_duckdb_settings_and_schemas_are_not_the_answer(registry):
    box = sandbox(access(registry, {"firms": ("uscc",)}), registry)
    assert ask(box, "SELECT current_setting('temp_directory'), current_setting('home_directory')").rows == [
        (None, None)]
    assert ask(box, "SHOW search_path").rows == [("shared",)]
    assert sorted(r[0] for r in ask(box, "SELECT nspname FROM pg_namespace").rows) == [
        "information_schema", "pg_catalog", "shared"]
    assert ask(box, "SELECT table_schema, table_name FROM information_schema.tables").rows == [("shared", "firms")]


def test_what_goes_to_the_catalog_and_what_to_the_planner():
    assert is_catalog_query("SELECT table_name FROM information_schema.tables")
    assert is_catalog_query("SELECT relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^x$'")
    assert is_catalog_query("SELECT 1") and is_catalog_query("select current_catalog")
    assert is_catalog_query("SELECT s.r FROM generate_series(1, 3) AS s(r)")
    assert not is_catalog_query("SELECT * FROM shared.firms")
    assert not is_catalog_query("SELECT * FROM pg_class, shared.firms")
    assert not is_catalog_query("SELECT * FROM firms")
    assert not is_catalog_query("SELECT * FROM read_parquet('x')")
    assert not is_catalog_query("WITH pg_class AS (SELECT * FROM shared.firms) SELECT * FROM pg_class")


def test_rows_beyond_the_catalog_limit_are_refused(registry):
    box = sandbox(access(registry, everything(registry)), registry)
    with pytest.raises(QueryRefused, match="more than 3 rows"):
        answer(box, "SELECT * FROM pg_attribute", user=USER, max_rows=3)


# -- the grants decide every name of every answer -------------------------------------------------------------

def grants(registry) -> st.SearchStrategy[dict[str, tuple[str, ...]]]:
    per_dataset = {d.name: st.none() | st.sets(st.sampled_from([c.name for c in d.columns]), min_size=1)
                   .map(tuple) for d in registry.datasets}
    return st.fixed_dictionaries(per_dataset).map(lambda g: {k: v for k, v in g.items() if v is not None})


def questions(registry, granted: dict[str, tuple[str, ...]]):
    """Every corpus question, about every table of the registry (granted or not) and oids around them."""
    tables = sorted(d.name for d in registry.datasets)
    for command, entries in CORPUS["psql"].items():
        for i, table in enumerate(tables if "{table}" in command else tables[:1]):
            for entry in entries:
                yield fill(entry["sql"], table, FIRST_OID + i), fill(entry["params"], table, FIRST_OID + i)
    for client in ("jdbc", "sqlalchemy"):
        for entry in CORPUS[client]:
            for table in tables:
                yield fill(entry["sql"], table, FIRST_OID), fill(entry["params"], table, FIRST_OID)
    for relation in ("information_schema.tables", "information_schema.columns", "information_schema.schemata",
                     "information_schema.table_privileges", "information_schema.column_privileges",
                     "information_schema.enabled_roles", "pg_catalog.pg_class", "pg_catalog.pg_attribute",
                     "pg_catalog.pg_description", "pg_catalog.pg_roles", "pg_catalog.pg_database",
                     "pg_catalog.pg_namespace", "pg_catalog.pg_tables", "pg_catalog.pg_user", "pg_catalog.pg_authid"):
        yield f"SELECT * FROM {relation}", None
    yield "SELECT obj_description(oid, 'pg_class'), col_description(oid, 1) FROM generate_series(16390, 16420) g(oid)", None


def names(registry) -> dict[str, set[str]]:
    """Every name the registry could show: tables, titles, columns, column titles, departments."""
    found: dict[str, set[str]] = {}
    for d in registry.datasets:
        found.setdefault(d.name, set()).add(f"table {d.name}")
        found.setdefault(d.title, set()).add(f"table {d.name}")
        for c in d.columns:
            found.setdefault(c.name, set()).add(f"column {d.name}.{c.name}")
            title = c.source if not c.element else registry.element(c.element).name_zh
            if any(ord(ch) > 127 for ch in title):
                found.setdefault(title, set()).add(f"column {d.name}.{c.name}")
    for dept in registry.departments:
        found.setdefault(dept.code, set()).add("department")
        found.setdefault(dept.name, set()).add("department")
    return found


def cells(value):
    if isinstance(value, list | tuple):
        for v in value:
            yield from cells(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from cells(v)
    elif isinstance(value, str):
        yield value
        yield from (part for part in value.replace(",", " ").replace("=", " ").replace("/", " ").split())


QUICK = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture],
         "phases": [Phase.explicit, Phase.reuse, Phase.generate]}
"""Each example builds a sandbox and asks every client question (a second or two): no shrinking, which
would take minutes; a failure prints the grants it drew."""


@settings(max_examples=8, **QUICK)
@given(data=st.data())
def test_no_name_outside_the_grants_appears_in_any_catalog_answer(registry, data):
    granted = data.draw(grants(registry))
    box = sandbox(access(registry, granted), registry)
    allowed = {f"table {t}" for t in granted} | {f"column {t}.{c}" for t, cols in granted.items() for c in cols}
    known = names(registry)
    for sql, params in questions(registry, granted):
        try:
            result = ask(box, sql, params)
        except (QueryFailed, QueryRefused) as exc:
            pytest.fail(f"a client's catalog question failed: {exc}\n{sql[:300]}")
        for cell in cells(result.rows):
            owners = known.get(cell)
            if owners is not None:
                assert owners & allowed, f"{cell!r} ({owners}) is not granted but answered {sql[:200]!r}"
        if sql.startswith("SELECT * FROM information_schema.columns"):
            pairs = {(r[2], r[3]) for r in result.rows}
            assert pairs == {(t, c) for t, cols in granted.items() for c in cols}


# -- a real PostgreSQL 15 is the oracle ------------------------------------------------------------------------

PG_TYPES = {"VARCHAR": "character varying", "BIGINT": "bigint", "DECIMAL(18,2)": "numeric(18,2)",
            "DOUBLE": "double precision", "DATE": "date", "TIMESTAMP": "timestamp without time zone",
            "BOOLEAN": "boolean"}


@pytest.fixture(scope="module")
def postgres():
    """A database of its own on the test PostgreSQL, with a schema ``shared`` on the search path."""
    name = f"os_catalog_oracle_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{PG_DSN} dbname=postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the test PostgreSQL is not reachable ({PG_DSN}): {exc}")
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")
    con = psycopg.connect(f"{PG_DSN} dbname={name}", autocommit=True)
    yield con
    con.close()
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def mirror(con, registry, granted: dict[str, tuple[str, ...]]) -> None:
    """The department's tables in PostgreSQL, as the platform would create them, comments and all."""
    con.execute("DROP SCHEMA IF EXISTS shared CASCADE")
    con.execute("DROP SCHEMA IF EXISTS public CASCADE")
    con.execute("CREATE SCHEMA shared")
    con.execute("SET search_path = shared")
    for table, columns in sorted(granted.items()):
        ds = registry.dataset(table)
        cols = [ds.column(c) for c in (c.name for c in ds.columns) if c in columns]
        con.execute(f"CREATE TABLE shared.{table} ({', '.join(f'{c.name} {PG_TYPES[c.duck_type]}' for c in cols)})")
        con.execute(f"COMMENT ON TABLE shared.{table} IS '{ds.title}'")
        for c in cols:
            title = registry.element(c.element).name_zh if c.element else c.source
            if any(ord(ch) > 127 for ch in title):
                con.execute(f"COMMENT ON COLUMN shared.{table}.{c.name} IS '{title}'")


def normalised(rows, database: str) -> list[tuple]:
    """Answers as comparable values: PostgreSQL's database and owner names are the platform's here."""
    def one(v):
        if isinstance(v, str):
            return "onesource" if v in (database, "postgres") else v
        if isinstance(v, list | tuple):
            return [one(x) for x in v]
        return v
    return [tuple(one(v) for v in row) for row in rows]


ORACLE_PSQL = [r"\dt", r"\dt+", r"\d", r"\dn"]
"""psql's lists that PostgreSQL answers about the same tables (\\l and \\du list its own databases and
roles; \\dp its own privileges)."""


def positional(sql: str, params: list | None) -> tuple[str, list | None]:
    """A question with PostgreSQL's $n parameters as psycopg takes it (%s, in order of appearance)."""
    if not params:
        return sql, None
    order = [int(n) - 1 for n in re.findall(r"\$(\d+)", sql)]
    return re.sub(r"\$\d+", "%s", sql.replace("%", "%%")), [params[i] for i in order]


@settings(max_examples=4, **QUICK)
@given(data=st.data())
def test_postgresql_answers_the_same_questions_the_same_way(registry, postgres, data):
    granted = data.draw(grants(registry).filter(bool))
    mirror(postgres, registry, granted)
    database = postgres.info.dbname
    box = sandbox(access(registry, granted), registry)

    def ours(sql, params):
        return normalised(ask(box, sql, params).rows, database)

    def theirs(sql, params):
        with postgres.cursor() as cur:
            cur.execute(*positional(sql, params), prepare=False)
            return normalised(cur.fetchall(), database)

    for command in ORACLE_PSQL:
        [entry] = CORPUS["psql"][command]
        got, want = ours(entry["sql"], entry["params"]), theirs(entry["sql"], entry["params"])
        if command == r"\dt+":  # Size: the sandbox's stand-ins hold no rows, so it shows none
            got, want = [r[:6] + r[7:] for r in got], [r[:6] + r[7:] for r in want]
        assert got == want, command
    for client in ("jdbc", "sqlalchemy"):
        for entry in CORPUS[client]:
            if "{table}" not in json.dumps(entry) or "pg_attribute" not in entry["sql"]:
                continue
            for table in granted:
                sql, params = fill(entry["sql"], table, 0), fill(entry["params"], table, 0)
                assert ours(sql, params) == theirs(sql, params), (client, table, sql[:200])
    for table in granted:
        for command in (r"\d shared.{table}", r"\d+ shared.{table}"):
            got, want = describe(ours, command, table), describe(theirs, command, table)
            assert [a for a in got[1:]] == [a for a in want[1:]], (command, table)
            assert [r[1:] for r in got[0]] == [r[1:] for r in want[0]]  # the oid itself differs


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_column_privileges_answer_the_grant_and_nothing_more(registry, data):
    """has_column_privilege by name and by oid, by column name and number: true exactly for a granted column
    (never for one the department was not given, nor for an unknown one), and for a system relation's."""
    granted = data.draw(grants(registry))
    box = sandbox(access(registry, granted), registry)
    oids = dict(ask(box, "SELECT relname, oid FROM pg_catalog.pg_class WHERE relnamespace <> 11").rows)
    for ds in registry.datasets:
        for column in [c.name for c in ds.columns] + ["no_such_column"]:
            readable = column in granted.get(ds.name, ())
            for table in {f"shared.{ds.name}", ds.name, *([oids[ds.name]] if ds.name in oids else [])}:
                for privilege in ("SELECT", "select, update"):
                    [(got,)] = ask(box, "SELECT has_column_privilege(?, ?, ?)", [table, column, privilege]).rows
                    assert got is readable, (table, column, privilege, granted)
                [(upd,)] = ask(box, "SELECT has_column_privilege(?, ?, 'UPDATE')", [table, column]).rows
                assert upd is False
            if readable and ds.name in oids:
                number = [c.name for c in ds.columns if c.name in granted[ds.name]].index(column) + 1
                [(by_number,)] = ask(box, "SELECT has_column_privilege(?, CAST(? AS smallint), 'SELECT')",
                                     [oids[ds.name], number]).rows
                assert by_number is True
    [(system,)] = ask(box, "SELECT has_column_privilege('pg_catalog.pg_class', 'relname', 'SELECT')").rows
    assert system is True
