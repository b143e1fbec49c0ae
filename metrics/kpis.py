"""The sharing KPIs of shared/KPIS.md, computed from the registry and the lake alone.

Every figure comes with its numerator, denominator and target, per department and city-wide, so a
department can see what holds it back; :func:`compute` also returns the per-dataset reasons
(``datasets``) and the duplicate-collection pairs (``duplicate_pairs``) behind the figures.

"As of" is a point in time (or a lake snapshot, resolved to its commit time): every input is a
ledger with timestamps (loads, quality runs, consistency runs, access requests and their decisions,
audit events), so the figures as of T read only what had happened by T. The platform's own KPI
tables (``connector: platform``) are not department data and count nowhere.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass

import pyarrow as pa

from lakehouse.lake import CATALOG, OPS, Lake
from metrics.calendar import WorkCalendar
from schemas.model import Dataset, Registry

TARGETS = {"sharing_rate": 0.90, "duplicate_collection_rate": 0.10, "interconnection_rate": 0.80,
           "request_fulfilment_rate": 1.0}
KPI_NAMES = ("sharing_rate", "usage_rate", "reuse_factor", "duplicate_collection_rate", "request_fulfilment_rate",
             "interconnection_rate", "quality_pass_rate", "timeliness", "consistency_rate")
LOWER_IS_BETTER = {"duplicate_collection_rate"}
CITY = "*"


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

    def previous(self) -> Period:
        return Period.month(f"{self.start - dt.timedelta(days=1):%Y-%m}")


class _Tally:
    """numerator / denominator per (department or CITY, KPI)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))

    def add(self, dept: str, kpi: str, num: float, den: float) -> None:
        for key in (dept, CITY):
            self.counts[key][kpi][0] += num
            self.counts[key][kpi][1] += den

    def figures(self, key: str) -> dict[str, dict]:
        return {kpi: asdict(_fig(kpi, *self.counts[key].get(kpi, [0.0, 0.0]))) for kpi in KPI_NAMES}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def snapshot_time(lake: Lake, snapshot: int) -> dt.datetime:
    """The commit time of a lake snapshot (``onesource metrics --as-of 42``)."""
    row = lake.con.execute(f"SELECT snapshot_time FROM ducklake_snapshots('{CATALOG}') WHERE snapshot_id = ?",
                           [snapshot]).fetchone()
    if row is None:
        from onesource.errors import ConfigurationError

        raise ConfigurationError(f"the lake has no snapshot {snapshot}; `onesource sql \"SELECT * FROM "
                                 f"ducklake_snapshots('{CATALOG}')\"` lists them")
    return row[0].astimezone(dt.UTC).replace(tzinfo=None)


def compute(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime | None = None,
            calendar: WorkCalendar | None = None) -> dict:
    """``{"period", "as_of", "city": {KPI: Figure}, "departments": [{"code", "name", KPI: Figure}],
    "datasets": [...], "duplicate_pairs": [...]}``.

    ``as_of`` (default: the period's end, or now if sooner) decides what was published and fresh."""
    as_of = as_of or min(period.end, _now())
    datasets = registry.source_datasets
    tally = _Tally()
    last = _last_loads(lake, as_of)
    consumers = _consumers(lake, registry, period, as_of)
    statuses = _sharing(tally, datasets, last, as_of, consumers)
    pairs = _duplicates(tally, registry)
    _interconnection(tally, registry, last, as_of)
    _timeliness(tally, lake, datasets, period, as_of)
    _quality(tally, lake, period, as_of)
    _consistency(tally, lake, as_of)
    approvals = _requests(tally, lake, period, as_of)
    _usage(tally, registry, consumers)
    return {
        "period": period.label,
        "as_of": as_of.isoformat(sep=" ", timespec="seconds"),
        "city": tally.figures(CITY),
        "departments": [{"code": d.code, "name": d.name, **tally.figures(d.code)} for d in registry.departments],
        # beside the request fulfilment rate: approved / decided requests
        "approval_rate": {"city": asdict(_fig("approval_rate", *approvals[CITY])),
                          **{d.code: asdict(_fig("approval_rate", *approvals[d.code]))
                             for d in registry.departments if d.code in approvals}},
        "datasets": statuses,
        "duplicate_pairs": pairs,
    }


def _last_loads(lake: Lake, as_of: dt.datetime) -> dict[str, tuple[str, dt.datetime]]:
    """dataset -> (status, finished_at) of its last load that delivered data, as of ``as_of``."""
    rows = lake.con.execute(
        f"""SELECT dataset, status, finished_at FROM {CATALOG}.{OPS}.loads
            WHERE finished_at <= ? AND sha256 IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC) = 1""", [as_of]).fetchall()
    return {d: (s, at) for d, s, at in rows}


