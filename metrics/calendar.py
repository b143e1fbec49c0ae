"""Working days for SLAs: weekends and public holidays excluded, make-up working days included.

The national calendar (国务院办公厅 holiday notices, with 调休 make-up days) comes from the
``chinese-calendar`` package; a city adds its own days in ``$ONESOURCE_HOME/calendar.yaml``::

    holidays: [2026-10-09]      # extra days off
    workdays: [2026-10-10]      # extra working days

Beyond the years the package knows, weekends alone decide (and a holiday listed in the file).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class WorkCalendar:
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    workdays: frozenset[dt.date] = field(default_factory=frozenset)
    national: bool = True
    """Use the national calendar (chinese-calendar) where it has the year."""

    @classmethod
    def load(cls, path: Path | None) -> WorkCalendar:
        if path is None or not path.exists():
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls(frozenset(_dates(data.get("holidays"))), frozenset(_dates(data.get("workdays"))),
                   bool(data.get("national", True)))

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        if self.national:
            import chinese_calendar

            try:
                return chinese_calendar.is_workday(day)
            except NotImplementedError:  # a year the package does not cover yet
                pass
        return day.weekday() < 5

    def add_working_days(self, start: dt.datetime, days: int) -> dt.datetime:
        """The deadline ``days`` working days after ``start``: the end (midnight) of the ``days``-th
        working day after the day of ``start``, which itself does not count."""
        day, left = start.date(), days
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time())


def _dates(values) -> list[dt.date]:
    return [v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in values or []]
