"""The governed engine every endpoint uses: authorise, rewrite, run locked down, audit.

>>> engine = GovernedEngine(settings, registry)
>>> result = engine.query("tax", "SELECT count(*) FROM shared.amr_enterprise_register", purpose="稽查")

Governance is read fresh: grants, revocations, users and the registry as registered take effect on the
next query. Whenever the lake has committed since the last query (the catalog's stamp changed), what a
department may read is recomputed, and when the registry's registered versions changed (``onesource
registry apply``, or a load, which applies it first) the registry is read again from its folder: a dataset
made ``not_shared`` is refused, a new one becomes readable, without a restart.

Limits (core.config.QueryLimits, sharing.limits): a size limit on the SQL text, one deadline for
waiting, planning and running, running slots shared fairly between users, and a memory limit per query:
each slot of a server is its own DuckDB instance on the lake, with its own ``memory_limit``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass

import duckdb

from core.config import Settings
from core.errors import OneSourceError
from core.logsafe import guarded
from lakehouse import ledger
from lakehouse.lake import Lake, list_tables
from schemas.model import Registry
from sharing.audit import AuditLog
from sharing.exceptions import AccountDisabled, InvalidSQL, OutOfMemory, QueryFailed, QueryRefused, QueryTooLarge
from sharing.filescan import FileScans
from sharing.grants import Access, active_grants, visible
from sharing.limits import Admission, Canceller, Stopped, Watch, clip, sql_bytes
from sharing.match import MatchLedger
from sharing.policy import Plan, explained, plan
from sharing.security.freeze import Freezes, active_freezes
from sharing.sql import QueryResult, fetch, lock_down, size_bytes

log = guarded("onesource.engine")
_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found|Column "([^"]+)" referenced that exists in the SELECT|'
                             r'Values list "[^"]*" does not have a column named "([^"]+)"')


@dataclass(frozen=True)
class Limits:
    """Per-engine overrides (the CLI's ``--timeout``); the defaults come from the settings. ``rows``: the most
    rows one answer may have (0: no bound); a result with more is an error, never an answer cut short."""

    rows: int = 0
    seconds: float = 30.0


def slot_threads(concurrent: int) -> int:
    """DuckDB threads per running slot when QueryLimits.threads is 0: the machine's cores shared among the
    slots. A slot with every core (DuckDB's default) oversubscribes the machine ``concurrent`` times over, and
    DuckDB's workers spend it waiting on each other: on 2 cores a small governed query cost about twice the CPU
    with 2 threads as with 1 (a point lookup on 1M rows: 22.6 against 11.5 ms), which the server took from the
    loads publishing beside it (bench/publish.py)."""
    return max(1, (os.cpu_count() or 1) // max(1, concurrent))


_NOT_YET = ("(as of {}, a table of the query was not loaded yet: ask for a later time or snapshot; "
            "`onesource status` shows each dataset's loads)")


class GovernedEngine:
    """With ``persistent=True`` (the servers) one read-only, locked-down lake connection is opened once for
    the helpers (users, grants, the catalogue), and each running query has a slot of its own: a DuckDB
    instance on the lake with the per-query memory limit, opened when first needed and kept; otherwise (the
    CLI) each query opens and closes its own."""

    def __init__(self, settings: Settings, registry: Registry, limits: Limits | None = None, *,
                 persistent: bool = False, as_of: int | dt.datetime | None = None):
        """``as_of`` (CLI only): read the lake as of a snapshot id or a time; today's grants still decide."""
        if persistent and as_of is not None:
            raise ValueError("time travel is per query session (the CLI), not for the servers")
        self.as_of = as_of
        self.settings = settings
        self.limits = limits or Limits(rows=settings.limits.rows, seconds=settings.limits.seconds)
        self.arrow = persistent
        """Results as Arrow batches (the servers; the CLI sets it for a Parquet or Arrow export)."""
        self._result_bytes = size_bytes(settings.limits.result_bytes)
        self.audit = AuditLog.of(settings, group_commit=0.2 if persistent else None)
        self._registry = registry
        self._lake: Lake | None = None
        self._lock = threading.Lock()
        self._fresh_lock = threading.Lock()
        self._stamp: object = None
        self._registered_mark: object = None
        self._cache: dict[tuple[str, str | None], tuple[object, float, dict]] = {}
        self._organisations: dict[str, tuple[object, str | None]] = {}
        self._users: dict[str, tuple[object, bool]] = {}
        self._frozen: tuple[object, Freezes] | None = None
        self._tokens: dict[str, tuple[object, object]] = {}
        self._plans: dict[tuple, tuple[dict, Plan]] = {}
        self._sandboxes: dict[tuple[str, int], tuple[dict, duckdb.DuckDBPyConnection]] = {}
        self._matches: MatchLedger | None = None
        self.admission: Admission | None = None
        self._slots: dict[int, duckdb.DuckDBPyConnection] = {}
        self._slot_lakes: list[Lake] = []
        self._slot_locks: dict[int, threading.Lock] = {}
        self._pins: dict[int, _Pin] = {}
        self._files = FileScans(settings.lake.data_path)
        self._reaping: threading.Event | None = None
        if persistent:
            self._lake = Lake(settings.lake, read_only=True)
            # the platform's own lookups (users, grants, requests, the ledger) are small: one thread each,
            # not every core (see slot_threads)
            lock_down(self._lake.con, settings.lake.data_path, threads=1)
            self.admission = Admission(settings.limits)
            with self.cursor() as lake:
                self._stamp = self._catalog_stamp(lake.con)
                self._registered_mark = self._registered(lake.con)

    @property
    def registry(self) -> Registry:
        """The registry as last registered in the lake (re-read from its folder when that changes)."""
        return self._registry

    @property
    def lake(self) -> Lake | None:
        """A persistent engine's own read-only lake (the platform's lookups: users, grants, the ledger; queries
        run on the running slots, :meth:`slot`); None for a per-query engine (the CLI)."""
        return self._lake

    def _fresh(self, cursor: duckdb.DuckDBPyConnection, stamp: object = None) -> object:
        """The catalog's stamp, after taking in what changed since the last query: a new registry version
        (a registry apply, a load) makes the registry be read again and every cached answer dropped.
        ``stamp``: the one a pinned slot was checked against (:meth:`_pinned`), so that what ``cursor``
        reads is cached under the stamp of the snapshot it reads, never a newer one."""
        if stamp is None:
            stamp = self._catalog_stamp(cursor)
        if stamp == self._stamp:
            return stamp
        with self._fresh_lock:
            if stamp != self._stamp:
                mark = self._registered(cursor)
                if mark != self._registered_mark and self._reload():
                    self._registered_mark = mark
                self._stamp = stamp
        return stamp

    def _registered(self, cursor: duckdb.DuckDBPyConnection) -> object:
        """What changes whenever a registry version is registered (rows are never updated nor removed)."""
        try:
            return cursor.execute(f"SELECT count(*), max(registered_at) FROM {ledger.ref('schema_versions')}").fetchone()
        except duckdb.Error:
            return None

    def _reload(self) -> bool:
        from schemas import load_registry

        try:
            registry = load_registry(self.settings.registry_dir, self.settings.cache_dir)
        except Exception as exc:  # a registry being edited: keep serving the last good one, try again later
            log.warning("a new registry version was registered, but the registry in %s cannot be read (%s); "
                        "still serving the registry read before", self.settings.registry_dir,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        self._registry = registry
        self._cache.clear()
        self._plans.clear()
        self._sandboxes.clear()
        log.info("registry re-read from %s (%d datasets)", self.settings.registry_dir, len(registry.datasets))
        return True

    def access(self, cursor: duckdb.DuckDBPyConnection, department: str, stamp: object = None, *,
               user: str | None = None) -> dict[str, Access]:
        """What ``department``'s ``user`` may read, cached per lake snapshot and per (department, the user's
        organisation): a grant, revocation or expiry changes the answer on the very next query (a grant or
        revocation is a new snapshot; expiry is timed), and a grant scoped to the jurisdiction gives each
        organisation its own rows (sharing.grants). No ``user``: the department as a whole (the city)."""
        snapshot = self._fresh(cursor, stamp)
        organisation = self._organisation(cursor, user, snapshot) if user else None
        now = time.time()
        hit = self._cache.get((department, organisation))
        if hit and hit[0] == snapshot and now < hit[1]:
            return hit[2]
        registry = self._registry
        grants = active_grants(CursorLake(self._lake, cursor), department)
        expiry = min([g.expires_at.replace(tzinfo=dt.UTC).timestamp() for g in grants if g.expires_at] + [now + 60])
        access = visible(registry, grants, department, organisation)
        self._cache[(department, organisation)] = (snapshot, expiry, access)
        return access

    def _organisation(self, cursor: duckdb.DuckDBPyConnection, user: str, stamp: object) -> str | None:
        """The division code of ``user``'s organisation (None: the city), cached per lake snapshot like
        :meth:`_active`: a user moved to another organisation reads as such from the next commit on."""
        from sharing.users import organisation_of

        hit = self._organisations.get(user)
        if hit and hit[0] == stamp:
            return hit[1]
        organisation = organisation_of(cursor, user)
        if len(self._organisations) > 10_000:
            self._organisations.clear()
        self._organisations[user] = (stamp, organisation)
        return organisation

    def _active(self, cursor: duckdb.DuckDBPyConnection, user: str, stamp: object = None) -> bool:
        """Whether ``user`` is still an active user (not disabled nor removed), cached per lake snapshot."""
        stamp = self._fresh(cursor, stamp)
        hit = self._users.get(user)
        if hit and hit[0] == stamp:
            return hit[1]
        try:
            found = ledger.user(cursor, user)
        except duckdb.Error:
            found = None
        active = found is not None and found.active
        self._users[user] = (stamp, active)
        return active

    def _freezes(self, cursor: duckdb.DuckDBPyConnection, stamp: object = None) -> Freezes:
        """The data bureau's freezes in force (sharing.security.freeze), cached per lake snapshot: a freeze or
        an unfreeze is a commit, so it is seen by the next query."""
        stamp = self._fresh(cursor, stamp)
        hit = self._frozen
        if hit is not None and hit[0] == stamp:
            return hit[1]
        found = active_freezes(CursorLake(self._lake, cursor))
        self._frozen = (stamp, found)
        return found

    def freezes(self) -> Freezes:
        """The freezes in force now (a server's sign-ins, its watcher of live sessions, the portal's pages)."""
        with self.cursor() as lake:
            return self._freezes(lake.con)

    def user_by_token(self, token: str):
        """The active user holding ``token`` (sharing.users), cached per lake snapshot: a reset, a disable or
        a new user is seen on the next request, and a burst of requests costs one lookup, not one each."""
        from sharing.users import token_hash, user_by_token

        key = token_hash(token)
        stamp = self._catalog_stamp(None) if self.settings.lake.catalog.startswith("sqlite:") else None
        hit = self._tokens.get(key)
        if stamp is not None and hit is not None and hit[0] == stamp:
            return hit[1]
        with self.cursor() as lake:
            stamp = self._catalog_stamp(lake.con)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            user = user_by_token(lake, token)
        if user is not None:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (stamp, user)
        return user

    @property
    def matches(self) -> MatchLedger:
        if self._matches is None:
            self._matches = MatchLedger(self.settings.home / "sharing" / "matches.sqlite")
        return self._matches

    def _plan(self, sql: str, access: dict, department: str, dialect: str, user: str | None = None,
              files=None) -> Plan:
        """Plans are cached per (access, SQL text): BI tools and dashboards send the same queries again and
        again. The access object is replaced whenever grants or the catalog change, so a stale plan
        is never reused; refusals are not cached (each is planned, refused and audited anew). ``user``: in
        the key, since ``current_user`` is planned as the user's name. ``files``: the stamp's file lists
        (sharing.filescan); an access object lives within one stamp, so a cached plan's files are its own."""
        key = (id(access), department, user, dialect, sql)
        hit = self._plans.get(key)
        if hit is not None and hit[0] is access:
            return hit[1]
        planned = plan(sql, access, self._registry, department, dialect=dialect, user=user, files=files)
        if len(self._plans) > 1024:
            self._plans.clear()
        self._plans[key] = (access, planned)
        return planned

    def _catalog_stamp(self, cursor: duckdb.DuckDBPyConnection | None):
        """Something that changes whenever a commit of the lake becomes visible, read before what is
        cached under it (so what is read is at least as new as the stamp). A SQLite catalog: the stat of its
        files (microseconds) and, in WAL mode, the WAL index's header, which SQLite rewrites at the moment a
        commit becomes visible to readers; the WAL file alone grows *before* that moment, and a stamp taken
        in between would label the snapshot before the commit with the stamp after it (a revoke seen late,
        until the next commit). Otherwise ask DuckLake (a catalog query, ~3 ms)."""
        catalog = self.settings.lake.catalog
        if catalog.startswith("sqlite:"):
            path = catalog.removeprefix("sqlite:")
            stamps: list[object] = []
            for suffix in ("", "-wal", "-journal"):
                try:
                    st = os.stat(path + suffix)
                    stamps.append((st.st_mtime_ns, st.st_size))
                except FileNotFoundError:
                    stamps.append(None)
            stamps.append(_wal_index(path + "-shm"))
            return tuple(stamps)
        return cursor.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]

    def stamp(self) -> object:
        """The catalog's stamp now (changes with every commit: a grant, a revoke, a disabled user, a load);
        a server compares it to tell whether an answer it holds may have been planned under other grants."""
        if self.settings.lake.catalog.startswith("sqlite:"):
            return self._catalog_stamp(None)
        with self.cursor() as lake:
            return self._catalog_stamp(lake.con)

    @contextlib.contextmanager
    def cursor(self):
        """A cursor on the persistent lake connection, as a Lake for helpers (users, grants)."""
        assert self._lake is not None, "only a persistent engine lends cursors"
        with self._lock:
            cursor = self._lake.con.cursor()
        try:
            yield CursorLake(self._lake, cursor)
        finally:
            cursor.close()

    def slot(self, number: int) -> duckdb.DuckDBPyConnection:
        """Running slot ``number``'s connection: a DuckDB instance of its own on the lake, so that its
        ``memory_limit`` (per instance in DuckDB) is this query's alone. Only the query holding the slot
        runs on it; it is opened when first needed (about a second: DuckDB checks the extensions'
        signatures for each instance), or ahead by :meth:`open_slots`."""
        with self._slot_locks.setdefault(number, threading.Lock()):
            con = self._slots.get(number)
            if con is None:
                lake = Lake(self.settings.lake, read_only=True)
                limits = self.settings.limits
                lock_down(lake.con, self.settings.lake.data_path, memory_limit=limits.memory,
                          threads=limits.threads or slot_threads(limits.concurrent))
                self._slot_lakes.append(lake)
                con = self._slots[number] = lake.con
            return con

    def open_slots(self) -> None:
        """Open every running slot now (a server, before it listens), so that no query waits for one."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(self.slot, range(max(1, self.settings.limits.concurrent))))

    @contextlib.contextmanager
    def _pinned(self, number: int, con: duckdb.DuckDBPyConnection, state: dict):
        """Run one query of slot ``number`` in the slot's pinned read transaction (see :class:`_Pin`), begun
        again whenever the catalog's stamp changed since it began: a commit is seen by the next query, as
        without a pin. ``state["stamp"]``: the stamp the pin was checked against, which the lookups of the
        query (grants, users) are cached under. A query that fails ends the pin (DuckDB aborts an explicit
        transaction on an error), and so does a pin unused for PIN_IDLE seconds (the reaper)."""
        if not self.settings.lake.catalog.startswith("sqlite:"):
            # another catalog's stamp is a query on the catalog itself (its snapshot id): nothing to pin it
            # against, but read in the query's own transaction it is the very snapshot the query reads, for
            # the same one catalog query (the audit records it: sharing.security.replay)
            _Pin.begin(con)
            try:
                state["stamp"] = state["snapshot"] = self._catalog_stamp(con)
                yield
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
            return
        pin = self._pins.get(number)
        if pin is None:
            pin = self._pins.setdefault(number, _Pin())
        with pin.lock:
            stamp = self._catalog_stamp(None)  # before BEGIN: the pinned snapshot is at least this new
            now = time.monotonic()
            if pin.stamp is not None and (pin.stamp != stamp or now - pin.since > PIN_SECONDS):
                pin.end(con)
            if pin.stamp is None:
                pin.begin(con)
                pin.stamp, pin.since = stamp, now
            state["stamp"], state["pin"] = stamp, pin
            try:
                yield
            except BaseException:
                pin.end(con)
                raise
            finally:
                pin.used = time.monotonic()
        self._reaper()

    def _reaper(self) -> None:
        """Start the thread that ends idle pins (once per engine)."""
        if self._reaping is None:
            with self._lock:
                if self._reaping is None:
                    self._reaping = threading.Event()
                    threading.Thread(target=_reap, args=(weakref.ref(self), self._reaping), name="slot-pins",
                                     daemon=True).start()

    def _end_idle_pins(self) -> None:
        for number, pin in list(self._pins.items()):
            if pin.stamp is None or time.monotonic() - pin.used < PIN_IDLE:
                continue
            if pin.lock.acquire(blocking=False):  # a query holding it is using the pin: not idle
                try:
                    if pin.stamp is not None and time.monotonic() - pin.used >= PIN_IDLE:
                        pin.end(self._slots[number])
                finally:
                    pin.lock.release()

    def close(self) -> None:
        if self._reaping is not None:
            self._reaping.set()
        for number, pin in list(self._pins.items()):
            with pin.lock:
                pin.end(self._slots[number])
        self.audit.sync()
        for lake in self._slot_lakes:
            lake.close()
        if self._lake is not None:
            self._lake.close()

    def catalog(self, department: str, sql: str, params: list | None = None, *, user: str | None = None,
                seconds: float | None = None, cancel: Canceller | None = None,
                signed_in: bool = False) -> QueryResult:
        """A catalog question (pg_catalog, information_schema, SHOW, version()), answered from the
        department's sandbox: only what it may read, and no rows (sharing.visible_catalog)."""
        return self._governed("catalogue", department, sql, params, user=user, purpose="catalogue",
                              dialect="postgres", seconds=seconds, cancel=cancel, signed_in=signed_in)

    def query(self, department: str, sql: str, *, user: str | None = None, purpose: str | None = None,
              dialect: str = "postgres", seconds: float | None = None, cancel: Canceller | None = None,
              signed_in: bool = False) -> QueryResult:
        """Plan, charge any match quota, run, and audit: every query that reaches the planner is audited,
        whether it is allowed, refused, fails in DuckDB, or meets a planner error.

        ``seconds`` lowers the time limit (never raises it); ``cancel`` is the session's stop button;
        ``signed_in``: ``user`` is a signed-in user whose account must still be active."""
        return self._governed("query", department, sql, None, user=user, purpose=purpose, dialect=dialect,
                              seconds=seconds, cancel=cancel, signed_in=signed_in)

    def statement(self, department: str, sql: str, params: list | None = None, *, user: str,
                  purpose: str | None = "postgres-wire", seconds: float | None = None,
                  cancel: Canceller | None = None) -> QueryResult:
        """A statement from the Postgres wire: a catalog question or a query (bound parameters become
        literals, sharing.pgwire.bind), told apart within the query's own limits. ``user`` signed in."""
        return self._governed("statement", department, sql, params, user=user, purpose=purpose,
                              dialect="postgres", seconds=seconds, cancel=cancel, signed_in=True)

    def _governed(self, kind: str, department: str, sql: str, params: list | None, *, user: str | None,
                  purpose: str | None, dialect: str, seconds: float | None, cancel: Canceller | None,
                  signed_in: bool) -> QueryResult:
        """One statement within every limit, audited whatever happens: the SQL's size, a running slot
        (servers), one deadline for waiting, planning and running, the slot's memory limit."""
        started = time.perf_counter()
        limits = self.settings.limits
        seconds = min(self.limits.seconds, seconds) if seconds and seconds > 0 else self.limits.seconds
        record = {"department": department, "user": user or department, "purpose": purpose,
                  **clip("sql_sent", sql, limits.audit_sql_bytes), "dialect": dialect}
        state: dict = {"plan": None, "access": {}}
        watch = Watch(seconds)
        if cancel is not None:
            cancel.watch = watch
        try:
            if "\x00" in sql:  # DuckDB reads a statement as a C string: it would check and run a prefix of it
                raise InvalidSQL("the query holds a NUL character (\\0), which SQL text cannot hold; remove it")
            size = sql_bytes(sql)
            if size > limits.sql_bytes:
                raise QueryTooLarge(f"the query is {size:,} bytes long; at most {limits.sql_bytes:,} are accepted "
                                    "(ONESOURCE_QUERY_SQL_BYTES): split it, or filter with a shorter condition")
            if self._lake is None:
                with watch.paused():  # opening the lake is the CLI's own cost, not the query's
                    # one DuckDB thread for the lake's own lookups (grants, the catalog): a second one only
                    # doubled their CPU (0.55 s against 0.31 s of a small `onesource sql --as`, bench/cli.py);
                    # the department's query gets its threads back below
                    lake = Lake(self.settings.lake, read_only=True, threads=1)
                with lake:
                    outcome, result = self._steps(kind, lake, department, sql, params, record, state, watch,
                                                  user=user, dialect=dialect, signed_in=False)
            else:
                assert self.admission is not None
                with self.admission.slot(user or department, watch) as number:
                    con = self._slots.get(number)
                    if con is None:
                        with watch.paused():
                            con = self.slot(number)
                    with self._pinned(number, con, state):
                        outcome, result = self._steps(kind, con, department, sql, params, record, state, watch,
                                                      user=user, dialect=dialect, signed_in=signed_in)
        except Stopped as exc:
            stopped = watch.stopped(exc.args[0] if exc.args else "was planned")
            self._record(record, started, decision="failed", reason=str(stopped), plan=state["plan"])
            raise stopped from None
        except QueryRefused as exc:
            self._record(record, started, decision="refused", reason=str(exc), plan=state["plan"])
            raise
        except QueryFailed as exc:
            refusal = (self._ungranted(str(exc), state["plan"], department, state["access"])
                       or self._unbindable_filter(state["plan"], department, state["access"]))
            if refusal is not None:
                self._record(record, started, decision="refused", reason=str(refusal), plan=state["plan"])
                raise refusal from exc
            self._record(record, started, decision="failed", reason=str(exc), plan=state["plan"])
            raise
        except OneSourceError as exc:  # the platform's own errors (a lost catalog, ...) say what to do: kept
            self._record(record, started, decision="failed", reason=str(exc)[:2000], plan=state["plan"])
            raise
        except Exception as exc:  # a planner or engine defect: still audited, never a traceback to the client
            reason = f"internal error while planning or running the query ({type(exc).__name__}); it was logged"
            self._record(record, started, decision="failed", reason=f"{reason}: {exc}"[:2000], plan=state["plan"])
            raise QueryFailed(reason) from exc
        finally:
            watch.close()
            if cancel is not None:
                cancel.watch = None
        if outcome == "catalogue":
            self._record(record, started, decision="catalogue", reason=None, rows=result.row_count)
        else:
            planned, access = state["plan"], state["access"]
            result.policy = tuple((name, access.get(name)) for name in planned.tables)
            self._record(record, started, decision="allowed", reason=None, plan=state["plan"], rows=result.row_count,
                         result_columns=result.columns, result=result)
        return result

    def _steps(self, kind: str, on: Lake | duckdb.DuckDBPyConnection, department: str, sql: str,
               params: list | None, record: dict, state: dict, watch: Watch, *, user: str | None, dialect: str,
               signed_in: bool) -> tuple[str, QueryResult]:
        """Authorise, tell a catalog question from a query (the wire), plan, charge, run: on a server's
        slot connection, or (``on`` a Lake) the CLI's own connection."""
        limits = self.settings.limits
        files = None
        if isinstance(on, Lake):  # the CLI: no cache to keep fresh, nothing to share
            from sharing.users import organisation_of

            con = on.con
            access = visible(self._registry, active_grants(on, department), department,
                             organisation_of(con, user) if user else None)
        else:
            con = on
            stamp = self._fresh(con, state.get("stamp"))  # read once: the grants and the file lists share it
            access = self.access(con, department, stamp, user=user)
            files = self._files.resolver(con, stamp)
        state["access"] = access
        if signed_in and user and not self._active(con, user, state.get("stamp")):
            raise AccountDisabled(f"user {user} has been disabled since signing in; no query is answered for it")
        # the server's stamp read above (a catalog query on a non-SQLite catalog: once per query, not twice)
        freezes = active_freezes(on) if isinstance(on, Lake) else self._freezes(con, stamp)
        if freezes and (frozen := freezes.stopping(user, department)) is not None:
            raise frozen.refusal(user)
        if kind != "query":
            with watch.planning():
                catalogue = kind == "catalogue" or _is_catalogue(sql)
                bound = _bind(sql, params) if params and not catalogue else sql
            if catalogue:
                record["purpose"] = "catalogue"
                return "catalogue", self._catalogue(department, access, sql, params, watch, user=user)
            if bound is not sql:  # the audit records the statement as it was planned, values and all
                sql = bound
                record.pop("sql_sent_bytes", None)
                record.pop("sql_sent_sha256", None)
                record.update(clip("sql_sent", sql, limits.audit_sql_bytes))
        with watch.planning():
            planned = self._plan(sql, access, department, dialect, user, files)
        state["plan"] = planned
        if freezes and (frozen := freezes.reading(planned.tables)) is not None:
            raise frozen.refusal(user)
        if self.as_of is None and isinstance(on, Lake):
            return "query", self._cli_answer(con, department, access, planned, record, watch)
        if self.as_of is None:
            record["snapshot"] = self._snapshot(con, state)
        self._charge(department, access, planned)
        if self.as_of is None:
            return "query", self._answer(con, planned, watch)
        record["as_of"] = str(self.as_of)
        with watch.paused():
            then = Lake(self.settings.lake, as_of=self.as_of)
        with then:
            record["snapshot"] = _current_snapshot(then.con)
            lock_down(then.con, self.settings.lake.data_path, memory_limit=limits.memory, threads=limits.threads)
            try:
                return "query", self._answer(then.con, planned, watch)
            except QueryFailed as exc:
                if "Catalog Error: Table" not in str(exc):
                    raise
                raise QueryFailed(f"{exc} {_NOT_YET.format(self.as_of)}") from exc

    def _cli_answer(self, con: duckdb.DuckDBPyConnection, department: str, access: dict, planned: Plan,
                    record: dict, watch: Watch) -> QueryResult:
        """The CLI's query, in one transaction with the read of the snapshot it reads (the audit records it)."""
        limits = self.settings.limits
        # QueryLimits.threads 0: the CLI's query has every core
        lock_down(con, self.settings.lake.data_path, memory_limit=limits.memory,
                  threads=limits.threads or os.cpu_count() or 1)
        _Pin.begin(con)
        try:
            record["snapshot"] = _current_snapshot(con)
            self._charge(department, access, planned)
            return self._answer(con, planned, watch)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")

    def _snapshot(self, con: duckdb.DuckDBPyConnection, state: dict) -> int | None:
        """The DuckLake snapshot a server's query reads: its slot's pinned transaction's, read once per pin (a
        catalog query, kept on the pin), or the one a catalog without pins read as the stamp."""
        if "snapshot" in state:
            return state["snapshot"]
        pin = state.get("pin")
        if pin is not None and pin.snapshot is not None:
            return pin.snapshot
        snapshot = _current_snapshot(con)
        if pin is not None:
            pin.snapshot = snapshot
        return snapshot

    def _catalogue(self, department: str, access: dict, sql: str, params: list | None, watch: Watch, *,
                   user: str | None = None) -> QueryResult:
        from sharing.visible_catalog import answer, sandbox

        limits = self.settings.limits
        # one per access object: a department's users of different organisations (each its own access) asking
        # catalog questions in turn keep their sandboxes instead of rebuilding them each time
        key = (department, id(access))
        hit = self._sandboxes.get(key)
        if hit is None or hit[0] is not access:
            hit = (access, sandbox(access, self._registry, memory_limit=limits.memory, threads=limits.threads))
            live = {id(cached[2]) for cached in list(self._cache.values())}  # the others were planned under old grants
            for stale in [k for k, v in list(self._sandboxes.items()) if id(v[0]) not in live]:
                self._sandboxes.pop(stale, None)
            self._sandboxes[key] = hit
        try:
            return answer(hit[1], sql, params, user=user or department, watch=watch,
                          max_rows=max(limits.rows, CATALOGUE_ROWS), max_bytes=self._result_bytes)
        except duckdb.InterruptException as exc:
            raise watch.stopped("ran") from exc
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory() from exc
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).split("\n")[0]) from exc

    def _out_of_memory(self) -> OutOfMemory:
        return OutOfMemory(f"the query needed more than the {self.settings.limits.memory} of memory one query may "
                           "use, and was stopped (ONESOURCE_QUERY_MEMORY): aggregate or filter more, or ask for "
                           "fewer columns")

    def _ungranted(self, message: str, planned: Plan | None, department: str, access: dict) -> QueryRefused | None:
        """DuckDB's "column not found" for a column the dataset has but the department was not granted
        becomes a refusal that says so (the relation simply has no such column)."""
        found = _MISSING_COLUMN.search(message)
        if planned is None or found is None:
            return None
        name = next(g for g in found.groups() if g).split(".")[-1]
        if any(name in {c.name for c in self.registry.dataset(t).columns} and name not in access[t].columns
               for t in planned.tables):
            return QueryRefused(f"column '{name}' could not be resolved: it is not granted to {department} "
                                "(request it with onesource requests create)")
        return None

    def _unbindable_filter(self, planned: Plan | None, department: str, access: dict) -> QueryRefused | None:
        """A failed query read through a grant's row filter that DuckDB cannot apply (one stored before grants
        were checked with the columns' types): the refusal names the filter and the remedy, not DuckDB's
        error about SQL the department never wrote. Checked only after a failure, so it costs nothing else."""
        from sharing.grants import unbindable

        for name in planned.filtered if planned else ():
            acc, ds = access[name], self.registry.dataset(name)
            for normal in dict.fromkeys([*acc.row_filters, *(f for fs in acc.column_filters.values() for f in fs)]):
                if reason := unbindable(normal, ds):
                    return QueryRefused(f"shared.{name}: the row filter {normal} of a grant to {department} cannot "
                                        f"be applied ({reason}); ask {ds.owner} to revoke that grant (`onesource "
                                        "grants list` shows its id) and grant again with a valid filter")
        return None

    def _charge(self, department: str, access: dict, planned: Plan) -> None:
        if planned.matches:
            self.matches.spend(department, access, planned.matches)

    def _answer(self, con: duckdb.DuckDBPyConnection, planned: Plan, watch: Watch) -> QueryResult:
        """The query's answer; for ``EXPLAIN <query>`` the governed query's plan as PostgreSQL shows one."""
        result = self._run(con, planned, watch)
        if planned.explain:
            return QueryResult(*explained(result.rows))
        return result

    def _run(self, con: duckdb.DuckDBPyConnection, planned: Plan, watch: Watch) -> QueryResult:
        """Every row of the answer, fetched within the query's deadline and memory and counted as it comes
        (sharing.sql.fetch): as Arrow batches for the servers (``self.arrow``), as Python values for the CLI
        (which then never imports pyarrow). The result is fetched whole before it is sent, so the running slot
        is free again as soon as DuckDB is done, however slowly the client reads; ``result_bytes`` bounds
        what that holds. Beyond ``rows`` or ``result_bytes``: an error, never an answer cut short."""
        try:
            with watch.running(con):
                result = fetch(con.execute(planned.sql_run), arrow=self.arrow, max_rows=self.limits.rows,
                               max_bytes=self._result_bytes)
        except duckdb.InterruptException as exc:
            raise watch.stopped("ran") from exc
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory() from exc
        except duckdb.Error as exc:
            raise QueryFailed(self._public(str(exc).split("\n")[0])) from exc
        return result

    def _public(self, message: str) -> str:
        """DuckDB's message without the server's own paths (a missing data file names it in full)."""
        for path, shown in ((self.settings.lake.data_path, "<lake data>/"), (str(self.settings.home), "<home>")):
            message = message.replace(path, shown)
        return message

    def _record(self, record: dict, started: float, *, decision: str, reason: str | None, plan: Plan | None = None,
                rows: int | None = None, result_columns: list[str] | None = None,
                result: QueryResult | None = None) -> None:
        """``columns`` and ``masked``: what the policy relations read exposed (masks already applied);
        ``result_columns``: the columns the department got back; ``matched``: values matched per column;
        ``values`` and ``text_bytes``: how many values one result column packed (list elements) and the
        bytes of its text, so that a register taken as one row (``list(pid)``, ``string_agg``) counts as
        what it carries (sharing.security.alerts.result_measure; O(columns), not O(rows), on Arrow)."""
        from sharing.security.alerts import result_measure

        packed = result_measure(result) if result is not None else {}
        matched = {}
        for m in plan.matches if plan else ():
            matched[f"{m.dataset}.{m.column}"] = matched.get(f"{m.dataset}.{m.column}", 0) + 1
        lake_form = clip("sql_lake", plan.sql_lake, self.settings.limits.audit_sql_bytes) if plan and plan.sql_lake \
            else {}  # the replayable form, where sql_run read files (sharing.security.replay)
        self.audit.append(**record, **clip("sql_run", plan.sql_run if plan else None,
                                           self.settings.limits.audit_sql_bytes), **lake_form,
                          tables=list(plan.tables) if plan else [], columns=list(plan.columns) if plan else [],
                          masked=list(plan.masked) if plan else [], filtered=list(plan.filtered) if plan else [],
                          matched=matched, result_columns=result_columns, rows=rows, **packed,
                          duration_ms=round((time.perf_counter() - started) * 1000, 2), decision=decision,
                          reason=reason)


