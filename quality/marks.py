"""Every failing row of a validation, with every check it failed: the marks of ``quarantine.<dataset>``.

GX names at most ``partial_unexpected_count`` failing rows per check on SQL (its index query has a
``LIMIT``; its COMPLETE format stops at 200 values), so a report built from its lists marked the first
five rows of each check and left the others unmarked. What GX does give for every map expectation is
its *unexpected index query*: the SQL that selects every failing row (``__row`` and the value) with
GX's own condition. The marks run those queries, all in one DuckDB statement, so the rows marked for
a check are exactly the rows GX counted for it (``unexpected_count``), however many they are: one pass
over the batch per failed check, grouped by row in DuckDB, never a Python object per row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quality import scratch
from quality.gx_duckdb import ROW

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowQuery:
    """One failed check's failing rows: ``n`` orders reasons within a row (the suite's order)."""

    n: int
    label: str
    sql: str
    fallback: str = ""
    """The rows GX named itself (its first few), used when ``sql`` cannot run."""


@dataclass(frozen=True)
class Marks:
    table: pa.Table
    """``_row`` (BIGINT, 1-based row of the batch) and ``_reasons`` (VARCHAR[]): one row per failing row."""
    counts: dict[int, int]
    """Check ``n`` -> rows marked for it."""
    first_rows: dict[int, tuple[int, ...]]
    """Check ``n`` -> its first failing rows (1-based, ascending), for the report's samples."""


def repair(sql: str, batch_sql: str) -> str:
    """GX's index query, runnable. For a query asset GX writes the asset's query bare after FROM
    (``FROM SELECT ... WHERE ...``, not SQL); in parentheses it is the batch it means. Its trailing
    semicolon goes too, so the query can be a subquery."""
    batch_sql = batch_sql.strip()
    fixed = sql.replace(f"FROM {batch_sql}", f"FROM ({batch_sql}) AS batch")
    return fixed.strip().removesuffix(";")


def collect(queries: list[RowQuery], sample: int) -> Marks:
    """Run every query in one DuckDB statement and group the failing rows by row."""
    import duckdb
    import pyarrow as pa

    if not queries:
        empty = pa.table({"_row": pa.array([], pa.int64()), "_reasons": pa.array([], pa.list_(pa.string()))})
        return Marks(empty, {}, {})
    con = duckdb.connect()
    try:
        if scratch.has_key():  # a reference check reads an encrypted keys file (quality.scratch)
            scratch.add_key(con)
        try:
            con.execute(f"CREATE TEMP TABLE hits AS {_hits(queries)}")
        except duckdb.Error:  # one query GX rendered wrong: find it, and mark the others in full
            con.execute(f"CREATE TEMP TABLE hits AS {_hits(_runnable(con, queries))}")
        table = con.execute("SELECT r AS _row, list(reason ORDER BY n) AS _reasons FROM hits "
                            "GROUP BY r ORDER BY r").arrow()
        if not isinstance(table, pa.Table):  # DuckDB >= 1.4 returns a RecordBatchReader
            table = table.read_all()
        per_check = con.execute(f"SELECT n, count(*), list(r ORDER BY r)[1:{int(sample)}] FROM hits "
                                "GROUP BY n").fetchall()
    finally:
        con.close()
    return Marks(table, {n: c for n, c, _ in per_check}, {n: tuple(rows) for n, _, rows in per_check})


def _hits(queries: list[RowQuery]) -> str:
    # DISTINCT: a row is marked once per check, whatever the query's joins do
    return " UNION ALL ".join(
        f"SELECT DISTINCT {ROW}::BIGINT AS r, {q.n} AS n, {scratch.literal(q.label)} AS reason FROM ({q.sql}) AS failing"
        for q in queries)


def _runnable(con: duckdb.DuckDBPyConnection, queries: list[RowQuery]) -> list[RowQuery]:
    """Each query that DuckDB cannot run is replaced by its fallback, loudly: its check's marks are
    then only the rows GX named."""
    import duckdb

    out = []
    for q in queries:
        try:
            con.execute(f"DESCRIBE {q.sql}")
            out.append(q)
        except duckdb.Error as exc:
            log.error("%s: GX's query for the failing rows does not run (%s); only its first rows are marked: %s",
                      q.label, exc, q.sql)
            out.append(RowQuery(q.n, q.label, q.fallback or f"SELECT NULL::BIGINT AS {ROW} WHERE false"))
    return out