def _sharing(tally: _Tally, datasets: tuple[Dataset, ...], last: dict, as_of: dt.datetime,
             consumers: dict[str, set[str]]) -> list[dict]:
    """Shared = share type is not not_shared, its last load published, and within its update cycle."""
    out = []
    for ds in datasets:
        status, at = last.get(ds.name, (None, None))
        if ds.share_type == "not_shared":
            reason = f"not shared ({ds.legal_basis or 'no legal basis stated'})"
        elif status is None:
            reason = "never loaded: no extract has arrived"
        elif status == "quarantined":
            reason = "last load failed its quality checks (quarantined)"
        elif status != "published":
            reason = f"last load {status}"
        elif as_of - at > ds.freshness:
            reason = f"overdue: last load {at:%Y-%m-%d %H:%M}, update cycle {ds.update_cycle}"
        else:
            reason = None
        shared = reason is None
        if shared and not consumers.get(ds.name):
            note = "shared, but no other department used it this period"
        else:
            note = reason
        tally.add(ds.owner, "sharing_rate", int(shared), 1)
        out.append({"dataset": ds.name, "title": ds.title, "owner": ds.owner, "share_type": ds.share_type,
                    "update_cycle": ds.update_cycle, "counted_shared": shared, "reason": note,
                    "last_load_status": status, "last_load_at": at, "consumers": len(consumers.get(ds.name, ()))})
    return out


def _duplicates(tally: _Tally, registry: Registry) -> list[dict]:
    """(department, element) pairs collected by a department that is not the element's authority."""
    authority = {e.name: registry.dataset(e.authority) for e in registry.elements}
    collected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ds in registry.source_datasets:
        for col in ds.columns:
            if col.element and not col.from_authority:  # a referenced element is consumed, not collected
                collected[(ds.owner, col.element)].append(ds.name)
    out = []
    for (dept, element), names in sorted(collected.items()):
        auth = authority.get(element)
        duplicate = auth is None or auth.owner != dept
        tally.add(dept, "duplicate_collection_rate", int(duplicate), 1)
        out.append({"department": dept, "element": element, "element_name": registry.element(element).name_zh,
                    "authority_department": auth.owner if auth else None,
                    "authority_dataset": auth.name if auth else None, "datasets": ", ".join(sorted(names)),
                    "duplicate": duplicate})
    return out


def _interconnection(tally: _Tally, registry: Registry, last: dict, as_of: dt.datetime) -> None:
    """Registered systems with a successful load within its cycle; systems that feed only platform
    tables (the bureau's own OneSource) do not count."""
    by_system: dict[tuple[str, str], list[Dataset]] = defaultdict(list)
    platform_only: set[tuple[str, str]] = set()
    for ds in registry.datasets:
        if ds.platform:
            platform_only.add((ds.owner, ds.system))
        else:
            by_system[(ds.owner, ds.system)].append(ds)
    for dept in registry.departments:
        for system in dept.systems:
            key = (dept.code, system.code)
            if key in platform_only and key not in by_system:
                continue
            ok = any(last.get(ds.name, (None,))[0] == "published" and as_of - last[ds.name][1] <= ds.freshness
                     for ds in by_system.get(key, []))
            tally.add(dept.code, "interconnection_rate", int(ok), 1)


