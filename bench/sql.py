"""Governed-SQL benchmark: governance against the department's own SQL run directly in DuckDB.

"Direct" is the query as the department wrote it, on the raw table (``lake.shared.firms``), on a cursor of
the same locked-down connection: so the figures include everything governance adds (planning, the policy
relation that replaces the table, the row cap, the audit), not only the planner's time.

* ``sql_overhead_ms_p50``: a small query (a grouped count) through the persistent governed engine,
  minus the same query run directly (median of interleaved runs);
* ``sql_scan_ratio``: a query scanning every row of a 1M-row shared table, governed / direct;
* ``pg_qps_8_clients``: small governed queries per second through the Postgres-wire endpoint, 8 psycopg
  clients (median of ``pg_runs`` runs): the grouped count above on a shared table of ``SMALL_ROWS`` rows (a
  code list, a district's firms: the everyday small question), so that the figure is the platform's cost per
  query and not DuckDB's; ``pg_qps_8_clients_1m``: the same grouped count on the 1M-row table (DuckDB's own
  work is about 9 ms of CPU there, so 2 cores cap it near 100/s whatever the platform does);
  ``pg_qps_8_clients_lookup``: a lookup by key on the 1M-row table (one row; the keys are in no order, so DuckDB
  reads the whole key column);
  ``pg_qps_8_clients_tiny``: a lookup of a key the table does not hold, which DuckDB answers from the data
  files' statistics without reading a row, so that the figure is the platform's own cost per query;
* ``engine_qps_8_threads`` (and ``_lookup``): the same statements through ``GovernedEngine.statement`` from 8
  threads in this process, without the protocol, so that the engine and the wire can be told apart;
  ``duckdb_qps_8_threads`` (and ``_lookup``): the department's own query run directly, 8 threads on as many
  cursors as the engine has running slots (the ceiling DuckDB itself sets on this host).

Every throughput run also reports the CPU a query cost (this process, server and clients alike, divided by
the queries answered): on 2 shared cores a run's rate follows what other processes take, its CPU much less.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import threading
import time
from pathlib import Path
from typing import NamedTuple

from bench.common import figure

SMALL = "SELECT enterprise_status, count(*) AS n FROM shared.firms GROUP BY 1"
SCAN = "SELECT count(DISTINCT enterprise_name) AS names, sum(capital) AS capital, avg(staff) AS staff FROM shared.firms"
LOOKUP = "SELECT uscc, enterprise_name, capital FROM shared.firms WHERE uscc = '{uscc}'"
CLIENTS = 8
SMALL_ROWS = 1_000


def _small_csv(workdir: Path, csv: Path) -> Path:
    """The first ``SMALL_ROWS`` firms of the 1M-row extract, as an extract of their own."""
    small = workdir / f"firms-{SMALL_ROWS}.csv"
    if not small.exists():
        with csv.open(encoding="utf-8") as src, small.open("w", encoding="utf-8") as out:
            out.writelines(itertools.islice(src, SMALL_ROWS + 1))  # the header and SMALL_ROWS rows
    return small


def lake_home(workdir: Path, csv: Path, name: str = "sql-home"):
    """The benchmark's home ``workdir/name``: one dataset ``firms`` loaded from ``csv`` (once; kept for the next
    run), its settings returned (bench/bulk.py reads the same lake)."""
    from core.config import Settings
    from ingest import run_dataset
    from schemas import load_registry
    from tests.helpers import firms_dataset, write_registry

    settings = Settings(home=workdir / name)
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


def run(csv: Path, workdir: Path, small_runs: int = 200, scan_runs: int = 15, pg_seconds: float = 5.0, pg_runs: int = 3,
        log=print) -> dict:
    import resource

    from schemas import load_registry
    from sharing.engine import GovernedEngine

    settings = lake_home(workdir, csv)
    registry = load_registry(settings.registry_dir)
    engine = GovernedEngine(settings, registry, persistent=True)
    cursor = engine.lake.con.cursor()
    access = engine.access(cursor, "tax")
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
    lookup = LOOKUP.format(uscc=cursor.execute("SELECT min(uscc) FROM lake.shared.firms").fetchone()[0])
    small_settings = lake_home(workdir, _small_csv(workdir, csv), "sql-small-home")
    small_engine = GovernedEngine(small_settings, load_registry(small_settings.registry_dir), persistent=True)
    homes = {"": (small_settings, small_engine), "_1m": (settings, engine)}
    users = {key: _bench_user(s) for key, (s, _) in homes.items()}
    throughput: dict[str, list[Run]] = {}
    for name, home, sql in (("", "", SMALL), ("_1m", "_1m", SMALL), ("_lookup", "_1m", lookup),
                            ("_tiny", "_1m", LOOKUP.format(uscc="none"))):
        for _ in range(pg_runs):  # interleaved: each kind of run sees the same moments of a shared host
            for kind, measure in (("duckdb_qps_8_threads", _direct_qps), ("engine_qps_8_threads", _engine_qps),
                                  ("pg_qps_8_clients", _pg_qps)):
                result = measure(*homes[home], users[home], sql, pg_seconds)
                throughput.setdefault(kind + name, []).append(result)
                log(f"  {kind + name}: {result.qps:.0f} queries/s, {result.cpu_ms:.2f} ms CPU a query")
    cursor.close()
    engine.close()
    small_engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "sql_overhead_ms_p50": figure(overhead, "ms added by governance (small query)", peak),
        "sql_scan_ratio": figure(ratios, "x direct DuckDB (1M-row scan)", peak),
        **{kind: {**figure([r.qps for r in runs], "queries/s", peak), "seconds": pg_seconds,
                  "cpu_ms_per_query": round(statistics.median(r.cpu_ms for r in runs), 3)}
           for kind, runs in throughput.items()},
    }


class Run(NamedTuple):
    qps: float
    cpu_ms: float
    """This process's CPU (server and clients) divided by the queries answered."""


