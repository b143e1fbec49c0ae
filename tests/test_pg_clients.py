"""Slow tier: the client matrix on a real `onesource serve` with TLS configured: psycopg 3 (text and binary,
parameters of every common type, NULL, lists for ANY, named cursors), psycopg2, SQLAlchemy 2 + pandas with
``pool_pre_ping`` (Superset's connection check), asyncpg (binary throughout, prepared statements, cursors),
PgJDBC prepared statements, psql's ``\\copy`` and ``sslmode=require``.

Oracles: a value sent as a parameter comes back equal (``SELECT $1::type``, hypothesis), and filtering a
shared table by a parameter gives the rows the same filter picks in Python from the table read directly."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import REPO_ROOT, Settings
from lakehouse import Lake
from sharing.users import create_user
from tests.helpers import csv_text, drop, firms_dataset, free_port, load, rows, wait_for_port, write_registry
from tests.support.tls import self_signed

pytestmark = pytest.mark.slow

EVENTS = {
    "name": "events", "title": "事件", "owner": "amr", "system": "amr_reg", "update_cycle": "daily",
    "share_type": "unconditional", "key": ["code"],
    "connector": {"kind": "file", "path": "amr/events/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "code", "source": "code", "type": "string", "required": True},
        {"name": "title", "source": "title", "type": "string"},
        {"name": "amount", "source": "amount", "type": "decimal"},
        {"name": "n", "source": "n", "type": "integer"},
        {"name": "day", "source": "day", "type": "date"},
        {"name": "seen_at", "source": "seen_at", "type": "timestamp"},
        {"name": "flag", "source": "flag", "type": "boolean"},
    ],
}
COLUMNS = [c["name"] for c in EVENTS["columns"]]
JDBC_JAR = Path("/root/.m2/repository/org/postgresql/postgresql/42.7.13/postgresql-42.7.13.jar")


def events_csv(count: int = 300, seed: int = 7) -> str:
    """Rows with every column NULL now and then, titles that need CSV quoting, negative numbers."""
    r = random.Random(seed)

    def maybe(text: str) -> str:
        return "" if r.random() < 0.1 else text

    lines = ["code,title,amount,n,day,seen_at,flag"]
    for i in range(count):
        day = dt.date(2020, 1, 1) + dt.timedelta(days=r.randrange(1500))
        seen = dt.datetime(2020, 1, 1) + dt.timedelta(seconds=r.randrange(10**8))
        title = maybe(r.choice(["甲", "乙", "丙 丁", "a,b", 'q"x']))
        lines.append(",".join([f"E{i:04d}", '"' + title.replace('"', '""') + '"' if title else "",
                               maybe(f"{r.randrange(-10**6, 10**6) / 100:.2f}"), maybe(str(r.randrange(-1000, 1000))),
                               maybe(day.isoformat()), maybe(seen.isoformat(sep=" ")),
                               maybe(r.choice(["true", "false"]))]))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings_ = Settings(home=tmp_path_factory.mktemp("pg-clients") / "home")
    write_registry(settings_.registry_dir, [firms_dataset(), EVENTS])
    drop(settings_, "amr/firms/a.csv", csv_text())
    drop(settings_, "amr/events/a.csv", events_csv())
    assert [r.status for r in load(settings_)] == ["published"]
    assert [r.status for r in load(settings_, "events")] == ["published"]
    with Lake(settings_.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_analyst")
    cert, key = self_signed(settings_.home)
    pg_port, http_port = free_port(), free_port()
    env = {**os.environ, "ONESOURCE_HOME": str(settings_.home), "ONESOURCE_PG_TLS_CERT": str(cert),
           "ONESOURCE_PG_TLS_KEY": str(key)}
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env=env, cwd=REPO_ROOT,
                            stdout=open(settings_.home / "serve.out", "a"), stderr=subprocess.STDOUT)
    wait_for_port(pg_port, proc)
    table = rows(settings_, f"SELECT {', '.join(COLUMNS)} FROM shared.events ORDER BY code")
    yield {"settings": settings_, "port": pg_port, "password": password, "rows": table, "cert": cert, "key": key}
    proc.terminate()
    proc.wait(timeout=30)


def dsn(served, **extra) -> str:
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    return f"host=127.0.0.1 port={served['port']} dbname=onesource user=tax_analyst password={served['password']} {more}"


@pytest.fixture(scope="module")
def conn(served):
    with psycopg.connect(dsn(served, sslmode="disable"), autocommit=True) as c:
        yield c


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
ROUND_TRIPS = {
    "text": TEXT, "int2": st.integers(-(2**15), 2**15 - 1), "int4": st.integers(-(2**31), 2**31 - 1),
    "int8": st.integers(-(2**63), 2**63 - 1), "float8": st.floats(allow_nan=False, allow_infinity=False),
    "numeric(18,6)": st.decimals(places=6, min_value=-(10**11), max_value=10**11, allow_nan=False),
    "bool": st.booleans(), "date": st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)), "time": st.times(),
    "timestamp": st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)),
    "timestamptz": st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)),
    "interval": st.timedeltas(dt.timedelta(days=-10**5), dt.timedelta(days=10**5)), "uuid": st.uuids(),
    "bytea": st.binary(max_size=30), "int8[]": st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                                                         max_size=5),
    "text[]": st.lists(st.one_of(st.none(), TEXT), max_size=5),
}


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("typ", sorted(ROUND_TRIPS))
def test_psycopg_round_trips_a_parameter_of_every_type(conn, typ, binary):
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=st.one_of(st.none(), ROUND_TRIPS[typ]))
    def round_trip(value):
        got = conn.cursor(binary=binary).execute(f"SELECT %s::{typ} AS v FROM shared.events LIMIT 1",
                                                 [value], binary=binary).fetchone()[0]
        assert got == value

    round_trip()


def test_psycopg_json_and_none_and_select_one(conn):
    from psycopg.types.json import Json

    value = {"名": [1, "x", None], "b": {"c": True}}
    for binary in (False, True):
        cur = conn.cursor(binary=binary)
        assert cur.execute("SELECT %s::json AS j", [Json(value)]).fetchone()[0] == value
        assert cur.execute("SELECT %s::int AS a, %s::text AS b", [None, None]).fetchone() == (None, None)
    assert conn.execute("SELECT 1").fetchone() == (1,)


FILTERS = {
    "day": st.dates(dt.date(2019, 6, 1), dt.date(2024, 6, 1)),
    "amount": st.decimals(places=2, min_value=-10_000, max_value=10_000, allow_nan=False),
    "n": st.integers(-1100, 1100),
    "seen_at": st.datetimes(dt.datetime(2019, 12, 1), dt.datetime(2023, 3, 1)),
    "flag": st.booleans(),
    "title": st.sampled_from(["甲", "乙", "丙 丁", "a,b", 'q"x', "none"]),
}
OPS = {">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "=": lambda a, b: a == b}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(column=st.sampled_from(sorted(FILTERS)), op=st.sampled_from(sorted(OPS)), binary=st.booleans(), data=st.data())
def test_filtering_by_a_parameter_equals_filtering_in_python(served, conn, column, op, binary, data):
    value = data.draw(FILTERS[column])
    if column in ("flag", "title"):
        op = "="
    got = conn.cursor(binary=binary).execute(f"SELECT code FROM shared.events WHERE {column} {op} %s ORDER BY code",
                                             [value]).fetchall()
    i = COLUMNS.index(column)
    assert [r[0] for r in got] == [r[0] for r in served["rows"] if r[i] is not None and OPS[op](r[i], value)]


def test_any_of_a_list_and_null_parameters(served, conn):
    table = served["rows"]
    codes = [r[0] for r in table[::7]]
    numbers = sorted({r[3] for r in table[::5] if r[3] is not None})
    for binary in (False, True):
        cur = conn.cursor(binary=binary)
        assert [r[0] for r in cur.execute("SELECT code FROM shared.events WHERE code = ANY(%s) ORDER BY code",
                                          [codes])] == codes
        assert [r[0] for r in cur.execute("SELECT code FROM shared.events WHERE n = ANY(%s) ORDER BY code",
                                          [numbers])] == [r[0] for r in table if r[3] in numbers]
        untitled = cur.execute("SELECT count(*) FROM shared.events WHERE title IS NOT DISTINCT FROM %s", [None])
        assert untitled.fetchone()[0] == sum(1 for r in table if r[1] is None)


def test_server_side_cursors_psycopg_and_psycopg2(served):
    import psycopg2

    expected = [(r[0], r[4]) for r in served["rows"] if r[3] is not None and r[3] > 0]
    with psycopg.connect(dsn(served)) as c:  # sslmode prefer: over TLS
        assert c.pgconn.ssl_in_use
        for binary in (False, True):
            with c.cursor(f"named_{binary}", binary=binary) as cur:
                cur.itersize = 7
                cur.execute("SELECT code, day FROM shared.events WHERE n > %s ORDER BY code", [0])
                assert list(cur) == expected
        with c.cursor("parts") as cur:
            cur.execute("SELECT code FROM shared.events ORDER BY code")
            first, one, rest = cur.fetchmany(3), cur.fetchone(), cur.fetchall()
            assert [r[0] for r in first + [one] + rest] == [r[0] for r in served["rows"]]
    old = psycopg2.connect(host="127.0.0.1", port=served["port"], dbname="onesource", user="tax_analyst",
                           password=served["password"])
    try:
        named = old.cursor("old_named")
        named.itersize = 11
        named.execute("SELECT code, day FROM shared.events WHERE n > %s ORDER BY code", (0,))
        assert list(named) == expected
        named.close()
        plain = old.cursor()
        plain.execute("SELECT code FROM shared.events WHERE day >= %s AND code = ANY(%s) ORDER BY code",
                      (dt.date(2021, 1, 1), [r[0] for r in served["rows"][:40]]))
        assert [r[0] for r in plain.fetchall()] == [r[0] for r in served["rows"][:40]
                                                     if r[4] is not None and r[4] >= dt.date(2021, 1, 1)]
        with pytest.raises(psycopg2.Error, match="not a shared table"):
            plain.execute("SELECT * FROM nope.x")
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):  # as PostgreSQL: the block failed
            plain.execute("SELECT 1")
        old.rollback()
        plain.execute("SELECT count(*) FROM shared.events")
        assert plain.fetchone() == (len(served["rows"]),)
    finally:
        old.close()


def test_sqlalchemy_pandas_read_sql_with_a_date_and_supersets_check(served):
    import pandas as pd
    import sqlalchemy as sa

    since = dt.date(2023, 1, 1)
    expected = [r[0] for r in served["rows"] if r[4] is not None and r[4] >= since]
    for driver in ("psycopg", "psycopg2"):
        engine = sa.create_engine(f"postgresql+{driver}://tax_analyst:{served['password']}@127.0.0.1:"
                                  f"{served['port']}/onesource", pool_pre_ping=True)
        with engine.connect() as c:  # Superset's connection test: connect, ping, SELECT 1
            assert engine.dialect.do_ping(c.connection.dbapi_connection)
            assert c.execute(sa.select(1)).scalar() == 1
            frame = pd.read_sql(sa.text("SELECT code, day FROM shared.events WHERE day >= :d ORDER BY code"), c,
                                params={"d": since})
        assert list(frame["code"]) == expected
        with engine.connect() as c:  # the pooled connection is pinged again, and goes on
            assert c.execute(sa.text("SELECT count(*) FROM shared.events")).scalar() == len(served["rows"])
        engine.dispose()


def test_asyncpg_binary_throughout(served):
    import asyncpg

    table = served["rows"]

    async def run() -> None:
        c = await asyncpg.connect(host="127.0.0.1", port=served["port"], user="tax_analyst",
                                  password=served["password"], database="onesource", ssl="require")
        try:
            got = await c.fetch("SELECT code, amount, n, day, seen_at, flag FROM shared.events WHERE day > $1 "
                                "ORDER BY code", dt.date(2022, 1, 1))
            assert [tuple(r) for r in got] == [(r[0], r[2], r[3], r[4], r[5], r[6]) for r in table
                                               if r[4] is not None and r[4] > dt.date(2022, 1, 1)]
            assert await c.fetchval("SELECT $1::int + 1", 41) == 42
            statement = await c.prepare("SELECT code FROM shared.events WHERE n > $1 ORDER BY code")
            for threshold in (0, 500):
                assert [r[0] for r in await statement.fetch(threshold)] == \
                    [r[0] for r in table if r[3] is not None and r[3] > threshold]
            numbers = sorted({r[3] for r in table[::9] if r[3] is not None})
            assert [r[0] for r in await c.fetch("SELECT code FROM shared.events WHERE n = ANY($1) ORDER BY code",
                                                numbers)] == [r[0] for r in table if r[3] in numbers]
            assert len(await c.fetch("SELECT code FROM shared.events WHERE title = $1 OR $1 IS NULL", None)) == \
                len(table)
            async with c.transaction():
                seen = [r[0] async for r in c.cursor("SELECT code FROM shared.events ORDER BY code", prefetch=13)]
            assert seen == [r[0] for r in table]
        finally:
            await c.close()

    asyncio.run(run())


def test_pgjdbc_prepared_statements(served):
    if not shutil.which("java") or not JDBC_JAR.exists():
        pytest.fail(f"java and PgJDBC are needed ({JDBC_JAR})")
    probe = Path(__file__).parent / "clients" / "JdbcPrepared.java"
    out = subprocess.run(["java", "-cp", str(JDBC_JAR), str(probe),
                          f"jdbc:postgresql://127.0.0.1:{served['port']}/onesource", "tax_analyst",
                          served["password"]], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    table = served["rows"]
    expected = [f"count {i} {sum(1 for r in table if r[4] and r[4] >= dt.date(2022, 1, 1) and r[3] is not None and r[3] > i and r[6] is True)}"
                for i in range(7)]
    filtered = sum(1 for r in table if r[2] is not None and r[2] > decimal.Decimal("100.50") and r[5] is not None
                   and r[5] < dt.datetime(2021, 6, 1) and r[1] is not None)  # IS DISTINCT FROM NULL
    assert out.stdout.splitlines() == [*expected, f"filtered {filtered}", "any E0001 E0003",
                                       f"fetched {len(table)}"]


def _psql(served, command: str, sslmode: str = "disable") -> subprocess.CompletedProcess:
    if not shutil.which("psql"):
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    return subprocess.run(["psql", f"host=127.0.0.1 port={served['port']} dbname=onesource user=tax_analyst "
                                   f"sslmode={sslmode}", "-At", "-c", command],
                          env={**os.environ, "PGPASSWORD": served["password"]}, capture_output=True, text=True,
                          timeout=60)


def test_psql_copy_to_stdout_and_tls(served):
    import csv
    import io

    out = _psql(served, r"\copy (SELECT code, title, amount FROM shared.events ORDER BY code) to stdout with csv header")
    assert out.returncode == 0, out.stderr
    parsed = list(csv.reader(io.StringIO(out.stdout)))
    assert parsed[0] == ["code", "title", "amount"]
    assert parsed[1:] == [[r[0], r[1] or "", "" if r[2] is None else str(r[2])] for r in served["rows"]]
    text = _psql(served, r"\copy (SELECT code, day FROM shared.events ORDER BY code LIMIT 5) to stdout")
    assert text.stdout.splitlines() == [f"{r[0]}\t{r[4] or chr(92) + 'N'}" for r in served["rows"][:5]]
    secure = _psql(served, "SELECT count(*) FROM shared.events", sslmode="require")
    assert secure.returncode == 0 and secure.stdout.strip() == str(len(served["rows"])), secure.stderr
    with psycopg.connect(dsn(served, sslmode="require")) as c:
        assert c.pgconn.ssl_in_use and c.execute("SELECT count(*) FROM shared.events").fetchone() == (300,)


def test_tls_required_refuses_clear_text_with_the_reason(served):
    import threading
    from dataclasses import replace

    from schemas import load_registry
    from sharing.engine import GovernedEngine
    from sharing.pgwire import GovernedPgServer

    settings_ = served["settings"]
    wire = replace(settings_.wire, tls_cert=str(served["cert"]), tls_key=str(served["key"]), tls_required=True)
    engine = GovernedEngine(replace(settings_, wire=wire), load_registry(settings_.registry_dir), persistent=True)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with pytest.raises(psycopg.OperationalError, match="TLS connections only"):
            psycopg.connect(f"host=127.0.0.1 port={port} dbname=onesource user=tax_analyst "
                            f"password={served['password']} sslmode=disable")
        with psycopg.connect(f"host=127.0.0.1 port={port} dbname=onesource user=tax_analyst "
                             f"password={served['password']} sslmode=require", autocommit=True) as c:
            assert c.pgconn.ssl_in_use and c.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.shutdown()
        server.server_close()
        engine.close()
