"""Key rotation (sharing.security.keys, sharing.audit): the audit chain verifies across rotations made while
other writers hold the old key, tampering on either side of a rotation is still caught, backup and restore
carry the keyring; an encrypted lake's current files all get new keys, older snapshots keep theirs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import Lake
from onesource.backup import backup, restore
from onesource.cli import main
from sharing import audit as audit_module
from sharing.audit import ROTATION, Anchor, AuditLog, fingerprint, keyring_file, read_key, read_keyring, verify
from sharing.security.keys import current_file_keys, rotate_lake_keys
from tests.helpers import USCC, csv_text, drop, load, rows, write_registry


def writer(folder: Path) -> AuditLog:
    """One process's log object (three of them on one folder stand for three processes)."""
    return AuditLog(folder / "audit", key_file=folder / "keys" / "audit.key",
                    anchor=Anchor(f"sqlite:{folder / 'lake' / 'catalog.sqlite'}"))


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def rewrite(log: AuditLog, new: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in new), encoding="utf-8")


STEPS = st.lists(st.sampled_from(["a", "b", "rotate"]), min_size=1, max_size=12)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, where=st.floats(0, 1))
def test_generated_appends_and_rotations_verify_and_any_edit_is_caught(tmp_path_factory, steps, where):
    """Writers a and b (each with the key it read cached) append, c rotates, in any order: every entry is
    signed with the key the chain names at that point, verify passes; an edit of any one entry, before or after
    a rotation, is caught at that entry."""
    folder = tmp_path_factory.mktemp("keys")
    logs = {"a": writer(folder), "b": writer(folder), "c": writer(folder)}
    logs["a"].append(kind="test", n=0)
    rotations = 0
    for i, step in enumerate(steps, start=1):
        if step == "rotate":
            old, new = logs["c"].rotate_key(kind="security", user="op", decision="admin")
            assert old != new
            rotations += 1
        else:
            logs[step].append(kind="test", n=i)
    for log in logs.values():
        log.sync()
    verdict = verify(logs["a"])
    assert verdict.ok, verdict.reason
    assert verdict.entries == len(steps) + 1
    entries = logs["a"].entries()
    assert sum(e.get("action") == ROTATION for e in entries) == rotations
    assert len(read_keyring(logs["a"].key_file)) == (rotations + 1 if rotations else 0)
    # the chain's last key is the key file's
    if rotations:
        assert fingerprint(read_key(logs["a"].key_file)) == [e for e in entries if e.get("action") == ROTATION][-1]["next_key"]
    text = lines(logs["a"])
    victim = min(int(where * len(text)), len(text) - 1)
    edited = json.loads(text[victim])
    edited["n" if "n" in edited else "user"] = "forged"
    rewrite(logs["a"], [*text[:victim], json.dumps(edited, ensure_ascii=False), *text[victim + 1:]])
    verdict = verify(logs["a"])
    assert not verdict.ok and verdict.first_bad == victim + 1, verdict


def test_a_forged_rotation_and_a_replaced_key_are_caught(tmp_path):
    log = writer(tmp_path)
    for i in range(3):
        log.append(kind="test", n=i)
    log.rotate_key(kind="security", user="op")
    log.append(kind="test", n=9)
    log.sync()
    assert verify(log).ok
    good = lines(log)
    # the rotation entry made to name a key of the adversary's: they cannot sign it with the old key
    entry = json.loads(good[3])
    entry["next_key"] = fingerprint(b"\x01" * 32)
    rewrite(log, [*good[:3], json.dumps(entry), *good[4:]])
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 4
    rewrite(log, good)
    # the key file replaced by another key (the keyring untouched): the last rotation names another key
    key_before = log.key_file.read_text()
    log.key_file.write_text(("ab" * 32) + "\n")
    verdict = verify(log)
    assert not verdict.ok and "was replaced" in verdict.reason
    log.key_file.write_text(key_before)
    assert verify(log).ok
    # the keyring lost: the entries before the rotation cannot be checked, and verify says what to restore
    ring = keyring_file(log.key_file).read_text()
    keyring_file(log.key_file).unlink()
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 1
    keyring_file(log.key_file).write_text(ring)
    assert verify(log).ok


