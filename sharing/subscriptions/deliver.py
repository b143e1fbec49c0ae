"""One delivery of a subscription, and every due delivery.

>>> outcome = deliver(settings, registry, subscription)

1. **May it still be delivered?** The subscriber is an active user of its department, nothing of the
   subscription is frozen (sharing.security.freeze), and the department may read the dataset (a grant, or the
   dataset is open). Otherwise a ``refused`` ledger row says why, and nothing is sent.
2. **Is there anything new?** The dataset's last published load and the subscriber's policy (its fingerprint)
   against the target's mark. The same: nothing to do (no ledger row). A mark the lake's ledger lacks (a run
   killed after the target committed) is recorded as delivered then, never sent again.
3. **The view**: ``SELECT * FROM shared.<dataset>`` through the governed engine as the subscriber, at the lake
   snapshot read in step 2, audited with purpose ``subscription:<id>``. For ``changes`` under an unchanged
   policy, the same at the target's marked snapshot, and the difference by the dataset's key; otherwise (first
   delivery, policy changed, snapshot expired) the whole view.
4. **The target** takes rows and mark in one transaction, retried with backoff while it is unreachable.
5. The ledger row (``delivered`` or ``failed``).

A subscription is delivered by one process at a time (a lock file in the home, released by the kernel when
a process dies), so a DAG run and a CLI run never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from core.errors import OneSourceError, TransientError
from lakehouse import ledger
from lakehouse.lake import CATALOG, Lake
from schemas.model import Registry
from sharing.subscriptions import store
from sharing.subscriptions.store import Delivery, Subscription, SubscriptionError
from sharing.subscriptions.targets import Change, DatabaseTarget, Mark, target_for

if TYPE_CHECKING:
    import pyarrow as pa

    from core.config import Settings

ATTEMPTS = 4
"""Tries of one delivery's write while the target is unreachable (then ``failed``; the next run tries again)."""
BACKOFF_SECONDS = 0.5
"""The first pause between tries, doubled each time (with jitter)."""


@dataclass(frozen=True)
class Outcome:
    subscription_id: str
    status: str
    """delivered | refused | failed | unchanged (nothing new: no ledger row) | busy (another process delivers it)"""
    delivery_id: str | None = None
    kind: str | None = None
    rows: int = 0
    deleted: int = 0
    message: str = ""


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def _frozen(lake: Lake, sub: Subscription) -> str | None:
    """The freeze on the subscription's user, department or dataset, if any (sharing.security.freeze)."""
    try:
        from sharing.security.freeze import active_freezes
    except ImportError:  # a tree without the emergency-response module: nothing can be frozen
        return None
    freezes = active_freezes(lake)
    found = freezes.of_user(sub.user) or freezes.of_department(sub.department) or freezes.of_dataset(sub.dataset)
    if found is None:
        return None
    return (f"the {found.kind} {found.subject} is frozen (freeze {found.freeze_id}; "
            "`onesource security freezes` lists them)")


def _access(lake: Lake, registry: Registry, sub: Subscription):
    """What the subscriber may read, as the engine decides it (a grant scoped to the jurisdiction: the rows
    under the user's organisation)."""
    from sharing.grants import active_grants, visible

    try:
        from sharing.users import organisation_of
    except ImportError:  # a tree without jurisdictions
        return visible(registry, active_grants(lake, sub.department), sub.department)
    return visible(registry, active_grants(lake, sub.department), sub.department, organisation_of(lake.con, sub.user))


def refusal(lake: Lake, registry: Registry, sub: Subscription, access: dict | None = None) -> str | None:
    """Why ``sub`` may not be delivered now (None: it may): deny by default. ``access``: the subscriber's, if
    already read (:func:`_access`)."""
    try:
        registry.dataset(sub.dataset)
    except OneSourceError:
        return f"dataset {sub.dataset} is no longer registered"
    row = ledger.user(lake.con, sub.user)
    if row is None:
        return f"no user {sub.user} (`onesource users list` shows them)"
    if row.department != sub.department:
        return f"user {sub.user} belongs to {row.department}, not {sub.department}"
    if not row.active:
        return f"user {sub.user} is disabled"
    frozen = _frozen(lake, sub)
    if frozen:
        return frozen
    try:
        access = _access(lake, registry, sub) if access is None else access
    except OneSourceError as exc:
        return str(exc)
    if sub.dataset not in access:
        return (f"{sub.department} has no active grant on {sub.dataset} (revoked or expired), and the dataset is not "
                "open to every department; request access (`onesource requests create`)")
    if access[sub.dataset].problem:
        return access[sub.dataset].problem
    return None


