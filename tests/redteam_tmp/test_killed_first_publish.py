"""Red-team: a load SIGKILLed inside its publish transaction, on a SQLite-catalog lake that has never committed a
data file (a new lake, or one whose loads were all small enough to be inlined), leaves the uncommitted Parquet
file DuckLake already wrote under data/shared/<dataset>/. From then on lakehouse.guard refuses to open the lake
("a new catalog that never held a data file (it replaced the lake's catalog)") for every dataset, and tells the
operator to restore a backup or move the landing zone aside. Expected: the re-run publishes the file once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.helpers import csv_text, drop, load, rows, write_registry

from core.config import Settings
from schemas.formats import org_code_check_char, uscc_check_char

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _codes(n: int) -> list[str]:
    out = []
    for i in range(n):
        org = f"{i:08d}"
        body = ("91330106" + org + org_code_check_char(org))[:17]
        out.append(body + uscc_check_char(body))
    return out


KILLED = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import lakehouse.commit as C
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)   # inside the publish transaction, after INSERT wrote its file
    C._record_rows = die
    from tests.helpers import load
    from core.config import Settings
    load(Settings.from_env())
""")


def test_load_killed_in_its_first_data_file_publish_can_be_rerun(tmp_path):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text([(c, f"firm {i}", "1", "100", "3", "2020-01-01")
                                               for i, c in enumerate(_codes(2000))]))
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home), "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", KILLED.format(root=ROOT)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == -9, out.stderr[-2000:]
    leftovers = list((settings.home / "lake" / "data" / "shared").rglob("*.parquet"))
    assert leftovers, "DuckLake wrote the batch's file before the commit"

    [result] = load(settings)  # today: CatalogLostError from lakehouse.guard._check_contents
    assert result.status == "published", result.message
    assert rows(settings, "SELECT count(*) FROM ops.loads WHERE status = 'published'") == [(1,)]
