"""Integrity and damage (issue 17): a landed file changed after landing is never published, maintenance
refuses to delete files when the catalog looks new or lost, staging keeps no batch of a dead load, and a
damaged home (missing data file, truncated catalog, removed home) gets one paragraph naming the file and
the remedy: from `onesource status`, `onesource doctor` and `/healthz`."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lakehouse import Lake
from lakehouse.maintenance import MaintenanceRefusedError, maintain
from lakehouse.staging import claim, leftovers, sweep
from onesource.cli import main
from tests.helpers import csv_text, drop, firms_dataset, load, rows, shared_count, write_registry
from tests.support.maintenance import extract

REPO = Path(__file__).resolve().parents[1]


def landed_files(settings) -> list[Path]:
    return sorted((settings.landing_dir / "firms").glob("*.csv"))


def rewrite(path: Path, text: str) -> None:
    """What root does to a 0400 file (and what a test that does not run as root must do by hand)."""
    os.chmod(path, 0o600)
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# a. A landed file rewritten after landing is refused, never published under its delivered hash.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("when", ["before standardize", "while validating"])
def test_landed_file_changed_after_landing_is_refused_and_the_delivery_loads_again(tiny, monkeypatch, when):
    import ingest.load as load_module

    delivered = csv_text()
    forged = delivered.replace("杭州", "伪造")  # the same shape, other bytes: standardize and GX accept it
    assert forged != delivered
    drop(tiny, "amr/firms/a.csv", delivered)
    stage = "standardize" if when == "before standardize" else "gather"
    real = getattr(load_module, stage)

    def changing_first(*args, **kwargs):
        [landed] = landed_files(tiny)
        rewrite(landed, forged)
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, stage, changing_first)
    [result] = load(tiny)
    monkeypatch.setattr(load_module, stage, real)

    assert result.status == "failed", result.message
    sha = result.load_id.rsplit("-", 1)[1]
    assert f"landing/firms/{sha}" in result.message and "deliver" in result.message
    assert "nothing was published" in result.message
    assert shared_count(tiny, "firms") is None  # not published, not quarantined
    assert rows(tiny, f"SELECT status, error_stage, starts_with(sha256, '{sha}') FROM ops.loads") == \
        [("failed", "landing", True)]
    aside = list((tiny.landing_dir / "firms").glob("*.changed-*"))
    assert len(aside) == 1 and aside[0].read_text(encoding="utf-8") == forged  # kept as evidence
    assert not any(p.name.endswith(".csv") for p in (tiny.landing_dir / "firms").iterdir())

    # the department's file is still in the drop folder: the next load lands it afresh and publishes it
    [again] = load(tiny)
    assert again.status == "published", again.message
    assert rows(tiny, "SELECT count(*) FROM shared.firms WHERE enterprise_name LIKE '%伪造%'") == [(0,)]
    assert [p.read_text(encoding="utf-8") for p in landed_files(tiny)] == [delivered]


def test_a_changed_file_that_fails_standardize_is_refused_not_quarantined(tiny, monkeypatch):
    """A quarantine would mark the delivered hash as handled, and the real file would never load."""
    import ingest.load as load_module

    drop(tiny, "amr/firms/a.csv", csv_text())
    real = load_module.standardize

    def breaking(*args, **kwargs):
        [landed] = landed_files(tiny)
        rewrite(landed, "统一社会信用代码\n91330106MA2B0C1D68\n")  # a required column gone
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "standardize", breaking)
    [result] = load(tiny)
    assert result.status == "failed" and "changed after it was landed" in result.message
    assert rows(tiny, "SELECT status FROM ops.loads") == [("failed",)]


# ------------------------------------------------------------------------------------------------
# b. Maintenance never deletes data files when the catalog looks new or lost.
# ------------------------------------------------------------------------------------------------

def test_maintenance_refuses_when_the_catalog_is_an_older_copy_and_deletes_nothing(settings):
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append", key=["uscc", "staff"])])
    catalog = Path(settings.lake.catalog.removeprefix("sqlite:"))
    for i in range(3):
        drop(settings, f"amr/firms/{i:02d}.csv", extract(i))
        assert [r.status for r in load(settings)] == ["published"]
        if i == 0:
            shutil.copy2(catalog, settings.home / "catalog-after-first-load.sqlite")
    data = Path(settings.lake.data_path)
    files = sorted(data.rglob("*.parquet"))
    assert len(files) == 3
    # the catalog is replaced by an older copy: two of the three files are not in it
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)
    shutil.copy2(settings.home / "catalog-after-first-load.sqlite", catalog)
    with Lake(settings.lake) as lake:
        with pytest.raises(MaintenanceRefusedError) as refused:
            maintain(lake, retention=dt.timedelta(0), grace=dt.timedelta(0))
        assert "2 of the 3 files" in str(refused.value) and "onesource restore" in str(refused.value)
        assert sorted(data.rglob("*.parquet")) == files  # nothing deleted, nothing merged

        # the same catalog with fewer orphans, but one older than the catalog itself: refused too
        newest = max(files, key=lambda p: p.stat().st_mtime)
        newest.unlink()
        others = [f for f in files if f.exists()]
        old = time.time() - 400 * 86400
        stray = [f for f in others if f.name not in {Path(p).name for p in _known(lake)}]
        os.utime(stray[0], (old, old))
        with pytest.raises(MaintenanceRefusedError, match="older than the catalog's oldest snapshot"):
            maintain(lake, retention=dt.timedelta(0), grace=dt.timedelta(0))
        assert sorted(data.rglob("*.parquet")) == others


def _known(lake) -> list[str]:
    return [r[0] for r in lake.con.execute("SELECT data_file FROM ducklake_list_files('lake', 'firms', "
                                           "schema => 'shared')").fetchall()]


def test_maintenance_refuses_a_catalog_with_no_data_file_next_to_a_data_folder(settings, monkeypatch):
    """A catalog that references no file beside a folder that holds some (what a recreated catalog is); the
    lake's own guard refuses most such catalogs at open, so the check is also called on its own."""
    from lakehouse.maintenance import orphan_refusal

    write_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        assert orphan_refusal(lake) is None  # a new lake, nothing on disk
        stray = Path(settings.lake.data_path) / "shared" / "firms" / "ducklake-old.parquet"
        stray.parent.mkdir(parents=True)
        lake.con.execute(f"COPY (SELECT 1 AS x) TO '{stray}' (FORMAT parquet)")
        assert "references no data file" in orphan_refusal(lake)
        with pytest.raises(MaintenanceRefusedError):
            maintain(lake, retention=dt.timedelta(0), grace=dt.timedelta(0))
    assert stray.exists()


