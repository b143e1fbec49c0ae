"""Every KPI against a straightforward oracle written from docs/kpi-definitions.md (the readings of docs/kpis.md),
over generated ledgers of the hand-built city of test_kpi_scenario.py: loads with any outcome, registry
versions, quality runs, consistency runs, access requests and audit events around March 2026, as of any
moment. The oracle walks the city's calendar itself (zoneinfo, day by day) and shares no code with
metrics.kpis."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import Lake
from metrics.kpis import KPI_NAMES, Period, compute
from tests.helpers import ELEMENTS
from tests.support.kpi_scenario import OWNERS, registry_entries, write_scenario_registry

SHANGHAI = ZoneInfo("Asia/Shanghai")
CYCLE = {"firms": "daily", "taxpayers": "daily", "moves": "daily", "licences": "monthly", "permits": "weekly",
         "hrss_people": "daily"}
LENGTH = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7), "monthly": dt.timedelta(days=31)}
SHARE = {"moves": "not_shared"}
SYSTEMS = {("amr", "amr_reg"): ["firms", "moves"], ("amr", "amr_old"): ["licences"], ("tax", "tax_core"): ["taxpayers"],
           ("hrss", "hrss_sys"): ["permits", "hrss_people"]}
DEPTS = ("amr", "tax", "hrss")
START = dt.datetime(2026, 2, 10)  # UTC; everything generated falls in [START, START + 60 days)


def utc(local: dt.datetime) -> dt.datetime:
    return local.replace(tzinfo=SHANGHAI).astimezone(dt.UTC).replace(tzinfo=None)


P_START, P_END = utc(dt.datetime(2026, 3, 1)), utc(dt.datetime(2026, 4, 1))

moments = st.integers(0, 60 * 24 * 4 - 1).map(lambda q: START + dt.timedelta(minutes=15 * q))
loads = st.lists(st.tuples(st.sampled_from(sorted(OWNERS)), st.sampled_from(["published", "quarantined", "failed"]),
                           moments, st.booleans()), max_size=25)
versions = st.dictionaries(st.sampled_from(sorted(OWNERS)), moments, max_size=6)
runs = st.lists(st.tuples(st.sampled_from(sorted(OWNERS)), moments, st.booleans()), max_size=10)
copies = st.lists(st.tuples(moments, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)),
                  max_size=3)
requests = st.lists(st.tuples(st.sampled_from(sorted(OWNERS)), st.sampled_from(DEPTS), moments, moments,
                              st.sampled_from(["pending", "approved", "refused", "revoked"]),
                              st.one_of(st.none(), moments), st.sampled_from([None, "", "理由"])), max_size=8)
events = st.lists(st.tuples(st.sampled_from([*DEPTS, "operator"]), st.sampled_from(sorted(OWNERS)),
                            st.sampled_from(["allowed", "refused"]), moments), max_size=15)
as_ofs = st.one_of(st.none(), moments)


# -- the oracle ------------------------------------------------------------------------------------

def duplicate_collection(entries, elements):
    """(duplicate pairs, pairs) read from the registry's YAML entries as written. A department collects an
    element through a column that holds it, unless the column is from_authority, or is declared
    ``references: authority`` and is the single key column of the element's authoritative dataset (another
    dataset): then it is the identifier through which the department references the authority."""
    datasets = {ds["name"]: ds for ds in entries}
    authority = {el["name"]: datasets[el["authority"]] for el in elements}
    pairs = {}
    for ds in entries:
        for col in ds["columns"]:
            element = col.get("element")
            if not element or col.get("from_authority"):
                continue
            auth = authority[element]
            auth_key = [c.get("element") for c in auth["columns"] if [c["name"]] == auth["key"]]
            if col.get("references") == "authority" and auth is not ds and auth_key == [element]:
                continue
            pairs[(ds["owner"], element)] = auth["owner"] != ds["owner"]
    return sum(pairs.values()), len(pairs)


def last_delivered(loads, name, t):
    mine = [(at, status) for n, status, at, delivered in loads if n == name and delivered and at <= t]
    return max(mine) if mine else None


def shared_at(loads, name, t):
    last = last_delivered(loads, name, t)
    return (SHARE.get(name) != "not_shared" and last is not None and last[1] == "published"
            and t - last[0] <= LENGTH[CYCLE[name]])


def windows(cycle):
    """City windows of the cycle, walked day by day over the months around March, as UTC pairs."""
    day, out = dt.date(2025, 12, 1), []
    while day < dt.date(2026, 6, 1):
        nxt = day + dt.timedelta(days=1)
        if cycle == "daily":
            out.append((day, nxt))
        elif cycle == "weekly" and day.weekday() == 0:
            out.append((day, day + dt.timedelta(days=7)))
        elif cycle == "monthly" and day.day == 1:
            out.append((day, (day + dt.timedelta(days=32)).replace(day=1)))
        day = nxt
    return [(utc(dt.datetime.combine(b, dt.time())), utc(dt.datetime.combine(e, dt.time()))) for b, e in out]


def oracle(data, as_of):
    loads, versions, runs, copies, reqs, events = data
    counts = {k: [0, 0] for k in KPI_NAMES}

    def add(kpi, num, den):
        counts[kpi][0] += num
        counts[kpi][1] += den

    in_period = lambda t: P_START <= t < P_END and t <= as_of  # noqa: E731
    for name in OWNERS:
        add("sharing_rate", int(shared_at(loads, name, as_of)), 1)
        if shared_at(loads, name, as_of):
            add("usage_rate", int(any(d in DEPTS and d != OWNERS[name] and n == name and dec == "allowed"
                                      and in_period(t) and shared_at(loads, name, t)
                                      for d, n, dec, t in events)), 1)
    add("reuse_factor", len({d for d, n, dec, t in events if n == "firms" and dec == "allowed" and d in DEPTS
                             and d != "amr" and in_period(t)}), 1)
    add("duplicate_collection_rate", *duplicate_collection(registry_entries(), ELEMENTS["elements"]))
    for _name, _dept, req_at, due, status, decided_at, reason in reqs:
        if not (P_START <= due < P_END and due <= as_of and req_at <= as_of):
            continue
        decided = (decided_at is not None and decided_at <= as_of and status != "pending"
                   and not (status == "refused" and not (reason or "").strip()))
        add("request_fulfilment_rate", int(decided and decided_at <= due), 1)
    for names in SYSTEMS.values():
        add("interconnection_rate", int(any(n in names and s == "published" and as_of - LENGTH[CYCLE[n]] <= at <= as_of
                                            for n, s, at, _ in loads)), 1)
    for _name, at, passed in runs:
        if in_period(at):
            add("quality_pass_rate", int(passed), 1)
    for name in OWNERS:
        # registered: its first registry version or the start of its first load (started a minute before)
        seen = [at - dt.timedelta(minutes=1) for n, _s, at, _d in loads if n == name] + \
            ([versions[name]] if name in versions else [])
        registered = min((t for t in seen if t <= as_of), default=None)
        if registered is None:
            continue
        for b, e in windows(CYCLE[name]):
            if P_START < e <= min(P_END, as_of) and e > registered:
                add("timeliness", int(any(n == name and d and b <= at < e and at <= as_of for n, _s, at, d in loads)), 1)
    done = [c for c in copies if c[0] <= as_of]
    if done:
        _at, name_cmp, name_eq, _st_cmp, _st_eq = max(done)
        add("consistency_rate", min(name_eq, name_cmp), name_cmp)  # the status column is from_authority
    return counts


# -- the lake ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """One lake for every example (opening one costs ~2 s on a busy host); each example replaces the ledgers."""
    home = Settings(home=tmp_path_factory.mktemp("oracle") / "home")
    registry = write_scenario_registry(home)
    with Lake(home.lake) as lake:
        yield lake, registry


def write(lake, data):
    """Replace the ledgers with ``data`` in one commit, one INSERT per table."""
    loads, versions, runs, copies, reqs, events = data
    rows = {
        "loads": [{"load_id": f"l{i:03d}", "dataset": n, "owner": OWNERS[n], "status": s,
                   "sha256": f"s{i}" if d else None, "started_at": at - dt.timedelta(minutes=1), "finished_at": at}
                  for i, (n, s, at, d) in enumerate(loads)],
        "schema_versions": [{"subject": n, "kind": "dataset", "version": 1, "registered_at": at}
                            for n, at in versions.items()],
        "quality_runs": [{"load_id": f"q{i}", "dataset": n, "owner": OWNERS[n], "run_at": at, "passed": p}
                         for i, (n, at, p) in enumerate(runs)],
        "consistency_results": [
            {"run_id": f"{at:%Y%m%dT%H%M%S}", "checked_at": at, "dataset": "taxpayers", "owner": "tax",
             "element": column, "column_name": column, "authority": "firms", "authority_owner": "amr",
             "compared": compared, "equal": min(equal, compared)}
            for at, name_cmp, name_eq, st_cmp, st_eq in copies
            for column, compared, equal in (("enterprise_name", name_cmp, name_eq), ("enterprise_status", st_cmp, st_eq))],
        "access_requests": [{"request_id": f"r{i}", "department": dept, "dataset": n, "owner": OWNERS[n], "status": s,
                             "requested_at": req_at, "due_at": due, "decided_at": decided, "reason": reason}
                            for i, (n, dept, req_at, due, s, decided, reason) in enumerate(reqs)],
        "audit_events": [{"seq": i, "event_at": at, "department": dept, "user_name": "u", "decision": dec,
                          "tables": [n], "rows": 1} for i, (dept, n, dec, at) in enumerate(events)],
    }
    with lake.transaction() as con:
        for table, found in rows.items():
            con.execute(f"DELETE FROM lake.ops.{table}")
            if found:
                con.register("oracle_rows", pa.Table.from_pylist(found))
                con.execute(f"INSERT INTO lake.ops.{table} BY NAME SELECT * FROM oracle_rows")
                con.unregister("oracle_rows")


def unique_times(data):
    """One load per dataset and moment, one consistency run per moment (a tie has no 'last')."""
    loads, versions, runs, copies, reqs, events = data
    seen, kept = set(), []
    for load in loads:
        if (load[0], load[2]) not in seen:
            seen.add((load[0], load[2]))
            kept.append(load)
    by_time = {c[0]: c for c in copies}
    return kept, versions, runs, list(by_time.values()), reqs, events


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(loads, versions, runs, copies, requests, events, as_ofs)
def test_every_kpi_equals_the_oracle(city, loads, versions, runs, copies, reqs, events, as_of):
    lake, registry = city
    data = unique_times((loads, versions, runs, copies, reqs, events))
    write(lake, data)
    result = compute(lake, registry, Period.month("2026-03"), as_of=as_of)
    expected = oracle(data, as_of or P_END)
    got = {k: [result["city"][k]["numerator"], result["city"][k]["denominator"]] for k in KPI_NAMES}
    assert got == expected
