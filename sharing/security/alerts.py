"""Misuse alerts: baselines of governed use from the audit trail, and alerts when use departs from them.

The audit log (sharing.audit) is copied into ``ops.audit_events``; a scan reads it back and evaluates six
rules, each over windows ``window_minutes`` long or, for the hours, over the city's day. Refusals are
counted in sliding windows (a window opens at a refusal that begins a burst: one astride a fixed window's edge
still counts whole); the other rules, and every baseline, in fixed windows aligned on the hour. Thresholds are
:class:`core.config.SecuritySettings` (``ONESOURCE_SECURITY_*``).

==================  =====================================================================================
rule (``kind``)     raised for one user (or department) and one window when
==================  =====================================================================================
refusal_burst       its refused queries in a sliding window >= max(refusal_burst, refusal_factor x its usual
                    refusals) (probing the policy: ungranted tables, columns, datasets)
department_refusals (per department) refused queries of its users, at least two of them, in a sliding window
                    >= max(department_refusal_burst, refusal_factor x the department's usual refusals)
                    (probes spread over several accounts, each under refusal_burst)
sensitive_rows      its sensitive rows > max(sensitive_rows_floor, sensitive_rows_factor x usual), the
                    usual being the higher of the user's own and its department's
match_quota         its queries refused for an exhausted match quota >= match_quota_refusals
unusual_hours       (per city day) its queries at hours outside working hours (work_start..work_end) and
                    outside the hours it queried in during its baseline >= unusual_hours_queries
signin_failures     failed or locked-out sign-ins of the user name >= signin_failures; and per client
                    address (whatever names were tried) >= signin_failures_per_address
==================  =====================================================================================

**Baseline.** A window is compared with the ``baseline_days`` whole city days before the window's own day
(never the day being scanned: a burst this morning does not raise its own bar). "Usual" is the 95th
percentile (nearest rank) of the value over the windows in which the subject was active (had a governed
query): for a user, its windows; for a department, every window of each of its users (for
department_refusals: the department's sum in each window one of its users was active). No history: 0, so
the floor decides.

**Sensitive rows.** An allowed query's rows count as sensitive when a table it read exposed, unmasked, a
column whose registry element has sensitivity >= 3 (:data:`SENSITIVE_LEVEL`): ``columns`` less ``masked``
of its audit entry, i.e. what the policy relations let through, not which columns the answer kept. This is
an upper bound on purpose: an alias (``SELECT resident_id AS x``) cannot hide a read, while an aggregate
over a sensitive table counts its few result rows only. Sensitivity is the registry's at the scan.
An answer that packs a register into few rows counts what it carries: its sensitive rows are the most of
its rows, the list elements of its fullest list column (``list(pid)``), and the text bytes of its fullest
text column over ``sensitive_value_bytes`` (``string_agg``, ``to_json``), which the engine records per
query (:func:`result_measure`: ``values``, ``text_bytes``).

**Alerts** are rows of ``ops.security_alerts``. The id is derived from the rule, the subject and the
window (for refusals, the window opened by the burst's first refusal: the same however often, or however
late, it is scanned, since a window is opened only after the ones before it closed), so a rescan (or the
DAG every 10 minutes over a 24-hour lookback) never raises one twice; an alert raised while its window
was still open keeps what was observed when it was raised. ``evidence`` is JSON with the audit seqs behind
the alert (the first 200) and what else explains it.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import functools
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from struct import unpack_from
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import SecuritySettings, Settings

SENSITIVE_LEVEL = 3
"""Registry sensitivity from which an element counts as sensitive (schemas.model.SENSITIVITY_MEANINGS)."""
SEVERITY = {"refusal_burst": "high", "department_refusals": "high", "sensitive_rows": "high", "match_quota": "medium", "unusual_hours": "medium",
            "signin_failures": "high"}
KINDS = tuple(SEVERITY)
QUERY_DECISIONS = frozenset({"allowed", "refused", "failed"})
MATCH_QUOTA_REASON = "the match quota on "
"""How sharing.match words a refusal for an exhausted quota."""
EVIDENCE_SEQS = 200
EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class Event:
    """One audit entry as the rules read it (a row of ``ops.audit_events``); ``at`` naive UTC."""

    seq: int
    at: dt.datetime
    user: str | None
    department: str | None
    decision: str | None
    kind: str | None = None
    rows: int | None = None
    reason: str | None = None
    exposed: tuple[str, ...] = ()
    address: str | None = None
    channel: str | None = None
    tables: tuple[str, ...] = ()
    values: int | None = None
    """List elements in the answer's fullest list column (``result_measure``)."""
    text_bytes: int | None = None
    """Text bytes in the answer's fullest text column."""

    @property
    def query(self) -> bool:
        """A governed query (catalog questions and administration entries are not)."""
        return self.kind in (None, "query") and self.decision in QUERY_DECISIONS

    @property
    def refused(self) -> bool:
        return self.query and self.decision == "refused"

    @property
    def quota(self) -> bool:
        return self.refused and (self.reason or "").startswith(MATCH_QUOTA_REASON)

    @property
    def signin_failed(self) -> bool:
        return self.kind == "signin" and self.decision in ("failed", "refused")

    def sensitive_rows(self, sensitive: frozenset[str], value_bytes: int = 32) -> int:
        """Rows, or what a packed answer carries (list elements, text bytes / ``value_bytes``), whichever is most."""
        if self.decision != "allowed" or not self.query or not any(c in sensitive for c in self.exposed):
            return 0
        return max(int(self.rows or 0), int(self.values or 0), int(self.text_bytes or 0) // value_bytes)


@dataclass(frozen=True)
class Alert:
    kind: str
    user: str | None
    department: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    observed: float
    baseline: float
    threshold: float
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)
    subject: str = ""
    """What the alert is about when it is not a user (a client address)."""

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    @property
    def alert_id(self) -> str:
        key = f"{self.kind}\n{self.subject or self.user}\n{self.window_start.isoformat()}"
        return "al-" + hashlib.sha256(key.encode()).hexdigest()[:20]

    def row(self, raised_at: dt.datetime) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "kind": self.kind, "severity": self.severity, "user_name": self.user,
                "department": self.department, "window_start": self.window_start, "window_end": self.window_end,
                "observed": float(self.observed), "baseline": float(self.baseline), "threshold": float(self.threshold),
                "evidence": json.dumps(self.evidence, ensure_ascii=False, sort_keys=True, default=str),
                "raised_at": raised_at, "status": "open"}