def test_maintenance_still_cleans_a_healthy_lake_and_sweeps_staging(settings):
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append", key=["uscc", "staff"])])
    for i in range(2):
        drop(settings, f"amr/firms/{i:02d}.csv", extract(i))
        load(settings)
    orphan = Path(settings.lake.data_path) / "shared" / "firms" / "ducklake-aborted.parquet"
    with Lake(settings.lake) as lake:
        lake.con.execute(f"COPY (SELECT 1 AS x) TO '{orphan}' (FORMAT parquet)")
        leftover = _dead_load(settings, "firms", "20260101T000000000000-deadbeef")
        report = maintain(lake, retention=dt.timedelta(days=30), grace=dt.timedelta(0), staging=settings.staging_dir)
    assert report.orphans_deleted == 1 and not orphan.exists()
    assert report.staging_removed == 1 and not any(p.exists() for p in leftover)
    assert rows(settings, "SELECT count(*) FROM shared.firms") == [(400,)]


# ------------------------------------------------------------------------------------------------
# c. staging/ keeps no batch of a killed or failed load.
# ------------------------------------------------------------------------------------------------

def _dead_load(settings, dataset: str, load_id: str, age: float = 3600) -> list[Path]:
    """What a load killed mid-validation leaves: its staged batch and its authorities' keys."""
    folder = settings.staging_dir / dataset
    (folder / f"{load_id}.keys").mkdir(parents=True)
    paths = [folder / f"{load_id}.parquet", folder / f"{load_id}.keys" / "uscc.parquet", folder / f"{load_id}.keys"]
    paths[0].write_bytes(b"PAR1")
    paths[1].write_bytes(b"PAR1")
    for p in paths:
        os.utime(p, (time.time() - age, time.time() - age))
    return paths


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lakehouse.staging import claim
    staging, dataset, load_id = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    with claim(staging, dataset, load_id):
        (staging / dataset / f"{load_id}.parquet").write_bytes(b"PAR1")
        print("holding", flush=True)
        time.sleep(600)
