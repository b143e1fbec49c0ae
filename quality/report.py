"""What `onesource quality report DATASET` shows: the last validation of a dataset, read from the lake."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.duck import one
from lakehouse import ledger
from lakehouse.lake import CATALOG, QUARANTINE, Lake


@dataclass(frozen=True)
class DatasetQuality:
    dataset: str
    load_id: str | None
    run_at: Any = None
    rows: int | None = 0
    passed: bool | None = None
    stage: str | None = None
    suite_version: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    failing_rows: list[dict[str, Any]] = field(default_factory=list)
    """Rows that failed a check, with ``_row`` (1-based row of the extract) and ``_reasons`` (every check
    the row failed): the quarantined rows with their values, or, for a published load, the key of each
    row its warnings flagged (``ops.quality_rows``)."""
    failing_total: int = 0
    """How many rows failed a check (``failing_rows`` holds the first ``sample``, or all of them)."""


def dataset_quality(lake: Lake, dataset: str, sample: int | None = 10) -> DatasetQuality:
    """The last validation of ``dataset``; ``sample``: how many failing rows to return (None: all)."""
    runs = ledger.quality_runs(lake.con, dataset, limit=1)
    if not runs:
        return DatasetQuality(dataset, None)
    run = runs[0]
    load_id = run.load_id
    cur = lake.con.execute(
        f"""SELECT check_name, column_name, blocking, success, skipped, unexpected_count, sample_rows, sample_values,
                   error, expectation
            FROM {ledger.ref('quality_results')} WHERE load_id = ?
            ORDER BY success, NOT blocking, check_name, column_name""", [load_id])
    names = [d[0] for d in cur.description]
    checks = []
    for row in cur.fetchall():
        item = dict(zip(names, row, strict=True))
        for key in ("sample_rows", "sample_values"):
            item[key] = json.loads(item[key]) if item[key] else []
        checks.append(item)
    failing, total = _failing_rows(lake, dataset, load_id, sample)
    return DatasetQuality(dataset, load_id, run.run_at, run.rows, run.passed, run.stage, run.suite_version, checks,
                          failing, total)


def _failing_rows(lake: Lake, dataset: str, load_id: str, sample: int | None) -> tuple[list[dict[str, Any]], int]:
    """The load's failing rows: from ``quarantine.<dataset>`` (with every value) when the load is the
    quarantined one, else from ``ops.quality_rows`` (row, key, reasons)."""
    limit = "" if sample is None else f" LIMIT {int(sample)}"
    where = "_load_id = ? AND _reasons IS NOT NULL"
    source = f'{CATALOG}.{QUARANTINE}."{dataset}"' if dataset in lake.tables(QUARANTINE) else None
    if source is None or not one(lake.con, f"SELECT count(*) FROM {source} WHERE {where}", [load_id])[0]:
        if not ledger.exists(lake.con, "quality_rows"):  # a lake written before the table existed
            return [], 0
        source, where = ledger.ref("quality_rows"), "load_id = ? AND dataset = ?"
        select = f"SELECT _row, key_value, _reasons FROM {source} WHERE {where}"
        params = [load_id, dataset]
    else:
        select = f"SELECT * EXCLUDE (_load_id) FROM {source} WHERE {where}"
        params = [load_id]
    total = one(lake.con, f"SELECT count(*) FROM ({select})", params)[0]
    cur = lake.con.execute(f"{select} ORDER BY _row{limit}", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()], total
