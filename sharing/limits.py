"""Limits a department cannot exceed: one deadline for a whole query, slots for running queries, sizes.

* :class:`Watch`: a query's deadline (core.config.QueryLimits.seconds, or lower: ``SET
  statement_timeout``) and its stop button (a Postgres cancel request). It covers the whole query: the wait
  for a slot, planning and running. Planning is pure Python (sqlglot), which nothing can interrupt from
  outside, so at the deadline the planning thread gets an exception raised into it
  (``PyThreadState_SetAsyncExc``, delivered at its next bytecode: :class:`Stopped`, a BaseException so
  that no ``except Exception`` in a parser swallows it); a running DuckDB query is interrupted
  (``interrupt()``). One watchdog thread serves every watch.
* :class:`Admission`: at most ``concurrent`` queries run at once, at most ``per_user`` of them one user's;
  others wait in arrival order (a user at its limit lets later users' queries pass), at most ``queued`` of
  them and ``per_user_queued`` per user; beyond that a query is refused at once (HTTP 429, Postgres
  53300). Each slot is one DuckDB instance (sharing.engine), which is how its memory limit is per query.
* :func:`clip` keeps a query's text in the audit log within ``audit_sql_bytes`` (head, size, sha256), and
  :class:`BodyLimit` refuses an HTTP body over ``request_bytes`` with 413 before it is read in full.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from core.config import QueryLimits
from sharing.exceptions import QueryStopped, TooManyQueries

NUDGE = 0.5
"""Seconds between the interrupts sent to a stopped query that still runs."""


class Stopped(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt, not an error
    """Raised into a planning thread at its deadline or on a cancel request."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``thread_id`` at its next bytecode (None: forget one not yet delivered)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class Watch:
    """One query's deadline and stop button: ``stop("cancelled")`` from another thread, or the watchdog's
    ``stop("timeout")`` at the deadline, stops it wherever it is (waiting, planning or running)."""

    def __init__(self, seconds: float, started: float | None = None):
        self.seconds = seconds
        self.started = time.monotonic() if started is None else started
        self.deadline = self.started + seconds
        self.reason: str | None = None
        """Why it was stopped: ``timeout`` or ``cancelled`` (None while it may go on)."""
        self._lock = threading.Lock()
        self._planner: int | None = None
        self._running: list = []
        self.on_stop: Callable[[], None] | None = None
        """Called when the query is stopped, outside the watch's lock: the admission queue it waits in sets it
        (to wake its waiters: this one leaves the queue) and clears it when it leaves."""
        self.entry = -1
        """Its entry in the watchdog's heap (-1: none); set by the watchdog, whose current entry it is."""
        _WATCHDOG.add(self)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            if self._planner is not None:
                _raise_in(self._planner, Stopped)
            running = self._interrupt()
            wake = self.on_stop
        if wake is not None:
            wake()
        if running:  # DuckDB drops an interrupt that comes before its query starts: say it again until it ends
            _WATCHDOG.add(self, time.monotonic() + NUDGE)

    def _interrupt(self) -> bool:
        """Interrupt whatever runs for this query now; True if something did."""
        for con in self._running:
            con.interrupt()
        return bool(self._running)

    def nudge(self) -> bool:
        """Interrupt again (a stopped query still running); True while it still runs."""
        with self._lock:
            return self._interrupt()

    def close(self) -> None:
        _WATCHDOG.discard(self)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Server work that is not the query's (opening a slot's connection): its time does not count, and
        no timeout falls in it (a cancel still does, and is seen after)."""
        _WATCHDOG.discard(self)
        began = time.monotonic()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - began
            _WATCHDOG.add(self)

    def stopped(self, what: str) -> QueryStopped:
        """The error for a query stopped while ``what`` (``planned``, ``ran``, ``waited for a slot``)."""
        if self.reason == "cancelled":
            return QueryStopped("canceling statement due to user request: the client cancelled the query "
                                f"while it {what}")
        return QueryStopped(f"the query {what} longer than its time limit of {self.seconds:g} s and was stopped "
                            "(narrow it, or ask for fewer rows)")

    @contextlib.contextmanager
    def planning(self) -> Iterator[None]:
        """Python work (parsing, planning) under this deadline: :class:`Stopped` is raised into it when the
        deadline passes or the query is cancelled; callers catch it around this block."""
        me = threading.get_ident()
        with self._lock:
            if self.reason is not None:
                raise Stopped()
            self._planner = me
        try:
            yield
        finally:
            with self._lock:
                self._planner = None
                fired = self.reason is not None
            if fired:
                _raise_in(me, None)  # set but not delivered yet: it must not surface after this block

    @contextlib.contextmanager
    def running(self, con) -> Iterator[None]:
        """DuckDB work on ``con`` under this deadline: interrupted when it passes or on cancel (raises
        :class:`Stopped` at once if that already happened)."""
        with self._lock:
            if self.reason is not None:
                raise Stopped("ran")
            self._running.append(con)
        try:
            yield
        finally:
            with self._lock:
                self._running.remove(con)


class _Watchdog:
    """One thread that stops every watch at its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch, when: float | None = None) -> None:
        """Stop ``watch`` at its deadline (or nudge a stopped one at ``when``)."""
        with self._cond:
            self._live.discard(watch.entry)
            entry = next(self._ids)
            watch.entry = entry
            self._live.add(entry)
            heapq.heappush(self._heap, (watch.deadline if when is None else when, entry, watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][1] == entry:
                self._cond.notify()

    def discard(self, watch: Watch) -> None:
        with self._cond:
            self._live.discard(watch.entry)

    def _run(self) -> None:
        while True:
            due = []
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                while self._heap and self._heap[0][0] <= time.monotonic():
                    _, entry, watch = heapq.heappop(self._heap)
                    if entry in self._live:
                        self._live.discard(entry)
                        due.append(watch)
            for watch in due:
                if watch.reason is None:
                    watch.stop("timeout")
                elif watch.nudge():
                    self.add(watch, time.monotonic() + NUDGE)


_WATCHDOG = _Watchdog()


class Admission:
    """Running slots for queries, shared fairly between users (see the module's docstring)."""

    def __init__(self, limits: QueryLimits):
        self.limits = limits
        self._cond = threading.Condition()
        self._free = list(range(max(1, limits.concurrent)))  # a heap: the lowest free slot first (already open)
        self._running: dict[str, int] = {}
        self._waiting: deque[tuple[str, object]] = deque()

    def _eligible(self, user: str) -> bool:
        return bool(self._free) and self._running.get(user, 0) < max(1, self.limits.per_user)

    def _first_eligible(self) -> object | None:
        for user, token in self._waiting:
            if self._eligible(user):
                return token
        return None

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self, user: str, watch: Watch) -> Iterator[int]:
        """A running slot (its number) for one of ``user``'s queries, waiting for it within ``watch``."""
        limits = self.limits
        with self._cond:
            if self._eligible(user) and self._first_eligible() is None:
                slot = self._take(user)
            else:
                mine = sum(1 for u, _ in self._waiting if u == user)
                if mine >= limits.per_user_queued or len(self._waiting) >= limits.queued:
                    running = self._running.get(user, 0)
                    raise TooManyQueries(
                        f"too many queries in flight: {user} has {running} running and {mine} waiting "
                        f"(at most {limits.per_user} running and {limits.per_user_queued} waiting per user, "
                        f"{limits.concurrent} running and {limits.queued} waiting in all); "
                        "retry when one has finished")
                token = object()
                self._waiting.append((user, token))
                watch.on_stop = self._wake
                try:
                    while self._first_eligible() is not token:
                        if watch.reason is not None or watch.remaining() <= 0:
                            watch.stop("timeout")
                            raise watch.stopped("waited for a free slot")
                        self._cond.wait(min(watch.remaining(), 1.0))
                finally:
                    self._waiting.remove((user, token))
                    watch.on_stop = None
                    self._cond.notify_all()  # the queue moved: the next eligible waiter may be another
                slot = self._take(user)
        try:
            yield slot
        finally:
            with self._cond:
                self._running[user] -= 1
                if not self._running[user]:
                    del self._running[user]
                heapq.heappush(self._free, slot)
                self._cond.notify_all()

    def _take(self, user: str) -> int:
        self._running[user] = self._running.get(user, 0) + 1
        return heapq.heappop(self._free)

    def in_flight(self) -> dict[str, tuple[int, int]]:
        """user -> (running, waiting): for tests and the operator."""
        with self._cond:
            out = {u: (n, 0) for u, n in self._running.items()}
            for u, _ in self._waiting:
                out[u] = (out.get(u, (0, 0))[0], out.get(u, (0, 0))[1] + 1)
            return out


