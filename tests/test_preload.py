"""Airflow's task-forking services start with the load stack imported (onesource.preload).

* only the commands whose processes fork tasks preload; every other command runs as plain ``airflow``;
* preloading imports modules only: one thread, no DuckDB database, so a fork is safe, and a process forked
  after it sets GX up and validates a real batch (the slow tier runs real loads this way: the scheduler and
  Celery tests start their services through :func:`onesource.airflow_cli.service`);
* ``airflow standalone``'s components, started by name from PATH, go through the same preload.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onesource import airflow_cli
from onesource.preload import forks_tasks


@pytest.mark.parametrize("argv, expected", [
    (["scheduler"], True),
    (["scheduler", "--num-runs", "3"], True),
    (["celery", "worker", "--queues", "default", "--concurrency", "2"], True),
    (["dag-processor"], False),
    (["api-server"], False),
    (["triggerer"], False),
    (["celery", "flower"], False),
    (["dags", "test", "onesource_ingest_daily"], False),
    (["version"], False),
    ([], False),
])
def test_only_the_commands_that_fork_tasks_preload(argv, expected):
    assert forks_tasks(argv) is expected


CHILD = r"""
import os, sys, threading
from onesource.preload import preload
preload()
assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
assert "great_expectations" in sys.modules and "ingest.load" in sys.modules
import quality.validate as v
assert v._ephemeral_context.cache_info().currsize == 0  # no GX context before the fork
pid = os.fork()
if pid == 0:
    import duckdb
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS id, 'a' || range AS name FROM range(50)")
    context = v._ephemeral_context()
    assert context is not None and con.execute("SELECT count(DISTINCT id) FROM t").fetchone()[0] == 50
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_preloading_imports_modules_only_and_a_forked_task_sets_gx_up():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_services_and_standalone_components_go_through_the_preload(tmp_path):
    from core.config import Settings

    assert airflow_cli.service("scheduler") == [sys.executable, "-m", "onesource.preload", "scheduler"]
    cmd, _ = airflow_cli.celery_worker({}, "w1")
    assert cmd[:5] == [sys.executable, "-m", "onesource.preload", "celery", "worker"]
    folder = airflow_cli._preloading_path(Settings(home=tmp_path))
    shim = folder / "airflow"
    assert os.access(shim, os.X_OK) and shim.stat().st_mode & 0o077 == 0
    out = subprocess.run([str(shim), "version"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1][:1].isdigit(), out.stderr[-2000:]
