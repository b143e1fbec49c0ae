"""Slow tier: bulk reads from a real ``onesource serve`` with real pandas and polars.

The world of tests/test_no_truncation.py (12,345 firms, more than the 10,000 rows every answer used to be cut
to): ``amr`` reads its own table whole (oracle: DuckDB on the raw table), ``tax`` through a masked,
row-filtered grant (oracle: the policy relation run by DuckDB). Each answer travels over HTTP as Arrow IPC
and as Parquet (Accept header and ``format`` field), and over the Postgres wire, and is compared whole,
value by value, as a pandas and as a polars DataFrame.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal as assert_polars_equal

from tests.helpers import free_port, wait_for_port
from tests.support.no_truncation import ORDER, big_home, policy_relation, raw

pytestmark = pytest.mark.slow

ARROW = "application/vnd.apache.arrow.stream"
QUERY = "SELECT * FROM shared.firms" + ORDER


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk-live")
    settings, registry = big_home(root / "home")
    users = json.loads((settings.home / "users.json").read_text())
    oracle = {"amr": raw(settings, "SELECT * FROM lake.shared.firms" + ORDER),
              "tax": raw(settings, f"SELECT * FROM ({policy_relation(settings, registry, 'tax')}) AS r" + ORDER)}
    assert oracle["amr"].num_rows > oracle["tax"].num_rows > 10_000
    http_port, pg_port = free_port(), free_port()
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(http_port, seconds=120)
        yield settings, users, oracle, http_port, pg_port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def post(port: int, token: str, body: dict, accept: str | None = None):
    """A POST to /api/v1/query by the standard library: the response object is a stream to read from."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/query", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    return urllib.request.urlopen(request, timeout=120)


@pytest.mark.parametrize("department", ["amr", "tax"])
def test_pandas_reads_every_row_as_arrow_and_parquet(served, department):
    _, users, oracle, port, _ = served
    token = users[department]["token"]
    expected = oracle[department].to_pandas()
    with post(port, token, {"sql": QUERY}, accept=ARROW) as response:
        assert response.headers["Content-Type"] == ARROW
        assert int(response.headers["X-Row-Count"]) == len(expected)
        frame = pa.ipc.open_stream(response).read_pandas()  # read straight from the socket, batch by batch
    pd.testing.assert_frame_equal(frame, expected)
    with post(port, token, {"sql": QUERY, "format": "parquet"}) as response:
        frame = pd.read_parquet(io.BytesIO(response.read()))
    pd.testing.assert_frame_equal(frame, expected)


@pytest.mark.parametrize("department", ["amr", "tax"])
def test_polars_reads_every_row_as_arrow_and_parquet(served, department):
    _, users, oracle, port, _ = served
    token = users[department]["token"]
    expected = pl.from_arrow(oracle[department])
    with post(port, token, {"sql": QUERY, "format": "arrow"}) as response:
        assert_polars_equal(pl.read_ipc_stream(response.read()), expected)
    with post(port, token, {"sql": QUERY}, accept="application/vnd.apache.parquet") as response:
        assert_polars_equal(pl.read_parquet(response.read()), expected)


def test_json_is_whole_too(served):
    _, users, oracle, port, _ = served
    with post(port, users["tax"]["token"], {"sql": "SELECT uscc, staff FROM shared.firms" + ORDER}) as response:
        answer = json.load(response)
    expected = oracle["tax"].select(["uscc", "staff"]).to_pylist()
    assert answer["row_count"] == len(answer["rows"]) == len(expected)
    assert answer["rows"] == [[r["uscc"], r["staff"]] for r in expected]


def test_the_postgres_wire_answers_every_row(served):
    import psycopg

    _, users, oracle, _, pg_port = served
    wait_for_port(pg_port, seconds=60)
    tax = users["tax"]
    with psycopg.connect(host="127.0.0.1", port=pg_port, user=tax["user"], password=tax["password"],
                         dbname="onesource") as con:
        rows = con.execute("SELECT uscc, staff FROM shared.firms" + ORDER).fetchall()
    assert rows == [(r["uscc"], r["staff"]) for r in oracle["tax"].select(["uscc", "staff"]).to_pylist()]
