"""Subscriptions into real databases (PostgreSQL and MariaDB on this machine), a webhook with a local receiver,
crashes mid-delivery, revocation, and deliveries counted as use in the KPIs. Slow tier: real servers."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from decimal import Decimal

import pytest

from core.config import REPO_ROOT
from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.grants import add_grant, revoke_grant
from sharing.subscriptions import store
from sharing.subscriptions.deliver import deliver
from sharing.users import add_user
from tests.helpers import HEADER, USCC, drop, firms_dataset, load, write_registry

pytestmark = pytest.mark.slow

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
MYSQL_DSN = "host=127.0.0.1 port=3306 user=root database=test"
A, B, C = USCC
# Three publishes of a snapshot dataset (each batch replaces the table) and of an upsert dataset (each batch
# updates rows by key); the grant shows tax the rows with staff >= 5 and not the capital: rows move in and
# out of the view, change, disappear, and come back.
SNAPSHOTS = [[(A, "甲公司", 1, 100, 5, "2020-01-01"), (B, "乙公司", 1, 200, 6, "2021-01-01"),
              (C, "丙公司", 1, 300, 3, "2022-01-01")],
             [(A, "甲公司（更名）", 1, 100, 5, "2020-01-01"), (C, "丙公司", 2, 300, 7, "2022-01-01")],
             [(A, "甲公司（更名）", 1, 999, 5, "2020-01-01"), (B, "乙公司", 1, 200, 4, "2021-01-01")]]
UPSERTS = [[(A, "甲公司", 1, 100, 5, "2020-01-01"), (B, "乙公司", 1, 200, 6, "2021-01-01")],
           [(B, "乙公司'\\名", 2, 200, 6, "2021-01-01"), (C, "丙公司", 1, 300, 8, "2022-01-01")],
           [(A, "甲公司", 1, 100, 2, "2020-01-01"), (C, "丙公司", 1, 300, 8, "2022-01-01")]]
GRANTED = ["uscc", "enterprise_name", "enterprise_status", "staff", "founded"]


def csv_of(rows) -> str:
    return HEADER + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def publish(settings, name: str, step: int, rows) -> None:
    folder = "firms" if name == "firms" else "up"
    drop(settings, f"amr/{folder}/{step}.csv", csv_of(rows))
    assert [r.status for r in load(settings, name)] == ["published"]


@pytest.fixture
def city(settings):
    """amr's snapshot dataset `firms` and upsert dataset `firms_up`, both conditional and granted to tax
    (some columns, a row filter); tax's user `tax_clerk`."""
    up = firms_dataset(name="firms_up", load_mode="upsert", share_type="conditional", conditions="稽查",
                       connector={"kind": "file", "path": "amr/up/*.csv", "format": "csv"})
    write_registry(settings.registry_dir, [firms_dataset(share_type="conditional", conditions="稽查"), up])
    registry = load_registry(settings.registry_dir)
    publish(settings, "firms", 0, SNAPSHOTS[0])
    publish(settings, "firms_up", 0, UPSERTS[0])
    with Lake(settings.lake) as lake:
        add_user(lake, ["amr", "tax"], "tax_clerk", "tax", "analyst", by="test", audit=None)
        grants = {name: add_grant(lake, registry, "tax", name, columns=GRANTED, row_filter="staff >= 5")
                  for name in ("firms", "firms_up")}
    return settings, registry, grants


@pytest.fixture
def pg():
    psycopg = pytest.importorskip("psycopg")
    schema = f"sub_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); .ci/run shows how to start it")
    yield conn, schema
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.close()


@pytest.fixture
def maria():
    from core.duck import connect

    con = connect(extensions=("mysql_scanner",))
    try:
        con.execute(f"ATTACH '{MYSQL_DSN}' AS my (TYPE mysql)")
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not there
        pytest.fail(f"MariaDB is not running on 127.0.0.1:3306 ({exc}); .ci/run shows how to start it")
    tables: list[str] = []
    yield con, tables
    for t in [*tables, "onesource_deliveries"]:
        con.execute(f"CALL mysql_execute('my', 'DROP TABLE IF EXISTS {t}')")
    con.close()


