"""The audit log against a capable adversary (who can rewrite the home's files, not read the key) and
against crashes: keyed entries, the head anchored beside the lake catalog, appends that resume after a
SIGKILL at any point, several processes at once."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import REPO_ROOT, Settings, default_audit_key_file
from lakehouse import Lake
from onesource.cli import main
from sharing import audit as audit_module
from sharing.audit import AuditError, AuditLog, verify
from sharing.exceptions import QueryRefused
from sharing.sql import run_sql


def fill(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append(department="tax", user="li", decision="allowed", tables=["firms"], rows=i,
                   sql_sent=f"SELECT {i} FROM shared.firms")


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def rewrite(log: AuditLog, new: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in new), encoding="utf-8")


@pytest.fixture
def log(settings: Settings) -> AuditLog:
    log = AuditLog.of(settings)
    fill(log, 6)
    return log


def test_key_is_kept_outside_the_home_private_and_per_home(settings, tmp_path, log):
    key = settings.audit_key_file
    assert key.exists() and not key.is_relative_to(settings.home)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    other = Settings(home=tmp_path / "other-home")
    assert other.audit_key_file != key and other.audit_key_file.parent == key.parent
    assert Settings.from_env({"ONESOURCE_HOME": str(settings.home), "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"]}
                             ).audit_key_file == key == default_audit_key_file(settings.home)
    assert Settings.from_env({"ONESOURCE_HOME": str(settings.home), "ONESOURCE_AUDIT_KEY": str(tmp_path / "k")}
                             ).audit_key_file == tmp_path / "k"
    assert verify(log).ok and verify(log).entries == 6
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4, 5, 6]
    # the head is anchored beside the catalog (not inside the catalog file DuckLake's own SQLite opens)
    assert log.anchor.path == settings.home / "lake" / "catalog.audit-anchor.sqlite"
    [row] = log.anchor.rows()
    assert (row.seq, row.hash) == (6, log.entries()[-1]["hash"])


def test_an_edit_is_caught_even_with_every_later_hash_recomputed(log, tmp_path):
    """The adversary edits entry 3 and re-signs 3..6 with a key of their own (they cannot read ours)."""
    forged = AuditLog(tmp_path / "forger", key_file=tmp_path / "forger.key")
    fill(forged, 1)  # creates the forger's own key
    their_key = audit_module.read_key(forged.key_file)
    entries = log.entries()
    entries[2]["rows"] = 999
    for i in range(2, len(entries)):
        entries[i]["prev"] = entries[i - 1]["hash"]
        entries[i]["hash"] = audit_module._mac(their_key, entries[i])
    rewrite(log, [json.dumps(e, ensure_ascii=False) for e in entries])
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 3 and "entry seq 3 (line 3) was edited" in verdict.reason


def test_the_old_unkeyed_chain_recomputed_is_named_as_such(log):
    import hashlib

    entries = log.entries()
    prev = audit_module.GENESIS
    for e in entries:
        e["prev"] = prev
        e["hash"] = prev = hashlib.sha256(audit_module._canonical(e)).hexdigest()
    rewrite(log, [json.dumps(e, ensure_ascii=False) for e in entries])
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 1 and "unkeyed (sha256)" in verdict.reason


def test_a_truncated_tail_is_caught_even_with_the_head_rewritten(log):
    kept = lines(log)[:4]
    rewrite(log, kept)
    (log.folder / "audit.head").write_text(f"4 {json.loads(kept[-1])['hash']}")  # what the old design trusted
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 5
    assert "the log ends at entry 4 but the anchor" in verdict.reason and "records 6" in verdict.reason
    assert "removed from the end" in verdict.reason


def test_an_anchor_moved_back_without_the_key_is_caught(log):
    rewrite(log, lines(log)[:4])
    h4 = log.entries()[-1]["hash"]
    with sqlite3.connect(log.anchor.path) as con:
        con.execute("UPDATE onesource_audit_anchor SET seq = 4, hash = ?", [h4])
    verdict = verify(log)
    assert not verdict.ok and "was forged" in verdict.reason


def test_a_removed_anchor_is_caught_once_the_log_is_not_new(log, monkeypatch):
    rewrite(log, lines(log)[:4])
    log.anchor.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(log.anchor.path) + suffix).unlink(missing_ok=True)
    assert verify(log).ok and "not anchored yet" in verify(log).notes[0]  # a minute's grace: a new log
    monkeypatch.setattr(audit_module, "ANCHOR_GRACE", audit_module.dt.timedelta(0))
    verdict = verify(log)
    assert not verdict.ok and "holds no row for this log" in verdict.reason


def test_a_deleted_log_is_caught(log, settings):
    log.path.unlink()
    verdict = verify(log)
    assert not verdict.ok and "the audit log is gone" in verdict.reason and "another log of 6 entries" in verdict.reason
    fill(log, 2)  # a server writing on: a new log, and the deletion is still seen
    verdict = verify(AuditLog.of(settings))
    assert not verdict.ok and "the log holds 2 entries" in verdict.reason and "deleted or replaced" in verdict.reason


def test_a_deleted_log_and_key_are_caught(log, settings):
    log.path.unlink()
    settings.audit_key_file.unlink()
    verdict = verify(AuditLog.of(settings))
    assert not verdict.ok and "missing key and log" in verdict.reason and "6 entries" in verdict.reason
    fill(AuditLog.of(settings), 1)  # starts over with a new key: the old log's anchor row still speaks
    verdict = verify(AuditLog.of(settings))
    assert not verdict.ok and "signed with another key" in verdict.reason


def test_a_missing_key_fails_verify_and_appends_and_is_never_recreated(log, settings, capsys, monkeypatch):
    settings.audit_key_file.unlink()
    verdict = verify(AuditLog.of(settings))
    assert not verdict.ok and verdict.reason.startswith("missing key") and str(settings.audit_key_file) in verdict.reason
    with pytest.raises(AuditError, match="missing key"):
        fill(AuditLog.of(settings), 1)
    assert not settings.audit_key_file.exists() and len(lines(log)) == 6
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().err
    assert "missing key" in out and str(settings.audit_key_file.name) in out


def test_a_torn_last_line_is_no_entry_and_the_next_append_cuts_it(log):
    whole = log.path.read_bytes()
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq": 7, "at": "2026-')  # a writer killed mid-append
    verdict = verify(log)
    assert verdict.ok and verdict.entries == 6 and "torn line" in verdict.notes[0]
    assert len(log.entries()) == 6
    fill(log, 1)
    assert log.path.read_bytes().startswith(whole) and [e["seq"] for e in log.entries()] == list(range(1, 8))
    assert verify(log).ok and verify(log).notes == ()


def test_a_log_of_the_earlier_unkeyed_format_is_archived_and_the_usage_sync_goes_on(settings):
    import hashlib

    from sharing.audit import sync_to_lake

    folder = settings.home / "audit"
    folder.mkdir(parents=True)
    prev, old = audit_module.GENESIS, []
    for i in range(1, 4):
        e = {"seq": i, "at": audit_module.dt.datetime.now(audit_module.dt.UTC).isoformat(), "department": "tax",
             "user": "li", "decision": "allowed", "tables": ["firms"], "rows": i, "prev": prev}
        e["hash"] = prev = hashlib.sha256(audit_module._canonical(e)).hexdigest()
        old.append(json.dumps(e, ensure_ascii=False))
    log = AuditLog.of(settings)
    rewrite(log, old)
    (folder / "audit.head").write_text(f"3 {prev}")
    with Lake(settings.lake) as lake:
        assert sync_to_lake(lake, log) == 3
    verdict = verify(log)
    assert not verdict.ok and "earlier unkeyed (sha256) format" in verdict.reason
    fill(log, 2)  # no key yet and an unkeyed log: it is kept aside, and a keyed log begins
    [archived] = folder.glob("audit.log.unkeyed-*")
    assert archived.read_text().splitlines() == old and not (folder / "audit.head").exists()
    verdict = verify(AuditLog.of(settings))
    assert verdict.ok and verdict.entries == 2 and "earlier unkeyed format" in verdict.notes[0]
    with Lake(settings.lake) as lake:
        assert sync_to_lake(lake, log) == 2
        assert sync_to_lake(lake, log) == 0
        fill(log, 1)
        assert sync_to_lake(lake, log) == 1
        assert lake.con.execute("SELECT list(rows ORDER BY event_at) FROM ops.audit_events").fetchone()[0] == \
            [1, 2, 3, 0, 1, 0]


def test_a_damaged_line_in_the_middle_fails(log):
    new = lines(log)
    new[3] = new[3][:40]
    rewrite(log, new)
    verdict = verify(log)
    assert not verdict.ok and verdict.first_bad == 4 and "not a JSON entry" in verdict.reason
    with pytest.raises(AuditError):  # and a damaged last line stops appends (nothing is recorded blind)
        rewrite(log, lines(log)[:3] + ["garbage"])
        fill(log, 1)


def test_group_commit_anchors_on_flush(settings):
    log = AuditLog.of(settings, group_commit=0.05)
    fill(log, 20)
    deadline = time.time() + 5
    while (rows := log.anchor.rows()) == [] or rows[0].seq < 20:
        assert time.time() < deadline, rows
        time.sleep(0.02)
    assert verify(log).ok


def test_cli_verify_passes_and_operator_sql_is_audited(settings, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    with Lake(settings.lake):
        pass  # an empty lake: zones and ops tables
    assert main(["audit", "verify"]) == 0 and "intact: 0 entries" in capsys.readouterr().out
    assert main(["sql", "--format", "csv", "SELECT count(*) AS n FROM ops.loads"]) == 0
    assert main(["sql", "DELETE FROM ops.loads"]) == 1
    assert main(["sql", "SELECT * FROM shared.nope"]) == 1
    with pytest.raises(QueryRefused):
        run_sql(settings, "SELECT 1; SELECT 2", user="wang")
    entries = AuditLog.of(settings).entries()
    assert [(e["department"], e["decision"]) for e in entries] == [
        ("operator", "allowed"), ("operator", "refused"), ("operator", "failed"), ("operator", "refused")]
    first = entries[0]
    assert first["sql_sent"] == "SELECT count(*) AS n FROM ops.loads" and first["rows"] == 1
    assert first["relations"] == ["ops.loads"] and first["tables"] == []  # not a department's usage
    assert first["user"] == first["os_user"] and entries[-1]["user"] == "wang"
    assert "DELETE was refused" in entries[1]["reason"]
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0 and "intact: 4 entries" in capsys.readouterr().out


APPENDER = """
import itertools, sys
from pathlib import Path
from sharing.audit import Anchor, AuditLog
folder, key, catalog, size, group_commit, count = sys.argv[1:]
log = AuditLog(Path(folder), float(group_commit) or None, key_file=Path(key), anchor=Anchor(catalog))
for i in itertools.count(1):
    log.append(department="tax", user="loop", decision="allowed", tables=["firms"], rows=i, sql_sent="x" * int(size))
    if i == 1:
        print("ready", flush=True)
    if i == int(count):
        break
