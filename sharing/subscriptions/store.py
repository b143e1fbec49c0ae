"""``ops.subscriptions`` and the delivery ledger ``ops.deliveries``.

A subscription names the subscriber (a department and one of its users: whose policy view is delivered), the
dataset, the target (its kind and settings, as JSON without secrets) and the mode: ``snapshot`` (the target
table or file is replaced by the whole view at each publish) or ``changes`` (only the rows that changed since
the target's last delivery; needs the dataset's key). Rows are never updated but to cancel.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field

import duckdb

from core.errors import TerminalError
from lakehouse import ledger
from lakehouse.lake import Lake, retrying
from schemas.model import Registry

MODES = ("snapshot", "changes")
TARGET_KINDS = ("postgres", "mysql", "files", "webhook")
STATUSES = ("delivered", "refused", "failed")
"""A ledger row's status: delivered (the target holds the snapshot), refused (no grant, frozen, user disabled:
nothing was sent), failed (every attempt failed: the reason is in ``error``, the next run tries again)."""


class SubscriptionError(TerminalError):
    """A subscription cannot be made, found or delivered as asked: the message says what to change."""


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    department: str
    user: str
    dataset: str
    target_kind: str
    target: dict = field(hash=False, compare=False)
    mode: str = "snapshot"
    created_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None

    @property
    def purpose(self) -> str:
        """The audit log's purpose of this subscription's governed queries."""
        return f"subscription:{self.subscription_id}"


@dataclass(frozen=True)
class Delivery:
    """One row of the ledger."""

    delivery_id: str
    subscription_id: str
    dataset: str
    department: str
    snapshot_id: int | None
    load_id: str | None
    kind: str | None
    """What was sent: ``snapshot`` (the whole view) or ``changes`` (the rows that changed); None: nothing."""
    rows: int
    deleted: int
    status: str
    attempts: int
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


_CLEAR_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|secret)\s*=\s*(?!'?\$\{)")
_URI_SECRET = re.compile(r"://[^/@\s:]*:(?!\$\{)[^/@\s]+@")
"""A URI's ``user:password@`` (postgresql://onesource:pw@host/db), unless the password is ``${VARIABLE}``."""


def check_secrets(target: dict) -> None:
    """Refuse a target whose settings hold a password in clear: the lake is read by the whole platform,
    so a secret is named there as ``${VARIABLE}`` and taken from the environment at delivery."""
    for key, value in target.items():
        text = str(value)
        if _CLEAR_SECRET.search(text) or _URI_SECRET.search(text) or (
                key in ("password", "secret") and not text.startswith("${")):
            raise SubscriptionError(
                f"the target's {key} holds a secret in clear; write it as ${{VARIABLE}} (e.g. password=${{SUB_PG_PASSWORD}}) "
                "and export that variable where deliveries run (the Airflow worker, the CLI): it is never stored")


def add(lake: Lake, registry: Registry, *, department: str, user: str, dataset: str, target_kind: str,
        target: dict, mode: str = "snapshot", by: str = "operator") -> Subscription:
    """Record a new subscription, after the checks a delivery repeats (sharing.subscriptions.deliver.refusal):
    the user is an active user of the department, the dataset is registered and the department may read it
    (a grant, or the dataset is open to every department), and nothing of it is frozen."""
    from sharing.subscriptions.deliver import refusal

    if mode not in MODES:
        raise SubscriptionError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if target_kind not in TARGET_KINDS:
        raise SubscriptionError(f"target {target_kind!r} is not one of {', '.join(TARGET_KINDS)}")
    ds = registry.dataset(dataset)
    if mode == "changes" and not ds.key:
        raise SubscriptionError(f"dataset {dataset} declares no key, so its changes cannot be told row by row; "
                                "subscribe with --mode snapshot")
    check_secrets(target)
    if target_kind == "webhook" and lake.encrypted:
        raise SubscriptionError("this lake is encrypted, and a webhook delivery's rows wait in the home, in clear, "
                                "until their link is fetched; deliver to a postgres, mysql or files target instead")
    from sharing.subscriptions.targets import target_for

    target_for(target_kind, target)  # its settings are complete (a table name, a folder, a URL)
    taken = _same_place(lake, target_kind, target)
    if taken is not None:
        raise SubscriptionError(
            f"subscription {taken.subscription_id} ({taken.department}/{taken.user}, {taken.dataset}) already "
            "delivers there: two subscriptions in one table or drop folder overwrite each other's rows (one "
            "subscriber's view would reach the other); give this one its own table or folder, or cancel that one")
    sub = Subscription(uuid.uuid4().hex[:12], department, user, dataset, target_kind, target, mode)
    reason = refusal(lake, registry, sub)
    if reason:
        raise SubscriptionError(f"cannot subscribe {department}/{user} to {dataset}: {reason}")
    if mode == "changes":
        from sharing.subscriptions.deliver import key_problem

        problem = key_problem(lake, registry, sub)
        if problem:
            raise SubscriptionError(f"cannot subscribe {department}/{user} to the changes of {dataset}: {problem}; "
                                    "subscribe with --mode snapshot")
    created = now()

    def write() -> None:
        with lake.transaction() as con:
            ledger.append(con, "subscriptions", {
                "subscription_id": sub.subscription_id, "department": department, "user_name": user,
                "dataset": dataset, "target_kind": target_kind,
                "target": json.dumps(target, ensure_ascii=False, sort_keys=True), "mode": mode, "created_by": by,
                "created_at": created})
            lake.commit_message(f"subscribe {department}/{user} to {dataset}",
                                {"subscription_id": sub.subscription_id})

    retrying(write, lake.settings.commit_retries, "recording a subscription")
    return Subscription(sub.subscription_id, department, user, dataset, target_kind, target, mode, created)