def key_problem(lake: Lake, registry: Registry, sub: Subscription, access: dict | None = None) -> str | None:
    """Why the changes of ``sub``'s view cannot be told by key (None: they can): every key column must be
    in the view and unmasked, or rows could not be matched."""
    ds = registry.dataset(sub.dataset)
    if not ds.key:
        return f"dataset {ds.name} declares no key"
    acc = (_access(lake, registry, sub) if access is None else access).get(ds.name)
    if acc is None:
        return f"{sub.department} may not read {ds.name}"
    missing = [k for k in ds.key if k not in acc.columns]
    masked = [k for k in ds.key if k in acc.masked]
    if missing or masked:
        return (f"the key column(s) {', '.join(missing + masked)} of {ds.name} are "
                f"{'not granted' if missing else 'masked'} to {sub.department}")
    return None


def policy_fingerprint(lake: Lake, registry: Registry, sub: Subscription, access: dict | None = None) -> str:
    """Changes whenever what the subscriber may see of the dataset changes (columns, masks, row filters,
    scope) or the dataset's registered version does: a changes delivery then sends the whole view."""
    acc = (_access(lake, registry, sub) if access is None else access).get(sub.dataset)
    ds = registry.dataset(sub.dataset)
    text = repr((sub.user, acc, [(c.name, c.duck_type) for c in ds.columns]))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _current(lake: Lake, dataset: str) -> tuple[int, str | None]:
    """(the lake's snapshot now, the dataset's last published load as of it), read in one transaction."""
    lake.con.execute("BEGIN TRANSACTION")
    try:
        snapshot = lake.con.execute(f"SELECT id FROM {CATALOG}.current_snapshot()").fetchone()[0]
        load = ledger.last_published_load(lake.con, dataset)
    finally:
        lake.con.execute("ROLLBACK")
    return snapshot, load.load_id if load else None


# ---------------------------------------------------------------------------------------------
# The view and its changes
# ---------------------------------------------------------------------------------------------

def view(settings: Settings, registry: Registry, sub: Subscription, snapshot: int) -> tuple[pa.Table, list]:
    """The subscriber's view at ``snapshot``: the governed query, audited as the subscriber's.
    Returns the rows and their (name, DuckDB type) columns."""
    from sharing.engine import GovernedEngine, Limits

    engine = GovernedEngine(settings, registry, Limits(rows=0, seconds=max(settings.limits.seconds, 600.0)),
                            as_of=snapshot)
    engine.arrow = True
    ds = registry.dataset(sub.dataset)
    result = engine.query(sub.department, f'SELECT * FROM shared."{ds.name}"', user=sub.user, purpose=sub.purpose)
    table = result.to_arrow()
    return table, list(zip(result.columns, result.types or [None] * len(result.columns), strict=True))


