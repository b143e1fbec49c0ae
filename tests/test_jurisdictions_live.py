"""Slow tier: a street's user sees only its street's rows through every endpoint of a real `onesource serve`.

The demo city's jurisdiction (examples.changsha.runner._demo_jurisdictions): civil affairs reads the resident
register under a grant scoped to each user's jurisdiction, and owns the subsistence-allowance roster; its users
in 岳麓区 (430104) and two of its streets (望月湖街道 430104001, 岳麓街道 430104002) ask over HTTP (bearer
token), the Postgres wire (psycopg), the portal's console (signed in, CSV download) and the CLI
(`onesource sql --as mca --user U`). The oracle is the raw table read here, filtered by hand on the street code.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import httpx
import psycopg
import pytest

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from examples.changsha.runner import JURISDICTION_CREDENTIALS, _demo_jurisdictions, _demo_users
from ingest import run_dataset
from schemas import load_registry
from tests.helpers import free_port, rows, wait_for_port

pytestmark = pytest.mark.slow

USERS = {"mca_yuelu": "430104", "mca_wangyuehu": "430104001", "mca_yuelujd": "430104002"}
QUERIES = {"psb_resident_register": "SELECT person_name, street_code FROM shared.psb_resident_register",
           "mca_subsistence_allowance": "SELECT person_name, street_code FROM shared.mca_subsistence_allowance"}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("jurisdictions") / "home")
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in ("mca_admin_divisions", "psb_resident_register", "mca_subsistence_allowance"):
        [result] = run_dataset(settings, registry, name, os.environ)
        assert result.status == "published", result.message
    _demo_users(settings, registry)
    summary = _demo_jurisdictions(settings, registry)
    creds = json.loads((settings.home / JURISDICTION_CREDENTIALS).read_text())
    expected = {(user, table): sorted(r for r in rows(settings, sql) if (r[1] or "").startswith(code))
                for user, code in USERS.items() for table, sql in QUERIES.items()}
    http_port, pg_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_port(http_port, proc)
    wait_for_port(pg_port, proc)
    yield settings, creds, expected, summary, http_port, pg_port
    proc.terminate()
    proc.wait(timeout=30)


def test_the_oracle_is_not_empty_and_streets_do_not_overlap(city):
    settings, _, expected, summary, *_ = city
    every = rows(settings, QUERIES["psb_resident_register"])
    street, neighbour = expected["mca_wangyuehu", "psb_resident_register"], expected["mca_yuelujd", "psb_resident_register"]
    assert street and neighbour and not set(street) & set(neighbour)
    assert len(expected["mca_yuelu", "psb_resident_register"]) >= len(street) + len(neighbour)
    assert len(every) > len(expected["mca_yuelu", "psb_resident_register"])
    assert {u: n for u, _, _, n in summary} == {u: len(expected[u, "psb_resident_register"]) for u in USERS}


@pytest.mark.parametrize("user", sorted(USERS))
def test_http_with_the_users_token(city, user):
    _, creds, expected, _, http_port, _ = city
    for table, sql in QUERIES.items():
        r = httpx.post(f"http://127.0.0.1:{http_port}/api/v1/query", json={"sql": sql, "purpose": "辖区核查"},
                       headers={"Authorization": f"Bearer {creds[user]['token']}"}, timeout=60)
        assert r.status_code == 200, r.text
        assert sorted(tuple(x) for x in r.json()["rows"]) == expected[user, table], (user, table)


@pytest.mark.parametrize("user", sorted(USERS))
def test_the_postgres_wire(city, user):
    _, creds, expected, _, _, pg_port = city
    dsn = f"host=127.0.0.1 port={pg_port} dbname=onesource user={user} password={creds[user]['password']}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, sql in QUERIES.items():
            assert sorted(conn.execute(sql).fetchall()) == expected[user, table], (user, table)
        # a neighbour's street asked for by name: no row of it
        other = "430104002" if user == "mca_wangyuehu" else "430104001"
        named = conn.execute("SELECT count(*) FROM shared.psb_resident_register WHERE street_code = %s",
                             [other]).fetchone()[0]
        assert named == (0 if USERS[user] != "430104" else
                         sum(1 for r in expected[user, "psb_resident_register"] if r[1] == other))


def test_the_portal_console(city):
    _, creds, expected, _, http_port, _ = city
    user = "mca_wangyuehu"
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
        r = client.post("/login", data={"username": user, "password": creds[user]["password"], "next": "/console"})
        assert r.status_code in (200, 303), r.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console").text).group(1)
        client.headers["X-CSRF-Token"] = token
        for table, sql in QUERIES.items():
            got = client.post("/console", data={"sql": sql, "purpose": "辖区核查", "download": "csv",
                                                "csrf_token": token})
            assert got.status_code == 200, got.text[:500]
            lines = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
            assert lines[0] == ["person_name", "street_code"]
            assert sorted(tuple(x) for x in lines[1:]) == expected[user, table], table
        page = client.post("/console", data={"sql": QUERIES["psb_resident_register"], "csrf_token": token})
        assert "430104002" not in page.text and "430104001" in page.text


def test_the_cli(city):
    settings, _, expected, *_ = city
    for user in USERS:
        out = subprocess.run([sys.executable, "-m", "onesource.cli", "sql", QUERIES["psb_resident_register"],
                              "--as", "mca", "--user", user, "--format", "json"], capture_output=True, text=True,
                             env={**os.environ, "ONESOURCE_HOME": str(settings.home)}, timeout=120)
        assert out.returncode == 0, out.stderr
        got = sorted((r["person_name"], r["street_code"]) for r in json.loads(out.stdout))
        assert got == expected[user, "psb_resident_register"], user
