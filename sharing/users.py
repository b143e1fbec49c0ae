"""Department users: a password for the portal and the Postgres-wire endpoint, a bearer token for HTTP,
and a role (sharing.roles) saying which pages and calls they reach.

Nothing is stored in clear. Tokens are random and kept as sha256. Passwords are kept as scrypt (the
portal's sign-in page) and as PostgreSQL's own SCRAM-SHA-256 verifier (``password_scram``, see
sharing.scram), which the wire endpoint's SCRAM exchange needs: neither logs in by itself. A new password
or token is returned once, to be shown once.

Users created before SCRAM have only an md5 verifier (``password_pg_md5``, which alone was enough to log
in). It is no longer written nor accepted: such a user is told at sign-in to have the password reset
(``onesource users reset NAME``), which stores a SCRAM verifier and drops the md5 one.

A user belongs to a department (whose grants it reads through) and may belong to an ``organisation``: a
division code of ``organisations.yaml`` (a district's office, a street office). NULL is the whole city (every
user from before organisations). A grant scoped to the jurisdiction shows the user only the rows under that
code (sharing.grants); the engine reads the organisation once per catalog stamp (sharing.engine).

``created_at`` is when the user's password was last set (or the user enabled again): a portal session or
wire sign-in from before that is over. ``added_at`` is when the user was added, ``changed_at`` and
``changed_by`` the last change. The administration functions (:func:`add_user`, :func:`disable_user`,
:func:`enable_user`, :func:`reset_password`, :func:`rotate_token`, :func:`reset_user`) record who did
what to whom in the audit log (sharing.audit) before they commit it: never the password or the token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.citytime import utc_now
from core.errors import TerminalError
from lakehouse import ledger
from lakehouse.lake import Lake, retrying
from sharing.roles import ROLES, canonical
from sharing.scram import make_verifier

if TYPE_CHECKING:
    from sharing.audit import AuditLog

USER_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
"""A user name: it signs in on the wire endpoint and the portal, and is written in the audit log."""


class UserError(TerminalError):
    """A users administration step that cannot be taken: the message says what and how to fix it."""


@dataclass(frozen=True)
class User:
    name: str
    department: str
    role: str
    since: dt.datetime | None = None
    """When these credentials were set (a reset writes new ones): a session made before that is over."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", canonical(self.role))


@dataclass(frozen=True)
class Account:
    """A user as ``onesource users list`` and the admin page show it (no hash)."""

    name: str
    department: str
    role: str
    enabled: bool
    created: dt.datetime | None
    changed: dt.datetime | None
    changed_by: str | None
    organisation: str | None = None
    """Division code of the user's organisation; None: the whole city."""


def _scrypt(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)).split("$")[2], digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_password() -> str:
    return secrets.token_urlsafe(12)


def _new_token() -> str:
    return secrets.token_urlsafe(24)


def create_user(lake: Lake, department: str, user: str, role: str = "analyst", *, by: str | None = None,
                by_department: str | None = None, audit: AuditLog | None = None,
                organisation: str | None = None) -> tuple[str, str]:
    """Create (or replace) a user; returns (password, token), shown once and never stored in clear. No
    check of the department (the demo and tests call it): :func:`add_user` is the checked way in."""
    password, token = _new_password(), _new_token()
    now = utc_now()
    _audit(audit, "add", user, department, role, by, by_department)

    def write() -> None:
        with lake.transaction() as con:
            ledger.replace_user(con, {
                "user_name": user, "department": department, "role": canonical(role), "password_scrypt": _scrypt(password),
                "password_scram": make_verifier(password), "token_sha256": token_hash(token), "created_at": now,
                "added_at": now, "changed_at": now, "changed_by": by, "organisation": organisation})
            lake.commit_message(f"user {user} of {department}", {"user": user})

    retrying(write, lake.settings.commit_retries, f"creating user {user}")
    return password, token


