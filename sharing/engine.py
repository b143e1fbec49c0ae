"""The governed engine every endpoint uses: authorise, rewrite, run locked down, audit.

>>> engine = GovernedEngine(settings, registry)
>>> result = engine.query("tax", "SELECT count(*) FROM shared.amr_enterprise_register", purpose="稽查")
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
from dataclasses import dataclass

import duckdb

from lakehouse.lake import Lake, list_tables
from onesource.config import Settings
from schemas.model import Registry
from sharing.audit import AuditLog
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import active_grants, visible
from sharing.match import MatchLedger
from sharing.policy import Plan, plan
from sharing.sql import QueryResult, lock_down

_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found|Values list "[^"]*" does not have a column named "([^"]+)"')


@dataclass(frozen=True)
class Limits:
    rows: int = 10_000
    seconds: float = 30.0


class GovernedEngine:
    """With ``persistent=True`` (the servers) one read-only, locked-down lake connection is opened once and
    each query runs on its own cursor; otherwise (the CLI) each query opens and closes its own."""

    def __init__(self, settings: Settings, registry: Registry, limits: Limits | None = None, *,
                 persistent: bool = False, as_of: int | dt.datetime | None = None):
        """``as_of`` (CLI only): read the lake as of a snapshot id or a time; today's grants still decide."""
        if persistent and as_of is not None:
            raise ValueError("time travel is per query session (the CLI), not for the servers")
        self.as_of = as_of
        self.settings = settings
        self.registry = registry
        self.limits = limits or Limits()
        self.audit = AuditLog.of(settings, group_commit=0.2 if persistent else None)
        self._lake: Lake | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[object, float, dict]] = {}
        self._plans: dict[tuple, tuple[dict, Plan]] = {}
        self._sandboxes: dict[str, tuple[dict, duckdb.DuckDBPyConnection]] = {}
        self._matches: MatchLedger | None = None
        if persistent:
            self._lake = Lake(settings.lake, read_only=True)
            lock_down(self._lake.con, settings.lake.data_path)

    def _access(self, cursor: duckdb.DuckDBPyConnection, department: str):
        """What ``department`` may read, cached per lake snapshot: a grant, revocation or expiry changes
        the answer on the very next query (a grant or revocation is a new snapshot; expiry is timed)."""
        snapshot = self._catalog_stamp(cursor)
        now = time.time()
        hit = self._cache.get(department)
        if hit and hit[0] == snapshot and now < hit[1]:
            return hit[2]
        grants = active_grants(CursorLake(self._lake, cursor), department)
        expiry = min([g.expires_at.replace(tzinfo=dt.UTC).timestamp() for g in grants if g.expires_at] + [now + 60])
        access = visible(self.registry, grants, department)
        self._cache[department] = (snapshot, expiry, access)
        return access

    @property
    def matches(self) -> MatchLedger:
        if self._matches is None:
            self._matches = MatchLedger(self.settings.home / "sharing" / "matches.sqlite")
        return self._matches

    def _plan(self, sql: str, access: dict, department: str, dialect: str) -> Plan:
        """Plans are cached per (access, SQL text): BI tools and dashboards send the same queries again and
        again. The access object is replaced whenever grants or the catalog change, so a stale plan
        is never reused; refusals are not cached (each is planned, refused and audited anew)."""
        key = (id(access), department, dialect, sql)
        hit = self._plans.get(key)
        if hit is not None and hit[0] is access:
            return hit[1]
        planned = plan(sql, access, self.registry, department, dialect=dialect, row_limit=self.limits.rows)
        if len(self._plans) > 1024:
            self._plans.clear()
        self._plans[key] = (access, planned)
        return planned

    def _catalog_stamp(self, cursor: duckdb.DuckDBPyConnection):
        """Something that changes whenever the lake commits. A SQLite catalog is one file whose stat
        changes on every commit (microseconds); otherwise ask DuckLake (a catalog query, ~3 ms)."""
        catalog = self.settings.lake.catalog
        if catalog.startswith("sqlite:"):
            path = catalog.removeprefix("sqlite:")
            stamps = []
            for suffix in ("", "-wal", "-journal"):
                try:
                    st = os.stat(path + suffix)
                    stamps.append((st.st_mtime_ns, st.st_size))
                except FileNotFoundError:
                    stamps.append(None)
            return tuple(stamps)
        return cursor.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]

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

    def close(self) -> None:
        self.audit.sync()
        if self._lake is not None:
            self._lake.close()

    def catalog(self, department: str, sql: str, params: list | None = None, *, user: str | None = None) -> QueryResult:
        """A catalogue question (pg_catalog, information_schema, SHOW, version()), answered from the
        department's sandbox: only what it may read, and no rows (sharing.catalog)."""
        from sharing.catalog import answer, sandbox

        started = time.perf_counter()
        with self._lock:
            cursor = self._lake.con.cursor() if self._lake is not None else None
        try:
            access = self._access(cursor, department) if cursor is not None else None
        finally:
            if cursor is not None:
                cursor.close()
        if access is None:
            with Lake(self.settings.lake, read_only=True) as lake:
                access = visible(self.registry, active_grants(lake, department), department)
        hit = self._sandboxes.get(department)
        if hit is None or hit[0] is not access:
            hit = (access, sandbox(access, self.registry))
            self._sandboxes[department] = hit
        record = {"department": department, "user": user or department, "purpose": "catalogue", "sql_sent": sql,
                  "dialect": "postgres"}
        try:
            result = answer(hit[1], sql, params)
        except duckdb.Error as exc:
            self._record(record, started, decision="failed", reason=str(exc).split("\n")[0])
            raise QueryFailed(str(exc).split("\n")[0]) from exc
        self._record(record, started, decision="catalogue", reason=None, rows=len(result.rows))
        return result

    def query(self, department: str, sql: str, *, user: str | None = None, purpose: str | None = None,
              dialect: str = "postgres") -> QueryResult:
        """Plan, charge any match quota, run, and audit: every query that reaches the planner is audited,
        whether it is allowed, refused, fails in DuckDB, or meets a planner error."""
        started = time.perf_counter()
        record = {"department": department, "user": user or department, "purpose": purpose, "sql_sent": sql,
                  "dialect": dialect}
        planned: Plan | None = None
        access: dict = {}
        try:
            if self._lake is not None:
                with self._lock:  # the lake's catalog attach is shared; cursors give each query its own state
                    cursor = self._lake.con.cursor()
                try:
                    access = self._access(cursor, department)
                    planned = self._plan(sql, access, department, dialect)
                    self._charge(department, access, planned)
                    result = self._run(cursor, planned)
                finally:
                    cursor.close()
            else:
                with Lake(self.settings.lake, read_only=True) as lake:
                    access = visible(self.registry, active_grants(lake, department), department)
                    planned = self._plan(sql, access, department, dialect)
                    self._charge(department, access, planned)
                    if self.as_of is None:
                        lock_down(lake.con, self.settings.lake.data_path)
                        result = self._run(lake.con, planned)
                if self.as_of is not None:
                    record["as_of"] = str(self.as_of)
                    with Lake(self.settings.lake, as_of=self.as_of) as then:
                        lock_down(then.con, self.settings.lake.data_path)
                        result = self._run(then.con, planned)
        except QueryRefused as exc:
            self._record(record, started, decision="refused", reason=str(exc), plan=planned)
            raise
        except QueryFailed as exc:
            refusal = self._ungranted(str(exc), planned, department, access)
            if refusal is not None:
                self._record(record, started, decision="refused", reason=str(refusal), plan=planned)
                raise refusal from exc
            self._record(record, started, decision="failed", reason=str(exc), plan=planned)
            raise
        except Exception as exc:  # a planner or engine defect: still audited, never a traceback to the client
            reason = f"internal error while planning or running the query ({type(exc).__name__}); it was logged"
            self._record(record, started, decision="failed", reason=f"{reason}: {exc}"[:2000], plan=planned)
            raise QueryFailed(reason) from exc
        self._record(record, started, decision="allowed", reason=None, plan=planned, rows=len(result.rows),
                     result_columns=result.columns)
        return result

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

    def _charge(self, department: str, access: dict, planned: Plan) -> None:
        if planned.matches:
            self.matches.spend(department, access, planned.matches)

    def _run(self, con: duckdb.DuckDBPyConnection, planned: Plan) -> QueryResult:
        timer = threading.Timer(self.limits.seconds, con.interrupt)
        timer.start()
        try:
            cur = con.execute(planned.sql_run)
            rows = cur.fetchall()
        except duckdb.InterruptException as exc:
            raise QueryFailed(f"the query ran longer than {self.limits.seconds:g} s and was stopped") from exc
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).split("\n")[0]) from exc
        finally:
            timer.cancel()
        return QueryResult([d[0] for d in cur.description], rows)

    def _record(self, record: dict, started: float, *, decision: str, reason: str | None, plan: Plan | None = None,
                rows: int | None = None, result_columns: list[str] | None = None) -> None:
        """``columns`` and ``masked``: what the policy relations read exposed (masks already applied);
        ``result_columns``: the columns the department got back; ``matched``: values matched per column."""
        matched = {}
        for m in plan.matches if plan else ():
            matched[f"{m.dataset}.{m.column}"] = matched.get(f"{m.dataset}.{m.column}", 0) + 1
        self.audit.append(**record, sql_run=plan.sql_run if plan else None,
                          tables=list(plan.tables) if plan else [], columns=list(plan.columns) if plan else [],
                          masked=list(plan.masked) if plan else [], filtered=list(plan.filtered) if plan else [],
                          matched=matched, result_columns=result_columns, rows=rows,
                          duration_ms=round((time.perf_counter() - started) * 1000, 2), decision=decision,
                          reason=reason)


class CursorLake:
    """A Lake whose queries go through one cursor (for helpers that take a Lake)."""

    def __init__(self, lake: Lake, cursor: duckdb.DuckDBPyConnection):
        self.settings, self.con, self._lake = lake.settings, cursor, lake

    def tables(self, schema: str) -> list[str]:
        return list_tables(self.con, schema)
