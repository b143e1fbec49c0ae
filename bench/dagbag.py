"""DAG parse benchmark: the whole DagBag for a registry of 87 departments and 2,000 datasets.

Airflow re-parses DAG files continually; ``dagbag_parse_seconds`` is a re-parse of the unchanged
registry (the registry cache warm, as the scheduler sees it: ``$ONESOURCE_HOME/cache``), ``dagbag_cold_seconds`` the first parse
after an edit. Each run is a fresh process (imports excluded: the DAG processor has Airflow loaded).
The registry is the KPI benchmark's synthetic city (bench/kpi.py).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import PEAK_RSS, figure, run_child

PARSE = f"""
import glob, json, os, sys, time
from airflow.dag_processing.dagbag import DagBag
from core.config import Settings
if sys.argv[2] == "cold":  # the registry cache (JSON under the home: schemas.cache) is emptied
    for path in glob.glob(str(Settings.from_env().cache_dir / "registry-*.json")):
        os.remove(path)
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "dags": len(bag.dags),
       "tasks": sum(len(d.tasks) for d in bag.dags.values()), "peak_rss_mb": peak}}))
"""


def run(runs: int, workdir: Path, log=print) -> dict:
    import os

    from bench import kpi
    from core.config import REPO_ROOT

    home = workdir / "kpi-home"
    if not (home / "ready").exists():
        kpi.run(1, workdir, log)
    env_home = os.environ.get("ONESOURCE_HOME")
    os.environ["ONESOURCE_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow-parse"))
    try:
        cold, warm, rss, tasks = [], [], 0.0, 0
        for i in range(runs):
            c = run_child(PARSE, str(REPO_ROOT / "dags"), "cold")
            w = run_child(PARSE, str(REPO_ROOT / "dags"), "warm")
            cold.append(c["seconds"])
            warm.append(w["seconds"])
            rss, tasks = max(rss, c["peak_rss_mb"], w["peak_rss_mb"]), w["tasks"]
            log(f"  run {i + 1}/{runs}: {w['dags']} DAGs, {tasks:,} tasks: first parse {c['seconds']:.2f} s, "
                f"re-parse {w['seconds']:.2f} s")
    finally:
        if env_home is None:
            os.environ.pop("ONESOURCE_HOME", None)
        else:
            os.environ["ONESOURCE_HOME"] = env_home
    log(f"  dagbag_parse_seconds median {statistics.median(warm):.2f} s (target <= 5 s); first parse "
        f"{statistics.median(cold):.2f} s")
    return {"dagbag_parse_seconds": {**figure(warm, "s", rss), "datasets": kpi.DATASETS, "tasks": tasks},
            "dagbag_cold_seconds": figure(cold, "s", rss)}
