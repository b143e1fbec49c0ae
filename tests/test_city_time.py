"""The city's time zone decides every day boundary: settings, periods, windows, working days, deadlines."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.calendar import WorkCalendar
from core.citytime import deadline_day, local_date, parse_local, to_local, to_utc
from core.config import DEFAULT_CITY_TIMEZONE, Settings
from core.errors import ConfigurationError
from metrics.kpis import Period, closing_windows

WEEKDAYS = WorkCalendar(national=False)


def test_the_city_zone_is_a_setting_passed_to_child_processes(tmp_path):
    assert DEFAULT_CITY_TIMEZONE == "Asia/Shanghai"
    assert Settings.from_env({"ONESOURCE_HOME": str(tmp_path)}).city_timezone == "Asia/Shanghai"
    settings = Settings.from_env({"ONESOURCE_HOME": str(tmp_path), "ONESOURCE_CITY_TIMEZONE": "Asia/Urumqi",
                                  "ONESOURCE_CATALOG": f"sqlite:{tmp_path}/c.sqlite"})
    assert settings.city_timezone == "Asia/Urumqi" and settings.lake.catalog.endswith("c.sqlite")
    assert settings.environ()["ONESOURCE_CITY_TIMEZONE"] == "Asia/Urumqi"
    assert WorkCalendar.for_settings(settings).tz == "Asia/Urumqi"
    with pytest.raises(ConfigurationError, match="unknown city time zone"):
        Period.month("2026-03", tz="Mars/Olympus")


def test_a_month_begins_at_the_city_midnight():
    march = Period.month("2026-03")
    assert (march.start, march.end) == (dt.datetime(2026, 2, 28, 16), dt.datetime(2026, 3, 31, 16))
    assert march.label == "2026-03" and march.previous().label == "2026-02"
    # the first hours of 1 April in the city are still 31 March in UTC: April's, not March's
    assert Period.month(today=local_date(dt.datetime(2026, 3, 31, 17))).label == "2026-04"
    assert Period.month("2026-03", tz="UTC").start == dt.datetime(2026, 3, 1)


def test_deadlines_are_the_city_midnight_ending_the_fifth_working_day():
    # Tuesday 3 March 07:00 in the city is Monday 23:00 UTC: the request day is Tuesday
    requested = to_utc(dt.datetime(2026, 3, 3, 7))
    due = WEEKDAYS.add_working_days(requested, 5)
    assert to_local(due) == dt.datetime(2026, 3, 11) and deadline_day(due) == dt.date(2026, 3, 10)
    # decided at 07:30 on the deadline day: on time; at 07:30 the day after: late, although both are
    # before the UTC reading's deadline of 11 March 00:00 UTC (08:00 in the city)
    assert to_utc(dt.datetime(2026, 3, 10, 7, 30)) <= due < to_utc(dt.datetime(2026, 3, 11, 7, 30))
    # the same calendar in UTC keeps the old, UTC reading: Monday was the request day
    assert WorkCalendar(national=False, tz="UTC").add_working_days(requested, 5) == dt.datetime(2026, 3, 10)


def test_as_of_without_a_zone_is_city_time():
    assert parse_local("2026-04-01T00:00") == dt.datetime(2026, 3, 31, 16)
    assert parse_local("2026-04-01T00:00+00:00") == dt.datetime(2026, 4, 1)


@given(st.sampled_from(["daily", "weekly", "monthly", "quarterly", "yearly"]),
       st.integers(2020, 2030), st.integers(1, 12))
def test_windows_begin_at_city_midnights_and_each_closes_in_exactly_one_month(cycle, year, month):
    period = Period.month(f"{year}-{month:02d}")
    for begin, end in closing_windows(cycle, period.start, period.end):
        assert to_local(begin).time() == dt.time() and to_local(end).time() == dt.time()
        assert period.start < end <= period.end
        nxt = period.end
        assert not any(e == end for _, e in closing_windows(cycle, nxt, Period.month(
            f"{to_local(nxt):%Y-%m}").end))
