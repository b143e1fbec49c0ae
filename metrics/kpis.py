"""The sharing KPIs of docs/kpi-definitions.md (docs/kpis.md has each definition, its reading and a worked example).

Every figure is the sum of its **members**: one row per dataset, system, (department, element) pair,
access request or copy, with what it adds to the numerator and to the denominator and why. The
figures per department and city-wide, the dashboard's "datasets behind this figure" and the published
``kpi_members`` table are all that one list, so a department can see exactly which datasets hold it
back and a figure can be checked by hand.

"As of" is a point in time (or a lake snapshot, resolved to its commit time): every input is a ledger
with timestamps (loads, registry versions, quality runs, consistency runs, access requests and their
decisions, audit events), so the figures as of T read only what had happened by T. Ledger times are
naive UTC; every day boundary (the period, update-cycle windows, working days, deadlines) is the
city's (``Period.tz``, core.citytime). The platform's own KPI tables (``connector: platform``) are
not department data and count nowhere.

"Shared" is decided by one function, :func:`sharing_reason`, which ``onesource status``, the demo's
summary and the sharing rate all call (through :func:`sharing_statuses`).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from core.calendar import WorkCalendar
from core.citytime import DEFAULT_CITY_TIMEZONE, deadline_day, midnight, to_local, to_utc, today
from lakehouse.lake import CATALOG, Lake
from lakehouse.ledger import PUBLISHED, QUARANTINED, last_delivered_loads, ref
from schemas.model import UPDATE_CYCLES, Column, Dataset, Registry, authority_reference

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
class Member:
    """What one item adds to one KPI of one department: ``numerator`` out of ``denominator``."""

    kpi: str
    department: str
    item: str
    """A dataset, a system, ``department/element``, a request id, or ``dataset.column`` (a copy)."""
    numerator: float
    denominator: float
    note: str | None = None
    """Why: the reason a dataset is not shared, the windows it missed, the consumers, ..."""


@dataclass(frozen=True)
class Period:
    """[start, end) as naive UTC instants: the city's midnights that begin and end the period."""

    start: dt.datetime
    end: dt.datetime
    tz: str = DEFAULT_CITY_TIMEZONE

    @classmethod
    def month(cls, text: str | None = None, today: dt.date | None = None,
              tz: str = DEFAULT_CITY_TIMEZONE) -> Period:
        """``YYYY-MM``, default the city's current month (``today``: a day of the city's calendar)."""
        first = dt.date.fromisoformat(f"{text}-01") if text else (today or _city_today(tz)).replace(day=1)
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return cls(midnight(first, tz), midnight(nxt, tz), tz)

    @property
    def label(self) -> str:
        return f"{to_local(self.start, self.tz):%Y-%m}"

    def previous(self) -> Period:
        return Period.month(f"{to_local(self.start, self.tz) - dt.timedelta(days=1):%Y-%m}", tz=self.tz)


def _city_today(tz: str) -> dt.date:
    return today(tz)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def snapshot_time(lake: Lake, snapshot: int) -> dt.datetime:
    """The commit time of a lake snapshot (``onesource metrics --as-of 42``)."""
    row = lake.con.execute(f"SELECT snapshot_time FROM ducklake_snapshots('{CATALOG}') WHERE snapshot_id = ?",
                           [snapshot]).fetchone()
    if row is None:
        from core.errors import ConfigurationError

        raise ConfigurationError(f"the lake has no snapshot {snapshot}; `onesource sql \"SELECT * FROM "
                                 f"ducklake_snapshots('{CATALOG}')\"` lists them")
    return row[0].astimezone(dt.UTC).replace(tzinfo=None)


# -- the ledgers, as of a point in time ---------------------------------------------------------

@dataclass
class Ledger:
    """What the loads ledger and the registry versions say about each dataset as of ``as_of``."""

    as_of: dt.datetime
    last: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    """dataset -> (status, finished_at) of its last load that delivered data (an extract arrived)."""
    last_published: dict[str, dt.datetime] = field(default_factory=dict)
    registered: dict[str, dt.datetime] = field(default_factory=dict)
    """dataset -> when it was registered: its first registry version or its first load, the earlier."""


