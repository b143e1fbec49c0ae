"""The check digits' fast path: one validation's answers, computed beside GX, read by GX's own SQL.

GX asks every map metric for its SQL condition before it runs any query, and then runs its queries
one after another. Check digits in SQL cost ~12 ns per ``substr`` (2.2 s on 5M codes); in numpy
(:mod:`quality.checkdigits`) 0.5 s, but on one core while the other idles. So a :class:`FastPath`,
created by the validation for its batch and closed by it:

1. :meth:`FastPath.start` (called by the validation before GX begins) reads the batch's column on
   its worker thread, runs the vectorised checks (a family answers the format rule and the check
   digits in one pass) and writes each check's distinct failing values to a small Parquet file;
2. the metric's condition is ``value IS NULL OR value NOT IN (the values in that file)``, returned at
   once as a SQLAlchemy element that carries its :class:`Answer` (quality.expectations);
3. GX's queries that do not hold that element (uniqueness, the other checks' aggregates) run
   meanwhile; the one that holds it waits for its answer when SQLAlchemy compiles it (GX compiles a
   query just before running it), so nothing searches SQL text for file names.

GX calls the metric back with no argument of ours, so the validation hands its :class:`FastPath` over
for its own duration through a context variable (:func:`active`): another thread, or GX run outside a
validation, sees none and evaluates the per-character SQL itself. GX still counts, samples and names the
failing rows itself, from its own query. If the worker cannot read the batch the vectorised way, it
computes the failing values with the per-character SQL instead, so the file is always right. The files
live in the object's own folder, removed when it closes.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from quality.checkdigits import Verdicts

# This module is imported by the validation's light top level (the DAG files import quality): DuckDB,
# numpy and pyarrow are imported where they are used.

Family = Callable[..., "Verdicts"]
"""A vectorised family of checks (quality.checkdigits): a text column -> {check name: passes}."""


@dataclass(frozen=True)
class Part:
    """One check a family answers, with its per-value SQL condition (the fallback)."""

    name: str
    sql: str


@dataclass(frozen=True)
class Answer:
    """The file of one check's failing values, and the worker's job that writes it."""

    path: Path
    future: Future[bool | None]

    def ready(self) -> Path:
        """The file, once written (re-raising the worker's error, if any)."""
        self.future.result()
        return self.path


class FastPath:
    """One validation's check-digit answers for its batch (``query``, as GX reads it; ``parquet``: the file it
    reads every row of, in order, when known: the worker then reads a column with pyarrow, ~3x faster than
    through DuckDB): a worker thread, a scratch folder, and the answers started so far, keyed by (column,
    family, check). Use as a context manager: closing it waits for (or cancels) the worker and removes every
    file. An answer is a set of failing values, so it holds for any subset of the batch's rows GX selects."""

    def __init__(self, query: str, parquet: Path | None = None) -> None:
        self.query, self.parquet = query.strip(), parquet
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-checkdigits")
        self._folder = Path(tempfile.mkdtemp(prefix="onesource-checkdigits-"))
        self._answers: dict[tuple[str, str, str], Answer] = {}
        self._order: dict[str, Future[bool | None]] = {}

    def __enter__(self) -> FastPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, column: str, family: Family, parts: list[Part], order: bool = False) -> dict[str, Answer]:
        """The answers for ``parts`` of ``family`` on ``column`` (a quoted identifier) of the batch; those
        not yet started start now, together, in one read of the column. ``order``: that read also says
        whether the column's non-null values increase strictly in the batch's order (:meth:`increasing`)."""
        todo = [p for p in parts if (column, family.__name__, p.name) not in self._answers]
        if todo:
            paths = [self._folder / f"failing-{len(self._answers) + i}-{family.__name__}-{p.name}.parquet"
                     for i, p in enumerate(todo)]
            order = order and column not in self._order
            future = self._pool.submit(_write_failing, self.query, column, family,
                                       list(zip(todo, paths, strict=True)), self.parquet, order)
            for part, path in zip(todo, paths, strict=True):
                self._answers[(column, family.__name__, part.name)] = Answer(path, future)
            if order:
                self._order[column] = future
        return {p.name: self._answers[(column, family.__name__, p.name)] for p in parts}

    def increasing(self, column: str) -> bool | None:
        """Whether ``column``'s non-null values increase strictly in the batch's order (then no two are
        equal), waiting for the read that answers it; None when no read was asked to, or it could not."""
        future = self._order.get(column)
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - the check's own read failed: the caller asks SQL instead
            return None

    def close(self) -> None:
        """Stop the worker (a job not yet begun is cancelled, a running one finishes: its file is never
        deleted while being written) and remove every answer file."""
        for answer in self._answers.values():
            if not answer.future.cancel():
                with contextlib.suppress(Exception):
                    answer.future.result()
        self._answers.clear()
        self._order.clear()
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._folder, ignore_errors=True)

    @contextlib.contextmanager
    def active(self) -> Iterator[FastPath]:
        """Make this the fast path of the GX run inside the block, on this thread (see :func:`active`)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_ACTIVE: contextvars.ContextVar[FastPath | None] = contextvars.ContextVar("onesource_fast_path", default=None)
"""The validation in progress on this thread's fast path: how it reaches GX's metric callbacks, which take
no argument of ours. Not shared state: each validation sets its own for its own duration."""


def active() -> FastPath | None:
    """The fast path of the validation running on this thread, or None (GX then evaluates the SQL)."""
    return _ACTIVE.get()


def _write_failing(query: str, column: str, family: Family, parts: list[tuple[Part, Path]],
                   parquet: Path | None, order: bool = False) -> bool | None:
    """Write each part's failing values to its file; return, if ``order``, whether the values increase
    strictly (None when not asked, or when the column could not be read the vectorised way)."""
    import duckdb
    import pyarrow as pa

    from core.duck import literal

    con = duckdb.connect()
    try:
        try:
            failing, increasing = _vectorised(_column_batches(con, query, column, parquet), family,
                                              [p.name for p, _ in parts], order)
        except (duckdb.Error, pa.ArrowException):
            failing, increasing = None, None  # e.g. a column type the check cannot read as text: the SQL decides
        for part, path in parts:
            if failing is None:
                con.execute(f"COPY (SELECT DISTINCT {column}::VARCHAR AS v FROM ({query}) AS batch WHERE "
                            f"{column} IS NOT NULL AND NOT ({part.sql})) TO {literal(str(path))} (FORMAT parquet)")
            else:
                con.register("__failing", pa.table({"v": failing[part.name]}))
                con.execute(f"COPY (SELECT DISTINCT v FROM __failing) TO {literal(str(path))} (FORMAT parquet)")
                con.unregister("__failing")
        return increasing
    finally:
        con.close()


def _column_batches(con: duckdb.DuckDBPyConnection, query: str, column: str,
                    parquet: Path | None) -> Iterator[pa.Array]:
    """The column's values as text, in pyarrow batches: read from the batch's Parquet file when it is
    known and the column is text there, else fetched through DuckDB from the query."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = column[1:-1].replace('""', '"')
    if parquet is not None:
        file = pq.ParquetFile(parquet)
        field = file.schema_arrow.field(name) if name in file.schema_arrow.names else None
        if field is not None and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            return (batch.column(0) for batch in file.iter_batches(batch_size=1 << 20, columns=[name]))
    result = con.execute(f"SELECT {column}::VARCHAR AS v FROM ({query}) AS batch").arrow()
    return (batch.column(0) for batch in (result if hasattr(result, "read_next_batch") else result.to_batches()))


