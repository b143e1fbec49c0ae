"""Airflow as its users expect it: new DAGs paused (but the one the demo runs), a small machine's parallelism,
the API port and the execution API URL on the same port, DAG and task docs from the registry, and
`onesource airflow standalone` stopping every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import REPO_ROOT, Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import write_registry as write_demo_registry
from onesource import airflow_cli
from onesource.dagfactory import ALL_DAG_ID, MAINTENANCE_DAG_ID
from schemas import load_registry
from tests.helpers import csv_text, drop, firms_dataset, free_port, write_registry

ONESOURCE = str(Path(sys.executable).with_name("onesource"))

DAGBAG = textwrap.dedent("""
    import json, sys
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    print("RESULT" + json.dumps({
        "errors": {k: str(v) for k, v in bag.import_errors.items()},
        "paused_at_creation": conf.getboolean("core", "dags_are_paused_at_creation"),
        "parallelism": conf.getint("core", "parallelism"),
        "dags": {d.dag_id: {"doc": d.doc_md, "paused": d.is_paused_upon_creation,
                            "tasks": {t.task_id: t.doc_md for t in d.tasks}} for d in bag.dags.values()}}))
""")


@pytest.fixture
def demo_registry(settings):
    write_demo_registry(settings.registry_dir, DemoConfig())
    return load_registry(settings.registry_dir)


def test_every_dag_documents_its_datasets_and_new_dags_start_paused(settings, demo_registry):
    env = {**airflow_cli.airflow_env(settings), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", DAGBAG, str(REPO_ROOT / "dags")], env=env, capture_output=True,
                          text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    bag = json.loads(line.removeprefix("RESULT"))
    assert bag["errors"] == {}
    assert 2 <= bag["parallelism"] <= max(2, os.cpu_count() or 2)  # not Airflow's 32
    # paused at creation under the env airflow_cli builds, but the DAG the demo runs (no schedule of its own)
    assert bag["paused_at_creation"] is True
    paused = {dag_id: bag["paused_at_creation"] if d["paused"] is None else d["paused"]
              for dag_id, d in bag["dags"].items()}
    assert paused == {dag_id: dag_id != ALL_DAG_ID for dag_id in bag["dags"]}

    sources = demo_registry.source_datasets
    concerns = {ALL_DAG_ID: sources, "onesource_consistency": sources, "onesource_metrics": sources,
                MAINTENANCE_DAG_ID: demo_registry.datasets, "onesource_subscriptions": sources,
                "onesource_security": []}  # the audit trail, no dataset
    for cycle in {d.update_cycle for d in sources}:
        concerns[f"onesource_ingest_{cycle}"] = [d for d in sources if d.update_cycle == cycle]
    assert set(concerns) == set(bag["dags"])
    for dag_id, datasets in concerns.items():
        doc = bag["dags"][dag_id]["doc"]
        assert "**Schedule:**" in doc, dag_id
        rows = {r.split("|")[1].strip(" `"): r for r in doc.splitlines() if r.startswith("| `")}
        assert set(rows) == {d.name for d in datasets}, dag_id
        for ds in datasets:
            dept = demo_registry.department(ds.owner)
            for fact in (ds.title, dept.name, f"`{ds.share_type}`", f"`{ds.connector.kind}`", ds.schedule):
                assert fact in rows[ds.name], (dag_id, ds.name, fact)
        for task_id, task_doc in bag["dags"][dag_id]["tasks"].items():
            assert task_doc and "**Stage: " in task_doc, (dag_id, task_id)
    for ds in sources:  # each load task: its stage and its dataset
        task_doc = bag["dags"][ALL_DAG_ID]["tasks"][f"{ds.owner}.{ds.name}"]
        dept = demo_registry.department(ds.owner)
        for fact in ("**Stage: load.**", ds.title, dept.name, f"`{ds.share_type}`", f"`{ds.connector.kind}`",
                     ds.schedule, f"`shared.{ds.name}`"):
            assert fact in task_doc, (ds.name, fact)
    # never a DSN (it may carry a password) in a page the whole Airflow UI shows
    dsns = [str(d.connector.settings["dsn"]) for d in sources if "dsn" in d.connector.settings]
    assert dsns and not any(dsn in json.dumps(bag["dags"], ensure_ascii=False) for dsn in dsns)


ports = st.one_of(st.none(), st.integers(1, 65535))


@hsettings(max_examples=200, deadline=None)
@given(arg=ports, onesource=ports, airflow=ports, url_port=ports)
def test_the_execution_api_url_follows_the_api_port(arg, onesource, airflow, url_port):
    environ = {}
    if onesource:
        environ["ONESOURCE_AIRFLOW_PORT"] = str(onesource)
    if airflow:
        environ["AIRFLOW__API__PORT"] = str(airflow)
    if url_port:  # set by hand, e.g. left over from an earlier shell
        environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{url_port}/execution/"
    env = airflow_cli.api_env(environ, arg)
    port = arg or onesource or airflow or 8080
    assert env["AIRFLOW__API__PORT"] == str(port)
    if arg or onesource or not url_port:  # chosen through OneSource (or nothing set by hand): the same port
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"
    else:  # Airflow's own variables, both set by hand: kept as given
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]


def test_airflow_env_carries_the_port_and_lets_the_user_override_the_tuning(settings, monkeypatch):
    monkeypatch.setenv("ONESOURCE_AIRFLOW_PORT", "18080")
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "7")
    env = airflow_cli.airflow_env(settings)
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "7"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert airflow_cli.airflow_env(settings, api_port=9999)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        "http://127.0.0.1:9999/execution/"


def _cli(args: list[str], home, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([ONESOURCE, *args], env={**os.environ, "ONESOURCE_HOME": str(home), **env},
                          capture_output=True, text=True, timeout=120)


def test_standalone_on_a_busy_port_or_a_bad_port_says_what_to_do(settings):
    write_registry(settings.registry_dir, [firms_dataset()])
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _cli(["airflow", "standalone", "--api-port", str(port)], settings.home)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f":{port}" in out.stderr and "--api-port" in out.stderr and "Traceback" not in out.stderr
    out = _cli(["airflow", "standalone"], settings.home, ONESOURCE_AIRFLOW_PORT="80a")
    assert out.returncode == 1 and "ONESOURCE_AIRFLOW_PORT='80a' is not a TCP port" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# --- slow: the real thing ------------------------------------------------------------------------------------


def _http(method: str, url: str, body: dict | None = None, token: str | None = None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def _wait(what: str, seconds: float, probe, log):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (OSError, urllib.error.URLError, KeyError):
            found = None
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {seconds:.0f} s\n{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.slow
def test_standalone_on_another_port_runs_the_demo_dag_only_and_stops_without_orphans(tmp_path):
    psutil = pytest.importorskip("psutil")
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir, [firms_dataset()])
    drop(settings, "amr/firms/1.csv", csv_text())
    port = free_port()
    log = tmp_path / "standalone.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    proc = subprocess.Popen([ONESOURCE, "airflow", "standalone", "--api-port", str(port)],
                            env={**env, "ONESOURCE_HOME": str(settings.home)}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}"
    sessions = {proc.pid}
    try:
        _wait("the API server answering", 300, lambda: _http("GET", f"{api}/api/v2/monitor/health"), log)
        password = json.loads((settings.airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
        token = _http("POST", f"{api}/auth/token", {"username": "admin", "password": password["admin"]})["access_token"]
        dags = _wait("the DAGs parsed", 180, lambda: {d["dag_id"]: d["is_paused"] for d in _http(
            "GET", f"{api}/api/v2/dags", token=token)["dags"]} or None, log)
        assert dags == {dag_id: dag_id != ALL_DAG_ID for dag_id in dags}, dags
        run = _http("POST", f"{api}/api/v2/dags/{ALL_DAG_ID}/dagRuns", {"logical_date": None}, token)
        # a task runs, calling back the execution API on this port (it called 8080 before)
        states = _wait("the firms load finishing", 300, lambda: {t["task_id"]: t["state"] for t in _http(
            "GET", f"{api}/api/v2/dags/{ALL_DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", token=token
        )["task_instances"] if t["state"] in ("success", "failed", "upstream_failed")}, log)
        assert states.get("amr.firms") == "success", states
        for dag_id in dags.keys() - {ALL_DAG_ID}:  # the paused DAGs did not run
            assert _http("GET", f"{api}/api/v2/dags/{dag_id}/dagRuns", token=token)["total_entries"] == 0, dag_id

        tree = psutil.Process(proc.pid).children(recursive=True)
        sessions |= {os.getsid(p.pid) for p in tree if p.is_running()}
        assert len(tree) >= 5, tree  # scheduler, dag-processor, triggerer, api-server, workers...
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() - started < 60
        left = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if _session(p.pid) in sessions]
        left += [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], [(p.pid, p.info.get("cmdline") if hasattr(p, "info") else p.cmdline()) for p in left]
        assert "Airflow stopped:" in log.read_text(errors="replace")
    finally:
        for sid in sessions:
            for p in psutil.process_iter():
                if _session(p.pid) == sid:
                    p.kill()


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