def _current_snapshot(con: duckdb.DuckDBPyConnection) -> int | None:
    """The DuckLake snapshot ``con`` reads (in a transaction: the transaction's own)."""
    try:
        return con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
    except duckdb.Error:  # recorded as unknown: the query itself is not failed for it
        return None


CATALOGUE_ROWS = 100_000
"""Rows a catalog answer may have (a city's columns in pg_attribute: thousands; a cross join: refused)."""


_CATALOGUE: dict[str, bool] = {}
"""Statement text -> whether it is a catalog question: a pure function of the text (a parse, 1 to 2 ms
of CPU), asked of every wire statement; clients send the same few statements again and again."""


def _is_catalogue(sql: str) -> bool:
    hit = _CATALOGUE.get(sql)
    if hit is None:
        from sharing.visible_catalog import is_catalog_query

        hit = is_catalog_query(sql)
        if len(_CATALOGUE) >= 4096:
            _CATALOGUE.clear()
        _CATALOGUE[sql] = hit
    return hit


def _bind(sql: str, params: list) -> str:
    from sharing.pgwire import bind

    try:
        return bind(sql, params)
    except ValueError as exc:
        raise QueryRefused(str(exc)) from exc


def _reap(engine: weakref.ref, closed: threading.Event) -> None:
    """An idle server holds no read transaction on the catalog: SQLite cannot checkpoint its whole write-ahead
    log past a reader (tests/test_availability.py), so pins unused for PIN_IDLE end. The thread holds the
    engine weakly: an engine dropped without close() is not kept alive by it."""
    while not closed.wait(PIN_IDLE / 2):
        live = engine()
        if live is None:
            return
        live._end_idle_pins()  # noqa: SLF001 - the engine's own thread
        del live


