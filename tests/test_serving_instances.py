"""Several servers on one lake share their state in the PostgreSQL catalog database (sharing.shared_state):
the audit chain (one chain, keyed, anchored, verifiable), portal sessions and sign-in lockouts. Fast tier:
the stores against the real PostgreSQL on 127.0.0.1:5432, a fresh database per test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import LakeSettings, Settings, SignInSettings
from portal.web import Sessions
from sharing.audit import AuditLog, verify
from sharing.shared_state import CHAIN_TABLE, SessionStore, SignInStore
from sharing.signin import LockedOut, SignInGuard
from sharing.users import User

PG = "host=127.0.0.1 port=5432 user=postgres"
REPO = Path(__file__).resolve().parent.parent


def _admin(sql: str) -> None:
    with psycopg.connect(f"dbname=postgres {PG}", autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def database():
    name = f"onesource_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    yield name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(database):
    """A catalog database of the test's own: a fresh schema first on the search path (a database per test
    cost 2 to 4 s to create and drop on this host; the stores name their tables unqualified)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    sql(f"dbname={database} {PG}", f"CREATE SCHEMA {schema}")
    yield f"dbname={database} {PG} options='-c search_path={schema}'"
    sql(f"dbname={database} {PG}", f"DROP SCHEMA {schema} CASCADE")


def home(tmp_path: Path, dsn: str, name: str = "home") -> Settings:
    return Settings(home=tmp_path / name, lake=LakeSettings(catalog=f"postgres:{dsn}", data_path=f"{tmp_path}/data/"))


def sql(dsn: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# --- the audit chain -------------------------------------------------------------------------------------------


def test_the_chain_lives_in_the_catalog_database_and_verifies(tmp_path, db):
    s = home(tmp_path, db)
    log = AuditLog.of(s)
    try:
        for i in range(5):
            log.append(department="tax", user="li", decision="allowed", sql=f"SELECT {i}")
        assert not log.path.exists()  # nothing in the home's JSONL file
        assert [r[0] for r in sql(db, f"SELECT seq FROM {CHAIN_TABLE} ORDER BY seq")] == [1, 2, 3, 4, 5]
        verdict = verify(log)
        assert verdict.ok and verdict.entries == 5, verdict
        assert [e["sql"] for e in log.entries()] == [f"SELECT {i}" for i in range(5)]
        [row] = log.anchor.rows()
        assert row.seq == 5  # anchored on every append without group commit
    finally:
        log.close()


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["append", "append", "append", "rotate"])),
                      min_size=1, max_size=14))
def test_two_writers_interleaved_make_one_verifiable_chain(tmp_path_factory, db, turns):
    """Two AuditLog objects of two servers (one with group commit), their appends and key rotations in any
    order: one chain, seq 1..n, each entry's prev the one before, verified with the keys across rotations."""
    for table in (CHAIN_TABLE, "onesource_audit_anchor"):  # a fresh chain (and a fresh home, key) per example
        sql(db, f"DROP TABLE IF EXISTS {table}")
    tmp = tmp_path_factory.mktemp("chain")
    s = home(tmp, db)
    logs = [AuditLog.of(s), AuditLog.of(s, group_commit=0.05)]
    try:
        for n, (who, what) in enumerate(turns):
            if what == "rotate":
                logs[who].rotate_key(by=f"writer{who}", reason="test")
            else:
                logs[who].append(department="tax", user=f"writer{who}", decision="allowed", n=n)
        for log in logs:
            log.sync()
        entries = logs[0].entries()
        assert [e["seq"] for e in entries] == list(range(1, len(turns) + 1))
        assert all(e["prev"] == p["hash"] for p, e in zip(entries, entries[1:], strict=False))
        assert [e.get("n", "rotation") for e in entries] == [
            n if what == "append" else "rotation" for n, (_, what) in enumerate(turns)]
        verdict = verify(logs[1])
        assert verdict.ok and verdict.entries == len(turns), verdict
    finally:
        for log in logs:
            log.close()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from core.config import LakeSettings, Settings
    from sharing.audit import AuditLog
    s = Settings(home=Path(sys.argv[1]), lake=LakeSettings(catalog=sys.argv[2], data_path=sys.argv[3]),
                 audit_key_file=Path(sys.argv[6]))
    log = AuditLog.of(s, group_commit=0.05 if sys.argv[4] == "group" else None)
    for i in range(int(sys.argv[5])):
        log.append(department="tax", user=sys.argv[4], decision="allowed", i=i)
    log.close()
