"""An in-process Postgres-wire server on a governed lake, and a raw protocol client for it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import sys
import threading

from core.config import Settings
from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.pgwire import GovernedPgServer
from sharing.scram import saslprep
from sharing.users import create_user
from tests.helpers import WireClient, csv_text, drop, firms_dataset, free_port, load, write_registry

SECRETS = firms_dataset(name="firm_secrets", share_type="conditional", conditions="稽查",
                        connector={"kind": "file", "path": "amr/secrets/*.csv", "format": "csv", "encoding": "utf-8"})


def serve_city(root):
    """A lake with firms (open) and firm_secrets (conditional), a tax analyst, and the wire server on it
    (in this process, so that tests can reach into it); ``crashed`` collects exceptions out of its threads."""
    settings_ = Settings(home=root / "home")
    write_registry(settings_.registry_dir, [firms_dataset(), SECRETS])
    drop(settings_, "amr/firms/a.csv", csv_text())
    drop(settings_, "amr/secrets/a.csv", csv_text())
    assert [r.status for r in load(settings_)] == ["published"]
    assert [r.status for r in load(settings_, "firm_secrets")] == ["published"]
    with Lake(settings_.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_analyst")
    engine = GovernedEngine(settings_, load_registry(settings_.registry_dir), persistent=True)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    crashed: list[tuple] = []  # an exception out of a connection's thread (socketserver prints it, nobody answers)
    server.handle_error = lambda request, address: crashed.append((address, sys.exc_info()[1]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"engine": engine, "server": server, "port": server.server_address[1], "password": password,
           "crashed": crashed}
    server.shutdown()
    server.server_close()
    engine.close()


class Raw(WireClient):
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


def sync_answer(r: Raw, *messages: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    for kind, body in messages:
        r.send(kind, body)
    r.send(b"S", b"")
    return r.until()


def value_of(answer) -> list[bytes | None]:
    out = []
    for kind, body in answer:
        if kind == b"D":
            (size,) = struct.unpack_from("!i", body, 2)
            out.append(None if size < 0 else body[6:6 + size])
    return out
