"""Slow tier: a stolen account on a real `onesource serve`, over HTTP, the Postgres wire and the portal, raises the
misuse alerts; `onesource security scan` (a real process) raises exactly those, once, and they are listed by
`onesource security alerts --json` and on the bureau's dashboard.

The stolen account is amr's (``amr_thief``): it owns ``firms``, whose ``enterprise_name`` is a sensitive element
(level 3) it reads unmasked. It probes the policy (refused queries), then reads the sensitive rows in bulk, then
its password is guessed wrong on the wire and the portal until the name is locked. A colleague in another
department (``tax_analyst``) works as usual meanwhile and raises nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from core.config import REPO_ROOT, Settings
from lakehouse import Lake
from sharing.users import create_user
from tests.helpers import ELEMENTS, ROWS, csv_text, drop, free_port, load, wait_for_port, write_registry

pytestmark = pytest.mark.slow

# one window of a day (no burst split by a window's edge), every hour a working hour (the hours rule is the fast
# tests'), a floor of 20 sensitive rows, no sign-in delay
ENV = {"ONESOURCE_SECURITY_WINDOW_MINUTES": "1440", "ONESOURCE_SECURITY_WORK_START": "0",
       "ONESOURCE_SECURITY_WORK_END": "24", "ONESOURCE_SECURITY_SENSITIVE_ROWS_FLOOR": "20",
       "ONESOURCE_SIGNIN_DELAY_SECONDS": "0"}
# (getenv(): a catalog question calling a function nobody may call is refused 42501 over the wire too, and
# audited refused (tests/test_redteam_round5.py); COPY to a file: the engine refuses it on HTTP, the wire's session)
PROBES = ["SELECT * FROM shared.no_such_register", "SELECT * FROM read_csv('/etc/passwd')", "SELECT getenv('HOME')",
          "COPY shared.firms TO '/tmp/stolen.csv'",
          "SELECT * FROM information_schema.tables, shared.firms",
          "SELECT * FROM shared.firms, duckdb_settings()", "SELECT * FROM '/etc/passwd'"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    utc = dt.datetime.now(dt.UTC)
    to_midnight = (dt.datetime.combine(utc.date() + dt.timedelta(days=1), dt.time(), dt.UTC) - utc).total_seconds()
    if to_midnight < 240:  # the day's window ends in a moment: the whole story within the next one
        time.sleep(to_midnight + 1)
    settings = Settings(home=tmp_path_factory.mktemp("alerts-live") / "home")
    elements = json.loads(json.dumps(ELEMENTS))
    next(e for e in elements["elements"] if e["name"] == "enterprise_name")["sensitivity"] = 3
    write_registry(settings.registry_dir, elements=elements)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    creds = {}
    with Lake(settings.lake) as lake:
        for dept, name, role in (("amr", "amr_thief", "analyst"), ("tax", "tax_analyst", "analyst"),
                                 ("tax", "tax_bureau", "bureau")):
            creds[name] = dict(zip(("password", "token"), create_user(lake, dept, name, role), strict=True))
    http_port, pg_port = free_port(), free_port()
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home), **ENV}
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env=env, cwd=REPO_ROOT,
                            stdout=open(settings.home / "serve.out", "a"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, proc)
        wait_for_port(pg_port, proc)
        yield settings, creds, f"http://127.0.0.1:{http_port}", pg_port, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "onesource.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def dsn(pg_port: int, user: str, password: str) -> str:
    return f"host=127.0.0.1 port={pg_port} dbname=onesource user={user} password={password}"


def test_a_stolen_account_raises_exactly_the_expected_alerts(served):
    settings, creds, base, pg_port, env = served
    thief, colleague = creds["amr_thief"], creds["tax_analyst"]
    api = httpx.Client(base_url=base, timeout=60)

    def post(token: str, sql: str) -> httpx.Response:
        return api.post("/api/v1/query", json={"sql": sql}, headers={"Authorization": f"Bearer {token}"})

    # the colleague's usual day: a few answers, masked values, nothing refused
    for _ in range(3):
        answer = post(colleague["token"], "SELECT uscc, enterprise_name FROM shared.firms")
        assert answer.status_code == 200 and len(answer.json()["rows"]) == len(ROWS)
    # the thief probes the policy over HTTP and the wire: every probe refused
    refused = 0
    for sql in PROBES:
        answer = post(thief["token"], sql)
        assert answer.status_code == 403, answer.text
        refused += 1
    with psycopg.connect(dsn(pg_port, "amr_thief", thief["password"]), autocommit=True) as conn:
        for sql in PROBES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # 42501: refused by policy
                conn.execute(sql)
            refused += 1
        # then it reads the sensitive rows in bulk, on both endpoints
        received = 0
        for _ in range(4):
            received += len(conn.execute("SELECT * FROM shared.firms").fetchall())
    for _ in range(4):
        answer = post(thief["token"], "SELECT * FROM shared.firms")
        assert answer.status_code == 200
        received += len(answer.json()["rows"])
    assert received == 8 * len(ROWS) > 20
    # and its password is guessed: wrong on the wire and the portal until the name is locked
    failures = 0
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(pg_port, "amr_thief", "guess-" + str(failures)))
        failures += 1
    for _ in range(3):
        page = api.post("/login", data={"username": "amr_thief", "password": f"guess-{failures}", "next": "/"},
                        follow_redirects=False)
        assert page.status_code in (200, 429) and "set-cookie" not in page.headers
        failures += 1
    assert post("not-a-token", "SELECT 1").status_code == 401  # audited by address, below its threshold

    raised = cli(env, "security", "scan", "--json")
    found = {(a["kind"], a["user_name"]): a for a in json.loads(raised.stdout)}
    assert set(found) == {("refusal_burst", "amr_thief"), ("sensitive_rows", "amr_thief"),
                          ("signin_failures", "amr_thief")}, raised.stdout
    assert found["refusal_burst", "amr_thief"]["observed"] == refused == 2 * len(PROBES)
    assert found["sensitive_rows", "amr_thief"]["observed"] == received
    assert found["sensitive_rows", "amr_thief"]["department"] == "amr"
    assert found["signin_failures", "amr_thief"]["observed"] == failures
    assert found["signin_failures", "amr_thief"]["evidence"]["channels"] == ["portal", "postgres-wire"]
    # each alert's evidence names the audit entries behind it, and the log holds them as described
    log = [json.loads(line) for line in (settings.home / "audit" / "audit.log").read_text().splitlines()]
    by_seq = {e["seq"]: e for e in log}
    for (kind, _), alert in found.items():
        entries = [by_seq[s] for s in alert["evidence"]["seqs"]]
        assert len(entries) == alert["evidence"]["count"]
        assert all(e["user"] == "amr_thief" for e in entries)
        if kind == "refusal_burst":
            assert {e["decision"] for e in entries} == {"refused"}
        if kind == "signin_failures":
            assert all(e["kind"] == "signin" and not any("password" in k for k in e) for e in entries)
    # a rescan raises nothing new
    again = cli(env, "security", "scan")
    assert "0 new alert(s) (3 raised before)" in again.stdout, again.stdout
    listed = json.loads(cli(env, "security", "alerts", "--json", "--since", "2h").stdout)
    assert sorted((a["kind"], a["user_name"], a["status"]) for a in listed) == \
        sorted((k, u, "open") for k, u in found)
    assert [a["kind"] for a in json.loads(cli(env, "security", "alerts", "--json", "--kind",
                                              "signin_failures").stdout)] == ["signin_failures"]

    # the bureau's dashboard lists the open alerts and charts them; an analyst's has no such panel
    bureau = httpx.Client(base_url=base, timeout=60)
    assert bureau.post("/login", data={"username": "tax_bureau", "password": creds["tax_bureau"]["password"],
                                       "next": "/dashboard"}, follow_redirects=False).status_code == 303
    html = bureau.get("/dashboard?lang=en").text
    assert 'id="security-alerts" data-open="3"' in html
    for kind, user in found:
        assert f'data-kind="{kind}" data-user="{user}"' in html
    assert html.count('class="alerts-') == 3  # one column piece per kind, today
    analyst = httpx.Client(base_url=base, timeout=60)
    assert analyst.post("/login", data={"username": "tax_analyst", "password": colleague["password"],
                                        "next": "/dashboard"}, follow_redirects=False).status_code == 303
    assert "security-alerts" not in analyst.get("/dashboard").text


def test_the_security_dag_scans_in_airflow(settings):
    """`airflow dags test onesource_security` runs the real scan: the refusals audited before it raise their
    alert, which the task's log prints and ops.security_alerts holds."""
    from onesource import airflow_cli
    from sharing.audit import AuditLog
    from sharing.security.alerts import list_alerts

    write_registry(settings.registry_dir)
    log = AuditLog.of(settings)
    for _ in range(settings.security.refusal_burst):
        log.append(department="tax", user="tax_prober", decision="refused", tables=[], reason="not granted")
    log.close()
    airflow_cli.ensure_db(settings, settings.reports_dir / "migrate.log")
    out = settings.reports_dir / "security.log"
    assert airflow_cli.dags_test(settings, "onesource_security", out) == 0, out.read_text(encoding="utf-8")[-3000:]
    with Lake(settings.lake, read_only=True) as lake:
        # the burst; unusual_hours may join it, by the hour this runs at in city time (the DAG reads the home's
        # own settings: working hours 08-20)
        [alert] = [a for a in list_alerts(lake.con) if a["kind"] != "unusual_hours"]
    assert (alert["kind"], alert["user_name"], alert["observed"]) == ("refusal_burst", "tax_prober", 10)
    assert alert["alert_id"] in out.read_text(encoding="utf-8")