def _norm(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return str(value.normalize()) if value == value.to_integral() else str(value)
    return str(value)


def governed(settings, registry, dataset: str, snapshot: int) -> list[tuple]:
    """The oracle: the subscriber's governed query at the delivered snapshot, sorted."""
    engine = GovernedEngine(settings, registry, as_of=snapshot)
    result = engine.query("tax", f"SELECT * FROM shared.{dataset}", user="tax_clerk", purpose="test oracle")
    return sorted(tuple(_norm(v) for v in r) for r in result.rows)


def pg_rows(conn, table: str) -> list[tuple]:
    return sorted(tuple(_norm(v) for v in r) for r in conn.execute(f"SELECT * FROM {table}").fetchall())


def maria_rows(con, table: str) -> list[tuple]:
    con.execute("CALL mysql_clear_cache()")
    return sorted(tuple(_norm(v) for v in r) for r in con.execute(f"SELECT * FROM my.{table}").fetchall())


def subscribe(settings, registry, dataset: str, kind: str, target: dict, mode: str = "changes"):
    with Lake(settings.lake) as lake:
        return store.add(lake, registry, department="tax", user="tax_clerk", dataset=dataset, target_kind=kind,
                         target=target, mode=mode)


def test_postgres_and_mariadb_tables_follow_three_publishes_exactly(city, pg, maria):
    settings, registry, _ = city
    conn, schema = pg
    my, my_tables = maria
    suffix = uuid.uuid4().hex[:6]
    my_tables += [f"firms_{suffix}", f"up_{suffix}"]
    subs = {  # (subscription, read the target's rows)
        "pg firms": (subscribe(settings, registry, "firms", "postgres", {"dsn": PG_DSN, "table": f"{schema}.firms"}),
                     lambda: pg_rows(conn, f"{schema}.firms"), "firms"),
        "pg firms_up": (subscribe(settings, registry, "firms_up", "postgres",
                                  {"dsn": PG_DSN, "table": f"{schema}.firms_up"}),
                        lambda: pg_rows(conn, f"{schema}.firms_up"), "firms_up"),
        "maria firms": (subscribe(settings, registry, "firms", "mysql", {"dsn": MYSQL_DSN, "table": my_tables[0]}),
                        lambda: maria_rows(my, my_tables[0]), "firms"),
        "maria firms_up": (subscribe(settings, registry, "firms_up", "mysql",
                                     {"dsn": MYSQL_DSN, "table": my_tables[1]}),
                           lambda: maria_rows(my, my_tables[1]), "firms_up"),
    }
    kinds: dict[str, list[str]] = {name: [] for name in subs}
    for step in range(3):
        if step:
            publish(settings, "firms", step, SNAPSHOTS[step])
            publish(settings, "firms_up", step, UPSERTS[step])
        for name, (sub, target_rows, dataset) in subs.items():
            outcome = deliver(settings, registry, sub)
            assert outcome.status == "delivered", (name, outcome)
            kinds[name].append(outcome.kind)
            snapshot = int(outcome.delivery_id.rsplit("-", 1)[1])
            expected = governed(settings, registry, dataset, snapshot)
            assert target_rows() == expected, (name, step)
            assert len(expected[0]) == len(GRANTED)  # the capital never reaches the subscriber
            if step == 2:  # a rerun sends nothing (checked once: each costs a delivery's checks)
                assert deliver(settings, registry, sub).status == "unchanged"
    assert all(k == ["snapshot", "changes", "changes"] for k in kinds.values()), kinds
    # the target's mark and the lake's ledger agree on the snapshot held
    mark = conn.execute(f"SELECT delivery_id, row_count FROM {schema}.onesource_deliveries WHERE subscription_id = %s",
                        [subs["pg firms_up"][0].subscription_id]).fetchone()
    with Lake(settings.lake, read_only=True) as lake:
        last = store.deliveries(lake, subs["pg firms_up"][0].subscription_id)[-1]
    assert mark[0] == last.delivery_id and last.status == "delivered"


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from core.config import Settings
    from schemas import load_registry
    from lakehouse import Lake
    from sharing.subscriptions import store, targets
    from sharing.subscriptions.deliver import deliver

    settings = Settings(home={home!r})
    point = sys.argv[1]
    if point == "in-transaction":  # the rows are in, the mark is being written: the target's COMMIT never comes
        execute = targets.DatabaseTarget._execute
        def dying(self, con, sql):
            if sql.startswith("INSERT INTO") and targets.LEDGER_TABLE in sql:
                os.kill(os.getpid(), signal.SIGKILL)
            return execute(self, con, sql)
        targets.DatabaseTarget._execute = dying
    else:  # the target committed; the lake's ledger row is never written
        def dying(lake, delivery):
            if delivery.status == "delivered":
                os.kill(os.getpid(), signal.SIGKILL)
        store.record = dying
    registry = load_registry(settings.registry_dir)
    with Lake(settings.lake, read_only=True) as lake:
        sub = store.subscription(lake, sys.argv[2])
    deliver(settings, registry, sub)
""")


def test_a_delivery_killed_mid_way_then_rerun_leaves_no_duplicates(city, pg):
    settings, registry, _ = city
    conn, schema = pg
    table = f"{schema}.firms_up"
    sub = subscribe(settings, registry, "firms_up", "postgres", {"dsn": PG_DSN, "table": table}, mode="snapshot")
    assert deliver(settings, registry, sub).status == "delivered"
    first = pg_rows(conn, table)
    script = KILLER.format(repo=str(REPO_ROOT), home=str(settings.home))

    def killed(point: str) -> None:
        proc = subprocess.run([sys.executable, "-c", script, point, sub.subscription_id], capture_output=True,
                              text=True, timeout=300, env={**os.environ})
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    publish(settings, "firms_up", 1, UPSERTS[1])
    killed("in-transaction")
    assert pg_rows(conn, table) == first  # rolled back whole: the old rows, the old mark
    outcome = deliver(settings, registry, sub)
    assert outcome.status == "delivered" and outcome.kind == "snapshot"
    snapshot = int(outcome.delivery_id.rsplit("-", 1)[1])
    assert pg_rows(conn, table) == governed(settings, registry, "firms_up", snapshot)

    publish(settings, "firms_up", 2, UPSERTS[2])
    killed("after-commit")
    held = conn.execute(f"SELECT delivery_id FROM {schema}.onesource_deliveries").fetchall()
    recovered = deliver(settings, registry, sub)  # recorded from the target's mark, nothing sent again
    assert (recovered.status, recovered.kind) == ("delivered", "recovered") and [(recovered.delivery_id,)] == held
    snapshot = int(recovered.delivery_id.rsplit("-", 1)[1])
    rows = pg_rows(conn, table)
    assert rows == governed(settings, registry, "firms_up", snapshot)
    assert len(rows) == len({r[0] for r in rows})  # no key twice
    assert deliver(settings, registry, sub).status == "unchanged"
    with Lake(settings.lake, read_only=True) as lake:
        assert [d.kind for d in store.deliveries(lake, sub.subscription_id)] == ["snapshot", "snapshot", "recovered"]


def test_revocation_stops_deliveries(city, pg):
    settings, registry, grants = city
    conn, schema = pg
    table = f"{schema}.firms"
    down = subscribe(settings, registry, "firms", "postgres", {"dsn": "host=127.0.0.1 port=1 dbname=test user=postgres "
                                                                  "password=${NOT_SET_HERE}", "table": table})
    failed = deliver(settings, registry, down, attempts=2, backoff=0.01, environ={"NOT_SET_HERE": "pw0"})
    assert failed.status == "failed" and "postgres://127.0.0.1:1/test" in failed.message and "pw0" not in failed.message
    sub = subscribe(settings, registry, "firms", "postgres", {"dsn": PG_DSN, "table": table})
    assert deliver(settings, registry, sub).status == "delivered"
    before = pg_rows(conn, table)
    with Lake(settings.lake) as lake:
        revoke_grant(lake, grants["firms"])
    publish(settings, "firms", 1, SNAPSHOTS[1])
    outcome = deliver(settings, registry, sub)
    assert outcome.status == "refused" and "no active grant on firms" in outcome.message
    assert pg_rows(conn, table) == before  # nothing delivered
    with Lake(settings.lake, read_only=True) as lake:
        last = store.deliveries(lake, sub.subscription_id)[-1]
        with pytest.raises(store.SubscriptionError, match="no active grant"):  # and no new subscription on it
            store.add(lake, registry, department="tax", user="tax_clerk", dataset="firms", target_kind="files",
                      target={"folder": "/tmp/x"})
    assert (last.status, last.rows) == ("refused", 0) and "revoked" in last.error
    # granted again, narrower: the policy changed, so the whole view is sent and the table made anew
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "tax", "firms", columns=["uscc", "enterprise_name"], row_filter="staff >= 5")
    again = deliver(settings, registry, sub)
    assert (again.status, again.kind) == ("delivered", "snapshot")
    assert [c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                       "AND table_name = 'firms' ORDER BY ordinal_position", [schema]).fetchall()] \
        == ["uscc", "enterprise_name"]
    assert pg_rows(conn, table) == governed(settings, registry, "firms", int(again.delivery_id.rsplit("-", 1)[1]))


class Receiver(http.server.BaseHTTPRequestHandler):
    """A subscriber's webhook that is down (503) for its first ``failing`` calls, then takes them."""

    got: list[tuple[dict, bytes]] = []
    failing = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((dict(self.headers), body))
        self.send_response(503 if len(Receiver.got) <= Receiver.failing else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_with_a_signed_link_and_deliveries_count_as_use(settings, monkeypatch):
    """amr's open dataset, subscribed by tax through a webhook: the POST is signed with tax's secret, its
    link gives tax's view over the HTTP API (with a tax token), a forged or expired link does not; the
    delivery is tax's governed read, so the usage KPI counts the dataset as used: 0/1 before, 1/1 after."""
    from fastapi.testclient import TestClient

    from metrics.kpis import Period, compute
    from onesource.serve import create_app
    from sharing.audit import AuditLog, sync_to_lake

    write_registry(settings.registry_dir)
    registry = load_registry(settings.registry_dir)
    publish(settings, "firms", 0, SNAPSHOTS[0])

    def usage() -> tuple[int, int]:
        with Lake(settings.lake) as lake:
            sync_to_lake(lake, AuditLog(settings.home / "audit"))
            figure = compute(lake, registry, Period.month())["city"]["usage_rate"]
        return figure["numerator"], figure["denominator"]

    assert usage() == (0, 1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TAX_HOOK_SECRET", "s3cret")
    with Lake(settings.lake) as lake:
        _, token = add_user(lake, ["amr", "tax"], "tax_clerk", "tax", "analyst", by="test", audit=None)
        _, amr_token = add_user(lake, ["amr", "tax"], "amr_clerk", "amr", "analyst", by="test", audit=None)
    sub = subscribe(settings, registry, "firms", "webhook",
                    {"url": f"http://127.0.0.1:{server.server_port}/hook", "api_url": "http://api.test",
                     "secret": "${TAX_HOOK_SECRET}"}, mode="snapshot")
    Receiver.got.clear()
    Receiver.failing = 2
    outcome = deliver(settings, registry, sub, backoff=0.05)  # down twice: retried, the same delivery each time
    server.shutdown()
    assert outcome.status == "delivered" and outcome.rows == 3
    assert len(Receiver.got) == 3 and {h["X-OneSource-Delivery"] for h, _ in Receiver.got} == {outcome.delivery_id}
    with Lake(settings.lake, read_only=True) as lake:
        assert [(d.status, d.attempts) for d in store.deliveries(lake, sub.subscription_id)] == [("delivered", 3)]
    headers, body = Receiver.got[-1]
    assert headers["X-OneSource-Signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    note = json.loads(body)
    assert (note["delivery_id"], note["rows"], note["kind"]) == (outcome.delivery_id, 3, "snapshot")
    path = note["link"].removeprefix("http://api.test")
    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        client = TestClient(create_app(engine))
        answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        lines = answer.text.strip().splitlines()
        assert lines[0] == "uscc,enterprise_name,enterprise_status,capital,staff,founded"
        assert sorted(r.split(",")[0] for r in lines[1:]) == sorted([A, B, C])
        assert client.get(path).status_code == 401  # the link alone is not enough
        assert client.get(path, headers={"Authorization": f"Bearer {amr_token}"}).status_code == 404  # not amr's
        forged = path.replace("signature=", "signature=0")
        assert client.get(forged, headers={"Authorization": f"Bearer {token}"}).status_code == 404
        later = path.replace("expires=", "expires=1")
        assert client.get(later, headers={"Authorization": f"Bearer {token}"}).status_code == 404  # extended
    finally:
        engine.close()
    assert usage() == (1, 1)  # the delivery is tax's use of amr's dataset


def test_the_demo_street_subscription_delivers_its_streets_rows_or_says_why_not(tmp_path, monkeypatch, pg):
    from examples.changsha.runner import _demo_jurisdictions, _demo_subscription
    from examples.changsha.subscriptions import DSN_ENV
    from tests.helpers import demo_home

    conn, _ = pg
    settings, registry = demo_home(tmp_path / "demo", ("mca_admin_divisions", "psb_resident_register"))
    street = {u: (code, n) for u, code, _, n in _demo_jurisdictions(settings, registry)}["mca_wangyuehu"]
    monkeypatch.setenv(DSN_ENV, "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2")
    skipped = _demo_subscription(settings, registry)
    assert skipped["status"] == "skipped" and DSN_ENV in skipped["message"] and "postgres" in skipped["message"]
    monkeypatch.setenv(DSN_ENV, PG_DSN)
    conn.execute("DROP SCHEMA IF EXISTS street_430104001 CASCADE")
    try:
        sub = _demo_subscription(settings, registry)
        assert (sub["status"], sub["rows"], sub["organisation"]) == ("delivered", street[1], street[0]), sub
        held = conn.execute("SELECT street_code FROM street_430104001.residents").fetchall()
        assert len(held) == street[1] and {s for (s,) in held} == {street[0]}  # its street's residents only
        assert _demo_subscription(settings, registry)["status"] == "unchanged"  # a rerun: the same subscription
    finally:
        conn.execute("DROP SCHEMA IF EXISTS street_430104001 CASCADE")


def test_the_subscriptions_dag_delivers_in_airflow(settings, tmp_path):
    """`airflow dags test onesource_subscriptions` (triggered by hand: every subscription) runs the real task:
    the subscriber's drop folder gets the view, the ledger says delivered, the task log says so."""
    from onesource import airflow_cli

    write_registry(settings.registry_dir)
    registry = load_registry(settings.registry_dir)
    publish(settings, "firms", 0, SNAPSHOTS[0])
    with Lake(settings.lake) as lake:
        add_user(lake, ["amr", "tax"], "tax_clerk", "tax", "analyst", by="test", audit=None)
    sub = subscribe(settings, registry, "firms", "files", {"folder": str(tmp_path / "drop")}, mode="snapshot")
    airflow_cli.ensure_db(settings, settings.reports_dir / "migrate.log")
    log = settings.reports_dir / "subscriptions.log"
    assert airflow_cli.dags_test(settings, "onesource_subscriptions", log) == 0, log.read_text(encoding="utf-8")[-3000:]
    assert f"subscription {sub.subscription_id}: delivered snapshot 3 row(s)" in log.read_text(encoding="utf-8")
    with Lake(settings.lake, read_only=True) as lake:
        assert [(d.status, d.rows) for d in store.deliveries(lake, sub.subscription_id)] == [("delivered", 3)]
    assert len(list((tmp_path / "drop").glob("firms-*-snapshot.csv"))) == 1
