"""Property-based fuzzing of the governed engine (hypothesis): SQL generated from a grammar of allowed
and forbidden constructs, run as the tax department, which may read market regulation's register
(unconditional), two columns of the resident register for one district (a grant; resident IDs
masked) and nothing of the household moves (not_shared).

The oracle works on values, not on SQL: whatever the query, a result never holds a full resident ID,
a resident's name, anything from the household moves, or a resident outside the granted district.
A refusal is always allowed; a crash other than a refusal or a query error is a failure.
Bounded in time: ``max_examples`` keeps it under a minute in the fast tier."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lakehouse import Lake
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import add_grant
from tests.helpers import CITY_PREFIX, DISTRICT, demo_home, rows

TABLES = {
    "shared.amr_enterprise_register": ["uscc", "enterprise_name", "legal_representative", "division_code"],
    "shared.psb_resident_register": ["resident_id", "division_code", "person_name", "birth_date",
                                     "household_address"],
    "shared.psb_household_moves": ["resident_id", "from_division", "to_division"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home, registry = demo_home(tmp_path_factory.mktemp("fuzz") / "home", (
        "mca_admin_divisions", "amr_enterprise_register", "psb_resident_register", "psb_household_moves"))
    with Lake(home.lake) as lake:
        add_grant(lake, registry, "tax", "psb_resident_register", columns=["resident_id", "division_code"],
                  row_filter=f"division_code = '{DISTRICT}'")
    ids = {r[0] for r in rows(home, "SELECT resident_id FROM shared.psb_resident_register")}
    names = {r[0] for r in rows(home, "SELECT person_name FROM shared.psb_resident_register") if r[0]}
    moves = {str(v) for r in rows(home, "SELECT * FROM shared.psb_household_moves") for v in r if v is not None}
    outside = {(i[:6], i[-4:]) for i, d in rows(home, "SELECT resident_id, division_code FROM "
                                                       "shared.psb_resident_register") if d != DISTRICT}
    inside = {(i[:6], i[-4:]) for i, d in rows(home, "SELECT resident_id, division_code FROM "
                                                      "shared.psb_resident_register") if d == DISTRICT}
    # values tax may see anyway (a legal representative can share a resident's name; division codes are
    # public): the oracle only looks for values that exist nowhere tax may read
    visible = {str(v) for table in ("amr_enterprise_register", "mca_admin_divisions")
               for r in rows(home, f"SELECT * FROM shared.{table}") for v in r if v is not None}
    visible |= {r[0] for r in rows(home, "SELECT DISTINCT division_code FROM shared.psb_resident_register")}
    engine = GovernedEngine(home, registry, persistent=True)
    yield engine, {"ids": ids, "names": names - visible, "moves": moves - visible, "outside": outside - inside}
    engine.close()


ALL_COLUMNS = sorted({c for cols in TABLES.values() for c in cols})
SAFE_FUNCTIONS = ["lower", "upper", "length", "reverse", "coalesce", "concat", "md5"]
BAD_FUNCTIONS = ["getenv", "read_csv", "glob", "current_setting", "string_agg", "list"]


def columns_of(table: str):
    """Mostly the table's own columns (so that many queries are answered), sometimes any column."""
    return st.one_of(st.sampled_from(TABLES[table]), st.sampled_from(TABLES[table]),
                     st.sampled_from(TABLES[table]), st.sampled_from(ALL_COLUMNS))


@st.composite
def expressions(draw, table: str):
    col = draw(columns_of(table))
    kind = draw(st.sampled_from(["col", "col", "func", "func", "bad", "cast", "case", "literal", "subquery"]))
    if kind == "col":
        return col
    if kind == "func":
        fn = draw(st.sampled_from(SAFE_FUNCTIONS))
        return f"{fn}({col}, 'x')" if fn in ("coalesce", "concat") else f"{fn}({col})"
    if kind == "bad":
        return f"{draw(st.sampled_from(BAD_FUNCTIONS))}({col})"
    if kind == "cast":
        return f"CAST({col} AS VARCHAR)"
    if kind == "case":
        return f"CASE WHEN {col} LIKE '{CITY_PREFIX}%' THEN {col} ELSE 'x' END"
    if kind == "literal":
        return draw(st.sampled_from(["1", "'a'", "NULL", "'/etc/passwd'"]))
    other = draw(st.sampled_from(sorted(TABLES)))
    return f"(SELECT max({draw(columns_of(other))}) FROM {other})"


@st.composite
def queries(draw):
    table = draw(st.sampled_from(sorted(TABLES) + ["shared.amr_enterprise_register",
                                                     "shared.psb_resident_register"]))
    select = ", ".join(draw(st.lists(expressions(table), min_size=1, max_size=3)))
    sql = f"SELECT {select} FROM {table}"
    if draw(st.booleans()):
        col = draw(columns_of(table))
        sql += draw(st.sampled_from([f" WHERE {col} = 'x'", f" WHERE {col} LIKE '3%'",
                                     f" WHERE {col} IS NOT NULL OR 1 = 1", f" WHERE length({col}) > 3"]))
    if draw(st.booleans()):
        sql += f" ORDER BY {draw(columns_of(table))}"
    shape = draw(st.sampled_from(["plain", "plain", "union", "cte", "join", "two", "comment", "limit"]))
    if shape == "union":
        other = draw(st.sampled_from(sorted(TABLES)))
        sql = f"{sql} UNION ALL SELECT {draw(columns_of(other))} FROM {other}"
    elif shape == "cte":
        sql = f"WITH t AS ({sql}) SELECT * FROM t"
    elif shape == "join":
        other = draw(st.sampled_from(sorted(TABLES)))
        sql = (f"SELECT a.*, b.* FROM {table} a JOIN {other} b ON a.division_code = b.division_code "
               f"LIMIT 50")
    elif shape == "two":
        sql = f"{sql}; SELECT * FROM shared.psb_household_moves"
    elif shape == "comment":
        sql = f"{sql} -- ; DROP TABLE x"
    elif shape == "limit":
        sql += " LIMIT 20"
    return sql


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(sql=queries())
def test_no_result_ever_leaks_what_tax_may_not_see(world, sql):
    engine, secret = world
    try:
        result = engine.query("tax", sql, purpose="fuzz")
    except (QueryRefused, QueryFailed) as exc:
        event(type(exc).__name__)
        return  # refused (and audited), or a query DuckDB rejects: nothing was shown
    event("answered")
    for row in result.rows:
        for value in row:
            text = "" if value is None else str(value)
            assert text not in secret["ids"], f"an unmasked resident ID came out of: {sql}"
            assert text not in secret["names"], f"a resident's name came out of: {sql}"
            assert text not in secret["moves"], f"household moves data came out of: {sql}"
            if len(text) == 18 and text[6:14] == "********":
                assert (text[:6], text[-4:]) not in secret["outside"], f"a resident outside the grant: {sql}"
