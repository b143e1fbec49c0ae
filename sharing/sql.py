"""SQL on the lake for data engineers: one read-only statement on a locked-down connection.

Department-level governance (grants, row filters, masking, audit) is built on top of this in the
governed engine; this connection is already safe to hand a mistake: the lake is attached
read-only, file access is limited to the lake's data folder and the configuration is locked.
Every such query, allowed, refused or failed, is recorded in the audit log as operator access
(department ``operator``, the OS user).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from core.config import Settings
from lakehouse.lake import Lake
from sharing.exceptions import InvalidSQL, QueryFailed, QueryRefused, ResultTooLarge

READ_STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Describe, exp.Show, exp.Pivot)
INSPECT_COMMANDS = ("SHOW", "DESCRIBE", "SUMMARIZE")


class QueryResult:
    """A query's complete answer: its column names and every row, in one of two forms.

    * ``rows``: a list of tuples of Python values, as DuckDB's ``fetchall`` gives them (what every endpoint
      has used so far; kept for every existing caller).
    * ``iter_rows()``: the same tuples, converted a batch at a time and not kept: for a stream of rows (the
      wire's DataRows), whose peak memory is then the Arrow answer and one batch of Python values.
    * ``batches()`` / ``reader()`` / ``to_arrow()``: Arrow record batches as DuckDB exports them. The servers
      fetch results this way (columnar: ~20x cheaper than Python values for a million rows); HTTP streams them
      as Arrow IPC or Parquet, and the wire can send them batch by batch.

    A result is built in one form (``QueryResult(columns, rows)`` or ``QueryResult(columns, batches=...,
    schema=...)``); the other is derived on first use and kept. ``row_count`` is known without converting
    anything (the audit records it). A result is never cut short: one beyond the integrity limits
    (core.config.QueryLimits ``rows`` and ``result_bytes``) is an error (:class:`ResultTooLarge`).
    ``types``: DuckDB's type of each column (``cursor.description``), which keeps ``rows`` equal to what
    ``fetchall`` gives where DuckDB's Arrow export differs (HUGEINT as decimal128, UUID as text, INTERVAL as
    month-day-nano, MAP as key-value pairs, BIT as bytes).
    """

    __slots__ = ("columns", "types", "_rows", "_batches", "_schema", "policy")

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]] | None = None, *,
                 batches: Iterable | None = None, schema: Any = None, types: Iterable[str] = ()):
        if (rows is None) == (batches is None):
            raise ValueError("a QueryResult is built from rows or from Arrow batches")
        if batches is not None and schema is None:
            raise ValueError("Arrow batches come with their schema (an empty result has no batch to take it from)")
        self.columns = list(columns)
        self.types = tuple(types)
        self._rows = rows
        self._batches = None if batches is None else tuple(batches)
        self._schema = schema
        self.policy: tuple | None = None
        """What the department's grants gave of each dataset read, when the answer was planned (the engine
        sets it): a cursor or portal that reads on compares it with its query planned again."""

    @property
    def row_count(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return sum(b.num_rows for b in self._batches)

    def __len__(self) -> int:
        return self.row_count

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """Every row as a tuple of Python values (converted from Arrow on first use, then kept)."""
        if self._rows is None:
            rows: list[tuple[Any, ...]] = []
            for batch in self._batches:
                rows.extend(python_rows(batch, self.types))
            self._rows = rows
        return self._rows

    @property
    def held_rows(self) -> list[tuple[Any, ...]] | None:
        """The Python rows the result holds now, never converted: None for one built from Arrow batches whose
        ``rows`` nobody asked for yet (a measure or a stream that must not convert it reads this)."""
        return self._rows

    @property
    def held_batches(self) -> tuple | None:
        """The Arrow batches the result holds now, never converted: None for one built from rows whose
        ``batches()`` nobody asked for yet."""
        return self._batches

    @property
    def held_schema(self) -> Any:
        """The Arrow schema the result holds now, never inferred: None for one built from rows whose
        ``schema`` nobody asked for yet."""
        return self._schema

    def iter_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every row as a tuple of Python values, in order, converted batch by batch (nothing is kept)."""
        if self._rows is not None:
            yield from self._rows
            return
        for batch in self._batches:
            yield from python_rows(batch, self.types)

    @property
    def schema(self):
        """The Arrow schema (for a result built from rows: inferred from its Python values)."""
        if self._schema is None:
            self._arrow_from_rows()
        return self._schema

    def batches(self) -> Iterator:
        """The rows as Arrow record batches, in order (a result built from rows: one batch)."""
        if self._batches is None:
            self._arrow_from_rows()
        return iter(self._batches)

    def reader(self):
        """A ``pyarrow.RecordBatchReader`` over the batches (what buenavista and Arrow writers take)."""
        import pyarrow as pa

        return pa.RecordBatchReader.from_batches(self.schema, self.batches())

    def to_arrow(self):
        """The whole result as one ``pyarrow.Table``."""
        import pyarrow as pa

        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def _arrow_from_rows(self) -> None:
        import pyarrow as pa

        # column by column: names may repeat (SELECT a, a), which a list of dicts would lose
        arrays = [pa.array(list(values)) for values in zip(*self._rows, strict=True)] if self._rows else \
            [pa.array([], type=pa.null()) for _ in self.columns]
        table = pa.Table.from_arrays(arrays, names=self.columns)
        self._schema = table.schema
        self._batches = tuple(table.to_batches())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryResult):
            return NotImplemented
        return self.columns == other.columns and self.rows == other.rows

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QueryResult(columns={self.columns!r}, row_count={self.row_count})"


