"""Standard SQL that departments write, through the governed planner, with the same guarantees.

World: a small lake of two conditional datasets of ``psb``: ``people`` (a masked mobile number) and
``visits``. ``tax`` holds a grant of three columns of ``people`` for district A only, and of ``visits``
with amount of at least 20; ``edu`` holds a grant of ``people`` for district B (another department's row
filter, which nothing of tax's may reveal).

The oracle works on values: the same query, run by DuckDB over tables holding only tax's rows with the
masked values, must give exactly the governed answer, whatever EXISTS, NOT EXISTS, IN, NOT IN, scalar and
correlated subqueries, CTEs and derived tables the query is made of (hypothesis writes them). Output names
are PostgreSQL's (checked against PostgreSQL 15's own answers); session values are the session's; EXPLAIN
answers the governed plan only; a query without a table is answered.
"""

from __future__ import annotations

import decimal
import random

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused
from sharing.grants import add_grant
from sharing.pgnames import Namer, name_outputs
from tests.helpers import dump, write_registry
from tests.support.standard_sql import DEPARTMENTS, ELEMENTS, dataset

PEOPLE = dataset("people", "人员", "id", [
    {"name": "id", "source": "编号", "type": "integer", "required": True},
    {"name": "district", "source": "区", "type": "string"},
    {"name": "mobile", "source": "手机", "element": "mobile"},
    {"name": "age", "source": "年龄", "type": "integer"},
])
VISITS = dataset("visits", "走访", "visit_id", [
    {"name": "visit_id", "source": "编号", "type": "integer", "required": True},
    {"name": "person_id", "source": "人员编号", "type": "integer"},
    {"name": "district", "source": "区", "type": "string"},
    {"name": "amount", "source": "金额", "type": "decimal"},
])


def people_rows(seed: int = 18) -> list[tuple]:
    rnd = random.Random(seed)
    tails = ["0001", "0002", "0003", "1234", "9876"]  # few distinct last digits: masks collide, as in a city
    return [(i, rnd.choice("AABC"), "13" + "".join(rnd.choices("0123456789", k=5)) + rnd.choice(tails),
             rnd.randint(18, 90)) for i in range(1, 61)]


def visit_rows(seed: int = 19) -> list[tuple]:
    rnd = random.Random(seed)
    return [(i, rnd.choice([*range(1, 70), None]), rnd.choice("ABC"),
             decimal.Decimal(rnd.randint(0, 10_000)) / 100) for i in range(1, 151)]


