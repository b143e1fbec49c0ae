"""The rules of docs/kpi-definitions.md that keep the figures honest, on scenarios whose values are known:
working days and the SLA, refusals without a reason, timeliness windows, and the KPI tables
published to the shared zone and read back with governed SQL."""

from __future__ import annotations

import csv
import datetime as dt

import pytest
from openpyxl import load_workbook

from core.calendar import WorkCalendar
from core.citytime import to_local
from core.citytime import today as city_today
from examples.changsha.city import BUREAU, platform_dataset_entries
from lakehouse import Lake
from metrics.kpis import Period, closing_windows, compute, slot_starts
from metrics.publish import export_rows, publish, write_csv, write_xlsx
from schemas import load_registry
from sharing import requests
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused, RequestError
from tests.helpers import DEPARTMENTS, csv_text, drop, firms_dataset, load, write_registry

# Mondays to Fridays, with one city holiday: Monday 2 March 2026
CALENDAR = WorkCalendar(holidays=frozenset({dt.date(2026, 3, 2)}), national=False)


@pytest.fixture
def city(settings):
    """amr owns `firms` (unconditional); tax owns `taxpayers` (conditional); the bureau publishes KPIs."""
    taxpayers = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="conditional",
                              conditions="稽查", connector={"kind": "file", "path": "tax/*.csv", "format": "csv"})
    bureau = {"code": BUREAU[0], "name": BUREAU[1], "name_en": BUREAU[2],
              "systems": [{"code": BUREAU[3], "name": BUREAU[4]}]}
    elements = {"uscc", "enterprise_name", "enterprise_status"}
    write_registry(settings.registry_dir, [firms_dataset(), taxpayers, *platform_dataset_entries(elements)],
                   departments={"departments": [*DEPARTMENTS["departments"], bureau]})
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings, "firms")] == ["published"]
    return settings, load_registry(settings.registry_dir)


def test_working_days_skip_weekends_holidays_and_count_make_up_days():
    # 10:00 UTC is 18:00 on Friday 27 February in the city; the deadline is the city's midnight ending
    # Monday 9 March (2 March is a holiday), 16:00 UTC
    assert CALENDAR.add_working_days(dt.datetime(2026, 2, 27, 10), 5) == dt.datetime(2026, 3, 9, 16)
    # the national calendar: 1-7 October 2026 off, Saturday 10 October a make-up working day
    national = WorkCalendar()
    assert not national.is_working_day(dt.date(2026, 10, 5)) and national.is_working_day(dt.date(2026, 10, 10))
    assert national.add_working_days(dt.datetime(2026, 9, 29, 10), 5) == dt.datetime(2026, 10, 12, 16)