def read_ledger(lake: Lake, as_of: dt.datetime) -> Ledger:
    ledger = Ledger(as_of)
    ledger.last = {name: (load.status, load.finished_at) for name, load in last_delivered_loads(lake.con, as_of).items()
                   if load.finished_at is not None}
    ledger.last_published = dict(lake.con.execute(
        f"""SELECT dataset, max(finished_at) FROM {ref('loads')}
            WHERE finished_at <= ? AND status = '{PUBLISHED}' GROUP BY dataset""", [as_of]).fetchall())
    # a load proves the dataset was registered by then, even when its version row came later
    ledger.registered = dict(lake.con.execute(
        f"""SELECT dataset, min(seen_at) FROM (
                SELECT subject AS dataset, registered_at AS seen_at FROM {ref('schema_versions')}
                WHERE kind = 'dataset'
                UNION ALL
                SELECT dataset, coalesce(started_at, finished_at) FROM {ref('loads')})
            WHERE seen_at <= ? GROUP BY dataset""", [as_of]).fetchall())
    return ledger


# -- "shared": the one definition ---------------------------------------------------------------

def sharing_reason(ds: Dataset, last: tuple[str, dt.datetime] | None, as_of: dt.datetime,
                   tz: str = DEFAULT_CITY_TIMEZONE) -> str | None:
    """None when ``ds`` counts as shared at ``as_of``, else why not. Shared: its share type is not
    not_shared, its last load that delivered data (``last``) published (so a snapshot is in the shared
    zone and it passed its blocking checks), and that load is at most one update cycle old."""
    if ds.share_type == "not_shared":
        return f"not shared ({ds.legal_basis or 'no legal basis stated'})"
    if last is None:
        return "never loaded: no extract has arrived"
    status, at = last
    if status == QUARANTINED:
        return "last load failed its quality checks (quarantined)"
    if status != PUBLISHED:
        return f"last load {status}"
    if as_of - at > ds.freshness:
        return f"overdue: last load {to_local(at, tz):%Y-%m-%d %H:%M}, update cycle {ds.update_cycle}"
    return None


def sharing_statuses(lake: Lake, registry: Registry, as_of: dt.datetime | None = None,
                     tz: str = DEFAULT_CITY_TIMEZONE) -> dict[str, str | None]:
    """dataset -> None (counts as shared) or the reason it does not, for every catalogued dataset, as of
    ``as_of`` (naive UTC, default now): what ``onesource status`` and the demo's summary count."""
    ledger = read_ledger(lake, as_of or _now())
    return {ds.name: sharing_reason(ds, ledger.last.get(ds.name), ledger.as_of, tz) for ds in registry.source_datasets}


# -- compute ------------------------------------------------------------------------------------

def compute(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime | None = None,
            calendar: WorkCalendar | None = None) -> dict:
    """``{"period", "as_of", "timezone", "city": {KPI: Figure}, "departments": [{"code", "name", KPI:
    Figure}], "approval_rate", "datasets": [...], "duplicate_pairs": [...], "members": [...]}``.

    ``as_of`` (naive UTC; default: the period's end, or now if sooner) decides what had happened.
    ``calendar`` is kept for callers: deadlines are stored with each request when it is made."""
    as_of = as_of or min(period.end, _now())
    with _quiet(lake):
        return _compute(lake, registry, period, as_of)


@contextmanager
def _quiet(lake: Lake) -> Iterator[None]:
    """No DuckDB progress bar while the KPIs are read: it would land in the middle of a command's output
    (``onesource metrics --json``) when a scan of the audit events takes more than 2 s."""
    before = lake.con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0]
    lake.con.execute("SET enable_progress_bar = false")
    try:
        yield
    finally:
        lake.con.execute(f"SET enable_progress_bar = {'true' if before else 'false'}")


