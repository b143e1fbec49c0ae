"""The governed engine every endpoint uses: authorise, rewrite, run locked down, audit.

>>> engine = GovernedEngine(settings, registry)
>>> result = engine.query("tax", "SELECT count(*) FROM shared.amr_enterprise_register", purpose="稽查")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb

from lakehouse.lake import Lake
from onesource.config import Settings
from schemas.model import Registry
from sharing.audit import AuditLog
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import active_grants, visible
from sharing.policy import Plan, plan
from sharing.sql import QueryResult, lock_down


@dataclass(frozen=True)
class Limits:
    rows: int = 10_000
    seconds: float = 30.0


class GovernedEngine:
    def __init__(self, settings: Settings, registry: Registry, limits: Limits | None = None):
        self.settings = settings
        self.registry = registry
        self.limits = limits or Limits()
        self.audit = AuditLog(settings.home / "audit")

    def query(self, department: str, sql: str, *, user: str | None = None, purpose: str | None = None,
              dialect: str = "postgres") -> QueryResult:
        started = time.perf_counter()
        record = {"department": department, "user": user or department, "purpose": purpose, "sql_sent": sql,
                  "dialect": dialect}
        try:
            with Lake(self.settings.lake, read_only=True) as lake:
                access = visible(self.registry, active_grants(lake, department), department)
                planned = plan(sql, access, self.registry, department, dialect=dialect, row_limit=self.limits.rows)
                lock_down(lake.con, self.settings.lake.data_path)
                result = self._run(lake.con, planned)
        except QueryRefused as exc:
            self._record(record, started, decision="refused", reason=str(exc))
            raise
        except QueryFailed as exc:
            self._record(record, started, decision="failed", reason=str(exc))
            raise
        self._record(record, started, decision="allowed", reason=None, plan=planned, rows=len(result.rows))
        return result

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
                rows: int | None = None) -> None:
        self.audit.append(**record, sql_run=plan.sql_run if plan else None,
                          tables=list(plan.tables) if plan else [], columns=list(plan.columns) if plan else [],
                          masked=list(plan.masked) if plan else [], rows=rows,
                          duration_ms=round((time.perf_counter() - started) * 1000, 2), decision=decision,
                          reason=reason)
