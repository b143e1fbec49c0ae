"""No silent truncation: every governed answer is whole, on every endpoint, or an explicit error.

World: a register of 12,345 firms (more than the 10,000 rows every answer used to be cut to, without a word),
owned by ``amr``, conditional, with the enterprise name a sensitive element (masked for consumers). ``amr``
reads its own table whole: the oracle is DuckDB on the raw table. ``tax`` holds a grant with a row filter:
the oracle is the policy relation (sharing.policy.relation) run by DuckDB on the lake. Values are compared,
not counts only. Hypothesis checks the result forms (Arrow batches, Python values) and the encoders against
DuckDB's own ``fetchall`` and ``to_arrow_table`` on generated tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import QueryLimits, Settings
from sharing import export, sql
from sharing.engine import GovernedEngine, Limits
from sharing.exceptions import QueryStopped, ResultTooLarge
from tests.support.no_truncation import ORDER, ROWS, big_home, policy_relation, raw


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, registry = big_home(tmp_path_factory.mktemp("bulk") / "home")
    engine = GovernedEngine(settings, registry, persistent=True)
    yield settings, registry, engine
    engine.close()


@pytest.fixture(scope="module")
def oracle(world):
    settings, registry, engine = world
    everything = raw(settings, "SELECT * FROM lake.shared.firms" + ORDER)
    seen_by_tax = raw(settings, f"SELECT * FROM ({policy_relation(settings, registry, 'tax')}) AS r" + ORDER)
    assert everything.num_rows == ROWS and 10_000 < seen_by_tax.num_rows < ROWS
    assert set(seen_by_tax.column("enterprise_name").to_pylist()) == {"***"}  # the oracle masks too
    return {"amr": everything, "tax": seen_by_tax}


# -- the result forms and the encoders, on generated tables ------------------------------------------------

VALUES = st.tuples(
    st.one_of(st.none(), st.integers(-2**40, 2**40)),
    st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                                 max_size=12)),
    st.one_of(st.none(), st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False)),
    st.one_of(st.none(), st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1))),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
)
# the types whose Arrow export differs from fetchall (HUGEINT, UUID, INTERVAL, MAP, BIT): rows must not tell
QUERY = ("SELECT i, s, d, day, f, sum(i) OVER (ORDER BY rowid) AS running, md5(coalesce(s, ''))::UUID AS id, "
         "to_days((coalesce(i, 0) % 1000)::INTEGER) + INTERVAL 1 MONTH AS span, MAP {'k': i} AS m, "
         "'1011'::BIT AS b FROM t ORDER BY rowid")


def table_of(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i BIGINT, s VARCHAR, d DECIMAL(12, 2), day DATE, f DOUBLE)")
    if rows:
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    return con


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(VALUES, max_size=60), batch=st.integers(1, 17))
def test_both_result_forms_are_every_row_as_duckdb_gives_it(rows, batch):
    con = table_of(rows)
    expected = con.execute(QUERY).fetchall()
    expected_arrow = con.execute(QUERY).to_arrow_table()
    old = sql.BATCH_ROWS, sql.FETCH_ROWS
    sql.BATCH_ROWS = sql.FETCH_ROWS = batch  # many batches and chunks, whatever the size
    try:
        arrow = sql.fetch(con.execute(QUERY), arrow=True)
        python = sql.fetch(con.execute(QUERY), arrow=False)
    finally:
        sql.BATCH_ROWS, sql.FETCH_ROWS = old
    assert arrow.row_count == python.row_count == len(rows)
    assert list(arrow.iter_rows()) == expected and list(python.iter_rows()) == expected
    assert arrow.rows == expected and python.rows == expected
    assert arrow.to_arrow().equals(expected_arrow)
    assert arrow.columns == python.columns == [d[0] for d in con.execute(QUERY).description]
    assert arrow == python


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(VALUES, max_size=40), limit=st.integers(0, 45), arrow=st.booleans())
def test_a_bound_is_an_error_never_a_shorter_answer(rows, limit, arrow):
    con = table_of(rows)
    if limit and len(rows) > limit:
        with pytest.raises(ResultTooLarge, match="ONESOURCE_QUERY_ROWS"):
            sql.fetch(con.execute("SELECT * FROM t"), arrow=arrow, max_rows=limit)
    else:
        assert sql.fetch(con.execute("SELECT * FROM t"), arrow=arrow, max_rows=limit).row_count == len(rows)
    if rows:
        with pytest.raises(ResultTooLarge, match="ONESOURCE_QUERY_RESULT_BYTES"):
            sql.fetch(con.execute("SELECT * FROM t"), arrow=arrow, max_bytes=1)


def _decoded(fmt: str, body: bytes) -> object:
    if fmt == "arrow":
        return pa.ipc.open_stream(body).read_all()
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(body))
    if fmt == "csv":
        return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    return json.loads(body)


def _expected(fmt: str, result: sql.QueryResult, table: pa.Table) -> object:
    if fmt in ("arrow", "parquet"):
        return table
    if fmt == "csv":
        return [result.columns] + [["" if v is None else str(v) for v in row] for row in result.rows]
    return {"columns": result.columns, "row_count": result.row_count,
            "rows": [[export.json_value(v) for v in row] for row in result.rows]}


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(VALUES, max_size=50), fmt=st.sampled_from(export.FORMATS), arrow=st.booleans())
def test_every_encoding_decodes_to_every_row(rows, fmt, arrow):
    con = table_of(rows)
    query = "SELECT i, s, d, day, f FROM t ORDER BY rowid"
    result = sql.fetch(con.execute(query), arrow=arrow)
    body = b"".join(export.chunks(result, fmt))
    decoded = _decoded(fmt, body)
    if fmt in ("arrow", "parquet") and not arrow:  # built from Python values: the types are inferred
        assert decoded.to_pylist() == con.execute(query).to_arrow_table().to_pylist()
    elif fmt in ("arrow", "parquet"):
        assert decoded.equals(con.execute(query).to_arrow_table())
    else:
        assert decoded == _expected(fmt, result, None)


def test_repeated_column_names_survive_every_form():
    con = duckdb.connect()
    result = sql.QueryResult(["a", "a"], [(1, 2), (3, 4)])
    assert result.to_arrow().column_names == ["a", "a"] and result.to_arrow().to_pylist() == [{"a": 2}, {"a": 4}]
    arrow = sql.fetch(con.execute("SELECT 1 AS a, 2 AS a"), arrow=True)
    assert arrow.columns == ["a", "a"] and arrow.rows == [(1, 2)]
    assert list(csv.reader(io.StringIO(b"".join(export.chunks(arrow, "csv")).decode()))) == [["a", "a"], ["1", "2"]]


# -- the governed engine: more than 10,000 rows, as the owner and through a policy relation -----------------

@pytest.mark.parametrize("department", ["amr", "tax"])
def test_the_servers_answer_every_row(world, oracle, department):
    _, _, engine = world
    result = engine.query(department, "SELECT * FROM shared.firms" + ORDER, user=f"{department}_analyst")
    assert result.row_count == oracle[department].num_rows > 10_000
    assert result.to_arrow().equals(oracle[department])
    assert result.rows == [tuple(r.values()) for r in oracle[department].to_pylist()]
    entry = engine.audit.entries()[-1]
    assert (entry["decision"], entry["rows"]) == ("allowed", oracle[department].num_rows)


def test_the_cli_engine_answers_every_row_as_python_values(world, oracle):
    settings, registry, _ = world
    engine = GovernedEngine(settings, registry)
    result = engine.query("tax", "SELECT uscc, staff FROM shared.firms" + ORDER)
    assert result.held_batches is None  # Python values: the CLI does not need pyarrow for a table or CSV
    assert result.rows == [(r["uscc"], r["staff"]) for r in oracle["tax"].select(["uscc", "staff"]).to_pylist()]
    engine.close()


def test_aggregates_over_every_row_match_the_oracle(world, oracle):
    _, _, engine = world
    result = engine.query("tax", "SELECT staff, count(*) AS n, sum(capital) AS capital FROM shared.firms "
                                 "GROUP BY staff ORDER BY staff", user="tax_analyst")
    expected = duckdb.sql("SELECT staff, count(*) AS n, sum(capital) AS capital FROM t GROUP BY staff ORDER BY staff",
                          connection=_holding(oracle["tax"])).fetchall()
    assert result.rows == expected and result.row_count == len(expected) == 4600


def _holding(table: pa.Table) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("t", table)
    return con


def test_the_row_bound_is_a_setting_and_an_explicit_error(world):
    settings, registry, _ = world
    engine = GovernedEngine(settings, registry, Limits(rows=10_000))
    with pytest.raises(ResultTooLarge, match="more than 10,000 rows.*ONESOURCE_QUERY_ROWS"):
        engine.query("amr", "SELECT * FROM shared.firms")
    entry = engine.audit.entries()[-1]
    assert entry["decision"] == "failed" and "ONESOURCE_QUERY_ROWS" in entry["reason"]
    assert engine.query("amr", "SELECT count(*) AS n FROM shared.firms").rows == [(ROWS,)]
    engine.close()


def test_the_size_bound_is_a_setting_and_an_explicit_error(world):
    settings, registry, _ = world
    small = Settings(home=settings.home, limits=QueryLimits(result_bytes="256KiB"))
    engine = GovernedEngine(small, registry, persistent=True)
    try:
        with pytest.raises(ResultTooLarge, match="larger than 256 KiB.*ONESOURCE_QUERY_RESULT_BYTES") as err:
            engine.query("amr", "SELECT * FROM shared.firms", user="amr_analyst")
        assert err.value.sqlstate == "54000"
        assert engine.query("amr", "SELECT uscc FROM shared.firms LIMIT 100", user="amr_analyst").row_count == 100
    finally:
        engine.close()


def test_the_deadline_stops_an_answer_while_it_is_fetched(world):
    """152M rows (a cross join) arrive batch by batch; the deadline interrupts DuckDB between two batches
    (its error comes back through Arrow's stream) and the query stops as timed out, not as a failure."""
    settings, registry, _ = world
    roomy = Settings(home=settings.home, limits=QueryLimits(seconds=1.5, result_bytes="64GiB"))
    engine = GovernedEngine(roomy, registry, persistent=True)
    try:
        with pytest.raises(QueryStopped, match="time limit|timed out|seconds") as err:
            # md5 per row keeps the stream busy for far longer than the deadline on any host (a bare
            # column of the cross join came back whole in 0.37 s on a quiet one)
            engine.query("amr", "SELECT md5(a.staff::VARCHAR || b.staff::VARCHAR) FROM shared.firms a, shared.firms b",
                         user="amr_analyst")
        assert err.value.sqlstate == "57014"
        assert engine.audit.entries()[-1]["decision"] == "failed"
    finally:
        engine.close()


# -- HTTP (in process; tests/test_bulk_http.py has the real server with pandas and polars) ------------------

@pytest.fixture(scope="module")
def http(world):
    from fastapi.testclient import TestClient

    from onesource.serve import create_app

    settings, _, engine = world
    tokens = {d: u["token"] for d, u in json.loads((settings.home / "users.json").read_text()).items()}
    with TestClient(create_app(engine)) as client:
        yield client, tokens


@pytest.mark.parametrize("fmt, how", [("json", {}), ("csv", {"accept": "text/csv"}),
                                      ("arrow", {"accept": export.MEDIA_TYPES["arrow"]}),
                                      ("parquet", {"accept": "application/vnd.apache.parquet"}),
                                      ("parquet", "field"), ("arrow", "field")])
def test_http_streams_every_row_in_every_format(http, oracle, fmt, how):
    client, tokens = http
    body = {"sql": "SELECT * FROM shared.firms" + ORDER} | ({"format": fmt} if how == "field" else {})
    headers = {"Authorization": f"Bearer {tokens['tax']}"} | (how if isinstance(how, dict) else {})
    answer = client.post("/api/v1/query", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(export.MEDIA_TYPES[fmt].split(";")[0])
    assert int(answer.headers["x-row-count"]) == oracle["tax"].num_rows
    decoded = _decoded(fmt, answer.content)
    expected = oracle["tax"]
    if fmt in ("arrow", "parquet"):
        assert decoded.equals(expected)
        return
    result = sql.QueryResult(expected.column_names, batches=expected.to_batches(), schema=expected.schema)
    assert decoded == _expected(fmt, result, expected)


def test_http_refuses_a_result_beyond_the_row_bound_with_the_reason(world, http):
    client, tokens = http
    _, _, engine = world
    engine.limits = Limits(rows=10_000, seconds=engine.limits.seconds)
    try:
        answer = client.post("/api/v1/query", json={"sql": "SELECT * FROM shared.firms"},
                             headers={"Authorization": f"Bearer {tokens['amr']}"})
    finally:
        engine.limits = Limits(rows=0, seconds=engine.limits.seconds)
    assert answer.status_code == 400 and "ONESOURCE_QUERY_ROWS" in answer.json()["reason"]


# -- the CLI ------------------------------------------------------------------------------------------------

@pytest.fixture
def cli(world, monkeypatch):
    settings, _, _ = world
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    from onesource.cli import main

    return main


def test_cli_table_says_plainly_how_many_rows_it_did_not_print(cli, oracle, capsys):
    total = oracle["tax"].num_rows
    assert cli(["sql", "--as", "tax", "SELECT uscc, staff FROM shared.firms" + ORDER]) == 0
    out = capsys.readouterr().out
    assert f"first 1,000 of {total:,} rows (use --max-rows 0 / --output file.parquet to get all)" in out
    assert cli(["sql", "--as", "tax", "--max-rows", "3", "SELECT uscc FROM shared.firms" + ORDER]) == 0
    assert f"first 3 of {total:,} rows" in capsys.readouterr().out
    assert cli(["sql", "--as", "tax", "SELECT count(*) AS n FROM shared.firms"]) == 0
    out = capsys.readouterr().out
    assert "1 row(s)" in out and "first" not in out


def test_cli_csv_and_json_print_every_row(cli, oracle, capsys):
    expected = [[r["uscc"], str(r["staff"])] for r in oracle["tax"].select(["uscc", "staff"]).to_pylist()]
    assert cli(["sql", "--as", "tax", "--format", "csv", "SELECT uscc, staff FROM shared.firms" + ORDER]) == 0
    captured = capsys.readouterr()
    assert list(csv.reader(io.StringIO(captured.out)))[1:] == expected and "first" not in captured.err
    assert cli(["sql", "--as", "tax", "--format", "json", "SELECT uscc FROM shared.firms" + ORDER]) == 0
    assert [r["uscc"] for r in json.loads(capsys.readouterr().out)] == [r[0] for r in expected]
    assert cli(["sql", "--as", "tax", "--format", "csv", "--max-rows", "5", "SELECT uscc FROM shared.firms"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6 and f"first 5 of {len(expected):,} rows" in captured.err


@pytest.mark.parametrize("name, fmt, read", [
    ("all.parquet", None, lambda p: pq.read_table(p)),
    ("all.arrow", None, lambda p: pa.Table.from_pandas(pd.read_feather(p), preserve_index=False)),
    ("all.bin", "arrow", lambda p: pa.ipc.open_file(p).read_all()),
    ("all.csv", None, None), ("all.json", None, None)])
def test_cli_output_writes_every_row(cli, oracle, tmp_path, capsys, name, fmt, read):
    path = tmp_path / name
    args = ["sql", "--as", "tax", "--output", str(path)] + (["--format", fmt] if fmt else [])
    assert cli(args + ["SELECT * FROM shared.firms" + ORDER]) == 0
    expected = oracle["tax"]
    assert f"{expected.num_rows:,} row(s) written to {path}" in capsys.readouterr().err
    if name.endswith(".csv"):
        assert len(list(csv.reader(path.open(encoding="utf-8")))) == expected.num_rows + 1
    elif name.endswith(".json"):
        assert [r["uscc"] for r in json.loads(path.read_text())] == expected.column("uscc").to_pylist()
    elif name.endswith(".arrow"):  # pandas turns decimals and dates into Python objects: compare values
        assert read(path).to_pylist() == expected.to_pylist()
    else:
        assert read(path).equals(expected)


def test_cli_operator_queries_are_whole_too(cli, capsys):
    assert cli(["sql", "--format", "csv", "SELECT uscc FROM shared.firms"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == ROWS + 1
    assert cli(["sql", "--limit", "2", "--format", "csv", "SELECT uscc FROM shared.firms"]) == 0  # the old flag
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and f"first 2 of {ROWS:,} rows" in captured.err


def test_cli_binary_formats_need_a_file(cli, capsys):
    assert cli(["sql", "--as", "tax", "--format", "parquet", "SELECT 1 AS x FROM shared.firms LIMIT 1"]) == 2
    assert "--output FILE" in capsys.readouterr().err


def test_decimal_values_keep_their_digits():
    con = duckdb.connect()
    result = sql.fetch(con.execute("SELECT 12345678901234567890.12::DECIMAL(38,2) AS d"), arrow=True)
    assert result.rows == [(decimal.Decimal("12345678901234567890.12"),)]
