"""Limits a department cannot exceed, and governance read fresh, at the engine (issue 17, items 4 and 5).

The servers' side (HTTP 429 under a burst, Postgres cancel requests, a registry apply under a live
`onesource serve`) is in tests/test_limits_live.py."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time

import pytest
import yaml

from core.config import QueryLimits, Settings
from lakehouse import Lake
from lakehouse import registered_versions as lake_versions
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import (
    AccountDisabled,
    OutOfMemory,
    QueryRefused,
    QueryStopped,
    QueryTooLarge,
    TooManyQueries,
)
from sharing.grants import add_grant, revoke_grant
from sharing.limits import Canceller, Watch
from sharing.users import create_user, disable_user
from tests.helpers import USCC, csv_text, drop, firms_dataset, load, write_registry
from tests.support.limits import SLOW, SMALL, branches


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("limits") / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    return settings


def limited(settings: Settings, **limits) -> Settings:
    return dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, **limits))


def engine_of(settings: Settings, persistent: bool = True) -> GovernedEngine:
    return GovernedEngine(settings, load_registry(settings.registry_dir), persistent=persistent)


def test_sql_over_the_size_limit_is_refused_before_parsing_and_audited_by_its_hash(home):
    engine = engine_of(limited(home, sql_bytes=4096, audit_sql_bytes=512), persistent=False)
    sql = SMALL + " WHERE " + " OR ".join(f"staff = {i}" for i in range(600))
    with pytest.raises(QueryTooLarge, match="at most 4,096 are accepted"):
        engine.query("tax", sql)
    last = engine.audit.entries()[-1]
    assert last["decision"] == "refused" and last["sql_sent_bytes"] == len(sql.encode())
    assert last["sql_sent_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
    assert len(last["sql_sent"].encode()) < 600  # the head only: a 5 MB query no longer floods the log
    # under the limit, a long query runs, and the audit keeps the head of what was sent and what ran
    ok = SMALL + " WHERE " + " OR ".join(f"staff = {i + 5000}" for i in range(100))
    assert engine.query("tax", ok).rows == [(0,)]
    last = engine.audit.entries()[-1]
    assert last["decision"] == "allowed" and last["sql_sent_bytes"] == len(ok) and len(last["sql_run"]) < 600
    assert last["sql_run_sha256"]


def test_planning_is_stopped_at_the_deadline_and_the_thread_goes_on(home):
    engine = engine_of(limited(home, seconds=1.0))
    try:
        assert engine.query("tax", SMALL).rows == [(3,)]  # the slot is open
        heavy = " UNION ALL ".join(f"SELECT uscc FROM shared.firms WHERE staff = {i}" for i in range(1500))
        started = time.monotonic()
        # about 10 s of planning on a busy machine, 1-2 s on a quiet one: the deadline stops it either in the
        # planner or (when a C call of the planner held the exception until planning was done) right after
        with pytest.raises(QueryStopped, match=r"(was planned|ran) longer than its time limit of 1 s"):
            engine.query("tax", heavy)
        # the stop lands between Python bytecodes: a long C call of the planner (the tokenizer, DuckDB's parser in
        # the verify step) holds it; seen 8 s for this 1 s limit on a CI host running two test workers, 16 s on a
        # host running a dozen test processes: the bound is what an operator would call hung, not the deadline
        assert time.monotonic() - started < 30
        assert engine.audit.entries()[-1]["decision"] == "failed"
        time.sleep(0.2)  # nothing raised later into this thread
        assert engine.query("tax", SMALL).rows == [(3,)]
    finally:
        engine.close()


def test_the_deadline_stops_the_planner_of_another_thread_only():
    """A Stopped raised into a planning thread never leaks past its planning block, even at the edge."""
    from sharing.limits import Stopped

    for _ in range(200):
        watch = Watch(0.001)
        try:
            with watch.planning():
                sum(range(20000))
        except Stopped:
            pass
        finally:
            watch.close()
    time.sleep(0.05)  # a pending exception would surface here
    assert True


def test_a_query_over_its_memory_limit_is_stopped_with_the_reason_and_the_server_goes_on(home):
    engine = engine_of(limited(home, memory="64MiB"))
    try:
        with pytest.raises(OutOfMemory, match="more than the 64MiB of memory one query may use"):
            engine.query("tax", "SELECT count(DISTINCT repeat(f.uscc, 4000000) || g.uscc) AS n "
                                "FROM shared.firms f, shared.firms g")
        assert engine.query("tax", SMALL).rows == [(3,)]
        assert engine.audit.entries()[-2]["decision"] == "failed"
    finally:
        engine.close()


def test_statement_timeout_lowers_the_limit_never_raises_it(home):
    from sharing.pgwire import GovernedSession, statement_timeout
    from sharing.users import User

    assert statement_timeout("500") == 0.5 and statement_timeout("'2s'") == 2 and statement_timeout("1min") == 60
    assert statement_timeout("0") is None and statement_timeout("DEFAULT") is None
    engine = engine_of(limited(home, seconds=8.0))
    try:
        session = GovernedSession(engine)
        session.user = User("amr_analyst", "amr", "analyst")
        with Lake(home.lake) as lake:
            create_user(lake, "amr", "amr_analyst")
        session.execute_sql("SET statement_timeout = 500")
        assert session.effective_timeout() == 0.5
        started = time.monotonic()
        with pytest.raises(QueryStopped, match="time limit of 0.5 s"):
            session.execute_sql(SLOW)
        # the stop lands between Python bytecodes: a long C call of the planner (the tokenizer, DuckDB's parser in
        # the verify step) holds it; seen 8 s for this 1 s limit on a CI host running two test workers
        assert time.monotonic() - started < 15
        session.execute_sql("SET statement_timeout TO '10min'")  # above the server's: the server's holds
        assert session.effective_timeout() == 8.0
        session.execute_sql("RESET statement_timeout")
        assert session.timeout is None
        with pytest.raises(ValueError, match="invalid value"):
            session.execute_sql("SET statement_timeout = 'soon'")
    finally:
        engine.close()


def test_one_user_cannot_take_every_slot(home):
    settings = limited(home, concurrent=2, per_user=1, per_user_queued=1, queued=4, seconds=6.0)
    engine = engine_of(settings)
    outcomes: list[str] = []

    def slow() -> None:
        try:
            engine.query("amr", SLOW, user="burst")
            outcomes.append("answered")
        except TooManyQueries:
            outcomes.append("429")
        except QueryStopped:
            outcomes.append("stopped")

    try:
        threads = [threading.Thread(target=slow) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        time.sleep(0.5)
        assert outcomes.count("429") == 3  # one running, one waiting, the rest refused at once
        assert engine.admission.in_flight()["burst"] == (1, 1)
        started = time.monotonic()
        assert engine.query("tax", SMALL, user="other").rows == [(3,)]  # another user: a free slot at once
        assert time.monotonic() - started < 2
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["429", "429", "429", "stopped", "stopped"]
        assert any((e.get("reason") or "").startswith("too many queries in flight") for e in engine.audit.entries())
    finally:
        engine.close()


def test_a_cancel_stops_the_running_query(home):
    engine = engine_of(home)
    canceller = Canceller()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.query("amr", SLOW, cancel=canceller)
        except QueryStopped as exc:
            failure.append(exc)

    try:
        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.0)
        started = time.monotonic()
        canceller.cancel()
        worker.join(10)
        # the stop lands between Python bytecodes: a long C call of the planner (the tokenizer, DuckDB's parser in
        # the verify step) holds it; seen 8 s for this 1 s limit on a CI host running two test workers
        assert time.monotonic() - started < 15 and not worker.is_alive()
        assert "due to user request" in str(failure[0]) and failure[0].sqlstate == "57014"
        canceller.cancel()  # nothing running: nothing happens
        assert engine.query("amr", SMALL, cancel=canceller).rows == [(3,)]
    finally:
        engine.close()


def test_catalog_questions_are_under_the_time_limit(home):
    engine = engine_of(limited(home, seconds=1.0))
    try:
        started = time.monotonic()
        with pytest.raises(QueryStopped, match="time limit of 1 s"):
            # the department's catalog is small (its granted columns, the type rows): eight of its relations
            # crossed are still far more rows than a second's work
            engine.catalog("tax", "SELECT count(*) FROM " + ", ".join(
                f"pg_catalog.{rel} x{i}" for i, rel in enumerate(["pg_attribute", "pg_type"] * 4)))
        # the stop lands between Python bytecodes: a long C call of the planner (the tokenizer, DuckDB's parser in
        # the verify step) holds it; seen 8 s for this 1 s limit on a CI host running two test workers
        assert time.monotonic() - started < 15
    finally:
        engine.close()


def _edit(settings: Settings, name: str, **changes) -> None:
    path = next(settings.registry_dir.rglob(f"{name}.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _apply(settings: Settings) -> list:
    with Lake(settings.lake) as lake:
        return lake_versions.apply(lake, load_registry(settings.registry_dir, settings.cache_dir))


def test_governance_changes_take_effect_on_the_next_query(tmp_path):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    with Lake(settings.lake) as lake:
        create_user(lake, "tax", "tax_analyst")
    engine = engine_of(settings)
    try:
        assert engine.query("tax", SMALL, user="tax_analyst", signed_in=True).rows == [(3,)]
        # a share type change, registered: the dataset is refused on the very next query
        _edit(settings, "firms", share_type="not_shared", legal_basis="test")
        assert [(c.kind, c.subject, c.details) for c in _apply(settings)] == [
            ("sharing", "firms", ["share_type: 'unconditional' -> 'not_shared'"])]
        with pytest.raises(QueryRefused, match="firms"):
            engine.query("tax", SMALL)
        assert engine.registry.dataset("firms").share_type == "not_shared"
        assert engine.query("amr", SMALL).rows == [(3,)]  # the owner still reads it
        # a new dataset, registered and loaded: readable with a grant, refused once the grant is revoked
        write_registry(settings.registry_dir, [firms_dataset(share_type="not_shared", legal_basis="test"), branches()])
        drop(settings, "amr/branches/b.csv", "编码,城市\nB1,杭州\nB2,宁波\n")
        assert [r.status for r in load(settings, "branches")] == ["published"]
        with pytest.raises(QueryRefused, match="not granted to tax"):
            engine.query("tax", "SELECT * FROM shared.branches")
        with Lake(settings.lake) as lake:
            grant = add_grant(lake, engine.registry, "tax", "branches")
        assert engine.query("tax", "SELECT count(*) FROM shared.branches").rows == [(2,)]
        with Lake(settings.lake) as lake:
            revoke_grant(lake, grant)
        with pytest.raises(QueryRefused, match="not granted to tax"):
            engine.query("tax", "SELECT * FROM shared.branches")
        # a user disabled: its signed-in sessions are refused on their next query
        with Lake(settings.lake) as lake:
            disable_user(lake, "tax_analyst")
        with pytest.raises(AccountDisabled, match="tax_analyst has been disabled"):
            engine.query("tax", "SELECT * FROM shared.branches", user="tax_analyst", signed_in=True)
    finally:
        engine.close()


def test_an_unapplied_or_broken_registry_edit_does_not_reach_a_running_server(tmp_path):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    engine = engine_of(settings)
    try:
        _edit(settings, "firms", share_type="not_shared", legal_basis="test")  # edited, not applied
        with Lake(settings.lake) as lake:
            create_user(lake, "tax", "someone")  # the lake commits something else
        assert engine.query("tax", SMALL).rows == [(3,)]
        _apply(settings)
        with pytest.raises(QueryRefused):
            engine.query("tax", SMALL)
        # a registry folder broken while a new version is registered: the last good registry is served
        path = next(settings.registry_dir.rglob("firms.yaml"))
        good = path.read_text(encoding="utf-8")
        _edit(settings, "firms", share_type="unconditional")
        _apply(settings)
        path.write_text(path.read_text(encoding="utf-8") + "\n  broken: [", encoding="utf-8")
        with pytest.raises(QueryRefused):
            engine.query("tax", SMALL)
        path.write_text(good.replace("not_shared", "unconditional"), encoding="utf-8")  # mended
        with Lake(settings.lake) as lake:
            create_user(lake, "tax", "someone_else")  # the next commit: the registry is read again
        assert engine.query("tax", SMALL).rows == [(3,)]
    finally:
        engine.close()


def test_http_request_bodies_over_the_limit_are_refused_with_413(home):
    from fastapi.testclient import TestClient

    from onesource.serve import create_app

    settings = limited(home, request_bytes=10_000, sql_bytes=5_000)
    with Lake(settings.lake) as lake:
        _, token = create_user(lake, "tax", "tax_http")
    engine = engine_of(settings)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(create_app(engine)) as client:
            big = client.post("/api/v1/query", json={"sql": SMALL + " " * 20_000}, headers=auth)
            assert big.status_code == 413 and "larger than 10000 bytes" in big.json()["reason"]
            long = client.post("/api/v1/query", json={"sql": SMALL + " " * 6_000}, headers=auth)
            assert long.status_code == 413 and "at most 5,000 are accepted" in long.json()["reason"]

            def chunks():
                for _ in range(20):
                    yield b" " * 1000

            streamed = client.post("/api/v1/query", content=chunks(), headers={**auth, "Content-Type": "application/json"})
            assert streamed.status_code == 413
            assert client.post("/api/v1/query", json={"sql": SMALL}, headers=auth).json()["rows"] == [[3]]

            async def threads() -> float:
                import anyio.to_thread

                return anyio.to_thread.current_default_thread_limiter().total_tokens

            limits = settings.limits  # a worker thread for every query in flight, and 40 for the rest
            assert client.portal.call(threads) == limits.concurrent + limits.queued + 40
    finally:
        engine.close()


def test_registry_diff_shows_sharing_and_department_changes(tmp_path, capsys, monkeypatch):
    from onesource.cli import main

    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["registry", "apply"]) == 0
    assert "sharing firms -> version 1" in capsys.readouterr().out
    _edit(settings, "firms", share_type="conditional", conditions="税务稽查")
    assert main(["registry", "diff"]) == 0
    out = capsys.readouterr().out
    assert "sharing firms -> version 2" in out and "share_type: 'unconditional' -> 'conditional'" in out
    assert main(["registry", "apply"]) == 0 and main(["registry", "diff"]) == 0
    assert "matches its registered versions" in capsys.readouterr().out
    assert USCC  # the tiny registry's firms


def test_limits_come_from_the_environment():
    limits = QueryLimits.from_env({"ONESOURCE_QUERY_SECONDS": "5", "ONESOURCE_QUERY_MEMORY": "1GiB",
                                   "ONESOURCE_QUERY_PER_USER": "3"})
    assert (limits.seconds, limits.memory, limits.per_user, limits.rows) == (5.0, "1GiB", 3, 0)  # 0: no row bound
    settings = Settings.from_env({"ONESOURCE_HOME": "/tmp/x", "ONESOURCE_CATALOG": "sqlite:/tmp/x/c.sqlite",
                                  "ONESOURCE_QUERY_SQL_BYTES": "1000"})
    assert settings.limits.sql_bytes == 1000


def test_a_query_stopped_before_it_starts_does_not_run():
    """DuckDB drops an interrupt sent before its query starts: a watch already stopped refuses to run."""
    import duckdb

    from sharing.limits import Stopped

    watch = Watch(0.05)
    time.sleep(0.3)
    con = duckdb.connect()
    with pytest.raises(Stopped, match="ran"), watch.running(con):
        con.execute("SELECT 1").fetchall()
    watch.close()