def _duck_types(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def changes(new: pa.Table, old: pa.Table, key: list[str]) -> tuple[pa.Table, pa.Table]:
    """(rows of ``new`` not in ``old`` as they are, keys of ``old`` no longer in ``new``): NULLs compare equal."""
    from core.duck import connect

    con = connect(threads=2)
    try:
        con.register("new_view", new)
        con.register("old_view", old)
        keys = ", ".join(f'"{k}"' for k in key)
        upserts = con.execute("SELECT * FROM new_view EXCEPT SELECT * FROM old_view").to_arrow_table()
        gone = con.execute(f"SELECT {keys} FROM old_view EXCEPT SELECT {keys} FROM new_view").to_arrow_table()
    finally:
        con.close()
    return upserts, gone


def _change(settings: Settings, registry: Registry, lake: Lake, sub: Subscription, snapshot: int,
            mark: Mark | None, policy: str, access: dict) -> Change:
    from core.duck import connect

    ds = registry.dataset(sub.dataset)
    new, _ = view(settings, registry, sub, snapshot)
    con = connect(threads=1)
    try:
        con.register("new_view", new)
        columns = _duck_types(con, "new_view")
    finally:
        con.close()
    if sub.mode == "changes" and mark is not None and mark.policy == policy and not key_problem(lake, registry, sub, access):
        from lakehouse.exceptions import SnapshotNotFound
        from sharing.exceptions import QueryFailed

        try:
            old, _ = view(settings, registry, sub, int(mark.snapshot_id))
        except (SnapshotNotFound, QueryFailed):  # expired by maintenance, or before the table: send it whole
            old = None
        if old is not None and old.schema.names == new.schema.names:
            upserts, gone = changes(new, old.cast(new.schema) if old.schema != new.schema else old, list(ds.key))
            return Change("changes", columns, list(ds.key), upserts, gone)
    return Change("snapshot", columns, list(ds.key), new)


# ---------------------------------------------------------------------------------------------
# Delivering
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(settings: Settings, sub: Subscription) -> Iterator[bool]:
    folder = settings.home / "subscriptions"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / f"{sub.subscription_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _retrying(fn, attempts: int, pause: float) -> int:
    """Run ``fn`` until it does not raise a TransientError, at most ``attempts`` times; returns the tries."""
    for attempt in range(1, attempts + 1):
        try:
            fn()
            return attempt
        except TransientError:
            if attempt == attempts:
                raise
            time.sleep(pause * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def deliver(settings: Settings, registry: Registry, sub: Subscription, *, environ: Mapping[str, str] | None = None,
            attempts: int = ATTEMPTS, backoff: float = BACKOFF_SECONDS) -> Outcome:
    """Deliver what is new of ``sub`` (see the module's docstring); never raises for a refusal or a target's
    failure: both are in the ledger and the outcome."""
    with _locked(settings, sub) as mine:
        if not mine:
            return Outcome(sub.subscription_id, "busy", message="another process is delivering it now")
        with Lake(settings.lake) as lake:
            return _deliver(settings, registry, lake, sub, environ, attempts, backoff)


def _deliver(settings: Settings, registry: Registry, lake: Lake, sub: Subscription, environ, attempts: int,
             backoff: float) -> Outcome:
    started = store.now()
    current = store.subscription(lake, sub.subscription_id)
    if current.cancelled_at is not None:
        return Outcome(sub.subscription_id, "refused", message="the subscription was cancelled")
    snapshot, load_id = _current(lake, sub.dataset)
    delivery_id = f"{sub.subscription_id}-{snapshot}"

    def ledger(status: str, *, change: Change | None = None, tries: int = 0, error: str | None = None,
               kind: str | None = None, rows: int = 0, deleted: int = 0) -> Outcome:
        if change is not None:
            kind, rows, deleted = change.kind, change.row_count, change.deleted_count
        store.record(lake, Delivery(delivery_id, sub.subscription_id, sub.dataset, sub.department, snapshot, load_id,
                                    kind, rows, deleted, status, tries, error, started, store.now()))
        return Outcome(sub.subscription_id, status, delivery_id, kind, rows, deleted, error or "")

    try:  # read once for the checks, the policy's fingerprint and the key's
        access = _access(lake, registry, sub)
    except OneSourceError as exc:
        return ledger("refused", error=str(exc))
    reason = refusal(lake, registry, sub, access)
    if reason:
        return ledger("refused", error=reason)
    if load_id is None:
        return Outcome(sub.subscription_id, "unchanged", message=f"{sub.dataset} has no published load yet")
    target = target_for(sub.target_kind, sub.target, environ, settings)
    try:
        policy = policy_fingerprint(lake, registry, sub, access)
        try:
            mark = _with_retries(lambda: target.mark(sub), attempts, backoff)[0]
        except OneSourceError as exc:
            return ledger("failed", tries=attempts, error=str(exc))
        if mark is not None and mark.load_id == load_id and mark.policy == policy:
            if not store.delivered(lake, mark.delivery_id):  # the target committed, then the run died
                delivery_id, snapshot = mark.delivery_id, int(mark.snapshot_id)
                return ledger("delivered", kind="recovered", rows=int(mark.rows or 0),
                              error="the target held this delivery already (a run stopped before recording it)")
            return Outcome(sub.subscription_id, "unchanged", mark.delivery_id,
                           message=f"{target.where()} holds load {load_id} already")
        try:
            change = _change(settings, registry, lake, sub, snapshot, mark, policy, access)
        except OneSourceError as exc:  # refused by the engine (a grant revoked meanwhile) or failed: audited there
            return ledger("failed", error=str(exc))
        new_mark = Mark(delivery_id, snapshot, load_id, policy, change.row_count, store.now().isoformat(sep=" "))
        try:
            tries = _with_retries(lambda: target.write(sub, change, new_mark), attempts, backoff)[1]
        except OneSourceError as exc:
            return ledger("failed", change=change, tries=attempts if isinstance(exc, TransientError) else 1,
                          error=str(exc))
        return ledger("delivered", change=change, tries=tries)
    finally:
        if isinstance(target, DatabaseTarget):
            target.close()


def _with_retries(fn, attempts: int, backoff: float):
    box: list = []
    tries = _retrying(lambda: box.append(fn()), attempts, backoff)
    return box[-1], tries


def deliver_all(settings: Settings, registry: Registry, *, datasets: set[str] | None = None,
                environ: Mapping[str, str] | None = None, attempts: int = ATTEMPTS,
                backoff: float = BACKOFF_SECONDS) -> list[Outcome]:
    """Every active subscription (of ``datasets``, when given), one after the other."""
    with Lake(settings.lake, read_only=True) as lake:
        subs = [s for s in store.subscriptions(lake) if datasets is None or s.dataset in datasets]
    return [deliver(settings, registry, s, environ=environ, attempts=attempts, backoff=backoff) for s in subs]


class DeliveryFailed(SubscriptionError):
    """Some deliveries failed (the ledger says why); raised by callers that must fail (an Airflow task)."""
