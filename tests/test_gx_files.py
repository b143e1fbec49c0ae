"""GX's files under a home survive a load killed while writing them (quality.gx_files).

Found by an outside reliability test: a load SIGKILLed while GX rewrote its dataset's suite, validation definition
or checkpoint left the file empty, and every later load of that dataset failed inside GX; the project config
(rewritten twice per load) would have failed every dataset's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from quality import gx_files
from tests.helpers import ROWS, csv_text, drop, load, write_registry

ROOT = Path(__file__).resolve().parent.parent
STORED = ("expectations/onesource/firms.json", "validation_definitions/onesource.firms.json",
          "checkpoints/onesource.firms.json", "great_expectations.yml")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("gx-files") / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/0.csv", csv_text([ROWS[0]]))
    assert [r.status for r in load(settings)] == ["published"]
    return settings


_deliveries = iter(range(1, 10**6))


@hsettings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=st.sampled_from(STORED), cut=st.floats(min_value=0, max_value=0.99))
def test_a_gx_file_cut_short_is_replaced_and_the_next_load_publishes(home, stored, cut):
    """Each file GX rewrites during a load, cut at any byte (what a kill mid-write leaves without the patch)."""
    path = home.gx_project_root / "gx" / stored
    whole = path.read_bytes()
    path.write_bytes(whole[:int(len(whole) * cut)])
    n = next(_deliveries)
    uscc, name, *rest = ROWS[n % len(ROWS)]
    drop(home, f"amr/firms/{n}.csv", csv_text([(uscc, f"{name}{n}", *rest)]))
    [result] = load(home)
    assert result.status == "published", result.message
    assert path.exists() and len(path.read_bytes()) > 0.5 * len(whole)  # written again, whole


KILLED_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from quality.validate import preload_gx
    preload_gx()  # GX imported and patched as a load has it
    from great_expectations.data_context.store import tuple_store_backend
    write = getattr(tuple_store_backend, "open", open)  # the open TupleFilesystemStoreBackend._set writes with
    with write(sys.argv[1], "wb") as out:
        out.write(b'{"name": "half a su')
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_process_killed_while_gx_writes_a_file_leaves_the_old_file(tmp_path):
    target = tmp_path / "suite.json"
    target.write_text('{"name": "the old suite"}')
    out = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(target)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert target.read_text() == '{"name": "the old suite"}'
    assert [p.name for p in tmp_path.iterdir() if gx_files.PARTIAL in p.name], "the part stayed beside it, unread"


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path):
    target = tmp_path / "checkpoint.json"
    target.write_text("{}")
    with pytest.raises(RuntimeError), gx_files._open(target, "w", encoding="utf-8") as out:
        out.write('{"half": ')
        raise RuntimeError("serializing failed halfway")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]
    with gx_files._open(target, "w", encoding="utf-8") as out:
        out.write('{"whole": true}')
    assert target.read_text() == '{"whole": true}' and [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]
    with gx_files._open(target, encoding="utf-8") as read:  # reading is untouched
        assert read.read() == '{"whole": true}'
