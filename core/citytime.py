"""City time: every day boundary of the KPIs is a day in the city, not in UTC.

The ledgers (loads, quality runs, requests, audit events) store naive UTC timestamps. A month, an
update-cycle window or a working day, however, begins at midnight *in the city* (Changsha: UTC+8),
so a request decided at 07:30 on its deadline day is on time whatever the hour is in UTC. These
helpers convert between the two; every ``dt.datetime`` they take or give without a time zone is UTC
unless the name says ``local``.

The zone is a setting (``Settings.city_timezone``, ``ONESOURCE_CITY_TIMEZONE``, default
Asia/Shanghai); the functions take its name so that metrics need no settings object.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config import DEFAULT_CITY_TIMEZONE

__all__ = ["DEFAULT_CITY_TIMEZONE", "deadline_day", "local_date", "midnight", "parse_local", "to_local", "to_utc",
           "today", "zone"]


@lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    """The zone called ``name``; an unknown name is a configuration error that says which setting."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        from core.errors import ConfigurationError

        raise ConfigurationError(f"unknown city time zone {name!r} (ONESOURCE_CITY_TIMEZONE): use an IANA "
                                 "name such as Asia/Shanghai") from exc


def utc_now() -> dt.datetime:
    """Now, as naive UTC: how the ledger and the audit store every time."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _aware_utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def to_local(at: dt.datetime, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.datetime:
    """A UTC instant (naive, or aware in any zone) as the city's wall-clock time, naive."""
    return _aware_utc(at).astimezone(zone(tz)).replace(tzinfo=None)


def to_utc(local: dt.datetime, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.datetime:
    """A city wall-clock time (naive) as a naive UTC instant, as the ledgers store it."""
    if local.tzinfo is not None:
        return local.astimezone(dt.UTC).replace(tzinfo=None)
    return local.replace(tzinfo=zone(tz)).astimezone(dt.UTC).replace(tzinfo=None)


def midnight(day: dt.date, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.datetime:
    """The UTC instant at which ``day`` begins in the city."""
    return to_utc(dt.datetime.combine(day, dt.time()), tz)


def local_date(at: dt.datetime, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.date:
    """The city's calendar day of a UTC instant."""
    return to_local(at, tz).date()


def today(tz: str = DEFAULT_CITY_TIMEZONE, now: dt.datetime | None = None) -> dt.date:
    return local_date(now or dt.datetime.now(dt.UTC), tz)


def deadline_day(due: dt.datetime, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.date:
    """The last city day a deadline (the midnight that ends it, in UTC) leaves: 'decide by' this day."""
    return (to_local(due, tz) - dt.timedelta(microseconds=1)).date()


def parse_local(text: str, tz: str = DEFAULT_CITY_TIMEZONE) -> dt.datetime:
    """``--as-of 2026-03-31T18:00``: a time without a zone is the city's; with one, as given. Naive UTC."""
    at = dt.datetime.fromisoformat(text)
    return to_utc(at, tz)