def add_user(lake: Lake, departments: Iterable[str], user: str, department: str, role: str, *, by: str,
             by_department: str | None = None, audit: AuditLog | None, organisation: str | None = None,
             organisations: Iterable[str] = ()) -> tuple[str, str]:
    """Add a new user of ``department`` (one of ``departments``, the registry's) with ``role``, of
    ``organisation`` (one of ``organisations``, the registry's division codes; None: the whole city); returns
    (password, token), shown once. Refused for an unknown department, organisation or role, a malformed name,
    or a name already taken (enabled or not)."""
    if organisation is not None:
        codes = sorted(organisations)
        if organisation not in codes:
            raise UserError(f"no organisation {organisation!r} in the registry (known: {', '.join(codes[:20]) or 'none'}"
                            f"{', ...' if len(codes) > 20 else ''}); declare it in organisations.yaml first, or leave "
                            "--organisation out for a user of the whole city")
    known = sorted(departments)
    if department not in known:
        raise UserError(f"no department {department!r} in the registry (known: {', '.join(known) or 'none'}); "
                        "register the department first (departments.yaml), or pick one of those")
    if canonical(role) not in ROLES:
        raise UserError(f"no role {role!r} (roles: {', '.join(ROLES)}); see sharing/roles.py for what each may do")
    if not USER_NAME.fullmatch(user):
        raise UserError(f"user name {user!r} is not allowed: lower-case letters, digits, '_', '.' or '-', "
                        "starting with a letter, at most 63 characters (e.g. tax_analyst2)")
    if ledger.user(lake.con, user) is not None:
        raise UserError(f"user {user!r} exists already; reset its password (users reset-password), rotate its "
                        "token (users rotate-token) or enable it (users enable) instead")
    return create_user(lake, department, user, role, by=by, by_department=by_department, audit=audit,
                       organisation=organisation)


def _known(lake: Lake, user: str) -> ledger.UserRow:
    row = ledger.user(lake.con, user)
    if row is None:
        raise UserError(f"no user {user!r}; `onesource users list` shows them, `onesource users add` adds one")
    return row


def _active(lake: Lake, user: str) -> ledger.UserRow:
    row = _known(lake, user)
    if not row.active:
        raise UserError(f"user {user!r} is disabled; enable it first (`onesource users enable {user}`)")
    return row


def _update(lake: Lake, user: str, action: str, by: str | None, sets: ledger.UserChanges, *, disabled: bool) -> None:
    """Set ``sets`` on ``user`` if it is still ``disabled`` (or not) as it was when the step was checked."""
    sets = {**sets, "changed_at": utc_now(), "changed_by": by}

    def write() -> None:
        with lake.transaction() as con:
            ledger.update_user(con, user, sets, disabled=disabled)
            lake.commit_message(f"{action} user {user}", {"user": user, "by": by})

    retrying(write, lake.settings.commit_retries, f"{action} user {user}")


def reset_password(lake: Lake, user: str, *, by: str | None = None, by_department: str | None = None,
                   audit: AuditLog | None = None) -> str:
    """A new password (the token stays); returns it. The user's portal sessions end."""
    row = _active(lake, user)
    _audit(audit, "reset-password", user, row.department, row.role, by, by_department)
    password = _new_password()
    _update(lake, user, "reset password of", by, {
        "password_scrypt": _scrypt(password), "password_scram": make_verifier(password), "password_pg_md5": None,
        "created_at": utc_now()}, disabled=False)
    return password


def rotate_token(lake: Lake, user: str, *, by: str | None = None, by_department: str | None = None,
                 audit: AuditLog | None = None) -> str:
    """A new bearer token (the password stays); returns it. The old token is refused from the next request."""
    row = _active(lake, user)
    _audit(audit, "rotate-token", user, row.department, row.role, by, by_department)
    token = _new_token()
    _update(lake, user, "rotate token of", by, {"token_sha256": token_hash(token)}, disabled=False)
    return token


def reset_user(lake: Lake, user: str, *, by: str | None = None, by_department: str | None = None,
               audit: AuditLog | None = None) -> tuple[str, str]:
    """A new password and token for an existing user (same department and role); returns (password, token)."""
    row = _active(lake, user)
    _audit(audit, "reset", user, row.department, row.role, by, by_department)
    password, token = _new_password(), _new_token()
    _update(lake, user, "reset", by, {
        "password_scrypt": _scrypt(password), "password_scram": make_verifier(password), "password_pg_md5": None,
        "token_sha256": token_hash(token), "created_at": utc_now()}, disabled=False)
    return password, token


def disable_user(lake: Lake, user: str, *, by: str | None = None, by_department: str | None = None,
                 audit: AuditLog | None = None) -> None:
    """Disable ``user`` (``onesource users disable``): its token, passwords and open sessions stop working
    on the next request or query, in every running server."""
    row = _active(lake, user)
    _audit(audit, "disable", user, row.department, row.role, by, by_department)
    _update(lake, user, "disable", by, {"disabled_at": utc_now()}, disabled=False)


def enable_user(lake: Lake, user: str, *, by: str | None = None, by_department: str | None = None,
                audit: AuditLog | None = None) -> None:
    """Enable a disabled user again, with the password and token it had; sessions from before stay over."""
    row = _known(lake, user)
    if row.active:
        raise UserError(f"user {user!r} is enabled already")
    _audit(audit, "enable", user, row.department, row.role, by, by_department)
    _update(lake, user, "enable", by, {"disabled_at": None, "created_at": utc_now()}, disabled=True)