def _compute(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime) -> dict:
    ledger = read_ledger(lake, as_of)
    sharing, statuses = _sharing(registry, ledger, period.tz)
    shared = {m.item for m in sharing if m.numerator}
    duplicates, pairs = _duplicates(registry)
    readers = _consumers(lake, registry, period, as_of)
    usage = _usage(lake, registry, period, ledger, shared)
    members = [*sharing, *usage, *_reuse(registry, readers), *duplicates,
               *_requests(lake, period, as_of),
               *_interconnection(registry, ledger),
               *_quality(lake, registry, period, as_of),
               *_timeliness(lake, registry, period, ledger),
               *_consistency(lake, registry, as_of)]
    approvals = _approvals(lake, period, as_of)
    counts = _sum(members)
    unused = {m.item for m in usage if not m.numerator}
    for row in statuses:
        row["consumers"] = len(readers.get(row["dataset"], ()))
        if row["dataset"] in unused:
            row["reason"] = "shared, but no other department used it while shared this period"
    return {
        "period": period.label,
        "as_of": as_of.isoformat(sep=" ", timespec="seconds"),
        "timezone": period.tz,
        "city": _figures(counts, CITY),
        "departments": [{"code": d.code, "name": d.name, **_figures(counts, d.code)} for d in registry.departments],
        # beside the request fulfilment rate: approved / decided requests
        "approval_rate": {"city": asdict(_fig("approval_rate", *approvals[CITY])),
                          **{d.code: asdict(_fig("approval_rate", *approvals[d.code]))
                             for d in registry.departments if d.code in approvals}},
        "datasets": statuses,
        "duplicate_pairs": pairs,
        "members": [asdict(m) for m in members],
    }


def _sum(members: Iterable[Member]) -> dict[str, dict[str, list[float]]]:
    counts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for m in members:
        for key in (m.department, CITY):
            counts[key][m.kpi][0] += m.numerator
            counts[key][m.kpi][1] += m.denominator
    return counts


def _figures(counts: dict, key: str) -> dict[str, dict]:
    return {kpi: asdict(_fig(kpi, *counts[key].get(kpi, [0.0, 0.0]))) for kpi in KPI_NAMES}


# -- each KPI: its members ------------------------------------------------------------------------

def _sharing(registry: Registry, ledger: Ledger, tz: str) -> tuple[list[Member], list[dict]]:
    """Every catalogued dataset is in the denominator (not_shared too: sharing is the rule)."""
    members, rows = [], []
    for ds in registry.source_datasets:
        last = ledger.last.get(ds.name)
        reason = sharing_reason(ds, last, ledger.as_of, tz)
        members.append(Member("sharing_rate", ds.owner, ds.name, int(reason is None), 1, reason))
        rows.append({"dataset": ds.name, "title": ds.title, "owner": ds.owner, "share_type": ds.share_type,
                     "update_cycle": ds.update_cycle, "counted_shared": reason is None, "reason": reason,
                     "last_load_status": last[0] if last else None, "last_load_at": last[1] if last else None,
                     "consumers": 0})
    return members, rows


def _owners_table(registry: Registry, only: set[str] | None = None) -> pa.Table:
    datasets = [d for d in registry.source_datasets if only is None or d.name in only]
    return pa.table({"dataset": pa.array([d.name for d in datasets], pa.string()),
                     "owner": pa.array([d.owner for d in datasets], pa.string())})


def _reads(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime, sql: str,
           only: set[str] | None = None) -> list[tuple]:
    """Run ``sql`` after the CTE ``reads``: allowed governed queries in the period (by ``as_of``), one row
    per table read by a department other than the table's owner; with ``only``, of those datasets."""
    lake.con.register("kpi_dataset_owners", _owners_table(registry, only))
    try:
        return lake.con.execute(
            f"""WITH reads AS (
                    SELECT t.dataset, t.department, t.event_at FROM (
                        SELECT department, event_at, unnest(tables) AS dataset FROM {ref('audit_events')}
                        WHERE decision = 'allowed' AND event_at >= ? AND event_at < ? AND event_at <= ?) t
                    JOIN kpi_dataset_owners o ON o.dataset = t.dataset AND o.owner <> t.department)
                {sql}""", [period.start, period.end, as_of]).fetchall()
    finally:
        lake.con.unregister("kpi_dataset_owners")


def _consumer_note(depts: set[str]) -> str | None:
    return ", ".join(sorted(depts)) or None


