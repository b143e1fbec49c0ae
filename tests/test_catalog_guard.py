"""The lake refuses to be destroyed by accident (issue 17 item 2), and moves with its home.

A catalog that is missing, empty, truncated or replaced beside an existing lake's data is refused with the
remedy, and nothing is written; a genuinely new home still creates its lake. The embedded catalog runs in
WAL mode, and a copied home opens and loads where it now is.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from core.config import Settings
from lakehouse import Lake
from lakehouse import commit as publish_module
from lakehouse.exceptions import CatalogLostError, LakeCatalogError
from onesource.cli import main
from tests.helpers import ROWS, USCC, csv_text, drop, load, rows, shared_count, uscc_codes


@pytest.fixture
def loaded(tiny: Settings, monkeypatch) -> Settings:
    monkeypatch.setattr(publish_module, "ADOPT_ROWS", 1)  # the batch is adopted as a file, as large loads are
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    return tiny


def catalog(settings: Settings) -> Path:
    return Path(settings.lake.catalog.removeprefix("sqlite:"))


def data_files(settings: Settings) -> list[Path]:
    return sorted(p for p in Path(settings.lake.data_path).rglob("*") if p.is_file())


def assert_refused(settings: Settings, problem: str) -> None:
    """Every way in refuses, names the catalog and the remedy, and changes nothing."""
    before = (catalog(settings).read_bytes() if catalog(settings).exists() else None, data_files(settings))
    for read_only in (False, True):
        with pytest.raises(CatalogLostError) as caught:
            Lake(settings.lake, read_only=read_only)
        text = str(caught.value)
        assert str(catalog(settings)) in text and problem in text, text
        assert "onesource restore" in text and "Nothing was changed" in text
    drop(settings, "amr/firms/2.csv", csv_text([*ROWS[:2], (USCC[2], "新企业", "1", "1", "1", "2021-01-01")]))
    with pytest.raises(CatalogLostError):
        load(settings)
    after = (catalog(settings).read_bytes() if catalog(settings).exists() else None, data_files(settings))
    assert after == before  # no new catalog, no file touched


def test_a_new_home_creates_its_lake_and_runs_it_in_wal_mode(tiny):
    assert not catalog(tiny).exists()
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    assert catalog(tiny).read_bytes()[18:20] == b"\x02\x02"  # WAL, persistent in the file
    assert shared_count(tiny, "firms") == 3


def test_a_zero_length_catalog_beside_a_new_home_is_a_new_lake(tiny):
    catalog(tiny).parent.mkdir(parents=True)
    catalog(tiny).touch()
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]


def test_reading_a_home_with_no_lake_says_so(tiny):
    with pytest.raises(LakeCatalogError, match="no lake at .* yet: nothing has been loaded"):
        Lake(tiny.lake, read_only=True)


def test_a_zero_length_catalog_is_refused(loaded):
    catalog(loaded).write_bytes(b"")
    assert_refused(loaded, "is empty (0 bytes)")


def test_a_missing_catalog_is_refused(loaded):
    catalog(loaded).unlink()
    assert_refused(loaded, "is missing")


def test_a_truncated_catalog_is_refused(loaded):
    data = catalog(loaded).read_bytes()
    catalog(loaded).write_bytes(data[: len(data) // 2])
    assert_refused(loaded, "is truncated")
    catalog(loaded).write_bytes(data[: len(data) // 2 + 1000])  # not even whole pages
    assert_refused(loaded, "is truncated")


def test_a_catalog_overwritten_with_other_bytes_is_refused(loaded):
    catalog(loaded).write_bytes(b"not a database at all\n" * 100)
    assert_refused(loaded, "is not a SQLite database")


def test_a_catalog_replaced_by_an_empty_sqlite_database_is_refused(loaded):
    catalog(loaded).unlink()
    with sqlite3.connect(catalog(loaded)) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    db.close()
    with pytest.raises(CatalogLostError, match="holds no DuckLake catalog"):
        load(loaded)


def test_a_catalog_replaced_by_a_new_lake_is_refused(loaded, tmp_path):
    other = Settings(home=tmp_path / "other")
    with Lake(other.lake):
        pass  # a brand-new, empty lake
    shutil.copyfile(catalog(other), catalog(loaded))
    with pytest.raises(CatalogLostError, match="a new catalog that never held a data file"):
        load(loaded)


def test_another_lakes_catalog_is_refused(loaded, tmp_path, monkeypatch):
    other = Settings(home=tmp_path / "other")
    shutil.copytree(loaded.registry_dir, other.registry_dir)
    drop(other, "amr/firms/1.csv", csv_text(ROWS[:2]))
    assert [r.status for r in load(other)] == ["published"]
    shutil.copyfile(catalog(other), catalog(loaded))
    with pytest.raises(CatalogLostError, match="none of which is in the data folder"):
        load(loaded)


def test_the_cli_refuses_with_the_remedy_and_no_traceback(loaded, monkeypatch, capsys):
    catalog(loaded).write_bytes(b"")
    monkeypatch.setenv("ONESOURCE_HOME", str(loaded.home))
    assert main(["ingest", "firms"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "is empty (0 bytes)" in out.err and "onesource restore" in out.err
    assert catalog(loaded).stat().st_size == 0


def test_an_existing_rollback_journal_catalog_switches_to_wal_on_its_next_write(loaded):
    with sqlite3.connect(catalog(loaded)) as db:
        db.execute("PRAGMA journal_mode = DELETE")
    db.close()
    assert catalog(loaded).read_bytes()[18:20] == b"\x01\x01"
    with Lake(loaded.lake, read_only=True) as lake:  # a reader cannot switch it, and does not need to
        assert lake.con.execute("SELECT count(*) FROM shared.firms").fetchone()[0] == 3
    with Lake(loaded.lake):
        pass
    assert catalog(loaded).read_bytes()[18:20] == b"\x02\x02"


def test_a_copied_home_opens_queries_and_loads_where_it_now_is(loaded, tmp_path, monkeypatch):
    moved = Settings(home=tmp_path / "elsewhere" / "home")
    shutil.copytree(loaded.home, moved.home)
    shutil.rmtree(loaded.home)  # the old place is gone: nothing may still point there
    assert rows(moved, "SELECT count(*) FROM shared.firms") == [(3,)]
    assert rows(moved, "SELECT count(*) FROM ops.loads WHERE status = 'published'") == [(1,)]
    drop(moved, "amr/firms/2.csv", csv_text([*ROWS[:2], (USCC[2], "新企业", "1", "1", "1", "2021-01-01")]))
    assert [r.status for r in load(moved)] == ["published"]
    assert rows(moved, "SELECT count(*) FROM shared.firms") == [(3,)]
    assert not loaded.home.exists()
    assert all(p.is_relative_to(moved.home) for p in data_files(moved))


@pytest.mark.slow
def test_an_empty_postgres_catalog_beside_a_data_path_with_files_is_refused(tiny, tmp_path, monkeypatch):
    import subprocess
    import uuid

    from core.config import LakeSettings

    name = f"onesource_{uuid.uuid4().hex[:8]}"
    run = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*run, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        monkeypatch.setattr(publish_module, "ADOPT_ROWS", 1)  # a file in the data path, not rows inlined
        settings = Settings(home=tiny.home, audit_key_file=tiny.audit_key_file, lake=LakeSettings(
            catalog=f"postgres:dbname={name} host=127.0.0.1 port=5432 user=postgres", data_path=f"{tmp_path}/data/"))
        drop(settings, "amr/firms/1.csv", csv_text())
        assert [r.status for r in load(settings)] == ["published"]  # a new catalog database: created
        assert data_files(settings)
        subprocess.run([*run, f"DROP DATABASE {name} WITH (FORCE)"], check=True, capture_output=True)
        subprocess.run([*run, f"CREATE DATABASE {name}"], check=True, capture_output=True)  # empty again
        with pytest.raises(CatalogLostError, match=f"database .*dbname={name}.* holds no DuckLake catalog"):
            Lake(settings.lake)
        assert subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-Atc",
                               "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
                              capture_output=True, text=True).stdout.strip() == "0"  # nothing created
    finally:
        subprocess.run([*run, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


# -- a load killed inside the lake's first data-file commit: the lake still opens, the re-run publishes once --

KILLED = """
import os, signal, sys
import lakehouse.commit as commit
from core.config import Settings
from tests.helpers import load
commit.ADOPT_ROWS = int(sys.argv[1])
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "in_commit":  # DuckLake has written (or been handed) the batch's file, nothing is committed
    commit._record_rows = killed
