"""Every KPI on a hand-built city, each figure worked out by hand from docs/kpi-definitions.md (docs/kpis.md has the
readings), in city time (Asia/Shanghai, UTC+8); and every KPI against a straightforward oracle over
generated ledgers (test_kpi_scenario_oracle.py).

The period is March 2026 in the city: [2026-03-01 00:00, 2026-04-01 00:00) city time, that is
[2026-02-28 16:00, 2026-03-31 16:00) UTC; the figures are as of the period's end. The ledgers are written
as the pipeline writes them (naive UTC); access requests go through sharing.requests itself.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from core.calendar import WorkCalendar
from core.config import Settings
from lakehouse import Lake
from metrics.kpis import Period, compute, sharing_statuses
from onesource.cli import main
from schemas import load_registry
from sharing import requests
from tests.helpers import ELEMENTS, firms_dataset, write_registry
from tests.support.kpi_scenario import DEPARTMENTS, OWNERS, file, registry_entries, write_scenario_registry

TZ = dt.timezone(dt.timedelta(hours=8))  # Asia/Shanghai has no daylight saving time
WEEKDAYS = WorkCalendar(national=False)  # Mondays to Fridays (no holiday in March 2026 by this calendar)


def city(month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """A 2026 city wall-clock time as the naive UTC instant the ledgers store."""
    return dt.datetime(2026, month, day, hour, minute, tzinfo=TZ).astimezone(dt.UTC).replace(tzinfo=None)


def insert_loads(lake: Lake, loads: list[tuple[str, str, dt.datetime, bool]]) -> None:
    """(dataset, status, finished_at, delivered data) -> ops.loads; a quality run for each validated one."""
    for i, (name, status, at, delivered) in enumerate(loads):
        load_id = f"l{i:04d}-{name}"
        lake.con.execute("INSERT INTO lake.ops.loads (load_id, dataset, owner, status, sha256, started_at, finished_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", [load_id, name, OWNERS[name], status,
                                                         f"sha-{i}" if delivered else None,
                                                         at - dt.timedelta(minutes=1), at])
        if status in ("published", "quarantined"):
            lake.con.execute("INSERT INTO lake.ops.quality_runs (load_id, dataset, owner, run_at, passed) "
                             "VALUES (?, ?, ?, ?, ?)", [load_id, name, OWNERS[name], at, status == "published"])


def insert_versions(lake: Lake, registered: dict[str, dt.datetime]) -> None:
    for name, at in registered.items():
        lake.con.execute("INSERT INTO lake.ops.schema_versions (subject, kind, version, registered_at) "
                         "VALUES (?, 'dataset', 1, ?)", [name, at])


def insert_events(lake: Lake, events: list[tuple[str, str, str, dt.datetime]]) -> None:
    """(department, dataset, decision, event_at) -> ops.audit_events."""
    for seq, (dept, name, decision, at) in enumerate(events):
        lake.con.execute("INSERT INTO lake.ops.audit_events (seq, event_at, department, user_name, decision, tables, "
                         "rows) VALUES (?, ?, ?, 'u', ?, ?, 1)",
                         [seq, at, dept, decision, [name]])


def insert_consistency(lake: Lake, runs: list[tuple[dt.datetime, list[tuple[str, str, str, int, int]]]]) -> None:
    """(checked_at, [(dataset, column, element, compared, equal)]) -> ops.consistency_results."""
    for at, rows in runs:
        run_id = f"{at:%Y%m%dT%H%M%S}-run"
        for name, column, element, compared, equal in rows:
            lake.con.execute("INSERT INTO lake.ops.consistency_results VALUES (?, ?, ?, ?, ?, ?, 'firms', 'amr', ?, ?)",
                             [run_id, at, name, OWNERS[name], element, column, compared, equal])


@pytest.fixture(scope="module")
def march(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("march") / "home")
    registry = write_scenario_registry(settings)
    with Lake(settings.lake) as lake:
        lake.con.execute("BEGIN TRANSACTION")  # one commit for the hand-written ledgers
        # firms: published every day at 02:00 but the 10th and 11th (the extract never came), and on
        # 1 April at 02:00 (after the period: 31 March 18:00 UTC, counted nowhere in March)
        firms = [("firms", "published", city(3, d, 2), True) for d in range(1, 32) if d not in (10, 11)]
        loads = [*firms, ("firms", "published", city(4, 1, 2), True),
                 # taxpayers: registered 28 March 09:00; published 28th, 29th, 31st 03:00, then quarantined 31st 10:00
                 ("taxpayers", "published", city(3, 28, 12), True), ("taxpayers", "published", city(3, 29, 12), True),
                 ("taxpayers", "published", city(3, 31, 3), True), ("taxpayers", "quarantined", city(3, 31, 10), True),
                 # moves: registered 31 March 04:00, published 05:00 (not_shared all the same)
                 ("moves", "published", city(3, 31, 5), True),
                 # licences (monthly, old system): published 15 February, its March extract quarantined
                 ("licences", "published", city(2, 15, 9), True), ("licences", "quarantined", city(3, 20, 9), True),
                 # permits (weekly): published 2, 16 and 30 March at 09:00; a source outage on the 23rd
                 ("permits", "published", city(3, 2, 9), True), ("permits", "published", city(3, 16, 9), True),
                 ("permits", "failed", city(3, 23, 9), False), ("permits", "published", city(3, 30, 9), True)]
        insert_loads(lake, loads)
        insert_versions(lake, {"firms": city(2, 1, 10), "taxpayers": city(3, 28, 9), "moves": city(3, 31, 4),
                               "permits": city(2, 1, 10), "hrss_people": city(3, 25, 10)})  # licences: none
        insert_events(lake, [
            ("tax", "firms", "allowed", city(3, 15, 10)),       # firms fresh (02:00 load): use
            ("hrss", "firms", "allowed", city(3, 11, 9)),       # firms' last load 9th 02:00: overdue then
            ("amr", "firms", "allowed", city(3, 20, 9)),        # the owner: never use
            ("operator", "firms", "allowed", city(3, 21, 9)),   # not a department
            ("amr", "permits", "allowed", city(3, 10, 9)),      # permits' last load 2nd 09:00: 8 days, overdue
            ("tax", "permits", "refused", city(3, 31, 10)),     # refused: no read
            ("tax", "licences", "allowed", city(3, 5, 9)),      # licences is not shared at the period's end
            ("amr", "taxpayers", "allowed", city(3, 31, 11)),   # taxpayers quarantined: stale snapshot
            ("tax", "firms", "allowed", city(4, 1, 1)),         # after the period
        ])
        insert_consistency(lake, [
            (city(3, 15, 20), [("taxpayers", "enterprise_name", "enterprise_name", 10, 5)]),  # an older run
            (city(3, 31, 20), [("taxpayers", "enterprise_name", "enterprise_name", 10, 8),
                               ("taxpayers", "enterprise_status", "enterprise_status", 10, 10)]),
            (city(4, 1, 1), [("taxpayers", "enterprise_name", "enterprise_name", 10, 0)]),  # after as_of
        ])
        lake.con.execute("COMMIT")

        def ask(dept, dataset, at):
            return requests.create(lake, registry, dept, dataset, purpose="比对", requested_by="analyst",
                                   calendar=WEEKDAYS, now=at)

        # R1, Tuesday 3 March 10:00: due by the end of Tuesday 10 March in the city (4, 5, 6, 9, 10);
        # approved at 07:30 on Wednesday 11 March, the day after: late (in UTC, 10 March 23:30, it would not be)
        r1 = ask("amr", "taxpayers", city(3, 3, 10))
        requests.approve(lake, registry, r1.request_id, owner="tax", decided_by="o", now=city(3, 11, 7, 30))
        # R2, Tuesday 3 March 07:00 (still Monday in UTC): also due by the end of 10 March in the city;
        # approved at 07:30 on its deadline day: on time
        r2 = ask("hrss", "taxpayers", city(3, 3, 7))
        requests.approve(lake, registry, r2.request_id, owner="tax", decided_by="o", now=city(3, 10, 7, 30))
        # R3, Friday 13 March 23:30: due by the end of Friday 20 March; refused with a reason at 01:00 on
        # Saturday 21 March in the city (20 March 17:00 UTC): late
        r3 = ask("hrss", "taxpayers", city(3, 13, 23, 30))
        requests.refuse(lake, r3.request_id, owner="tax", decided_by="o", reason="超出职责范围", now=city(3, 21, 1))
        # R4: firms is unconditional: approved at once, on time
        ask("tax", "firms", city(3, 5, 10))
        # R5, Monday 16 March: due the 23rd; a refusal recorded without a reason is no decision
        r5 = ask("tax", "hrss_people", city(3, 16, 10))
        lake.con.execute("UPDATE lake.ops.access_requests SET status = 'refused', decided_at = ?, reason = NULL "
                         "WHERE request_id = ?", [city(3, 18, 10), r5.request_id])
        # R6, Wednesday 25 March: due by the end of 1 April, not in March
        ask("amr", "hrss_people", city(3, 25, 10))
        assert r1.due_at == city(3, 11) and r2.due_at == city(3, 11) and r3.due_at == city(3, 21)
        result = compute(lake, registry, Period.month("2026-03"))
    return settings, registry, result


def figure(result, kpi, dept=None):
    scope = result["city"] if dept is None else next(d for d in result["departments"] if d["code"] == dept)
    f = scope[kpi]
    return f["numerator"], f["denominator"], f["value"]


def test_every_kpi_of_march_worked_out_by_hand(march):
    _, _, result = march
    assert result["period"] == "2026-03" and result["as_of"] == "2026-03-31 16:00:00"  # the city's midnight
    # sharing: firms (last load 31st 02:00, 22 h old, daily) and permits (30th 09:00, 1 d 15 h, weekly);
    # not taxpayers (quarantined last), moves (not_shared), licences (quarantined), hrss_people (never)
    assert figure(result, "sharing_rate") == (2, 6, 0.3333)
    # usage, over the 2 shared datasets: firms read by tax on the 15th while fresh; permits read only by
    # amr on the 10th, 8 days after its last weekly load (overdue, not shared then) -> 1/2. The reads of
    # licences and of quarantined taxpayers do not count (not shared); the owner and the operator never.
    assert figure(result, "usage_rate") == (1, 2, 0.5)
    # reuse: firms is the only authoritative dataset; tax and hrss read it in March (amr owns it, the
    # operator is no department) -> 2 / 1
    assert figure(result, "reuse_factor") == (2, 1, 2.0)
    # duplicate collection, (department, element) pairs collected: (amr, uscc|enterprise_name|
    # enterprise_status) are the authority's own (3, none duplicate); (tax, enterprise_name) is a copy (1);
    # taxpayers' uscc is its key, declared `references: authority` (the identifier through which it
    # references firms): not collected, so (tax, uscc) is no pair at all; taxpayers' status is
    # from_authority: no pair; permits' uscc is also its key but NOT declared a reference: (hrss, uscc)
    # counts (1); (hrss, enterprise_name) from hrss_people (1) -> (1 + 1 + 1) / (3 + 1 + 1 + 1) = 3/6
    assert figure(result, "duplicate_collection_rate") == (3, 6, 0.5)
    # requests due in March: R1 late, R2 on time, R3 late, R4 on time, R5 undecided -> 2/5
    assert figure(result, "request_fulfilment_rate") == (2, 5, 0.4)
    assert (result["approval_rate"]["city"]["numerator"], result["approval_rate"]["city"]["denominator"]) == (3, 4)
    # interconnection: amr_reg (firms 22 h), tax_core (taxpayers published 31st 03:00, 21 h, before its
    # quarantined load), hrss_sys (permits, 1 d 15 h, weekly); not amr_old (licences: 15 Feb) -> 3/4
    assert figure(result, "interconnection_rate") == (3, 4, 0.75)
    # quality: firms 29/29 (1 March 02:00 is 28 Feb 18:00 UTC, but March in the city), taxpayers 3/4,
    # moves 1/1, licences 0/1, permits 3/3 -> 36/38
    assert figure(result, "quality_pass_rate") == (36, 38, 0.9474)
    # timeliness, windows closing in March after registration: firms 29/31 (10th, 11th missed);
    # taxpayers 3/4 (28th-31st, the 30th missed); moves 1/1 (31st); licences 1/1 (March, its quarantined
    # extract arrived); permits 2/5 (weeks from 23 Feb, 2, 9, 16, 23 March: extracts in those of the 2nd
    # and the 16th; the outage delivered nothing; the week from the 30th closes in April); hrss_people 0/7
    # (25th-31st) -> 36/49
    assert figure(result, "timeliness") == (36, 49, 0.7347)
    # consistency, the last run by the period's end: taxpayers' enterprise_name 8/10; its status is
    # from_authority (10/10 by construction) and does not count -> 8/10
    assert figure(result, "consistency_rate") == (8, 10, 0.8)


def test_per_department_figures_and_their_members(march):
    _, _, result = march
    assert figure(result, "request_fulfilment_rate", "tax") == (1, 3, 0.3333)  # R1, R2, R3: the owner decides
    assert figure(result, "request_fulfilment_rate", "amr") == (1, 1, 1.0)    # R4
    assert figure(result, "request_fulfilment_rate", "hrss") == (0, 1, 0.0)   # R5
    assert figure(result, "timeliness", "hrss") == (2, 12, 0.1667)            # permits 2/5, hrss_people 0/7
    assert figure(result, "interconnection_rate", "amr") == (1, 2, 0.5)
    # every figure is the sum of its members, and the members say why
    members = result["members"]
    for kpi in ("sharing_rate", "timeliness", "consistency_rate"):
        mine = [m for m in members if m["kpi"] == kpi]
        assert (sum(m["numerator"] for m in mine), sum(m["denominator"] for m in mine)) == figure(result, kpi)[:2]
    why = {m["item"]: m["note"] for m in members if m["kpi"] == "sharing_rate"}
    assert why["taxpayers"].startswith("last load failed its quality checks") and why["firms"] is None
    missed = next(m for m in members if m["kpi"] == "timeliness" and m["item"] == "firms")["note"]
    assert "03-10 00:00, 03-11 00:00" in missed  # city days
    late = {m["item"]: m for m in members if m["kpi"] == "request_fulfilment_rate"}
    assert any("decided 2026-03-11 07:30, due by the end of 2026-03-10" in m["note"] for m in late.values())


def test_status_and_metrics_count_the_same_shared_datasets(march, monkeypatch, capsys):
    settings, registry, result = march
    with Lake(settings.lake, read_only=True) as lake:
        then = sharing_statuses(lake, registry, as_of=city(4, 1))
        now = sharing_statuses(lake, registry)
    assert sorted(n for n, r in then.items() if r is None) == ["firms", "permits"]
    assert {d["dataset"]: d["counted_shared"] for d in result["datasets"]} == {n: r is None for n, r in then.items()}
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    main(["status", "--json"])
    shown = {d["dataset"]: d["counted_shared"] for d in json.loads(capsys.readouterr().out)}
    assert shown == {n: r is None for n, r in now.items()}
    assert main(["metrics", "--json"]) == 0
    current = json.loads(capsys.readouterr().out)["city"]["sharing_rate"]
    assert current["numerator"] == sum(shown.values())  # months later everything is overdue: 0 of 6 both ways


def test_a_declared_reference_excuses_only_its_own_column(tmp_path):
    """The pair is per department: permits declaring its credit code a reference takes (hrss, uscc) out only
    while no other hrss dataset holds the code undeclared; a second hrss dataset's undeclared key puts it back."""
    from metrics.kpis import _duplicates

    def rate(entries):
        root = write_registry(tmp_path / f"r{len(entries)}", entries, elements=ELEMENTS, departments=DEPARTMENTS)
        members, _ = _duplicates(load_registry(root))
        return sum(m.numerator for m in members), sum(m.denominator for m in members)

    entries = registry_entries()
    permits = next(e for e in entries if e["name"] == "permits")
    permits["columns"][0] = {**permits["columns"][0], "references": "authority"}
    # March's 3/6 without (hrss, uscc): amr's 3 own pairs, (tax, name), (hrss, name) -> 2/5
    assert rate(entries) == (2, 5)
    uscc = {"name": "uscc", "source": "统一社会信用代码", "element": "uscc", "required": True}
    grants = firms_dataset(name="grants", owner="hrss", system="hrss_sys", connector=file("hrss/grants/*.csv"),
                           columns=[uscc])
    # grants (hrss) holds the code as its key, undeclared: (hrss, uscc) is a duplicate pair again -> 3/6
    assert rate([*entries, grants]) == (3, 6)
