"""Matching a masked element: the daily quota that keeps it from becoming enumeration.

A department that legitimately holds full values (social security verifying its insured persons against
the resident register, 参保核验) may be granted **match** on a masked column. In SQL it writes
``match_value(resident_id, '430102199001011234')``: true on the rows whose raw value equals the supplied one,
false elsewhere; the raw value itself never leaves the policy relation (sharing.policy). Equality only,
against literals only.

Each distinct value a department matches against a column counts once against that column's daily quota
(the grant's ``daily_quota``, city day). The ledger is a small SQLite file under the home: several
processes (CLI, servers) charge it under one transaction, so the quota holds across them. A query that
would pass the quota is refused before it runs (and audited as refused); values matched again the same
day are free. Values are kept as keyed hashes, never in clear.

Limits, on purpose: a quota bounds how fast the identifier space can be searched, not whether a single
guessed value can be confirmed; the resident ID's mask (first 6, last 4) leaves the birth date unknown,
~36,500 dates of which the check digit keeps ~1 in 11, so confirming one person by brute force needs
thousands of matches: days of a department's quota, each one audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import sqlite3
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from sharing.exceptions import QueryRefused
from sharing.grants import Access
from sharing.policy import Match

CITY_TZ = ZoneInfo("Asia/Shanghai")


def city_day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).astimezone(CITY_TZ).date().isoformat()


class MatchLedger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS spent (day TEXT, department TEXT, dataset TEXT, column_name TEXT, "
                        "value_hash TEXT, PRIMARY KEY (day, department, dataset, column_name, value_hash))")
            con.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('key', ?)", [secrets.token_hex(32)])
            self._key = bytes.fromhex(con.execute("SELECT v FROM meta WHERE k = 'key'").fetchone()[0])

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def _hash(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def spend(self, department: str, access: dict[str, Access], matches: tuple[Match, ...],
              day: str | None = None) -> dict[str, int]:
        """Charge the query's distinct values; refuse it (charging nothing) when a column's quota would be
        passed. Returns ``dataset.column`` -> values used today after this query."""
        day = day or city_day()
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            used: dict[str, int] = {}
            for m in dict.fromkeys(matches):
                con.execute("INSERT OR IGNORE INTO spent VALUES (?, ?, ?, ?, ?)",
                            [day, department, m.dataset, m.column, self._hash(m.value)])
            for dataset, column in Counter((m.dataset, m.column) for m in matches):
                n = con.execute("SELECT count(*) FROM spent WHERE day = ? AND department = ? AND dataset = ? "
                                "AND column_name = ?", [day, department, dataset, column]).fetchone()[0]
                quota = access[dataset].match.get(column, 0)
                if n > quota:
                    con.execute("ROLLBACK")
                    raise QueryRefused(f"the match quota on {dataset}.{column} is {quota} distinct values a day "
                                       f"and this query would take it to {n}; it resets at midnight (city time), "
                                       f"or ask the owner for a larger quota")
                used[f"{dataset}.{column}"] = n
            con.execute("COMMIT")
            return used
        finally:
            con.close()
