"""Slow tier: the daily DAG under Airflow's CeleryExecutor, with a worker lost in the middle of a load.

The scheduler, the dag-processor, the api-server and two Celery workers run as separate processes, as on
several machines: Redis is the broker, the PostgreSQL metadata database holds the task states (Celery's
result backend too), and the lake's catalog is PostgreSQL. The daily DAG's loads spread over both workers,
and each task instance's hostname in the metadata database says which worker ran it.

One load reads a department's paginated HTTP API that the test serves. Its first attempt is held at
page 2 (page 1 already read) until the worker running it has been SIGKILLed with every process under
it, as a machine that loses power: no sleep decides when. The scheduler finds the task's heartbeat gone,
the task is retried on the other worker, and the dataset is published exactly once: one published load in
``ops.loads``, one publishing snapshot, each record once in the shared table.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from core.config import LakeSettings, Settings
from lakehouse.lake import CATALOG, Lake
from onesource import airflow_cli
from tests.helpers import USCC, csv_text, drop, firms_dataset, free_port, wait_for_port, write_registry
from tests.support.airflow import DAILY, databases, plain_dataset, query, wait  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

REDIS = "redis://127.0.0.1:6379/7"
HELD = "tax_payments"
FILE_LOADS = {"amr.firms": 3, "tax.tax_returns": 500}  # one each for the two workers at first, then the payments
PAYMENTS = [{"payment_id": f"P{i:03d}", "uscc": USCC[i % 3], "amount": f"{100 + i}.25"} for i in range(5)]
PAGE_SIZE = 2  # pages 1 and 2 full, page 3 short: the end
HELD_PAGE = 2
HEARTBEAT_TIMEOUT = 20  # seconds without a heartbeat before the scheduler fails a task (Airflow's default: 300)


def payments_dataset(url: str) -> dict:
    """The tax bureau's payments API. Its credit codes reference market regulation's firms (the element's
    authority), so the DAG runs it after firms: it starts when both workers have had a file load."""
    return {"name": HELD, "title": "缴款记录", "owner": "tax", "system": "tax_core", "update_cycle": "daily",
            "share_type": "unconditional", "key": ["payment_id"],
            "connector": {"kind": "http", "url": url, "items": "items", "page_size": PAGE_SIZE, "timeout": 300},
            "columns": [{"name": "payment_id", "source": "payment_id", "type": "string", "required": True},
                        {"name": "uscc", "source": "uscc", "element": "uscc", "required": True},
                        {"name": "amount", "source": "amount", "type": "decimal"}]}


class PaymentsApi:
    """A paginated JSON API on loopback. The first request for page ``HELD_PAGE`` waits until ``release``."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.held = threading.Event()
        self.release = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                query = parse_qs(urlsplit(self.path).query)
                page, size = int(query["page"][0]), int(query["page_size"][0])
                api.requests.append(page)
                if page == HELD_PAGE and not api.held.is_set():
                    api.held.set()
                    api.release.wait(300)
                body = json.dumps({"items": PAYMENTS[(page - 1) * size:page * size]}).encode()
                with contextlib.suppress(OSError):  # the held attempt's worker is gone by then
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/payments"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redis_queue():
    """A queue of this test's own on the machine's Redis (other runs may share the server); its keys,
    and the killed worker's unacknowledged message, are removed afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); .ci/run shows how to start it")
    queue = f"onesource-test-{uuid.uuid4().hex[:8]}"
    yield queue
    client.delete(queue, f"_kombu.binding.{queue}")
    for tag, message in client.hgetall("unacked").items():
        if queue.encode() in message:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.close()


def _kill_machine(proc: subprocess.Popen) -> list[int]:
    """SIGKILL ``proc`` and every process below it at once, as a machine that loses power: all are
    stopped first (SIGSTOP), so none forks or reports anything between the listing and the kill."""
    import psutil

    root = psutil.Process(proc.pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGSTOP)
    procs += [c for c in root.children(recursive=True) if c not in procs]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return [p.pid for p in procs]


def test_celery_workers_share_the_daily_loads_and_a_lost_worker_s_load_is_published_once(
        tmp_path, databases, redis_queue):  # noqa: F811 (the fixture imported above)
    clock = time.monotonic()
    laps: dict[str, float] = {}

    def lap(what: str) -> None:
        laps[what] = round(time.monotonic() - clock, 1)

    metadata_db, catalog_db = databases
    home = tmp_path / "home"
    settings = Settings(home=home, lake=LakeSettings(catalog=f"postgres:dbname={catalog_db} host=127.0.0.1 "
                                                     "port=5432 user=postgres", data_path=f"{home / 'lake' / 'data'}/"))
    api = PaymentsApi()
    write_registry(settings.registry_dir, [firms_dataset(), plain_dataset("tax_returns", "tax"),
                                           payments_dataset(api.url)])
    drop(settings, "amr/firms/1.csv", csv_text())
    for task, rows in FILE_LOADS.items():
        owner, name = task.split(".")
        if name != "firms":
            drop(settings, f"{owner}/{name}/1.csv", "编码,金额\n" + "".join(f"C{i},{i}.5\n" for i in range(rows)))

    port = free_port()
    env = airflow_cli.celery_env(settings, f"postgresql+psycopg://postgres@127.0.0.1:5432/{metadata_db}", port,
                                 REDIS, queue=redis_queue)
    env.update({
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # a lost worker's task is failed (then retried) after this long without a heartbeat, looked for
        # every 5 s; and the load's retry delay (2 min, doubling) is capped at 5 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "5",
    })
    airflow = airflow_cli.airflow_bin()
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    lap("migrated")

    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: settings.reports_dir / f"airflow-{name}.log"
            for name in ("api-server", "scheduler", "dag-processor", "worker-a", "worker-b")}
    commands = {name: (airflow_cli.service(name), env) for name in ("api-server", "scheduler", "dag-processor")}
    workers = {name: f"{name}.onesource.test" for name in ("worker-a", "worker-b")}
    for name, hostname in workers.items():
        commands[name] = airflow_cli.celery_worker(env, name, concurrency=1, hostname=hostname,
                                                   log_server_port=free_port())
    procs = {name: subprocess.Popen(cmd, env=cmd_env, stdout=open(logs[name], "w"), stderr=subprocess.STDOUT,
                                    start_new_session=True) for name, (cmd, cmd_env) in commands.items()}
    try:
        wait_for_port(port, procs["api-server"])
        wait("the dag-processor serializing the generated DAGs", 180,
             lambda: query(metadata_db, "SELECT dag_id FROM dag WHERE dag_id = %s", [DAILY]), logs)
        # switched on while the workers start (the CLI takes ~10 s to import): until both are ready the
        # loads wait in Redis, and each worker takes one at a time (concurrency 1, no prefetch)
        unpause = subprocess.Popen([airflow, "dags", "unpause", DAILY], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for name in workers:
            wait(f"Celery {name} ready", 180, lambda name=name: " ready." in logs[name].read_text(errors="replace"),
                 logs)
        assert unpause.wait(timeout=300) == 0, unpause.stdout.read()[-2000:]
        lap("services up")

        # the payments load is on page 2, held: its worker is lost with everything running on it
        wait("the payments load reaching its held page", 240, api.held.is_set, logs)
        lap("payments load held")
        [(killed_host, state, first_try)] = query(
            metadata_db, "SELECT hostname, state, try_number FROM task_instance WHERE dag_id = %s AND task_id = %s",
            [DAILY, f"tax.{HELD}"])
        assert state == "running" and killed_host in workers.values(), (killed_host, state)
        [killed] = [name for name, hostname in workers.items() if hostname == killed_host]
        [survivor] = [name for name in workers if name != killed]
        pids = _kill_machine(procs[killed])
        assert len(pids) >= 3, pids  # the worker, its pool process (the task's supervisor), the task process
        api.release.set()
        lap("worker killed")

        state = wait("the daily run finishing on the surviving worker", 240, lambda: [s for (s,) in query(
            metadata_db, "SELECT state FROM dag_run WHERE dag_id = %s", [DAILY]) if s in ("success", "failed")],
            logs)
        lap("run finished")
        tasks = {t: (s, h, n) for t, s, h, n in query(
            metadata_db, "SELECT task_id, state, hostname, try_number FROM task_instance WHERE dag_id = %s", [DAILY])}
        assert state == ["success"], tasks
        assert {t: s for t, (s, _, _) in tasks.items()} == dict.fromkeys([*FILE_LOADS, f"tax.{HELD}"], "success")
        # the loads ran on both workers, as each task instance's hostname says
        assert {h for _, h, _ in tasks.values()} == set(workers.values()), tasks
        # the held load: its first try on the lost worker, failed for want of a heartbeat; the retry on the other
        history = query(metadata_db, "SELECT try_number, hostname, state FROM task_instance_history "
                                     "WHERE dag_id = %s AND task_id = %s ORDER BY try_number", [DAILY, f"tax.{HELD}"])
        assert history == [(first_try, killed_host, "failed")], history
        assert tasks[f"tax.{HELD}"][1:] == (workers[survivor], first_try + 1), tasks
        assert query(metadata_db, "SELECT count(*) FROM log WHERE event = 'heartbeat timeout' AND task_id = %s",
                     [f"tax.{HELD}"]) == [(1,)]
        # each attempt read the API from page 1: the lost attempt's page 1 was not kept
        assert api.requests == [1, 2, 1, 2, 3], api.requests

        # published exactly once: one published load, one publishing snapshot, each record once
        with Lake(settings.lake, read_only=True) as lake:
            ledger = lake.con.execute(f"SELECT status, rows_in, rows_published FROM {CATALOG}.ops.loads WHERE dataset = ?",
                                      [HELD]).fetchall()
            assert ledger == [("published", len(PAYMENTS), len(PAYMENTS))], ledger
            publishes = lake.con.execute(f"SELECT count(*) FROM {CATALOG}.snapshots() "
                                         f"WHERE commit_message LIKE 'publish {HELD} load %'").fetchone()
            assert publishes == (1,)
            assert lake.con.execute(f"SELECT payment_id, uscc, amount::VARCHAR FROM {CATALOG}.shared.{HELD} "
                                    "ORDER BY payment_id").fetchall() == [
                (p["payment_id"], p["uscc"], p["amount"]) for p in PAYMENTS]
            for task, rows in FILE_LOADS.items():
                table = task.split(".")[1]
                assert lake.con.execute(f"SELECT count(*) FROM {CATALOG}.shared.{table}").fetchone()[0] == rows
                assert lake.con.execute(f"SELECT count(*) FROM {CATALOG}.ops.loads WHERE dataset = ? "
                                        "AND status = 'published'", [table]).fetchone()[0] == 1
        print(f"phases (s since start): {laps}; killed {killed} ({len(pids)} processes), retried on {survivor}")
    finally:
        api.close()
        _stop(procs.values())


def _stop(procs) -> None:
    """SIGTERM every service and what runs under it, SIGKILL what still runs 5 s later (the api-server's own
    graceful shutdown takes ~15 s, and nothing here needs it)."""
    import psutil

    tree = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(proc.pid)
            tree += [root, *root.children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
