"""Sign-in throttling and lockout, for the portal's sign-in page and the Postgres-wire endpoint alike.

After ``max_failures`` failed sign-ins for one user name within ``window_minutes`` (or
``max_failures_per_address`` from one client address, whatever the names tried), that name (or address)
is refused for ``lockout_minutes``, right password or not. Each failure is answered after a delay that
grows with the failures so far, and logged (user name, address, channel: never the password). A
successful sign-in forgets the user name's failures. Settings: :class:`core.config.SignInSettings`.

With an ``audit`` log, every failed sign-in and every sign-in refused by a lockout is also an audit entry
(``kind="signin"``, ``decision`` failed or refused, user name, address, channel, reason; never a password):
the misuse alerts count them (sharing.security.alerts). :meth:`SignInGuard.rejected` records the HTTP API's
unknown bearer tokens the same way (without throttling them: a token is not guessable).

The state is kept in this process's memory (a restart forgets it), or, when the audit log's chain lives in a
PostgreSQL catalog (several servers on one lake), in that database (sharing.shared_state.SignInStore), with
its clock: a lockout earned through one server holds on every other, and a restart forgets nothing.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from core.config import SignInSettings
from core.logsafe import guarded

log = guarded("onesource.signin")


class LockedOut(Exception):
    """Sign-ins for this user name or from this address are refused for now."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.minutes = max(1, math.ceil(seconds / 60))
        super().__init__(f"too many failed sign-ins; try again in {self.minutes} minute"
                         f"{'' if self.minutes == 1 else 's'}")


class SignInGuard:
    """Counts failed sign-ins per user name and per client address; refuses locked ones."""

    def __init__(self, settings: SignInSettings | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, audit: Any = None, store: Any = None):
        self.settings = settings or SignInSettings()
        self.audit = audit
        """Where failed and refused sign-ins are recorded (a sharing.audit.AuditLog); None: only logged."""
        if store is None and getattr(audit, "shared", None):
            from sharing.shared_state import SignInStore

            store = SignInStore(audit.shared)
        self.store = store
        """The shared failures and lockouts (sharing.shared_state.SignInStore; ``clock`` is then the database's);
        None: this process's memory."""
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], list[tuple[float, str, str]]] = {}  # key -> [(at, user, address)]
        self._locked: dict[tuple[str, str], float] = {}  # key -> until
        self._pruned = 0.0
        self._attempts: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def attempt(self, user: str, address: str, channel: str = "") -> Iterator[None]:
        """Hold the user name's turn while its password is checked and the outcome recorded: concurrent
        attempts (several connections opened ahead, parallel form posts) are taken one at a time, each
        after the check, so N connections never buy N guesses past the lockout; with a shared store, one at a
        time over every server."""
        with self._lock:
            turn = self._attempts.setdefault(user, threading.Lock())
            if len(self._attempts) > 10_000:  # bounded: idle names' turns are dropped
                for name in [n for n, t in self._attempts.items() if n != user and not t.locked()][:5_000]:
                    del self._attempts[name]
        with turn, self.store.turn(user) if self.store is not None else contextlib.nullcontext():
            self.check(user, address, channel)
            yield

    def _limits(self) -> dict[str, int]:
        return {"user": self.settings.max_failures, "address": self.settings.max_failures_per_address}

    def check(self, user: str, address: str, channel: str = "") -> None:
        """Raise :class:`LockedOut` when ``user`` or ``address`` may not try to sign in now (audited)."""
        if self.store is not None:
            hit = self.store.locked([("user", user), ("address", address)])
            if hit is None:
                return
            key, locked = hit[0], LockedOut(hit[1])
            self.record(user, address, channel, "refused", f"locked out ({key[0]}): {locked}")
            raise locked
        now = self._clock()
        with self._lock:
            for key in (("user", user), ("address", address)):
                until = self._locked.get(key)
                if until is None:
                    continue
                if until > now:
                    locked = LockedOut(until - now)
                    break
                del self._locked[key]  # served its time: a fresh start
                self._failures.pop(key, None)
            else:
                return
        self.record(user, address, channel, "refused", f"locked out ({key[0]}): {locked}")
        raise locked

    def failed(self, user: str, address: str, channel: str) -> LockedOut | None:
        """Record a failed sign-in, wait the growing delay, and return the lockout it caused (if it did)."""
        s = self.settings
        now = self._clock()
        window = s.window_minutes * 60
        locked = None
        if self.store is not None:
            counts, over = self.store.failed(user, address, self._limits(), window, s.lockout_minutes * 60)
            locked = LockedOut(s.lockout_minutes * 60) if over else None
        else:
            counts = self._count(user, address, now, window)
            locked = LockedOut(s.lockout_minutes * 60) if counts.pop("locked") else None
        log.warning("failed sign-in for user %r from %s over %s (%d of %d for the user, %d of %d from the address, "
                    "in %g minutes)%s", user, address, channel, counts["user"], s.max_failures, counts["address"],
                    s.max_failures_per_address, s.window_minutes,
                    f"; locked for {s.lockout_minutes:g} minutes" if locked else "")
        self.record(user, address, channel, "failed", "wrong user name or password" + (
            f"; locked for {s.lockout_minutes:g} minutes" if locked else ""), failures=counts["user"])
        self._sleep(min(s.delay_seconds * max(counts.values()), s.max_delay_seconds))
        return locked

    def _count(self, user: str, address: str, now: float, window: float) -> dict[str, int]:
        """In memory: one more failure for the user name and the address; their counts, ``locked`` 1 when one
        reached its limit."""
        locked = 0
        with self._lock:
            self._prune(now, window)
            counts = {}
            for kind, limit in self._limits().items():
                key = (kind, user if kind == "user" else address)
                recent = [f for f in self._failures.get(key, []) if f[0] > now - window]
                recent.append((now, user, address))
                self._failures[key] = recent
                counts[kind] = len(recent)
                if len(recent) >= limit:
                    self._locked[key] = now + self.settings.lockout_minutes * 60
                    locked = 1
        return {**counts, "locked": locked}

    def rejected(self, address: str, channel: str, reason: str) -> None:
        """A credential refused without throttling (the HTTP API's unknown bearer token): audited only."""
        self.record(None, address, channel, "failed", reason)

    def record(self, user: str | None, address: str, channel: str, decision: str, reason: str, **more: Any) -> None:
        """One audit entry for a sign-in that did not succeed. A log that cannot be appended to is logged,
        not raised: the sign-in is refused either way."""
        if self.audit is None:
            return
        try:
            self.audit.append(kind="signin", department=None, user=None if user is None else user[:200],
                              decision=decision, reason=reason, address=address, channel=channel or None, **more)
        except Exception as exc:
            log.error("could not audit a %s sign-in for user %r from %s: %s", decision, user, address, exc)

    def succeeded(self, user: str, address: str) -> None:
        """A right password: the user name's failures are forgotten (from any address)."""
        if self.store is not None:
            self.store.succeeded(user, address)
            return
        with self._lock:
            self._failures.pop(("user", user), None)
            key = ("address", address)
            if key in self._failures:
                self._failures[key] = [f for f in self._failures[key] if f[1] != user]

    def _prune(self, now: float, window: float) -> None:
        """Forget failures older than the window, at most once a minute (keeps memory bounded)."""
        if now - self._pruned < 60:
            return
        self._pruned = now
        for key in [k for k, v in self._failures.items() if not v or v[-1][0] <= now - window]:
            del self._failures[key]
        for key in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[key]
