"""The lake's table listing (lakehouse.lake.list_tables) names exactly the tables DuckDB's own table listing
names, whatever tables, views, drops, renames and uncommitted changes a schema has.

The listing reads ``information_schema.columns`` because ``information_schema.tables`` asks DuckLake every
table's size, one catalog query per table (a load paid ~1 ms per shared table for it); the oracle here is
that slower listing, on the same connection at the same moment."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import CATALOG, QUARANTINE, SHARED, Lake, list_tables
from lakehouse.ledger import OPS
from lakehouse.standardize import ident

SCHEMAS = (SHARED, QUARANTINE)
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_ 企业名录\"'-.", min_size=1, max_size=12)
STEP = st.one_of(
    st.tuples(st.just("table"), st.sampled_from(SCHEMAS), NAMES, st.integers(1, 3)),
    st.tuples(st.just("view"), st.sampled_from(SCHEMAS), NAMES, st.integers(1, 1)),
    st.tuples(st.just("drop"), st.sampled_from(SCHEMAS), NAMES, st.integers(0, 0)),
    st.tuples(st.just("rename"), st.sampled_from(SCHEMAS), NAMES, st.integers(0, 0)),
    st.tuples(st.just("begin"), st.sampled_from(SCHEMAS), st.just(""), st.integers(0, 0)),
    st.tuples(st.just("end"), st.sampled_from(SCHEMAS), st.just(""), st.integers(0, 1)),
)


def _oracle(lake: Lake, schema: str) -> list[str]:
    return sorted(r[0] for r in lake.con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ?",
        [CATALOG, schema]).fetchall())


def _is_view(lake: Lake, schema: str, name: str) -> bool:
    return bool(lake.con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = ? AND schema_name = ? AND view_name = ?",
        [CATALOG, schema, name]).fetchone()[0])


def _apply(lake: Lake, step: tuple[str, str, str, int], state: dict[str, bool]) -> None:
    kind, schema, name, n = step
    where = f"{CATALOG}.{schema}.{ident(name)}"
    existing = list_tables(lake.con, schema)
    if kind == "table" and name not in existing:
        cols = ", ".join(f"c{i} VARCHAR" for i in range(n))
        lake.con.execute(f"CREATE TABLE {where} ({cols})")
    elif kind == "view" and name not in existing:
        lake.con.execute(f"CREATE VIEW {where} AS SELECT 1 AS one")
    elif kind in ("drop", "rename") and existing:
        victim = existing[len(name) % len(existing)]
        is_view = _is_view(lake, schema, victim)
        what = "VIEW" if is_view else "TABLE"
        if kind == "drop":
            lake.con.execute(f"DROP {what} {CATALOG}.{schema}.{ident(victim)}")
        elif name not in existing and not is_view:
            lake.con.execute(f"ALTER TABLE {CATALOG}.{schema}.{ident(victim)} RENAME TO {ident(name)}")
    elif kind == "begin" and not state["open"]:
        lake.con.execute("BEGIN TRANSACTION")
        state["open"] = True
    elif kind == "end" and state["open"]:
        lake.con.execute("COMMIT" if n else "ROLLBACK")
        state["open"] = False


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory):
    return Settings(home=tmp_path_factory.mktemp("listing") / "home")


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=14))
def test_the_listing_names_what_duckdbs_table_listing_names(lake_home, steps):
    with Lake(lake_home.lake) as lake:
        for schema in SCHEMAS:  # each example starts from empty zones
            for name in list_tables(lake.con, schema):
                what = "VIEW" if _is_view(lake, schema, name) else "TABLE"
                lake.con.execute(f"DROP {what} {CATALOG}.{schema}.{ident(name)}")
        state = {"open": False}
        for step in steps:
            _apply(lake, step, state)
            for schema in SCHEMAS:
                assert list_tables(lake.con, schema) == _oracle(lake, schema), (step, schema)
        if state["open"]:
            lake.con.execute("ROLLBACK")
        for schema in (*SCHEMAS, OPS):
            assert list_tables(lake.con, schema) == _oracle(lake, schema)
    with Lake(lake_home.lake, read_only=True) as reader:  # another process's view of what was committed
        for schema in (*SCHEMAS, OPS):
            assert list_tables(reader.con, schema) == _oracle(reader, schema)
