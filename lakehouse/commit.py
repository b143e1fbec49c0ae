"""The publish and quarantine commits: a validated batch becomes the shared table's next snapshot, and a
refused one is kept in the quarantine zone, each in one DuckLake transaction together with its ledger rows.

A load's orchestration (:mod:`ingest.load`) decides whether a batch is published or quarantined, and makes its
ledger rows; this module stores it. Publishing creates the shared table or adds the columns the registry gained,
replaces (snapshot), upserts or appends the batch's rows (a large batch's staged Parquet file is adopted as it is,
not copied: :data:`ADOPT_ROWS`), writes the ledger rows and each failing row of the batch
(the ledger's ``quality_rows``), releases the dataset's quarantined batch, and labels the snapshot. All of it lands, or
none of it does; a commit refused by a busy catalog is tried again (:func:`lakehouse.lake.retrying`).

>>> publish_batch(lake, ds, staged, rows, load_id, {"loads": [row], "quality_runs": [run]}, marks,
...               {"dataset": ds.name, "load_id": load_id})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from core.citytime import utc_now
from core.duck import literal as q
from lakehouse import ledger
from lakehouse.exceptions import SchemaMismatchError
from lakehouse.lake import QUARANTINE, SHARED, Lake, retrying
from lakehouse.ledger import CATALOG
from lakehouse.standardize import ident
from schemas.model import Dataset

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

class LedgerRows(TypedDict, total=False):
    """Ledger table (:data:`lakehouse.ledger.TABLES`) -> the rows a commit writes to it, in order."""

    loads: Sequence[ledger.LoadRow]
    quality_runs: Sequence[ledger.QualityRunRow]
    quality_results: Sequence[ledger.QualityResultRow]


COMMIT_TIME = {"loads": "finished_at", "quality_runs": "run_at", "quality_results": "run_at"}
"""The ledger columns that say when a commit landed: stamped at each attempt (:func:`_write_ledger`), so a commit
retried on a busy catalog records the time it landed, not the time it was first tried."""

QUARANTINE_EXTRA = (("_load_id", "VARCHAR"), ("_row", "BIGINT"), ("_reasons", "VARCHAR[]"))
"""The columns ``quarantine.<dataset>`` has besides the dataset's: the load, the batch's row, its failed checks."""

ADOPT_ROWS = 100_000
"""Batches this large are published by handing the staged Parquet file to DuckLake as it is, not copied."""


def ensure_table(lake: Lake, ds: Dataset, schema: str = SHARED, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Create the dataset's table in ``schema``, or add columns the registry gained (DuckLake adds them
    in place, without rewriting data)."""
    wanted = [(c.name, c.duck_type) for c in ds.columns] + list(extra)
    existing = lake.table_columns(schema, ds.name)
    table = f"{CATALOG}.{schema}.{ident(ds.name)}"
    if not existing:
        lake.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{ident(n)} {t}' for n, t in wanted)})")
        return
    for name, duck_type in wanted:
        have = existing.get(name)
        if have is None:
            lake.con.execute(f"ALTER TABLE {table} ADD COLUMN {ident(name)} {duck_type}")
        elif have.replace(" ", "") != duck_type.replace(" ", ""):
            raise SchemaMismatchError(
                f"dataset {ds.name}: column {name} of {schema}.{ds.name} is {have} in the lake but {duck_type} in the "
                "registry; a type change needs a new dataset version (see `onesource registry`)"
            )


def _adoptable_path(lake: Lake, ds: Dataset, load_id: str, rows: int) -> Path | None:
    """Where the staged file goes when DuckLake can adopt it (``ducklake_add_data_files``), else None.

    Rewriting a validated batch through INSERT costs about half of raw DuckDB's CSV-to-Parquet time
    again (0.8 s on 5M rows); adopting the staged file costs a rename and a catalog row. Only where
    that is sound: a local data folder on the staging area's file system (the rename), a lake that
    does not encrypt (the staged file is plain Parquet), whole-batch modes (an upsert must delete
    matching rows first anyway), and large batches (small ones are better inlined or copied)."""
    data = lake.settings.data_path
    if "://" in data or lake.encrypted or ds.load_mode == "upsert" or rows < ADOPT_ROWS:
        return None
    return Path(data) / SHARED / ds.name / f"onesource-{load_id}.parquet"


def _write_ledger(con: duckdb.DuckDBPyConnection, rows: LedgerRows) -> None:
    """Write ``rows``, each table's :data:`COMMIT_TIME` column stamped with this attempt's time."""
    at = utc_now()
    loads, runs, results = rows.get("loads", ()), rows.get("quality_runs", ()), rows.get("quality_results", ())
    if loads:
        ledger.append(con, "loads", *(ledger.LoadRow(**{**r, "finished_at": at}) for r in loads))
    if runs:
        ledger.append(con, "quality_runs", *(ledger.QualityRunRow(**{**r, "run_at": at}) for r in runs))
    if results:
        ledger.append(con, "quality_results", *(ledger.QualityResultRow(**{**r, "run_at": at}) for r in results))