def _usage(lake: Lake, registry: Registry, period: Period, ledger: Ledger, shared: set[str]) -> list[Member]:
    """Over the datasets shared as of ``as_of``: those read in the period by another department *while
    they counted as shared* (the rule of :func:`sharing_reason` at the moment of the read): a read of a
    stale or quarantined snapshot is not use of shared data."""
    departments = {d.code for d in registry.departments}
    datasets = [ds for ds in registry.source_datasets if ds.name in shared]
    gaps = _unshared_spans(lake, datasets, ledger.as_of)
    lake.con.register("kpi_unshared", gaps)
    try:
        # a read counts unless it fell in a span in which its dataset was not shared (an anti join
        # against a few spans per dataset: ~10x cheaper than finding each of millions of reads' last load)
        rows = _reads(lake, registry, period, ledger.as_of, """
            SELECT DISTINCT r.dataset, r.department FROM reads r
            ANTI JOIN kpi_unshared g ON g.dataset = r.dataset AND r.event_at >= g.span_start
                                        AND r.event_at < g.span_end""", only=shared)
    finally:
        lake.con.unregister("kpi_unshared")
    used: dict[str, set[str]] = defaultdict(set)
    for name, dept in rows:
        if dept in departments:
            used[name].add(dept)
    return [Member("usage_rate", ds.owner, ds.name, int(bool(used.get(ds.name))), 1,
                   _consumer_note(used.get(ds.name, set())))
            for ds in datasets]


NEVER, FOREVER = dt.datetime(1970, 1, 1), dt.datetime(9999, 1, 1)
TICK = dt.timedelta(microseconds=1)  # the ledgers' resolution: (t, u) is [t + TICK, u)


def _unshared_spans(lake: Lake, datasets: list[Dataset], as_of: dt.datetime) -> pa.Table:
    """[span_start, span_end) in which each dataset did not count as shared, by :func:`sharing_reason`
    applied at every instant: before its first delivered load, after a delivered load that did not
    publish (until the next delivery), and past one update cycle after a published one."""
    freshness = {ds.name: ds.freshness for ds in datasets}
    delivered: dict[str, list[tuple[dt.datetime, str]]] = defaultdict(list)
    if freshness:
        lake.con.register("kpi_shared_names", pa.table({"dataset": list(freshness)}))
        try:
            for name, status, at in lake.con.execute(
                    f"""SELECT l.dataset, l.status, l.finished_at FROM {ref('loads')} l
                        JOIN kpi_shared_names USING (dataset)
                        WHERE l.sha256 IS NOT NULL AND l.finished_at <= ?
                        ORDER BY l.dataset, l.finished_at, l.load_id""", [as_of]).fetchall():
                delivered[name].append((at, status))
        finally:
            lake.con.unregister("kpi_shared_names")
    spans: list[tuple[str, dt.datetime, dt.datetime]] = []
    for name, fresh in freshness.items():
        loads = delivered.get(name, [])
        spans.append((name, NEVER, loads[0][0] if loads else FOREVER))
        for i, (at, status) in enumerate(loads):
            nxt = loads[i + 1][0] if i + 1 < len(loads) else FOREVER
            start = at + fresh + TICK if status == PUBLISHED else at  # shared up to and including at + cycle
            if start < nxt:
                spans.append((name, start, nxt))
    return pa.table({"dataset": [s[0] for s in spans], "span_start": pa.array([s[1] for s in spans], pa.timestamp("us")),
                     "span_end": pa.array([s[2] for s in spans], pa.timestamp("us"))})


def _consumers(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime) -> dict[str, set[str]]:
    """dataset -> the registered departments other than its owner (not the operator) that read it in
    the period."""
    departments = {d.code for d in registry.departments}
    owners = {d.name: d.owner for d in registry.source_datasets}
    consumers: dict[str, set[str]] = defaultdict(set)
    # the distinct pairs first, then the owners in Python: joining millions of reads costs twice as much
    for name, dept in lake.con.execute(
            f"""SELECT DISTINCT unnest(tables) AS dataset, department FROM {ref('audit_events')}
                WHERE decision = 'allowed' AND event_at >= ? AND event_at < ? AND event_at <= ?""",
            [period.start, period.end, as_of]).fetchall():
        if dept in departments and owners.get(name, dept) != dept:
            consumers[name].add(dept)
    return consumers