def sensitive_columns(registry) -> frozenset[str]:
    """``dataset.column`` of every column whose element is sensitive (level >= 3)."""
    levels = {e.name: e.sensitivity for e in registry.elements}
    return frozenset(f"{ds.name}.{c.name}" for ds in registry.datasets for c in ds.columns
                     if c.element and levels.get(c.element, 0) >= SENSITIVE_LEVEL)


def result_measure(result) -> dict[str, int]:
    """``values``: list elements (innermost, of a list or map column) in the answer's fullest such column;
    ``text_bytes``: UTF-8 bytes in its fullest text or binary column; each omitted when 0. On Arrow batches
    (the servers) it reads the offsets only: a few microseconds whatever the rows; on Python rows (the CLI) it
    goes through the list and text columns named by their DuckDB types."""
    rows = result.held_rows  # the form the result was built in: never convert it for this
    values = text = 0
    if rows is None:
        kinds = _arrow_kinds()
        batches = result.held_batches
        for i, f in enumerate(result.held_schema or ()):
            if f.type.id in kinds[4]:  # a plain number or date: nothing packed (most columns)
                continue
            v = t = 0
            for b in batches:
                more_v, more_t = _arrow_column(kinds, b.column(i))
                v, t = v + more_v, t + more_t
            values, text = max(values, v), max(text, t)
    else:
        for i, kind in enumerate(result.types):
            if kind.endswith("]") or kind.startswith("MAP"):
                values = max(values, sum(_python_elements(r[i]) for r in rows))
            elif kind.startswith("STRUCT"):
                measured = [_python_cell(r[i]) for r in rows]
                values = max(values, sum(m[0] for m in measured))
                text = max(text, sum(m[1] for m in measured))
            elif kind in ("VARCHAR", "JSON", "BLOB") or kind.startswith("VARCHAR"):
                text = max(text, sum(len(v.encode()) if isinstance(v, str) else len(v) for r in rows
                                     if (v := r[i]) is not None))
    return {k: v for k, v in (("values", values), ("text_bytes", text)) if v}


def _arrow_column(kinds: tuple, array) -> tuple[int, int]:
    """(list elements, text bytes) of one column; a struct's fields add up (``{'ids': list(pid)}`` carries
    every pid as ``list(pid)`` does)."""
    lists, widths, views, struct, _ = kinds
    kind = array.type.id
    if kind in lists:
        return _arrow_elements(lists, array), 0
    if kind in widths:
        return 0, _arrow_span(array, widths[kind])
    if kind in views:
        return 0, array.nbytes
    if kind == struct:
        parts = [_arrow_column(kinds, child) for child in array.flatten()]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    return 0, 0


