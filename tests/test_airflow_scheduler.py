"""Slow tier: the generated DAGs under Airflow's own services, as deployed past one machine.

A real scheduler with the LocalExecutor, a dag-processor and an api-server, all on a PostgreSQL
metadata database; the lake's catalog on PostgreSQL too. Nothing is called directly: the scheduler
finds the daily DAG, schedules its run, and runs four department loads side by side; the shared
tables' Asset events then start the data-aware consistency DAG.
"""

from __future__ import annotations

import subprocess

import pytest

from core.config import LakeSettings, Settings
from lakehouse.lake import Lake
from onesource import airflow_cli
from tests.helpers import csv_text, drop, firms_dataset, free_port, wait_for_port, write_registry
from tests.support.airflow import DAILY, PG, databases, plain_dataset, query, wait  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

LOADS = {"amr.firms": 3, "amr.amr_branches": 4000, "tax.tax_returns": 5000, "tax.tax_arrears": 3000}


def test_scheduler_runs_the_daily_dag_with_parallel_department_loads(tmp_path, databases):  # noqa: F811 (the fixture imported above)
    metadata_db, catalog_db = databases
    home = tmp_path / "home"
    settings = Settings(home=home, lake=LakeSettings(catalog=f"postgres:dbname={catalog_db} {PG}",
                                                     data_path=f"{home / 'lake' / 'data'}/"))
    write_registry(settings.registry_dir, [firms_dataset(), plain_dataset("amr_branches", "amr"),
                                           plain_dataset("tax_returns", "tax"), plain_dataset("tax_arrears", "tax")])
    drop(settings, "amr/firms/1.csv", csv_text())
    for task, rows in LOADS.items():
        owner, name = task.split(".")
        if name != "firms":
            drop(settings, f"{owner}/{name}/1.csv", "编码,金额\n" + "".join(f"C{i},{i}.5\n" for i in range(rows)))

    port = free_port()
    env = airflow_cli.distributed_env(settings, f"postgresql+psycopg://postgres@127.0.0.1:5432/{metadata_db}", port)
    # only the DAGs under test run: the others (monthly, maintenance, ...) stay paused
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
    env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
    airflow = airflow_cli.airflow_bin()
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]

    logs = {name: settings.reports_dir / f"airflow-{name}.log" for name in ("api-server", "scheduler", "dag-processor")}
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    services = [subprocess.Popen(airflow_cli.service(name), env=env, stdout=open(path, "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True) for name, path in logs.items()]
    try:
        wait_for_port(port, services[0])
        wait("the dag-processor serializing the generated DAGs", 180,
             lambda: query(metadata_db, "SELECT dag_id FROM dag WHERE dag_id = %s", [DAILY]), logs)
        for dag_id in (DAILY, "onesource_consistency"):
            out = subprocess.run([airflow, "dags", "unpause", dag_id], env=env, capture_output=True, text=True,
                                 timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
        # the scheduler creates the run itself (the last daily interval) and runs it
        state = wait("the scheduled daily run finishing", 600, lambda: [s for (s,) in query(
            metadata_db, "SELECT state FROM dag_run WHERE dag_id = %s", [DAILY]) if s in ("success", "failed")], logs)
        tasks = query(metadata_db, "SELECT task_id, state, start_date, end_date FROM task_instance "
                                   "WHERE dag_id = %s", [DAILY])
        assert state == ["success"], tasks
        assert {t: s for t, s, _, _ in tasks} == dict.fromkeys(LOADS, "success")
        run_type = query(metadata_db, "SELECT run_type FROM dag_run WHERE dag_id = %s", [DAILY])
        assert run_type == [("scheduled",)]
        # several department loads ran at the same time (LocalExecutor, parallelism 4)
        spans = sorted((start, end) for _, _, start, end in tasks)
        overlapping = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert overlapping >= 2, spans
        with Lake(settings.lake, read_only=True) as lake:
            for task, rows in LOADS.items():
                table = task.split(".")[1]
                assert lake.con.execute(f"SELECT count(*) FROM shared.{table}").fetchone()[0] == rows
        # the shared tables' Asset events trigger the data-aware consistency DAG
        wait("the consistency DAG, triggered by the loads' Asset events", 300, lambda: query(
            metadata_db, "SELECT state FROM dag_run WHERE dag_id = 'onesource_consistency' AND state = 'success' "
                         "AND run_type = 'asset_triggered'"), logs)
    finally:
        airflow_cli.stop_groups(services)
