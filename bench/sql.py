"""Governed-SQL benchmark: governance against the department's own SQL run directly in DuckDB.

"Direct" is the query as the department wrote it, on the raw table (``lake.shared.firms``), on a cursor of
the same locked-down connection: so the figures include everything governance adds (planning, the policy
relation that replaces the table, the row cap, the audit), not only the planner's time.

* ``sql_overhead_ms_p50``: a small query (a grouped count) through the persistent governed engine,
  minus the same query run directly (median of interleaved runs);
* ``sql_scan_ratio``: a query scanning every row of a 1M-row shared table, governed / direct;
* ``pg_qps_8_clients``: small queries per second through the Postgres-wire endpoint, 8 psycopg clients.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

from bench.common import figure

SMALL = "SELECT enterprise_status, count(*) AS n FROM shared.firms GROUP BY 1"
SCAN = "SELECT count(DISTINCT enterprise_name) AS names, sum(capital) AS capital, avg(staff) AS staff FROM shared.firms"


def _home(workdir: Path, csv: Path):
    from lakehouse import run_dataset
    from onesource.config import Settings
    from schemas import load_registry
    from tests.helpers import firms_dataset, write_registry

    settings = Settings(home=workdir / "sql-home")
    if not (settings.home / "ready").exists():
        write_registry(settings.registry_dir, [firms_dataset(connector={"kind": "file", "path": str(csv),
                                                                         "format": "csv"})])
        [result] = run_dataset(settings, load_registry(settings.registry_dir), "firms", os.environ)
        assert result.status == "published", result.message
        (settings.home / "ready").write_text(str(result.rows))
    return settings


def _timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(csv: Path, workdir: Path, small_runs: int = 200, scan_runs: int = 15, pg_seconds: float = 5.0, log=print) -> dict:
    import resource

    from schemas import load_registry
    from sharing.engine import GovernedEngine

    settings = _home(workdir, csv)
    registry = load_registry(settings.registry_dir)
    engine = GovernedEngine(settings, registry, persistent=True)
    cursor = engine._lake.con.cursor()
    access = engine._access(cursor, "tax")
    assert "firms" in access  # the department reads it through its policy relation
    small_sql, scan_sql = (q.replace("shared.firms", "lake.shared.firms") for q in (SMALL, SCAN))
    engine.query("tax", SMALL)  # warm
    # interleaved, so that both sides see the same machine state (2 shared cores drift over seconds)
    governed, direct = [], []
    for _ in range(small_runs):
        governed += _timed(lambda: engine.query("tax", SMALL, purpose="bench"), 1)
        direct += _timed(lambda: cursor.execute(small_sql).fetchall(), 1)
    overhead = [(g - d) * 1000 for g, d in zip(governed, direct, strict=True)]
    log(f"  small query: governed p50 {statistics.median(governed) * 1000:.1f} ms, direct p50 "
        f"{statistics.median(direct) * 1000:.1f} ms -> overhead p50 {statistics.median(overhead):.1f} ms")
    g_scan, d_scan = [], []
    for _ in range(scan_runs):  # interleaved too: each pair sees the same moment of a shared host
        g_scan += _timed(lambda: engine.query("tax", SCAN), 1)
        d_scan += _timed(lambda: cursor.execute(scan_sql).fetchall(), 1)
    ratios = [g / d for g, d in zip(g_scan, d_scan, strict=True)]
    log(f"  1M-row scan: governed {statistics.median(g_scan):.3f} s, direct {statistics.median(d_scan):.3f} s -> "
        f"ratio {statistics.median(ratios):.2f}x")
    qps = _pg_qps(settings, engine, pg_seconds)
    log(f"  Postgres wire, 8 psycopg clients: {qps:.0f} queries/s")
    cursor.close()
    engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "sql_overhead_ms_p50": figure(overhead, "ms added by governance (small query)", peak),
        "sql_scan_ratio": figure(ratios, "x direct DuckDB (1M-row scan)", peak),
        "pg_qps_8_clients": {**figure([qps], "queries/s", peak), "seconds": pg_seconds},
    }


def _pg_qps(settings, engine, seconds: float) -> float:
    import psycopg

    from lakehouse import Lake
    from sharing.pgwire import GovernedPgServer
    from sharing.users import create_user
    from tests.conftest import free_port

    with Lake(settings.lake) as lake:
        password, _ = create_user(lake, "tax", "bench_tax")
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dsn = f"host=127.0.0.1 port={server.server_address[1]} dbname=onesource user=bench_tax password={password}"
    counts = [0] * 8
    stop = time.time() + seconds

    def client(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.time() < stop:
                conn.execute(SMALL).fetchall()
                counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    server.shutdown()
    server.server_close()
    return sum(counts) / elapsed
