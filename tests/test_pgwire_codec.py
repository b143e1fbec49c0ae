"""The Postgres wire's codecs without a server: binary and text forms of every type round-trip, numeric's
base-10000 digits equal Decimal's value, a bound literal evaluates in DuckDB to the value it was made from,
and a simple-query string splits where PostgreSQL would."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharing.pgwire import types as t
from sharing.pgwire.params import bind, literal, parameter_types
from sharing.pgwire.server import split_statements

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
VALUES = {
    t.BOOL: st.booleans(), t.INT2: st.integers(-(2**15), 2**15 - 1), t.INT4: st.integers(-(2**31), 2**31 - 1),
    t.INT8: st.integers(-(2**63), 2**63 - 1), t.FLOAT8: st.floats(allow_nan=False),
    t.NUMERIC: st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
    t.DATE: st.dates(), t.TIME: st.times(), t.TIMESTAMP: st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)),
    t.TIMESTAMPTZ: st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)),
    t.INTERVAL: st.timedeltas(dt.timedelta(days=-10**6), dt.timedelta(days=10**6)), t.UUID: st.uuids(),
    t.BYTEA: st.binary(max_size=40), t.TEXT: TEXT,
}


@pytest.mark.parametrize("oid", sorted(VALUES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_binary_and_text_forms_round_trip(oid, data):
    value = data.draw(VALUES[oid])
    [binary] = t.encoders([oid], [1])
    assert t.decode_parameter(oid, 1, binary(value)) == value
    [text] = t.encoders([oid], [0])
    back = t.decode_parameter(oid, 0, text(value))
    if oid == t.INTERVAL:  # an interval's text goes to DuckDB as it is, which reads PostgreSQL's form
        assert isinstance(back, t.Typed) and _duck(back) == value
    else:
        assert back == value


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_numeric_binary_is_the_decimal_itself(value):
    back = t.numeric_recv(t.numeric_send(value))
    assert back == value and back.as_tuple().exponent == min(0, value.as_tuple().exponent)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=8), st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                                                               max_size=8))
def test_arrays_round_trip_in_both_formats(texts, ints):
    for oid, values in ((1009, texts), (1016, ints)):
        [binary], [text] = t.encoders([oid], [1]), t.encoders([oid], [0])
        assert t.decode_parameter(oid, 1, binary(values)) == values
        assert t.decode_parameter(oid, 0, text(values)) == values


def _duck(value):
    return duckdb.sql("SELECT " + literal(value).sql(dialect="duckdb")).fetchone()[0]


@settings(max_examples=40, deadline=None)
@given(st.one_of(TEXT, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.dates(), st.uuids(),
                 st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)), st.binary(max_size=20),
                 st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**14), max_value=10**14),
                 st.floats(allow_nan=False), st.lists(st.integers(-1000, 1000), max_size=5)))
def test_a_bound_literal_is_the_value_in_duckdb(value):
    assert _duck(value) == value


def test_bind_quotes_values_and_counts_parameters():
    sql = bind("SELECT a FROM shared.t WHERE b = $1 AND c = ANY($2) AND d IS $3", ["x' OR 1=1 --", [1, 2], None])
    assert "'x'' OR 1=1 --'" in sql and "ARRAY[1, 2]" in sql and "IS NULL" in sql
    with pytest.raises(ValueError, match=r"uses \$2 but 1 parameter"):
        bind("SELECT $1, $2", [1])


def test_parameter_types_come_from_casts_limits_and_compared_columns():
    columns = {("t", "day"): t.DATE, ("t", "n"): t.INT8}
    found = parameter_types("SELECT * FROM shared.t WHERE day > $1 AND n = ANY($2) AND $3::numeric > 0 LIMIT $4",
                            [0, 0, 0, 0], lambda table, column: columns.get((table, column)))
    assert found == [t.DATE, 1016, t.NUMERIC, t.INT8]
    assert parameter_types("SELECT $1", [t.UUID], lambda *_: None) == [t.UUID]  # declared wins
    assert parameter_types("SELECT $1 FROM shared.t WHERE secret = $2", [], lambda *_: None) == [t.TEXT, t.TEXT]


def test_simple_query_strings_split_outside_quotes_and_comments():
    assert split_statements("BEGIN; SELECT 'a;b', \"x;\" FROM t -- c;\n; /* ; */ COMMIT;") == \
        ["BEGIN", " SELECT 'a;b', \"x;\" FROM t -- c;\n", " /* ; */ COMMIT"]
    assert split_statements("SELECT $q$;$q$") == ["SELECT $q$;$q$"] and split_statements("  ") == []


def test_result_types_from_duckdb_names():
    assert [t.oid_of_duck(n) for n in ("INTEGER", "DECIMAL(18,2)", "VARCHAR[]", "TIMESTAMP WITH TIME ZONE",
                                       "STRUCT(a INTEGER)", "UUID", "HUGEINT")] == \
        [t.INT4, t.NUMERIC, 1015, t.TIMESTAMPTZ, t.TEXT, t.UUID, t.NUMERIC]
    assert t.oid_of_value(decimal.Decimal(1)) == t.NUMERIC and t.oid_of_value(uuid.uuid4()) == t.UUID


def test_an_unquoted_array_element_keeps_what_postgresql_keeps():
    """PostgreSQL's array input skips only its own six blanks around an unquoted element: a control
    character such as \\x1f (a blank to Python's str.strip) is part of the value."""
    from sharing.pgwire.types import parse_array

    assert parse_array("{\x1f, a ,\x1c\tb}", str) == ["\x1f", "a", "\x1c\tb"]
    assert parse_array("{ \r\n x \v\f}", str) == ["x"]