_SHM_FDS: dict[tuple[str, int, int], int] = {}
_SHM_LOCK = threading.Lock()


def _wal_index(shm: str) -> bytes | None:
    """The two copies of a SQLite WAL index's header (the first 96 bytes of ``<catalog>-shm``): its change
    counter, last frame, frame checksum and salts change with every commit, at the moment the commit
    becomes visible; the read marks after them (which readers move) are left out. None: not in WAL mode.

    Read through a descriptor opened once per file and never closed: closing any descriptor of a file drops
    every POSIX lock the process holds on it, and DuckDB's SQLite holds its WAL read locks on this one
    (lakehouse.guard keeps the catalog's own descriptor open for the same reason)."""
    try:
        st = os.stat(shm)
    except FileNotFoundError:
        return None
    key = (shm, st.st_dev, st.st_ino)
    fd = _SHM_FDS.get(key)
    if fd is None:
        with _SHM_LOCK:
            fd = _SHM_FDS.get(key)
            if fd is None:
                try:
                    fd = _SHM_FDS[key] = os.open(shm, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except FileNotFoundError:
                    return None
    return os.pread(fd, 96, 0)


PIN_SECONDS = 1.0
"""At most this long a slot reads one pinned snapshot, even while no commit is seen (belt and braces)."""
PIN_IDLE = 0.2
"""A pin unused this long ends: an idle server holds no read transaction on the catalog."""


class _Pin:
    """A running slot's open read transaction on the lake. DuckLake reads the catalog's metadata (snapshot,
    schema, data files, statistics) from SQLite at the start of every transaction: in autocommit that is
    every query, about 4 ms of CPU for a point lookup that itself costs under 1 ms. Within one transaction
    DuckLake keeps what it read, so consecutive queries of a slot share it while the catalog's stamp (it
    changes on every commit) stays the same. ``lock``: held by the query using the pin, or by the reaper
    ending it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamp: object = None  # the catalog's stamp when the transaction began (None: no transaction)
        self.snapshot: int | None = None  # the transaction's DuckLake snapshot, once a query asked for it
        self.since = 0.0
        self.used = 0.0

    @staticmethod
    def begin(con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("BEGIN TRANSACTION")
        except duckdb.TransactionException:  # one left open (its ROLLBACK was interrupted): end it first
            con.execute("ROLLBACK")
            con.execute("BEGIN TRANSACTION")

    def end(self, con: duckdb.DuckDBPyConnection) -> None:
        """Roll the transaction back (it only read); one a failed query aborted, or none, is fine too."""
        if self.stamp is not None:
            self.stamp = self.snapshot = None
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")


class CursorLake:
    """A Lake whose queries go through one cursor (for helpers that take a Lake)."""

    def __init__(self, lake: Lake, cursor: duckdb.DuckDBPyConnection):
        self.settings, self.con, self._lake = lake.settings, cursor, lake

    def tables(self, schema: str) -> list[str]:
        return list_tables(self.con, schema)
