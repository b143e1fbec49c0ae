"""The check digits' fast path: computed beside GX, consulted by GX's own SQL.

GX asks every map metric for its SQL condition before it runs any query, and then runs its queries
one after another. Check digits in SQL cost ~12 ns per ``substr`` (2.2 s on 5M codes); in numpy
(:mod:`quality.fastcheck`) 0.5 s, but on one core while the other idles. So:

1. :func:`start` (called by the validation before GX begins) reads the batch's column on a worker
   thread, runs the vectorised check and writes the distinct failing values to a small Parquet file;
2. the metric's condition is ``value IS NULL OR value NOT IN (the values in that file)``, returned
   at once;
3. GX's queries that do not name the file (uniqueness, the other checks' aggregates) run meanwhile;
   the one that names it waits for the worker first (:func:`wait_for`, called by quality.engine).

GX still counts, samples and names the failing rows itself, from its own query. If the worker cannot
read the batch the vectorised way, it computes the failing values with the per-character SQL
instead, so the file is always right. Files live for one validation (:func:`forget`).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onesource.duck import literal

Check = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Answer:
    path: Path
    future: Future


_answers: dict[tuple[str, str, str], Answer] = {}
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-checkdigits")
_scratch: list[Path] = []


def _folder() -> Path:
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="onesource-checkdigits-")))
    return _scratch[0]


def start(query: str, column: str, check: Check, sql: str) -> Answer:
    """The answer for ``check`` on ``column`` (a quoted identifier) of the batch ``query``, started
    now on the worker unless it already is. ``sql`` is the per-character condition (the fallback)."""
    key = (query.strip(), column, check.__name__)
    if key not in _answers:
        path = _folder() / f"failing-{len(_answers)}-{check.__name__}.parquet"
        _answers[key] = Answer(path, _pool.submit(_write_failing, key[0], column, check, sql, path))
    return _answers[key]


def condition(column: str, answer: Answer) -> str:
    """SQL: the value is missing (another check owns that) or not one of the failing values."""
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


def _write_failing(query: str, column: str, check: Check, sql: str, path: Path) -> None:
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    try:
        try:
            failing = _vectorised(con, query, column, check)
        except (duckdb.Error, pa.ArrowException):
            failing = None  # e.g. a column type the check cannot read as text: the SQL decides
        if failing is None:
            con.execute(f"COPY (SELECT DISTINCT {column}::VARCHAR AS v FROM ({query}) AS batch "
                        f"WHERE {column} IS NOT NULL AND NOT ({sql})) TO {literal(str(path))} (FORMAT parquet)")
        else:
            con.register("__failing", pa.table({"v": failing}))
            con.execute(f"COPY (SELECT DISTINCT v FROM __failing) TO {literal(str(path))} (FORMAT parquet)")
    finally:
        con.close()


def _vectorised(con, query: str, column: str, check: Check):
    """The failing values of ``column``, batch by batch (a pyarrow array, duplicates possible)."""
    import pyarrow as pa

    result = con.execute(f"SELECT {column}::VARCHAR AS v FROM ({query}) AS batch").arrow()
    batches = result if hasattr(result, "read_next_batch") else result.to_batches()
    failing = []
    for batch in batches:
        values = batch.column(0)
        ok = check(values)
        if not ok.all():
            failing.append(values.filter(pa.array(~ok)))
    return pa.concat_arrays(failing) if failing else pa.array([], pa.string())


def cleanup() -> None:
    """Remove the scratch folder (at exit)."""
    forget()
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
    _scratch.clear()


atexit.register(cleanup)
