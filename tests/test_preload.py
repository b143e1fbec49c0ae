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


def test_the_schedulers_empty_executor_configs_read_as_airflow_reads_them(monkeypatch):
    """The scheduler's shortcut for executor_config (onesource.preload): every value, empty or not, reads back
    as Airflow's own processing reads it, and each empty one is a dict of its own."""
    from airflow.utils.sqlalchemy import ExecutorConfigType
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from sqlalchemy.dialects import postgresql

    from onesource.preload import empty_executor_configs_unpickled_once

    dialect = postgresql.dialect()
    store = ExecutorConfigType().bind_processor(dialect)
    airflow_reads = ExecutorConfigType().result_processor(dialect, None)
    monkeypatch.setattr(ExecutorConfigType, "result_processor", ExecutorConfigType.result_processor)
    empty_executor_configs_unpickled_once()
    empty_executor_configs_unpickled_once()  # twice is once
    ours = ExecutorConfigType().result_processor(dialect, None)
    values = st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.none(),
                                         max_size=3)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(values, min_size=1, max_size=6))
    def check(configs):
        for config in configs:
            raw = store(config)
            for as_read in (raw, memoryview(raw) if raw is not None else None):
                assert ours(as_read) == airflow_reads(raw)
        first, second = ours(store({})), ours(store({}))
        assert first == {} and second == {} and first is not second

    check()


# -- found by an outside reliability test: the service starts whatever the preload meets ----------------------

BROKEN_GX = r"""
import sys
from onesource.preload import preload
preload()
assert "great_expectations" not in sys.modules or not hasattr(sys.modules["great_expectations"], "get_context")
"""


def test_a_great_expectations_that_fails_to_import_does_not_stop_the_service(tmp_path):
    """The docstring's promise (a module that fails to import is left to fail in the task), for GX too: before,
    `python -m onesource.preload scheduler` died with the traceback where `airflow scheduler` started."""
    fake = tmp_path / "great_expectations"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('a half-upgraded install')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    out = subprocess.run([sys.executable, "-c", BROKEN_GX], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Great Expectations did not import here (RuntimeError: a half-upgraded install)" in out.stderr


@pytest.mark.parametrize("argv, env, expected", [
    (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, None),
    (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__MP_START_METHOD": "spawn"},
     "mp_start_method is spawn"),
    (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__MP_START_METHOD": "forkserver"},
     "mp_start_method is forkserver"),
    (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}, "forks no tasks with CeleryExecutor"),
    (["celery", "worker"], {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW__CORE__MP_START_METHOD": "spawn"},
     None),
    (["scheduler", "--help"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, "forks no task processes"),
])
def test_preloading_is_skipped_with_the_reason_where_it_would_gain_nothing(tmp_path, argv, env, expected):
    """With spawned workers nothing imported before reaches a task: the scheduler said it had preloaded anyway."""
    code = f"from onesource.preload import skip_reason; print(repr(skip_reason({argv!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "AIRFLOW_HOME": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr[-2000:]
    found = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr of a str or None
    assert (found is None) if expected is None else (expected in found), found