def test_a_rotation_cut_short_is_completed_by_the_next_append(tmp_path, monkeypatch):
    """Killed after the rotation entry was written, before the key file was replaced: verify notes it, the next
    append (any process) installs the key the entry names from the keyring and signs with it."""
    log = writer(tmp_path)
    log.append(kind="test", n=1)
    old_key = read_key(log.key_file)

    def crash(path, key):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(audit_module, "_install_key", crash)
    with pytest.raises(KeyboardInterrupt):
        log.rotate_key(kind="security", user="op")
    monkeypatch.undo()
    assert read_key(log.key_file) == old_key
    verdict = verify(log)
    assert verdict.ok and any("cut short" in note for note in verdict.notes), verdict
    other = writer(tmp_path)
    other.append(kind="test", n=3)
    other.sync()
    assert read_key(log.key_file) != old_key
    assert fingerprint(read_key(log.key_file)) == other.entries()[1]["next_key"]
    verdict = verify(other)
    assert verdict.ok and not any("cut short" in note for note in verdict.notes), verdict


def test_backup_and_restore_carry_the_keyring(tiny, tmp_path, monkeypatch, capsys):
    drop(tiny, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    log = AuditLog.of(tiny)
    log.append(kind="test", n=1)
    assert main(["security", "rotate-keys", "--reason", "drill", "--by", "op"]) == 0
    out = capsys.readouterr().out
    assert "audit key rotated" in out and "the lake is not encrypted" in out and "only the audit key" in out
    log.append(kind="test", n=2)  # this process held the old key: it follows the rotation
    log.close()
    assert verify(AuditLog.of(tiny)).ok
    backup(tiny, tmp_path / "bk")
    assert (tmp_path / "bk" / "keys" / "audit.keyring").exists()
    other = Settings(home=tmp_path / "restored" / "home")
    report = restore(tmp_path / "bk", other)
    assert any(note.startswith("audit log verified") for note in report.notes), report.notes
    assert read_keyring(other.audit_key_file) == read_keyring(tiny.audit_key_file)
    entries = AuditLog.of(other).entries()
    rotation = next(e for e in entries if e.get("action") == ROTATION)
    assert rotation["user"] == "op" and rotation["reason"] == "drill" and rotation["kind"] == "security"


def test_an_encrypted_lake_gets_new_keys_for_every_current_file(tmp_path):
    """After the rotation no current file has a key it had before; answers are the same; the files hold no
    plaintext; a snapshot from before still reads (its files, and keys, are kept until maintenance)."""
    plain = Settings(home=tmp_path / "home")
    settings = dataclasses.replace(plain, lake=dataclasses.replace(plain.lake, encrypted=True))
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    query = "SELECT * FROM shared.firms ORDER BY uscc"
    answer = rows(settings, query)
    log = AuditLog.of(settings)
    with Lake(settings.lake) as lake:
        before_keys = current_file_keys(lake)
        before = lake.con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        done = rotate_lake_keys(lake, by="op", audit=log)
        after_keys = current_file_keys(lake)
    assert done.encrypted and "shared.firms" in done.tables and done.rows >= len(USCC)
    assert before_keys and after_keys and not before_keys & after_keys
    assert rows(settings, query) == answer
    with Lake(settings.lake, as_of=before) as then:
        assert then.con.execute(query).fetchall() == answer
    for path in (tmp_path / "home" / "lake" / "data").rglob("*.parquet"):
        for value in USCC:
            assert value.encode() not in path.read_bytes()
    actions = [e["action"] for e in log.entries() if e.get("kind") == "security"]
    assert actions == ["rotate-lake-keys", "rotated-lake-keys"]
    assert verify(log).ok
