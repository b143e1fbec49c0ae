"""Working days for SLAs: weekends and public holidays excluded, make-up working days included.

The national calendar (国务院办公厅 holiday notices, with 调休 make-up days) comes from the
``chinese-calendar`` package; a city adds its own days in ``$ONESOURCE_HOME/calendar.yaml``::

    holidays: [2026-10-09]      # extra days off
    workdays: [2026-10-10]      # extra working days

Beyond the years the package knows, weekends alone decide (and a holiday listed in the file).

Days are the city's (``tz``, ``Settings.city_timezone``): a request made at 07:30 on a Tuesday in the
city was made on Tuesday, although it is still Monday in UTC, and its deadline is the city's midnight.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from core.citytime import DEFAULT_CITY_TIMEZONE, local_date, midnight

if TYPE_CHECKING:
    from core.config import Settings


@dataclass(frozen=True)
class WorkCalendar:
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    workdays: frozenset[dt.date] = field(default_factory=frozenset)
    national: bool = True
    """Use the national calendar (chinese-calendar) where it has the year."""
    tz: str = DEFAULT_CITY_TIMEZONE
    """The city's time zone: where a day begins and ends."""

    @classmethod
    def load(cls, path: Path | None, tz: str = DEFAULT_CITY_TIMEZONE) -> WorkCalendar:
        if path is None or not path.exists():
            return cls(tz=tz)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls(frozenset(_dates(data.get("holidays"))), frozenset(_dates(data.get("workdays"))),
                   bool(data.get("national", True)), tz)

    @classmethod
    def for_settings(cls, settings: Settings) -> WorkCalendar:
        """The home's calendar file, in the home's city time zone."""
        return cls.load(settings.calendar_file, settings.city_timezone)

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        if self.national:
            import chinese_calendar

            try:
                return bool(chinese_calendar.is_workday(day))
            except NotImplementedError:  # a year the package does not cover yet
                pass
        return day.weekday() < 5

    def add_working_days(self, start: dt.datetime, days: int) -> dt.datetime:
        """The deadline ``days`` working days after ``start`` (a UTC instant, naive as the ledgers keep
        it): the end of the ``days``-th working day after the city day of ``start``, which itself does
        not count, i.e. the city's midnight that ends it, returned as a naive UTC instant."""
        day, left = local_date(start, self.tz), days
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return midnight(day + dt.timedelta(days=1), self.tz)


def _dates(values: Iterable[object] | None) -> list[dt.date]:
    return [v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in values or []]
