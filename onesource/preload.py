"""Airflow's task-forking services, started with the load stack already imported.

Airflow runs every task attempt in a new process forked from a long-lived one: the LocalExecutor's
workers are forked from the scheduler, a Celery worker's pool from the worker, and each of them forks
the task's own process (``airflow.sdk.execution_time.supervisor``). A forked process keeps every module
its parent imported. Imported in the task, Great Expectations and the load stack cost a small load
~3 CPU s of its ~5 (bench/cityday.py's breakdown: ``gx_context``); imported once here, in the process
the tasks are forked from, they cost each task nothing.

``python -m onesource.preload <airflow arguments>`` is ``airflow <arguments>``, with :data:`MODULES`
imported first when the command forks tasks (:data:`FORKING`); any other command runs as it would.
Only modules are imported: no connection, thread or GX context exists before the fork (DuckDB's and
GX's are not fork-safe), so the task process sets those up as it always did.
"""

from __future__ import annotations

import importlib
import sys
import time

FORKING = (("scheduler",), ("celery", "worker"))
"""The Airflow commands whose processes fork task processes (with the LocalExecutor and the CeleryExecutor)."""

MODULES = (
    "airflow.sdk",
    "airflow.sdk.execution_time.task_runner",
    "onesource.tasks",
    "onesource.dagfactory",
    "schemas",
    "connectors",
    "ingest.load",
    "quality.validate",
    "sqlalchemy.dialects.postgresql",
    "duckdb_engine",
)
"""What a load task imports: the task runner's, the DAG file's and the load's modules."""


def forks_tasks(argv: list[str]) -> bool:
    """Whether ``airflow <argv>`` starts a process that forks task processes."""
    words = [a for a in argv if not a.startswith("-")]
    return any(tuple(words[:len(cmd)]) == cmd for cmd in FORKING)


def preload() -> float:
    """Import :data:`MODULES` and Great Expectations (as a validation would: :mod:`quality.gximport`, the
    custom expectations, the DuckDB patches); return the seconds it took. A module that fails to import is
    left to fail in the task, where its error is reported against the load."""
    started = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import error: the service must start regardless
            _warn(f"{name} did not import here ({type(exc).__name__}: {exc}); each task imports it itself")
    try:
        from quality.validate import preload_gx

        preload_gx()
    except Exception as exc:  # noqa: BLE001 - a broken GX install is the task's error to report, not the service's
        _warn(f"Great Expectations did not import here ({type(exc).__name__}: {exc}); each task imports it itself, "
              "and a load reports the error")
    _registry()
    return time.perf_counter() - started


def _warn(text: str) -> None:
    print(f"onesource: {text}", file=sys.stderr, flush=True)


def _forks_here(argv: list[str]) -> bool:
    """``airflow <argv>`` starts a task-forking service (not its help)."""
    return forks_tasks(argv) and not {"-h", "--help"} & set(argv)


def skip_reason(argv: list[str]) -> str | None:
    """Why preloading would gain nothing for ``airflow <argv>``, in words (None: it forks tasks; preload).
    Airflow starts the LocalExecutor's workers afresh when told to spawn them (``[core] mp_start_method``), and
    the scheduler of another executor forks none: preloading there would only cost seconds at start."""
    if not _forks_here(argv):
        return "this command forks no task processes"
    try:
        from airflow.configuration import conf

        method = conf.get("core", "mp_start_method", fallback=None)
        executors = conf.get("core", "executor", fallback="") or ""
    except Exception:  # noqa: BLE001 - Airflow's own start reports a configuration it cannot read
        return None
    if argv[:1] == ["scheduler"] and method in ("spawn", "forkserver"):  # the LocalExecutor's workers
        return (f"[core] mp_start_method is {method}: Airflow starts its task processes afresh, so nothing imported "
                "here reaches them and each load imports the load stack itself (seconds per load). Leave it unset "
                "(fork, Linux's default) to have the load stack preloaded")
    if argv[:1] == ["scheduler"] and "LocalExecutor" not in executors:
        return f"the scheduler forks no tasks with {executors or 'this executor'} (its workers do)"
    return None


def _registry() -> None:
    """Read this home's registry, and the fingerprints every load compares with the lake, once here: a task
    finds them in memory while the registry's files are unchanged (schemas.loader checks that each time),
    which at 2,000 datasets saves each load ~0.5 s. A registry with errors is left for the tasks to report."""
    try:
        from core.config import Settings
        from schemas import load_registry
        from schemas.versions import fingerprints

        settings = Settings.from_env()
        if settings.registry_dir.is_dir():
            fingerprints(load_registry(settings.registry_dir, settings.cache_dir))
    except Exception:  # noqa: BLE001 - the task that needs the registry reports its error
        pass


def empty_executor_configs_unpickled_once() -> None:
    """The scheduler reads every task instance of a running DAG run on each loop, and unpickles each one's
    ``executor_config`` with dill: at 2,000 datasets a third of its CPU (py-spy), almost all of it for the
    same few bytes, the pickled empty dict every OneSource task has. Bytes once unpickled to ``{}`` give a
    new ``{}`` without dill from then on; any other value goes through Airflow's own processing."""
    from airflow.utils.sqlalchemy import ExecutorConfigType

    original = ExecutorConfigType.result_processor
    if getattr(original, "onesource_empty_once", False):
        return

    def result_processor(self, dialect, coltype):
        process = original(self, dialect, coltype)
        empty: set[bytes] = set()

        def fast(value):
            raw = bytes(value) if isinstance(value, memoryview | bytearray) else value
            if isinstance(raw, bytes) and raw in empty:
                return {}
            out = process(value)
            if out == {} and type(out) is dict and isinstance(raw, bytes) and len(raw) <= 64:
                empty.add(raw)
            return out

        return fast

    result_processor.onesource_empty_once = True
    ExecutorConfigType.result_processor = result_processor


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scheduler"]:
        empty_executor_configs_unpickled_once()
    reason = skip_reason(argv)
    if reason is None:
        seconds = preload()
        _warn(f"load stack imported in {seconds:.1f} s before Airflow forks its tasks")
    elif _forks_here(argv):
        _warn(f"load stack not preloaded: {reason}")
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *argv]
    airflow_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
