"""TPC-H through governed SQL: the 22 queries, as a department writes them, against DuckDB on the same lake.

``tpch_governed_ratio``: for each of the 22 queries, the median of several runs through the persistent
governed engine (``GovernedEngine.query``: plan, policy relations, row cap, audit) divided by the median of
the same query run directly on a cursor of the engine's own read-only lake connection (bare names on the
search path ``lake.shared``); the figure is the median of the 22 ratios. The lake is TPC-H at SF 1 by default,
generated once by DuckDB's ``tpch`` extension into a cache folder under the bench work directory.

The eight tables are registered as datasets (``TPCH_OWNER`` owns them, conditional), so they are shared
datasets like any other, and ``TPCH_READER`` holds a grant of every column of each (no row filter, no mask):
what it reads equals the raw tables, so the governed answer must equal DuckDB's.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from bench.common import figure

TPCH_OWNER = "nbs"
TPCH_READER = "analyst"
TABLES = {  # table -> (title, key)
    "region": ("地区", ("r_regionkey",)),
    "nation": ("国家", ("n_nationkey",)),
    "supplier": ("供应商", ("s_suppkey",)),
    "customer": ("客户", ("c_custkey",)),
    "part": ("零件", ("p_partkey",)),
    "partsupp": ("零件供应", ("ps_partkey", "ps_suppkey")),
    "orders": ("订单", ("o_orderkey",)),
    "lineitem": ("订单明细", ("l_orderkey", "l_linenumber")),
}
_TYPES = {"BIGINT": "integer", "INTEGER": "integer", "VARCHAR": "string", "DATE": "date"}
"""DuckDB's TPC-H column types -> the registry's element types (DECIMAL(15,2) -> decimal)."""


def _registry_entries(con) -> tuple[dict, list[dict]]:
    """The registry's departments and the eight datasets, typed from dbgen's own schema."""
    departments = {"departments": [
        {"code": TPCH_OWNER, "name": "统计局", "name_en": "Statistics", "systems": [{"code": "tpch", "name": "TPC-H"}]},
        {"code": TPCH_READER, "name": "数据分析处", "name_en": "Analysts", "systems": [{"code": "bi", "name": "BI"}]},
    ]}
    datasets = []
    for table, (title, key) in TABLES.items():
        columns = [{"name": name, "source": name, "type": _TYPES.get(type_, "decimal" if type_.startswith("DECIMAL")
                                                                   else type_.lower()), "required": True}
                   for name, type_, *_ in con.execute(f"DESCRIBE memory.main.{table}").fetchall()]
        datasets.append({"name": table, "title": f"TPC-H {title}", "owner": TPCH_OWNER, "system": "tpch",
                         "update_cycle": "yearly", "share_type": "conditional", "key": list(key),
                         "conditions": "granted for benchmarking and testing governed SQL",
                         "connector": {"kind": "file", "path": f"tpch/{table}.parquet", "format": "parquet"},
                         "columns": columns})
    return departments, datasets


def tpch_home(home: Path, sf: float):
    """A lake holding TPC-H at scale factor ``sf`` as eight shared datasets, ``TPCH_READER`` granted every
    column of each. Built once: a second call with the same home reuses it. Returns (settings, registry)."""
    from core.config import Settings
    from core.duck import extension_path, literal
    from lakehouse.lake import Lake
    from schemas import load_registry
    from sharing.grants import add_grant
    from tests.helpers import dump, write_registry

    settings = Settings(home=home)
    if generated(home, sf) is not None:
        return settings, load_registry(settings.registry_dir)
    started = time.perf_counter()
    with Lake(settings.lake) as lake:
        con = lake.con
        con.execute(f"LOAD {literal(str(extension_path('tpch')))}")
        con.execute(f"CALL dbgen(sf = {float(sf)}, catalog = 'memory')")
        departments, datasets = _registry_entries(con)
        write_registry(settings.registry_dir, datasets, departments=departments)
        dump(settings.registry_dir / "elements.yaml", {"elements": [], "code_lists": {
            "tpch_returnflag": {"A": "已接受", "N": "无", "R": "已退货"}}})
        registry = load_registry(settings.registry_dir)
        with lake.transaction():  # one commit: stored in the registry's types, as a load would store them
            for ds in registry.datasets:
                casts = ", ".join(f'CAST("{c.name}" AS {c.duck_type}) AS "{c.name}"' for c in ds.columns)
                con.execute(f'CREATE OR REPLACE TABLE lake.shared."{ds.name}" AS '
                            f'SELECT {casts} FROM memory.main."{ds.name}"')
            lake.commit_message(f"TPC-H at scale factor {sf}", {})
        for ds in registry.datasets:
            con.execute(f'DROP TABLE memory.main."{ds.name}"')
            add_grant(lake, registry, TPCH_READER, ds.name, purpose="TPC-H")
    (home / READY).write_text(json.dumps({"sf": sf, "seconds": round(time.perf_counter() - started, 1)}))
    return settings, registry


READY = "tpch-ready.json"


def generated(home: Path, sf: float) -> float | None:
    """Seconds it took to build the TPC-H lake at ``home`` for scale factor ``sf``; None when not built."""
    try:
        ready = json.loads((home / READY).read_text())
    except (OSError, ValueError):
        return None
    return ready["seconds"] if ready.get("sf") == sf else None


def tpch_queries() -> list[tuple[int, str]]:
    """The 22 queries as DuckDB's tpch extension has them (bare table names, as an analyst writes them)."""
    from core.duck import connect

    con = connect(extensions=("tpch",))
    try:
        return [(n, q.strip().rstrip(";")) for n, q in
                con.execute("SELECT query_nr, query FROM tpch_queries() ORDER BY 1").fetchall()]
    finally:
        con.close()