def clip(name: str, text: str | None, limit: int) -> dict:
    """Audit fields for a query's text: all of it when within ``limit`` bytes (UTF-8), else its first
    bytes with ``<name>_bytes`` and ``<name>_sha256`` of the whole."""
    if text is None:
        return {name: None}
    if len(text) * 4 <= limit:  # fast path: no encoding for ordinary queries
        return {name: text}
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return {name: text}
    return {name: raw[:limit].decode("utf-8", "ignore") + " …", f"{name}_bytes": len(raw),
            f"{name}_sha256": hashlib.sha256(raw).hexdigest()}


def sql_bytes(sql: str) -> int:
    """The UTF-8 size of ``sql`` (cheap for ordinary queries: at most 4 bytes a character)."""
    return len(sql) if sql.isascii() else len(sql.encode("utf-8", "surrogatepass"))


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413 (by its Content-Length at
    once, or as soon as the bytes received pass the limit), never read in full. With ``threads``, the
    worker threads that run the app's synchronous endpoints are that many (anyio's default is 40): every
    query waiting for a slot holds one, and the others' requests still need theirs."""

    def __init__(self, app, max_bytes: int, threads: int | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.threads = threads

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan" and self.threads:
            import anyio.to_thread

            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.threads)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    from starlette.exceptions import HTTPException

                    raise HTTPException(status_code=413, detail=self._reason())
            return message

        await self.app(scope, limited, send)

    def _reason(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (ONESOURCE_QUERY_REQUEST_BYTES)"

    async def _refuse(self, send) -> None:
        import json

        body = json.dumps({"error": "refused", "reason": self._reason()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class Canceller:
    """A session's stop button (a Postgres cancel request): stops the query the session is running, if any
    (one arriving between queries does nothing, as in PostgreSQL)."""

    def __init__(self) -> None:
        self.watch: Watch | None = None

    def cancel(self) -> None:
        watch = self.watch
        if watch is not None:
            watch.stop("cancelled")
