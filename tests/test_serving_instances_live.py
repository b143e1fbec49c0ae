"""Slow tier: two real `onesource serve` processes on one lake (a PostgreSQL catalog, each its own home, as two
machines would have) act as one server behind any load balancer: requests alternate between them over the HTTP
API, the portal and the Postgres wire; the audit chain is one, and `onesource audit verify` passes on it; a
portal session started on one works on the other and a sign-out on one ends it on both (and so does a freeze); a
lockout earned on one holds on the other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest

from core.config import REPO_ROOT, LakeSettings, Settings
from lakehouse import Lake
from sharing.users import create_user
from tests.helpers import ROWS, csv_text, drop, free_port, load, wait_for_port, write_registry

pytestmark = pytest.mark.slow
PG = "host=127.0.0.1 port=5432 user=postgres"
ENV = {"ONESOURCE_SIGNIN_DELAY_SECONDS": "0", "ONESOURCE_SIGNIN_MAX_FAILURES": "3"}


def _admin(sql: str) -> None:
    with psycopg.connect(f"dbname=postgres {PG}", autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("instances")
    name = f"onesource_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    lake = LakeSettings(catalog=f"postgres:dbname={name} {PG}", data_path=f"{root}/data/")
    key = root / "secrets" / "audit.key"  # the one audit key every instance is given (a mounted secret)
    first = Settings(home=root / "a", lake=lake, audit_key_file=key)
    write_registry(first.registry_dir)
    drop(first, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(first)] == ["published"]
    creds = {}
    with Lake(first.lake) as lk:
        for dept, user, role in (("amr", "amr_li", "analyst"), ("tax", "tax_wang", "analyst")):
            creds[user] = dict(zip(("password", "token"), create_user(lk, dept, user, role), strict=True))
    second = root / "b"
    shutil.copytree(first.registry_dir, Settings(home=second).registry_dir)  # the second machine: the registry only
    procs, servers = [], []
    try:
        for home in (first.home, second):
            http_port, pg_port = free_port(), free_port()
            env = {**os.environ, **ENV, "ONESOURCE_HOME": str(home), "ONESOURCE_CATALOG": lake.catalog,
                   "ONESOURCE_DATA_PATH": lake.data_path, "ONESOURCE_AUDIT_KEY": str(key)}
            proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                                     "--pg-port", str(pg_port)], env=env, cwd=REPO_ROOT,
                                    stdout=open(root / f"serve-{home.name}.out", "a"), stderr=subprocess.STDOUT)
            procs.append(proc)
            servers.append((f"http://127.0.0.1:{http_port}", pg_port, env, proc))
        for base, pg_port, _, proc in servers:
            wait_for_port(int(base.rsplit(":", 1)[1]), proc)
            wait_for_port(pg_port, proc)
        yield servers, creds, name, root
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def wire(pg_port: int, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={pg_port} dbname=onesource user={user} password={password}",
                           autocommit=True)


def test_two_instances_act_as_one(two):
    servers, creds, _, root = two
    li, wang = creds["amr_li"], creds["tax_wang"]
    sent: list[tuple[str, str]] = []  # (user, sql) in the order the servers answered them

    # 1. the HTTP API and the wire, alternating between the instances: one audit chain in that order
    for n in range(6):
        base, pg_port, _, _ = servers[n % 2]
        sql = f"SELECT uscc FROM shared.firms LIMIT {n + 1}"
        answer = httpx.post(f"{base}/api/v1/query", json={"sql": sql}, timeout=60,
                            headers={"Authorization": f"Bearer {wang['token']}"})
        assert answer.status_code == 200 and len(answer.json()["rows"]) == min(n + 1, len(ROWS)), answer.text
        sent.append(("tax_wang", sql))
        with wire(pg_port, "amr_li", li["password"]) as conn:
            sql = f"SELECT uscc, enterprise_name FROM shared.firms LIMIT {n + 2}"
            assert len(conn.execute(sql).fetchall()) == min(n + 2, len(ROWS))
            sent.append(("amr_li", sql))

    # 2. a portal session started on one instance works on the other; a sign-out on the other ends it on both
    (a, _, _, _), (b, _, _, _) = servers[0][:4], servers[1][:4]
    signin = httpx.post(f"{a}/login", data={"username": "amr_li", "password": li["password"], "next": "/catalogue"},
                        headers={"Origin": a}, follow_redirects=False)
    assert signin.status_code == 303, signin.text
    cookie = {"onesource_session": signin.cookies["onesource_session"]}
    page = httpx.get(f"{b}/catalogue", cookies=cookie, follow_redirects=False)
    assert page.status_code == 200, (page.status_code, page.headers.get("location"))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert httpx.get(f"{a}/catalogue", cookies=cookie, follow_redirects=False).status_code == 200
    out = httpx.post(f"{b}/logout", data={"csrf_token": csrf}, cookies=cookie, headers={"Origin": b},
                     follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login", out.text
    for base in (a, b):
        gone = httpx.get(f"{base}/catalogue", cookies=cookie, follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login"), base

    # 2b. a freeze (an operator's command on any machine) ends a session begun on one instance, on both
    again = httpx.post(f"{b}/login", data={"username": "amr_li", "password": li["password"], "next": "/catalogue"},
                       headers={"Origin": b}, follow_redirects=False)
    cookie = {"onesource_session": again.cookies["onesource_session"]}
    assert httpx.get(f"{a}/catalogue", cookies=cookie, follow_redirects=False).status_code == 200
    frozen = subprocess.run([sys.executable, "-m", "onesource.cli", "security", "freeze", "--user", "amr_li",
                             "--reason", "a stolen laptop", "--by", "bureau_ops"], env=servers[0][2], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    for base in (b, a):
        gone = httpx.get(f"{base}/catalogue", cookies=cookie, follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login"), base

    # 3. a lockout earned across both instances (3 failures: wire on one, portal on the other) holds on both
    with pytest.raises(psycopg.OperationalError):
        wire(servers[0][1], "tax_wang", "guess-1")
    wrong = httpx.post(f"{b}/login", data={"username": "tax_wang", "password": "guess-2", "next": "/"},
                       headers={"Origin": b}, follow_redirects=False)
    assert wrong.status_code == 200 and "set-cookie" not in wrong.headers
    third = httpx.post(f"{a}/login", data={"username": "tax_wang", "password": "guess-3", "next": "/"},
                       headers={"Origin": a}, follow_redirects=False)
    assert third.status_code == 429, third.text  # the third failure, counted over both instances
    for base in (a, b):  # the right password now: refused on both
        right = httpx.post(f"{base}/login", data={"username": "tax_wang", "password": wang["password"], "next": "/"},
                           headers={"Origin": base}, follow_redirects=False)
        assert right.status_code == 429 and "set-cookie" not in right.headers, base
    for _, pg_port, _, _ in servers:
        with pytest.raises(psycopg.OperationalError, match="too many failed sign-ins"):
            wire(pg_port, "tax_wang", wang["password"])

    # 4. the servers stopped (their last entries flushed), one chain: every query in the order sent, every
    #    failed and refused sign-in, from both instances; `onesource audit verify` passes on it from either home
    for _, _, _, proc in servers:
        proc.terminate()
        proc.wait(timeout=30)
    from sharing.audit import AuditLog

    env = servers[1][2]
    log = AuditLog.of(Settings.from_env(env))
    try:
        entries = log.entries()
    finally:
        log.close()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    queries = [(e["user"], e.get("sql_sent") or e.get("sql")) for e in entries
               if e.get("decision") == "allowed" and e.get("user") in ("tax_wang", "amr_li")
               and "LIMIT" in str(e.get("sql_sent") or e.get("sql"))]
    assert queries == sent
    signins = [(e["user"], e["decision"], e["channel"]) for e in entries if e.get("kind") == "signin"]
    assert signins[:3] == [("tax_wang", "failed", "postgres-wire"), ("tax_wang", "failed", "portal"),
                           ("tax_wang", "failed", "portal")], signins
    assert signins[3:] == [("tax_wang", "refused", "portal")] * 2 + [("tax_wang", "refused", "postgres-wire")] * 2, signins
    assert [e.get("action") for e in entries if e.get("kind") == "security"] == ["freeze"]  # the CLI's, same chain
    assert not (root / "a" / "audit" / "audit.log").exists() and not (root / "b" / "audit" / "audit.log").exists()
    # the usage KPIs' copy (metrics, the Airflow task: a log built without the settings) reads the same chain
    from sharing.audit import sync_to_lake

    settings = Settings.from_env(env)
    with Lake(settings.lake) as lake:
        assert sync_to_lake(lake, AuditLog(settings.home / "audit")) == len(entries)
        assert sync_to_lake(lake, AuditLog(settings.home / "audit")) == 0  # nothing twice
        copied = lake.con.execute("SELECT seq FROM lake.ops.audit_events ORDER BY seq").fetchall()
    assert [r[0] for r in copied] == [e["seq"] for e in entries]
    for _, _, env, _ in servers:
        done = subprocess.run([sys.executable, "-m", "onesource.cli", "audit", "verify"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"intact: {len(entries)} entries" in done.stdout, done.stdout
