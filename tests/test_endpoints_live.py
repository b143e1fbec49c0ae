"""Slow tier: `onesource serve` for real, reached by real psql, psycopg, pandas and HTTP clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from examples.changsha.runner import _demo_users
from ingest import run_dataset
from lakehouse import Lake
from schemas import load_registry
from tests.helpers import free_port, rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("live") / "home")
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in ("mca_admin_divisions", "amr_enterprise_register", "psb_resident_register", "psb_household_moves"):
        run_dataset(settings, registry, name, os.environ)
    _demo_users(settings, registry)
    creds = json.loads((settings.home / "demo-credentials.json").read_text())
    with Lake(settings.lake) as lake:
        from sharing.grants import add_grant

        add_grant(lake, registry, "tax", "psb_resident_register", columns=["resident_id", "division_code"])
    http_port, pg_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            socket.create_connection(("127.0.0.1", pg_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("onesource serve did not start: " + (proc.stdout.read() if proc.stdout else ""))
    yield settings, creds, http_port, pg_port
    proc.terminate()
    proc.wait(timeout=30)


def psql(pg_port, user, password, sql):
    if not shutil.which("psql"):
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", user, "-d", "onesource", "-At",
                           "-F", ",", "-c", sql], env={**os.environ, "PGPASSWORD": password},
                          capture_output=True, text=True, timeout=60)


def test_psql_queries_and_is_refused_where_it_should_be(server):
    settings, creds, _, pg_port = server
    tax = creds["tax"]
    out = psql(pg_port, tax["user"], tax["password"], "SELECT count(*) FROM shared.amr_enterprise_register")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(rows(settings, "SELECT count(*) FROM shared.amr_enterprise_register")[0][0])
    masked = psql(pg_port, tax["user"], tax["password"], "SELECT resident_id FROM shared.psb_resident_register LIMIT 3")
    assert masked.returncode == 0 and all("********" in line for line in masked.stdout.split())
    refused = psql(pg_port, tax["user"], tax["password"], "SELECT * FROM shared.psb_household_moves")
    assert refused.returncode != 0 and "not granted to tax" in refused.stderr
    bypass = psql(pg_port, tax["user"], tax["password"], "SELECT * FROM read_csv('/etc/passwd')")
    assert bypass.returncode != 0 and "table functions are not allowed" in bypass.stderr
    wrong = psql(pg_port, tax["user"], "not-the-password", "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_psql_describe_shows_only_granted_tables_and_columns(server):
    _, creds, _, pg_port = server
    tax = creds["tax"]
    listed = psql(pg_port, tax["user"], tax["password"], r"\dt shared.*")
    assert listed.returncode == 0, listed.stderr
    assert "amr_enterprise_register" in listed.stdout and "psb_household_moves" not in listed.stdout
    described = psql(pg_port, tax["user"], tax["password"], r"\d shared.psb_resident_register")
    assert described.returncode == 0, described.stderr
    columns = [line.split(",")[0] for line in described.stdout.splitlines() if line]
    assert columns == ["resident_id", "division_code"], described.stdout


def test_psycopg_and_pandas(server):
    import pandas as pd
    import psycopg

    settings, creds, _, pg_port = server
    psb = creds["psb"]
    dsn = f"host=127.0.0.1 port={pg_port} dbname=onesource user={psb['user']} password={psb['password']}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute("SELECT resident_id FROM shared.psb_household_moves ORDER BY 1").fetchall()
        assert got == rows(settings, "SELECT resident_id FROM shared.psb_household_moves ORDER BY 1")  # owner: unmasked
        with pytest.raises(psycopg.Error, match="function getenv"):
            conn.execute("SELECT getenv('HOME') FROM shared.amr_enterprise_register")
    with psycopg.connect(dsn, autocommit=True) as conn:
        frame = pd.read_sql("SELECT enterprise_status, count(*) AS n FROM shared.amr_enterprise_register "
                            "GROUP BY 1 ORDER BY 1", conn)
    assert frame["n"].sum() == rows(settings, "SELECT count(*) FROM shared.amr_enterprise_register")[0][0]


def test_http_over_the_wire(server):
    import httpx

    _, creds, http_port, _ = server
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {creds['edu']['token']}"}
    assert httpx.get(f"{base}/api/v1/catalogue").status_code == 401
    ok = httpx.post(f"{base}/api/v1/query", json={"sql": "SELECT count(*) AS n FROM shared.amr_enterprise_register"},
                    headers=auth)
    assert ok.status_code == 200 and ok.json()["rows"][0][0] > 0
    refused = httpx.post(f"{base}/api/v1/query", json={"sql": "SELECT * FROM shared.psb_resident_register"},
                         headers=auth)
    assert refused.status_code == 403 and "not granted to edu" in refused.json()["reason"]


def test_sqlalchemy_lists_only_the_tables_a_department_may_read(server):
    import sqlalchemy as sa

    settings, creds, _, pg_port = server
    edu = creds["edu"]
    engine = sa.create_engine(f"postgresql+psycopg://{edu['user']}:{edu['password']}@127.0.0.1:{pg_port}/onesource")
    tables = set(sa.inspect(engine).get_table_names(schema="shared"))
    # unconditional ones are listed; conditional without a grant and not_shared ones are not
    assert {"amr_enterprise_register", "mca_admin_divisions"} <= tables
    assert not tables & {"psb_resident_register", "psb_household_moves"}
    with engine.connect() as conn:
        assert "OneSource" in conn.execute(sa.text("SELECT version()")).scalar()
        n = conn.execute(sa.text("SELECT count(*) FROM shared.amr_enterprise_register")).scalar()
    assert n == rows(settings, "SELECT count(*) FROM shared.amr_enterprise_register")[0][0]
    engine.dispose()


def test_sqlalchemy_reflects_granted_columns_like_superset_does(server):
    """Superset and DBeaver reflect a table's columns, then select from it with bound parameters."""
    import pandas as pd
    import sqlalchemy as sa

    settings, creds, _, pg_port = server
    tax = creds["tax"]
    engine = sa.create_engine(f"postgresql+psycopg://{tax['user']}:{tax['password']}@127.0.0.1:{pg_port}/onesource")
    inspector = sa.inspect(engine)
    columns = {c["name"]: c["type"] for c in inspector.get_columns("psb_resident_register", schema="shared")}
    # only the two columns of tax's grant, with PostgreSQL types SQLAlchemy understands
    assert set(columns) == {"resident_id", "division_code"}
    assert all(isinstance(t, sa.String) for t in columns.values())
    assert inspector.get_pk_constraint("psb_resident_register", schema="shared")["constrained_columns"] == []
    assert inspector.get_indexes("psb_resident_register", schema="shared") == []
    table = sa.Table("amr_enterprise_register", sa.MetaData(), autoload_with=engine, schema="shared")
    with engine.connect() as conn:
        got = conn.execute(sa.select(table.c.uscc).where(table.c.division_code != sa.bindparam("d"))
                           .order_by(table.c.uscc).limit(3), {"d": "x' OR 1=1 --"}).fetchall()
        frame = pd.read_sql_table("psb_resident_register", conn, schema="shared")
    expected = rows(settings, "SELECT uscc FROM shared.amr_enterprise_register ORDER BY uscc LIMIT 3")
    assert [tuple(r) for r in got] == [tuple(r) for r in expected]
    assert list(frame.columns) == ["resident_id", "division_code"]
    # the resident ID is masked for tax (first 6 and last 4 characters kept)
    assert frame["resident_id"].str.contains(r"\*").all()
    engine.dispose()


def test_pgjdbc_as_dbeaver_uses_it(server):
    """DBeaver talks to PostgreSQL through PgJDBC: its metadata calls list and describe only what the
    department may read, with PostgreSQL type names, and a prepared query runs governed."""
    from tests.support.pg_catalog import JARS

    jar = next((j for j in JARS if j.exists()), None)
    if not shutil.which("java") or jar is None:
        pytest.fail("java and PgJDBC are needed (apt-get install default-jre-headless libpostgresql-jdbc-java)")
    _, creds, _, pg_port = server
    tax = creds["tax"]
    probe = Path(__file__).parent / "clients" / "JdbcProbe.java"
    out = subprocess.run(["java", "-cp", str(jar), str(probe), f"jdbc:postgresql://127.0.0.1:{pg_port}/onesource",
                          tax["user"], tax["password"], "psb_resident_register"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]  # "<call>\t<value>\t..." (JdbcProbe.java)
    tables = {r[2] for r in rows if r[0] == "table"}
    assert "amr_enterprise_register" in tables and "psb_household_moves" not in tables
    assert [r[1:3] for r in rows if r[0] == "column"] == [["resident_id", "varchar"], ["division_code", "varchar"]]
    assert ["rows", "2", "2"] in rows