def set_role(lake: Lake, user: str, role: str, *, by: str | None = None, by_department: str | None = None,
             audit: AuditLog | None = None) -> str:
    """Give ``user`` another role (sharing.roles); returns the one it had. Its portal sessions end, so that
    the next page is read with the new role; its token and wire sessions read within the same grants."""
    if role not in ROLES:
        raise UserError(f"no role {role!r}: one of {', '.join(ROLES)} (README, Users and roles)")
    row = _known(lake, user)
    before = canonical(row.role)
    if before == role:
        raise UserError(f"user {user!r} has the role {role} already")
    _audit(audit, f"set-role (was {before})", user, row.department, role, by, by_department)
    _update(lake, user, "set role of", by, {"role": role, "created_at": utc_now()}, disabled=not row.active)
    return before


def accounts(lake: Lake, department: str | None = None) -> list[Account]:
    """Every user (``department``: of that one), by department and name."""
    names = ledger.columns_in(lake.con, "users")  # a lake not written since a column came lacks it
    if not names:
        return []
    added = "coalesce(added_at, created_at)" if "added_at" in names else "created_at"
    changed = "coalesce(changed_at, disabled_at, created_at)" if "changed_at" in names else \
        "coalesce(disabled_at, created_at)"
    by = "changed_by" if "changed_by" in names else "NULL"
    organisation = "organisation" if "organisation" in names else "NULL"
    rows = lake.con.execute(
        f"SELECT user_name, department, role, disabled_at IS NULL, {added}, {changed}, {by}, {organisation} "
        f"FROM {ledger.ref('users')} WHERE ? IS NULL OR department = ? ORDER BY department, user_name",
        [department, department]).fetchall()
    return [Account(r[0], r[1], canonical(r[2]), *r[3:]) for r in rows]


def organisation_of(con, user: str) -> str | None:
    """The division code of ``user``'s organisation (``con``: a cursor on the lake); None for the whole city:
    no organisation, or no such user (a name only the CLI's ``--user`` gives, or a lake from before
    organisations)."""
    import duckdb

    try:
        row = con.execute(f"SELECT organisation FROM {ledger.ref('users')} WHERE user_name = ?", [user]).fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):  # no users table, or none with the column yet
        return None
    return row[0] if row else None


def _audit(audit: AuditLog | None, action: str, user: str, department: str, role: str, by: str | None,
           by_department: str | None = None) -> None:
    """Record the change before it is made (a change never goes unrecorded; a failed one is seen as an
    attempt): who did what to whom, never a secret."""
    if audit is not None:
        audit.append(kind="users", action=action, user=by or "unknown", department=by_department,
                     subject=user, subject_department=department, role=canonical(role), decision="admin")


def user_by_token(lake: Lake, token: str) -> User | None:
    if not ledger.exists(lake.con, "users"):
        return None
    row = lake.con.execute(f"SELECT user_name, department, role, created_at FROM {ledger.ref('users')} "
                           "WHERE token_sha256 = ? AND disabled_at IS NULL", [token_hash(token)]).fetchone()
    return User(*row) if row else None


def still_valid(lake: Lake, user: User) -> bool:
    """Whether ``user``'s sign-in still holds: not disabled, credentials not reset since it was made."""
    if not ledger.exists(lake.con, "users"):
        return False
    row = lake.con.execute(f"SELECT created_at FROM {ledger.ref('users')} WHERE user_name = ? "
                           "AND disabled_at IS NULL", [user.name]).fetchone()
    return row is not None and (user.since is None or row[0] == user.since)


def scram_verifier(lake: Lake, user: str) -> tuple[User, str | None] | None:
    """The user and their SCRAM-SHA-256 verifier (the wire endpoint's sign-in); None for an unknown user, and
    a None verifier for a user whose password predates SCRAM (it must be reset)."""
    names = ledger.columns_in(lake.con, "users")
    if not names:
        return None
    # a lake not written since SCRAM came may lack the column (Lake.ensure_zones adds it on the next write)
    scram = "password_scram" if "password_scram" in names else "NULL"
    row = lake.con.execute(f"SELECT user_name, department, role, {scram}, created_at FROM {ledger.ref('users')} "
                           "WHERE user_name = ? AND disabled_at IS NULL", [user]).fetchone()
    return (User(row[0], row[1], row[2], row[4]), row[3]) if row else None


def authenticate(lake: Lake, user: str, password: str) -> User | None:
    """The user, when ``password`` is theirs (the portal's sign-in); None otherwise."""
    if not ledger.exists(lake.con, "users"):
        return None
    row = lake.con.execute(
        f"SELECT user_name, department, role, password_scrypt, created_at FROM {ledger.ref('users')} "
        "WHERE user_name = ? AND disabled_at IS NULL", [user]).fetchone()
    if row is None or not check_password(row[3], password):
        return None
    return User(row[0], row[1], row[2], row[4])
