"""Red-team findings against the governed SQL planner: each test fails while the leak is open.

1. sqlglot turns some identifiers and string literals into ``exp.Var`` (EXTRACT's unit, date_part's unit in
   postgres, OPERATOR(...), DECIMAL(p, s) and user-defined cast types, ...) and writes them back *unquoted*.
   A quoted identifier or a string holding ``) ... FROM lake.shared.x) --`` therefore becomes SQL in the
   text the planner hands DuckDB, after every check ran on the tree: any table (raw datasets, not_shared
   ones, ops.*) and any function can be read, in every dialect.
2. A catalog query may call DuckDB table functions as ``pg_catalog.<fn>()`` (is_catalog_query only looks at
   the schema), e.g. the sandbox's settings: the server's paths and directories.
"""

from __future__ import annotations

import re

import pytest

from lakehouse import Lake
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import add_grant
from sharing.visible_catalog import is_catalog_query
from tests.helpers import DISTRICT, demo_home, rows

FIRMS = "shared.amr_enterprise_register"
RAW = "lake.shared.psb_resident_register"
ID = re.compile(r"\d{17}[\dXx]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home, registry = demo_home(tmp_path_factory.mktemp("redteam") / "home", (
        "mca_admin_divisions", "amr_enterprise_register", "psb_resident_register", "psb_household_moves"))
    with Lake(home.lake) as lake:
        add_grant(lake, registry, "tax", "psb_resident_register", columns=["resident_id", "division_code"],
                  row_filter=f"division_code = '{DISTRICT}'")
        add_grant(lake, registry, "urban", "psb_resident_register")
        add_grant(lake, registry, "hrss", "psb_resident_register", columns=["resident_id", "division_code"],
                  match=["resident_id"], match_quota=5)
    ids = {r[0] for r in rows(home, "SELECT resident_id FROM shared.psb_resident_register")}
    ids |= {r[0] for r in rows(home, "SELECT resident_id FROM shared.psb_household_moves")}
    engine = GovernedEngine(home, registry, persistent=True)
    yield engine, ids
    engine.close()


def _answer(engine, department, sql, dialect):
    try:
        return engine.query(department, sql, dialect=dialect)
    except (QueryRefused, QueryFailed):
        return None


INJECTIONS = [
    # EXTRACT's unit: a quoted identifier comes back unquoted (and upper-cased)
    ("duckdb", f"SELECT EXTRACT(\"year FROM DATE '2020-01-01') AS y, * FROM {RAW}) --\" FROM DATE '2020-01-01') "
               f"FROM {FIRMS}"),
    ("postgres", f"SELECT EXTRACT(\"year FROM DATE '2020-01-01') AS y, * FROM {RAW}) --\" FROM DATE '2020-01-01') "
                 f"FROM {FIRMS}"),
    ("mysql", f"SELECT EXTRACT(`year FROM DATE '2020-01-01') AS y, * FROM {RAW}) --` FROM DATE '2020-01-01') "
              f"FROM {FIRMS}"),
    # postgres date_part: an ordinary string literal becomes SQL
    ("postgres", f"SELECT date_part('year FROM DATE ''2020-01-01'') AS y, * FROM {RAW}) --', DATE '2020-01-01') "
                 f"FROM {FIRMS}"),
    # OPERATOR(...): a string literal becomes SQL
    ("postgres", f"SELECT 1 FROM {FIRMS} WHERE 1 OPERATOR('=) 1) AS x, {RAW} --') 1"),
    ("mysql", f"SELECT 1 FROM {FIRMS} WHERE 1 OPERATOR(\"=) 1) AS x, {RAW} --\") 1"),
    # DECIMAL's precision: a quoted identifier comes back unquoted
    ("duckdb", f"SELECT CAST(1 AS DECIMAL(\"10, 2)) AS d, * FROM {RAW}) --\")) FROM {FIRMS}"),
    ("postgres", f"SELECT CAST(1 AS DECIMAL(\"10, 2)) AS d, * FROM {RAW}) --\")) FROM {FIRMS}"),
]


@pytest.mark.parametrize(("dialect", "sql"), INJECTIONS)
def test_identifiers_and_literals_written_back_unquoted_cannot_become_sql(world, dialect, sql):
    engine, ids = world
    result = _answer(engine, "tax", sql, dialect)
    if result is None:
        return
    raw = {found for row in result.rows for cell in row for found in ID.findall(str(cell))} & ids
    assert not raw, f"raw resident IDs came back to tax from {sql!r} ({dialect})"
    assert not {"person_name", "birth_date", "household_address"} & set(result.columns), \
        f"columns outside tax's grant came back from {sql!r} ({dialect})"


def test_ops_tables_cannot_be_reached_through_an_unquoted_identifier(world):
    engine, _ = world
    sql = (f"SELECT EXTRACT(\"year FROM DATE '2020-01-01') AS y, * FROM lake.ops.grants) --\" "
           f"FROM DATE '2020-01-01') FROM {FIRMS}")
    result = _answer(engine, "hrss", sql, "duckdb")
    assert result is None or "grant_id" not in result.columns, "ops.grants came back to hrss"


def test_a_catalog_query_cannot_call_duckdb_table_functions(world):
    engine, _ = world
    sql = "SELECT name, value FROM pg_catalog.duckdb_settings() WHERE value LIKE '%/%'"
    if not is_catalog_query(sql):
        return
    try:
        result = engine.catalog("tax", sql)
    except (QueryRefused, QueryFailed):
        return
    leaked = [r for r in result.rows if r[0] in ("allowed_directories", "secret_directory", "temp_directory")]
    assert not leaked, f"the catalog sandbox answered the server's settings: {leaked}"