def python_rows(batch, types: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """A record batch's rows as tuples of the Python values DuckDB's ``fetchall`` gives (column by column:
    pyarrow converts a column at a time far faster than a row at a time)."""
    columns = []
    for i, column in enumerate(batch.columns):
        values = column.to_pylist()
        fix = _FETCHALL.get(_base_type(types[i])) if i < len(types) else None
        columns.append([None if v is None else fix(v) for v in values] if fix else values)
    return list(zip(*columns, strict=True)) if columns else [() for _ in range(batch.num_rows)]


def _base_type(duckdb_type: str) -> str:
    return str(duckdb_type).split("(", 1)[0].strip().upper()


def _interval(value) -> dt.timedelta:
    # DuckDB's own conversion: a month is 30 days
    return dt.timedelta(days=value.months * 30 + value.days, microseconds=value.nanoseconds // 1000)


def _bits(value: bytes) -> str:
    # DuckDB's BIT: the first byte counts the padding bits that precede the value in the second byte
    return "".join(f"{b:08b}" for b in value[1:])[value[0]:]


_FETCHALL = {"HUGEINT": int, "UHUGEINT": int, "UUID": uuid.UUID, "INTERVAL": _interval, "MAP": dict,
             "BIT": _bits}
"""Where DuckDB's Arrow export and its ``fetchall`` disagree, the value ``fetchall`` gives."""


BATCH_ROWS = 122_880
"""Rows per Arrow batch fetched from DuckDB (its row-group size): batches of a few MB, streamed one by one."""

FETCH_ROWS = 10_000
"""Rows per ``fetchmany`` when a result is fetched as Python values (the CLI's table, CSV and JSON)."""


def fetch(cur: duckdb.DuckDBPyConnection, *, arrow: bool, max_rows: int = 0, max_bytes: int = 0) -> QueryResult:
    """Every row of ``cur``'s result, as Arrow batches (``arrow``) or Python values, counted as they come:
    a result beyond ``max_rows`` rows or ``max_bytes`` bytes (0: no bound) stops there with
    :class:`ResultTooLarge`, before the rest is fetched, and is never returned cut short."""
    if not cur.description:
        return QueryResult([], [])
    columns = [d[0] for d in cur.description]
    types = [str(d[1]) for d in cur.description]
    rows, size = 0, 0
    if arrow:
        batches = []
        try:
            reader = cur.to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                rows, size = rows + batch.num_rows, size + batch.nbytes
                _within(rows, size, max_rows, max_bytes)
                batches.append(batch)
        except OSError as exc:  # DuckDB's errors while a stream is read come back through Arrow as OSError
            raise _duckdb_error(str(exc)) from exc
        return QueryResult(columns, batches=batches, schema=reader.schema, types=types)
    values: list[tuple[Any, ...]] = []
    while chunk := cur.fetchmany(FETCH_ROWS):
        values.extend(chunk)
        rows, size = rows + len(chunk), size + _python_bytes(chunk)
        _within(rows, size, max_rows, max_bytes)
    return QueryResult(columns, values, types=types)


def _within(rows: int, size: int, max_rows: int, max_bytes: int) -> None:
    if max_rows and rows > max_rows:
        raise ResultTooLarge(f"the result has more than {max_rows:,} rows, the most one answer may have "
                             "(ONESOURCE_QUERY_ROWS); nothing was sent: filter or aggregate, or ask the operator "
                             "to raise the limit")
    if max_bytes and size > max_bytes:
        raise ResultTooLarge(f"the result is larger than {shown_size(max_bytes)}, the most one answer may "
                             f"have (ONESOURCE_QUERY_RESULT_BYTES), at {rows:,} rows; nothing was sent: filter, "
                             "ask for fewer columns, or read it in parts (a WHERE on a key or a date)")


def shown_size(size: int) -> str:
    """A byte count as an error message shows it (``1.5 MiB``, ``512 bytes``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.4g} {unit}"
    return f"{size} bytes"


def _python_bytes(chunk: list[tuple[Any, ...]]) -> int:
    """About what a chunk of rows takes as Python objects, from its first row (cheap: a bound, not a tally)."""
    first = chunk[0]
    return len(chunk) * (sys.getsizeof(first) + sum(sys.getsizeof(v) for v in first))


def _duckdb_error(message: str) -> duckdb.Error:
    if message.startswith("INTERRUPT"):
        return duckdb.InterruptException(message)
    if message.startswith("Out of Memory"):
        return duckdb.OutOfMemoryException(message)
    return duckdb.Error(message)


def _one_statement(sql: str) -> None:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        raise InvalidSQL.of(exc, dialect="duckdb") from exc
    if not statements:
        raise InvalidSQL("the query is empty: give one SELECT")
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time, please ({len(statements)} given)")
    stmt = statements[0]
    if isinstance(stmt, exp.Command):  # statements sqlglot keeps as raw text: only the inspecting ones
        if str(stmt.this).upper() in INSPECT_COMMANDS:
            return
        raise QueryRefused(f"only queries run here; {str(stmt.this).upper()} was refused (the lake is read-only)")
    if not isinstance(stmt, READ_STATEMENTS):
        raise QueryRefused(f"only queries run here; {stmt.key.upper()} was refused (the lake is read-only)")


def lock_down(con: duckdb.DuckDBPyConnection, data_path: str, *, memory_limit: str | None = None,
              threads: int = 0) -> None:
    """No file, network or setting access beyond the lake's own data files (a folder or an
    object-store prefix). With ``memory_limit`` (a department's queries: QueryLimits.memory) the instance
    may use that much memory and spills nothing to disk, so a query that needs more is stopped (DuckDB's
    limit is per instance: the servers give each running query an instance of its own)."""
    if memory_limit:
        con.execute(f"SET memory_limit = {_size(memory_limit)}")
        con.execute("SET temp_directory = ''")
    if threads and threads > 0:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET allowed_directories = [?]", [data_path])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _size(text: str) -> str:
    """A DuckDB memory size as a SQL literal ('2GiB', '512 MB'), refused unless it is one."""
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*", text, re.I):
        raise ValueError(f"not a memory size: {text!r} (e.g. 2GiB, 512MB)")
    return "'" + text.strip() + "'"


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_bytes(text: str) -> int:
    """A size in DuckDB's syntax ('2GiB', '512 MB': KB is 1000 bytes, KiB 1024) as a number of bytes."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.I)
    if not found:
        raise ValueError(f"not a size: {text!r} (e.g. 2GiB, 512MB)")
    return int(float(found.group(1)) * _UNITS[(found.group(2) or "").upper()])


def _relations(sql: str) -> list[str]:
    """The tables a statement names, as written (``shared.firms``, ``ops.loads``)."""
    try:
        return sorted({".".join(p for p in (t.db, t.name) if p)
                       for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table) if t.name})
    except sqlglot.errors.ParseError:
        return []


OPERATOR = "operator"
"""The department operator access is recorded under (it is no department's usage: ``tables`` stays
empty, so the usage KPIs do not count it; the relations read are in ``relations``)."""


def run_sql(settings: Settings, sql: str, as_of=None, *, user: str | None = None, purpose: str | None = None,
            arrow: bool = False) -> QueryResult:
    """``as_of``: a snapshot id or a datetime, to read the lake as it was then. Audited as operator
    access by ``user`` (default: the OS user). Every row is returned (``arrow``: as Arrow batches, for a
    bulk export); the operator's own queries have no result bound."""
    from sharing.audit import AuditLog
    from sharing.limits import clip

    started = time.perf_counter()
    try:
        os_user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container)
        os_user = f"uid {os.getuid()}"
    clipped = settings.limits.audit_sql_bytes
    record = {"department": OPERATOR, "user": user or os_user, "os_user": os_user, "purpose": purpose,
              **clip("sql_sent", sql, clipped), "dialect": "duckdb", "as_of": None if as_of is None else str(as_of)}

    def audit(decision: str, reason: str | None, rows: int | None = None, relations: list[str] | None = None) -> None:
        log = AuditLog.of(settings)
        try:
            log.append(**record, **clip("sql_run", sql if decision != "refused" else None, clipped), tables=[],
                       columns=[], masked=[],
                       relations=relations or [], rows=rows, decision=decision, reason=reason,
                       duration_ms=round((time.perf_counter() - started) * 1000, 2))
        finally:
            if log.anchor is not None:
                log.anchor.close()

    try:
        _one_statement(sql)
    except QueryRefused as exc:
        audit("refused", str(exc))
        raise
    try:
        with Lake(settings.lake, read_only=True, as_of=as_of) as lake:
            lock_down(lake.con, settings.lake.data_path)
            try:
                result = fetch(lake.con.execute(sql), arrow=arrow)
            except duckdb.Error as exc:
                hint = ("(tables are named shared.<dataset>; `onesource registry list` shows them)" if as_of is None
                        else f"(as of {as_of}, the table may not have been loaded yet: ask for a later time or "
                             "snapshot; `onesource status` shows each dataset's loads)")
                raise QueryFailed(str(exc).split("\n")[0] + " " + hint) from exc
    except Exception as exc:
        audit("failed", str(exc).split("\n")[0], relations=_relations(sql))
        raise
    audit("allowed", None, rows=result.row_count, relations=_relations(sql))
    return result