def _bench_user(settings) -> tuple[str, str]:
    """A wire user of the tax department (a new password each benchmark)."""
    from lakehouse import Lake
    from sharing.users import create_user, reset_user

    with Lake(settings.lake) as lake:
        try:
            password, _ = create_user(lake, "tax", "bench_tax")
        except Exception:  # made by an earlier benchmark of this home
            password, _ = reset_user(lake, "bench_tax")
    return "bench_tax", password


def _clients(seconds: float, connect, query) -> Run:
    """CLIENTS threads, each with its own connection, sending ``query`` for ``seconds`` once all are
    connected (signing in is not what is measured)."""
    counts = [0] * CLIENTS
    ready = threading.Barrier(CLIENTS + 1)
    window: dict[str, float] = {}

    def client(i: int) -> None:
        with connect() as conn:
            ready.wait()
            while time.monotonic() < window["stop"]:
                query(conn)
                counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    window["stop"] = time.monotonic() + 3600  # set again once every client is connected
    ready.wait()
    cpu, t = time.process_time(), time.perf_counter()
    window["stop"] = time.monotonic() + seconds
    for th in threads:
        th.join()
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    done = max(1, sum(counts))
    return Run(sum(counts) / elapsed, cpu / done * 1000)


def _pg_qps(settings, engine, user: tuple[str, str], sql: str, seconds: float) -> Run:
    import psycopg

    from sharing.pgwire import GovernedPgServer
    from tests.helpers import free_port

    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dsn = f"host=127.0.0.1 port={server.server_address[1]} dbname=onesource user={user[0]} password={user[1]}"
    try:
        return _clients(seconds, lambda: psycopg.connect(dsn, autocommit=True),
                        lambda conn: conn.execute(sql).fetchall())
    finally:
        server.shutdown()
        server.server_close()


def _engine_qps(settings, engine, user: tuple[str, str], sql: str, seconds: float) -> Run:
    """The wire's call into the engine (``statement``: a signed-in user, catalog check, plan, run, audit)."""
    return _clients(seconds, contextlib.nullcontext, lambda _: engine.statement("tax", sql, user=user[0]))


def _direct_qps(settings, engine, user: tuple[str, str], sql: str, seconds: float) -> Run:
    """The department's own query on the raw table, as its own DuckDB session would run it (autocommit), on one
    cursor of each of the engine's running slots (the same instances, memory limit and threads; a slot runs
    one query at a time): what DuckDB alone answers on this host."""
    raw = sql.replace("shared.firms", "lake.shared.firms")
    slots = [engine.slot(n) for n in range(max(1, settings.limits.concurrent))]  # the same instances
    cursors = [(threading.Lock(), con.cursor()) for con in slots]
    turn = itertools.count()

    def query(_) -> None:
        lock, cur = cursors[next(turn) % len(cursors)]
        with lock:
            cur.execute(raw).fetchall()

    try:
        return _clients(seconds, contextlib.nullcontext, query)
    finally:
        for _, cur in cursors:
            cur.close()