def _vectorised(columns: Iterable[pa.Array], family: Family, names: list[str],
                order: bool = False) -> tuple[dict[str, pa.Array], bool | None]:
    """Per check in ``names``, the values that fail it (a pyarrow array, duplicates possible); and, if
    ``order``, whether the non-null values increase strictly (else None)."""
    import pyarrow as pa

    failing: dict[str, list[pa.Array]] = {name: [] for name in names}
    rising = _Rising() if order else None

    def collect(values: pa.Array, verdicts: Verdicts) -> None:
        for name in names:
            ok = verdicts[name]
            if not ok.all():
                failing[name].append(values.filter(pa.array(~ok)))

    # Two batches in flight (numpy and pyarrow release the GIL): once GX's other queries are done,
    # this is all that runs, and on one thread it would leave a core idle. Never more than two
    # batches are held, however large the column.
    in_flight: deque[tuple[pa.Array, Future[Verdicts]]] = deque()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="onesource-checkdigits-batch") as pool:
        for values in columns:
            if rising is not None:
                rising.add(values)
            in_flight.append((values, pool.submit(family, values)))
            if len(in_flight) == 2:
                values, verdicts = in_flight.popleft()
                collect(values, verdicts.result())
        for values, verdicts in in_flight:
            collect(values, verdicts.result())
    found = {name: pa.concat_arrays(f) if f else pa.array([], pa.string()) for name, f in failing.items()}
    return found, (rising.holds if rising is not None else None)


class _Rising:
    """Whether the non-null values seen so far, batch after batch, increase strictly (byte order, as DuckDB
    compares text): a comparison of neighbours, ~0.05 s per 5M codes."""

    def __init__(self) -> None:
        self.holds: bool = True
        self._last: Any = None

    def add(self, values: pa.Array) -> None:
        import pyarrow.compute as pc

        if not self.holds:
            return
        present = values.drop_null()
        if len(present) == 0:
            return
        n = len(present)
        first = present[0].as_py()
        if self._last is not None and not _after(first, self._last):
            self.holds = False
        elif n > 1 and not pc.all(pc.greater(present.slice(1), present.slice(0, n - 1))).as_py():
            self.holds = False
        self._last = present[n - 1].as_py()


def _after(value: Any, before: Any) -> bool:
    """``value`` > ``before`` in byte order (Python orders str by code point, which is UTF-8's byte order)."""
    return bool(value > before)
