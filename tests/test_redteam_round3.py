"""Red-team findings, round 3 (catalog emulation, EXPLAIN, output names, plan cache): each test failed
while its hole was open.

1. Time travel past a row filter's column (BYPASS): a policy relation named its columns unqualified
   (``WHERE "district" = 'A'``). Read at a snapshot from before ``district`` was added to the table, the
   scan has no such column, and DuckDB binds the unknown name to a column of the department's own query
   (an implicit lateral reference): ``SELECT p.* FROM (SELECT 'A' AS district) o, people AT (VERSION => 1) p``
   decided the row filter itself and read every row of that snapshot. The relation's columns are now
   qualified with the scan's alias, so a missing column is an error.
2. Catalog SQL injection (BYPASS of the sandbox's rewriter): the catalog rewriter did not apply the
   planner's ``safe_text``, so a quoted EXTRACT unit, a ``date_part`` string or a DECIMAL parameter came back
   unquoted as SQL in the sandbox (so did a schema-qualified type, ``1::pg_catalog."int4) AS y, ... --"``): ``SELECT date_part('year FROM DATE ''2020-01-01'') AS y, name, value FROM
   duckdb_settings() --', d)`` read DuckDB's own catalog (duckdb_settings(), duckdb_databases(), the sandbox's
   fact tables), and further statements could redefine the department's shims for its other users. The
   rewritten text is now checked as the planner's is: bare words only, and DuckDB's parse of it is one SELECT
   reading the shims, the department's empty tables, its CTEs and the allowed table functions.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import add_grant
from sharing.visible_catalog import rewrite
from tests.helpers import dump, write_registry
from tests.support.standard_sql import DEPARTMENTS, ELEMENTS, dataset

PEOPLE = dataset("people", "人员", "id", [
    {"name": "id", "source": "编号", "type": "integer", "required": True},
    {"name": "mobile", "source": "手机", "element": "mobile"},
    {"name": "district", "source": "区", "type": "string"},
])
OLD = [(1, "13800000001"), (2, "13800000002")]
"""Rows of the first snapshot, before the table had ``district``: outside tax's filter ``district = 'A'``."""
NEW = [(3, "13800000003", "A"), (4, "13800000004", "B")]


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
    """``people`` created without ``district`` (snapshot ``first``), then the column added and rows loaded;
    tax is granted id and mobile on district A's rows."""
    home = Settings(home=tmp_path_factory.mktemp("redteam3") / "home")
    write_registry(home.registry_dir, [PEOPLE], departments=DEPARTMENTS)
    dump(home.registry_dir / "elements.yaml", ELEMENTS)
    registry = load_registry(home.registry_dir)
    with Lake(home.lake) as lake:
        with lake.transaction() as con:
            con.execute("CREATE TABLE lake.shared.people (id BIGINT, mobile VARCHAR)")
            con.executemany("INSERT INTO lake.shared.people VALUES (?, ?)", OLD)
        first = lake.con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
        with lake.transaction() as con:
            con.execute("ALTER TABLE lake.shared.people ADD COLUMN district VARCHAR")
            con.executemany("INSERT INTO lake.shared.people VALUES (?, ?, ?)", NEW)
        add_grant(lake, registry, "tax", "people", columns=["id", "mobile"], row_filter="district = 'A'")
    engine = GovernedEngine(home, registry, persistent=True)
    yield engine, first
    engine.close()


OUTER = ["(SELECT {v} AS district) o, {t}", "(SELECT {v} AS district) o CROSS JOIN {t}",
         "(SELECT {v} AS district) o JOIN {t} ON true", "(SELECT {v} AS district) o, LATERAL (SELECT * FROM {t}) q",
         "(VALUES ({v})) o(district), {t}", "{t} JOIN (SELECT {v} AS district) o ON true"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from(OUTER), value=st.sampled_from(["'A'", "'B'", "NULL", "district", "'x'"]),
       alias=st.sampled_from(["p", "people", "district"]))
