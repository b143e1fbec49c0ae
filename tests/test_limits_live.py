"""Slow tier: limits and fresh governance on a real `onesource serve`, reached over HTTP and the Postgres wire.

* a burst of 40 slow queries from one token gets 429s at once, while another token is answered quickly;
* psycopg's ``cancel()`` and psql's Ctrl-C stop a running query; ``SET statement_timeout`` lowers the limit;
* a registry apply making a dataset ``not_shared``, a new dataset, a grant revoked, a user disabled: each
  takes effect on the next query of the running server, on the same wire connection;
* a 5 MB query is refused with 413 and adds next to nothing to the audit log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest
import yaml

from core.config import REPO_ROOT, Settings
from lakehouse import Lake
from sharing.users import create_user
from tests.helpers import csv_text, drop, firms_dataset, free_port, load, wait_for_port, write_registry
from tests.support.limits import SLOW, SMALL, branches

pytestmark = pytest.mark.slow

SECONDS = 12  # the server's time limit here (ONESOURCE_QUERY_SECONDS): the slow queries end within it


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("limits-live") / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    creds = {}
    with Lake(settings.lake) as lake:
        for dept, name in (("amr", "amr_analyst"), ("tax", "tax_analyst"), ("tax", "tax_burst")):
            creds[name] = dict(zip(("password", "token"), create_user(lake, dept, name), strict=True))
    http_port, pg_port = free_port(), free_port()
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home), "ONESOURCE_QUERY_SECONDS": str(SECONDS)}
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env=env, cwd=REPO_ROOT,
                            stdout=open(settings.home / "serve.out", "a"), stderr=subprocess.STDOUT)
    wait_for_port(http_port, proc)
    wait_for_port(pg_port, proc)
    base = f"http://127.0.0.1:{http_port}"
    for user in creds.values():  # a server that has been answering for a while
        assert post(base, user["token"], SMALL).status_code == 200
    yield settings, creds, base, pg_port, env
    proc.terminate()
    proc.wait(timeout=30)


def dsn(pg_port: int, creds: dict, user: str, **extra: str) -> str:
    more = " ".join(f"{k}='{v}'" for k, v in extra.items())
    return f"host=127.0.0.1 port={pg_port} dbname=onesource user={user} password={creds[user]['password']} {more}"


def post(base: str, token: str, sql: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/query", json={"sql": sql}, headers={"Authorization": f"Bearer {token}"},
                      timeout=timeout)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onesource.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_burst_from_one_token_gets_429_and_others_are_answered_at_once(served):
    _, creds, base, _, _ = served
    statuses: list[int] = []

    def slow() -> None:
        statuses.append(post(base, creds["tax_burst"]["token"], SLOW).status_code)

    burst = [threading.Thread(target=slow) for _ in range(40)]
    for t in burst:
        t.start()
    time.sleep(2)  # the burst is in: its first queries run, a few wait, the rest were refused
    waits = []
    for _ in range(5):
        started = time.monotonic()
        answer = post(base, creds["amr_analyst"]["token"], SMALL, timeout=30)
        waits.append(time.monotonic() - started)
        assert answer.status_code == 200 and answer.json()["rows"] == [[3]]
    assert statuses.count(429) >= 25, statuses  # refused at once, while the others were still running
    for t in burst:
        t.join(60)
    assert max(waits) < 3, waits
    assert sorted(set(statuses)) == [400, 429], statuses  # the slow ones stopped at the time limit
    assert statuses.count(400) == 10  # 2 running and 8 waiting per user (ONESOURCE_QUERY_PER_USER[_QUEUED])


def test_too_many_queries_in_flight_over_the_wire_is_53300(served):
    _, creds, _, pg_port, _ = served
    errors: list[str] = []

    def slow() -> None:
        with psycopg.connect(dsn(pg_port, creds, "tax_burst"), autocommit=True) as conn:
            try:
                conn.execute(SLOW)
            except psycopg.Error as exc:
                errors.append(exc.sqlstate or "")

    threads = [threading.Thread(target=slow) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors.count("53300") == 2 and errors.count("57014") == 10, errors


def test_psycopg_cancel_stops_a_running_query(served):
    _, creds, _, pg_port, _ = served
    with psycopg.connect(dsn(pg_port, creds, "amr_analyst"), autocommit=True) as conn:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute(SLOW)
            except psycopg.Error as exc:
                failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.5)
        started = time.monotonic()
        conn.cancel_safe()
        worker.join(SECONDS)
        assert time.monotonic() - started < 3 and failure, "the query was not cancelled"
        assert isinstance(failure[0], psycopg.errors.QueryCanceled) and "user request" in str(failure[0])
        assert conn.execute(SMALL).fetchall() == [(3,)]  # the session goes on


def test_psql_ctrl_c_cancels_the_query(served):
    _, creds, _, pg_port, _ = served
    if not shutil.which("psql"):
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    proc = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "amr_analyst", "-d", "onesource",
                             "-c", SLOW], env={**os.environ, "PGPASSWORD": creds["amr_analyst"]["password"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # psql sends a cancel request on Ctrl-C
    _, err = proc.communicate(timeout=SECONDS)
    assert time.monotonic() - started < 3, err
    assert "canceling statement due to user request" in err


def test_statement_timeout_lowers_the_limit(served):
    _, creds, _, pg_port, _ = served
    with psycopg.connect(dsn(pg_port, creds, "amr_analyst"), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 1000")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1s",)
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="time limit of 1 s"):
            conn.execute(SLOW)
        assert time.monotonic() - started < 3
        conn.execute("SET statement_timeout = '1h'")  # raising it: the server's limit holds
        assert conn.execute("SHOW statement_timeout").fetchone() == (f"{SECONDS}s",)
    with psycopg.connect(dsn(pg_port, creds, "amr_analyst", options="-c statement_timeout=1500"),
                         autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(SLOW)
        assert time.monotonic() - started < 3.5


def test_a_huge_query_is_refused_and_does_not_flood_the_audit_log(served):
    settings, creds, base, _, _ = served
    log = settings.home / "audit" / "audit.log"
    before = log.stat().st_size if log.exists() else 0
    huge = SMALL + " WHERE uscc IN (" + ",".join(f"'{i:018d}'" for i in range(250_000)) + ")"  # 5 MB
    started = time.monotonic()
    refused = post(base, creds["amr_analyst"]["token"], huge)
    assert refused.status_code == 413 and time.monotonic() - started < 3
    long = SMALL + " WHERE uscc IN (" + ",".join(f"'{i:018d}'" for i in range(7_000)) + ")"  # 147 KB
    assert post(base, creds["amr_analyst"]["token"], long).status_code == 413
    time.sleep(0.5)  # the server's group commit
    assert (log.stat().st_size if log.exists() else 0) - before < 40_000


def _edit(settings: Settings, name: str, **changes) -> None:
    path = next(settings.registry_dir.rglob(f"{name}.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def test_governance_changes_reach_the_running_server_on_the_next_query(served):
    """Last in this module: it makes firms not_shared and disables tax_analyst."""
    settings, creds, base, pg_port, env = served
    token = creds["tax_analyst"]["token"]
    with psycopg.connect(dsn(pg_port, creds, "tax_analyst"), autocommit=True) as wire:
        assert post(base, token, SMALL).json()["rows"] == [[3]]
        assert wire.execute(SMALL).fetchall() == [(3,)]
        # the registry makes firms not_shared; `registry apply` registers it; the next query is refused
        _edit(settings, "firms", share_type="not_shared", legal_basis="测试")
        applied = cli(env, "registry", "apply")
        assert applied.returncode == 0 and "sharing firms" in applied.stdout, applied.stdout + applied.stderr
        refused = post(base, token, SMALL)
        assert refused.status_code == 403 and "firms" in refused.json()["reason"]
        with pytest.raises(psycopg.Error, match="firms"):
            wire.execute(SMALL)
        listed = httpx.get(f"{base}/api/v1/catalogue", headers={"Authorization": f"Bearer {token}"}).json()
        assert "firms" not in {d["name"] for d in listed}
        # a new dataset, registered by its first load: readable once granted, refused once revoked
        write_registry(settings.registry_dir, [firms_dataset(share_type="not_shared", legal_basis="测试"),
                                               branches()])
        drop(settings, "amr/branches/b.csv", "编码,城市\nB1,杭州\nB2,宁波\n")
        ingested = cli(env, "ingest", "branches")
        assert ingested.returncode == 0, ingested.stdout + ingested.stderr
        assert post(base, token, "SELECT count(*) FROM shared.branches").status_code == 403  # conditional
        granted = cli(env, "grants", "add", "--department", "tax", "--dataset", "branches")
        grant_id = granted.stdout.split("grant ")[-1].strip()
        assert granted.returncode == 0 and grant_id, granted.stdout + granted.stderr
        assert post(base, token, "SELECT count(*) AS n FROM shared.branches").json()["rows"] == [[2]]
        assert wire.execute("SELECT count(*) FROM shared.branches").fetchall() == [(2,)]
        assert cli(env, "grants", "revoke", "--grant-id", grant_id).returncode == 0
        assert post(base, token, "SELECT count(*) FROM shared.branches").status_code == 403
        with pytest.raises(psycopg.Error, match="not granted to tax"):
            wire.execute("SELECT count(*) FROM shared.branches")
        # the user disabled: its token and its open wire session are refused from the next query on
        assert cli(env, "users", "disable", "tax_analyst").returncode == 0
        assert post(base, token, "SELECT 1 AS x FROM shared.branches").status_code == 401
        with pytest.raises(psycopg.Error, match="tax_analyst has been disabled"):
            wire.execute("SELECT count(*) FROM shared.branches")
