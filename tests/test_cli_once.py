"""`onesource ingest` says each outcome once: the quarantine's reason, a published load's checks and notes.

Defect: the CLI printed a load's outcome and the load's own log records reached stderr too (Python's last-
resort handler, the CLI configured no logging), so every failure and drift note was printed twice, and a
published load's notes appeared only in that stray stderr line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.config import Settings
from tests.helpers import drop, firms_dataset, write_registry
from tests.support.quarantine import delivery

ONESOURCE = str(Path(sys.executable).with_name("onesource"))


def ingest(home: Settings, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONESOURCE_HOME": str(home.home)}
    env.pop("ONESOURCE_DEBUG", None)
    return subprocess.run([ONESOURCE, *extra, "ingest", "firms"], env=env, capture_output=True, text=True, timeout=120)


def test_each_outcome_is_said_once_and_the_log_only_with_debug(tmp_path):
    home = Settings(home=tmp_path / "home")
    write_registry(home.registry_dir, [firms_dataset()])
    drop(home, "amr/firms/a.csv", delivery(100, good=True))
    first = ingest(home)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "published" in first.stdout and "checks" in first.stdout, out  # the load's summary, on stdout
    assert first.stderr.strip() == "", first.stderr
    drop(home, "amr/firms/b.csv", delivery(200, good=False))
    second = ingest(home)
    out = " ".join((second.stdout + second.stderr).split())  # the terminal's wrapping aside
    assert second.returncode == 1 and "quarantined" in second.stdout
    reason = "the shared table keeps its last good snapshot"
    assert out.count(reason) == 1, out
    drop(home, "amr/firms/c.csv", delivery(300, good=False))
    debug = ingest(home, "--debug")
    assert "WARNING onesource.load" in debug.stderr  # the platform's log, asked for