def test_time_travel_before_the_filter_column_existed_reads_no_row_outside_the_filter(evolved, shape, value, alias):
    engine, first = evolved
    if value == "district":
        value = "'A'"
    table = f"people AT (VERSION => {first}) {alias}"
    sql = f"SELECT * FROM {shape.format(v=value, t=table)}"
    try:
        result = engine.query("tax", sql)
    except (QueryRefused, QueryFailed):
        return  # the snapshot has no district: no row of it can pass the filter, an error says so
    # oracle: tax's rows of that snapshot are those with district = 'A', and it had no district: none
    ids = {v for row in result.rows for v in row if isinstance(v, int)}
    assert not ids & {i for i, _ in OLD}, (sql, result.rows)


def test_time_travel_to_the_current_snapshot_still_reads_the_relation(evolved):
    engine, _ = evolved
    with engine.cursor() as lake:
        now = lake.con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
    assert engine.query("tax", f"SELECT id, mobile FROM people AT (VERSION => {now})").rows == [(3, "*******0003")]
    assert engine.query("tax", "SELECT p.id FROM (SELECT 'B' AS district) o, people p").rows == [(3,)]


PROBES = ["name, value FROM duckdb_settings()", "database_name, path FROM duckdb_databases()",
          "* FROM os_facts.tables", "* FROM duckdb_tables()", "* FROM read_csv('/etc/passwd')",
          "1; CREATE OR REPLACE MACRO os_pg_catalog.version() AS 'poisoned'; SELECT 1",
          "1; CREATE TABLE shared.planted AS SELECT 42 AS x; SELECT 1"]
CARRIERS = ["SELECT EXTRACT(\"{unit} FROM DATE '2020-01-01') AS y, {probe} --\" FROM DATE '2020-01-01')",
            "SELECT date_part('{unit} FROM DATE ''2020-01-01'') AS y, {probe_q} --', DATE '2020-01-01')",
            "SELECT CAST(1 AS DECIMAL(\"10, 2)) AS d, {probe} --\"))",
            "SELECT 1::pg_catalog.\"int4) AS y, {probe} --\"",
            "SELECT relname FROM pg_class WHERE relnatts > EXTRACT(\"{unit} FROM DATE '2020-01-01')) OR 1 IN "
            "(SELECT 1 FROM (SELECT {probe}) x) --\" FROM DATE '2020-01-01')"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(carrier=st.sampled_from(CARRIERS), probe=st.sampled_from(PROBES), unit=st.sampled_from(["year", "epoch"]))
def test_a_catalog_question_cannot_smuggle_sql_into_the_sandbox(evolved, carrier, probe, unit):
    engine, _ = evolved
    sql = carrier.format(unit=unit, probe=probe, probe_q=probe.replace("'", "''"))
    try:
        result = engine.catalog("tax", sql, user="mallory")
    except (QueryRefused, QueryFailed):
        result = None
    if result is not None:  # oracle: what the question asks of the catalog, one column of the unit or a name
        assert len(result.columns) == 1 and not {"name", "value", "path", "oid", "x"} & set(result.columns), \
            (sql, result.columns)
    # nothing was planted for the department's other users either
    assert engine.catalog("tax", "SELECT version()", user="bob").rows[0][0].startswith("PostgreSQL")
    assert engine.catalog("tax", "SELECT count(*) FROM pg_class WHERE relname = 'planted'", user="bob").rows == [(0,)]


def test_the_rewritten_catalog_question_is_one_select_of_the_shims():
    for sql in ("SELECT * FROM pg_class", "SELECT * FROM information_schema.columns",
                "WITH t AS (SELECT 1 AS a) SELECT * FROM t, generate_series(1, 2)", "SELECT 1"):
        rewrite(sql, {"people"}, "bob")
    for sql, cast in (("SELECT 1::pg_catalog.int4", "CAST(1 AS int4)"), ("SELECT 't'::pg_catalog.bool", "CAST('t' AS bool)")):
        assert cast in rewrite(sql, set(), "bob")[0]  # clients' schema-qualified types stay types
    with pytest.raises(QueryRefused, match="plain words"):
        rewrite("SELECT EXTRACT(\"year FROM DATE '2020-01-01') AS y, * FROM duckdb_settings() --\" "
                "FROM DATE '2020-01-01')", set(), "bob")
