"""What `onesource quality report DATASET` shows: the last validation of a dataset, read from the lake."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lakehouse.lake import CATALOG, OPS, QUARANTINE, Lake


@dataclass(frozen=True)
class DatasetQuality:
    dataset: str
    load_id: str | None
    run_at: Any = None
    rows: int = 0
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
    run = lake.con.execute(
        f"SELECT load_id, run_at, rows, passed, stage, suite_version FROM {CATALOG}.{OPS}.quality_runs "
        "WHERE dataset = ? ORDER BY run_at DESC LIMIT 1", [dataset]).fetchone()
    if run is None:
        return DatasetQuality(dataset, None)
    load_id = run[0]
    cur = lake.con.execute(
        f"""SELECT check_name, column_name, blocking, success, skipped, unexpected_count, sample_rows, sample_values,
                   error, expectation
            FROM {CATALOG}.{OPS}.quality_results WHERE load_id = ?
            ORDER BY success, NOT blocking, check_name, column_name""", [load_id])
    names = [d[0] for d in cur.description]
    checks = []
    for row in cur.fetchall():
        item = dict(zip(names, row, strict=True))
        for key in ("sample_rows", "sample_values"):
            item[key] = json.loads(item[key]) if item[key] else []
        checks.append(item)
    failing, total = _failing_rows(lake, dataset, load_id, sample)
    return DatasetQuality(dataset, load_id, run[1], run[2], run[3], run[4], run[5], checks, failing, total)


def _failing_rows(lake: Lake, dataset: str, load_id: str, sample: int | None) -> tuple[list[dict[str, Any]], int]:
    """The load's failing rows: from ``quarantine.<dataset>`` (with every value) when the load is the
    quarantined one, else from ``ops.quality_rows`` (row, key, reasons)."""
    limit = "" if sample is None else f" LIMIT {int(sample)}"
    where = "_load_id = ? AND _reasons IS NOT NULL"
    source = f'{CATALOG}.{QUARANTINE}."{dataset}"' if dataset in lake.tables(QUARANTINE) else None
    if source is None or not lake.con.execute(f"SELECT count(*) FROM {source} WHERE {where}", [load_id]).fetchone()[0]:
        if "quality_rows" not in lake.tables(OPS):  # a lake written before the table existed
            return [], 0
        source, where = f"{CATALOG}.{OPS}.quality_rows", "load_id = ? AND dataset = ?"
        select = f"SELECT _row, key_value, _reasons FROM {source} WHERE {where}"
        params = [load_id, dataset]
    else:
        select = f"SELECT * EXCLUDE (_load_id) FROM {source} WHERE {where}"
        params = [load_id]
    total = lake.con.execute(f"SELECT count(*) FROM ({select})", params).fetchone()[0]
    cur = lake.con.execute(f"{select} ORDER BY _row{limit}", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()], total
