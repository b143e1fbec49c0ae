"""Months of simulated history for the demo city, so the bureau's trend charts have something to show.

A new lake has one day of loads; the city's story is the months before: departments coming online
one after another, loads failing (outages, quality) and recovering, access requests decided on time
or late, and more departments querying each other's data. This module writes that story into the
same ledgers the real pipeline writes (loads, quality runs, access requests, audit events), from
the first day of ``months`` months ago up to today's midnight, and nothing else: it never touches a
shared table or a grant. Every simulated row is marked: load ids and request ids start with
``hist-``, the loads' source says so, audit events carry the user ``simulated``. Deterministic: the
same seed and day give the same history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pyarrow as pa

from core.calendar import WorkCalendar
from lakehouse import ledger
from lakehouse.lake import Lake, retrying
from metrics.kpis import Period, slot_starts
from schemas.model import Column, Dataset, Registry

PREFIX = "hist-"
SOURCE = "demo history (simulated)"
BASELINE, GOAL = 8 / 15, 1.0
"""Share of datasets online in the first simulated month (half, a few of them stale or failing: the
city's 45% sharing and < 50% interconnection), and by the last."""
OPENED_LATER = ("hotline_tickets", "urban_enforcement_cases")
"""Conditional datasets that were still not_shared at the baseline and change share type during the
history (registry versions of their sharing), one after another."""


def _month_start(day: dt.date, back: int) -> dt.datetime:
    m = day.year * 12 + day.month - 1 - back
    return dt.datetime(m // 12, m % 12 + 1, 1)


BASELINE_MOVED = 0.6
"""Share of the departments whose datasets already referred to the authorities at the baseline (the rest
move during the simulated months): it puts the first month's duplicate collection near CITY.md's 30%."""


def era_registry(registry: Registry, month: int, months: int) -> Registry:
    """The registry as it stood in simulated month ``month`` (0: the oldest of ``months``): the city's
    baseline, versioned month by month into today's registry, which it equals from the last simulated
    month on (the DAG's metrics task recomputes that month with today's registry).

    Two kinds of version change the figures: departments move their copied columns to
    ``from_authority`` and declare their identifier columns (credit codes, resident IDs, division codes)
    as ``references: authority`` (today's registry says which), one department after another, so the
    duplicate collection rate falls with the registry; and a few conditional datasets were not_shared at
    the baseline and change share type. Systems coming online are the loads' story (``_online_dates``)."""
    if month >= months - 1:
        return registry
    steps = max(1, months - 1)
    referencing = sorted({ds.owner for ds in registry.source_datasets if any(_references(c) for c in ds.columns)})
    # the city's 30% duplicate collection is what remains after its first 'one number' projects: BASELINE_MOVED
    # of the departments referred to the authorities already at the baseline; the others move one after
    # another, department k of the remaining r in month 1 + k * (steps - 1) // r: all of them by the last month
    first = round(BASELINE_MOVED * len(referencing))
    later = max(1, len(referencing) - first)
    moved = {dept for k, dept in enumerate(referencing)
             if k < first or month >= 1 + (k - first) * (steps - 1) // later}
    opened = {ds.name: 1 + k * (steps - 1) // len(OPENED_LATER) for k, ds in enumerate(_opened_later(registry))}
    datasets = []
    for ds in registry.datasets:
        if ds.owner not in moved and any(_references(c) for c in ds.columns):
            # before its move the department still typed these in from its own extract
            ds = dataclasses.replace(ds, columns=tuple(dataclasses.replace(c, from_authority=False, references=None)
                                                       for c in ds.columns))
        if month < opened.get(ds.name, 0):
            ds = dataclasses.replace(ds, share_type="not_shared",
                                     legal_basis="（模拟）尚未完成共享属性评估，暂不予共享")
        datasets.append(ds)
    return dataclasses.replace(registry, datasets=tuple(datasets))


def _references(col: Column) -> bool:
    """A column through which today's registry has its dataset refer to an authority instead of
    collecting: filled from it, or the declared key naming the authority's record."""
    return col.from_authority or col.references is not None


def _opened_later(registry: Registry) -> list[Dataset]:
    """The datasets of OPENED_LATER the registry has, conditional today."""
    return [ds for name in OPENED_LATER for ds in registry.source_datasets
            if ds.name == name and ds.share_type == "conditional"]


def publish_history(lake: Lake, registry: Registry, periods: list[Period]) -> list[dict]:
    """Compute and publish each simulated month's KPIs with the registry of its own month."""
    from metrics.publish import publish_periods

    results = []
    for month, period in enumerate(periods):
        results += publish_periods(lake, era_registry(registry, month, len(periods)), [period])
    return results


def already_simulated(lake: Lake) -> bool:
    return ledger.has_loads(lake.con, PREFIX)


def simulate(lake: Lake, registry: Registry, months: int = 6, today: dt.date | None = None, seed: int = 7,
             calendar: WorkCalendar | None = None) -> list[Period]:
    """Write the history; returns the simulated months (oldest first). Does nothing if it exists."""
    today = today or dt.datetime.now(dt.UTC).date()
    periods = [Period.month(f"{_month_start(today, back):%Y-%m}") for back in range(months, 0, -1)]
    if already_simulated(lake) or months <= 0:
        return periods
    rng = random.Random(seed)
    start, end = periods[0].start, dt.datetime.combine(today, dt.time())
    datasets = list(registry.source_datasets)
    online = _online_dates(datasets, periods, rng)
    loads, runs = _loads(datasets, online, start, end, periods, rng)
    requests = _requests(registry, periods, end, rng, calendar or WorkCalendar())
    events = _events(registry, online, periods, end, rng)

    def write() -> None:
        with lake.transaction() as con:
            written: tuple[tuple[ledger.Table, pa.Table], ...] = (
                ("loads", loads), ("quality_runs", runs), ("access_requests", requests), ("audit_events", events))
            for table, rows in written:
                if rows.num_rows:
                    con.register("history_rows", rows)
                    ledger.insert_select(con, table, "SELECT * FROM history_rows")
                    con.unregister("history_rows")
            lake.commit_message("demo history (simulated)", {"months": months, "loads": loads.num_rows})

    retrying(write, lake.settings.commit_retries, "writing the demo's simulated history")
    return periods


STORY = ("amr_enterprise_register", "psb_resident_register", "psb_household_moves", "mca_admin_divisions",
         "mca_subsistence_allowance", "hrss_enterprise_insurance", "hrss_person_insurance", "tax_taxpayer_register",
         "health_medical_institutions", "edu_schools", "housing_construction_permits", "transport_operator_licenses",
         "nr_land_parcels", "hotline_tickets", "urban_enforcement_cases")
"""The order in which the demo city's datasets start delivering good data: the population, enterprise
and civil-affairs registers first (the first reform wave), a few systems each (so the baseline has
~45% of datasets shared on fewer than half of the systems), then one department after another; any
other dataset (a larger city's) follows in name order."""


def _ready_months(datasets: list[Dataset], months: int) -> dict[str, int]:
    """dataset -> the simulated month from which it delivers good data: BASELINE of them from the first
    month, all of them by the last, in STORY order."""
    rank = {name: k for k, name in enumerate(STORY)}
    order = sorted(datasets, key=lambda d: (rank.get(d.name, len(STORY)), d.name))
    steps = max(1, months - 1)
    out = {}
    for k, ds in enumerate(order):
        share = (k + 1) / len(order)
        out[ds.name] = 0 if share <= BASELINE + 1e-9 else \
            min(months - 1, 1 + int((share - BASELINE) / (GOAL - BASELINE) * steps - 1e-9))
    return out


def _online_dates(datasets: list[Dataset], periods: list[Period], rng: random.Random) -> dict[str, dt.datetime]:
    """When each dataset's system was connected: one month before it delivers good data (its first
    deliveries fail their checks while the department cleans its extract), from the first day for the
    baseline's datasets."""
    ready = _ready_months(datasets, len(periods))
    out = {}
    for ds in datasets:
        month = max(0, ready[ds.name] - 1)
        first = periods[month].start
        out[ds.name] = first if ready[ds.name] == 0 else first + dt.timedelta(days=rng.randint(3, 12))
    return out


def _loads(datasets: list[Dataset], online: dict[str, dt.datetime], start: dt.datetime, end: dt.datetime,
           periods: list[Period], rng: random.Random) -> tuple[pa.Table, pa.Table]:
    """Every update-cycle window from a dataset's connection on: before its ready month its deliveries
    fail their blocking checks (quarantined), from then on they arrive and publish, except a week's
    outage of two source systems in the middle of a month (the figures at each month's end, the ones
    the assessment reads, move only with the story)."""
    loads, runs = [], []
    ready = _ready_months(datasets, len(periods))
    ready_at = {name: periods[m].start for name, m in ready.items()}
    outages = {}
    for ds in rng.sample(datasets, min(2, len(datasets))):
        month = periods[min(len(periods) - 1, ready[ds.name] + 1)].start
        outages[ds.name] = (month + dt.timedelta(days=8), month + dt.timedelta(days=15))
    for ds in datasets:
        if ds.name not in online:
            continue
        # the first extract arrives when the system is connected, then one per update-cycle window
        connected = online[ds.name]
        windows = [(connected, connected + dt.timedelta(hours=6)),
                   *((b, e) for b, e in slot_starts(ds.update_cycle, connected, end) if b > connected)]
        if ready_at[ds.name] > connected:  # the cleaned extract is sent again when it is ready
            windows.append((ready_at[ds.name], ready_at[ds.name] + dt.timedelta(hours=6)))
            windows.sort()
        for begin, stop in windows:
            # nightly batches: most extracts arrive in the first hours of their window
            span = int(min(min(stop, end) - begin, dt.timedelta(hours=6)).total_seconds())
            at = begin + dt.timedelta(seconds=rng.randint(0, max(1, span) - 1))
            load_id = f"{PREFIX}{ds.name}-{at:%Y%m%dT%H%M%S}"
            down = outages.get(ds.name)
            if down and down[0] <= at < down[1]:
                loads.append(_load(load_id, ds, "failed", at, None, "extract",
                                   "source system unavailable (simulated outage)"))
                continue
            passed = at >= ready_at[ds.name]
            loads.append(_load(load_id, ds, "published" if passed else "quarantined", at, f"simulated:{load_id}",
                               None if passed else "quality",
                               None if passed else "blocking checks failed (simulated)"))
            runs.append({"load_id": load_id, "dataset": ds.name, "owner": ds.owner, "run_at": at, "stage": "quality",
                         "rows": None, "passed": passed, "checks": 12, "blocking_failed": 0 if passed else 1,
                         "warnings": rng.randint(0, 2), "skipped": 0, "suite_version": "simulated",
                         "registry_version": "simulated"})
    return pa.Table.from_pylist(loads), pa.Table.from_pylist(runs)


def _load(load_id: str, ds: Dataset, status: str, at: dt.datetime, sha: str | None, stage: str | None,
          error: str | None) -> dict:
    return {"load_id": load_id, "dataset": ds.name, "owner": ds.owner, "status": status, "source": SOURCE,
            "landed_path": None, "sha256": sha, "registry_version": "simulated", "rows_in": None,
            "rows_published": None, "watermark": None, "started_at": at - dt.timedelta(seconds=30),
            "finished_at": at, "error_stage": stage, "error": error, "quarantine_path": None}


def _requests(registry: Registry, periods: list[Period], end: dt.datetime, rng: random.Random,
              calendar: WorkCalendar) -> pa.Table:
    shareable = [d for d in registry.source_datasets if d.share_type != "not_shared"]
    periods = [*periods, Period(periods[-1].end, end)]  # and this month, up to today
    codes = [d.code for d in registry.departments if any(x.owner == d.code for x in registry.source_datasets)]
    rows = []
    for month, period in enumerate(periods):
        for n in range(4 + month):
            ds = rng.choice(shareable)
            dept = rng.choice([c for c in codes if c != ds.owner])
            at = period.start + dt.timedelta(hours=rng.randint(9, 24 * 27))
            rid = f"{PREFIX}{period.label}-{n}"
            base = {"request_id": rid, "department": dept, "dataset": ds.name, "owner": ds.owner,
                    "share_type": ds.share_type, "columns": None, "row_filter": None, "purpose": "业务协同（模拟）",
                    "period_days": 365, "requested_by": f"{dept}_analyst", "requested_at": at, "grant_id": None}
            if ds.share_type == "unconditional":
                rows.append({**base, "status": "approved", "due_at": at, "decided_at": at, "decided_by": "platform",
                             "reason": "unconditional: readable by every department"})
                continue
            due = calendar.add_working_days(at, 5)
            late = rng.random() < 0.45 - 0.07 * month
            decided = calendar.add_working_days(at, rng.randint(6, 9) if late else rng.randint(1, 5)) \
                - dt.timedelta(hours=rng.randint(4, 12))
            if decided > end:
                rows.append({**base, "status": "pending", "due_at": due, "decided_at": None, "decided_by": None,
                             "reason": None})
                continue
            refused = rng.random() < 0.2
            reason = ("申请用途超出数据共享条件（模拟）" if refused else None)
            if refused and month == 0 and n == 0:
                reason = None  # an old system recorded a refusal without a reason: not a decision
            rows.append({**base, "status": "refused" if refused else "approved", "due_at": due, "decided_at": decided,
                         "decided_by": f"{ds.owner}_owner", "reason": reason})
    return pa.Table.from_pylist(rows)


def _events(registry: Registry, online: dict[str, dt.datetime], periods: list[Period], end: dt.datetime,
            rng: random.Random) -> pa.Table:
    """Governed queries by departments other than the owner: more consumers month after month."""
    codes = [d.code for d in registry.departments]
    periods = [*periods, Period(periods[-1].end, end)]  # and this month, up to today
    rows = []
    for month, period in enumerate(periods):
        reach = 0.05 + 0.07 * month  # share of other departments reading a dataset
        for ds in registry.source_datasets:
            if ds.share_type == "not_shared" or ds.name not in online or online[ds.name] >= period.end:
                continue
            for dept in codes:
                if dept == ds.owner or rng.random() > reach:
                    continue
                for _ in range(rng.randint(1, 12)):
                    at = period.start + dt.timedelta(seconds=rng.randint(0, int((min(period.end, end) - period.start)
                                                                                .total_seconds()) - 1))
                    rows.append({"seq": None, "event_at": at, "department": dept, "user_name": "simulated",
                                 "decision": "allowed", "tables": [ds.name], "rows": rng.randint(1, 500)})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("seq", pa.int64()), ("event_at", pa.timestamp("us")), ("department", pa.string()),
        ("user_name", pa.string()), ("decision", pa.string()), ("tables", pa.list_(pa.string())),
        ("rows", pa.int64())]))
