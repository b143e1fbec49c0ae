"""The check digits' fast path: computed beside GX, consulted by GX's own SQL.

GX asks every map metric for its SQL condition before it runs any query, and then runs its queries
one after another. Check digits in SQL cost ~12 ns per ``substr`` (2.2 s on 5M codes); in numpy
(:mod:`quality.fastcheck`) 0.5 s, but on one core while the other idles. So:

1. :func:`start` (called by the validation before GX begins) reads the batch's column on a worker
   thread, runs the vectorised checks (a family answers the format rule and the check digits in one
   pass) and writes each check's distinct failing values to a small Parquet file;
2. the metric's condition is ``value IS NULL OR value NOT IN (the values in that file)``, returned
   at once;
3. GX's queries that do not name the file (uniqueness, the other checks' aggregates) run meanwhile;
   the one that names it waits for the worker first (:func:`wait_for`, called by quality.gx_duckdb).

GX still counts, samples and names the failing rows itself, from its own query. If the worker cannot
read the batch the vectorised way, it computes the failing values with the per-character SQL
instead, so the file is always right. Files live for one validation (:func:`forget`).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# This module is imported by the validation's light top level (the DAG files import quality): DuckDB,
# numpy and pyarrow are imported where they are used.

Family = Callable[..., "dict[str, np.ndarray]"]
"""A vectorised family of checks (quality.fastcheck): a text column -> {check name: passes}."""


@dataclass(frozen=True)
class Part:
    """One check a family answers, with its per-value SQL condition (the fallback)."""

    name: str
    sql: str


@dataclass(frozen=True)
class Answer:
    path: Path
    future: Future


_answers: dict[tuple[str, str, str, str], Answer] = {}
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-checkdigits")
_scratch: list[Path] = []


def _folder() -> Path:
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="onesource-checkdigits-")))
    return _scratch[0]


def start(query: str, column: str, family: Family, parts: list[Part], parquet: Path | None = None) -> dict[str, Answer]:
    """The answers for ``parts`` of ``family`` on ``column`` (a quoted identifier) of the batch
    ``query``; those not yet started start now, together, in one read of the column.
    ``parquet``: the file ``query`` reads every row of, in order, when the caller knows it (the
    worker then reads the column with pyarrow, ~3x faster than fetching it through DuckDB)."""
    query = query.strip()
    todo = [p for p in parts if (query, column, family.__name__, p.name) not in _answers]
    if todo:
        paths = [_folder() / f"failing-{len(_answers) + i}-{family.__name__}-{p.name}.parquet" for i, p in enumerate(todo)]
        future = _pool.submit(_write_failing, query, column, family, list(zip(todo, paths, strict=True)), parquet)
        for part, path in zip(todo, paths, strict=True):
            _answers[(query, column, family.__name__, part.name)] = Answer(path, future)
    return {p.name: _answers[(query, column, family.__name__, p.name)] for p in parts}


def condition(column: str, answer: Answer) -> str:
    """SQL: the value is missing (another check owns that) or not one of the failing values."""
    from core.duck import literal

    return f"({column} IS NULL OR {column} NOT IN (SELECT v FROM read_parquet({literal(str(answer.path))})))"


def wait_for(sql: str) -> None:
    """Before GX runs ``sql``: finish every answer it reads (re-raising the worker's error, if any)."""
    for answer in list(_answers.values()):
        if not answer.future.done() and str(answer.path) in sql:
            answer.future.result()


def pending() -> bool:
    return any(not a.future.done() for a in _answers.values())


def forget() -> None:
    """Drop every answer and its file (called before and after each validation: answers are per batch)."""
    for answer in _answers.values():
        if not answer.future.cancel():
            with contextlib.suppress(Exception):
                answer.future.result()  # never delete a file the worker is still writing
        answer.path.unlink(missing_ok=True)
    _answers.clear()


def _write_failing(query: str, column: str, family: Family, parts: list[tuple[Part, Path]],
                   parquet: Path | None) -> None:
    import duckdb
    import pyarrow as pa

    from core.duck import literal

    con = duckdb.connect()
    try:
        try:
            failing = _vectorised(_column_batches(con, query, column, parquet), family, [p.name for p, _ in parts])
        except (duckdb.Error, pa.ArrowException):
            failing = None  # e.g. a column type the check cannot read as text: the SQL decides
        for part, path in parts:
            if failing is None:
                con.execute(f"COPY (SELECT DISTINCT {column}::VARCHAR AS v FROM ({query}) AS batch WHERE "
                            f"{column} IS NOT NULL AND NOT ({part.sql})) TO {literal(str(path))} (FORMAT parquet)")
            else:
                con.register("__failing", pa.table({"v": failing[part.name]}))
                con.execute(f"COPY (SELECT DISTINCT v FROM __failing) TO {literal(str(path))} (FORMAT parquet)")
                con.unregister("__failing")
    finally:
        con.close()


def _column_batches(con, query: str, column: str, parquet: Path | None):
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


def _vectorised(columns, family: Family, names: list[str]) -> dict:
    """Per check in ``names``, the values that fail it (a pyarrow array, duplicates possible)."""
    import pyarrow as pa

    failing: dict[str, list] = {name: [] for name in names}

    def collect(values, verdicts) -> None:
        for name in names:
            ok = verdicts[name]
            if not ok.all():
                failing[name].append(values.filter(pa.array(~ok)))

    # Two batches in flight (numpy and pyarrow release the GIL): once GX's other queries are done,
    # this is all that runs, and on one thread it would leave a core idle. Never more than two
    # batches are held, however large the column.
    in_flight: deque = deque()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="onesource-checkdigits-batch") as pool:
        for values in columns:
            in_flight.append((values, pool.submit(family, values)))
            if len(in_flight) == 2:
                values, verdicts = in_flight.popleft()
                collect(values, verdicts.result())
        for values, verdicts in in_flight:
            collect(values, verdicts.result())
    return {name: pa.concat_arrays(f) if f else pa.array([], pa.string()) for name, f in failing.items()}


def cleanup() -> None:
    """Remove the scratch folder (at exit)."""
    forget()
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
    _scratch.clear()


atexit.register(cleanup)
