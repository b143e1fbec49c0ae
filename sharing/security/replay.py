"""Who saw a record: audited queries replayed at the snapshot they read, under the policy they ran under.

``onesource security who-saw --element resident_id --value V [--since T] [--until T]`` answers the question
every incident ends with: whose result held that person's (or enterprise's) record. The datasets are those
with a column holding the element (the registry's schemas); the record is their rows whose element column
equals ``V``. Each allowed query of the (verified) audit log that read one of them is replayed from what the
engine recorded (sharing.engine ``_record``): ``sql_lake`` (or ``sql_run`` where the servers read no file
lists) is the governed SQL that ran, every shared table already replaced by the department's policy
relation with its masks and row filters inlined, so the replay runs under the policy of that day, not
today's grants; ``snapshot`` is the DuckLake snapshot the query read, and every table reference is read
``AT (VERSION => snapshot)`` (a query's own time travel keeps its ``AT``).

The rule (exact, and independent of the query's shape). For each reference to a dataset of the element in
the query (a self-join has two), let Q be the query at its snapshot, Q_r the same query with that reference's
scan restricted to the record's rows (inside the policy relation, before masks and row filter: the record
is found by its raw value even where the department saw it masked), Q_m with the record's rows removed from
that scan. The result held the record iff some row of Q_r occurs more often in Q than in Q_m: a row that is
there because of the record. So a row of the record itself, masked or not, projected or joined, is held; an
aggregate over many records is not (``count(*)`` of a district changes with the record, but the count Q_r
gives, over the record alone, is not a row of Q); an aggregate whose group is the record alone, or whose
value is the record's own (a ``max`` it sets), is. Q_r runs first, on a tiny temporary table of the record's
rows at that snapshot: empty means no, and most queries stop there. Only then Q and Q_m run, as one query
(``(Q EXCEPT ALL Q_m) INTERSECT Q_r``, non-empty iff held). Each table is read from the lake once per data
version (the last snapshot up to the query's that changed it) into a temporary table (up to
MATERIALISE_ROWS rows), and a query text is replayed once per data version of the tables it read.

The second rule (the record's values reached the answer). The first misses a result whose row carrying the
record also depends on other rows: a window (``count(*) OVER ()``, ``row_number()``, ``lag``), an OFFSET (the
record alone is skipped), an aggregate that packs values (``list``, ``string_agg``, ``to_json(list(p))``) or
a group with other columns beside the record's value. So a query whose text (literals aside) has OVER,
OFFSET, GROUP BY, HAVING, QUALIFY, WINDOW or a call of any DuckDB aggregate is also replayed as Q_s: Q with the
record's values replaced by sentinels, the rows kept in place (a text value v becomes v followed by
``SENTINEL``, so it sorts where v sorts; an integer a far negative number). First the element's columns in
every scan at once (a join on the element still joins), then each other column of one scan at a time (a
filter on one column drops the row only in that column's try). Held iff Q_s differs from Q and putting the
record's values back in place of the sentinels (a cell, an element of a list or struct, a part of a text,
or a sentinel's mask image: a masked sentinel comes out masked) in Q_s's differing rows gives exactly Q's
differing rows: the record's values stand in Q's answer, and the difference is nothing else. A count, sum or
average over many records is not held (the sentinel changes no cell, or changes the answer in another way,
such as a group split off); a ``max`` the record sets is, as under the first rule.

Where the rules and "a row of the result came from the record" part: with LIMIT, a row of the record that
another row, equal in every column returned, would have taken the place of is not reported (the result is
the same without the record); a query that returns a column identifying the person (the element, masked or
not, or a row id) has no such twin. The second rule cannot see a value the query also filters or groups on
beside the window or pack (``WHERE age = 29``: the sentinel row is filtered out; ``list(district) GROUP BY
district``: the group splits), a value masked to a constant (``***``: nothing of the record shows), a column
of another type than text or integer, nor a row that an ORDER BY on a masked column moves (the masked
sentinel sorts elsewhere) past a LIMIT/OFFSET.

Bounded by what was recorded and what the lake keeps: an entry from before snapshots were recorded, one whose
SQL was clipped in the log (over QueryLimits.audit_sql_bytes), one whose snapshot maintenance expired, or one
whose replay fails is counted and reported, never silently taken for "not seen". A query whose result depended
on row order beyond its ORDER BY (LIMIT over ties) is replayed as DuckDB orders it now.

``who-saw --dataset X --since T``: per recipient (department, user), from the audit alone: queries, rows that
left, and sensitive values that left (rows times the columns of X with an element of sensitivity >= 3 that the
query returned unmasked; an estimate by column name: the audit records names, not lineage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import OneSourceError

if TYPE_CHECKING:
    import duckdb

    from core.config import Settings
    from schemas.model import Registry

SENSITIVE = 3
"""An element of this sensitivity or more counts as a sensitive value in ``--dataset`` reports."""


@functools.cache
def _tokens() -> re.Pattern[str]:
    """A DuckLake scan of a policy relation as the planner writes it (built from sharing.policy.lake_scan_sql's
    own text, so that the two cannot drift apart), optionally with the query's own time travel; string literals
    and quoted identifiers are matched as wholes, so a scan's text inside a literal is never taken for a scan.
    Built on first use: the planner's module (sqlglot) is not imported with this one."""
    from sharing.policy import lake_scan_sql

    head, tail = lake_scan_sql("\0").split("\0")
    return re.compile(f"(?P<scan>{re.escape(head)}(?P<ds>[a-z0-9_]+){re.escape(tail)}(?P<at> AT \\()?)"
                      r"|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


class ReplayError(OneSourceError):
    """who-saw cannot answer: an unknown element or dataset, or an audit log that does not verify."""


@dataclass(frozen=True)
class Hit:
    """An audited query whose result held the record."""

    seq: int
    at: str
    user: str
    department: str
    purpose: str | None
    dialect: str | None
    snapshot: int | None
    datasets: tuple[str, ...]
    columns: tuple[str, ...]
    """``dataset.column`` of the record's datasets the query's policy relations exposed."""
    masked: tuple[str, ...]
    """Those of them the department saw masked."""
    rows: int | None
    sql_sent: str | None


@dataclass
class Report:
    element: str
    value: str
    datasets: tuple[str, ...]
    hits: list[Hit] = field(default_factory=list)
    examined: int = 0
    """Allowed queries that read one of the datasets within the window."""
    replayed: int = 0
    """Distinct replays: (governed SQL, data version of each table it read)."""
    unreplayed: dict[str, list[int]] = field(default_factory=dict)
    """Why a query could not be replayed -> the seqs of those queries."""
    notes: list[str] = field(default_factory=list)


NO_SNAPSHOT = "no snapshot recorded (a query from before snapshots were recorded)"
CLIPPED = "governed SQL clipped in the audit log (longer than QueryLimits.audit_sql_bytes)"
EXPIRED = "snapshot expired by maintenance (no longer in the lake)"
PLAN_ONLY = "EXPLAIN: only a plan left, no rows"


def _parse_time(text: str | None, tz: str) -> dt.datetime | None:
    if not text:
        return None
    from core.citytime import parse_local

    try:
        return parse_local(text, tz).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise ReplayError(f"{text!r} is not a time: write 2026-03-31 or 2026-03-31T18:00 (the city's time "
                          "unless a zone is given)") from exc


def element_datasets(registry: Registry, element: str) -> dict[str, tuple[str, ...]]:
    """Dataset -> its columns holding ``element``."""
    registry.element(element)  # an unknown one: UnknownNameError, naming the closest
    found: dict[str, tuple[str, ...]] = {}
    for ds in registry.datasets:
        columns = tuple(c.name for c in ds.columns if c.element == element)
        if columns:
            found[ds.name] = columns
    return found


def verified_entries(settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """The audit log's entries that verify (its whole chain, or the part before the first bad entry), with
    notes on what was left out."""
    from sharing.audit import AuditLog, verify

    log = AuditLog.of(settings)
    try:
        verdict = verify(log)
        entries = log.entries()
    finally:
        if log.anchor is not None:
            log.anchor.close()
    if verdict.ok:
        return entries, list(verdict.notes)
    if verdict.first_bad is None or verdict.first_bad <= 1:
        raise ReplayError(f"the audit log does not verify ({verdict.reason}); nothing in it can be trusted to "
                          "replay: `onesource audit verify` says more")
    kept = entries[: verdict.first_bad - 1]
    return kept, [f"the audit log does not verify from line {verdict.first_bad} ({verdict.reason}): only the "
                  f"{len(kept)} entries before it were read"]


def _within(entry: dict, since: dt.datetime | None, until: dt.datetime | None) -> bool:
    if since is None and until is None:
        return True
    at = dt.datetime.fromisoformat(entry["at"])
    return (since is None or at >= since) and (until is None or at < until)


def _governed_sql(entry: dict) -> tuple[str | None, str | None]:
    """The replayable governed SQL of an entry, or why there is none."""
    if entry.get("sql_lake"):
        sql, clipped = entry["sql_lake"], "sql_lake_bytes" in entry
    else:
        sql, clipped = entry.get("sql_run"), "sql_run_bytes" in entry
    if not sql:
        return None, "no governed SQL recorded"
    if clipped:
        return None, CLIPPED
    if sql.startswith("EXPLAIN "):
        return None, PLAN_ONLY
    if entry.get("snapshot") is None:
        return None, NO_SNAPSHOT
    return sql, None


@dataclass(frozen=True)
class _Scan:
    start: int
    end: int
    dataset: str
    at: str | None
    """The query's own time travel (``VERSION => 3``), or None: the query read the recorded snapshot."""


def scans(sql: str) -> list[_Scan]:
    """Every DuckLake scan of a policy relation in ``sql``, in order."""
    found = []
    for m in _tokens().finditer(sql):
        if m.group("scan") is None:
            continue
        end, at = m.end(), None
        if m.group("at"):
            close = _closing(sql, end)
            at, end = sql[end:close], close + 1
        found.append(_Scan(m.start(), end, m.group("ds"), at))
    return found


def _closing(sql: str, i: int) -> int:
    """The index of the parenthesis closing the one opened just before ``i`` (literals skipped)."""
    depth = 1
    while i < len(sql):
        ch = sql[i]
        if ch == "'":
            i = sql.index("'", i + 1)
            while sql.startswith("'", i + 1):
                i = sql.index("'", i + 2)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced AT clause")


MATERIALISE_ROWS = 2_000_000
"""A table version of at most this many rows is read from the lake once and replayed from memory (a temporary
table): a DuckLake scan ``AT (VERSION => n)`` reads the catalog's metadata anew each time (10 to 30 ms on a
2-core host), more than the replayed query itself. A larger table is read from the lake by every replay."""


class Replayer:
    """Replays audited queries on one read-only connection to the lake, in one read transaction. Each table
    is read once per *data version* (the last snapshot at or before the query's that changed it: a grant, a
    user or any other table's commit makes a snapshot that leaves it as it was) into a temporary table, and so
    are the record's rows of it."""

    def __init__(self, settings: Settings, record: dict[str, tuple[str, ...]], value: str,
                 materialise_rows: int = MATERIALISE_ROWS):
        from lakehouse.lake import Lake
        from sharing.sql import lock_down

        self.record = record
        self.value = value
        self.materialise_rows = materialise_rows
        self._literal = "'" + value.replace("'", "''") + "'"
        self._lake = Lake(settings.lake, read_only=True)
        self.con: duckdb.DuckDBPyConnection = self._lake.con
        self._aggregates: set[str] | None = None
        # one thread: replays are many small queries (a second thread cost more CPU than it saved, bench/security.py);
        # no per-query memory limit: the operator's own tool, its tables bounded by MATERIALISE_ROWS
        lock_down(self.con, settings.lake.data_path, threads=1)
        self.begin()
        self.snapshots = {r[0] for r in self.con.execute("SELECT snapshot_id FROM lake.snapshots()").fetchall()}
        self._changes = self._changed()
        self._ids = self.con.execute(
            "SELECT t.table_name, t.table_id, t.begin_snapshot, t.end_snapshot FROM "
            "__ducklake_metadata_lake.ducklake_table t JOIN __ducklake_metadata_lake.ducklake_schema s "
            "USING (schema_id) WHERE s.schema_name = 'shared'").fetchall()

    def begin(self) -> None:
        """A read transaction (again after an error aborted one: its temporary tables went with it)."""
        import duckdb

        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        self.con.execute("BEGIN TRANSACTION")
        self._sources: dict[tuple[str, str], str] = {}
        self._records: dict[tuple[str, str], str] = {}
        self._described: dict[str, list[tuple[str, str]]] = {}
        self._taint_cache: dict[str, list] = {}

    def close(self) -> None:
        import duckdb

        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        self._lake.close()

    def _changed(self) -> dict[str, list[int]]:
        """Table id or ``shared.<name>`` -> the snapshots that changed it (DuckLake's ``changes`` of each)."""
        out: dict[str, list[int]] = {}
        for snapshot, changes in self.con.execute("SELECT snapshot_id, changes FROM lake.snapshots() "
                                                  "ORDER BY snapshot_id").fetchall():
            for names in (changes or {}).values():
                for name in names or ():
                    out.setdefault(str(name), []).append(snapshot)
        return out

    def _version(self, dataset: str, at: str) -> str:
        """The data version of ``dataset`` that ``at`` (``VERSION => n``) reads: the last snapshot up to n that
        changed it. Another time travel (``TIMESTAMP => ...``) is its own version."""
        m = re.fullmatch(r"VERSION => (\d+)", at)
        if m is None:
            return at
        snapshot = int(m.group(1))
        ids = [str(i) for name, i, begin, end in self._ids
               if name == dataset and begin <= snapshot and (end is None or end > snapshot)]
        marks = [s for key in [*ids, f"shared.{dataset}"] for s in self._changes.get(key, ()) if s <= snapshot]
        if not marks or max(marks) not in self.snapshots:  # that change's own snapshot expired: read at the query's
            return at
        return f"VERSION => {max(marks)}"

    def key(self, sql: str, snapshot: int) -> tuple:
        """What decides a replay's answer: the SQL and the data version of each table it reads (queries of one
        text across snapshots that changed none of its tables are replayed once)."""
        at = f"VERSION => {int(snapshot)}"
        return (sql, *(self._version(s.dataset, s.at or at) for s in scans(sql)))

    def _source(self, dataset: str, at: str) -> str:
        """Where a replay reads ``dataset`` as of ``at`` from: a temporary table of that version, or the lake."""
        at = self._version(dataset, at)
        key = (dataset, at)
        name = self._sources.get(key)
        if name is None:
            lake = f'"lake"."shared"."{dataset}" AT ({at})'
            [rows] = self.con.execute(f"SELECT count(*) FROM {lake}").fetchone()
            name = lake
            if rows <= self.materialise_rows:
                name = f"__os_table_{len(self._sources)}"
                self.con.execute(f"CREATE TEMPORARY TABLE {name} AS SELECT * FROM {lake}")
            self._sources[key] = name
        return name

    def _condition(self, dataset: str) -> str:
        return " OR ".join(f'CAST("{c}" AS VARCHAR) = {self._literal}' for c in self.record[dataset])

    def _record_table(self, dataset: str, at: str) -> str:
        """A temporary table of the record's rows of ``dataset`` as of ``at`` (every column, raw)."""
        source = self._source(dataset, at)
        name = self._records.get((dataset, source))
        if name is None:
            name = f"__os_record_{len(self._records)}"
            self.con.execute(f"CREATE TEMPORARY TABLE {name} AS SELECT * FROM {source} WHERE {self._condition(dataset)}")
            self._records[(dataset, source)] = name
        return name

    def _columns(self, source: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of a source's columns."""
        found = self._described.get(source)
        if found is None:
            found = [(r[0], r[1]) for r in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
            self._described[source] = found
        return found

    def _taints(self, dataset: str, at: str) -> dict[str, tuple[str, list[tuple[Any, Any]]]]:
        """Column of ``dataset`` that can carry a sentinel -> (the CASE that puts a sentinel in place of each value
        the record's rows hold in it, the (sentinel, value) pairs, mask images included). A text value v becomes
        v followed by ``SENTINEL`` (it sorts where v sorts, and joins on it where v joins when both sides carry
        it), an integer becomes a negative number far outside any count or amount."""
        record = self._record_table(dataset, at)
        found = self._taint_cache.get(record)
        if found is not None:
            return found
        from sharing.policy import MASKS

        found = {}
        for k, (column, kind) in enumerate(self._columns(record)):
            values = [r[0] for r in self.con.execute(
                f'SELECT DISTINCT "{column}" FROM {record} WHERE "{column}" IS NOT NULL LIMIT 50').fetchall()]
            if not values or (kind != "VARCHAR" and kind not in _INTEGERS):
                continue  # other types (dates, decimals, booleans) carry no sentinel: the first rule alone
            pairs, whens = [], []
            for j, value in enumerate(values):
                literal = "'" + str(value).replace("'", "''") + "'" if kind == "VARCHAR" else str(int(value))
                sentinel: Any = str(value) + SENTINEL if kind == "VARCHAR" else -SENTINEL_INT - 1000 * k - j
                mark = "'" + sentinel.replace("'", "''") + "'" if kind == "VARCHAR" else str(sentinel)
                whens.append(f'WHEN "{column}" = {literal} THEN {mark}')
                pairs.append((sentinel, value))
                if kind == "VARCHAR":  # what a mask makes of each (a masked sentinel comes out masked)
                    images = self.con.execute("SELECT " + ", ".join(
                        f"{MASKS[rule].format(c=mark, t='VARCHAR')}, {MASKS[rule].format(c=literal, t='VARCHAR')}"
                        for rule in sorted(MASKS))).fetchone()
                    pairs += [(x, y) for x, y in zip(images[::2], images[1::2], strict=True)
                              if x is not None and x != y]
            case = (f'CASE WHEN NOT coalesce({self._condition(dataset)}, false) THEN "{column}" '
                    f'{" ".join(whens)} ELSE "{column}" END AS "{column}"')
            pairs.sort(key=lambda p: -len(str(p[0])))  # a longer image first: one may hold a shorter one
            found[column] = (case, pairs)
        self._taint_cache[record] = found
        return found

    def _tainted(self, dataset: str, at: str, cases: dict[str, str]) -> str:
        """``dataset``'s scan with the record's values of some columns replaced by sentinels (row order kept)."""
        source = self._source(dataset, at)
        select = ", ".join(cases.get(name, f'"{name}"') for name, _ in self._columns(source))
        return f'(SELECT {select} FROM {source}) AS "__os_scan"'

    def reaches(self, sql: str) -> bool:
        """Whether a query's result rows can depend on other rows than their own (windows, OFFSET, aggregates,
        grouping): the shapes where the first rule (a row of Q restricted to the record is in Q) can miss a
        result that carries the record's values. Literals and quoted names are not read."""
        if self._aggregates is None:
            self._aggregates = {r[0].lower() for r in self.con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'").fetchall()}
        bare = _tokens().sub(" ", sql)
        if _SHAPES.search(bare):
            return True
        return any(name.lower() in self._aggregates for name in _CALLS.findall(bare))

    def held(self, sql: str, snapshot: int) -> bool:
        """Whether the result of ``sql`` (governed, DuckLake scans) read at ``snapshot`` held the record."""
        found = scans(sql)
        at = f"VERSION => {int(snapshot)}"

        def text(restrict: int | None, how: str, taint: dict[int, dict[str, str]] | None = None) -> str:
            parts, last = [], 0
            for n, s in enumerate(found):
                when = s.at or at
                if taint is not None and n in taint:
                    scan = self._tainted(s.dataset, when, taint[n])
                elif n != restrict:
                    scan = f'(SELECT * FROM {self._source(s.dataset, when)}) AS "__os_scan"'
                elif how == "record":
                    scan = f'(SELECT * FROM {self._record_table(s.dataset, when)}) AS "__os_scan"'
                else:
                    scan = (f"(SELECT * FROM {self._source(s.dataset, when)} WHERE NOT coalesce("
                            f'{self._condition(s.dataset)}, false)) AS "__os_scan"')
                parts += [sql[last:s.start], scan]
                last = s.end
            return "".join(parts) + sql[last:]

        mine = [n for n, s in enumerate(found) if s.dataset in self.record]
        for n in mine:
            restricted = text(n, "record")
            if self.con.execute(f"SELECT 1 FROM ({restricted}) AS __os_q LIMIT 1").fetchone() is None:
                continue
            combined = (f"WITH __os_all AS ({text(None, '')}), __os_rest AS ({text(n, 'rest')}), "
                        f"__os_rec AS ({restricted}) SELECT 1 FROM (SELECT * FROM (SELECT * FROM __os_all EXCEPT ALL "
                        "SELECT * FROM __os_rest) INTERSECT SELECT * FROM __os_rec) LIMIT 1")
            if self.con.execute(combined).fetchone() is not None:
                return True
        if not self.reaches(sql):
            return False
        # The second rule: the record's values reached the answer. Q_s is Q with the record's values replaced
        # by sentinels: first its element columns in every scan at once (a join on the element still joins),
        # then each other column of one scan at a time (a filter on one column drops the row only for that
        # column's try). Held iff Q_s differs from Q exactly by sentinels standing where the record's values
        # (or their masked images) stand in Q.
        everything = text(None, "")
        taints = {n: self._taints(found[n].dataset, found[n].at or at) for n in mine}
        tries: list[tuple[dict[int, dict[str, str]], list]] = []
        element = {n: {c: taints[n][c][0] for c in self.record[found[n].dataset] if c in taints[n]} for n in mine}
        if any(element.values()):
            tries.append((element, [p for n in mine for c in element[n] for p in taints[n][c][1]]))
        for n in mine:
            for column, (case, pairs) in taints[n].items():
                if column not in self.record[found[n].dataset]:
                    tries.append(({n: {column: case}}, pairs))
        for taint, pairs in tries:
            pairs = sorted(set(pairs), key=lambda p: -len(str(p[0])))
            if _explained(self.con, everything, text(None, "", taint), pairs):
                return True
        return False


_INTEGERS = frozenset(("INTEGER", "BIGINT", "HUGEINT"))
SENTINEL = "\u2983os\u00a7sentinel\u00a7\u2984"
"""Appended to a text value to make its sentinel: characters no loaded value holds (a mask keeping the last
characters still tells it apart)."""
SENTINEL_INT = 987_654_321_000
"""An integer sentinel is minus this, less 1000 k + j: far outside any count, age or amount."""
DIFF_ROWS = 100_000
"""At most this many rows of each side of a difference are compared (a larger difference is not explained)."""
_SHAPES = re.compile(r"\b(?:OVER|OFFSET|GROUP\s+BY|QUALIFY|WINDOW|HAVING)\b", re.IGNORECASE)
_CALLS = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _explained(con: duckdb.DuckDBPyConnection, everything: str, tainted: str, pairs: list[tuple[Any, Any]]) -> bool:
    """Whether Q_s (``tainted``) differs from Q (``everything``) and putting the record's values back in place
    of the sentinels in Q_s's differing rows gives exactly Q's differing rows."""
    added = con.execute(f"SELECT * FROM (({tainted}) EXCEPT ALL ({everything})) LIMIT {DIFF_ROWS + 1}").fetchall()
    if not added or len(added) > DIFF_ROWS:
        return False
    gone = con.execute(f"SELECT * FROM (({everything}) EXCEPT ALL ({tainted})) LIMIT {DIFF_ROWS + 1}").fetchall()
    if len(gone) != len(added):
        return False
    from collections import Counter

    back = Counter(repr(_restore(row, pairs)) for row in added)
    return back == Counter(repr(row) for row in gone)


def _restore(value: Any, pairs: list[tuple[Any, Any]]) -> Any:
    """``value`` with every sentinel (a cell, an element of a list or struct, a part of a text) replaced by the
    record's value it stands for."""
    if isinstance(value, str):
        for sentinel, real in pairs:
            value = value.replace(str(sentinel), str(real))
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return next((real for sentinel, real in pairs if sentinel == value), value)
    if isinstance(value, tuple | list):
        return type(value)(_restore(v, pairs) for v in value)
    if isinstance(value, dict):
        return {_restore(k, pairs): _restore(v, pairs) for k, v in value.items()}
    return value


def who_saw(settings: Settings, registry: Registry, element: str, value: str, *, since: dt.datetime | None = None,
            until: dt.datetime | None = None, entries: Iterable[dict] | None = None) -> Report:
    """Every allowed query, within [since, until), whose result held the record of ``element`` = ``value``.
    ``entries``: the audit entries to read (default: the home's verified log)."""
    import duckdb

    record = element_datasets(registry, element)
    report = Report(element, value, tuple(sorted(record)))
    if not record:
        report.notes.append(f"no dataset has a column holding {element}: nobody can have seen such a record")
        return report
    if entries is None:
        entries, notes = verified_entries(settings)
        report.notes += notes
    chosen = [e for e in entries if e.get("decision") == "allowed" and set(e.get("tables") or ()) & set(record)
              and _within(e, since, until)]
    report.examined = len(chosen)
    if not chosen:
        return report
    replayer = Replayer(settings, record, value)
    decided: dict[tuple, bool | str] = {}
    try:
        for e in chosen:
            sql, why = _governed_sql(e)
            if sql is not None and e["snapshot"] not in replayer.snapshots:
                why = EXPIRED
            if why is not None:
                report.unreplayed.setdefault(why, []).append(e["seq"])
                continue
            key = replayer.key(sql, e["snapshot"])
            outcome = decided.get(key)
            if outcome is None:
                try:
                    outcome = replayer.held(sql, e["snapshot"])
                except (duckdb.Error, ValueError) as exc:
                    outcome = f"replay failed: {str(exc).splitlines()[0][:300]}"
                    replayer.begin()  # an error aborts the transaction: begin another
                decided[key] = outcome
            if isinstance(outcome, str):
                report.unreplayed.setdefault(outcome, []).append(e["seq"])
            elif outcome:
                report.hits.append(_hit(e, record))
    finally:
        replayer.close()
    report.replayed = len(decided)
    return report


def _hit(e: dict, record: dict[str, tuple[str, ...]]) -> Hit:
    read = tuple(sorted(set(e.get("tables") or ()) & set(record)))
    columns = tuple(c for c in e.get("columns") or () if c.split(".", 1)[0] in read)
    masked = tuple(c for c in e.get("masked") or () if c.split(".", 1)[0] in read)
    return Hit(e["seq"], e["at"], e.get("user") or "", e.get("department") or "", e.get("purpose"),
               e.get("dialect"), e.get("snapshot"), read, columns, masked, e.get("rows"), e.get("sql_sent"))


@dataclass(frozen=True)
class Recipient:
    department: str
    user: str
    queries: int
    rows: int
    sensitive_values: int
    sensitive_columns: tuple[str, ...]
    """Sensitive columns of the dataset that left unmasked in at least one query."""


def recipients(settings: Settings, registry: Registry, dataset: str, *, since: dt.datetime | None = None,
               until: dt.datetime | None = None, entries: Iterable[dict] | None = None) -> tuple[list[Recipient],
                                                                                              list[str]]:
    """Per (department, user): the allowed queries that read ``dataset`` within [since, until), the rows they
    returned, and the sensitive values they returned unmasked (rows x such columns among the result's)."""
    ds = registry.dataset(dataset)  # an unknown one: UnknownNameError, naming the closest
    elements = {e.name: e for e in registry.elements}
    sensitive = {c.name for c in ds.columns if c.element in elements and elements[c.element].sensitivity >= SENSITIVE}
    notes: list[str] = []
    if entries is None:
        entries, notes = verified_entries(settings)
    per: dict[tuple[str, str], list] = {}
    for e in entries:
        if e.get("decision") != "allowed" or dataset not in (e.get("tables") or ()) or not _within(e, since, until):
            continue
        exposed = {c.split(".", 1)[1] for c in e.get("columns") or () if c.split(".", 1)[0] == dataset}
        masked = {c.split(".", 1)[1] for c in e.get("masked") or () if c.split(".", 1)[0] == dataset}
        returned = set(e.get("result_columns") or ())
        unmasked = sorted((exposed - masked) & sensitive & returned)
        rows = int(e.get("rows") or 0)
        acc = per.setdefault((e.get("department") or "", e.get("user") or ""), [0, 0, 0, set()])
        acc[0] += 1
        acc[1] += rows
        acc[2] += rows * len(unmasked)
        acc[3] |= set(unmasked)
    out = [Recipient(d, u, q, r, s, tuple(sorted(cols))) for (d, u), (q, r, s, cols) in per.items()]
    out.sort(key=lambda r: (-r.sensitive_values, -r.rows, r.department, r.user))
    return out, notes


def add_commands(actions: argparse._SubParsersAction) -> None:
    """Adds this module's `onesource security` actions (each sets ``security_fn``)."""
    p = actions.add_parser("who-saw", help="who saw a record (--element E --value V), or what left of a dataset "
                                           "(--dataset X) per recipient, replaying the audit log")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--element", help="a data element of the registry (elements.yaml), e.g. resident_id")
    what.add_argument("--dataset", help="a dataset: per recipient, the rows and sensitive values that left")
    p.add_argument("--value", help="with --element: the record's value (a resident ID, a credit code, ...)")
    p.add_argument("--since", help="from this time (the city's time unless a zone is given), e.g. 2026-03-01")
    p.add_argument("--until", help="before this time")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(security_fn=cmd_who_saw)


def cmd_who_saw(args: argparse.Namespace, settings: Settings) -> int:
    from schemas import load_registry

    if args.element and not args.value:
        raise ReplayError("--element needs --value: the record's value, e.g. --value 430102199001011234")
    if args.dataset and args.value:
        raise ReplayError("--value goes with --element; --dataset reports what left of the whole dataset")
    since, until = (_parse_time(t, settings.city_timezone) for t in (args.since, args.until))
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    if args.dataset:
        found, notes = recipients(settings, registry, args.dataset, since=since, until=until)
        if args.json:
            print(json.dumps({"dataset": args.dataset, "recipients": [asdict(r) for r in found], "notes": notes},
                             ensure_ascii=False, indent=2))
            return 0
        print(f"shared.{args.dataset}: {len(found)} recipients" + (f" since {args.since}" if args.since else ""))
        for r in found:
            cols = f" ({', '.join(r.sensitive_columns)})" if r.sensitive_columns else ""
            print(f"  {r.department} / {r.user}: {r.queries} queries, {r.rows} rows, "
                  f"{r.sensitive_values} sensitive values{cols}")
        for note in notes:
            print(f"note: {note}")
        return 0
    report = who_saw(settings, registry, args.element, args.value, since=since, until=until)
    if args.json:
        print(json.dumps(asdict(report), ensure_ascii=False, indent=2))
        return 0
    print(_text(report))
    return 0


def _text(report: Report) -> str:
    lines = [f"{report.element} = {report.value}: read through {', '.join(report.datasets) or 'no dataset'}; "
             f"{report.examined} allowed queries read them, {len(report.hits)} held the record"]
    for h in report.hits:
        seen = ", ".join(c + (" (masked)" if c in h.masked else "") for c in h.columns)
        lines.append(f"  seq {h.seq}  {h.at}  {h.department} / {h.user}  purpose: {h.purpose or '-'}  "
                     f"dialect: {h.dialect or '-'}  snapshot {h.snapshot}  rows {h.rows}")
        lines.append(f"      columns: {seen}")
    missed = sum(len(v) for v in report.unreplayed.values())
    if missed:
        lines.append(f"could not replay {missed} queries:")
        for why, seqs in sorted(report.unreplayed.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(map(str, seqs[:10])) + (" ..." if len(seqs) > 10 else "")
            lines.append(f"  {len(seqs)}: {why} (seq {shown})")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