def _python_cell(value) -> tuple[int, int]:
    """(list elements, text bytes) of one cell of a struct column (a dict of its fields, which are added up:
    lists and maps by their elements, text by its bytes, structs likewise), as :func:`_arrow_column`.
    (A map inside a struct is a dict too, and is read as a struct: its values, not its entries.)"""
    if isinstance(value, list | tuple):
        return _python_elements(value), 0
    if isinstance(value, dict):
        parts = [_python_cell(v) for v in value.values()]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if isinstance(value, str):
        return 0, len(value.encode())
    return (0, len(value)) if isinstance(value, bytes) else (0, 0)


@functools.cache
def _arrow_kinds() -> tuple[frozenset[int], dict[int, int], frozenset[int], int, frozenset[int]]:
    """Arrow type ids: of lists (and maps), of text with its offsets' width, of text views, of a struct, and
    of every type that packs nothing (a per-query test of the type by id: the ``pa.types.is_*`` calls cost
    more than the rest of the measure)."""
    import pyarrow as pa

    lists = frozenset(t.id for t in (pa.list_(pa.int8()), pa.large_list(pa.int8()), pa.list_(pa.int8(), 1),
                                     pa.map_(pa.int8(), pa.int8())))
    widths = {pa.string().id: 4, pa.binary().id: 4, pa.large_string().id: 8, pa.large_binary().id: 8}
    views = frozenset({pa.string_view().id, pa.binary_view().id})
    struct = pa.struct([("a", pa.int8())]).id
    plain = frozenset(t.id for t in (pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                                     pa.uint16(), pa.uint32(), pa.uint64(), pa.float16(), pa.float32(), pa.float64(),
                                     pa.decimal128(9, 2), pa.date32(), pa.date64(), pa.timestamp("us"),
                                     pa.time64("us"), pa.null()))
    return lists, widths, views, struct, plain


def _arrow_span(array, width: int) -> int:
    """Bytes between a variable-length array's first and last offsets (its slice of the data buffer);
    ``width``: of an offset (8 for large_string and large_binary)."""
    if not len(array):
        return 0
    fmt, offsets = "<q" if width == 8 else "<i", array.buffers()[1]
    return unpack_from(fmt, offsets, (array.offset + len(array)) * width)[0] - \
        unpack_from(fmt, offsets, array.offset * width)[0]


def _arrow_elements(lists: frozenset[int], array) -> int:
    """Innermost elements of a list array (list(list(pid)) carries every pid), by its offsets: ``flatten``
    took 2.4 ms for a million-element list, the offsets a few microseconds."""
    while array.type.id in lists:
        if hasattr(array.type, "list_size"):  # a fixed-size list
            first, count = array.offset * array.type.list_size, len(array) * array.type.list_size
        else:
            width = 8 if array.type.id == _large_list_id() else 4
            first = _offset(array, width, array.offset)
            count = _offset(array, width, array.offset + len(array)) - first
        array = array.values.slice(first, count)
    return len(array)


@functools.cache
def _large_list_id() -> int:
    import pyarrow as pa

    return pa.large_list(pa.int8()).id


def _offset(array, width: int, k: int) -> int:
    """The ``k``-th offset of a variable-length array (StringArray has no .offsets accessor)."""
    offsets = array.buffers()[1]
    return unpack_from("<q" if width == 8 else "<i", offsets, k * width)[0] if offsets else 0


def _python_elements(value) -> int:
    if isinstance(value, dict):  # a MAP
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_python_elements(v) if isinstance(v, list | tuple) else 1 for v in value)
    return 0