def test_request_fulfilment_counts_decisions_within_the_sla_and_not_reasonless_refusals(city):
    settings, registry = city
    with Lake(settings.lake) as lake:
        def ask(dept, dataset, when):
            return requests.create(lake, registry, dept, dataset, purpose="稽查比对", requested_by="analyst",
                                   calendar=CALENDAR, now=when)

        # due by the end of 9 March in the city (2 March is a holiday): 16:00 UTC
        on_time = ask("amr", "taxpayers", dt.datetime(2026, 2, 27, 10))
        assert on_time.due_at == dt.datetime(2026, 3, 9, 16) and on_time.status == "pending"
        requests.approve(lake, registry, on_time.request_id, owner="tax", decided_by="tax_owner",
                         now=dt.datetime(2026, 3, 9, 15))
        late = ask("amr", "taxpayers", dt.datetime(2026, 3, 2, 9))  # due end of 9 March, refused on the 12th
        requests.refuse(lake, late.request_id, owner="tax", decided_by="tax_owner", reason="超出职责范围",
                        now=dt.datetime(2026, 3, 12, 9))
        reasonless = ask("amr", "taxpayers", dt.datetime(2026, 3, 3, 9))  # due end of 10 March
        with pytest.raises(RequestError, match="needs a reason"):
            requests.refuse(lake, reasonless.request_id, owner="tax", decided_by="tax_owner", reason="  ")
        # a refusal recorded without a reason (say, imported from an older system) is not a decision
        lake.con.execute("UPDATE lake.ops.access_requests SET status = 'refused', decided_at = ?, reason = NULL "
                         "WHERE request_id = ?", [dt.datetime(2026, 3, 4), reasonless.request_id])
        at_once = ask("tax", "firms", dt.datetime(2026, 3, 5, 9))  # unconditional: approved at once
        assert at_once.status == "approved" and at_once.decided_at == at_once.due_at
        ask("amr", "taxpayers", dt.datetime(2026, 3, 25, 9))  # due 1 April: not in March
        result = compute(lake, registry, Period.month("2026-03"), as_of=dt.datetime(2026, 4, 1), calendar=CALENDAR)
    city_fig = result["city"]["request_fulfilment_rate"]
    assert (city_fig["numerator"], city_fig["denominator"], city_fig["value"], city_fig["target"]) == (2, 4, 0.5, 1.0)
    tax = next(d for d in result["departments"] if d["code"] == "tax")["request_fulfilment_rate"]
    assert (tax["numerator"], tax["denominator"]) == (1, 3)  # charged to the owner who decides
    approvals = result["approval_rate"]["city"]
    assert (approvals["numerator"], approvals["denominator"]) == (2, 3)


def test_approval_writes_a_grant_that_may_be_narrowed_and_revocation_takes_effect(city):
    settings, registry = city
    engine = GovernedEngine(settings, registry)
    with pytest.raises(QueryRefused, match="not granted"):
        engine.query("amr", "SELECT uscc FROM shared.taxpayers")
    with Lake(settings.lake) as lake:
        with pytest.raises(RequestError, match="not shared|belongs"):
            requests.create(lake, registry, "amr", "firms", purpose="x", requested_by="a")
        req = requests.create(lake, registry, "amr", "taxpayers", purpose="比对", requested_by="a",
                              columns=["uscc", "enterprise_name"])
        with pytest.raises(RequestError, match="narrow"):
            requests.approve(lake, registry, req.request_id, owner="tax", decided_by="o", columns=["capital"])
        with pytest.raises(RequestError, match="only the owner"):
            requests.approve(lake, registry, req.request_id, owner="amr", decided_by="o")
        requests.approve(lake, registry, req.request_id, owner="tax", decided_by="o", columns=["uscc"])
    drop(settings, "tax/a.csv", csv_text())
    assert [r.status for r in load(settings, "taxpayers")] == ["published"]
    assert len(engine.query("amr", "SELECT uscc FROM shared.taxpayers").rows) == 3
    with pytest.raises(QueryRefused, match="enterprise_name"):
        engine.query("amr", "SELECT enterprise_name FROM shared.taxpayers")
    with Lake(settings.lake) as lake:
        requests.revoke(lake, req.request_id, owner="tax", decided_by="o", reason="用途结束")
    with pytest.raises(QueryRefused, match="not granted"):
        engine.query("amr", "SELECT uscc FROM shared.taxpayers")


def test_timeliness_counts_closed_update_cycle_windows():
    march = Period.month("2026-03")
    assert march.start == dt.datetime(2026, 2, 28, 16)  # the city's midnight, in UTC
    assert len(slot_starts("daily", march.start, march.end)) == 31
    # ISO weeks that start in March 2026 (city days): the 2nd, 9th, 16th, 23rd and 30th
    assert [to_local(s).day for s, _ in slot_starts("weekly", march.start, march.end)] == [2, 9, 16, 23, 30]
    assert len(slot_starts("monthly", march.start, march.end)) == 1
    assert slot_starts("quarterly", march.start, march.end) == []  # the quarter began in January
    assert len(slot_starts("quarterly", Period.month("2026-04").start, Period.month("2026-04").end)) == 1
    # timeliness counts the windows that close in the period: the week from 23 February closes on
    # 2 March; the week from 30 March closes in April; the first quarter closes at March's end
    assert [to_local(e).day for _, e in closing_windows("weekly", march.start, march.end)] == [2, 9, 16, 23, 30]
    assert [to_local(s).month for s, _ in closing_windows("quarterly", march.start, march.end)] == [1]


