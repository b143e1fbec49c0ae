"""Backup and restore (issue 17 item 3): `onesource backup DEST` / `onesource restore SRC --home PATH`.

A backup taken while the lake is written restores to another path with the same answers, the audit log
verifies there with its key put back where the new home wants it, and a damaged backup is refused before
anything is written, naming the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.config import Settings
from lakehouse import commit as publish_module
from onesource.cli import main
from sharing.audit import AuditLog, verify
from tests.helpers import ROWS, USCC, csv_text, drop, load, rows

QUERIES = ("SELECT * FROM shared.firms ORDER BY uscc",
           "SELECT load_id, status, sha256, rows_published FROM ops.loads ORDER BY load_id",
           "SELECT user_name, department, token_sha256 FROM ops.users ORDER BY 1",
           "SELECT snapshot_id FROM lake.snapshots() ORDER BY 1")


@pytest.fixture
def home(tiny: Settings, monkeypatch) -> Settings:
    """A home with two loads (the batches adopted as files, as large ones are), a user, and audited queries."""
    monkeypatch.setattr(publish_module, "ADOPT_ROWS", 1)
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    drop(tiny, "amr/firms/2.csv", csv_text([*ROWS[:2], (USCC[2], "新企业", "1", "1", "1", "2021-01-01")]))
    assert [r.status for r in load(tiny)] == ["published"]
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    from lakehouse import Lake
    from sharing.users import create_user

    with Lake(tiny.lake) as lake:
        create_user(lake, "tax", "tax_analyst")
    for _ in range(3):
        assert main(["sql", "--as", "tax", "SELECT count(*) FROM shared.firms"]) == 0
    assert verify(AuditLog.of(tiny)).ok
    return tiny


def answers(settings: Settings) -> list:
    return [rows(settings, q) for q in QUERIES]


def test_backup_restores_to_another_path_with_the_same_answers_and_a_verifying_audit_log(home, tmp_path,
                                                                                          monkeypatch, capsys):
    before = answers(home)
    dest = tmp_path / "backups" / "monday"
    assert main(["backup", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "keys/audit.key" in out and str(home.audit_key_file) in out
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert {"lake/catalog.sqlite", "audit/audit.log", "keys/audit.key"} <= set(manifest["files"])
    assert any(f.startswith("lake/data/shared/firms/") for f in manifest["files"])
    assert any(f.startswith("landing/firms/") for f in manifest["files"])
    assert not any(f.startswith(("staging/", "cache/")) for f in manifest["files"])

    new = tmp_path / "restored" / "home"
    assert main(["restore", str(dest), "--home", str(new)]) == 0
    out = capsys.readouterr().out
    assert "audit log verified" in out
    restored = Settings.from_env({"ONESOURCE_HOME": str(new), "XDG_CONFIG_HOME": str(Path(
        str(home.audit_key_file)).parents[2])})
    assert restored.audit_key_file != home.audit_key_file  # the new home's own key place
    assert restored.audit_key_file.read_bytes() == home.audit_key_file.read_bytes()
    assert answers(restored) == before
    verdict = verify(AuditLog.of(restored))
    assert verdict.ok and verdict.entries == 3, verdict
    # the raw extracts keep their read-only mode; the restored home is a working home
    raw = next((new / "landing" / "firms").glob("*.csv"))
    assert raw.stat().st_mode & 0o777 == 0o400
    drop(restored, "amr/firms/3.csv", csv_text(ROWS[:2]))
    assert [r.status for r in load(restored)] == ["published"]
    monkeypatch.setenv("ONESOURCE_HOME", str(new))
    assert main(["sql", "--as", "tax", "SELECT count(*) FROM shared.firms"]) == 0
    assert verify(AuditLog.of(restored)).ok
    assert answers(home) == before  # the original was only read


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_backup_is_refused_naming_the_file_and_nothing_is_written(home, tmp_path, damage, capsys):
    dest = tmp_path / "backup"
    assert main(["backup", str(dest)]) == 0
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    victim = dest / next(f for f in manifest["files"] if f.startswith("lake/data/"))
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-10])
    else:
        victim.unlink()
    capsys.readouterr()
    new = tmp_path / "restored"
    assert main(["restore", str(dest), "--home", str(new)]) == 1
    err = capsys.readouterr().err
    assert "the backup is damaged" in err and victim.name in err, err
    assert "Traceback" not in err
    assert not (new / "lake").exists() and not (new / "landing").exists()


def test_restore_refuses_a_home_that_is_not_empty_and_a_folder_that_is_no_backup(home, tmp_path, capsys):
    dest = tmp_path / "backup"
    assert main(["backup", str(dest)]) == 0
    capsys.readouterr()
    assert main(["restore", str(dest), "--home", str(home.home)]) == 1
    assert "is not empty" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert main(["restore", str(tmp_path / "nothing"), "--home", str(tmp_path / "h")]) == 1
    assert "not a OneSource backup" in capsys.readouterr().err
    assert main(["backup", str(dest)]) == 1  # never over an existing backup
    assert "not empty" in capsys.readouterr().err


WRITER = textwrap.dedent("""
    import sys, time
    from lakehouse import Lake
    from core.config import Settings
    from sharing.audit import AuditLog
    from sharing.users import create_user
    settings = Settings(home=sys.argv[1])
    log = AuditLog.of(settings)  # every append fsync-ed and anchored, as the CLI's
    i = 0
    with Lake(settings.lake) as lake:
        while True:
            create_user(lake, "amr", f"busy{i}")
            for _ in range(5):
                log.append(department="amr", user="busy", decision="allowed", sql_sent=f"SELECT {i}")
            if i == 0:
                print("writing", flush=True)
            i += 1
""")


def test_a_backup_taken_while_the_lake_is_written_is_one_consistent_state(home, tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home.home)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert main(["backup", str(tmp_path / "backup")]) == 0
    finally:
        writer.kill()
        writer.wait()
    new = tmp_path / "restored"
    assert main(["restore", str(tmp_path / "backup"), "--home", str(new)]) == 0
    restored = Settings(home=new)
    manifest = json.loads((tmp_path / "backup" / "MANIFEST.json").read_text())
    snapshot = manifest["snapshot_id"]
    users = rows(restored, "SELECT count(*) FROM ops.users WHERE user_name LIKE 'busy%'")[0][0]
    # one committed state: the snapshot the manifest names, with exactly the users committed up to it
    assert rows(restored, "SELECT max(snapshot_id) FROM lake.snapshots()") == [(snapshot,)]
    assert rows(home, f"SELECT count(*) FROM ops.users AT (VERSION => {snapshot}) WHERE user_name LIKE 'busy%'") == [
        (users,)]
    assert rows(restored, "SELECT count(*) FROM shared.firms") == [(3,)]
    verdict = verify(AuditLog.of(restored))  # the log was appended to and anchored while it was copied
    assert verdict.ok and verdict.entries > 3, verdict
