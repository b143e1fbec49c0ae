"""Airflow's services on PostgreSQL: the daily DAG's id, its metadata and catalog databases, DagBag parses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from core.config import REPO_ROOT

PG = "host=127.0.0.1 port=5432 user=postgres"
DAILY = "onesource_ingest_daily"


def plain_dataset(name: str, owner: str) -> dict:
    """A dataset with no data elements: no authority edges, so its load can run beside the others."""
    return {"name": name, "title": name, "owner": owner, "system": "amr_reg" if owner == "amr" else "tax_core",
            "update_cycle": "daily", "share_type": "unconditional", "key": ["code"],
            "connector": {"kind": "file", "path": f"{owner}/{name}/*.csv", "format": "csv"},
            "columns": [{"name": "code", "source": "编码", "type": "string", "required": True},
                        {"name": "amount", "source": "金额", "type": "decimal"}]}


@pytest.fixture
def databases():
    """Two fresh PostgreSQL databases: Airflow's metadata and the lake's catalog."""
    psycopg = pytest.importorskip("psycopg")
    names = [f"onesource_af_{uuid.uuid4().hex[:8]}", f"onesource_lk_{uuid.uuid4().hex[:8]}"]
    try:
        admin = psycopg.connect(f"{PG} dbname=postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); .ci/run shows how to start it")
    for name in names:
        admin.execute(f"CREATE DATABASE {name}")
    yield names
    for name in names:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def query(db: str, sql: str, params=()) -> list[tuple]:
    import psycopg

    with psycopg.connect(f"{PG} dbname={db}") as conn:
        return conn.execute(sql, params).fetchall()


def wait(what: str, seconds: float, probe, logs: dict):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    tails = "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-2500:]}" for name, path in logs.items())
    pytest.fail(f"{what} did not happen within {seconds:.0f} s\n{tails}")


DAGBAG = textwrap.dedent("""
    import json, sys, time
    t = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "seconds": time.perf_counter() - t,
           "dags": {d.dag_id: {"schedule": str(d.schedule), "tasks": sorted(d.task_ids),
                               "outlets": sorted(o.uri for t in d.tasks for o in t.outlets),
                               "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks}}
                    for d in bag.dags.values()}}
    print("RESULT" + json.dumps(out))
""")


def dagbag(settings) -> dict:
    import json

    env = {**settings.environ(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", DAGBAG, str(REPO_ROOT / "dags")], env=env, capture_output=True,
                          text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(line.removeprefix("RESULT"))
