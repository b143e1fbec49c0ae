"""Slow tier: `onesource security freeze` from another process stops a live `onesource serve` at once: the next
query of a live psycopg connection and of an HTTP client is refused, the wire connection is closed (idle ones
too, within a couple of seconds), the old token never works again, the portal session ends; a department and a
dataset freeze likewise, and nobody else is stopped."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from core.config import Settings
from lakehouse.lake import Lake
from portal.web import SESSION_COOKIE
from sharing.users import create_user
from tests.helpers import csv_text, drop, firms_dataset, free_port, load, write_registry
from tests.support.freeze import LEDGER
from tests.support.tls import self_signed

pytestmark = pytest.mark.slow
USERS = {"amr_a": "amr", "amr_b": "amr", "tax_a": "tax"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("freeze-live") / "home")
    write_registry(settings.registry_dir, [firms_dataset(), LEDGER])
    drop(settings, "amr/firms/a.csv", csv_text())
    drop(settings, "tax/ledger/a.csv", "代码,数\na,1\nb,2\n")
    assert [r.status for r in load(settings)] == ["published"]
    assert [r.status for r in load(settings, "ledger")] == ["published"]
    creds = {}
    with Lake(settings.lake) as lake:
        for user, dept in USERS.items():
            creds[user] = create_user(lake, dept, user)
    http_port, pg_port = free_port(), free_port()
    cert, key = self_signed(settings.home)  # TLS offered, not required: connections of both kinds are ended
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home), "ONESOURCE_PG_TLS_CERT": str(cert),
           "ONESOURCE_PG_TLS_KEY": str(key)}
    server_env = env
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env=server_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            socket.create_connection(("127.0.0.1", pg_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("onesource serve did not start: " + (proc.stdout.read() if proc.stdout else ""))
    env = {k: v for k, v in env.items() if not k.startswith("ONESOURCE_PG_TLS")}
    yield settings, creds, http_port, pg_port, env
    proc.terminate()
    proc.wait(timeout=30)


def security(env: dict, *args: str) -> str:
    """`onesource security ...` in a process of its own, as an operator runs it."""
    done = subprocess.run([sys.executable, "-m", "onesource.cli", "security", *args, "--by", "op"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wire(pg_port: int, user: str, password: str, sslmode: str = "disable") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=pg_port, user=user, password=password, dbname="onesource",
                           autocommit=True, connect_timeout=10, sslmode=sslmode)


def count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM shared.{table}").fetchone()[0]


def http_query(client: httpx.Client, token: str, table: str) -> httpx.Response:
    return client.post("/api/v1/query", json={"sql": f"SELECT count(*) AS n FROM shared.{table}", "format": "json"},
                       headers={"Authorization": f"Bearer {token}"})


def portal(http_port: int, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    signed = client.post("/login", data={"username": user, "password": password, "next": "/dashboard"})
    assert signed.status_code == 303 and SESSION_COOKIE in client.cookies, signed.text[:300]
    return client


def signed_in(client: httpx.Client) -> bool:
    page = client.get("/dashboard")
    return not (page.status_code in (302, 303) and page.headers["location"].startswith("/login"))


def closed_within(conn: psycopg.Connection, seconds: float) -> float | None:
    """Seconds until the server spoke or hung up on an idle connection (None: not within ``seconds``)."""
    started = time.monotonic()
    ready, _, _ = select.select([conn.fileno()], [], [], seconds)
    return time.monotonic() - started if ready else None


def test_a_user_freeze_stops_wire_http_and_portal_at_once_and_the_token_for_good(live):
    settings, creds, http_port, pg_port, env = live
    password, token = creds["amr_a"]
    busy, idle, other = wire(pg_port, "amr_a", password), wire(pg_port, "amr_a", password, "require"), \
        wire(pg_port, "tax_a", creds["tax_a"][0])
    assert idle.pgconn.ssl_in_use and not busy.pgconn.ssl_in_use
    assert count(busy, "firms") == 3 and count(idle, "ledger") == 2
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    assert http_query(api, token, "firms").status_code == 200
    page = portal(http_port, "amr_a", password)
    assert signed_in(page)

    out = security(env, "freeze", "--user", "amr_a", "--reason", "suspected stolen account")
    assert "frozen" in out and "amr_a" in out
    # the idle connection (over TLS): closed by the server's watcher within a couple of seconds, FATAL saying why
    waited = closed_within(idle, 5)
    assert waited is not None and waited < 3, waited
    with pytest.raises(psycopg.OperationalError, match="frozen by the data bureau"):
        count(idle, "firms")
    assert idle.closed or idle.broken
    # the next query on the other live connection is refused and the connection is over
    with pytest.raises(psycopg.Error, match="frozen by the data bureau") as refused:
        count(busy, "firms")
    assert "suspected stolen account" not in str(refused.value)  # the reason is never told
    assert busy.closed or busy.broken
    # HTTP: the token is revoked; the portal session is over; a new sign-in is refused
    assert http_query(api, token, "firms").status_code == 401
    assert not signed_in(page)
    with pytest.raises(psycopg.OperationalError, match="frozen by the data bureau"):
        wire(pg_port, "amr_a", password)
    relogin = httpx.post(f"http://127.0.0.1:{http_port}/login", data={"username": "amr_a", "password": password})
    assert relogin.status_code == 403 and "frozen by the data bureau" in relogin.text
    # nobody else is stopped
    assert count(other, "firms") == 3 and http_query(api, creds["tax_a"][1], "firms").status_code == 200

    out = security(env, "unfreeze", "--user", "amr_a", "--reason", "password changed")
    assert "rotate-token" in out
    assert http_query(api, token, "firms").status_code == 401  # never again
    again = wire(pg_port, "amr_a", password)
    assert count(again, "firms") == 3
    for conn in (again, other):
        conn.close()


def test_a_department_freeze_stops_each_of_its_users(live):
    settings, creds, http_port, pg_port, env = live
    amr_b, tax = wire(pg_port, "amr_b", creds["amr_b"][0]), wire(pg_port, "tax_a", creds["tax_a"][0])
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    assert count(amr_b, "firms") == 3 and count(tax, "firms") == 3
    security(env, "freeze", "--department", "tax", "--reason", "bulk reads")
    with pytest.raises(psycopg.Error, match="department tax is frozen by the data bureau"):
        count(tax, "firms")
    assert tax.closed or tax.broken
    assert http_query(api, creds["tax_a"][1], "firms").status_code == 401
    assert count(amr_b, "ledger") == 2  # amr is not frozen, and tax's dataset is not
    security(env, "unfreeze", "--department", "tax", "--reason", "contained")
    assert count(wire(pg_port, "tax_a", creds["tax_a"][0]), "firms") == 3
    amr_b.close()


def test_a_dataset_freeze_refuses_queries_reading_it_and_nothing_else(live):
    settings, creds, http_port, pg_port, env = live
    conn = wire(pg_port, "amr_b", creds["amr_b"][0])
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    assert count(conn, "ledger") == 2
    security(env, "freeze", "--dataset", "ledger", "--reason", "wrong rows published")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="dataset shared.ledger is frozen"):
        conn.execute("SELECT l.code FROM shared.firms f JOIN shared.ledger l ON true")
    assert count(conn, "firms") == 3  # the session goes on: only the dataset is frozen
    refused = http_query(api, creds["amr_b"][1], "ledger")
    assert refused.status_code == 403 and "frozen" in refused.json()["reason"]
    assert http_query(api, creds["amr_b"][1], "firms").status_code == 200
    security(env, "unfreeze", "--dataset", "ledger", "--reason", "corrected")
    assert count(conn, "ledger") == 2
    conn.close()


def test_the_next_statement_of_a_frozen_user_ends_its_connection_without_the_watcher(live, monkeypatch):
    """Without the watcher (its period made an hour), the engine's refusal of the next statement itself ends
    the connection: FATAL 42501 with the freeze's message, the connection closed."""
    import threading

    from schemas import load_registry
    from sharing.engine import GovernedEngine
    from sharing.pgwire import server as wire_server
    from sharing.security.freeze import freeze, unfreeze

    settings, creds, _, _, _ = live
    monkeypatch.setattr(wire_server, "FREEZE_WATCH", 3600.0)
    registry = load_registry(settings.registry_dir)
    engine = GovernedEngine(settings, registry, persistent=True)
    port = free_port()
    pg = wire_server.GovernedPgServer(("127.0.0.1", port), engine)
    threading.Thread(target=pg.serve_forever, daemon=True).start()
    try:
        conn = wire(port, "amr_b", creds["amr_b"][0])
        assert count(conn, "firms") == 3
        with Lake(settings.lake) as lake:
            freeze(lake, registry, "user", "amr_b", "drill", by="op", audit=None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="user amr_b is frozen by the data bureau"):
            count(conn, "firms")
        assert conn.closed or conn.broken
        with Lake(settings.lake) as lake:
            unfreeze(lake, registry, "user", "amr_b", "drill over", by="op", audit=None)
    finally:
        pg.shutdown()
        pg.server_close()
        engine.close()


def test_rotate_keys_while_the_server_runs_keeps_the_audit_chain_verifiable(live):
    """The server holds the old audit key: its next entries, after `security rotate-keys` from another process,
    are signed with the new one (it follows the rotation), and `onesource audit verify` passes."""
    settings, creds, http_port, pg_port, env = live
    conn = wire(pg_port, "amr_b", creds["amr_b"][0])
    assert count(conn, "firms") == 3
    out = security(env, "rotate-keys", "--reason", "drill")
    assert "audit key rotated" in out and "not encrypted" in out
    for _ in range(3):
        assert count(conn, "firms") == 3
    conn.close()
    time.sleep(0.5)  # the server's group commit anchors within 0.2 s
    verified = subprocess.run([sys.executable, "-m", "onesource.cli", "audit", "verify"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    entries = [json.loads(line) for line in (settings.home / "audit" / "audit.log").read_text().splitlines()]
    rotation = max(i for i, e in enumerate(entries) if e.get("action") == "rotate-audit-key")
    assert [e.get("user") for e in entries[rotation + 1:]].count("amr_b") >= 3  # the server's, after it
