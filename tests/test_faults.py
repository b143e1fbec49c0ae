"""A load killed mid-commit publishes nothing; parallel loads from separate processes all publish."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor

from tests.helpers import csv_text, drop, firms_dataset, load, rows, shared_count, write_registry
from tests.support.faults import load_in_process

KILL_BEFORE_COMMIT = textwrap.dedent("""
    import os, signal, sys
    from lakehouse import lake as lakemod
    from tests.helpers import load
    from core.config import Settings

    original = lakemod.Lake.commit_message

    def commit_then_die(self, message, extra):
        original(self, message, extra)
        if message.startswith("publish"):   # inside the publish transaction, rows already inserted
            os.kill(os.getpid(), signal.SIGKILL)

    lakemod.Lake.commit_message = commit_then_die
    load(Settings(home=sys.argv[1]))
""")


def test_killed_mid_commit_publishes_nothing_and_rerun_publishes_once(tiny):
    raw = drop(tiny, "amr/firms/a.csv", csv_text())
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_COMMIT, str(tiny.home)], cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert shared_count(tiny, "firms") in (None, 0)
    assert rows(tiny, "SELECT count(*) FROM ops.loads") == [(0,)]
    assert raw.exists() and len(list((tiny.landing_dir / "firms").glob("*.csv"))) == 1  # raw kept
    assert [(r.status, r.rows) for r in load(tiny)] == [("published", 3)]
    assert [r.status for r in load(tiny)] == ["unchanged"]
    assert rows(tiny, "SELECT count(*) FROM shared.firms") == [(3,)]
    assert rows(tiny, "SELECT status, count(*) FROM ops.loads GROUP BY ALL") == [("published", 1)]


def test_parallel_loads_from_separate_processes_all_publish(settings):
    names = [f"firms_{i}" for i in range(4)]
    datasets = [firms_dataset()] + [
        firms_dataset(name=n, connector={"kind": "file", "path": f"amr/{n}/*.csv", "format": "csv"}) for n in names]
    write_registry(settings.registry_dir, datasets)
    for n in names:
        drop(settings, f"amr/{n}/a.csv", csv_text())
    from lakehouse import Lake

    Lake(settings.lake).close()  # the lake exists; the four loads then race to create their tables
    # spawned, not forked: a fork inherits DuckDB's and Arrow's thread pools mid-state (see test_faults_slow)
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(load_in_process, [str(settings.home)] * 4, names))
    assert results == [[("published", 3)]] * 4
    for n in names:
        assert shared_count(settings, n) == 3
    assert rows(settings, "SELECT count(*) FROM ops.loads WHERE status = 'published'") == [(4,)]
