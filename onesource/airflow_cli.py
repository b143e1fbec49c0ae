"""Run the Airflow CLI on a OneSource home (its own AIRFLOW_HOME and this repo's dags/ folder)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from core.config import Settings
from core.errors import OneSourceError

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


DEFAULT_API_PORT = 8080


def tuning(cpus: int | None = None) -> dict[str, str]:
    """Airflow's defaults for a small machine (the user's own ``AIRFLOW__...`` variables win).

    Airflow's stock defaults are sized for a server: ``parallelism`` 32 let `standalone` start 16 tasks and
    32 LocalExecutor workers at once on 2 cores (5.9 GB). A load is CPU-bound DuckDB work and each running
    task is a worker, a supervisor and a task process (~0.3 GB together), so one task per core keeps the
    machine responsive and the memory near 1 GB. One API-server worker and one DAG-parsing process: there is
    one user and one DAG file, and each extra process holds a full Airflow import (~250 MB)."""
    per_core = str(max(2, cpus or os.cpu_count() or 2))
    return {
        "AIRFLOW__CORE__PARALLELISM": per_core,
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": per_core,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # The DAG files change only when the registry does. Airflow re-parses each every 30 s by default, and
        # for a city of 2,000 datasets its dag-processor then spends ~50 CPU s (and up to 11 GB) writing the
        # serialized DAGs back each time: a whole core, taken from the loads (bench/cityday.py). A registry
        # change reaches Airflow within 5 minutes (`airflow dags reserialize` for at once).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
        # A DAG seen for the first time waits for someone to switch it on: otherwise every cycle's DAG
        # runs its last interval the moment the scheduler starts. onesource_ingest_all, which has no
        # schedule and is what the demo runs, is created unpaused (dagfactory), so it runs when triggered.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # The UI and API on loopback, as `onesource serve`: Airflow's own default is every interface, with
        # the generated admin password in a plain file (AIRFLOW__API__HOST=0.0.0.0 opens it on purpose)
        "AIRFLOW__API__HOST": "127.0.0.1",
    }


PORT_ENV = "ONESOURCE_AIRFLOW_PORT"


def api_env(environ: Mapping[str, str], api_port: int | None = None) -> dict[str, str]:
    """The API server's port and the execution API URL its task workers call, always the same port.

    The port: ``api_port`` (``--api-port``), else ``ONESOURCE_AIRFLOW_PORT``, else ``AIRFLOW__API__PORT``,
    else 8080. Airflow derives the execution API URL from ``[api] base_url``, and without one from
    localhost:8080 whatever the port: with another port every task failed calling 8080. An execution URL
    set in ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` is kept only when the port was not chosen through
    OneSource (an execution API served elsewhere)."""
    chosen = api_port or _port(environ.get(PORT_ENV), PORT_ENV)
    port = chosen or _port(environ.get("AIRFLOW__API__PORT"), "AIRFLOW__API__PORT") or DEFAULT_API_PORT
    url = f"http://127.0.0.1:{port}/execution/"
    if not chosen:
        url = environ.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") or url
    return {"AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": url}


def _port(raw: str | None, name: str) -> int | None:
    if not raw:
        return None
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise AirflowRunError(f"{name}={raw!r} is not a TCP port: give a number from 1 to 65535, "
                              f"e.g. {name}=8081 (or `onesource airflow standalone --api-port 8081`)")
    return int(raw)


def airflow_env(settings: Settings, secrets: Mapping[str, str] | None = None,
                api_port: int | None = None) -> dict[str, str]:
    """The environment Airflow runs in: :func:`tuning`, this process's, the home's settings, the API port
    (:func:`api_env`) and ``secrets`` (connector credentials the registry names by variable, as a
    deployment's secrets backend would export them)."""
    # `airflow standalone` starts its components as `airflow ...` from PATH: put this venv's bin first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Airflow chmods its task-log folders and files itself (0o775 / 0o664 by default): owner-only, like the
    # rest of the home (an operator who runs tasks as another user sets these to what that needs)
    private_logs = {"AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
                    "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600"}
    return {**tuning(), **private_logs, **os.environ, **settings.environ(), **api_env(os.environ, api_port),
            **(secrets or {}), "PATH": path}


def distributed_env(settings: Settings, metadata_url: str, api_port: int, parallelism: int = 4) -> dict[str, str]:
    """Environment for Airflow's separate services (``api-server``, ``scheduler``, ``dag-processor``) with
    the LocalExecutor and a PostgreSQL metadata database, as on one production VM (docs/deploy.md).

    ``metadata_url`` is a SQLAlchemy URL, ``postgresql+psycopg://user@host:port/db``: Airflow 3 derives an
    async URL for asyncpg from it, which is not installed, so the psycopg (3) URL serves both. Workers
    reach the scheduler's tasks through the api-server's execution API, and every service must sign and
    check its tokens with the same secret."""
    return {
        **airflow_env(settings, api_port=api_port),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") or os.urandom(24).hex(),
    }


DEFAULT_QUEUE = "default"
"""Airflow's ``[operators] default_queue``: every load goes to it, and every worker serves it."""

WORKER_HOSTNAME_ENV = "ONESOURCE_WORKER_HOSTNAME"


def celery_env(settings: Settings, metadata_url: str, api_port: int, broker_url: str, parallelism: int = 4,
               queue: str = DEFAULT_QUEUE, execution_api_url: str | None = None) -> dict[str, str]:
    """:func:`distributed_env` with the CeleryExecutor: the same environment for every machine's services
    (``api-server``, ``scheduler``, ``dag-processor``) and its workers (:func:`celery_worker`).

    ``broker_url`` is Redis, ``redis://host:6379/N``. Task states go back through the metadata database
    (Celery's result backend ``db+`` + ``metadata_url``), so there is no second store to run. Loads go to
    ``queue`` (Airflow's default queue). ``execution_api_url`` is the api-server's execution API as the
    workers reach it (``http://airflow-api.internal:8080/execution/``) when they run on other machines;
    by default the loopback URL of :func:`api_env`. Every machine must get the same
    ``AIRFLOW__API_AUTH__JWT_SECRET``: set it in the environment, or pass this one dict to each process."""
    env = distributed_env(settings, metadata_url, api_port, parallelism)
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        # Airflow gives each send of a task to Redis 1 s (under SIGALRM), sends a timed-out one 3 more times at
        # its next heartbeats, then fails the task: little for a scheduler sharing two busy cores with loads
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
    })
    if execution_api_url:
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = execution_api_url
    return env


def celery_worker(env: Mapping[str, str], name: str, concurrency: int = 1, queues: tuple[str, ...] = (),
                  hostname: str | None = None, log_server_port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """``airflow celery worker`` for one worker: its command and environment (``env`` from :func:`celery_env`).

    The worker serves ``queues`` (by default the environment's default queue) with ``concurrency`` loads at
    once (one per core: a load is CPU-bound DuckDB work) under the Celery node name ``name@<host>``.
    Several workers on one machine need two more things a worker per machine has anyway: a ``hostname``
    for Airflow to record on the task instances it runs (the UI's and the metadata database's only clue
    to where a task ran; by default the machine's FQDN, the same for all of them) and a
    ``log_server_port`` each (every worker serves its task logs on 8793 by default)."""
    queue = ",".join(queues) or env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE") or DEFAULT_QUEUE
    cmd = service("celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
                  "--celery-hostname", f"{name}@%h")
    worker = dict(env)
    if hostname:
        worker[WORKER_HOSTNAME_ENV] = hostname
        worker["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = f"{__name__}.worker_hostname"
    if log_server_port:
        worker["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_server_port)
    return cmd, worker


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for a worker given a hostname by :func:`celery_worker`: that
    name, else the machine's FQDN (Airflow's own default). Airflow calls it without arguments in the task's
    process, so the name comes through that process's environment."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else "airflow"


def service(*args: str) -> list[str]:
    """The command for the Airflow service ``airflow <args>`` (``scheduler``, ``celery worker ...``): through
    :mod:`onesource.preload`, which imports the load stack first in a process that forks task processes,
    so each load does not import it again (seconds per small load)."""
    return [sys.executable, "-m", "onesource.preload", *args]


def _preloading_path(settings: Settings) -> Path:
    """A folder holding an ``airflow`` that runs :mod:`onesource.preload`: first on PATH, it makes the
    components ``airflow standalone`` starts by name (``airflow scheduler``) preload too."""
    folder = settings.airflow_home / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "airflow"
    text = f"#!{sys.executable}\nimport sys\nfrom onesource.preload import main\nsys.exit(main())\n"
    if not shim.exists() or shim.read_text() != text:
        tmp = folder / f".airflow.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o700)
        os.replace(tmp, shim)
    return folder


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


def standalone(settings: Settings, argv: list[str]) -> int:
    """``onesource airflow standalone [--api-port N]``: Airflow's scheduler, DAG processor, triggerer and API
    server on this home, until Ctrl-C or SIGTERM, which stops every process they started (:func:`stop_tree`).

    ``airflow standalone`` itself handles Ctrl-C only, and its components' children live on after their
    parent: the task processes set their own process groups, and a SIGTERM left ~40 orphans. So it runs
    in a session of its own, this process becomes the subreaper of whatever it leaves orphaned, and the
    whole tree is stopped from here."""
    import argparse

    parser = argparse.ArgumentParser(prog="onesource airflow standalone",
                                     description="Airflow on this home, all components in one command.")
    parser.add_argument("--api-port", type=_port_arg, help=f"the UI's and the API's port (default {PORT_ENV} "
                        "or 8080); the tasks' execution API URL follows it")
    args = parser.parse_args(argv)
    env = airflow_env(settings, api_port=args.api_port)
    env["PATH"] = f"{_preloading_path(settings)}{os.pathsep}{env['PATH']}"
    port = int(env["AIRFLOW__API__PORT"])
    _check_port_free(env.get("AIRFLOW__API__HOST") or "0.0.0.0", port)
    print(f"Airflow on http://localhost:{port}/ (home {settings.airflow_home}; new DAGs start paused: switch one on "
          "in the UI, or trigger onesource_ingest_all). Ctrl-C stops it and every process it started.",
          file=sys.stderr, flush=True)
    _become_subreaper()
    proc = subprocess.Popen([airflow_bin(), "standalone"], env=env, start_new_session=True)
    requested: list[int] = []

    def on_signal(signum, _frame) -> None:
        if requested:  # asked twice: no more waiting
            _signal_all(proc, signal.SIGKILL)
        requested.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        while proc.poll() is None and not requested:
            _reap_orphans(proc.pid)
            time.sleep(0.5)
    finally:
        ended, killed = stop_tree(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"Airflow stopped: {ended} process(es) ended" + (f", {killed} of them killed (SIGKILL)" if killed else ""),
          file=sys.stderr)
    return 0 if requested else (proc.returncode or 0)


STOP_STEPS = ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))
"""How :func:`stop_tree` stops: SIGTERM to every process at once (each Airflow component shuts down on it),
then SIGKILL to what still runs after that many seconds. Seen on 2 cores: SIGINT first (standalone's own
Ctrl-C path) took 15 s and still left the LocalExecutor's idle workers (they ignore SIGINT) to SIGKILL;
SIGTERM stops the components in a few seconds (now and then an idle worker or the API server needs the KILL)."""


def stop_tree(proc: subprocess.Popen, steps=STOP_STEPS) -> tuple[int, int]:
    """Stop ``proc`` and every process below this one (its descendants, and the orphans this process
    reaps as subreaper); return (processes ended, processes that needed SIGKILL)."""
    import psutil

    me = psutil.Process()
    seen: dict[int, psutil.Process] = {}

    def live() -> list[psutil.Process]:
        for p in me.children(recursive=True):
            seen.setdefault(p.pid, p)
        out = []
        for p in seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    killed = 0
    for sig, wait in steps:
        procs = live()
        if not procs:
            break
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        if sig == signal.SIGKILL:
            killed += len(procs)
            print(f"still running after {sum(w for _, w in steps[:-1]):.0f} s, killed: " + ", ".join(_name(p) for p in procs),
                  file=sys.stderr)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and live():
            proc.poll()
            _reap_orphans(proc.pid)
            time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    # a process that exits last leaves its own exited children to this subreaper only then: collect every
    # one before returning, or they outlive this process as zombies under an init that may never reap them
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap_orphans(proc.pid)
        try:
            if not [p for p in me.children(recursive=True) if p.pid != proc.pid]:
                break
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    return len(seen), killed


def stop_groups(procs: list[subprocess.Popen], grace: float = 60.0) -> None:
    """Stop services each started in its own process group (``start_new_session=True``): SIGTERM to every
    group at once, then SIGKILL to a group whose leader has not exited after ``grace`` seconds. For services a
    test or a benchmark starts side by side (scheduler, dag-processor, api-server, workers); :func:`stop_tree`
    is for the one process tree a CLI command owns."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _name(p) -> str:
    try:
        return f"{' '.join(p.cmdline())[:60] or p.name()} ({p.pid})"
    except Exception:
        return str(p.pid)


def _signal_all(proc: subprocess.Popen, sig: int) -> None:
    import psutil

    for p in [psutil.Process(proc.pid), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def _become_subreaper() -> None:
    """Orphans below this process are re-parented to it instead of init (Linux), so none escapes stop_tree."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans(skip: int) -> None:
    """Collect exited orphans (as subreaper they are this process's children), but not ``skip`` (Popen's own)."""
    import psutil

    for p in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess, ChildProcessError):
            if p.pid != skip and p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)


def _port_arg(raw: str) -> int:
    import argparse

    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise AirflowRunError(
                f"Airflow's API server cannot listen on {host}:{port} ({exc.strerror or exc}): another program, "
                "perhaps an earlier `onesource airflow standalone`, holds that port. Stop it, or choose another "
                "port: `onesource airflow standalone --api-port 8081` (or ONESOURCE_AIRFLOW_PORT=8081).") from exc
