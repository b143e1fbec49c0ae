"""Subscriptions (数据回流): one publish's change of 1% of a 1M-row dataset delivered to a PostgreSQL subscriber.

``delivery_seconds``: the median time of ``sharing.subscriptions.deliver`` for a changes subscription of
another department, into a table of the PostgreSQL on this machine, after an upsert load changed 10,000 of
the dataset's 1,000,000 rows (a different 10,000 each run). It holds everything a delivery does: the checks
(user, freezes, grant), the target's mark, the subscriber's governed view at the new snapshot and at the one
the target holds (each a governed, audited query of 1M rows), their difference by key, and the target's one
transaction (10,000 old rows deleted by key, 10,000 inserted, the mark). The loads are not timed.

``delivery_ratio``: ``delivery_seconds`` over the time psycopg takes to COPY the same 10,000 rows (Python
tuples made beforehand) into an empty table of the same server and commit: the floor of moving those rows.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path

from bench.common import figure, run_child

ROWS = 1_000_000
CHANGED = 10_000
PG_DSN = os.environ.get("ONESOURCE_BENCH_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
SCHEMA = "onesource_bench_delivery"


def _home(workdir: Path):
    """A lake with amr's upsert dataset ``firms`` of 1M rows (bench/ingest.py's extract), tax's user, and
    tax's changes subscription into PostgreSQL, delivered once whole (not timed)."""
    from bench.ingest import MAKE_CSV
    from core.config import Settings
    from ingest import run_dataset
    from lakehouse import Lake
    from schemas import load_registry
    from sharing.subscriptions import store
    from sharing.subscriptions.deliver import deliver
    from sharing.users import create_user
    from tests.helpers import firms_dataset, write_registry

    csv = workdir / f"firms_{ROWS}.csv"
    if not csv.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        run_child(MAKE_CSV + "\nprint('RESULT{}')", str(csv), str(ROWS))
    settings = Settings(home=workdir / "delivery-home")
    if settings.home.exists():
        import shutil

        shutil.rmtree(settings.home)
    changes = workdir / "delivery-changes"
    changes.mkdir(parents=True, exist_ok=True)
    write_registry(settings.registry_dir, [firms_dataset(load_mode="upsert", connector={
        "kind": "file", "path": str(changes / "*.csv"), "format": "csv"})])
    registry = load_registry(settings.registry_dir)
    for old in changes.glob("*.csv"):
        old.unlink()
    (changes / "0000-all.csv").symlink_to(csv)
    [result] = run_dataset(settings, registry, "firms", os.environ)
    assert result.status == "published", result.message
    _reset_schema()
    with Lake(settings.lake) as lake:
        create_user(lake, "tax", "tax_subscriber")
        sub = store.add(lake, registry, department="tax", user="tax_subscriber", dataset="firms", target_kind="postgres",
                        target={"dsn": PG_DSN, "table": f"{SCHEMA}.firms"}, mode="changes")
    t = time.perf_counter()
    outcome = deliver(settings, registry, sub)
    assert outcome.status == "delivered" and outcome.rows == ROWS, outcome
    return settings, registry, sub, csv, changes, time.perf_counter() - t


def _reset_schema() -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")


def _change(csv: Path, changes: Path, run: int) -> list[tuple]:
    """Write an upsert batch renaming 10,000 rows (rows run*10,000 .. +10,000 of the extract); returns them."""
    import duckdb

    out = changes / f"{run + 1:04d}-change.csv"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * REPLACE ("企业名称" || '（{run + 1}）' AS "企业名称")
                          FROM read_csv('{csv}', all_varchar = true) LIMIT {CHANGED} OFFSET {run * CHANGED})
                    TO '{out}' (HEADER, DELIMITER ',')""")
    rows = con.execute(f"SELECT * FROM read_csv('{out}', all_varchar = true)").fetchall()
    con.close()
    return rows


def _copy_seconds(rows: list[tuple], run: int) -> float:
    """psycopg's COPY of ``rows`` into an empty table, committed."""
    import psycopg

    table = f"{SCHEMA}.raw_{run}"
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(f"CREATE TABLE {table} (uscc text, enterprise_name text, enterprise_status text, "
                     "capital numeric(18, 2), staff bigint, founded date)")
        conn.commit()
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - t


def run(workdir: Path, runs: int = 5, log=print) -> dict:
    from ingest import run_dataset
    from sharing.subscriptions.deliver import deliver

    settings, registry, sub, csv, changes, first = _home(workdir)
    log(f"  first delivery (1M rows, whole): {first:.2f} s")
    delivered, copies = [], []
    for i in range(runs):
        rows = _change(csv, changes, i)
        [result] = run_dataset(settings, registry, "firms", os.environ)
        assert result.status == "published" and result.rows == CHANGED, result
        t = time.perf_counter()
        outcome = deliver(settings, registry, sub)
        delivered.append(time.perf_counter() - t)
        assert outcome.status == "delivered" and outcome.kind == "changes" and outcome.rows == CHANGED, outcome
        copies.append(_copy_seconds(rows, i))
        log(f"  run {i + 1}: delivery {delivered[-1]:.2f} s, psycopg COPY of the same rows {copies[-1]:.3f} s")
    _check(sub)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratios = [d / c for d, c in zip(delivered, copies, strict=True)]
    return {"delivery_seconds": figure(delivered, "s", peak),
            "delivery_ratio": {**figure(ratios, "x", peak), "median": round(statistics.median(ratios), 2)},
            "delivery_initial_seconds": figure([first], "s", peak)}


def _check(sub) -> None:
    """The subscriber's table holds every row once (the benchmark's deliveries were right, not just fast)."""
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        count, keys = conn.execute(f"SELECT count(*), count(DISTINCT uscc) FROM {SCHEMA}.firms").fetchone()
    assert count == keys == ROWS, (count, keys)
