"""Department users: a password for the Postgres-wire endpoint, a bearer token for HTTP.

Nothing is stored in clear. Tokens are random and kept as sha256. Passwords are kept as scrypt (for
sign-in pages) and as PostgreSQL's own md5 verifier (``md5(password || user)``), because the wire
endpoint's md5 handshake needs exactly what PostgreSQL stores for md5 roles. That verifier is
weaker than scrypt. The endpoint listens on loopback, and beyond it belongs behind TLS (docs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from lakehouse.lake import CATALOG, OPS, Lake, retrying


@dataclass(frozen=True)
class User:
    name: str
    department: str
    role: str


def _scrypt(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)).split("$")[2], digest)


def pg_md5(user: str, password: str) -> str:
    return hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324 - PostgreSQL's md5 verifier


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(lake: Lake, department: str, user: str, role: str = "analyst") -> tuple[str, str]:
    """Create (or reset) a user; returns (password, token), shown once and never stored in clear."""
    password, token = secrets.token_urlsafe(12), secrets.token_urlsafe(24)

    def write() -> None:
        with lake.transaction() as con:
            con.execute(f"DELETE FROM {CATALOG}.{OPS}.users WHERE user_name = ?", [user])
            con.execute(f"INSERT INTO {CATALOG}.{OPS}.users VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                        [user, department, role, _scrypt(password), pg_md5(user, password), token_hash(token),
                         dt.datetime.now(dt.UTC).replace(tzinfo=None)])
            lake.commit_message(f"user {user} of {department}", {"user": user})

    retrying(write, lake.settings.commit_retries, f"creating user {user}")
    return password, token


def _lookup(lake: Lake, column: str, value: str) -> tuple | None:
    if "users" not in lake.tables(OPS):
        return None
    return lake.con.execute(
        f"SELECT user_name, department, role, password_pg_md5 FROM {CATALOG}.{OPS}.users "
        f"WHERE {column} = ? AND disabled_at IS NULL", [value]).fetchone()


def user_by_token(lake: Lake, token: str) -> User | None:
    row = _lookup(lake, "token_sha256", token_hash(token))
    return User(row[0], row[1], row[2]) if row else None


def pg_verifier(lake: Lake, user: str) -> tuple[User, str] | None:
    row = _lookup(lake, "user_name", user)
    return (User(row[0], row[1], row[2]), row[3]) if row else None


def authenticate(lake: Lake, user: str, password: str) -> User | None:
    """The user, when ``password`` is theirs (the portal's sign-in); None otherwise."""
    if "users" not in lake.tables(OPS):
        return None
    row = lake.con.execute(
        f"SELECT user_name, department, role, password_scrypt FROM {CATALOG}.{OPS}.users "
        "WHERE user_name = ? AND disabled_at IS NULL", [user]).fetchone()
    if row is None or not check_password(row[3], password):
        return None
    return User(row[0], row[1], row[2])
