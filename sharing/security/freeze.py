"""Contain misuse in one command: freeze a user, a department or a dataset everywhere, and rotate the keys.

A freeze is a row of ``ops.security_freezes``, written in one lake commit with the revocation of the frozen
users' bearer tokens. Every running server sees the commit (the catalog's stamp changes) and reads the
freezes again, once per stamp (:meth:`sharing.engine.GovernedEngine.freezes`), so the next query of the
frozen user, of any user of the frozen department, or reading the frozen dataset is refused
(sharing.exceptions.Frozen): on the CLI, the HTTP API, the Postgres wire and the portal alike. The wire
server also closes a frozen user's open connections (FATAL) within a second or two, idle or not
(sharing.pgwire.server), and the portal ends their sessions (the freeze resets the users' ``created_at``,
which :func:`sharing.users.still_valid` checks on every page).

A frozen user's token is replaced by the hash of a random token nobody holds: the old token never works
again, unfreezing does not bring it back (``onesource users rotate-token`` issues a new one). Passwords are
kept: a frozen user cannot sign in (the wire and the portal refuse it), and after the unfreeze the operator
decides whether the password must be reset too (``onesource users reset-password``).

The refusal says who froze what since when, and whom to contact (the data bureau, with the freeze's id),
never the freeze's reason: an account thief told "suspected bulk reads of the resident register" learns what
was seen. The reason is in ``onesource security freezes`` and in the audit log.

Public API (helper modules call it, e.g. subscription deliveries): :func:`active_freezes` returns
:class:`Freezes`, with :meth:`Freezes.of_user`, :meth:`Freezes.of_department`, :meth:`Freezes.of_dataset`.

Imports stay light at the top (every ``onesource`` command builds the whole parser): DuckDB and the lake are
imported inside the functions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.citytime import utc_now
from core.errors import TerminalError
from lakehouse import ledger

if TYPE_CHECKING:
    from core.config import Settings
    from lakehouse.lake import Lake
    from schemas.model import Registry
    from sharing.audit import AuditLog
    from sharing.exceptions import Frozen

KINDS = ("user", "department", "dataset")
TABLE = "security_freezes"
CONTACT = "the data bureau (数据局)"
"""Whom a frozen user is told to contact (with the freeze's id)."""


class FreezeError(TerminalError):
    """A freeze or unfreeze that cannot be done: an unknown subject, no reason, not frozen, frozen already."""


@dataclass(frozen=True)
class Freeze:
    """One active freeze (or, from :func:`history`, one that ended: ``unfrozen_at`` set)."""

    freeze_id: str
    kind: str
    subject: str
    reason: str
    frozen_by: str
    frozen_at: dt.datetime
    unfrozen_by: str | None = None
    unfrozen_at: dt.datetime | None = None
    unfreeze_reason: str | None = None

    @property
    def since(self) -> str:
        return f"{self.frozen_at:%Y-%m-%d %H:%M:%S} UTC"

    def what(self) -> str:
        return {"user": f"user {self.subject}", "department": f"department {self.subject}",
                "dataset": f"dataset shared.{self.subject}"}[self.kind]

    def refusal(self, user: str | None = None) -> Frozen:
        """The error a query meets: what is frozen, since when, whom to contact; not the reason."""
        from sharing.exceptions import Frozen

        if self.kind == "dataset":
            told = f"{self.what()} is frozen by the data bureau since {self.since}: no query may read it"
        elif self.kind == "department" and user:
            told = (f"{self.what()} is frozen by the data bureau since {self.since}: no query of its users "
                    f"({user} among them) is answered")
        else:
            told = f"{self.what()} is frozen by the data bureau since {self.since}: no query is answered for it"
        return Frozen(f"{told}; contact {CONTACT} about freeze {self.freeze_id}", kind=self.kind)


class Freezes:
    """The active freezes, looked up by subject (a few rows: read whole, once per catalog stamp)."""

    def __init__(self, freezes: Iterable[Freeze] = ()):
        self._by: dict[tuple[str, str], Freeze] = {(f.kind, f.subject): f for f in freezes}

    def of_user(self, user: str | None) -> Freeze | None:
        return self._by.get(("user", user)) if user else None

    def of_department(self, department: str | None) -> Freeze | None:
        return self._by.get(("department", department)) if department else None

    def of_dataset(self, dataset: str) -> Freeze | None:
        return self._by.get(("dataset", dataset.removeprefix("shared.")))

    def stopping(self, user: str | None, department: str | None) -> Freeze | None:
        """The freeze that stops ``user`` of ``department`` (the user's own first), None when none does."""
        return self.of_user(user) or self.of_department(department)

    def reading(self, tables: Iterable[str]) -> Freeze | None:
        """The freeze of the first frozen dataset among ``tables``, None when none is."""
        return next((f for t in tables if (f := self.of_dataset(t)) is not None), None)

    def __bool__(self) -> bool:
        return bool(self._by)

    def __iter__(self) -> Iterator[Freeze]:
        return iter(sorted(self._by.values(), key=lambda f: (f.frozen_at, f.freeze_id)))

    def __len__(self) -> int:
        return len(self._by)


NONE = Freezes()


def _exists(lake) -> bool:
    return ledger.exists(lake.con, TABLE)


def active_freezes(lake) -> Freezes:
    """The active freezes of ``lake`` (a Lake, or the engine's CursorLake). A lake from before freezes
    existed has none; any other error reading them propagates (a query is not let through on a guess)."""
    if not _exists(lake):
        return NONE
    rows = lake.con.execute(f"SELECT freeze_id, kind, subject, reason, frozen_by, frozen_at FROM {ledger.ref(TABLE)} "
                            "WHERE unfrozen_at IS NULL").fetchall()
    return Freezes(Freeze(*r) for r in rows)


def history(lake) -> list[Freeze]:
    """Every freeze, active or ended, oldest first."""
    if not _exists(lake):
        return []
    rows = lake.con.execute(f"SELECT * FROM {ledger.ref(TABLE)} ORDER BY frozen_at, freeze_id").fetchall()
    return [Freeze(*r) for r in rows]


def _subject(lake: Lake, registry: Registry, kind: str, subject: str) -> str:
    """The subject as stored (a dataset without ``shared.``), or a clear error naming what is known."""
    if kind not in KINDS:
        raise FreezeError(f"cannot freeze a {kind!r}: a user, a department or a dataset")
    if kind == "user":
        known = [r[0] for r in lake.con.execute(f"SELECT user_name FROM {ledger.ref('users')} ORDER BY 1").fetchall()] \
            if ledger.exists(lake.con, "users") else []
        fix = "`onesource users list` shows the users"
    elif kind == "department":
        known = sorted(d.code for d in registry.departments)
        fix = "departments.yaml lists the departments' codes"
    else:
        subject = subject.removeprefix("shared.")
        known = sorted(d.name for d in registry.datasets)
        fix = "`onesource registry list` shows the datasets"
    if subject not in known:
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise FreezeError(f"no {kind} {subject!r} (known: {shown or 'none'}); {fix}")
    return subject


def _users_of(lake: Lake, kind: str, subject: str) -> list[str]:
    """The users whose tokens a freeze revokes: the user, or every user of the department."""
    if kind == "dataset" or not ledger.exists(lake.con, "users"):
        return []
    column = "user_name" if kind == "user" else "department"
    return [r[0] for r in lake.con.execute(f"SELECT user_name FROM {ledger.ref('users')} WHERE {column} = ? "
                                           "ORDER BY 1", [subject]).fetchall()]


def freeze(lake: Lake, registry: Registry, kind: str, subject: str, reason: str, *, by: str,
           audit: AuditLog | None) -> tuple[Freeze, list[str]]:
    """Freeze ``subject`` (a user, a department or a dataset) and revoke the bearer tokens of the users it
    stops, in one commit; returns the freeze and those users. Audited before it is committed."""
    from lakehouse.lake import retrying
    from sharing.users import token_hash

    reason = (reason or "").strip()
    if not reason:
        raise FreezeError("say why: --reason TEXT (kept in the audit log and `onesource security freezes`, never "
                          "shown to the frozen user)")
    subject = _subject(lake, registry, kind, subject)
    active = active_freezes(lake)
    already = {"user": active.of_user, "department": active.of_department, "dataset": active.of_dataset}[kind](subject)
    if already is not None:
        raise FreezeError(f"{already.what()} is frozen already, since {already.since} (freeze {already.freeze_id}, "
                          f"by {already.frozen_by}); `onesource security freezes` lists the freezes")
    users = _users_of(lake, kind, subject)
    made = Freeze(f"frz-{secrets.token_hex(4)}", kind, subject, reason, by, utc_now())
    if audit is not None:
        audit.append(kind="security", action="freeze", user=by, decision="admin", freeze_id=made.freeze_id,
                     subject_kind=kind, subject=subject, reason=reason, tokens_revoked=users)

    def write() -> None:
        with lake.transaction() as con:
            ledger.append(con, "security_freezes", {"freeze_id": made.freeze_id, "kind": kind, "subject": subject, "reason": reason,
                                       "frozen_by": by, "frozen_at": made.frozen_at})
            for user in users:  # a token nobody holds: the old one never works again; created_at: sessions end
                ledger.replace_token(con, user, token_sha256=token_hash(secrets.token_urlsafe(32)),
                                     at=made.frozen_at, by=by)
            lake.commit_message(f"freeze {made.what()}", {"freeze_id": made.freeze_id, "by": by})

    retrying(write, lake.settings.commit_retries, f"freezing {made.what()}")
    return made, users


def unfreeze(lake: Lake, registry: Registry, kind: str, subject: str, reason: str, *, by: str,
             audit: AuditLog | None) -> Freeze:
    """End the active freeze of ``subject``; returns it. Revoked tokens stay revoked."""
    from lakehouse.lake import retrying

    reason = (reason or "").strip()
    if not reason:
        raise FreezeError("say why the freeze ends: --reason TEXT (kept in the audit log)")
    if kind == "dataset":
        subject = subject.removeprefix("shared.")
    active = active_freezes(lake)
    found = {"user": active.of_user, "department": active.of_department, "dataset": active.of_dataset}[kind](subject)
    if found is None:
        _subject(lake, registry, kind, subject)  # an unknown name is told as such
        raise FreezeError(f"{kind} {subject} is not frozen; `onesource security freezes` lists the freezes")
    if audit is not None:
        audit.append(kind="security", action="unfreeze", user=by, decision="admin", freeze_id=found.freeze_id,
                     subject_kind=kind, subject=subject, reason=reason)
    now = utc_now()

    def write() -> None:
        with lake.transaction() as con:
            ledger.unfreeze(con, kind, subject, by=by, at=now, reason=reason)  # every active freeze of the subject
            lake.commit_message(f"unfreeze {found.what()}", {"freeze_id": found.freeze_id, "by": by})

    retrying(write, lake.settings.commit_retries, f"unfreezing {found.what()}")
    return Freeze(found.freeze_id, kind, subject, found.reason, found.frozen_by, found.frozen_at, by, now, reason)


# --- onesource security freeze | unfreeze | freezes ----------------------------------------------------------

def _subject_args(parser: argparse.ArgumentParser, verb: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help=f"{verb} this user (its bearer token is revoked for good)")
    which.add_argument("--department", help=f"{verb} every user of this department (their tokens are revoked)")
    which.add_argument("--dataset", help=f"{verb} this dataset: no query may read it")
    parser.add_argument("--reason", required=True, help="why (kept in the audit log; never shown to the frozen user)")
    parser.add_argument("--by", help="who acts (default: $USER)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def add_commands(actions: argparse._SubParsersAction) -> None:
    """Adds this module's `onesource security` actions (each sets ``security_fn``)."""
    p = actions.add_parser("freeze", help="stop a user, a department or a dataset at once, in every server and "
                                          "endpoint; ends their sessions and revokes their tokens")
    _subject_args(p, "freeze")
    p.set_defaults(security_fn=cmd_freeze)
    p = actions.add_parser("unfreeze", help="end a freeze (revoked tokens stay revoked: issue new ones with "
                                            "`onesource users rotate-token`)")
    _subject_args(p, "unfreeze")
    p.set_defaults(security_fn=cmd_unfreeze)
    p = actions.add_parser("freezes", help="the freezes in force (--all: with the ended ones)")
    p.add_argument("--all", action="store_true", help="also the freezes that ended")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(security_fn=cmd_freezes)
    from sharing.security import keys

    keys.add_commands(actions)


def _which(args: argparse.Namespace) -> tuple[str, str]:
    return next((k, getattr(args, k)) for k in KINDS if getattr(args, k))


def _print(args: argparse.Namespace, payload: dict, text: str) -> None:
    import json

    if args.json:
        print(json.dumps(payload, ensure_ascii=False, indent=2, default=str))
    else:
        print(text)


def _act(args: argparse.Namespace, settings: Settings, fn) -> object:
    from contextlib import closing

    from lakehouse.lake import Lake
    from schemas import load_registry
    from sharing.audit import AuditLog

    kind, subject = _which(args)
    by = args.by or os.environ.get("USER") or "cli"
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake) as lake, closing(AuditLog.of(settings)) as audit:
        return fn(lake, registry, kind, subject, args.reason, by=by, audit=audit)


def cmd_freeze(args: argparse.Namespace, settings: Settings) -> int:
    made, users = _act(args, settings, freeze)
    revoked = (f"; bearer tokens revoked for good: {', '.join(users)} (after an unfreeze, issue new ones with "
               "`onesource users rotate-token USER`)") if users else ""
    _print(args, {"action": "freeze", "freeze_id": made.freeze_id, "kind": made.kind, "subject": made.subject,
                  "frozen_at": made.frozen_at, "tokens_revoked": users},
           f"{made.what()} frozen (freeze {made.freeze_id}): " + (
               "every query reading it is refused, in every server and endpoint" if made.kind == "dataset" else
               "refused from its next query in every server and endpoint; wire connections and portal sessions "
               f"end{revoked}"))
    return 0


def cmd_unfreeze(args: argparse.Namespace, settings: Settings) -> int:
    ended = _act(args, settings, unfreeze)
    after = "" if ended.kind == "dataset" else (
        "; tokens revoked by the freeze stay revoked: issue new ones with `onesource users rotate-token USER`, "
        "and reset the password (`onesource users reset-password USER`) if it may be known to someone else")
    _print(args, {"action": "unfreeze", "freeze_id": ended.freeze_id, "kind": ended.kind, "subject": ended.subject,
                  "unfrozen_at": ended.unfrozen_at},
           f"{ended.what()} unfrozen (freeze {ended.freeze_id}, in force since {ended.since}){after}")
    return 0


def cmd_freezes(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    import json

    from lakehouse.lake import Lake

    with Lake(settings.lake, read_only=True) as lake:
        found = history(lake) if args.all else list(active_freezes(lake))
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in found], ensure_ascii=False, indent=2, default=str))
        return 0
    if not found:
        print("no freezes in force" if not args.all else "no freezes yet")
        return 0
    from rich.console import Console

    from core.output import cell, print_table

    columns = ("freeze_id", "kind", "subject", "frozen_at", "frozen_by", "reason") + \
        (("unfrozen_at", "unfrozen_by", "unfreeze_reason") if args.all else ())
    print_table(Console(), columns, ([cell(getattr(f, c)) for c in columns] for f in found),
                title=f"{len(found)} freeze(s)" + ("" if args.all else " in force; end one with `onesource security "
                                                                      "unfreeze --user|--department|--dataset X "
                                                                      "--reason TEXT`"),
                whole=("freeze_id", "subject"))
    return 0