def publish_batch(lake: Lake, ds: Dataset, staged: Path, rows: int, load_id: str,
                  ledger_rows: LedgerRows, marks: pa.Table | None, extra: Mapping[str, object]) -> None:
    """Publish the validated batch ``staged`` (``rows`` rows) as load ``load_id`` of ``ds``: one commit, labelled
    ``publish <dataset> load <load_id>`` with ``extra``, that replaces, upserts or appends the shared table's
    rows as the dataset's load mode says, writes ``ledger_rows`` (their :data:`COMMIT_TIME` columns stamped with
    the commit's time) and the batch's failing rows (``marks``: the validation's table of
    ``_row`` and ``_reasons``, or None), and empties ``quarantine.<dataset>``. A commit that cannot land leaves
    the staged file where it was."""
    table = f"{CATALOG}.{SHARED}.{ident(ds.name)}"
    cols = ", ".join(ident(c.name) for c in ds.columns)
    batch = f"read_parquet({q(str(staged))})"

    adopted = _adoptable_path(lake, ds, load_id, rows)
    if adopted:
        adopted.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.replace(adopted)
        except OSError:  # another file system (EXDEV): copy the rows instead
            adopted = None

    def attempt() -> None:
        with lake.transaction() as con:
            ensure_table(lake, ds)
            if ds.load_mode == "snapshot":
                con.execute(f"DELETE FROM {table}")
            elif ds.load_mode == "upsert":
                match = " AND ".join(f"b.{ident(k)} = t.{ident(k)}" for k in ds.key)
                con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM {batch} b WHERE {match})")
            if adopted:
                con.execute(f"CALL ducklake_add_data_files({q(CATALOG)}, {q(ds.name)}, {q(str(adopted))}, "
                            f"schema => {q(SHARED)}, allow_missing => true)")
            else:
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {batch}")
            _write_ledger(con, ledger_rows)
            _record_rows(lake, ds, load_id, marks, adopted or staged)
            if ds.name in lake.tables(QUARANTINE):  # a good batch releases the quarantined one
                con.execute(f"DELETE FROM {CATALOG}.{QUARANTINE}.{ident(ds.name)}")
            lake.commit_message(f"publish {ds.name} load {load_id}", dict(extra))

    try:
        retrying(attempt, lake.settings.commit_retries, f"publishing {ds.name}")
    except BaseException:
        if adopted and adopted.exists():
            adopted.replace(staged)  # not published: the batch goes back to staging, the data folder stays clean
        raise


def quarantine_batch(lake: Lake, ds: Dataset, load_id: str, stage: str, ledger_rows: LedgerRows,
                     batch: Path | None, marks: pa.Table | None) -> None:
    """Record load ``load_id`` of ``ds`` as quarantined at ``stage``: one commit that writes ``ledger_rows``
    and, given the refused ``batch`` (a Parquet file; None when there are no rows to keep), keeps every row of
    it queryable as ``quarantine.<dataset>`` and its failing rows (``marks``) in the ledger's ``quality_rows``. The
    shared table is not touched."""

    def write() -> None:
        with lake.transaction() as con:
            _write_ledger(con, ledger_rows)
            if batch is not None:
                _quarantine_rows(lake, ds, batch, load_id, marks)
                _record_rows(lake, ds, load_id, marks, batch)
            lake.commit_message(f"quarantine {ds.name} load {load_id}", {"load_id": load_id, "stage": stage})

    retrying(write, lake.settings.commit_retries, f"recording quarantined load {load_id}")


def _quarantine_rows(lake: Lake, ds: Dataset, batch: Path, load_id: str, marks: pa.Table | None) -> None:
    """Keep the batch queryable as ``quarantine.<dataset>``: every row, with every check it failed
    (``marks``: the validation's pyarrow table of ``_row`` and ``_reasons``, or None)."""
    import pyarrow as pa

    ensure_table(lake, ds, QUARANTINE, QUARANTINE_EXTRA)
    failing = marks if marks is not None else pa.table(
        {"_row": pa.array([], pa.int64()), "_reasons": pa.array([], pa.list_(pa.string()))})
    lake.con.register("__failing", failing)
    try:
        cols = ", ".join(ident(c.name) for c in ds.columns)
        lake.con.execute(
            f"INSERT INTO {CATALOG}.{QUARANTINE}.{ident(ds.name)} ({cols}, _load_id, _row, _reasons) "
            f"SELECT {', '.join('b.' + ident(c.name) for c in ds.columns)}, ?, b.__n, f._reasons "
            f"FROM (SELECT *, row_number() OVER () AS __n FROM read_parquet({q(str(batch))})) b "
            "LEFT JOIN __failing f ON f._row = b.__n", [load_id])
    finally:
        lake.con.unregister("__failing")


def _record_rows(lake: Lake, ds: Dataset, load_id: str, marks: pa.Table | None, batch: Path) -> None:
    """The ledger's ``quality_rows``: every failing row of the batch with its reasons and its key, published or
    quarantined (a published batch's warned rows are not in ``quarantine.<dataset>``, but the owner
    must still find every one of them: ``onesource quality report DATASET --all``)."""
    if marks is None or marks.num_rows == 0:
        return
    key = ", ".join(f"{ident(k)}::VARCHAR" for k in ds.key)
    key = f"concat_ws('|', {key})" if len(ds.key) > 1 else (key or "NULL")
    lake.con.register("__marks", marks)
    try:
        ledger.insert_select(
            lake.con, "quality_rows",
            "SELECT ? AS load_id, ? AS dataset, m._row AS _row, m._reasons AS _reasons, b.key_value AS key_value "
            f"FROM __marks m LEFT JOIN (SELECT file_row_number + 1 AS __n, {key} AS key_value "
            f"FROM read_parquet({q(str(batch))}, file_row_number = true)) b ON b.__n = m._row", [load_id, ds.name])
    finally:
        lake.con.unregister("__marks")