def test_timeliness_on_the_lake(city):
    settings, registry = city
    period = Period.month()
    # both were registered today (the first load registers the registry): only the city days from
    # today to the month's end are expected of them
    days = (to_local(period.end).date() - city_today()).days
    with Lake(settings.lake) as lake:
        result = compute(lake, registry, period, as_of=period.end)
    fig = result["city"]["timeliness"]
    # firms arrived today; taxpayers never did: both daily
    assert (fig["numerator"], fig["denominator"]) == (1, 2 * days)


def test_platform_tables_count_nowhere_and_are_published_for_governed_sql(city, tmp_path):
    settings, registry = city
    with Lake(settings.lake) as lake:
        result = compute(lake, registry, Period.month())
        assert result["city"]["sharing_rate"]["denominator"] == 2  # firms, taxpayers; not the KPI tables
        assert result["city"]["interconnection_rate"]["denominator"] == 2  # the bureau's platform is not a source
        written = publish(lake, registry, result)
        publish(lake, registry, result)  # recomputing a period replaces its slice
        rows = export_rows(lake, result["period"])
    assert written["kpi_figures"] == 4 * 10  # (city + 3 departments) x (9 KPIs + approval rate)
    engine = GovernedEngine(settings, registry)
    got = engine.query("tax", "SELECT value, numerator, denominator FROM shared.kpi_figures "
                              "WHERE scope = 'city' AND kpi = 'sharing_rate'").rows
    fig = result["city"]["sharing_rate"]
    assert got == [(fig["value"], fig["numerator"], fig["denominator"])]
    reasons = dict(engine.query("amr", "SELECT dataset, reason FROM shared.kpi_dataset_status").rows)
    assert reasons["taxpayers"].startswith("never loaded")
    pairs = engine.query("amr", "SELECT department, element FROM shared.kpi_duplicate_pairs WHERE duplicate").rows
    assert sorted(pairs) == [("tax", "enterprise_name"), ("tax", "enterprise_status"), ("tax", "uscc")]
    assert len(rows) == 40
    xlsx = load_workbook(write_xlsx(tmp_path / "kpis.xlsx", rows)).active
    assert [c.value for c in xlsx[1]][:4] == ["period", "scope", "scope_name", "kpi"] and xlsx.max_row == 41
    with open(write_csv(tmp_path / "kpis.csv", rows), encoding="utf-8-sig") as fh:
        assert len(list(csv.reader(fh))) == 41


def test_kpis_as_of_a_lake_snapshot(city, monkeypatch, capsys):
    """`--as-of SNAPSHOT` reads the figures as they were when that snapshot was committed."""
    import json

    from metrics.kpis import snapshot_time
    from onesource.cli import main

    settings, registry = city
    with Lake(settings.lake) as lake:
        before = lake.con.execute("SELECT snapshot_id FROM ducklake_snapshots('lake') "
                                  "WHERE snapshot_time < (SELECT max(finished_at) FROM lake.ops.loads) "
                                  "ORDER BY snapshot_id DESC LIMIT 1").fetchone()[0]
        assert snapshot_time(lake, before) < dt.datetime.now(dt.UTC).replace(tzinfo=None)
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["metrics", "--json", "--as-of", str(before)]) == 0
    then = json.loads(capsys.readouterr().out)["city"]["sharing_rate"]
    assert main(["metrics", "--json"]) == 0
    now = json.loads(capsys.readouterr().out)["city"]["sharing_rate"]
    assert (then["numerator"], now["numerator"]) == (0, 1)  # firms was published after that snapshot
    assert main(["metrics", "--as-of", "999999"]) == 1  # an unknown snapshot is a clear error
    assert "no snapshot 999999" in capsys.readouterr().err
