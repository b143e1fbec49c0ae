"""Department users: a password for the portal and the Postgres-wire endpoint, a bearer token for HTTP.

Nothing is stored in clear. Tokens are random and kept as sha256. Passwords are kept as scrypt (the
portal's sign-in page) and as PostgreSQL's own SCRAM-SHA-256 verifier (``password_scram``, see
sharing.scram), which the wire endpoint's SCRAM exchange needs: neither logs in by itself.

Users created before SCRAM have only an md5 verifier (``password_pg_md5``, which alone was enough to log
in). It is no longer written nor accepted: such a user is told at sign-in to have the password reset
(``onesource users reset NAME``), which stores a SCRAM verifier and drops the md5 one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from lakehouse.lake import CATALOG, OPS, Lake, retrying
from sharing.scram import make_verifier


@dataclass(frozen=True)
class User:
    name: str
    department: str
    role: str
    since: dt.datetime | None = None
    """When these credentials were set (a reset writes new ones): a session made before that is over."""


def _scrypt(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)).split("$")[2], digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(lake: Lake, department: str, user: str, role: str = "analyst") -> tuple[str, str]:
    """Create (or reset) a user; returns (password, token), shown once and never stored in clear."""
    password, token = secrets.token_urlsafe(12), secrets.token_urlsafe(24)

    def write() -> None:
        with lake.transaction() as con:
            con.execute(f"DELETE FROM {CATALOG}.{OPS}.users WHERE user_name = ?", [user])
            con.execute(f"INSERT INTO {CATALOG}.{OPS}.users (user_name, department, role, password_scrypt, "
                        "password_scram, token_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [user, department, role, _scrypt(password), make_verifier(password), token_hash(token),
                         dt.datetime.now(dt.UTC).replace(tzinfo=None)])
            lake.commit_message(f"user {user} of {department}", {"user": user})

    retrying(write, lake.settings.commit_retries, f"creating user {user}")
    return password, token


def reset_user(lake: Lake, user: str) -> tuple[str, str]:
    """A new password and token for an existing user (same department and role); returns (password, token)."""
    row = lake.con.execute(f"SELECT department, role FROM {CATALOG}.{OPS}.users WHERE user_name = ? "
                           "AND disabled_at IS NULL", [user]).fetchone() if "users" in lake.tables(OPS) else None
    if row is None:
        raise KeyError(f"no user {user!r}")
    return create_user(lake, row[0], user, role=row[1])


def user_by_token(lake: Lake, token: str) -> User | None:
    if "users" not in lake.tables(OPS):
        return None
    row = lake.con.execute(f"SELECT user_name, department, role, created_at FROM {CATALOG}.{OPS}.users "
                           "WHERE token_sha256 = ? AND disabled_at IS NULL", [token_hash(token)]).fetchone()
    return User(*row) if row else None


def still_valid(lake: Lake, user: User) -> bool:
    """Whether ``user``'s sign-in still holds: not disabled, credentials not reset since it was made."""
    if "users" not in lake.tables(OPS):
        return False
    row = lake.con.execute(f"SELECT created_at FROM {CATALOG}.{OPS}.users WHERE user_name = ? "
                           "AND disabled_at IS NULL", [user.name]).fetchone()
    return row is not None and (user.since is None or row[0] == user.since)


def scram_verifier(lake: Lake, user: str) -> tuple[User, str | None] | None:
    """The user and their SCRAM-SHA-256 verifier (the wire endpoint's sign-in); None for an unknown user, and
    a None verifier for a user whose password predates SCRAM (it must be reset)."""
    if "users" not in lake.tables(OPS):
        return None
    # a lake not written since SCRAM came may lack the column (Lake.ensure_zones adds it on the next write)
    scram = "password_scram" if lake.con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = 'users' AND column_name = 'password_scram'", [CATALOG, OPS]).fetchone()[0] else "NULL"
    row = lake.con.execute(f"SELECT user_name, department, role, {scram}, created_at FROM {CATALOG}.{OPS}.users "
                           "WHERE user_name = ? AND disabled_at IS NULL", [user]).fetchone()
    return (User(row[0], row[1], row[2], row[4]), row[3]) if row else None


def authenticate(lake: Lake, user: str, password: str) -> User | None:
    """The user, when ``password`` is theirs (the portal's sign-in); None otherwise."""
    if "users" not in lake.tables(OPS):
        return None
    row = lake.con.execute(
        f"SELECT user_name, department, role, password_scrypt, created_at FROM {CATALOG}.{OPS}.users "
        "WHERE user_name = ? AND disabled_at IS NULL", [user]).fetchone()
    if row is None or not check_password(row[3], password):
        return None
    return User(row[0], row[1], row[2], row[4])


def disable_user(lake: Lake, user: str) -> None:
    """Disable ``user`` (``onesource users disable``): its token, passwords and open sessions stop working
    on the next request or query, in every running server."""
    if "users" not in lake.tables(OPS) or lake.con.execute(
            f"SELECT count(*) FROM {CATALOG}.{OPS}.users WHERE user_name = ? AND disabled_at IS NULL",
            [user]).fetchone()[0] == 0:
        raise KeyError(f"no active user {user!r}")

    def write() -> None:
        with lake.transaction() as con:
            con.execute(f"UPDATE {CATALOG}.{OPS}.users SET disabled_at = ? WHERE user_name = ? AND disabled_at IS NULL",
                        [dt.datetime.now(dt.UTC).replace(tzinfo=None), user])
            lake.commit_message(f"disable user {user}", {"user": user})

    retrying(write, lake.settings.commit_retries, f"disabling user {user}")