log.close()
"""


def appender(settings: Settings, size: int, group_commit: float, count: int = 0) -> subprocess.Popen:
    """A process appending ``count`` entries (0: until killed) to the home's log, as a server would."""
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(settings.home / "audit"),
                             str(settings.audit_key_file), settings.lake.catalog, str(size), str(group_commit),
                             str(count)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)


def test_several_processes_append_to_one_chain(settings):
    procs = [appender(settings, size, gc, count=40) for size, gc in ((50, 0.2), (50, 0), (20_000, 0.05), (50, 0))]
    for p in procs:
        assert p.wait(timeout=120) == 0
    log = AuditLog.of(settings)
    verdict = verify(log)
    assert verdict.ok and verdict.entries == 160, verdict
    assert sorted(e["seq"] for e in log.entries()) == list(range(1, 161))
    assert log.anchor.rows()[0].seq == 160


def test_a_long_lived_log_reads_the_tail_again_after_another_writer(settings):
    """A server's log skips reading the tail it wrote itself, and reads it again once another process (or a
    killed writer's torn line) changed the file; its own threads append through one lock."""
    import threading

    served = AuditLog.of(settings, group_commit=0.05)
    fill(served, 3)
    assert appender(settings, 50, 0.0, count=4).wait(timeout=120) == 0
    threads = [threading.Thread(target=fill, args=(served, 5)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(served.path, "ab") as fh:
        fh.write(b'{"seq": 28, "at": "2026-')  # a writer killed mid-append
    fill(served, 1)
    served.close()
    verdict = verify(served)
    assert verdict.ok and verdict.entries == 28 and verdict.notes == (), verdict
    assert [e["seq"] for e in served.entries()] == list(range(1, 29))


@pytest.mark.parametrize("seed, rounds", [(0, 3), pytest.param(1, 10, marks=pytest.mark.slow),
                                          pytest.param(2, 10, marks=pytest.mark.slow)])
def test_sigkill_at_random_points_never_breaks_the_chain(settings, seed, rounds):
    """Writers (group commit and synchronous, small and 50 kB entries) are killed at random moments, again
    and again, sometimes leaving a torn last line as a kill mid-write (or a power cut) would; each
    restart appends on, and the log verifies."""
    rng = random.Random(seed)
    for _ in range(rounds):
        procs = [appender(settings, rng.choice([100, 50_000]), rng.choice([0.2, 0.0])) for _ in range(2)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        for p in procs:
            time.sleep(rng.uniform(0.0, 0.05))
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stdout.close()
        log = AuditLog.of(settings)
        if rng.random() < 0.5:
            line = (json.dumps(log.entries()[-1]) + "\n").encode()
            with open(log.path, "ab") as fh:
                fh.write(line[: rng.randrange(1, len(line) - 1)])
        verdict = verify(log)
        assert verdict.ok, verdict
    log = AuditLog.of(settings)
    before = len(log.entries())
    fill(log, 3)
    verdict = verify(log)
    assert verdict.ok and verdict.entries == before + 3 and verdict.notes == ()
    seqs = [e["seq"] for e in log.entries()]
    assert seqs == list(range(1, len(seqs) + 1))  # no duplicate, no gap


@pytest.mark.slow
def test_a_serving_process_killed_under_load_leaves_a_log_that_verifies(tiny):
    """`onesource serve`, queried by four HTTP clients at once, SIGKILLed at random moments and restarted."""
    import threading
    import urllib.error
    import urllib.request

    from sharing.users import create_user
    from tests.helpers import csv_text, drop, free_port, load, wait_for_port

    drop(tiny, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    with Lake(tiny.lake) as lake:
        _, token = create_user(lake, "amr", "amr_analyst")
    env = {**os.environ, "ONESOURCE_HOME": str(tiny.home)}
    rng = random.Random(7)
    answered, errors = 0, []
    for _ in range(4):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(port),
                                 "--pg-port", str(free_port())], env=env, cwd=REPO_ROOT,
                                stdout=open(tiny.home / "serve.out", "a"), stderr=subprocess.STDOUT)
        wait_for_port(port, proc)
        stop = threading.Event()

        def ask(port: int = port, timeout: float = 10) -> bool:
            body = json.dumps({"sql": "SELECT count(*) AS n FROM shared.firms"}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/query", data=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status == 200

        def client(stop: threading.Event = stop, ask=ask) -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    answered += ask()
                except (urllib.error.URLError, ConnectionError, OSError) as exc:
                    if isinstance(exc, urllib.error.HTTPError):
                        errors.append(f"{exc.code}: {exc.read()[:300]!r}")
                    return

        assert ask(timeout=120)  # warm (the first query attaches the lake), then under load
        answered += 1

        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for c in clients:
            c.join(timeout=15)
        verdict = verify(AuditLog.of(tiny))
        assert verdict.ok, verdict
    log = AuditLog.of(tiny)
    seqs = [e["seq"] for e in log.entries()]
    assert answered > 0, (errors, (tiny.home / "serve.out").read_text()[-3000:])
    assert len(seqs) >= answered and seqs == list(range(1, len(seqs) + 1))
    assert main_verify(tiny) == 0


def main_verify(settings: Settings) -> int:
    return subprocess.run([sys.executable, "-m", "onesource.cli", "audit", "verify"], cwd=REPO_ROOT,
                          env={**os.environ, "ONESOURCE_HOME": str(settings.home)}).returncode


@pytest.mark.slow
def test_anchor_in_a_postgres_catalog_beside_ducklake(tmp_path):
    """The anchor table lives in the catalog's own PostgreSQL database: DuckLake, created before or after
    it, attaches and loads as usual, and the anchor catches a truncated log."""
    import uuid

    from core.config import LakeSettings

    name = f"onesource_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    log = None
    try:
        catalog = f"postgres:dbname={name} host=127.0.0.1 port=5432 user=postgres"
        settings = Settings(home=tmp_path / "home", lake=LakeSettings(catalog=catalog, data_path=f"{tmp_path}/data/"))
        log = AuditLog.of(settings)
        fill(log, 5)  # the anchor table first, then the lake
        with Lake(settings.lake) as lake:
            lake.con.execute("CREATE TABLE shared.t AS SELECT range AS i FROM range(10)")
            lake.con.execute("INSERT INTO shared.t SELECT 10")
        fill(log, 2)
        with Lake(settings.lake, read_only=True) as lake:
            assert lake.con.execute("SELECT count(*) FROM shared.t").fetchone()[0] == 11
        [row] = log.anchor.rows()
        assert row.seq == 7 and verify(log).ok
        assert not log.path.exists()  # the chain itself is a table of the catalog database (sharing.shared_state)
        subprocess.run([*psql[:5], "-d", name, "-qc", "DELETE FROM onesource_audit_chain WHERE seq > 5"],
                       check=True, capture_output=True)
        verdict = verify(log)
        assert not verdict.ok and "removed from the end" in verdict.reason and "onesource_audit_anchor" in verdict.reason
    finally:
        if log is not None:
            log.close()
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)
