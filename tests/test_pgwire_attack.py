"""The Postgres-wire server under attack: a hostile department user and an unauthenticated network client,
with raw protocol messages (struct-packed) against an in-process server on a real governed engine.

Each test states the defect it guards against. The invariant everywhere: a malformed message gets an
ErrorResponse or a clean close, the server keeps serving everyone else, and nothing runs outside the
engine's governance."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse import Lake
from onesource.config import Settings
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.pgwire import GovernedPgServer
from sharing.pgwire import server as wire
from sharing.scram import saslprep
from sharing.users import create_user
from tests.conftest import free_port
from tests.helpers import drop, firms_dataset, load, write_registry
from tests.test_ingest_files import csv_text

SECRETS = firms_dataset(name="firm_secrets", share_type="conditional", conditions="稽查",
                        connector={"kind": "file", "path": "amr/secrets/*.csv", "format": "csv", "encoding": "utf-8"})


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings_ = Settings(home=tmp_path_factory.mktemp("pgwire-attack") / "home")
    write_registry(settings_.registry_dir, [firms_dataset(), SECRETS])
    drop(settings_, "amr/firms/a.csv", csv_text())
    drop(settings_, "amr/secrets/a.csv", csv_text())
    assert [r.status for r in load(settings_)] == ["published"]
    assert [r.status for r in load(settings_, "firm_secrets")] == ["published"]
    with Lake(settings_.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_analyst")
    engine = GovernedEngine(settings_, load_registry(settings_.registry_dir), persistent=True)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"engine": engine, "server": server, "port": server.server_address[1], "password": password}
    server.shutdown()
    server.server_close()
    engine.close()


def connect(city) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=city["port"], user="tax_analyst", password=city["password"],
                           dbname="onesource", autocommit=True, connect_timeout=10)


def still_serving(city) -> None:
    with connect(city) as c:
        assert c.execute("SELECT count(*) FROM shared.firms").fetchone()[0] > 0


# --- a hand-written client --------------------------------------------------------------------------------------
class Raw:
    def __init__(self, port: int, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def startup(self, user: str = "tax_analyst") -> None:
        params = b"user\0" + user.encode() + b"\0database\0onesource\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)

    def exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def read(self) -> tuple[bytes, bytes]:
        head = self.exact(5)
        return head[:1], self.exact(struct.unpack("!i", head[1:])[0] - 4)

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def until(self, kinds: bytes = b"Z") -> list[tuple[bytes, bytes]]:
        """Messages up to one of ``kinds`` (or the close), a clean close being the end of the list."""
        out = []
        try:
            while True:
                kind, body = self.read()
                out.append((kind, body))
                if kind in kinds:
                    return out
        except (ConnectionError, OSError):
            return out

    def sign_in(self, password: str, user: str = "tax_analyst") -> None:
        self.startup(user)
        kind, _ = self.read()
        assert kind == b"R"
        client_first = "n=,r=" + base64.b64encode(os.urandom(18)).decode()
        msg = ("n,," + client_first).encode()
        self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(msg)) + msg)
        _, body = self.read()
        server_first = body[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth = f"{client_first},{server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.send(b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
        answer = self.until(b"ZE")
        assert answer[-1][0] == b"Z", answer

    def close(self) -> None:
        self.sock.close()


def errors(messages) -> list[str]:
    return [body.decode("utf-8", "replace") for kind, body in messages if kind == b"E"]


# --- unauthenticated clients: slowloris and connection floods -----------------------------------------------------
def test_sign_in_deadline_is_for_the_whole_sign_in_not_each_read(city, monkeypatch):
    """Defect: SIGN_IN_SECONDS was a timeout per recv(), so a client trickling its startup packet a byte
    at a time (each within the timeout) held a server thread for ever without signing in."""
    monkeypatch.setattr(wire, "SIGN_IN_SECONDS", 1.5)
    startup = b"user\0tax_analyst\0database\0onesource\0\0"
    packet = struct.pack("!ii", 8 + len(startup), 196608) + startup
    r = Raw(city["port"])
    started = time.monotonic()
    closed = False
    try:
        for byte in packet:  # 46 bytes at 0.2 s: 9 s in all, never 1.5 s without a byte
            r.sock.sendall(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > 6:
                break
    except OSError:
        closed = True
    if not closed:
        r.sock.settimeout(5)
        try:
            closed = r.sock.recv(1) == b""
        except OSError:
            closed = True
    r.close()
    assert closed and time.monotonic() - started < 6, "a trickling client outlived the sign-in deadline"
    still_serving(city)


def test_connections_that_never_sign_in_are_capped(city):
    """Defect: no cap on connections signing in: a flood of connections that never send a startup packet
    each held a thread (for SIGN_IN_SECONDS each, then again), starving real clients."""
    server = city["server"]
    before = server.max_signing_in
    server.max_signing_in = 3
    idle = [Raw(city["port"]) for _ in range(3)]
    try:
        time.sleep(0.3)  # the three are counted
        extra = Raw(city["port"])
        answer = extra.until(b"E")
        extra.close()
        assert answer and answer[-1][0] == b"E" and b"53300" in answer[-1][1], answer
    finally:
        for r in idle:
            r.close()
        deadline = time.monotonic() + 10
        while server._signing_in and time.monotonic() < deadline:  # noqa: SLF001 - the closed ones leave
            time.sleep(0.05)
        server.max_signing_in = before
    assert server._signing_in == 0  # noqa: SLF001
    still_serving(city)