""")


def test_two_processes_appending_at_once_make_one_chain(tmp_path, db):
    """Two processes, two homes (two machines' worth: each its own folder, the key shared), appending at
    once: every entry lands once, one chain, and it verifies; tampering is then still caught."""
    a, b = home(tmp_path, db, "a"), home(tmp_path, db, "b")
    key = tmp_path / "keys" / "audit.key"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(h.home), h.lake.catalog, h.lake.data_path, mode, "150",
                               str(key)], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for h, mode in ((a, "group"), (b, "each"))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    log = AuditLog.of(Settings(home=b.home, lake=b.lake, audit_key_file=key))
    try:
        entries = log.entries()
        assert len(entries) == 300 and [e["seq"] for e in entries] == list(range(1, 301))
        assert sorted((e["user"], e["i"]) for e in entries) == sorted((u, i) for u in ("group", "each") for i in range(150))
        switches = sum(1 for x, y in zip(entries, entries[1:], strict=False) if x["user"] != y["user"])
        verdict = verify(log)
        assert verdict.ok and verdict.entries == 300, verdict
        print(f"{switches} switches between writers")

        # an edited entry (its text changed in the table) is caught by its HMAC
        victim = json.loads(sql(db, f"SELECT entry FROM {CHAIN_TABLE} WHERE seq = 120")[0][0])
        victim["user"] = "someone else"
        sql(db, f"UPDATE {CHAIN_TABLE} SET entry = %s WHERE seq = 120", (json.dumps(victim),))
        bad = verify(log)
        assert not bad.ok and bad.first_bad == 120 and "edited" in bad.reason, bad
        # a deleted entry in the middle breaks the seq
        sql(db, f"DELETE FROM {CHAIN_TABLE} WHERE seq BETWEEN 120 AND 121")
        bad = verify(log)
        assert not bad.ok and bad.first_bad == 120 and "deleted or reordered" in bad.reason, bad
        # entries removed from the end are caught against the anchor
        sql(db, f"DELETE FROM {CHAIN_TABLE} WHERE seq >= 120")
        bad = verify(log)
        assert not bad.ok and "removed from the end" in bad.reason, bad
    finally:
        log.close()


def test_a_home_s_jsonl_log_is_adopted_by_the_chain_unchanged(tmp_path, db):
    """A home whose log began as the JSONL file (its PostgreSQL catalog predates the shared chain): the first
    append moves its entries into the table as they are, the chain goes on from them and still verifies
    against the anchor recorded for the file."""
    s = home(tmp_path, db)
    before = AuditLog.of(s)
    before.store = None  # the file-backed log of a server of before the shared chain
    for i in range(4):
        before.append(department="tax", user="li", decision="allowed", i=i)
    before.close()
    log = AuditLog.of(s)
    try:
        assert verify(log).ok  # still read from the file, not adopted yet
        log.append(department="tax", user="li", decision="allowed", i=4)
        assert not log.path.exists() and list(log.folder.glob("audit.log.in-catalog-*"))
        assert [e["i"] for e in log.entries()] == [0, 1, 2, 3, 4]
        verdict = verify(log)
        assert verdict.ok and verdict.entries == 5, verdict
    finally:
        log.close()


# --- sessions and sign-ins -------------------------------------------------------------------------------------


def test_a_session_started_on_one_server_works_on_another_and_ends_on_both(db):
    one, two = Sessions(store=SessionStore(db)), Sessions(store=SessionStore(db))
    since = __import__("datetime").datetime(2026, 11, 1, 8, 30, 15, 123456)
    user = User("tax_analyst", "tax", "analyst", since)
    token = one.start(user)
    assert two.user(token) == user  # the same user, credentials' time to the microsecond (still_valid compares it)
    assert two.csrf(token) == one.csrf(token) and two.csrf(token)
    assert two.user("forged") is None and two.user(None) is None
    assert sql(db, "SELECT count(*) FROM onesource_portal_sessions WHERE token_hash = %s", (token,))[0][0] == 0
    two.end(token)  # signed out on the second: over on the first too
    assert one.user(token) is None and one.csrf(token) is None
    short = Sessions(hours=1 / 3600 / 2, store=SessionStore(db))  # half a second
    token = short.start(user)
    assert one.user(token) == user
    __import__("time").sleep(0.7)
    assert one.user(token) is None  # expired, on every server


def test_a_lockout_earned_on_one_server_holds_on_another(db):
    rules = SignInSettings(max_failures=3, max_failures_per_address=5, window_minutes=1, lockout_minutes=1 / 60,
                           delay_seconds=0)
    one, two = (SignInGuard(rules, sleep=lambda s: None, store=SignInStore(db)) for _ in range(2))
    assert one.failed("li", "10.0.0.1", "portal") is None
    assert two.failed("li", "10.0.0.2", "pgwire") is None
    one.check("li", "10.0.0.3")  # two failures: not locked yet
    locked = one.failed("li", "10.0.0.1", "portal")
    assert isinstance(locked, LockedOut)  # the third, counted across both servers
    with pytest.raises(LockedOut):
        two.check("li", "10.0.0.9")  # the user name is locked on the other server, from any address
    two.check("wang", "10.0.0.9")
    # the address: five failures over both servers, whatever the names
    for n, guard in enumerate([one, two, one, two]):
        assert guard.failed(f"user{n}", "10.0.0.7", "portal") is None
    assert two.failed("user9", "10.0.0.7", "portal") is not None
    with pytest.raises(LockedOut):
        one.check("zhao", "10.0.0.7")
    __import__("time").sleep(1.2)  # the lock (one second) is served: a fresh start, its failures forgotten
    one.check("li", "10.0.0.1")
    assert one.failed("li", "10.0.0.1", "portal") is None
    # a right password forgets the user name's failures, on every server
    two.failed("li", "10.0.0.1", "portal")
    one.succeeded("li", "10.0.0.1")
    assert two.failed("li", "10.0.0.1", "portal") is None and two.failed("li", "10.0.0.1", "portal") is None
    assert sql(db, "SELECT count(*) FROM onesource_signin_failures")[0][0] > 0
    one.store.prune(0)  # nothing is kept past its window (a server prunes once a minute)
    assert sql(db, "SELECT count(*) FROM onesource_signin_failures")[0][0] == 0


def test_the_guard_and_sessions_use_the_shared_store_when_the_chain_is_shared(tmp_path, db):
    log = AuditLog.of(home(tmp_path, db))
    try:
        assert SignInGuard(SignInSettings(), audit=log).store is not None
        plain = AuditLog.of(Settings(home=tmp_path / "plain"))
        assert plain.store is None and SignInGuard(SignInSettings(), audit=plain).store is None
        plain.close()
    finally:
        log.close()


def test_a_server_s_concurrent_appends_are_written_together_and_stay_one_chain(tmp_path, db):
    """Threads of two servers appending at once: each server writes the entries waiting in one statement
    (group commit), and the chain still holds every entry once, in seq order, and verifies."""
    import threading

    s = home(tmp_path, db)
    logs = [AuditLog.of(s, group_commit=0.05), AuditLog.of(s, group_commit=0.05)]
    batches: list[int] = []
    store = logs[0].store
    real = store.insert_many
    store.insert_many = lambda rows: batches.append(len(rows)) or real(rows)  # counts the rows per statement

    def work(log: AuditLog, who: int) -> None:
        for i in range(40):
            log.append(department="tax", user=f"t{who}", decision="allowed", i=i)

    threads = [threading.Thread(target=work, args=(logs[n % 2], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        entries = logs[1].entries()
        assert [e["seq"] for e in entries] == list(range(1, 321))
        assert sorted((e["user"], e["i"]) for e in entries) == sorted((f"t{n}", i) for n in range(8) for i in range(40))
        assert max(batches) > 1 and sum(batches) >= 160  # written together, retried when the other server won
        verdict = verify(logs[0])
        assert verdict.ok and verdict.entries == 320, verdict
    finally:
        for log in logs:
            log.close()


def test_concurrent_attempts_on_two_servers_never_buy_guesses_past_the_lockout(db):
    """Six wrong passwords for one name at once, three through each of two servers, each taking 0.2 s to
    check: the name's turn is taken one at a time over both, so exactly three are checked and fail, and the
    other three are refused by the lockout unchecked."""
    import threading
    import time

    rules = SignInSettings(max_failures=3, max_failures_per_address=100, window_minutes=1, lockout_minutes=1,
                           delay_seconds=0)
    guards = [SignInGuard(rules, sleep=lambda s: None, store=SignInStore(db)) for _ in range(2)]
    outcomes: list[str] = []

    def guess(guard: SignInGuard, n: int) -> None:
        try:
            with guard.attempt("li", f"10.0.0.{n}", "portal"):
                time.sleep(0.2)  # the password's check (scrypt)
                guard.failed("li", f"10.0.0.{n}", "portal")
                outcomes.append("checked")
        except LockedOut:
            outcomes.append("refused")

    threads = [threading.Thread(target=guess, args=(guards[n % 2], n)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["checked"] * 3 + ["refused"] * 3
