"""The ledger (lakehouse.ledger) is the one writer of ``lake.ops.*``, by name: any row of any ledger table, with
any subset of its columns, reads back exactly as written (the columns it left out NULL), and a name the table
does not have is refused before anything is written."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import ledger
from lakehouse.lake import CATALOG, Lake
from lakehouse.ledger import OPS

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
VALUES = {
    "VARCHAR": TEXT,
    "BIGINT": st.integers(-(2**63), 2**63 - 1),
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "BOOLEAN": st.booleans(),
    "DOUBLE": st.floats(allow_nan=False, allow_infinity=False),
    "TIMESTAMP": st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    "VARCHAR[]": st.lists(TEXT, max_size=3),
}


@st.composite
def rows(draw):
    table = draw(st.sampled_from(sorted(ledger.TABLES)))
    types = ledger.columns(table)
    chosen = draw(st.lists(st.sampled_from(list(types)), min_size=1, unique=True))
    written = [{c: draw(st.none() | VALUES[types[c]]) for c in chosen} for _ in range(draw(st.integers(1, 3)))]
    return table, written


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    home = tmp_path_factory.mktemp("ledger")
    with Lake(Settings(home=home).lake) as lake:
        yield lake


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows())
def test_any_row_of_any_table_reads_back_as_written(lake, case):
    table, written = case
    names = list(ledger.columns(table))
    with lake.transaction() as con:
        con.execute(f"DELETE FROM {CATALOG}.{OPS}.{table}")
        ledger.append(con, table, *written)
        back = con.execute(f"SELECT {', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)} FROM {CATALOG}.{OPS}.{table}"
                           ).fetchall()
        con.execute(f"DELETE FROM {CATALOG}.{OPS}.{table}")
    expected = sorted((tuple(row.get(n) for n in names) for row in written), key=repr)
    assert sorted(back, key=repr) == expected


def test_a_name_the_table_lacks_is_refused_and_nothing_is_written(lake):
    with lake.transaction() as con:
        before = con.execute(f"SELECT count(*) FROM {CATALOG}.{OPS}.grant_matches").fetchone()[0]
        with pytest.raises(ValueError, match="ops.grant_matches has no column quota"):
            ledger.append(con, "grant_matches", {"grant_id": "g1", "column_name": "phone", "daily_quota": 5},
                          {"grant_id": "g2", "quota": 5})
        assert con.execute(f"SELECT count(*) FROM {CATALOG}.{OPS}.grant_matches").fetchone()[0] == before
    with pytest.raises(ValueError, match="not a ledger table"):
        ledger.columns("no_such_table")


# -- the names and the readers (issue 22: the ledger is the one module that names its tables)

def test_ref_names_a_declared_table_and_refuses_any_other():
    assert ledger.ref("loads") == f"{CATALOG}.{OPS}.loads"
    with pytest.raises(ValueError, match="'load' is not a ledger table; the ledger's tables are loads, quality_runs"):
        ledger.ref("load")
    with pytest.raises(ValueError, match="not a ledger table"):
        ledger.insert_select(None, "grant", "SELECT 1 AS grant_id")  # refused before any SQL runs: no connection


def test_each_reader_row_has_its_tables_columns_by_name():
    from dataclasses import fields

    assert [f.name for f in fields(ledger.Load)] == list(ledger.columns("loads"))
    assert [f.name for f in fields(ledger.QualityRun)] == list(ledger.columns("quality_runs"))
    assert {f.name for f in fields(ledger.UserRow)} <= set(ledger.columns("users"))


def test_each_row_type_has_its_tables_columns_and_their_types():
    import collections.abc
    import typing

    python = {"VARCHAR": str, "BIGINT": int, "INTEGER": int, "BOOLEAN": bool, "DOUBLE": float,
              "TIMESTAMP": dt.datetime, "VARCHAR[]": collections.abc.Sequence}
    assert list(ledger.ROW_TYPES) == list(ledger.TABLES) == list(typing.get_args(ledger.Table))
    assert set(typing.get_args(ledger.Row)) == set(ledger.ROW_TYPES.values())
    for table, row in ledger.ROW_TYPES.items():
        hints = typing.get_type_hints(row, localns=vars(ledger))
        assert list(hints) == list(ledger.columns(table)), table
        for column, sql_type in ledger.columns(table).items():
            hint = hints[column]
            while typing.get_origin(hint) in (typing.Required, typing.NotRequired):
                hint = typing.get_args(hint)[0]
            allowed = {typing.get_origin(a) or a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)}
            if typing.get_origin(hint) is typing.Literal:  # a status word
                allowed = {type(v) for v in typing.get_args(hint)}
            assert allowed == {python[sql_type]}, (table, column, hint)
    assert set(typing.get_args(ledger.LoadStatus)) == set(ledger.LOAD_STATUSES)
    assert set(typing.get_type_hints(ledger.UserChanges)) <= set(ledger.columns("users"))


def _load(load_id, status, finished_at, *, dataset="firms", sha256="s", rows_in=1):
    return {"load_id": load_id, "dataset": dataset, "status": status, "sha256": sha256, "rows_in": rows_in,
            "started_at": finished_at - dt.timedelta(minutes=1), "finished_at": finished_at}


def test_the_load_readers(settings):
    t = dt.datetime(2026, 3, 1, 8)
    with Lake(settings.lake) as lake:
        lake.append("loads", "loads",
                    _load("l1", "published", t, rows_in=10),
                    _load("l2", "quarantined", t + dt.timedelta(hours=1), rows_in=11),
                    _load("l3", "published", t + dt.timedelta(hours=2), rows_in=12),
                    _load("l4", "failed", t + dt.timedelta(hours=3), sha256=None),  # no extract arrived
                    _load("m1", "quarantined", t + dt.timedelta(hours=4), dataset="people"))
        con = lake.con
        last = ledger.last_published_load(con, "firms")
        assert (last.load_id, last.rows_in, last.status, last.finished_at) == ("l3", 12, "published", t + dt.timedelta(hours=2))
        assert ledger.last_published_load(con, "people") is None
        assert ledger.last_published_load(con, "nobody") is None
        assert [x.load_id for x in ledger.loads_since(con)] == ["l1", "l2", "l3", "l4", "m1"]
        assert [x.load_id for x in ledger.loads_since(con, t + dt.timedelta(minutes=90))] == ["l3", "l4", "m1"]
        delivered = ledger.last_delivered_loads(con)
        assert {k: v.load_id for k, v in delivered.items()} == {"firms": "l3", "people": "m1"}  # l4 delivered nothing
        earlier = ledger.last_delivered_loads(con, as_of=t + dt.timedelta(minutes=90))
        assert {k: (v.load_id, v.status) for k, v in earlier.items()} == {"firms": ("l2", "quarantined")}


def test_the_quality_and_user_readers(settings):
    t = dt.datetime(2026, 3, 1, 8)
    with Lake(settings.lake) as lake:
        lake.append("runs", "quality_runs", *({"load_id": f"l{i}", "dataset": "firms", "run_at": t + dt.timedelta(hours=i),
                                                "passed": i != 1, "checks": 5, "blocking_failed": int(i == 1)}
                                               for i in range(3)))
        lake.append("users", "users", {"user_name": "ana", "department": "tax", "role": "analyst"},
                    {"user_name": "bo", "department": "tax", "role": "steward", "disabled_at": t})
        runs = ledger.quality_runs(lake.con, "firms")
        assert [(r.load_id, r.passed, r.blocking_failed) for r in runs] == [("l2", True, 0), ("l1", False, 1), ("l0", True, 0)]
        assert [r.load_id for r in ledger.quality_runs(lake.con, "firms", limit=1)] == ["l2"]
        assert ledger.quality_runs(lake.con, "people") == []
        ana, bo = ledger.user(lake.con, "ana"), ledger.user(lake.con, "bo")
        assert (ana.department, ana.role, ana.active) == ("tax", "analyst", True)
        assert (bo.role, bo.active, bo.disabled_at) == ("steward", False, t)
        assert ledger.user(lake.con, "cy") is None
        assert ledger.exists(lake.con, "users") and "organisation" in ledger.columns_in(lake.con, "users")


def test_a_lake_without_the_ledger_has_no_table_and_no_user():
    import duckdb

    con = duckdb.connect()
    con.execute(f"ATTACH ':memory:' AS {CATALOG}")  # a catalog named like the lake, without the ledger's tables
    assert not ledger.exists(con, "users") and ledger.columns_in(con, "users") == set()
    assert ledger.user(con, "ana") is None