def oracle(people: list[tuple], visits: list[tuple]) -> duckdb.DuckDBPyConnection:
    """tax's view, built without the planner: district A's people with masked mobiles, visits of 20 or more."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA shared")
    con.execute("CREATE TABLE shared.people (id BIGINT, district VARCHAR, mobile VARCHAR)")
    con.execute("CREATE TABLE shared.visits (visit_id BIGINT, person_id BIGINT, district VARCHAR, amount DECIMAL(18,2))")
    con.executemany("INSERT INTO shared.people VALUES (?, ?, ?)",
                    [(i, d, "*******" + m[-4:]) for i, d, m, _ in people if d == "A"])
    con.executemany("INSERT INTO shared.visits VALUES (?, ?, ?, ?)", [v for v in visits if v[3] >= 20])
    con.execute("USE memory.shared")
    return con


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("standard") / "home")
    write_registry(settings.registry_dir, [PEOPLE, VISITS], departments=DEPARTMENTS)
    dump(settings.registry_dir / "elements.yaml", ELEMENTS)
    registry = load_registry(settings.registry_dir)
    people, visits = people_rows(), visit_rows()
    with Lake(settings.lake) as lake:
        with lake.transaction() as con:
            con.execute("CREATE TABLE lake.shared.people (id BIGINT, district VARCHAR, mobile VARCHAR, age BIGINT)")
            con.execute("CREATE TABLE lake.shared.visits (visit_id BIGINT, person_id BIGINT, district VARCHAR, "
                        "amount DECIMAL(18,2))")
            con.executemany("INSERT INTO lake.shared.people VALUES (?, ?, ?, ?)", people)
            con.executemany("INSERT INTO lake.shared.visits VALUES (?, ?, ?, ?)", visits)
        add_grant(lake, registry, "tax", "people", columns=["id", "district", "mobile"], row_filter="district = 'A'")
        add_grant(lake, registry, "tax", "visits", row_filter="amount >= 20")
        add_grant(lake, registry, "edu", "people", row_filter="district = 'B' AND age > 41")
    engine = GovernedEngine(settings, registry, persistent=True)
    yield engine, oracle(people, visits), people
    engine.close()


def normal(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))


# --- subqueries under a row filter and a mask: the oracle on values -----------------------------------------

@st.composite
def predicate(draw, people: str = "p"):
    k = draw(st.integers(0, 100))
    visits = draw(st.sampled_from(["visits", "shared.visits"]))
    others = draw(st.sampled_from(["people", "shared.people"]))
    return draw(st.sampled_from([
        f"EXISTS (SELECT 1 FROM {visits} v WHERE v.person_id = {people}.id AND v.amount > {k})",
        f"NOT EXISTS (SELECT 1 FROM {visits} v WHERE v.person_id = {people}.id)",
        f"NOT EXISTS (SELECT * FROM {visits} v WHERE v.person_id = {people}.id AND v.district <> {people}.district)",
        f"{people}.id IN (SELECT person_id FROM {visits} WHERE amount < {k})",
        f"{people}.id NOT IN (SELECT person_id FROM {visits} WHERE person_id IS NOT NULL AND amount > {k})",
        f"EXISTS (SELECT 1 FROM {others} q WHERE q.mobile = {people}.mobile AND q.id <> {people}.id)",
        f"{people}.mobile IN (SELECT mobile FROM {others} q WHERE q.id < {k})",
        f"(SELECT count(*) FROM {visits} v WHERE v.person_id = {people}.id) > {k % 4}",
        f"coalesce((SELECT sum(amount) FROM {visits} v WHERE v.person_id = {people}.id), 0) > {k}",
        f"{people}.district = '{draw(st.sampled_from('ABC'))}'",
        f"{people}.mobile LIKE '%{draw(st.sampled_from(['0001', '1234', '13', '*']))}'",
        f"{people}.id > (SELECT avg(person_id) FROM {visits})",
    ]))


@st.composite
def subquery_queries(draw):
    preds = draw(st.lists(predicate(), min_size=1, max_size=2))
    where = f" {draw(st.sampled_from(['AND', 'OR']))} ".join(f"({p})" for p in preds)
    if draw(st.booleans()):
        where = f"NOT ({where})"
    table = draw(st.sampled_from(["people", "shared.people"]))
    shape = draw(st.sampled_from(["rows", "count", "grouped", "cte", "derived", "visits"]))
    if shape == "rows":
        return f"SELECT p.id, p.mobile, p.district FROM {table} p WHERE {where}"
    if shape == "count":
        return f"SELECT count(*), count(DISTINCT p.mobile) FROM {table} p WHERE {where}"
    if shape == "grouped":
        return f"SELECT p.mobile, count(*) FROM {table} p WHERE {where} GROUP BY p.mobile"
    if shape == "cte":
        return f"WITH chosen AS (SELECT p.id, p.mobile FROM {table} p WHERE {where}) SELECT * FROM chosen"
    if shape == "derived":
        return f"SELECT d.mobile FROM (SELECT p.* FROM {table} p WHERE {where}) d"
    inner = draw(predicate("p")).replace("p.", "pp.")
    return (f"SELECT v.visit_id, v.amount FROM visits v WHERE EXISTS (SELECT 1 FROM {table} pp "
            f"WHERE pp.id = v.person_id AND {inner})")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(sql=subquery_queries())
def test_subqueries_answer_exactly_what_the_departments_rows_and_masks_give(world, sql):
    engine, view, _ = world
    got = engine.query("tax", sql, purpose="standard sql test")
    assert normal(got.rows) == normal(view.execute(sql).fetchall()), sql


@pytest.mark.parametrize("sql", [
    # window functions over the relation
    "SELECT id, row_number() OVER (PARTITION BY mobile ORDER BY id) FROM people",
    "SELECT person_id, amount, sum(amount) OVER (PARTITION BY person_id ORDER BY visit_id ROWS BETWEEN "
    "UNBOUNDED PRECEDING AND CURRENT ROW) AS running, rank() OVER (ORDER BY amount DESC) FROM visits",
    "SELECT id, lag(mobile) OVER (ORDER BY id), first_value(id) OVER w FROM people WINDOW w AS (ORDER BY mobile, id)",
    # GROUPING SETS, ROLLUP, CUBE and grouping()
    "SELECT district, person_id % 3 AS g, count(*), sum(amount) FROM visits GROUP BY ROLLUP (district, person_id % 3)",
    "SELECT district, count(*) FROM visits GROUP BY GROUPING SETS ((district), ())",
    "SELECT district, grouping(district), count(*) FROM visits GROUP BY CUBE (district)",
    # CASE, LIKE, SUBSTRING, EXTRACT, INTERVAL arithmetic, scalar and correlated subqueries, CTEs
    "SELECT CASE WHEN amount > 50 THEN 'high' WHEN amount > 30 THEN 'mid' ELSE 'low' END AS band, count(*) "
    "FROM visits GROUP BY 1",
    "SELECT substring(mobile FROM 8 FOR 4), mobile LIKE '%1234', position('*' IN mobile) FROM people",
    "SELECT extract(year FROM DATE '1998-12-01' - INTERVAL '90' DAY), DATE '1995-01-01' + INTERVAL '3' MONTH",
    "SELECT id FROM people p WHERE (SELECT count(*) FROM visits v WHERE v.person_id = p.id) = "
    "(SELECT max(c) FROM (SELECT count(*) AS c FROM visits GROUP BY person_id) m)",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
    "SELECT i, (SELECT count(*) FROM people WHERE id = i) FROM n",
    "WITH a AS (SELECT person_id, sum(amount) AS total FROM visits GROUP BY 1), b AS (SELECT max(total) AS top FROM a) "
    "SELECT person_id FROM a, b WHERE total = top",
    "SELECT mobile FROM people INTERSECT SELECT mobile FROM people WHERE id < 30 EXCEPT SELECT '*******0001'",
    "SELECT v.person_id, p.mobile FROM visits v LEFT JOIN people p ON p.id = v.person_id WHERE v.amount < 40",
])
def test_standard_constructs_answer_as_over_the_departments_own_rows(world, sql):
    engine, view, _ = world
    assert normal(engine.query("tax", sql).rows) == normal(view.execute(sql).fetchall())


def test_the_mask_and_the_row_filter_hold_inside_every_subquery(world):
    engine, _, people = world
    raw = {m for _, _, m, _ in people}
    sql = ("SELECT p.mobile FROM people p WHERE EXISTS (SELECT 1 FROM people q WHERE q.mobile = p.mobile) "
           "AND p.id IN (SELECT id FROM shared.people WHERE district IN ('A', 'B', 'C'))")
    got = engine.query("tax", sql).rows
    assert got and not {r[0] for r in got} & raw
    assert len(got) == sum(d == "A" for _, d, _, _ in people)  # district B and C rows stay out
    with pytest.raises(QueryRefused, match="'age' could not be resolved: it is not granted"):
        engine.query("tax", "SELECT id FROM people p WHERE EXISTS (SELECT 1 FROM people q WHERE age > 40)")


def test_bare_names_are_on_the_shared_search_path(world):
    engine, view, _ = world
    assert engine.query("tax", "SELECT count(*) FROM people").rows == view.execute(
        "SELECT count(*) FROM people").fetchall()
    with pytest.raises(QueryRefused, match="shared.nosuch does not exist or is not granted to tax"):
        engine.query("tax", "SELECT * FROM nosuch")
    last = engine.audit.entries()[-1]
    assert last["decision"] == "refused" and "nosuch" in last["reason"]


# --- names, session values, queries without a table -------------------------------------------------------

POSTGRES_NAMES = [  # (expression, the column name PostgreSQL 15 gives `SELECT <expression> FROM t`)
    ('now()', 'now'),
    ('current_timestamp', 'current_timestamp'),
    ('current_date', 'current_date'),
    ('localtimestamp', 'localtimestamp'),
    ('current_user', 'current_user'),
    ('session_user', 'session_user'),
    ('user', 'user'),
    ('current_role', 'current_role'),
    ('current_catalog', 'current_catalog'),
    ('current_schema', 'current_schema'),
    ('current_schema()', 'current_schema'),
    ('current_database()', 'current_database'),
    ('version()', 'version'),
    ('count(*)', 'count'),
    ('count(distinct x)', 'count'),
    ('count(x) filter (where x>1)', 'count'),
    ('trim(s)', 'btrim'),
    ("trim(both 'a' from s)", 'btrim'),
    ('ltrim(s)', 'ltrim'),
    ('btrim(s)', 'btrim'),
    ('substring(s from 1 for 2)', 'substring'),
    ('substr(s,1,2)', 'substr'),
    ('substring(s,1,2)', 'substring'),
    ("position('a' in s)", 'position'),
    ("strpos(s,'a')", 'strpos'),
    ('extract(year from d)', 'extract'),
    ("date_part('year', d)", 'date_part'),
    ("date_trunc('month', d)", 'date_trunc'),
    ("string_agg(s, ',')", 'string_agg'),
    ("string_agg((s), ',')", 'string_agg'),  # found by the generated test: the first ( named nothing
    ('substring((trim(s)) from 1 for 2)', 'substring'),  # found by it too: trim( lies before s
    ('array_agg(x)', 'array_agg'),
    ('coalesce(x,y)', 'coalesce'),
    ('nullif(x,y)', 'nullif'),
    ('greatest(x,y)', 'greatest'),
    ('least(x,y)', 'least'),
    ('ceil(x)', 'ceil'),
    ('ceiling(x)', 'ceiling'),
    ('length(s)', 'length'),
    ('char_length(s)', 'char_length'),
    ('character_length(s)', 'character_length'),
    ('stddev(x)', 'stddev'),
    ('variance(x)', 'variance'),
    ('avg(x)', 'avg'),
    ('round(x,2)', 'round'),
    ('left(s,2)', 'left'),
    ('upper(s)', 'upper'),
    ('concat(s,s)', 'concat'),
    ('row_number() over ()', 'row_number'),
    ('rank() over (order by x)', 'rank'),
    ('sum(x) over (partition by y)', 'sum'),
    ('exists(select 1)', 'exists'),
    ('not exists(select 1)', '?column?'),
    ('array[1,2]', 'array'),
    ('row(1,2)', 'row'),
    ('(1,2)', 'row'),
    ('x::int', 'x'),
    ('1::int', 'int4'),
    ('s::varchar', 's'),
    ('cast(1 as bigint)', 'int8'),
    ('cast(1 as integer)', 'int4'),
    ('cast(1 as smallint)', 'int2'),
    ('cast(1 as double precision)', 'float8'),
    ('cast(1 as float)', 'float8'),
    ('cast(1 as real)', 'float4'),
    ("cast('a' as varchar(3))", 'varchar'),
    ("cast('a' as char(2))", 'bpchar'),
    ("cast('a' as text)", 'text'),
    ('cast(1 as numeric(10,2))', 'numeric'),
    ('cast(1 as decimal)', 'numeric'),
    ("cast('t' as boolean)", 'bool'),
    ('cast(d as timestamp)', 'd'),
    ("cast('2020-01-01' as timestamp with time zone)", 'timestamptz'),
    ("cast('2020-01-01' as date)", 'date'),
    ('cast(now() as date)', 'now'),
    ('cast(x + 1 as text)', 'text'),
    ("date '2020-01-01'", 'date'),
    ("timestamp '2020-01-01'", 'timestamp'),
    ("interval '1 day'", 'interval'),
    ("d + interval '1 day'", '?column?'),
    ('true', '?column?'),
    ('false', '?column?'),
    ('null', '?column?'),
    ('1', '?column?'),
    ("'a'", '?column?'),
    ('-x', '?column?'),
    ('x+1', '?column?'),
    ('s||s', '?column?'),
    ("s like 'a'", '?column?'),
    ('case when x > 1 then 1 end', 'case'),
    ('case when x > 1 then 1 else y end', 'y'),
    ('case when x > 1 then y else 1 end', 'case'),
    ('(select max(x) from t)', 'max'),
    ('(select x from t limit 1)', 'x'),
    ('(select 1)', '?column?'),
    ('x in (select 1)', '?column?'),
    ('x in (1,2)', '?column?'),
    ('x = any(array[1])', '?column?'),
    ('a[1]', 'a'),
    ('t.x', 'x'),
    ('public.t.x', 'x'),
    ('x is null', '?column?'),
    ('not b', '?column?'),
    ('md5(s)', 'md5'),
    ("regexp_replace(s,'a','b')", 'regexp_replace'),
    ("to_char(d, 'YYYY')", 'to_char'),
    ('mod(x,y)', 'mod'),
    ('power(x,2)', 'power'),
    ('abs(x)', 'abs'),
    ('floor(x)', 'floor'),
    ('sqrt(x)', 'sqrt'),
    ('ln(x)', 'ln'),
    ('exp(x)', 'exp'),
    ('sign(x)', 'sign'),
    ('age(d)', 'age'),
    ('make_date(1,2,3)', 'make_date'),
    ("split_part(s, ',', 1)", 'split_part'),
    ('reverse(s)', 'reverse'),
    ("replace(s,'a','b')", 'replace'),
    ('lpad(s,2)', 'lpad'),
    ("starts_with(s,'a')", 'starts_with'),
    ('array_length(a,1)', 'array_length'),
    ('cardinality(a)', 'cardinality'),
    ('first_value(x) over ()', 'first_value'),
    ('lag(x) over (order by x)', 'lag'),
    ('ntile(2) over ()', 'ntile'),
    ('percent_rank() over (order by x)', 'percent_rank'),
    ('bool_and(b)', 'bool_and'),
    ('bool_or(b)', 'bool_or'),
    ('every(b)', 'every'),
    ('x is distinct from y', '?column?'),
    ('x between 1 and 2', '?column?'),
    ("s ilike 'a'", '?column?'),
    ("s not like 'a'", '?column?'),
    ("to_date(s, 'YYYY')", 'to_date'),
    ('(x)', 'x'),
    ('((x))', 'x'),
    ('(x + 1)', '?column?'),
    ('x as named', 'named'),
    ('sum(x) / count(*)', '?column?'),
    ('min(d)', 'min'),
    ('max(s)', 'max'),
    ('count(1)', 'count'),
    ('"x"', 'x'),
]


@pytest.mark.parametrize("expression, name", POSTGRES_NAMES)
def test_output_names_are_postgresqls(expression, name):
    sql = f"SELECT {expression} FROM t"
    root = sqlglot.parse_one(sql, read="postgres")
    assert name_outputs(root, Namer(sql, "postgres", root)) == [name]


def test_the_engine_answers_with_postgresqls_names(world):
    engine, _, _ = world
    cases = {
        "SELECT count(*) FROM people": ["count"],
        "SELECT id, id, p.id FROM people p": ["id", "id", "id"],  # repeated names stay repeated
        "SELECT id + 1, 'x', upper(district), CAST(id AS text), id::bigint, 1::bigint FROM people":
            ["?column?", "?column?", "upper", "id", "id", "int8"],
        "SELECT EXISTS (SELECT 1 FROM visits), (SELECT max(amount) FROM visits), NOT EXISTS (SELECT 1 FROM visits)":
            ["exists", "max", "?column?"],
        "SELECT CASE WHEN id > 3 THEN 'big' END, CASE WHEN id > 3 THEN 'x' ELSE district END FROM people":
            ["case", "district"],
        "SELECT s.count FROM (SELECT count(*) FROM people) s": ["count"],  # a derived table's names, read by name
        "SELECT * FROM (SELECT count(*), sum(amount) FROM visits) s": ["count", "sum"],
        "WITH c AS (SELECT district, count(*) FROM people GROUP BY 1) SELECT * FROM c ORDER BY count": [
            "district", "count"],
        "SELECT count(*) FROM people UNION ALL SELECT sum(id) FROM people": ["count"],
        "SELECT * FROM people LIMIT 1": ["id", "district", "mobile"],
    }
    for sql, names in cases.items():
        assert engine.query("tax", sql).columns == names, sql
    assert engine.query("tax", "SELECT * FROM (SELECT count(*), sum(amount) FROM visits) s").rows == \
        engine.query("tax", "SELECT count(*), sum(amount) FROM visits").rows


def test_a_query_without_a_table_and_the_session_values(world):
    engine, _, _ = world
    assert engine.query("tax", "SELECT 1").rows == [(1,)]
    result = engine.query("tax", "SELECT current_user, session_user, user, current_database(), current_catalog, "
                                 "current_schema, current_schema()", user="li")
    assert result.rows == [("li", "li", "li", "onesource", "onesource", "shared", "shared")]
    assert result.columns == ["current_user", "session_user", "user", "current_database", "current_catalog",
                              "current_schema", "current_schema"]
    assert engine.query("tax", "SELECT current_user", user="wang").rows == [("wang",)]  # a plan per user
    version = engine.query("tax", "SELECT version()").rows[0][0]
    assert version.startswith("PostgreSQL ")  # clients (SQLAlchemy, JDBC) parse it
    for sql in ("SELECT getenv('HOME')", "SELECT * FROM range(3)", "SELECT current_setting('home_directory')"):
        with pytest.raises(QueryRefused):
            engine.query("tax", sql)


# --- EXPLAIN ------------------------------------------------------------------------------------------------

def test_explain_answers_the_governed_plan_and_nothing_else(world):
    engine, _, people = world
    result = engine.query("tax", "EXPLAIN SELECT mobile FROM people WHERE EXISTS "
                                 "(SELECT 1 FROM visits v WHERE v.person_id = people.id)")
    assert result.columns == ["QUERY PLAN"] and len(result.rows) > 3
    text = "\n".join(r[0] for r in result.rows)
    assert "people" in text and "visits" in text
    assert "age" not in text  # tax's relation has no such column
    assert "'B'" not in text and "41" not in text  # edu's row filter is edu's
    assert str(engine.settings.home) not in text and not {m for _, _, m, _ in people} & set(text.split())
    assert "Cardinality" not in text  # estimates come from the whole table's statistics: left out
    last = engine.audit.entries()[-1]
    assert last["decision"] == "allowed" and last["sql_run"].startswith("EXPLAIN (FORMAT JSON) SELECT")
    assert last["tables"] == ["people", "visits"]
    for sql in ("EXPLAIN ANALYZE SELECT * FROM people", "EXPLAIN (ANALYZE) SELECT 1", "EXPLAIN (ANALYZE true) SELECT 1",
                "explain analyse select 1"):
        with pytest.raises(QueryRefused, match="EXPLAIN ANALYZE runs the query"):
            engine.query("tax", sql)
    for sql, reason in (("EXPLAIN (FORMAT JSON) SELECT 1", "not supported"), ("EXPLAIN", "takes a query"),
                        ("EXPLAIN SELECT * FROM read_csv('/etc/passwd')", "table functions are not allowed"),
                        ("EXPLAIN SELECT age FROM people", "not granted"),
                        ("EXPLAIN COPY people TO '/tmp/x'", "only SELECT"),
                        ("EXPLAIN EXPLAIN SELECT 1", "not another EXPLAIN")):
        with pytest.raises(QueryRefused, match=reason):
            engine.query("tax", sql)
    assert engine.query("tax", "EXPLAIN (VERBOSE, COSTS off) SELECT 1").columns == ["QUERY PLAN"]


# --- names against PostgreSQL itself (slow: a real server) -------------------------------------------------

ATOMS = ["x", "y", "t.x", "s", "d", "b", "a[1]", "1", "'a'", "true", "null", "2.5", "DATE '2020-01-01'",
         "INTERVAL '1 day'", "current_date", "current_timestamp", "localtimestamp", "current_user", "user",
         "current_catalog", "current_schema"]
CALLS = ["upper({s})", "lower({s})", "length({s})", "char_length({s})", "abs({n})", "round({n})", "ceil({n})",
         "ceiling({n})", "floor({n})", "coalesce({n}, {n})", "nullif({n}, {n})", "greatest({n}, {n})",
         "least({n}, {n})", "substring({s} from 1 for 2)", "substr({s}, 1, 2)", "position('a' in {s})",
         "strpos({s}, 'a')", "trim({s})", "trim(leading from {s})", "ltrim({s})", "btrim({s})",
         "extract(year from {d})", "date_part('year', {d})", "date_trunc('month', {d})", "count(*)", "count({n})",
         "sum({n})", "avg({n})", "min({n})", "max({s})", "string_agg({s}, ',')", "array_agg({n})", "bool_and({b})",
         "every({b})", "now()", "version()", "current_database()", "current_schema()", "md5({s})", "mod({n}, 3)",
         "power({n}, 2)", "left({s}, 1)", "concat({s}, {s})", "row_number() OVER ()", "sum({n}) OVER ()",
         "count(*) FILTER (WHERE {b})", "lag({n}) OVER (ORDER BY x)"]
TYPES = ["int", "bigint", "smallint", "text", "varchar", "varchar(3)", "char(2)", "numeric", "numeric(10,2)",
         "real", "double precision", "float", "boolean", "date", "timestamp", "timestamptz", "interval"]
OPERATORS = ["{n} + {n}", "-{n}", "{s} || {s}", "{n} IS NULL", "NOT {b}", "{n} = {n}", "{s} LIKE 'a%'",
             "{n} IN (1, 2)", "{n} BETWEEN 1 AND 2", "{n} ^ 2", "{n} % 2", "{n} IS DISTINCT FROM {n}"]


@st.composite
def pg_expression(draw, depth=0):
    def sub(kind):
        return draw(pg_expression(depth + 1)) if depth < 2 and draw(st.integers(0, 2)) == 0 else draw(
            st.sampled_from({"n": ["x", "y", "1", "2.5"], "s": ["s", "'a'"], "d": ["d", "current_date"],
                             "b": ["b", "true"]}[kind]))
    shape = draw(st.sampled_from(["atom", "call", "call", "cast", "colon", "op", "case", "case_else", "paren",
                                  "sub", "exists", "array", "row", "alias"] if depth < 2 else ["atom", "call"]))
    fill = {k: (lambda k=k: sub(k)) for k in "nsdb"}

    def filled(template):
        out = template
        for k in "nsdb":
            while "{" + k + "}" in out:
                out = out.replace("{" + k + "}", fill[k](), 1)
        return out

    if shape == "atom":
        return draw(st.sampled_from(ATOMS))
    if shape == "call":
        return filled(draw(st.sampled_from(CALLS)))
    if shape == "cast":
        return f"CAST({draw(pg_expression(depth + 1))} AS {draw(st.sampled_from(TYPES))})"
    if shape == "colon":
        return f"({draw(pg_expression(depth + 1))})::{draw(st.sampled_from(TYPES))}"
    if shape == "op":
        return filled(draw(st.sampled_from(OPERATORS)))
    if shape == "case":
        return f"CASE WHEN {sub('b')} THEN {draw(pg_expression(depth + 1))} END"
    if shape == "case_else":
        return f"CASE WHEN {sub('b')} THEN {draw(pg_expression(depth + 1))} ELSE {draw(pg_expression(depth + 1))} END"
    if shape == "paren":
        return f"({draw(pg_expression(depth + 1))})"
    if shape == "sub":
        return f"(SELECT {draw(pg_expression(depth + 1))} FROM t LIMIT 1)"
    if shape == "exists":
        return f"EXISTS (SELECT {draw(pg_expression(depth + 1))} FROM t)"
    if shape == "array":
        return f"ARRAY[{sub('n')}, {sub('n')}]"
    if shape == "row":
        return f"ROW({sub('n')}, {sub('s')})"
    return f"{draw(pg_expression(depth + 1))} AS {draw(st.sampled_from(['v', 'count', 'x', 'Upper']))}"


@pytest.fixture(scope="module")
def postgres():
    import psycopg

    try:
        con = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                              connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); .ci/run shows how to start it")
    con.execute("CREATE TEMP TABLE t (x int, y int, s text, d date, b bool, a int[])")
    yield con
    con.close()


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.filter_too_much])
@given(expressions=st.lists(pg_expression(), min_size=1, max_size=3))
def test_generated_expressions_are_named_as_postgresql_names_them(postgres, expressions):
    import psycopg
    from hypothesis import assume, event

    sql = f"SELECT {', '.join(expressions)} FROM t"
    try:
        names = [c.name for c in postgres.execute(sql).description]
    except psycopg.Error:
        event("PostgreSQL refused the expression (types)")
        assume(False)
    try:
        root = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        event("sqlglot cannot parse it")
        assume(False)
    assert name_outputs(root, Namer(sql, "postgres", root)) == names, sql