def _place(kind: str, target: dict) -> tuple | None:
    """Where a target writes, for telling two subscriptions apart: a database's table, a drop folder (a
    webhook's rows wait under its own delivery ids: none)."""
    import os

    if kind in ("postgres", "mysql"):
        table = str(target.get("table") or "")
        parts = table.lower().split(".")
        if kind == "postgres" and len(parts) == 1:
            parts = ["public", *parts]
        return kind, " ".join(str(target.get("dsn") or "").split()), tuple(parts)
    if kind == "files":
        return kind, os.path.realpath(str(target.get("folder") or ""))
    return None


def _same_place(lake: Lake, kind: str, target: dict) -> Subscription | None:
    """An active subscription that writes where ``target`` would (:func:`_place`), if any."""
    place = _place(kind, target)
    if place is None:
        return None
    return next((s for s in subscriptions(lake) if _overlap(_place(s.target_kind, s.target), place)), None)


def _overlap(a: tuple | None, b: tuple) -> bool:
    """The same table; or drop folders one of which lies in the other (its office would read the other's files)."""
    if a is None or a[0] != b[0]:
        return False
    if a[0] != "files":
        return a == b
    from pathlib import Path

    return Path(a[1]).is_relative_to(b[1]) or Path(b[1]).is_relative_to(a[1])


def _of(row: tuple) -> Subscription:
    sid, dept, user, ds, kind, target, mode, created, cancelled = row
    return Subscription(sid, dept, user, ds, kind, json.loads(target or "{}"), mode, created, cancelled)


_COLUMNS = "subscription_id, department, user_name, dataset, target_kind, target, mode, created_at, cancelled_at"


def subscriptions(lake: Lake, *, dataset: str | None = None, department: str | None = None,
                  active: bool = True) -> list[Subscription]:
    """Subscriptions, oldest first; ``active``: only those not cancelled."""
    where, params = ["TRUE"], []
    if active:
        where.append("cancelled_at IS NULL")
    if dataset:
        where.append("dataset = ?")
        params.append(dataset)
    if department:
        where.append("department = ?")
        params.append(department)
    try:
        rows = lake.con.execute(f"SELECT {_COLUMNS} FROM {ledger.ref('subscriptions')} WHERE {' AND '.join(where)} "
                                "ORDER BY created_at, subscription_id", params).fetchall()
    except duckdb.CatalogException:  # a lake from before subscriptions
        return []
    return [_of(r) for r in rows]


def subscription(lake: Lake, subscription_id: str) -> Subscription:
    try:
        row = lake.con.execute(f"SELECT {_COLUMNS} FROM {ledger.ref('subscriptions')} WHERE subscription_id = ?",
                               [subscription_id]).fetchone()
    except duckdb.CatalogException:
        row = None
    if row is None:
        raise SubscriptionError(f"no subscription {subscription_id!r}; `onesource subscriptions list` shows them")
    return _of(row)


def cancel(lake: Lake, subscription_id: str, *, by: str = "operator") -> None:
    """Cancel a subscription: no further delivery. What its target holds stays there (the subscriber's)."""
    sub = subscription(lake, subscription_id)
    if sub.cancelled_at is not None:
        raise SubscriptionError(f"subscription {subscription_id} was cancelled already ({sub.cancelled_at:%Y-%m-%d %H:%M} UTC)")

    def write() -> None:
        with lake.transaction() as con:
            ledger.cancel_subscription(con, subscription_id, at=now(), by=by)
            lake.commit_message(f"cancel subscription {subscription_id}", {"subscription_id": subscription_id})

    retrying(write, lake.settings.commit_retries, "cancelling a subscription")


def record(lake: Lake, delivery: Delivery) -> None:
    """One ledger row, its own commit (retried on catalog contention)."""
    d = delivery

    def write() -> None:
        with lake.transaction() as con:
            ledger.append(con, "deliveries", {
                "delivery_id": d.delivery_id, "subscription_id": d.subscription_id, "dataset": d.dataset,
                "department": d.department, "snapshot_id": d.snapshot_id, "load_id": d.load_id, "kind": d.kind,
                "rows": d.rows, "deleted": d.deleted, "status": d.status, "attempts": d.attempts, "error": d.error,
                "started_at": d.started_at, "finished_at": d.finished_at})
            lake.commit_message(f"{d.status} delivery of {d.dataset} to {d.department}",
                                {"delivery_id": d.delivery_id, "subscription_id": d.subscription_id})

    retrying(write, lake.settings.commit_retries, f"recording delivery {d.delivery_id}")


def deliveries(lake: Lake, subscription_id: str | None = None) -> list[Delivery]:
    """The ledger, oldest first (of one subscription, or all)."""
    where, params = ("WHERE subscription_id = ?", [subscription_id]) if subscription_id else ("", [])
    try:
        rows = lake.con.execute(f"SELECT * FROM {ledger.ref('deliveries')} {where} ORDER BY finished_at, delivery_id",
                                params).fetchall()
    except duckdb.CatalogException:
        return []
    return [Delivery(*r) for r in rows]


def delivered(lake: Lake, delivery_id: str) -> bool:
    try:
        return bool(lake.con.execute(f"SELECT count(*) FROM {ledger.ref('deliveries')} WHERE delivery_id = ? "
                                     "AND status = 'delivered'", [delivery_id]).fetchone()[0])
    except duckdb.CatalogException:
        return False
