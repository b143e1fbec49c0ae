"""Slow tier: the lake on a real PostgreSQL catalog and S3-compatible object storage (moto's server),
selected by configuration only; the full load path from several processes at once, governed queries
(locked down to the bucket prefix) and time travel on top."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from core.config import LakeSettings, Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from tests.helpers import free_port, wait_for_port

pytestmark = pytest.mark.slow
PG = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, seconds=30)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "ONESOURCE_S3_ENDPOINT": f"127.0.0.1:{port}", "ONESOURCE_S3_USE_SSL": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    client.create_bucket(Bucket="city-lake")
    yield client, env
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def catalog_db():
    name = f"onesource_{uuid.uuid4().hex[:8]}"
    run = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*run, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    yield f"postgres:dbname={name} {PG}"
    subprocess.run([*run, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def test_lake_on_postgres_and_s3_with_parallel_loads(tmp_path, s3, catalog_db):
    client, s3_env = s3
    local = Settings(home=tmp_path / "home")
    settings = Settings(home=local.home, lake=LakeSettings(catalog=catalog_db, data_path="s3://city-lake/lake/"))
    manifest = generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    env = {**os.environ, **s3_env, "ONESOURCE_HOME": str(settings.home), "ONESOURCE_CATALOG": catalog_db,
           "ONESOURCE_DATA_PATH": settings.lake.data_path}
    cli = [sys.executable, "-m", "onesource.cli", "ingest"]
    first = subprocess.run([*cli, "mca_admin_divisions"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # three departments' loads at once, from three processes, against one catalog
    names = ["amr_enterprise_register", "psb_resident_register", "edu_schools"]
    procs = [subprocess.Popen([*cli, n], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in names]
    for p, name in zip(procs, names, strict=True):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{name}: {out[-3000:]}"
    with Lake(settings.lake, read_only=True) as lake:
        for name in ["mca_admin_divisions", *names]:
            got = lake.con.execute(f"SELECT count(*) FROM shared.{name}").fetchone()[0]
            assert got == manifest["datasets"][name]["rows"], name
        published = lake.con.execute("SELECT count(*) FROM ops.loads WHERE status = 'published'").fetchone()[0]
        first_snapshot = lake.con.execute("SELECT min(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0]
    assert published == 4  # each exactly once
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="city-lake").get("Contents", [])]
    assert any(k.startswith("lake/") and k.endswith(".parquet") for k in keys)
    assert not list((settings.home / "lake").glob("**/*.parquet"))  # nothing went to local disk
    # governed queries run locked down to the bucket prefix, and time travel works there too
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    try:
        n = engine.query("tax", "SELECT count(*) FROM shared.amr_enterprise_register").rows[0][0]
        assert n == manifest["datasets"]["amr_enterprise_register"]["rows"]
    finally:
        engine.close()
    with Lake(settings.lake, as_of=first_snapshot) as then:
        assert "amr_enterprise_register" not in then.tables("shared")