else:  # the staged file is moved into the data folder, the transaction not begun
    real = commit._adoptable_path
    def adopted_then_killed(*args, **kwargs):
        path = real(*args, **kwargs)
        commit.Path.replace = lambda self, target: (os.replace(self, target), killed())
        return path
    commit._adoptable_path = adopted_then_killed
load(Settings.from_env())
"""


@pytest.mark.parametrize("adopt_rows, point", [(1, "in_commit"), (1, "adopted"), (10**9, "in_commit")],
                         ids=["adopted file, killed in the commit", "killed once the file is adopted",
                              "inserted rows (beyond inlining), killed in the commit"])
def test_a_load_killed_in_the_lakes_first_data_file_commit_is_loaded_again(tiny, adopt_rows, point):
    """DuckLake writes a batch's file before its commit, so a load killed there leaves a file in the data folder
    of a catalog that never held one: what a catalog that replaced the lake's looks like, except that the file
    is newer than the catalog. The lake must open (the file is maintenance's orphan) and the re-run publish."""
    import os
    import subprocess
    import sys

    drop(tiny, "amr/firms/1.csv", csv_text([(code, f"长沙企业{i}", "1", "100", "3", "2020-01-01")
                                           for i, code in enumerate(uscc_codes(2000))]))
    env = {**os.environ, "ONESOURCE_HOME": str(tiny.home), "PYTHONPATH": str(Path(__file__).parent.parent)}
    killed = subprocess.run([sys.executable, "-c", KILLED, str(adopt_rows), point], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list((tiny.home / "lake" / "data" / "shared").rglob("*.parquet")), "the killed load left its file"
    assert [(r.status, r.rows) for r in load(tiny)] == [("published", 2000)]
    assert rows(tiny, "SELECT count(*) FROM ops.loads WHERE status = 'published'") == [(1,)]
    assert shared_count(tiny, "firms") == 2000
