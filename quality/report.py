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
    """Quarantined rows that failed a check, with ``_row`` (1-based row of the extract) and ``_reasons``."""


def dataset_quality(lake: Lake, dataset: str, sample: int = 10) -> DatasetQuality:
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
    failing: list[dict[str, Any]] = []
    if dataset in lake.tables(QUARANTINE):
        cur = lake.con.execute(
            f'SELECT * EXCLUDE (_load_id) FROM {CATALOG}.{QUARANTINE}."{dataset}" '
            f"WHERE _load_id = ? AND _reasons IS NOT NULL ORDER BY _row LIMIT {int(sample)}", [load_id])
        cols = [d[0] for d in cur.description]
        failing = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return DatasetQuality(dataset, load_id, run[1], run[2], run[3], run[4], run[5], checks, failing)
