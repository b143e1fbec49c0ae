"""TPC-H through governed SQL: the 22 queries, as an analyst writes them (bare table names, EXISTS, NOT
EXISTS, IN and scalar subqueries, correlated subqueries, CTEs and views' worth of derived tables, INTERVAL
arithmetic, EXTRACT, CASE, LIKE, SUBSTRING), answer through the governed engine exactly as DuckDB answers
them on the same lake.

World: TPC-H at scale factor 0.01 (DuckDB's tpch extension) registered as eight conditional datasets of
``nbs``; ``analyst`` holds a grant of every column of each (bench/tpch.py builds it). The oracle is DuckDB
itself: the same query text on the lake's raw tables, bare names on the search path ``lake.shared``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re

import pytest
import sqlglot
from sqlglot import exp

from bench.tpch import TABLES, TPCH_READER, tpch_home, tpch_queries
from lakehouse.lake import Lake
from sharing.engine import GovernedEngine

pytestmark = pytest.mark.slow

QUERIES = dict(tpch_queries())


@pytest.fixture(scope="module")
def tpch(tmp_path_factory):
    settings, registry = tpch_home(tmp_path_factory.mktemp("tpch") / "home", 0.01)
    engine = GovernedEngine(settings, registry, persistent=True)
    with Lake(settings.lake, read_only=True) as lake:
        lake.con.execute("SET search_path = 'lake.shared'")
        yield engine, lake.con
    engine.close()


def same(a, b) -> bool:
    """Equal values; numbers within rounding (an average's last bits depend on the order it summed in)."""
    if isinstance(a, float | decimal.Decimal) or isinstance(b, float | decimal.Decimal):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def key(row: tuple) -> tuple:
    """A sort key that treats numbers as numbers whatever their type (unordered results are compared sorted)."""
    return tuple((0, round(float(v), 6)) if isinstance(v, int | float | decimal.Decimal) else
                 (1, v.isoformat()) if isinstance(v, dt.date) else (2, str(v)) for v in row)


def ordered(sql: str) -> bool:
    return sqlglot.parse_one(sql, read="duckdb").args.get("order") is not None


@pytest.mark.parametrize("number", sorted(QUERIES))
def test_every_tpch_query_answers_as_duckdb_does(tpch, number):
    engine, direct = tpch
    sql = QUERIES[number]
    got = engine.query(TPCH_READER, sql, purpose="TPC-H")
    cur = direct.execute(sql)
    want = cur.fetchall()
    # PostgreSQL's names: DuckDB's where the query named the column, the function's name for Q18's sum(...)
    assert got.columns == [re.sub(r"^(\w+)\(.*\)$", r"\1", d[0]) for d in cur.description]
    assert len(got.rows) == len(want) > 0
    rows, expected = (got.rows, want) if ordered(sql) else (sorted(got.rows, key=key), sorted(want, key=key))
    for n, (g, w) in enumerate(zip(rows, expected, strict=True)):
        assert len(g) == len(w) and all(same(a, b) for a, b in zip(g, w, strict=True)), \
            f"Q{number} row {n}: governed {g} != DuckDB {w}"
    # every table the query names was read through its policy relation, and nothing else was
    audited = engine.audit.entries()[-1]
    named = {t.name for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)} & set(TABLES)
    assert audited["decision"] == "allowed" and set(audited["tables"]) == named
    first = sorted(named)[0]  # read through DuckLake, or its files straight (sharing.filescan)
    assert f'"lake"."shared"."{first}"' in audited["sql_run"] or f"/shared/{first}/" in audited["sql_run"]


def test_the_policy_relations_are_optimized_away(tpch):
    """A full grant's relation is a projection of the table: DuckDB pushes the query's filters into the
    scan and reads only the columns the query uses, as it does for the raw table."""
    engine, direct = tpch
    plan = "\n".join(r[0] for r in engine.query(TPCH_READER, "EXPLAIN " + QUERIES[6]).rows)
    raw = "\n".join(r[1] for r in direct.execute("EXPLAIN " + QUERIES[6]).fetchall())
    for text in (plan, raw):
        assert "l_shipdate>='1994-01-01'" in text.replace(" ", "")  # the date range is a scan filter
        assert "l_comment" not in text  # unused columns are not read