def _reuse(registry: Registry, consumers: dict[str, set[str]]) -> list[Member]:
    """Mean over authoritative datasets (shared or not) of their distinct consuming departments."""
    authoritative = {e.authority for e in registry.elements}
    return [Member("reuse_factor", ds.owner, ds.name, len(consumers.get(ds.name, ())), 1,
                   _consumer_note(consumers.get(ds.name, set())))
            for ds in registry.source_datasets if ds.name in authoritative]


def collects(registry: Registry, ds: Dataset, col: Column) -> bool:
    """Whether ``ds``'s department collects ``col``'s element through it (docs/kpis.md). Not collected: a
    ``from_authority`` column (filled from the authority: consumed) and a column declared
    ``references: authority`` that is the authority's key (the identifier through which the dataset
    references the authority's record: 'one number' is how a department avoids collecting the facts
    again, and it cannot reference the authority without it). An undeclared key column is collected."""
    if not col.element or col.from_authority:
        return False
    return authority_reference(registry, ds, col) is None


def _duplicates(registry: Registry) -> tuple[list[Member], list[dict]]:
    """(department, element) pairs a department collects (:func:`collects`); a pair is duplicate when the
    department is not the authority's owner."""
    authority = {e.name: registry.dataset(e.authority) for e in registry.elements}
    collected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ds in registry.source_datasets:
        for col in ds.columns:
            if collects(registry, ds, col):
                collected[(ds.owner, col.element)].append(ds.name)
    out, pairs = [], []
    for (dept, element), names in sorted(collected.items()):
        auth = authority.get(element)
        duplicate = auth is None or auth.owner != dept
        pair = {"department": dept, "element": element, "element_name": registry.element(element).name_zh,
                "authority_department": auth.owner if auth else None,
                "authority_dataset": auth.name if auth else None, "datasets": ", ".join(sorted(names)),
                "duplicate": duplicate}
        note = (f"collected in {pair['datasets']}; the authority is {auth.name} ({auth.owner})" if duplicate and auth
                else f"the authority itself ({pair['datasets']})")
        out.append(Member("duplicate_collection_rate", dept, f"{dept}/{element}", int(duplicate), 1, note))
        pairs.append(pair)
    return out, pairs


def _request_rows(lake: Lake, period: Period, as_of: dt.datetime) -> list[tuple]:
    """Requests due in the period and by ``as_of`` (made by then too)."""
    return lake.con.execute(
        f"""SELECT request_id, department, dataset, owner, status, due_at, decided_at, reason
            FROM {ref('access_requests')}
            WHERE due_at >= ? AND due_at < ? AND due_at <= ? AND requested_at <= ? ORDER BY request_id""",
        [period.start, period.end, as_of, as_of]).fetchall()


def _decided(status: str, decided_at: dt.datetime | None, reason: str | None, as_of: dt.datetime) -> bool:
    """A decision by ``as_of``; a refusal without a reason is no decision."""
    if decided_at is None or decided_at > as_of or status == "pending":
        return False
    return not (status == "refused" and not (reason or "").strip())


def _requests(lake: Lake, period: Period, as_of: dt.datetime) -> list[Member]:
    """Charged to the owner who must decide: decided by the deadline (the city's midnight ending the
    5th working day, stored with the request) counts."""
    out = []
    for rid, dept, dataset, owner, status, due, decided_at, reason in _request_rows(lake, period, as_of):
        decided = _decided(status, decided_at, reason, as_of)
        on_time = decided and decided_at <= due
        when = f"decided {to_local(decided_at, period.tz):%Y-%m-%d %H:%M}" if decided else \
            ("refused without a reason" if status == "refused" else "not decided")
        out.append(Member("request_fulfilment_rate", owner, rid, int(on_time), 1,
                          f"{dataset} for {dept}: {when}, due by the end of {deadline_day(due, period.tz)} "
                          f"({period.tz})"))
    return out