""")


def test_sweep_removes_what_dead_loads_left_and_never_a_live_loads_files(settings):
    staging = settings.staging_dir
    killed = _dead_load(settings, "firms", "20260101T000000000000-aaaaaaaa")
    young = _dead_load(settings, "firms", "20260101T000000000001-bbbbbbbb", age=5)  # may still be starting
    procs = {}
    for name in ("live", "killed"):  # two real loading processes of another dataset; one is SIGKILLed
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(staging), "tax", f"20260101T00000000000{len(procs)}-"
                                 f"{name:c<8}"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "holding"
        procs[name] = proc
    procs["killed"].kill()
    procs["killed"].wait()
    try:
        old = time.time() - 3600
        for p in (staging / "tax").iterdir():
            os.utime(p, (old, old))  # both processes' files are old: only the lock tells them apart
        assert {(x.dataset, x.load_id) for x in leftovers(staging)} == {
            ("firms", "20260101T000000000000-aaaaaaaa"), ("tax", "20260101T000000000001-killedcc")}
        removed = sweep(staging)
        assert {x.load_id for x in removed} == {"20260101T000000000000-aaaaaaaa", "20260101T000000000001-killedcc"}
        assert not any(p.exists() for p in killed) and all(p.exists() for p in young)
        assert sorted(p.name for p in (staging / "tax").iterdir()) == [
            "20260101T000000000000-livecccc.lock", "20260101T000000000000-livecccc.parquet"]
    finally:
        procs["live"].kill()
        procs["live"].wait()


def test_each_load_sweeps_staging_first_and_holds_its_own_lock(tiny, monkeypatch):
    import ingest.load as load_module

    leftover = _dead_load(tiny, "firms", "20260101T000000000000-deadbeef")
    drop(tiny, "amr/firms/a.csv", csv_text())
    seen = []
    real = load_module.gather

    def look(*args, **kwargs):
        seen.extend(sorted(p.name for p in (tiny.staging_dir / "firms").iterdir()))
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "gather", look)
    [result] = load(tiny)
    assert result.status == "published"
    assert not any(p.exists() for p in leftover)
    assert [n.split(".", 1)[1] for n in seen] == ["lock", "parquet"]  # the live load's, locked
    assert list((tiny.staging_dir / "firms").iterdir()) == []  # and nothing stays after it


def test_claim_is_released_when_the_process_dies_without_cleaning_up(settings):
    with claim(settings.staging_dir, "firms", "20260101T000000000000-cafecafe"):
        assert leftovers(settings.staging_dir, grace=dt.timedelta(0)) == []
    assert not (settings.staging_dir / "firms" / "20260101T000000000000-cafecafe.lock").exists()


# ------------------------------------------------------------------------------------------------
# d. Damage: status, doctor, /healthz.
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def loaded(settings, monkeypatch):
    """A home with one published table backed by a data file, as the CLI sees it."""
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append", key=["uscc", "staff"])])
    drop(settings, "amr/firms/00.csv", extract(0))
    assert [r.status for r in load(settings)] == ["published"]
    return settings


def test_status_reports_a_table_whose_files_are_gone_as_damaged(loaded, capsys):
    assert main(["status", "--json"]) == 0
    capsys.readouterr()
    [gone] = list(Path(loaded.lake.data_path).rglob("*.parquet"))
    gone.unlink()
    assert main(["status", "--json"]) == 1
    [status] = json.loads(capsys.readouterr().out)
    assert status["damaged"] and status["missing_files"] == [str(gone)]
    assert not status["counted_shared"] and status["sharing_reason"].startswith("damaged")
    assert main(["status"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "damaged" in out and gone.name in out and "onesource restore" in out and "0/1 datasets shared" in out
    assert main(["sql", "SELECT sum(staff) FROM shared.firms"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert gone.name in said and "shared.firms" in said and "onesource restore" in said


def test_doctor_passes_a_sound_home_and_names_each_damage(loaded, capsys):
    assert main(["doctor", "--full"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines()[:7]] == [
        "home", "catalog", "tables", "landing", "audit", "registry", "staging"]
    assert "FAIL" not in out and "7 of 7 checks passed" in out

    [raw] = landed_files(loaded)
    rewrite(raw, "changed")
    _dead_load(loaded, "firms", "20260101T000000000000-deadbeef")
    [gone] = list(Path(loaded.lake.data_path).rglob("*.parquet"))
    gone.unlink()
    assert main(["doctor"]) == 1
    found = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
             if line.split()[:1] in (["ok"], ["warn"], ["FAIL"])}
    assert found["tables"].startswith("FAIL") and gone.name in found["tables"]
    assert found["landing"].startswith("FAIL") and raw.name in found["landing"]
    assert found["staging"].startswith("warn") and "deadbeef" in found["staging"]
    assert found["catalog"].startswith("ok") and found["registry"].startswith("ok")


def test_doctor_and_status_on_a_truncated_catalog(loaded, capsys):
    catalog = Path(loaded.lake.catalog.removeprefix("sqlite:"))
    os.truncate(catalog, catalog.stat().st_size // 2)
    assert main(["doctor"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"FAIL catalog the lake catalog {catalog}" in out and "onesource restore" in out
    assert main(["status"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert str(catalog) in err and "onesource restore" in err


def test_a_removed_home_is_refused_never_recreated(loaded, capsys):
    with Lake(loaded.lake):
        pass
    from sharing.audit import AuditLog

    AuditLog.of(loaded).append(department="operator", user="t", decision="allowed")  # the home's key exists now
    shutil.rmtree(loaded.home)
    for command in (["status"], ["ingest", "firms"], ["sql", "SELECT 1"], ["audit", "verify"]):
        assert main(command) == 1, command
        err = " ".join(capsys.readouterr().err.split())
        assert f"the OneSource home {loaded.home} does not exist" in err and "onesource restore" in err
        assert "was removed or moved" in err
        assert not loaded.home.exists()
    assert main(["doctor"]) == 1
    assert "FAIL home" in " ".join(capsys.readouterr().out.split())


def test_healthz_answers_200_then_503_with_the_reason(loaded):
    from fastapi.testclient import TestClient

    from onesource.serve import create_app
    from schemas import load_registry
    from sharing.engine import GovernedEngine

    engine = GovernedEngine(loaded, load_registry(loaded.registry_dir), persistent=True)
    try:
        with TestClient(create_app(engine)) as client:
            ok = client.get("/healthz")
            assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["snapshot"] > 0
            catalog = Path(loaded.lake.catalog.removeprefix("sqlite:"))
            size = catalog.stat().st_size
            keep = catalog.read_bytes()
            os.truncate(catalog, size // 2 + 100)
            bad = client.get("/healthz")
            assert bad.status_code == 503 and "lake/catalog.sqlite is truncated" in bad.json()["reason"]
            catalog.write_bytes(keep)
            assert client.get("/healthz").status_code == 200
            aside = loaded.home.with_name("moved-away")
            loaded.home.rename(aside)
            try:
                gone = client.get("/healthz")
                assert gone.status_code == 503 and gone.json()["reason"] == "the home is missing"
            finally:
                aside.rename(loaded.home)
            assert "/healthz" not in client.get("/openapi.json").json()["paths"]
    finally:
        engine.close()