def window_of(at: dt.datetime, minutes: int) -> dt.datetime:
    """The start of the window holding ``at`` (naive UTC, windows aligned on the epoch: on the hour)."""
    size = minutes * 60
    return EPOCH + dt.timedelta(seconds=(int((at - EPOCH).total_seconds()) // size) * size)


def usual(values: Iterable[float]) -> float:
    """The 95th percentile by nearest rank (0 without values)."""
    ordered = sorted(values)
    return float(ordered[math.ceil(0.95 * len(ordered)) - 1]) if ordered else 0.0


class _Days:
    """City days, hours and midnights (naive UTC), cached: every event asks. The city's hour and day are
    the same throughout a quarter of an hour of UTC (zones' offsets and their changes fall on quarter hours)."""

    def __init__(self, tz: str):
        from core.citytime import midnight, to_local

        self.tz, self._midnight, self._local = tz, midnight, to_local
        self._cache: dict[dt.date, dt.datetime] = {}
        self._quarters: dict[dt.datetime, tuple[dt.date, int]] = {}

    def _quarter(self, at: dt.datetime) -> tuple[dt.date, int]:
        key = at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)
        found = self._quarters.get(key)
        if found is None:
            local = self._local(key, self.tz)
            found = self._quarters[key] = (local.date(), local.hour)
        return found

    def day(self, at: dt.datetime) -> dt.date:
        return self._quarter(at)[0]

    def hour(self, at: dt.datetime) -> int:
        return self._quarter(at)[1]

    def start(self, day: dt.date) -> dt.datetime:
        if day not in self._cache:
            self._cache[day] = self._midnight(day, self.tz)
        return self._cache[day]


def evaluate(events: list[Event], sensitive: frozenset[str], settings: SecuritySettings, now: dt.datetime, *,
             tz: str = "Asia/Shanghai", departments: dict[str, str] | None = None) -> list[Alert]:
    """Every alert the rules raise over the windows that end after ``now - lookback_hours`` and begin at or
    before ``now``. ``events`` must reach back ``baseline_days`` before the first such window's day;
    ``departments``: user name -> department, for sign-ins (their entries carry none)."""
    s, days = settings, _Days(tz)
    first = window_of(now - dt.timedelta(hours=s.lookback_hours), s.window_minutes)
    step = dt.timedelta(minutes=s.window_minutes)
    if first + step <= now - dt.timedelta(hours=s.lookback_hours):
        first += step
    dept_of = dict(departments or {})
    for e in sorted(events, key=lambda e: e.seq):  # a user's department: the one its queries ran as
        if e.query and e.user and e.department:
            dept_of[e.user] = e.department

    # per (user, window) sums, for every event (baseline and scanned alike)
    per: dict[tuple[str, dt.datetime], dict[str, Any]] = defaultdict(
        lambda: {"queries": 0, "refused": 0, "quota": 0, "sensitive": 0, "seqs": defaultdict(list)})
    signins: dict[tuple[str, str, dt.datetime], list[Event]] = defaultdict(list)
    for e in events:
        w = window_of(e.at, s.window_minutes)
        if e.signin_failed:
            if e.user is not None:
                signins["user", e.user, w].append(e)
            if e.address:
                signins["address", e.address, w].append(e)
        if not e.query or not e.user:
            continue
        p = per[e.user, w]
        p["queries"] += 1
        if e.refused:
            p["refused"] += 1
            p["seqs"]["refused"].append(e.seq)
        if e.quota:
            p["quota"] += 1
            p["seqs"]["quota"].append(e.seq)
        rows = e.sensitive_rows(sensitive, s.sensitive_value_bytes)
        if rows:
            p["sensitive"] += rows
            p["seqs"]["sensitive"].append(e.seq)

    def baseline_windows(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The baseline's bounds: a window counts when it lies wholly inside them. Windows are aligned on UTC, city
        days on Changsha's midnight: a window of a whole day begun at UTC midnight holds the first 16 hours of the
        next city day, and counted in that day's baseline (it began before the day did), a burst raised its own
        bar (the live test failed every day from 16:00 to 24:00 UTC)."""
        return days.start(day - dt.timedelta(days=s.baseline_days)), days.start(day)

    by_user_windows: dict[str, list[dt.datetime]] = defaultdict(list)
    by_dept_windows: dict[str, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for user, w in per:
        by_user_windows[user].append(w)
        if user in dept_of:
            by_dept_windows[dept_of[user]].append((user, w))
    stats: dict[tuple[str, str, dt.date], float] = {}

    def usual_of(user: str, metric: str, day: dt.date) -> tuple[float, float]:
        """(the user's usual, its department's usual) of ``metric`` per active window before ``day``."""
        key = (user, metric, day)
        if key not in stats:
            lo, hi = baseline_windows(day)
            stats[key] = usual(per[user, w][metric] for w in by_user_windows[user] if lo <= w and w + step <= hi)
        dept = dept_of.get(user)
        dkey = ("dept:" + (dept or ""), metric, day)
        if dkey not in stats:
            lo, hi = baseline_windows(day)
            stats[dkey] = usual(per[u, w][metric] for u, w in by_dept_windows.get(dept or "", ())
                                if lo <= w and w + step <= hi)
        return stats[key], stats[dkey] if dept is not None else 0.0

    alerts = _refusals(events, s, days, now, dept_of, per, usual_of)
    for (user, w), p in sorted(per.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not first <= w <= now:
            continue
        day, end = days.day(w), w + step
        if p["sensitive"]:
            mine, theirs = usual_of(user, "sensitive", day)
            threshold = max(s.sensitive_rows_floor, s.sensitive_rows_factor * max(mine, theirs))
            if p["sensitive"] > threshold:
                alerts.append(Alert("sensitive_rows", user, dept_of.get(user), w, end, p["sensitive"], max(mine, theirs),
                                    threshold, _evidence(p["seqs"]["sensitive"], user_usual=mine, department_usual=theirs,
                                                         rule=f"sensitive rows > {threshold:g}")))
        if p["quota"] and p["quota"] >= s.match_quota_refusals:
            alerts.append(Alert("match_quota", user, dept_of.get(user), w, end, p["quota"], 0, s.match_quota_refusals,
                                _evidence(p["seqs"]["quota"], rule=f"match-quota refusals >= {s.match_quota_refusals}")))
    alerts += _unusual_hours(events, s, days, now, first, dept_of)
    for (what, who, w), found in sorted(signins.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        limit = s.signin_failures if what == "user" else s.signin_failures_per_address
        if first <= w <= now and len(found) >= limit:
            user = who if what == "user" else None
            alerts.append(Alert("signin_failures", user, dept_of.get(who) if user else None, w, w + step,
                                len(found), 0, limit,
                                _evidence([e.seq for e in found], rule=f"failed sign-ins per {what} >= {limit}",
                                          addresses=sorted({e.address or "" for e in found}),
                                          users=sorted({e.user or "" for e in found}),
                                          channels=sorted({e.channel or "" for e in found})),
                                subject="" if user else f"address:{who}"))
    return alerts


Refusal = tuple[dt.datetime, int, str]
"""(at, seq, user) of a refused query."""


def _bursts(refusals: list[Refusal], size: dt.timedelta,
            enough: Callable[[list[Refusal]], bool]) -> list[list[Refusal]]:
    """Sliding windows over time-ordered refusals: a window opens at the first refusal from which the
    refusals within ``size`` are ``enough``, holds every refusal in [at, at + size), and the next window is
    looked for from the first refusal after it. A window is thus decided by the refusals up to its end only:
    a scan while it is open, or a later one, opens it at the same refusal (the alert's id)."""
    found, i, ats = [], 0, [r[0] for r in refusals]
    while i < len(refusals):
        j = bisect.bisect_left(ats, ats[i] + size, lo=i)
        if enough(refusals[i:j]):
            found.append(refusals[i:j])
            i = j
        else:
            i += 1
    return found


def _refusals(events: list[Event], s: SecuritySettings, days: _Days, now: dt.datetime, dept_of: dict[str, str],
              per: dict, usual_of: Callable) -> list[Alert]:
    """refusal_burst per user and department_refusals per department, in sliding windows. The usual refusals
    are per fixed window (the baseline's, like every rule's): a department's, the sum of its users' in each
    window in which one of them queried."""
    size = dt.timedelta(minutes=s.window_minutes)
    since = now - dt.timedelta(hours=s.lookback_hours)  # windows ending after it, beginning at or before now
    by_user: dict[str, list[Refusal]] = defaultdict(list)
    for e in sorted((e for e in events if e.refused and e.user), key=lambda e: (e.at, e.seq)):
        by_user[e.user].append((e.at, e.seq, e.user))
    alerts: list[Alert] = []
    for user in sorted(by_user):
        def threshold(at: dt.datetime, user: str = user) -> float:
            return max(s.refusal_burst, s.refusal_factor * usual_of(user, "refused", days.day(at))[0])

        for burst in _bursts(by_user[user], size, lambda b, t=threshold: len(b) >= t(b[0][0])):
            start = burst[0][0]
            if since < start + size and start <= now:
                mine = usual_of(user, "refused", days.day(start))[0]
                alerts.append(Alert("refusal_burst", user, dept_of.get(user), start, start + size, len(burst), mine,
                                    threshold(start), _evidence([seq for _, seq, _ in burst],
                                                                rule=f"refused queries >= {threshold(start):g}")))
    by_dept: dict[str, list[Refusal]] = defaultdict(list)
    for user, refused in by_user.items():
        if user in dept_of:
            by_dept[dept_of[user]].extend(refused)
    dept_usual: dict[tuple[str, dt.date], float] = {}

    def department_usual(dept: str, day: dt.date) -> float:
        if (dept, day) not in dept_usual:
            lo_w, hi_w = days.start(day - dt.timedelta(days=s.baseline_days)), days.start(day)
            sums: dict[dt.datetime, int] = defaultdict(int)
            for (u, w), p in per.items():
                if dept_of.get(u) == dept and lo_w <= w and w + size <= hi_w:  # wholly before the day
                    sums[w] += p["refused"]
            dept_usual[dept, day] = usual(sums.values())
        return dept_usual[dept, day]

    for dept in sorted(by_dept):
        def threshold(at: dt.datetime, dept: str = dept) -> float:
            return max(s.department_refusal_burst, s.refusal_factor * department_usual(dept, days.day(at)))

        def enough(burst: list[Refusal], threshold=threshold) -> bool:  # several accounts: one alone is its own
            return len(burst) >= threshold(burst[0][0]) and len({u for _, _, u in burst}) >= 2

        for burst in _bursts(sorted(by_dept[dept]), size, enough):
            start, users = burst[0][0], sorted({u for _, _, u in burst})
            if since < start + size and start <= now:
                limit = threshold(start)
                alerts.append(Alert("department_refusals", None, dept, start, start + size, len(burst),
                                    department_usual(dept, days.day(start)), limit,
                                    _evidence([seq for _, seq, _ in burst], users=users,
                                              rule=f"refused queries of the department's users >= {limit:g}"),
                                    subject=f"department:{dept}"))
    return alerts


def _unusual_hours(events: list[Event], s: SecuritySettings, days: _Days, now: dt.datetime, first: dt.datetime,
                   dept_of: dict[str, str]) -> list[Alert]:
    """Per user and city day: queries outside working hours and outside the user's baseline hours."""
    hours: dict[str, list[tuple[dt.datetime, int, int]]] = defaultdict(list)  # user -> (at, city hour, seq)
    for e in events:
        if e.query and e.user:
            hours[e.user].append((e.at, days.hour(e.at), e.seq))
    alerts = []
    for user in sorted(hours):
        by_day: dict[dt.date, list[tuple[dt.datetime, int, int]]] = defaultdict(list)
        for item in hours[user]:
            by_day[days.day(item[0])].append(item)
        for day in sorted(by_day):
            start, end = days.start(day), days.start(day + dt.timedelta(days=1))
            if end <= first or start > now:
                continue
            lo = days.start(day - dt.timedelta(days=s.baseline_days))
            known = {h for at, h, _ in hours[user] if lo <= at < start}
            odd = sorted((seq, h) for _at, h, seq in by_day[day]
                         if not s.work_start <= h < s.work_end and h not in known)
            if odd and len(odd) >= s.unusual_hours_queries:
                alerts.append(Alert("unusual_hours", user, dept_of.get(user), start, end, len(odd), len(known),
                                    s.unusual_hours_queries,
                                    _evidence([q for q, _ in odd], hours=sorted({h for _, h in odd}),
                                              usual_hours=sorted(known), work_hours=[s.work_start, s.work_end],
                                              rule=f"queries at unusual hours >= {s.unusual_hours_queries}")))
    return alerts


def _evidence(seqs: list[int], **more: Any) -> dict[str, Any]:
    ordered = sorted(seqs)
    return {"seqs": ordered[:EVIDENCE_SEQS], "count": len(ordered), **more}


# ---- the lake: events in, alerts out ----

EVENT_COLUMNS = ("seq, event_at, user_name, department, decision, kind, rows, reason, exposed, address, channel, tables, "
                 "result_values, result_text_bytes")


def read_events(con, since: dt.datetime, until: dt.datetime) -> list[Event]:
    from lakehouse import ledger

    rows = con.execute(f"SELECT {EVENT_COLUMNS} FROM {ledger.ref('audit_events')} WHERE event_at >= ? AND event_at <= ?",
                       [since, until]).fetchall()
    return [Event(seq, at, user, dept, decision, kind, n, reason, tuple(exposed or ()), address, channel,
                  tuple(tables or ()), values, text)
            for seq, at, user, dept, decision, kind, n, reason, exposed, address, channel, tables, values, text in rows]


def user_departments(con) -> dict[str, str]:
    from lakehouse import ledger

    return dict(con.execute(f"SELECT user_name, any_value(department) FROM {ledger.ref('users')} GROUP BY 1").fetchall())


def write_alerts(lake, alerts: list[Alert], raised_at: dt.datetime) -> list[Alert]:
    """Insert the alerts not raised before (by id); returns the new ones."""
    import pyarrow as pa

    from lakehouse import ledger
    from lakehouse.lake import retrying

    if not alerts:
        return []
    new: list[Alert] = []

    def write() -> None:
        new.clear()
        with lake.transaction() as con:
            ids = [a.alert_id for a in alerts]
            known = {r[0] for r in con.execute(f"SELECT alert_id FROM {ledger.ref('security_alerts')} "
                                               "WHERE alert_id IN (SELECT unnest(?))", [ids]).fetchall()}
            new.extend(a for a in dict((a.alert_id, a) for a in alerts).values() if a.alert_id not in known)
            if new:
                con.register("new_security_alerts", pa.Table.from_pylist([a.row(raised_at) for a in new]))
                ledger.insert_select(con, "security_alerts", "SELECT * FROM new_security_alerts")
                con.unregister("new_security_alerts")
                lake.commit_message("security alerts", {"alerts": len(new)})

    retrying(write, lake.settings.commit_retries, "writing security alerts")
    return new


@dataclass(frozen=True)
class ScanResult:
    copied: int
    """Audit entries copied into the lake by this scan."""
    evaluated: int
    """Audit events the rules read (the lookback and its baseline)."""
    raised: list[Alert]
    """Alerts new in this scan."""
    found: int
    """Alerts the rules found, new or raised before."""


def scan(settings: Settings, now: dt.datetime | None = None, registry=None) -> ScanResult:
    """Copy the audit log's new entries into the lake, evaluate the rules, write the new alerts."""
    from lakehouse import Lake
    from schemas import load_registry
    from sharing.audit import AuditLog, sync_to_lake

    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    s = settings.security
    registry = registry or load_registry(settings.registry_dir, settings.cache_dir)
    days = _Days(settings.city_timezone)
    since = days.start(days.day(now - dt.timedelta(hours=s.lookback_hours)) - dt.timedelta(days=s.baseline_days))
    with Lake(settings.lake) as lake:
        log = AuditLog.of(settings)
        try:
            copied = sync_to_lake(lake, log)
        finally:
            log.close()
        events = read_events(lake.con, since, now)
        found = evaluate(events, sensitive_columns(registry), s, now, tz=settings.city_timezone,
                         departments=user_departments(lake.con))
        raised = write_alerts(lake, found, dt.datetime.now(dt.UTC).replace(tzinfo=None))
    return ScanResult(copied, len(events), raised, len(found))


ALERT_COLUMNS = ("alert_id", "kind", "severity", "user_name", "department", "window_start", "window_end", "observed",
                 "baseline", "threshold", "evidence", "raised_at", "status", "closed_by", "closed_at", "close_reason")


def list_alerts(con, *, since: dt.datetime | None = None, kind: str | None = None, status: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Alerts, newest window first (``since``: windows ending after it). An older lake without the table: none."""
    import duckdb

    from lakehouse import ledger

    where, params = ["TRUE"], []
    for clause, value in (("window_end > ?", since), ("kind = ?", kind), ("status = ?", status)):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = (f"SELECT {', '.join(ALERT_COLUMNS)} FROM {ledger.ref('security_alerts')} WHERE {' AND '.join(where)} "
           f"ORDER BY window_start DESC, kind, user_name{f' LIMIT {int(limit)}' if limit else ''}")
    try:
        rows = con.execute(sql, params).fetchall()
    except duckdb.CatalogException:
        return []
    return [{**dict(zip(ALERT_COLUMNS, r, strict=True)), "evidence": json.loads(r[10] or "{}")} for r in rows]


def close_alerts(settings: Settings, ids: list[str], reason: str, by: str) -> list[str]:
    """Close open alerts (audited first: who, which, why); returns the ids closed. An id that is not an open
    alert is an error naming it, and nothing is closed."""
    from core.errors import ConfigurationError
    from lakehouse import Lake, ledger
    from lakehouse.lake import retrying
    from sharing.audit import AuditLog

    if not reason.strip():
        raise ConfigurationError("say why the alerts are closed: --reason 'checked with the department: ...'")
    with Lake(settings.lake) as lake:
        table = ledger.ref("security_alerts")
        found = {r[0]: r[1] for r in lake.con.execute(f"SELECT alert_id, status FROM {table} WHERE alert_id IN "
                                                      "(SELECT unnest(?))", [ids]).fetchall()}
        wrong = [i for i in ids if found.get(i) != "open"]
        if wrong:
            raise ConfigurationError(f"not an open alert: {', '.join(wrong)} (`onesource security alerts --status open` "
                                     "lists them)")
        log = AuditLog.of(settings)
        try:
            log.append(kind="security", action="close-alerts", user=by, department=None, alerts=ids, reason=reason,
                       decision="admin")
        finally:
            log.close()

        def write() -> None:
            with lake.transaction() as con:
                ledger.close_alerts(con, ids, by=by, at=dt.datetime.now(dt.UTC).replace(tzinfo=None), reason=reason)
                lake.commit_message("security alerts closed", {"alerts": len(ids)})

        retrying(write, lake.settings.commit_retries, "closing security alerts")
    return ids


def per_day(alerts: list[dict[str, Any]], tz: str, days: int = 14,
            today: dt.date | None = None) -> tuple[list[str], dict[str, list[int]]]:
    """Alerts per city day (of their window's start) and kind, for the last ``days`` days: (days, kind -> counts)."""
    from core.citytime import local_date

    last = today or local_date(dt.datetime.now(dt.UTC), tz)
    labels = [(last - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}
    counts = {k: [0] * days for k in KINDS}
    for a in alerts:
        i = index.get(local_date(a["window_start"], tz).isoformat())
        if i is not None and a["kind"] in counts:
            counts[a["kind"]][i] += 1
    return labels, counts


# ---- onesource security scan | alerts ----

def add_commands(actions: argparse._SubParsersAction) -> None:
    """Adds this module's `onesource security` actions (each sets ``security_fn``)."""
    p = actions.add_parser("scan", help="copy the audit log into the lake, evaluate the misuse rules over the "
                                        "last ONESOURCE_SECURITY_LOOKBACK_HOURS, and raise new alerts")
    p.add_argument("--now", help="evaluate as of this time (city time unless a zone is given; default: now)")
    p.add_argument("--json", action="store_true", help="print the new alerts as JSON")
    p.set_defaults(security_fn=cmd_scan)
    p = actions.add_parser("alerts", help="list misuse alerts, newest window first")
    p.add_argument("--since", help="alerts whose window ends after this: a time (city time) or 24h, 7d")
    p.add_argument("--kind", choices=KINDS, help="only this rule's alerts")
    p.add_argument("--status", choices=("open", "closed"), help="only alerts with this status")
    p.add_argument("--json", action="store_true", help="JSON, one object per alert, with its evidence")
    p.set_defaults(security_fn=cmd_alerts)
    p = actions.add_parser("close", help="close open alerts once looked into (audited, with the reason)")
    p.add_argument("alert_ids", nargs="+", metavar="ALERT_ID")
    p.add_argument("--reason", required=True, help="what was found (kept with the alert and in the audit log)")
    p.add_argument("--by", help="who closes them (default: $USER)")
    p.set_defaults(security_fn=cmd_close)


def _when(text: str, tz: str) -> dt.datetime:
    import re

    from core.citytime import parse_local
    from core.errors import ConfigurationError

    found = re.fullmatch(r"(\d+)([hd])", text.strip())
    if found:
        n = int(found.group(1))
        return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(**{"hours" if found.group(2) == "h" else "days": n})
    try:
        return parse_local(text, tz)
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a time: write 2026-03-31T18:00 (city time), or 24h, 7d") from None


def line(a: dict[str, Any] | Alert, tz: str) -> str:
    from core.citytime import to_local

    d = {**a.row(dt.datetime.now(dt.UTC)), "evidence": a.evidence} if isinstance(a, Alert) else a
    who = d["user_name"] or ("accounts " + ", ".join(d["evidence"]["users"]) if "users" in d["evidence"] and
                             not d["evidence"].get("addresses") else
                             "address " + ", ".join(d["evidence"].get("addresses", [])))
    start = to_local(d["window_start"], tz)
    return (f"{d['alert_id']}  {d['severity']:<6} {d['kind']:<16} {who} ({d['department'] or '-'})  "
            f"{start:%Y-%m-%d %H:%M} city time  observed {d['observed']:g}, usual {d['baseline']:g}, "
            f"threshold {d['threshold']:g}")


def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    now = _when(args.now, settings.city_timezone) if args.now else None
    result = scan(settings, now)
    if args.json:
        print(json.dumps([{**a.row(dt.datetime.now(dt.UTC)), "evidence": a.evidence} for a in result.raised],
                         ensure_ascii=False, default=str, indent=1))
        return 0
    for a in result.raised:
        print(line(a, settings.city_timezone))
    print(f"security scan: {result.copied} audit entries copied, {result.evaluated} events read, "
          f"{len(result.raised)} new alert(s) ({result.found - len(result.raised)} raised before)")
    return 0


def cmd_close(args: argparse.Namespace, settings: Settings) -> int:
    import os

    closed = close_alerts(settings, list(dict.fromkeys(args.alert_ids)), args.reason,
                          args.by or os.environ.get("USER") or "cli")
    print(f"closed {len(closed)} alert(s): {', '.join(closed)}")
    return 0


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from lakehouse import Lake

    since = _when(args.since, settings.city_timezone) if args.since else None
    with Lake(settings.lake, read_only=True) as lake:
        found = list_alerts(lake.con, since=since, kind=args.kind, status=args.status)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, default=str, indent=1))
        return 0
    for a in found:
        print(line(a, settings.city_timezone))
    if not found:
        print("no alerts" + (f" since {args.since}" if args.since else ""))
    return 0
