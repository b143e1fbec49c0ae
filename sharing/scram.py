"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL does it: the verifier kept at rest, and the server's
side of the exchange that the Postgres-wire endpoint runs with libpq, psycopg, PgJDBC, asyncpg, ...

The verifier is PostgreSQL's own text form, ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
(base64 parts, 4096 iterations as PostgreSQL's default). It lets the server check a client's proof, but
neither it nor anything the server sees during an exchange is enough to sign in: the proof needs the
ClientKey, which only the password gives. A wrong password and an unknown user fail the same way, after
the same exchange (the unknown user gets a mock salt derived from a server secret, as PostgreSQL does).

Channel binding (``SCRAM-SHA-256-PLUS``) needs TLS, which the endpoint does not terminate: it is not
offered, a client that says it could have used it (``y,,``) is accepted, one that insists (``p=``) is
told why it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096
SALT_BYTES = 16
NONCE_BYTES = 18


class ScramError(Exception):
    """The client broke the protocol (or asked for what this server does not do): the reason is for the client."""


class ProofRejected(Exception):
    """The client's proof does not match: a wrong password (or an unknown user)."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ScramError(f"malformed SCRAM message: {what} is not base64") from exc


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


_PROHIBITED = (stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
               stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
               stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1)


def saslprep(password: str) -> bytes:
    """The password's bytes as SCRAM hashes them: SASLprep (RFC 4013) where it applies, else the raw UTF-8,
    which is what PostgreSQL and libpq do (so a password that SASLprep refuses still works)."""
    raw = password.encode("utf-8")
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in password if not stringprep.in_table_b1(ch))
    text = unicodedata.normalize("NFKC", mapped)
    if any(check(ch) for ch in text for check in _PROHIBITED):
        return raw
    if any(stringprep.in_table_d1(ch) for ch in text):  # right-to-left text: RFC 3454 section 6
        if any(stringprep.in_table_d2(ch) for ch in text) or not (
                stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            return raw
    return text.encode("utf-8")


@dataclass(frozen=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            mechanism, iter_salt, keys = text.split("$")
            iterations, salt = iter_salt.split(":")
            stored, server = keys.split(":")
            if mechanism != MECHANISM:
                raise ValueError(mechanism)
            return cls(int(iterations), base64.b64decode(salt, validate=True), base64.b64decode(stored, validate=True),
                       base64.b64decode(server, validate=True))
        except ValueError as exc:
            raise ValueError("not a SCRAM-SHA-256 verifier") from exc

    def __str__(self) -> str:
        return (f"{MECHANISM}${self.iterations}:{_b64(self.salt)}$"
                f"{_b64(self.stored_key)}:{_b64(self.server_key)}")


def make_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``pg_authid.rolpassword`` holds)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return str(Verifier(iterations, salt, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")))


def mock_verifier(secret: bytes, user: str) -> Verifier:
    """A verifier for a user who does not exist: the same salt on every attempt (so the exchange does not
    tell that the user is unknown), and keys no password matches."""
    salt = hashlib.sha256(secret + b"salt" + user.encode("utf-8")).digest()[:SALT_BYTES]
    return Verifier(ITERATIONS, salt, secrets.token_bytes(32), secrets.token_bytes(32))


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM {what}: {part[:20]!r}")
        out.append((part[0], part[2:]))
    return out


class ServerExchange:
    """The server's side of one SCRAM-SHA-256 exchange: :meth:`first` answers the client-first-message,
    :meth:`final` checks the client-final-message and returns the server-final-message (the server's
    signature, which proves to the client that the server knows its verifier)."""

    def __init__(self, verifier: Verifier, *, known: bool = True, server_nonce: str | None = None):
        """``known=False``: a mock verifier (no such user), every proof is refused; ``server_nonce``: for tests
        with the RFC's example exchange (random otherwise)."""
        self.verifier = verifier
        self.known = known
        self._server_nonce = server_nonce or _b64(secrets.token_bytes(NONCE_BYTES))
        self._gs2_header = self._client_first_bare = self._server_first = self._nonce = ""

    def first(self, message: bytes) -> bytes:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("malformed SCRAM client-first-message: not UTF-8") from exc
        flag, sep1, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise ScramError("malformed SCRAM client-first-message")
        if flag.startswith("p="):
            raise ScramError("channel binding is not supported by this server (it does not terminate TLS); "
                             "connect with channel_binding=prefer or disable")
        if flag not in ("n", "y"):
            raise ScramError(f"malformed SCRAM client-first-message: unknown channel binding flag {flag[:10]!r}")
        if authzid:
            raise ScramError("SCRAM authorization identities are not supported")
        attrs = _attributes(bare, "client-first-message")
        if attrs[0][0] == "m":
            raise ScramError("SCRAM extensions are not supported")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise ScramError("malformed SCRAM client-first-message: expected n=...,r=...")
        client_nonce = attrs[1][1]
        if not all(0x21 <= ord(c) <= 0x7E and c != "," for c in client_nonce):
            raise ScramError("malformed SCRAM client-first-message: the nonce has characters it may not")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        v = self.verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first.encode("ascii")

    def final(self, message: bytes) -> bytes:
        if not self._nonce:
            raise ScramError("SCRAM client-final-message before the client-first-message")
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("malformed SCRAM client-final-message: not UTF-8") from exc
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed SCRAM client-final-message: no proof")
        attrs = dict(_attributes(without_proof, "client-final-message"))
        if _unb64(attrs.get("c", ""), "the channel binding") != self._gs2_header.encode("utf-8"):
            raise ScramError("SCRAM channel binding does not match the client-first-message")
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce does not match")
        proof = _unb64(proof_b64, "the proof")
        if len(proof) != hashlib.sha256().digest_size:
            raise ScramError("malformed SCRAM client-final-message: the proof has the wrong length")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        v = self.verifier
        signature = _hmac(v.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key) or not self.known:
            raise ProofRejected()
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode("ascii")
