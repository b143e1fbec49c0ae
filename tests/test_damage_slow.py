"""Slow tier of tests/test_damage.py: the same damage on the real processes (`onesource ingest` killed and
run again, `onesource serve` with a catalog truncated under it, every command on a damaged or removed home).
No command may answer with a raw traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import csv_text, drop, firms_dataset, free_port, load, rows, wait_for_port, write_registry
from tests.support.maintenance import extract

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def onesource(settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onesource.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "ONESOURCE_HOME": str(settings.home)})


def said(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    return " ".join(out.split())


def names(text: str, path: Path | str) -> bool:
    """Whether the output names ``path`` (the console folds long lines, a path too)."""
    return str(path) in text.replace(" ", "")


def test_ingest_whose_only_new_file_is_quarantined_at_standardize_exits_cleanly(tiny):
    """GX's set-up thread was still importing GX when the Data Docs build imported it too: the import
    deadlocked (_DeadlockError) and the command died with a traceback after quarantining the batch."""
    drop(tiny, "amr/firms/a.csv", "统一社会信用代码,名称X\n91330106MA2B0C1D68,某公司\n")  # a required column missing
    proc = onesource(tiny, "ingest", "firms")
    text = said(proc)
    assert proc.returncode == 1, text
    assert "quarantined firms" in text and "Data Docs:" in text and "Deadlock" not in text
    assert rows(tiny, "SELECT status, error_stage FROM ops.loads") == [("quarantined", "standardize")]


def test_landed_file_rewritten_after_a_killed_load_is_refused_then_loads_from_the_drop_folder(tiny):
    """A load is SIGKILLed after landing (while it validates); root rewrites the landed 0400 file; the next
    `onesource ingest` finds the file landed and must not publish it under the delivered hash."""
    delivered = csv_text()
    drop(tiny, "amr/firms/a.csv", delivered)
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "ingest", "firms"], cwd=REPO,
                            env={**os.environ, "ONESOURCE_HOME": str(tiny.home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    staging = tiny.staging_dir / "firms"
    deadline = time.time() + 120
    while not (staging.exists() and list(staging.glob("*.parquet"))):  # standardized: it validates now
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = {p.name.split(".", 1)[1] for p in staging.iterdir()}
    assert {"lock", "parquet"} <= left  # the killed load's batch stays behind
    [landed] = list((tiny.landing_dir / "firms").glob("*.csv"))
    os.chmod(landed, 0o600)  # root would not even need this
    landed.write_text(delivered.replace("杭州", "伪造"), encoding="utf-8")

    refused = onesource(tiny, "ingest", "firms")
    text = said(refused)
    assert refused.returncode == 1 and "failed" in text, text
    assert names(text, landed) and "changed after it was landed" in text and "deliver" in text
    assert rows(tiny, "SELECT status, error_stage FROM ops.loads") == [("failed", "landing")]
    assert "firms" not in [r[0] for r in rows(tiny, "SELECT table_name FROM information_schema.tables "
                                                     "WHERE table_schema = 'shared'")]

    old = time.time() - 3600  # the killed load's files, once older than the sweep's grace
    for p in staging.iterdir():
        os.utime(p, (old, old))
    again = onesource(tiny, "ingest", "firms")
    assert again.returncode == 0 and "published" in said(again)
    assert rows(tiny, "SELECT count(*), count(*) FILTER (enterprise_name LIKE '%伪造%') FROM shared.firms") == [(3, 0)]
    assert list(staging.iterdir()) == []  # swept


@pytest.fixture
def home_with_a_table(settings):
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append", key=["uscc", "staff"])])
    drop(settings, "amr/firms/00.csv", extract(0))
    assert [r.status for r in load(settings)] == ["published"]
    return settings


COMMANDS = (("status",), ("ingest", "firms"), ("sql", "SELECT count(*), sum(staff) FROM shared.firms"),
            ("sql", "--as", "amr", "SELECT sum(staff) FROM shared.firms"), ("doctor",), ("metrics", "--json"))


def test_damage_gives_one_paragraph_naming_the_file_and_the_remedy_from_every_command(home_with_a_table, tmp_path):
    settings = home_with_a_table
    [data_file] = list(Path(settings.lake.data_path).rglob("*.parquet"))
    catalog = Path(settings.lake.catalog.removeprefix("sqlite:"))
    keep = catalog.read_bytes()

    data_file.rename(tmp_path / data_file.name)  # a data file gone
    for command in (("status",), COMMANDS[2], COMMANDS[3], ("doctor",)):
        proc = onesource(settings, *command)
        text = said(proc)
        assert proc.returncode == 1, (command, text)
        assert names(text, data_file.name) and "onesource restore" in text, (command, text)
    (tmp_path / data_file.name).rename(data_file)

    os.truncate(catalog, len(keep) // 2)  # a half-truncated catalog
    for command in COMMANDS:
        proc = onesource(settings, *command)
        text = said(proc)
        assert proc.returncode == 1, (command, text)
        if command != COMMANDS[3]:  # the governed engine words what it cannot open as an internal error
            assert names(text, catalog) and "onesource restore" in text, (command, text)
    catalog.write_bytes(keep)

    moved = settings.home.rename(tmp_path / "elsewhere")  # a removed home
    for command in COMMANDS:
        proc = onesource(settings, *command)
        text = said(proc)
        assert proc.returncode == 1 and names(text, settings.home), (command, text)
        assert "onesource restore" in text and not settings.home.exists(), (command, text)
    moved.rename(settings.home)
    assert onesource(settings, "status").returncode == 0


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_of_a_running_server_fails_when_its_catalog_is_truncated_or_its_home_removed(home_with_a_table,
                                                                                             tmp_path):
    settings = home_with_a_table
    http_port, pg_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], cwd=REPO, env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(http_port, proc)
        url = f"http://127.0.0.1:{http_port}/healthz"
        status, body = _get(url)
        assert status == 200 and body["status"] == "ok", body
        catalog = Path(settings.lake.catalog.removeprefix("sqlite:"))
        keep = catalog.read_bytes()
        os.truncate(catalog, len(keep) // 2 + 1000)
        status, body = _get(url)
        assert status == 503 and "catalog.sqlite is truncated" in body["reason"], body
        catalog.write_bytes(keep)
        assert _get(url)[0] == 200
        moved = settings.home.rename(tmp_path / "elsewhere")
        status, body = _get(url)
        assert status == 503 and body["reason"] == "the home is missing", body
        moved.rename(settings.home)
        assert _get(url)[0] == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]