def _approvals(lake: Lake, period: Period, as_of: dt.datetime) -> dict[str, tuple[int, int]]:
    """(approved, decided) among the period's requests, per owner and city-wide."""
    approvals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    approvals[CITY]  # noqa: B018 - present even when nothing was decided
    for _rid, _dept, _ds, owner, status, _due, decided_at, reason in _request_rows(lake, period, as_of):
        if _decided(status, decided_at, reason, as_of):
            for key in (owner, CITY):
                approvals[key][0] += int(status in ("approved", "revoked"))
                approvals[key][1] += 1
    return {k: (a, d) for k, (a, d) in approvals.items()}


def _interconnection(registry: Registry, ledger: Ledger) -> list[Member]:
    """Registered systems with at least one published load within one update cycle of ``as_of`` (of any
    of their datasets): a later quarantined or failed load does not disconnect a system. Systems that
    feed only platform tables (the bureau's own OneSource) do not count."""
    by_system: dict[tuple[str, str], list[Dataset]] = defaultdict(list)
    platform_only: set[tuple[str, str]] = set()
    for ds in registry.datasets:
        if ds.platform:
            platform_only.add((ds.owner, ds.system))
        else:
            by_system[(ds.owner, ds.system)].append(ds)
    out = []
    for dept in registry.departments:
        for system in dept.systems:
            key = (dept.code, system.code)
            if key in platform_only and key not in by_system:
                continue
            fresh = [(ledger.last_published[ds.name], ds.name) for ds in by_system.get(key, [])
                     if ds.name in ledger.last_published
                     and ledger.as_of - ledger.last_published[ds.name] <= ds.freshness]
            if fresh:
                at, name = max(fresh)
                note = f"{name} published {at:%Y-%m-%d %H:%M} UTC"
            else:
                names = ", ".join(d.name for d in by_system.get(key, [])) or "no dataset registered"
                note = f"no published load within its update cycle ({names})"
            out.append(Member("interconnection_rate", dept.code, system.code, int(bool(fresh)), 1, note))
    return out


def _quality(lake: Lake, registry: Registry, period: Period, as_of: dt.datetime) -> list[Member]:
    """Validated loads of the period (``ops.quality_runs``) that passed every blocking expectation."""
    owners = {d.name: d.owner for d in registry.source_datasets}
    return [Member("quality_pass_rate", owners.get(name, owner), name, passed, runs,
                   f"{runs - passed} load(s) failed a blocking check" if runs - passed else None)
            for name, owner, passed, runs in lake.con.execute(
                f"""SELECT dataset, any_value(owner), count(*) FILTER (WHERE passed), count(*)
                    FROM {ref('quality_runs')} WHERE run_at >= ? AND run_at < ? AND run_at <= ?
                    GROUP BY dataset ORDER BY dataset""", [period.start, period.end, as_of]).fetchall()]


def _consistency(lake: Lake, registry: Registry, as_of: dt.datetime) -> list[Member]:
    """The last consistency run by ``as_of``: compared values of each copy and those equal to the
    authority. A ``from_authority`` column is filled from the authority, equal by construction: it is a
    reference, not a copy, and is left out (counting it would reward the check with its own input)."""
    referenced = {(ds.name, c.name) for ds in registry.source_datasets for c in ds.columns if c.from_authority}
    out = []
    for name, owner, column, element, authority, compared, equal in lake.con.execute(
            f"""SELECT dataset, owner, column_name, element, authority, compared, equal
                FROM {ref('consistency_results')}
                WHERE run_id = (SELECT max(run_id) FROM {ref('consistency_results')} WHERE checked_at <= ?)
                ORDER BY dataset, column_name""", [as_of]).fetchall():
        if (name, column) in referenced:
            continue
        out.append(Member("consistency_rate", owner, f"{name}.{column}", equal, compared,
                          f"{element} against {authority}: {compared - equal} disagree" if compared - equal else None))
    return out


# -- timeliness: update-cycle windows in city time ------------------------------------------------

