"""Red-team findings, round 2: each test fails while its hole is open.

1. Wire lockout (BYPASS): the sign-in guard is consulted only when the startup message arrives. A connection
   opened before the lockout, held at the SCRAM stage, still signs in afterwards (and N held connections give
   N password guesses, not ``max_failures``).
2. Console dispute flags (LEAK): the console marks a result row with ⚑ when its key column's value has an open
   dispute on *any* dataset, so a department that cannot read a dataset (or reads its key masked) confirms
   full key values (resident IDs) by selecting them as literals: no grant, no match quota.
3. Portal request form (BYPASS): ``days`` is unchecked there (the API requires >= 1); ``days=0`` makes the
   approved grant never expire.
4. Grants (BYPASS): a department's grants are merged column-wise and row-wise separately, so a second, narrow
   grant (one harmless column, another district) exposes the first grant's columns on the second one's rows.
5. Audit (BYPASS): deleting the log and the anchor sidecar (both in the home) verifies as "intact: 0 entries",
   although the key outside the home proves a log existed.
6. Requests (CRASH): a huge ``days`` answers 500 on creation, and a merely large one makes the request
   impossible to approve (500 on every approval).
7. Sessions (WEAK): a portal session outlives the user being disabled (the bearer token stops at once).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import threading

import pytest
from fastapi.testclient import TestClient

from core.config import SignInSettings
from lakehouse.lake import CATALOG, Lake
from lakehouse.ledger import OPS
from onesource.serve import create_app
from sharing.audit import Anchor, AuditLog, verify
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import add_grant
from sharing.pgwire import GovernedPgServer
from sharing.scram import saslprep
from sharing.signin import SignInGuard
from tests.helpers import DISTRICT, OTHER_DISTRICT, demo_home, free_port, rows


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings, registry = demo_home(tmp_path_factory.mktemp("redteam2") / "home",
                                   ("mca_admin_divisions", "amr_enterprise_register", "psb_resident_register"),
                                   users=True)
    analysts = json.loads((settings.home / "demo-credentials.json").read_text())
    owners = json.loads((settings.home / "demo-owner-credentials.json").read_text())
    with Lake(settings.lake) as lake:
        # transport: names and IDs of one district; then only the district code of another one
        add_grant(lake, registry, "transport", "psb_resident_register",
                  columns=["resident_id", "person_name", "division_code"], row_filter=f"division_code = '{DISTRICT}'")
        add_grant(lake, registry, "transport", "psb_resident_register", columns=["division_code"],
                  row_filter=f"division_code = '{OTHER_DISTRICT}'")
    engine = GovernedEngine(settings, registry, persistent=True)
    yield settings, registry, engine, analysts, owners
    engine.close()


@pytest.fixture
def client(city):
    settings, _, engine, _, _ = city
    with TestClient(create_app(engine), raise_server_exceptions=False) as c:
        yield c


def _sign_in(client, creds) -> str:
    client.cookies.clear()
    r = client.post("/login", data={"username": creds["user"], "password": creds["password"], "next": "/console"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console").text).group(1)


# 1 ------------------------------------------------------------------------------------------------------------
class _Scram:
    """A hand-written client that can stop between the SASL messages."""

    def __init__(self, port: int, user: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        params = b"user\0" + user.encode() + b"\0database\0onesource\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def read(self) -> tuple[bytes, bytes]:
        head = self._exact(5)
        return head[:1], self._exact(struct.unpack("!i", head[1:])[0] - 4)

    def send(self, body: bytes) -> None:
        self.sock.sendall(b"p" + struct.pack("!i", len(body) + 4) + body)

    def first(self) -> bool:
        kind, body = self.read()
        if kind != b"R":
            return False
        self.client_first = "n=,r=" + base64.b64encode(os.urandom(18)).decode()
        msg = ("n,," + self.client_first).encode()
        self.send(b"SCRAM-SHA-256\0" + struct.pack("!i", len(msg)) + msg)
        kind, body = self.read()
        self.server_first = body[4:].decode()
        return kind == b"R"

    def final(self, password: str) -> list[tuple[bytes, bytes]]:
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth = f"{self.client_first},{self.server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.send(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
        out = []
        try:
            while True:
                kind, body = self.read()
                out.append((kind, body))
                if kind in (b"E", b"Z"):
                    return out
        except (ConnectionError, TimeoutError):
            return out

    def close(self) -> None:
        self.sock.close()


def test_a_connection_held_open_before_a_lockout_cannot_sign_in_during_it(city):
    _, _, engine, analysts, _ = city
    guard = SignInGuard(SignInSettings(max_failures=3, max_failures_per_address=50, window_minutes=15,
                                       lockout_minutes=15, delay_seconds=0.0, max_delay_seconds=0.0),
                        sleep=lambda _s: None)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine, guard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    user, password = analysts["edu"]["user"], analysts["edu"]["password"]
    try:
        held = _Scram(port, user)
        assert held.first()  # the attacker parks this one at the SCRAM stage
        for i in range(3):  # ... and fails enough elsewhere to lock the user name
            c = _Scram(port, user)
            assert c.first()
            c.final(f"wrong-{i}")
            c.close()
        fresh = _Scram(port, user)
        kind, body = fresh.read()
        fresh.close()
        assert kind == b"E" and b"too many failed sign-ins" in body  # control: the name is locked
        answer = held.final(password)
        held.close()
        signed_in = any(k == b"R" and b[:4] == struct.pack("!i", 0) for k, b in answer)
        assert not signed_in, "a connection opened before the lockout signed in while the user name is locked"
    finally:
        server.shutdown()
        server.server_close()


# 2 ------------------------------------------------------------------------------------------------------------
def test_console_dispute_flags_do_not_confirm_keys_of_unreadable_datasets(city, client):
    settings, _, engine, analysts, _ = city
    real_id = rows(settings, "SELECT resident_id FROM shared.psb_resident_register ORDER BY 1 LIMIT 1")[0][0]
    r = client.post("/api/v1/disputes", json={"dataset": "psb_resident_register", "key_value": real_id,
                                              "column": "household_address", "description": "wrong address"},
                    headers={"Authorization": "Bearer " + analysts["psb"]["token"]})
    assert r.status_code == 201, r.text
    with engine.cursor() as lake:
        assert "psb_resident_register" not in engine.access(lake.con, "edu")  # edu cannot read the register
    token = _sign_in(client, analysts["edu"])
    guess = "110101190001010000"
    sql = (f"(SELECT '{real_id}' AS resident_id FROM shared.amr_enterprise_register LIMIT 1) UNION ALL "
           f"(SELECT '{guess}' FROM shared.amr_enterprise_register LIMIT 1)")
    page = client.post("/console", data={"sql": sql, "csrf_token": token}).text
    assert 'id="result"' in page and real_id in page  # control: the query ran and shows both literals
    assert "⚑" not in page and 'class="flagged"' not in page, \
        "the console confirmed a resident ID disputed on a dataset edu cannot read"


# 3 ------------------------------------------------------------------------------------------------------------
def test_the_portal_request_form_cannot_ask_for_a_grant_that_never_expires(city, client):
    settings, _, _, analysts, owners = city
    token = _sign_in(client, analysts["nr"])
    r = client.post("/catalogue/psb_resident_register/request",
                    data={"purpose": "核验", "columns": ["division_code"], "days": "0", "csrf_token": token},
                    follow_redirects=False)
    found = re.search(r"%20([0-9a-f]{12})", r.headers.get("location", ""))  # the notice: "申请 <id>：..."
    if found is None:
        return  # refused: fine
    decided = client.post(f"/api/v1/requests/{found.group(1)}/approve", json={},
                          headers={"Authorization": "Bearer " + owners["psb"]["token"]})
    if decided.status_code != 200:
        return
    grant_id = decided.json()["grant_id"]
    [(expires,)] = rows(settings, f"SELECT expires_at FROM {CATALOG}.{OPS}.grants WHERE grant_id = '{grant_id}'")
    assert expires is not None, "days=0 from the portal form gave a grant that never expires"


# 4 ------------------------------------------------------------------------------------------------------------
def test_a_narrow_second_grant_does_not_widen_the_first_one(city):
    _, _, engine, _, _ = city
    try:
        result = engine.query("transport", "SELECT division_code, person_name, resident_id FROM "
                                           f"shared.psb_resident_register WHERE division_code = '{OTHER_DISTRICT}'")
    except (QueryRefused, QueryFailed):
        return
    assert result.rows, f"control: the second grant lets transport read the {OTHER_DISTRICT} rows"
    leaked = [r for r in result.rows if r[1] is not None or r[2] is not None]
    assert not leaked, (f"names/IDs of {OTHER_DISTRICT} were only granted for {DISTRICT}, "
                        f"yet {len(leaked)} rows show them")


# 5 ------------------------------------------------------------------------------------------------------------
def test_deleting_the_log_and_its_anchor_is_not_verified_as_intact(tmp_path):
    home = tmp_path / "home"
    catalog = home / "lake" / "catalog.sqlite"
    key = tmp_path / "keys" / "audit.key"  # outside the home: the insider cannot touch it
    log = AuditLog(home / "audit", key_file=key, anchor=Anchor(f"sqlite:{catalog}"))
    for i in range(3):
        log.append(department="tax", sql_sent=f"SELECT {i}", decision="allowed")
    log.close()
    assert verify(AuditLog(home / "audit", key_file=key, anchor=Anchor(f"sqlite:{catalog}"))).ok  # control
    (home / "audit" / "audit.log").unlink()
    for p in catalog.parent.glob("catalog.audit-anchor.sqlite*"):
        p.unlink()
    verdict = verify(AuditLog(home / "audit", key_file=key, anchor=Anchor(f"sqlite:{catalog}")))
    assert not verdict.ok, "log and anchor deleted, the key still exists, yet verify says intact"


# 6 ------------------------------------------------------------------------------------------------------------
def test_a_large_request_period_is_refused_not_a_server_error(city, client):
    _, _, _, analysts, owners = city
    headers = {"Authorization": "Bearer " + analysts["mca"]["token"]}
    huge = client.post("/api/v1/requests", json={"dataset": "psb_resident_register", "purpose": "p", "days": 2 ** 40},
                       headers=headers)
    assert huge.status_code < 500, f"days=2**40: {huge.status_code} {huge.text[:100]}"
    large = client.post("/api/v1/requests", json={"dataset": "psb_resident_register", "purpose": "p",
                                                  "days": 100_000_000}, headers=headers)
    if large.status_code != 201:
        return  # refused up front: fine
    decided = client.post(f"/api/v1/requests/{large.json()['request_id']}/approve", json={},
                          headers={"Authorization": "Bearer " + owners["psb"]["token"]})
    assert decided.status_code < 500, f"approving a 1e8-day request: {decided.status_code} {decided.text[:100]}"


# 7 ------------------------------------------------------------------------------------------------------------
def test_a_disabled_user_loses_the_portal_session_too(city, client):
    settings, _, _, analysts, _ = city
    creds = analysts["housing"]
    token = _sign_in(client, creds)
    with Lake(settings.lake) as lake:
        lake.write("disable housing_analyst", f"UPDATE {CATALOG}.{OPS}.users SET disabled_at = ? WHERE user_name = ?",
                   [dt.datetime.now(dt.UTC).replace(tzinfo=None), creds["user"]])
    bearer = client.get("/api/v1/catalogue", headers={"Authorization": "Bearer " + creds["token"]})
    assert bearer.status_code == 401  # control: the token stops at once
    r = client.post("/console", data={"sql": "SELECT count(*) FROM shared.amr_enterprise_register",
                                      "csrf_token": token}, follow_redirects=False)
    assert 'id="result"' not in r.text, "a disabled user's portal session still runs governed queries"
