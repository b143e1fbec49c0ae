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
from lakehouse.lake import CATALOG, OPS, Lake

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