def _step(cycle: str, t: dt.datetime) -> dt.datetime:
    if cycle == "hourly":
        return t + dt.timedelta(hours=1)
    if cycle == "daily":
        return t + dt.timedelta(days=1)
    if cycle == "weekly":
        return t + dt.timedelta(weeks=1)
    months = {"monthly": 1, "quarterly": 3, "yearly": 12}[cycle]
    m = t.month - 1 + months
    return t.replace(year=t.year + m // 12, month=m % 12 + 1, day=1)


def _window_start(cycle: str, t: dt.datetime) -> dt.datetime:
    """The beginning of the window holding ``t`` (city wall-clock): the hour, the day, the ISO week's
    Monday, the month, the quarter or the year."""
    t = t.replace(minute=0, second=0, microsecond=0)
    if cycle == "hourly":
        return t
    t = t.replace(hour=0)
    if cycle == "weekly":
        return t - dt.timedelta(days=t.weekday())
    if cycle == "daily":
        return t
    t = t.replace(day=1)
    if cycle == "quarterly":
        return t.replace(month=(t.month - 1) // 3 * 3 + 1)
    if cycle == "yearly":
        return t.replace(month=1)
    return t


def slot_starts(cycle: str, start: dt.datetime, end: dt.datetime,
                tz: str = DEFAULT_CITY_TIMEZONE) -> list[tuple[dt.datetime, dt.datetime]]:
    """The update-cycle windows that begin in [start, end) (naive UTC), cut at the city's hours, days,
    ISO weeks, months, quarters and years; returned as naive UTC pairs."""
    local_start, local_end = to_local(start, tz), to_local(end, tz)
    t = _window_start(cycle, local_start)
    out = []
    while t < local_end:
        nxt = _step(cycle, t)
        if t >= local_start:
            out.append((to_utc(t, tz), to_utc(nxt, tz)))
        t = nxt
    return out


def closing_windows(cycle: str, start: dt.datetime, end: dt.datetime,
                    tz: str = DEFAULT_CITY_TIMEZONE) -> list[tuple[dt.datetime, dt.datetime]]:
    """The windows that close in (start, end]: each window belongs to exactly one period, the one in
    which its deadline falls (a week from Monday 30 March belongs to April)."""
    longest = UPDATE_CYCLES[cycle][1]
    return [(b, e) for b, e in slot_starts(cycle, start - longest, end, tz) if start < e <= end]


def _arrived(times: list[dt.datetime], begin: dt.datetime, end: dt.datetime) -> bool:
    """Some time in the sorted ``times`` falls in [begin, end)."""
    i = bisect_left(times, begin)
    return i < len(times) and times[i] < end


def _timeliness(lake: Lake, registry: Registry, period: Period, ledger: Ledger) -> list[Member]:
    """Windows expected: those of the dataset's update cycle that close in the period, by ``as_of``, and
    after the dataset was registered (the window it was registered in counts: its first load is in it).
    On time: an extract arrived (a load that delivered data, whatever its outcome) within the window."""
    arrivals: dict[str, list[dt.datetime]] = defaultdict(list)
    earliest = period.start - max(d for _, d in UPDATE_CYCLES.values())
    for name, at in lake.con.execute(
            f"""SELECT dataset, finished_at FROM {ref('loads')}
                WHERE sha256 IS NOT NULL AND finished_at >= ? AND finished_at < ? AND finished_at <= ?
                ORDER BY finished_at""", [earliest, period.end, ledger.as_of]).fetchall():
        arrivals[name].append(at)
    out = []
    cycles = {c: closing_windows(c, period.start, min(period.end, ledger.as_of), period.tz)
              for c in {ds.update_cycle for ds in registry.source_datasets}}
    for ds in registry.source_datasets:
        registered = ledger.registered.get(ds.name)
        if registered is None:
            continue  # not registered yet: nothing was expected of it
        times = arrivals.get(ds.name, [])  # sorted by the query
        expected = [(b, e) for b, e in cycles[ds.update_cycle] if e > registered]
        missed = [b for b, e in expected if not _arrived(times, b, e)]
        note = None
        if missed:
            shown = ", ".join(f"{to_local(b, period.tz):%m-%d %H:%M}" for b in missed[:5])
            note = f"missed {len(missed)} window(s) beginning {shown}{' ...' if len(missed) > 5 else ''} ({period.tz})"
        if expected:
            out.append(Member("timeliness", ds.owner, ds.name, len(expected) - len(missed), len(expected), note))
    return out