def _timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process: DuckDB's and the engine's) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(workdir: Path, sf: float = 1.0, runs: int = 3, log=print) -> dict:
    """``tpch_governed_ratio``: the median over the 22 queries of (governed / direct), each side the median
    of ``runs`` interleaved runs (a shared host drifts between two blocks of runs) after one warm-up run.

    Direct is DuckDB on the same lake configured as a running slot of the server is (the same threads and
    memory limit: QueryLimits), so the ratio is what governance costs a query, not the server's policy of
    sharing cores between concurrent queries; the ratio against DuckDB with every core is printed beside it."""
    import resource

    from lakehouse.lake import Lake
    from sharing.engine import GovernedEngine, slot_threads
    from sharing.sql import lock_down

    home = workdir / f"tpch-sf{sf:g}"
    cached = generated(home, sf)
    settings, registry = tpch_home(home, sf)
    seconds = generated(home, sf)
    log(f"  TPC-H SF {sf:g}: " + (f"lake cached in {home} (generated in {seconds:.0f} s)" if cached is not None
                                  else f"generated into {home} in {seconds:.0f} s"))
    limits = settings.limits
    threads = limits.threads or slot_threads(limits.concurrent)
    engine = GovernedEngine(settings, registry, persistent=True)
    engine.open_slots()
    slot, everything = Lake(settings.lake, read_only=True), Lake(settings.lake, read_only=True)
    for lake, n in ((slot, threads), (everything, os.cpu_count() or 1)):
        lake.con.execute("SET search_path = 'lake.shared'")
        lock_down(lake.con, settings.lake.data_path, memory_limit=limits.memory, threads=n)
    ratios, wide, cpu = [], [], []
    log(f"  per query: governed / direct (slot: {threads} thread(s), {limits.memory}), medians of {runs} runs")
    for number, sql in tpch_queries():
        sides = (lambda q=sql: engine.query(TPCH_READER, q, purpose="bench tpch"),
                 lambda q=sql: slot.con.execute(q).fetchall(),
                 lambda q=sql: everything.con.execute(q).fetchall())
        for side in sides:  # warm: the plan cache, DuckDB's caches
            side()
        times: list[list[tuple[float, float]]] = [[], [], []]
        for _ in range(runs):
            for side, timed in zip(sides, times, strict=True):
                timed.append(_timed(side))
        (g, gc), (d, dc), (w, _) = ((statistics.median(t[0] for t in x), statistics.median(t[1] for t in x))
                                    for x in times)
        ratios.append(g / d)
        wide.append(g / w)
        cpu.append(gc / dc)
        log(f"    Q{number:02d}: governed {g * 1000:8.1f} ms, direct {d * 1000:8.1f} ms -> {g / d:.3f}x "
            f"(CPU {gc / dc:.3f}x; DuckDB with {os.cpu_count()} threads {w * 1000:8.1f} ms)")
    log(f"  tpch_governed_ratio {statistics.median(ratios):.3f}x (median of 22); in CPU seconds "
        f"{statistics.median(cpu):.3f}x; against DuckDB with every core {statistics.median(wide):.3f}x")
    slot.close()
    everything.close()
    engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tpch_governed_ratio": {**figure(ratios, "x direct DuckDB (22 TPC-H queries, median)", peak),
                                    "sf": sf, "generation_seconds": seconds,
                                    "per_query": [round(r, 4) for r in ratios],
                                    "cpu_ratio": round(statistics.median(cpu), 4),
                                    "vs_every_core": round(statistics.median(wide), 4)}}
