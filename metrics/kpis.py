"""The sharing KPIs of shared/KPIS.md, computed from the registry and the lake alone.

Every figure comes with its numerator, denominator and target, per department and city-wide, so a
department can see what holds it back. This module computes the figures whose inputs exist today:
sharing rate, usage rate, reuse factor, duplicate collection rate, interconnection rate, quality
pass rate and consistency rate. Request fulfilment waits for access requests (issue 6), and
timeliness for the expected-loads calendar (issue 7); both report no denominator until then rather
than a made-up value.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass

from lakehouse.lake import CATALOG, OPS, SHARED, Lake
from schemas.model import Registry
from sharing.audit import AuditLog

TARGETS = {"sharing_rate": 0.90, "duplicate_collection_rate": 0.10, "interconnection_rate": 0.80,
           "request_fulfilment_rate": 1.0}
KPI_NAMES = ("sharing_rate", "usage_rate", "reuse_factor", "duplicate_collection_rate", "request_fulfilment_rate",
             "interconnection_rate", "quality_pass_rate", "timeliness", "consistency_rate")


@dataclass(frozen=True)
class Figure:
    value: float | None
    numerator: float
    denominator: float
    target: float | None = None


def _fig(name: str, num: float, den: float) -> Figure:
    return Figure(round(num / den, 4) if den else None, num, den, TARGETS.get(name))


@dataclass(frozen=True)
class Period:
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def month(cls, text: str | None = None, today: dt.date | None = None) -> Period:
        """``YYYY-MM``, default the current month."""
        first = dt.date.fromisoformat(f"{text}-01") if text else (today or dt.date.today()).replace(day=1)
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return cls(dt.datetime.combine(first, dt.time()), dt.datetime.combine(nxt, dt.time()))

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"


def _last_loads(lake: Lake, as_of: dt.datetime) -> dict[str, tuple[str, dt.datetime]]:
    rows = lake.con.execute(
        f"""SELECT dataset, status, finished_at FROM {CATALOG}.{OPS}.loads
            WHERE finished_at <= ? AND sha256 IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC) = 1""", [as_of]).fetchall()
    return {d: (s, at) for d, s, at in rows}


def compute(lake: Lake, registry: Registry, period: Period, audit: AuditLog | None = None,
            as_of: dt.datetime | None = None) -> dict:
    """``{"period", "city": {KPI: Figure}, "departments": [{"code", "name", KPI: Figure}]}``.

    ``as_of`` (default: the period's end, or now if sooner) decides what was published and fresh."""
    as_of = as_of or min(period.end, dt.datetime.now(dt.UTC).replace(tzinfo=None))
    published = set(lake.tables(SHARED))
    last = _last_loads(lake, as_of)
    counts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))

    def add(dept: str, kpi: str, num: float, den: float) -> None:
        for key in (dept, "*"):
            counts[key][kpi][0] += num
            counts[key][kpi][1] += den

    # sharing rate: shared, published, last load passed, fresh / every catalogued dataset
    for ds in registry.datasets:
        status, at = last.get(ds.name, (None, None))
        shared = (ds.share_type != "not_shared" and ds.name in published and status == "published"
                  and at is not None and as_of - at <= ds.freshness)
        add(ds.owner, "sharing_rate", int(shared), 1)
    # duplicate collection: (department, element) pairs collected by a non-authority / all pairs
    authority_owner = {e.name: registry.dataset(e.authority).owner for e in registry.elements}
    pairs = {(ds.owner, c.element) for ds in registry.datasets for c in ds.columns if c.element}
    for dept, element in pairs:
        add(dept, "duplicate_collection_rate", int(authority_owner.get(element) != dept), 1)
    # interconnection: systems with a successful load within its dataset's cycle / registered systems
    by_system = defaultdict(list)
    for ds in registry.datasets:
        by_system[(ds.owner, ds.system)].append(ds)
    for dept in registry.departments:
        for system in dept.systems:
            ok = any(last.get(ds.name, (None, None))[0] == "published" and as_of - last[ds.name][1] <= ds.freshness
                     for ds in by_system.get((dept.code, system.code), []))
            add(dept.code, "interconnection_rate", int(ok), 1)
    # quality pass rate: validated loads of the period that passed every blocking expectation
    for owner, passed in lake.con.execute(
            f"SELECT owner, passed FROM {CATALOG}.{OPS}.quality_runs WHERE run_at >= ? AND run_at < ?",
            [period.start, period.end]).fetchall():
        add(owner, "quality_pass_rate", int(bool(passed)), 1)
    # consistency: the last run's copies equal to the authority / compared
    for owner, compared, equal in lake.con.execute(
            f"""SELECT owner, compared, equal FROM {CATALOG}.{OPS}.consistency_results
                WHERE run_id = (SELECT max(run_id) FROM {CATALOG}.{OPS}.consistency_results WHERE checked_at <= ?)""",
            [as_of]).fetchall():
        add(owner, "consistency_rate", equal, compared)
    # usage and reuse: allowed queries in the period by departments other than the owner (audit log)
    consumers: dict[str, set[str]] = defaultdict(set)
    for entry in (audit.entries() if audit else []):
        at = dt.datetime.fromisoformat(entry["at"]).replace(tzinfo=None)
        if entry.get("decision") != "allowed" or not period.start <= at < period.end:
            continue
        for name in entry.get("tables") or []:
            try:
                owner = registry.dataset(name).owner
            except KeyError:
                continue
            if entry["department"] != owner:
                consumers[name].add(entry["department"])
    shared_sets = [ds for ds in registry.datasets if ds.share_type != "not_shared"]
    for ds in shared_sets:
        add(ds.owner, "usage_rate", int(bool(consumers.get(ds.name))), 1)
    authoritative = {e.authority for e in registry.elements}
    for ds in registry.datasets:
        if ds.name in authoritative:
            add(ds.owner, "reuse_factor", len(consumers.get(ds.name, ())), 1)

    def figures(key: str) -> dict[str, dict]:
        out = {}
        for kpi in KPI_NAMES:
            num, den = counts[key].get(kpi, [0.0, 0.0])
            out[kpi] = asdict(_fig(kpi, num, den))
        return out

    return {"period": period.label, "as_of": as_of.isoformat(sep=" ", timespec="seconds"), "city": figures("*"),
            "departments": [{"code": d.code, "name": d.name, **figures(d.code)} for d in registry.departments]}
