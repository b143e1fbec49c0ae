"""A city's day: every dataset of a city's registry loaded once through Airflow's real scheduler.

The city is synthetic and shaped like the real one (bench/kpi.py's): 87 departments, ~23 datasets each,
200 data elements with one authoritative dataset each, every dataset collecting 6 elements. Every dataset
is on the daily cycle and its department has dropped one new extract: most are small (50 to 2,000
rows), a few (``--cityday-large``) hold millions. The scheduler, a dag-processor and an api-server run as
separate processes on a PostgreSQL metadata database with the LocalExecutor; the lake's catalog is
PostgreSQL too (the deployment past one machine). Nothing is called directly: the scheduler creates the
daily DAG's run and runs it.

Figures:
* ``city_day_seconds``: from the run's start to its end (the dag_run's own times);
* ``small_load_seconds``: per small load, end to end, from the task instances' own start and end times
  (the ledger's ``ops.loads`` times, which start once the lake is open, are reported beside);
* where a small load's fixed cost goes, measured inside each load (``LoadResult.seconds``, returned by the
  task as its XCom): task start (process start to the task's function: the task runner, the DAG file's
  parse), imports, registry, lake open, registry versions, ledger, extract, standardize, the GX context,
  validate, publish (the catalog commit).

``python -m bench --only cityday --cityday-datasets 150``: a scaled city (same shape, fewer datasets).
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bench.common import figure, run_child

DEPARTMENTS, DATASETS, ELEMENTS = 87, 2000, 200
DAG_ID = "onesource_ingest_daily"
PG = "host=127.0.0.1 port=5432 user=postgres"

SETUP = r"""
import random, sys
from pathlib import Path
import duckdb, yaml
from core.config import Settings
home, n_dept, n_ds, n_el, n_large, large_rows = Path(sys.argv[1]), *map(int, sys.argv[2:7])
settings = Settings(home=home)
reg, src = settings.registry_dir, settings.sources_dir
rng = random.Random(21)
depts = [f"d{i:02d}" for i in range(n_dept)]
def dump(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
dump(reg / "departments.yaml", {"departments": [{"code": d, "name": f"部门{d}", "name_en": d,
     "systems": [{"code": f"{d}_sys", "name": "业务系统"}]} for d in depts]})
owners = [depts[i % n_dept] for i in range(n_ds)]
names = [f"ds{i:04d}" for i in range(n_ds)]
n_el = min(n_el, n_ds)
authority = {f"e{j:03d}": names[j * (n_ds // n_el)] for j in range(n_el)}
dump(reg / "elements.yaml", {"elements": [{"name": e, "name_zh": f"数据元{e}", "name_en": e, "type": "string",
     "authority": a} for e, a in authority.items()], "code_lists": {"flag": {"1": "是"}}})
own = {a: e for e, a in authority.items()}
large = set(rng.sample(names, min(n_large, n_ds)))
sizes = {}
for i, (name, owner) in enumerate(zip(names, owners)):
    elements = list(dict.fromkeys(([own[name]] if name in own else []) + rng.sample(sorted(authority), min(5, n_el))))
    share = "not_shared" if i % 23 == 0 else ("conditional" if i % 3 == 0 else "unconditional")
    entry = {"name": name, "title": f"数据集{i}", "owner": owner, "system": f"{owner}_sys", "update_cycle": "daily",
             "share_type": share, "key": ["id"],
             "connector": {"kind": "file", "path": f"{owner}/{name}/*.csv", "format": "csv"},
             "columns": [{"name": "id", "source": "编号", "type": "string", "required": True},
                         {"name": "amount", "source": "金额", "type": "decimal"}]
                        + [{"name": e, "source": e, "element": e} for e in elements]}
    if share == "conditional":
        entry["conditions"] = "履职使用"
    if share == "not_shared":
        entry["legal_basis"] = "法律法规"
    dump(reg / "datasets" / owner / f"{name}.yaml", entry)
    rows = large_rows if name in large else rng.randint(50, 2000)
    sizes[name] = rows
    out = src / owner / name / "day1.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    values = ", ".join(f"'{e}-' || (i % 997) AS \"{e}\"" for e in elements)
    duckdb.sql(f"COPY (SELECT '{name}-' || i AS \"编号\", (i % 100000) / 4.0 AS \"金额\", {values} "
               f"FROM range({rows}) t(i)) TO '{out}' (HEADER, DELIMITER ',')")
import json
(home / "sizes.json").write_text(json.dumps(sizes))
print("RESULT{}")
"""

SMALL_ROWS = 100_000
"""A load below this many rows counts as small: its time is the platform's fixed cost, not its data's."""

STEPS = ("task_start", "imports", "registry", "lake_open", "versions", "ledger", "extract", "standardize",
         "references", "gx_context", "checks", "publish", "task_end")
"""The breakdown of a small load, in order. ``checks`` is the validate stage without its reference keys and
its wait for GX; ``task_end`` what the task instance's time holds beyond the task's function (the XCom,
the state update, the process's exit)."""


def _query(db: str, sql: str, params=()) -> list[tuple]:
    import psycopg

    with psycopg.connect(f"{PG} dbname={db}") as conn:
        return conn.execute(sql, params).fetchall()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, seconds: float, probe, logs: dict[str, Path], procs: list):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = probe()
        if found:
            return found
        for proc in procs:
            if proc.poll() is not None:
                break
        else:
            time.sleep(2)
            continue
        break
    tails = "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}" for name, path in logs.items())
    raise RuntimeError(f"city day: {what} did not happen within {seconds:.0f} s (or a service exited)\n{tails}")


def _breakdown(ti_seconds: float, stages: dict[str, float]) -> dict[str, float]:
    """One small load's time by :data:`STEPS` (stages: the load's ``LoadResult.seconds``)."""
    out = {k: stages.get(k, 0.0) for k in STEPS if k not in ("checks", "task_end")}
    out["checks"] = max(stages.get("validate", 0.0) - stages.get("references", 0.0) - stages.get("gx_context", 0.0),
                        0.0) + stages.get("recheck", 0.0)
    inside = stages.get("in_task", 0.0)
    out["task_end"] = max(ti_seconds - stages.get("task_start", 0.0) - inside, 0.0)
    return out


def _results(metadata_db: str, settings, sizes: dict[str, int]) -> dict:
    """The run's figures from the metadata database (dag_run, task_instance, xcom) and the lake's ledger."""
    from lakehouse import ledger
    from lakehouse.lake import Lake

    [(run_id, run_start, run_end, state)] = _query(
        metadata_db, "SELECT run_id, start_date, end_date, state FROM dag_run WHERE dag_id = %s", [DAG_ID])
    tis = _query(metadata_db, "SELECT task_id, state, start_date, end_date FROM task_instance "
                              "WHERE dag_id = %s AND run_id = %s", [DAG_ID, run_id])
    xcoms = {t: v for t, v in _query(metadata_db, "SELECT task_id, value FROM xcom WHERE dag_id = %s AND run_id = %s "
                                                  "AND key = 'return_value'", [DAG_ID, run_id])}
    states: dict[str, int] = {}
    small, large, cpu, steps = [], [], [], {k: [] for k in STEPS}
    for task_id, ti_state, start, end in tis:
        states[ti_state] = states.get(ti_state, 0) + 1
        name = task_id.split(".")[-1]
        if ti_state != "success" or start is None or end is None:
            continue
        seconds = (end - start).total_seconds()
        (small if sizes.get(name, 0) < SMALL_ROWS else large).append(seconds)
        value = xcoms.get(task_id)
        if isinstance(value, str | bytes):
            value = json.loads(value)
        if sizes.get(name, 0) < SMALL_ROWS and value:
            cpu.append(value[0]["seconds"].get("task_cpu", 0.0))
            for k, v in _breakdown(seconds, value[0]["seconds"]).items():
                steps[k].append(v)
    with Lake(settings.lake, read_only=True) as lake:
        loads = ledger.loads_since(lake.con)
    ledger_small = [(load.finished_at - load.started_at).total_seconds() for load in loads
                    if load.status == "published" and load.rows_in < SMALL_ROWS]
    published = sum(1 for load in loads if load.status == "published")
    return {"state": state, "city_day_seconds": (run_end - run_start).total_seconds() if run_end else None,
            "task_states": states, "small": small, "large": large, "ledger_small": ledger_small, "cpu": cpu,
            "published": published, "steps": {k: round(statistics.median(v), 3) for k, v in steps.items() if v}}


def _databases() -> list[str]:
    import psycopg

    names = [f"onesource_cd_af_{uuid.uuid4().hex[:8]}", f"onesource_cd_lk_{uuid.uuid4().hex[:8]}"]
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f"CREATE DATABASE {name}")
    return names


def _drop(names: list[str]) -> None:
    import psycopg

    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _load_average() -> float:
    """The host's 1-minute load average (0 where /proc is missing): beside each figure, as the host is shared."""
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else 0.0


def day(datasets: int, large: int, large_rows: int, workdir: Path, parallelism: int = 2, log=print) -> dict:
    """One city's day: generate the city, run its daily DAG under a real scheduler, read the figures."""
    import shutil

    from core.config import REPO_ROOT, LakeSettings, Settings
    from onesource import airflow_cli

    home = workdir / f"cityday-{datasets}-{uuid.uuid4().hex[:6]}"
    clock = time.perf_counter()
    run_child(SETUP, str(home), str(DEPARTMENTS), str(datasets), str(ELEMENTS), str(large), str(large_rows))
    sizes = json.loads((home / "sizes.json").read_text())
    log(f"  a city of {DEPARTMENTS} departments, {datasets:,} datasets ({large} of {large_rows:,} rows, the others "
        f"50 to 2,000) written in {time.perf_counter() - clock:.0f} s")
    names = _databases()
    metadata_db, catalog_db = names
    settings = Settings(home=home, lake=LakeSettings(catalog=f"postgres:dbname={catalog_db} {PG}",
                                                     data_path=f"{home / 'lake' / 'data'}/"))
    port = _free_port()
    env = airflow_cli.distributed_env(settings, f"postgresql+psycopg://postgres@127.0.0.1:5432/{metadata_db}", port,
                                      parallelism=parallelism)
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"  # only the daily DAG runs
    env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
    env["PYTHONPATH"] = str(REPO_ROOT)  # the tasks run this checkout's code (a worktree's, for a before/after)
    airflow = airflow_cli.airflow_bin()
    services: list[subprocess.Popen] = []
    try:
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=900)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        logs = {n: settings.reports_dir / f"airflow-{n}.log" for n in ("api-server", "scheduler", "dag-processor")}
        services = [subprocess.Popen(airflow_cli.service(n), env=env, stdout=open(p, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True) for n, p in logs.items()]
        _wait("the dag-processor serializing the daily DAG", 900, lambda: _query(
            metadata_db, "SELECT 1 FROM dag WHERE dag_id = %s", [DAG_ID]), logs, services)
        out = subprocess.run([airflow, "dags", "unpause", DAG_ID], env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"airflow dags unpause failed: {out.stderr[-2000:]}")
        load = [_load_average()]
        _wait("the daily run finishing", 600 + 30 * datasets, lambda: (load.append(_load_average()), _query(
            metadata_db, "SELECT state FROM dag_run WHERE dag_id = %s AND state IN ('success', 'failed')",
            [DAG_ID]))[1], logs, services)
        found = _results(metadata_db, settings, sizes)
        found["load_average"] = load
    finally:
        airflow_cli.stop_groups(services)
        _drop(names)
    shutil.rmtree(home, ignore_errors=True)
    return found


def run(workdir: Path, datasets: int = DATASETS, large: int = 5, large_rows: int = 2_000_000, runs: int = 1,
        parallelism: int = 2, log=print) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    days, small, ledger, steps, loads, cpu = [], [], [], [], [], []
    for i in range(runs):
        r = day(datasets, large, large_rows, workdir, parallelism, log)
        if r["state"] != "success":
            log(f"  run {i + 1}: the daily run ended {r['state']}: task states {r['task_states']}")
        days.append(r["city_day_seconds"])
        small.append(statistics.median(r["small"]))
        ledger.append(statistics.median(r["ledger_small"]) if r["ledger_small"] else float("nan"))
        steps.append(r["steps"])
        cpu.append(statistics.median(r["cpu"]) if r["cpu"] else float("nan"))
        loads.extend(r["load_average"])
        log(f"  run {i + 1}/{runs}: city day {r['city_day_seconds']:.0f} s for {datasets:,} datasets "
            f"({r['published']:,} published, task states {r['task_states']}); small loads: median "
            f"{small[-1]:.2f} s per task instance (min {min(r['small']):.2f}, max {max(r['small']):.2f}), "
            f"{ledger[-1]:.2f} s in the ledger, {cpu[-1]:.2f} CPU s per task process; large loads {', '.join(f'{s:.0f} s' for s in r['large'])}")
        log("  a small load's median breakdown (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["steps"].items()))
        log(f"  load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}, median "
            f"{statistics.median(loads):.1f}")
    per_load = statistics.median(small)
    log(f"  city_day_seconds median {statistics.median(days):.0f} s ({datasets:,} datasets, parallelism "
        f"{parallelism}); small_load_seconds median {per_load:.2f} s (target <= 2 s on 2 cores); the full "
        f"{DATASETS:,}-dataset day at this rate: ~{DATASETS * per_load / parallelism / 60:.0f} min of small loads; "
        f"{statistics.median(cpu):.2f} CPU s per small load's process, so ~{DATASETS * statistics.median(cpu) / 2 / 60:.0f}"
        f" min on 2 otherwise idle cores")
    return {"city_day_seconds": {**figure(days, "s", 0.0), "datasets": datasets, "parallelism": parallelism,
                                 "large": large, "large_rows": large_rows},
            "small_load_seconds": {**figure(small, "s per small load (task instance)", 0.0),
                                   "ledger_median": round(statistics.median(ledger), 3),
                                   "cpu_median": round(statistics.median(cpu), 3),
                                   "load_average": [min(loads), statistics.median(loads), max(loads)],
                                   "breakdown_median": {k: round(statistics.median(s.get(k, 0.0) for s in steps), 3)
                                                        for k in STEPS}}}