def slot_starts(cycle: str, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """The update-cycle windows that begin in [start, end): days, ISO weeks, months, quarters, years."""
    def step(t: dt.datetime) -> dt.datetime:
        if cycle == "hourly":
            return t + dt.timedelta(hours=1)
        if cycle == "daily":
            return t + dt.timedelta(days=1)
        if cycle == "weekly":
            return t + dt.timedelta(weeks=1)
        months = {"monthly": 1, "quarterly": 3, "yearly": 12}[cycle]
        m = t.month - 1 + months
        return t.replace(year=t.year + m // 12, month=m % 12 + 1, day=1)

    t = start.replace(minute=0, second=0, microsecond=0)
    if cycle != "hourly":
        t = t.replace(hour=0)
    if cycle == "weekly":
        t -= dt.timedelta(days=t.weekday())
    elif cycle in ("monthly", "quarterly", "yearly"):
        t = t.replace(day=1)
        if cycle == "quarterly":
            t = t.replace(month=(t.month - 1) // 3 * 3 + 1)
        if cycle == "yearly":
            t = t.replace(month=1)
    out = []
    while t < end:
        nxt = step(t)
        if t >= start:
            out.append((t, nxt))
        t = nxt
    return out


def _timeliness(tally: _Tally, lake: Lake, datasets: tuple[Dataset, ...], period: Period, as_of: dt.datetime) -> None:
    """Cycle windows of the period that closed by ``as_of`` / those in which an extract arrived."""
    arrivals: dict[str, list[dt.datetime]] = defaultdict(list)
    for name, at in lake.con.execute(
            f"""SELECT dataset, finished_at FROM {CATALOG}.{OPS}.loads
                WHERE sha256 IS NOT NULL AND finished_at >= ? AND finished_at < ? AND finished_at <= ?""",
            [period.start, period.end, as_of]).fetchall():
        arrivals[name].append(at)
    for ds in datasets:
        times = sorted(arrivals.get(ds.name, ()))
        for begin, end in slot_starts(ds.update_cycle, period.start, period.end):
            if end > as_of or end > period.end:
                continue  # a window still open is not late yet
            tally.add(ds.owner, "timeliness", int(any(begin <= t < end for t in times)), 1)


def _quality(tally: _Tally, lake: Lake, period: Period, as_of: dt.datetime) -> None:
    for owner, passed, n in lake.con.execute(
            f"""SELECT owner, passed, count(*) FROM {CATALOG}.{OPS}.quality_runs
                WHERE run_at >= ? AND run_at < ? AND run_at <= ? GROUP BY ALL""",
            [period.start, period.end, as_of]).fetchall():
        tally.add(owner, "quality_pass_rate", n if passed else 0, n)


def _consistency(tally: _Tally, lake: Lake, as_of: dt.datetime) -> None:
    for owner, compared, equal in lake.con.execute(
            f"""SELECT owner, compared, equal FROM {CATALOG}.{OPS}.consistency_results
                WHERE run_id = (SELECT max(run_id) FROM {CATALOG}.{OPS}.consistency_results WHERE checked_at <= ?)""",
            [as_of]).fetchall():
        tally.add(owner, "consistency_rate", equal, compared)


def _requests(tally: _Tally, lake: Lake, period: Period, as_of: dt.datetime) -> dict[str, tuple[int, int]]:
    """Requests due in the period (and due by ``as_of``), charged to the owner who must decide: decided
    within the SLA counts; a refusal without a reason does not count as decided. Returns the approval
    rate's (approved, decided) per department and city-wide."""
    approvals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for owner, status, due, decided_at, reason in lake.con.execute(
            f"""SELECT owner, status, due_at, decided_at, reason FROM {CATALOG}.{OPS}.access_requests
                WHERE due_at >= ? AND due_at < ? AND due_at <= ? AND requested_at <= ?""",
            [period.start, period.end, as_of, as_of]).fetchall():
        decided = decided_at is not None and decided_at <= as_of and status != "pending"
        if status == "refused" and not (reason or "").strip():
            decided = False
        tally.add(owner, "request_fulfilment_rate", int(decided and decided_at <= due), 1)
        if decided:
            for key in (owner, CITY):
                approvals[key][0] += int(status in ("approved", "revoked"))
                approvals[key][1] += 1
    approvals[CITY]  # noqa: B018 - present even when nothing was decided
    return {k: (a, d) for k, (a, d) in approvals.items()}


def _consumers(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime) -> dict[str, set[str]]:
    """dataset -> departments other than its owner that read it in the period (allowed queries)."""
    owners = pa.table({"dataset": [d.name for d in registry.source_datasets],
                       "owner": [d.owner for d in registry.source_datasets]})
    lake.con.register("kpi_dataset_owners", owners)
    try:
        rows = lake.con.execute(
            f"""SELECT DISTINCT t.dataset, t.department FROM (
                    SELECT department, unnest(tables) AS dataset FROM {CATALOG}.{OPS}.audit_events
                    WHERE decision = 'allowed' AND event_at >= ? AND event_at < ? AND event_at <= ?) t
                JOIN kpi_dataset_owners o ON o.dataset = t.dataset AND o.owner <> t.department""",
            [period.start, period.end, as_of]).fetchall()
    finally:
        lake.con.unregister("kpi_dataset_owners")
    out: dict[str, set[str]] = defaultdict(set)
    for name, dept in rows:
        out[name].add(dept)
    return out


def _usage(tally: _Tally, registry: Registry, consumers: dict[str, set[str]]) -> None:
    for ds in registry.source_datasets:
        if ds.share_type != "not_shared":
            tally.add(ds.owner, "usage_rate", int(bool(consumers.get(ds.name))), 1)
    authoritative = {e.authority for e in registry.elements}
    for ds in registry.source_datasets:
        if ds.name in authoritative:
            tally.add(ds.owner, "reuse_factor", len(consumers.get(ds.name, ())), 1)
