"""Run the Airflow CLI on a OneSource home (its own AIRFLOW_HOME and this repo's dags/ folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from onesource.config import Settings
from onesource.errors import OneSourceError

_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
"""``airflow dags test`` logs this once per attempt of a task, whatever its outcome (a retry ends again)."""


def task_ended(line: str) -> str | None:
    """The task (``id``, or ``id[n]`` for a mapped one) whose attempt this line of ``airflow dags test``
    ends, else None."""
    match = _TASK_END.search(line)
    if not match:
        return None
    task_id, index = match.groups()
    return task_id if index == "-1" else f"{task_id}[{index}]"


class AirflowRunError(OneSourceError):
    """The Airflow CLI failed for a reason other than a task's own failure."""


def airflow_env(settings: Settings, secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Airflow runs in: this process's, the home's settings, and ``secrets`` (connector
    credentials the registry names by variable, as a deployment's secrets backend would export them)."""
    # `airflow standalone` starts its components as `airflow ...` from PATH: put this venv's bin first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Airflow chmods its task-log folders and files itself (0o775 / 0o664 by default): owner-only, like the
    # rest of the home (an operator who runs tasks as another user sets these to what that needs)
    private_logs = {"AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
                    "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600"}
    return {**private_logs, **os.environ, **settings.environ(), **(secrets or {}), "PATH": path}


def distributed_env(settings: Settings, metadata_url: str, api_port: int, parallelism: int = 4) -> dict[str, str]:
    """Environment for Airflow's separate services (``api-server``, ``scheduler``, ``dag-processor``) with
    the LocalExecutor and a PostgreSQL metadata database, as on one production VM (docs/deploy.md).

    ``metadata_url`` is a SQLAlchemy URL, ``postgresql+psycopg://user@host:port/db``: Airflow 3 derives an
    async URL for asyncpg from it, which is not installed, so the psycopg (3) URL serves both. Workers
    reach the scheduler's tasks through the api-server's execution API, and every service must sign and
    check its tokens with the same secret."""
    return {
        **airflow_env(settings),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") or os.urandom(24).hex(),
    }


def airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else "airflow"


def ensure_db(settings: Settings, log: Path) -> bool:
    """``airflow db migrate`` once per home; returns True when it ran."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    if (settings.airflow_home / "airflow.db").exists():
        return False
    run([airflow_bin(), "db", "migrate"], settings, log)
    return True


def run(cmd: list[str], settings: Settings, log: Path, on_line: Callable[[str], None] | None = None,
        secrets: Mapping[str, str] | None = None) -> int:
    """Run an Airflow command, its output to ``log`` (and each line to ``on_line``); return its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, env=airflow_env(settings, secrets), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    if code != 0 and cmd[1:3] == ["db", "migrate"]:
        raise AirflowRunError(f"`airflow db migrate` failed (exit {code}); see {log}")
    return code


def dags_test(settings: Settings, dag_id: str, log: Path, on_task_done: Callable[[str], None] | None = None,
              secrets: Mapping[str, str] | None = None) -> int:
    """``airflow dags test DAG_ID``: a real DAG run, tasks executed in this one process.

    Exit code 1 means a task failed (a quarantined batch does that on purpose); the caller reads
    the outcome of each load from the loads ledger. ``on_task_done`` gets the task's id (``id[n]`` for a
    mapped one) each time an attempt of it ends: a retried task comes again under the same id.
    """

    def on_line(line: str) -> None:
        if on_task_done and (task := task_ended(line)):
            on_task_done(task)

    code = run([airflow_bin(), "dags", "test", dag_id], settings, log, on_line, secrets)
    text = log.read_text(encoding="utf-8", errors="replace")
    if code != 0 and "DagRun Finished" not in text:
        tail = "\n".join(text.splitlines()[-15:])
        raise AirflowRunError(f"`airflow dags test {dag_id}` failed before the DAG ran (exit {code}); "
                              f"see {log}:\n{tail}")
    return code
