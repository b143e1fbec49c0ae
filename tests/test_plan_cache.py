"""The persistent engine's caches and pinned snapshots are exact (sharing.engine).

A server's engine keeps, per lake snapshot, what each department may read, whether each user is active, the
plans of the SQL texts it has seen, which texts are catalog questions, and on each running slot an open read
transaction (a pinned snapshot: DuckLake reads the catalog once per transaction, not once per query). None of
that may outlive a change: a grant, a revoke, a disabled user, a registry change or new data is seen by the
next query. The oracle is the same engine with every cache and pin taken away, plus the rule itself (no grant,
no rows) for what a department may see at all.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import subprocess
import sys
import threading
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import Lake
from lakehouse import registered_versions as lake_versions
from schemas import load_registry
from schemas.formats import org_code_check_char, uscc_check_char
from sharing import engine as engine_module
from sharing.engine import PIN_IDLE, CursorLake, GovernedEngine
from sharing.exceptions import AccountDisabled, QueryRefused
from sharing.grants import active_grants, add_grant, revoke_grant, visible
from sharing.policy import plan
from sharing.users import create_user, disable_user
from tests.helpers import DEPARTMENTS, ELEMENTS, HEADER, drop, firms_dataset, load, write_registry

DEPTS = ("amr", "tax", "hrss")  # amr owns firms; tax and hrss read it only with a grant while it is conditional
COLUMN_SETS = (None, ("uscc", "enterprise_status"), ("uscc", "enterprise_name", "capital"))
FILTERS = (None, "enterprise_status = '1'", "capital > 500")
QUERIES = (
    "SELECT * FROM shared.firms ORDER BY uscc",
    "SELECT enterprise_status, count(*) AS n FROM shared.firms GROUP BY 1 ORDER BY 1",
    "SELECT uscc, enterprise_name FROM shared.firms WHERE capital > 100 ORDER BY uscc",
    "SELECT count(*) AS n, current_user AS who FROM shared.firms",
)


def uscc(n: int) -> str:
    """A valid unified social credit code (GB 32100: both check characters)."""
    body8 = f"MA{n:06d}"
    code17 = "91330106" + body8 + org_code_check_char(body8)
    return code17 + uscc_check_char(code17)


def firm(n: int) -> tuple:
    return (uscc(n), f"杭州第{n}有限公司", "1" if n % 3 else "2", 100 * n, n, "2020-01-01")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("plancache") / "home")
    elements = copy.deepcopy(ELEMENTS)
    for el in elements["elements"]:
        if el["name"] == "enterprise_name":
            el["sensitivity"] = 3  # masked for every department but the owner
    departments = copy.deepcopy(DEPARTMENTS)
    departments["departments"].append({"code": "hrss", "name": "人社局", "name_en": "HRSS",
                                       "systems": [{"code": "hrss_core", "name": "社保系统"}]})
    write_registry(settings.registry_dir, [firms_dataset(share_type="conditional", conditions="税务稽查")],
                   elements=elements, departments=departments)
    drop(settings, "amr/firms/a.csv", HEADER + "".join(",".join(map(str, firm(n))) + "\n" for n in range(1, 9)))
    assert [r.status for r in load(settings)] == ["published"]
    # one running slot per engine: each slot is a DuckDB instance that takes a moment to open
    return dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, concurrent=1, per_user=1))


class Uncached(GovernedEngine):
    """The oracle: the same engine with no cache and no pinned snapshot (every lookup and plan made anew)."""

    def _pinned(self, number, con, state):
        return contextlib.nullcontext()

    def access(self, cursor, department, stamp=None, *, user=None):
        from sharing.users import organisation_of

        self._fresh(cursor)
        return visible(self._registry, active_grants(CursorLake(self._lake, cursor), department), department,
                       organisation_of(cursor, user) if user else None)

    def _active(self, cursor, user, stamp=None):
        self._fresh(cursor)
        return bool(cursor.execute("SELECT count(*) FROM lake.ops.users WHERE user_name = ? AND disabled_at IS NULL",
                                   [user]).fetchone()[0])

    def _plan(self, sql, access, department, dialect, user=None, files=None):
        # through DuckLake's own scan: the cached engine reads the tables' Parquet files (sharing.filescan)
        return plan(sql, access, self._registry, department, dialect=dialect, user=user)


@pytest.fixture(scope="module")
def engines(home):
    cached = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    oracle = Uncached(home, load_registry(home.registry_dir), persistent=True)
    yield cached, oracle
    cached.close()
    oracle.close()


def outcome(engine: GovernedEngine, department: str, user: str, sql: str):
    """What a department's user gets: its rows, or the kind of refusal (message texts name no cache)."""
    try:
        result = engine.statement(department, sql, user=user)
    except AccountDisabled:
        return ("disabled",)
    except QueryRefused as exc:
        return ("refused", str(exc))
    return ("rows", tuple(result.columns), tuple(result.rows))


def set_share_type(home: Settings, share_type: str) -> None:
    """Edit the registry's firms and register it (``onesource registry apply``)."""
    path = next(home.registry_dir.rglob("firms.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["share_type"] = share_type
    data.update({"legal_basis": "测试"} if share_type == "not_shared" else {})
    data.update({"conditions": "税务稽查"} if share_type == "conditional" else {})
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with Lake(home.lake) as lake:
        lake_versions.apply(lake, load_registry(home.registry_dir, home.cache_dir))


_users = itertools.count()
_firms = itertools.count(1000)

OPS = st.one_of(
    st.tuples(st.just("grant"), st.sampled_from(("tax", "hrss")), st.sampled_from(COLUMN_SETS),
              st.sampled_from(FILTERS)),
    st.tuples(st.just("revoke"), st.integers(0, 3)),
    st.tuples(st.just("share"), st.sampled_from(("conditional", "unconditional", "not_shared"))),
    st.tuples(st.just("insert"), st.integers(1, 3)),
    st.tuples(st.just("disable"), st.integers(0, 2)),
    st.tuples(st.just("query"), st.integers(0, 2), st.sampled_from(QUERIES)),
    st.tuples(st.just("query"), st.integers(0, 2), st.sampled_from(QUERIES)),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=3, max_size=8))
def test_cached_answers_equal_uncached_ones_through_grants_revokes_registry_changes_and_commits(home, engines, ops):
    """Interleave governance changes and queries from three departments' users: every answer of the cached
    (and pinned) engine equals the uncached oracle's, and a department without a grant reads nothing."""
    cached, oracle = engines
    with Lake(home.lake) as lake:
        users = [(d, f"u{next(_users)}_{d}") for d in DEPTS]
        for department, name in users:
            create_user(lake, department, name)
        grants: list[tuple[str, str]] = []  # (grant id, department), active ones
        share, disabled = "conditional", set()
        try:
            for op in ops:
                if op[0] == "grant":
                    _, department, columns, row_filter = op
                    if share != "not_shared":  # a not_shared dataset cannot be granted
                        grants.append((add_grant(lake, load_registry(home.registry_dir), department, "firms",
                                                 columns=list(columns) if columns else None, row_filter=row_filter),
                                       department))
                elif op[0] == "revoke" and grants:
                    revoke_grant(lake, grants.pop(op[1] % len(grants))[0])
                elif op[0] == "share":
                    share = op[1]
                    set_share_type(home, share)
                elif op[0] == "insert":
                    rows = [firm(next(_firms)) for _ in range(op[1])]
                    with lake.transaction() as con:
                        con.executemany("INSERT INTO lake.shared.firms VALUES (?, ?, ?, ?, ?, ?)", rows)
                elif op[0] == "disable":
                    department, name = users[op[1]]
                    if name not in disabled:
                        disable_user(lake, name)
                        disabled.add(name)
                elif op[0] == "query":
                    department, name = users[op[1]]
                    got, want = outcome(cached, department, name, op[2]), outcome(oracle, department, name, op[2])
                    assert got == want, (op, got, want)
                    # the rule itself: who may read firms at all
                    may_read = department == "amr" or share == "unconditional" or (
                        share == "conditional" and any(d == department for _, d in grants))
                    if name in disabled:
                        assert got == ("disabled",)
                    elif not may_read:
                        assert got[0] == "refused" and "not granted" in got[1], (op, got)
        finally:
            for grant_id, _ in grants:
                revoke_grant(lake, grant_id)
            if share != "conditional":
                set_share_type(home, "conditional")


def test_a_revoke_is_seen_by_the_next_query_of_a_pinned_slot(home, engines):
    """The slot's transaction is open (pinned) when the revoke commits: the next query still sees it."""
    cached, _ = engines
    with Lake(home.lake) as lake:
        create_user(lake, "tax", name := f"u{next(_users)}_pin")
        grant = add_grant(lake, load_registry(home.registry_dir), "tax", "firms", columns=["uscc"])
        sql = "SELECT count(*) AS n FROM shared.firms"
        cached.statement("tax", sql, user=name)  # (an engine's first reader of the catalog creates its WAL files)
        first = cached.statement("tax", sql, user=name).rows
        pin = cached._pins[0]  # noqa: SLF001 - the pin this test is about
        assert pin.stamp is not None, "the slot keeps its transaction open between queries"
        held = pin.stamp
        assert cached.statement("tax", sql, user=name).rows == first and cached._pins[0].stamp == held  # noqa: SLF001
        revoke_grant(lake, grant)
        with pytest.raises(QueryRefused, match="not granted"):
            cached.statement("tax", sql, user=name)
        grant = add_grant(lake, load_registry(home.registry_dir), "tax", "firms", row_filter="capital > 500")
        with lake.transaction() as con:  # new rows, committed while the slot may still be pinned
            con.executemany("INSERT INTO lake.shared.firms VALUES (?, ?, ?, ?, ?, ?)",
                            [firm(next(_firms)) for _ in range(2)])
        [(n,)] = cached.statement("tax", sql, user=name).rows
        assert n == lake.con.execute("SELECT count(*) FROM lake.shared.firms WHERE capital > 500").fetchone()[0]
        revoke_grant(lake, grant)


def test_the_same_sql_is_planned_per_department_and_user(home, engines):
    """Two departments with different grants, and two users, send the same text: each gets its own answer."""
    cached, oracle = engines
    with Lake(home.lake) as lake:
        names = {d: f"u{next(_users)}_{d}" for d in ("tax", "hrss")}
        other = f"u{next(_users)}_tax2"
        for department, name in [*names.items(), ("tax", other)]:
            create_user(lake, department, name)
        grants = [add_grant(lake, load_registry(home.registry_dir), "tax", "firms", columns=["uscc", "capital"]),
                  add_grant(lake, load_registry(home.registry_dir), "hrss", "firms", row_filter="capital > 500")]
    try:
        sql = "SELECT *, current_user AS who FROM shared.firms ORDER BY uscc"
        for _ in range(2):  # the second round is answered from the caches
            for department, name in [*names.items(), ("tax", other)]:
                got = outcome(cached, department, name, sql)
                assert got == outcome(oracle, department, name, sql) and got[0] == "rows"
                assert all(row[-1] == name for row in got[2])
        assert outcome(cached, "tax", names["tax"], sql)[1] == ("uscc", "capital", "who")
        masked = outcome(cached, "hrss", names["hrss"], sql)
        assert all(int(row[3]) > 500 for row in masked[2]) and all("*" in row[1] for row in masked[2])
    finally:
        with Lake(home.lake) as lake:
            for grant in grants:
                revoke_grant(lake, grant)


def test_no_answer_outlives_a_revoke_under_concurrent_queries(home):
    """Six threads query while a grant is made and revoked: every query begun after the revoke returned is
    refused, every one begun after the grant returned and done before the revoke began is answered."""
    busy = dataclasses.replace(home, limits=dataclasses.replace(home.limits, concurrent=2, per_user=2, queued=64,
                                                                per_user_queued=64))
    engine = GovernedEngine(busy, load_registry(home.registry_dir), persistent=True)
    engine.open_slots()
    log: list[tuple[float, float, str]] = []  # (began, ended, what)
    stop = threading.Event()
    with Lake(home.lake) as lake:
        create_user(lake, "tax", name := f"u{next(_users)}_busy")

    def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                engine.statement("tax", "SELECT count(*) AS n FROM shared.firms", user=name)
                log.append((began, time.monotonic(), "rows"))
            except QueryRefused as exc:
                log.append((began, time.monotonic(), "refused" if "not granted" in str(exc) else str(exc)))

    threads = [threading.Thread(target=client) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        with Lake(home.lake) as lake:
            for _ in range(2):
                grant = add_grant(lake, load_registry(home.registry_dir), "tax", "firms")
                granted = time.monotonic()
                wait_for(lambda since=granted: sum(began > since for began, _, _ in list(log)) >= 12)
                revoking = time.monotonic()
                revoke_grant(lake, grant)
                revoked = time.monotonic()
                wait_for(lambda since=revoked: sum(began > since for began, _, _ in list(log)) >= 12)
                held = [what for began, ended, what in list(log) if granted < began and ended < revoking]
                assert held and set(held) == {"rows"}, held[:10]  # a grant is seen by the next query too
                late = [what for began, _, what in list(log) if began > revoked]
                assert late and set(late) == {"refused"}, late[:10]
    finally:
        stop.set()
        for t in threads:
            t.join()
        engine.close()


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the clients answered nothing for a minute"
        time.sleep(0.02)


CHECKPOINT = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=10); "
              "print(*db.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())")


def test_an_idle_engine_holds_no_read_transaction_on_the_catalog(home, engines):
    """A pinned slot is a reader of the SQLite catalog: once idle, the pin ends and a checkpoint can take the
    whole write-ahead log (a reader would leave it busy)."""
    cached, _ = engines
    with Lake(home.lake) as lake:
        create_user(lake, "amr", name := f"u{next(_users)}_idle")
        lake.write("a commit the checkpoint has to take", "INSERT INTO ops.audit_sync VALUES (1, 1, now())", [])
    cached.statement("amr", "SELECT count(*) AS n FROM shared.firms", user=name)
    assert cached._pins[0].stamp is not None  # noqa: SLF001
    time.sleep(PIN_IDLE * 4)
    assert cached._pins[0].stamp is None  # noqa: SLF001
    catalog = home.lake.catalog.removeprefix("sqlite:")
    done = subprocess.run([sys.executable, "-c", CHECKPOINT, catalog], capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[:1] == ["0"], done.stdout + done.stderr


def test_catalog_questions_are_told_apart_once_per_text(home, engines, monkeypatch):
    cached, _ = engines
    seen: list[str] = []
    real = engine_module._is_catalogue.__globals__["_CATALOGUE"]
    real.clear()
    from sharing import visible_catalog as catalog

    original = catalog.is_catalog_query
    monkeypatch.setattr(catalog, "is_catalog_query", lambda sql: seen.append(sql) or original(sql))
    with Lake(home.lake) as lake:
        create_user(lake, "amr", name := f"u{next(_users)}_cat")
    for _ in range(3):
        cached.statement("amr", "SELECT count(*) AS n FROM shared.firms", user=name)
        cached.statement("amr", "SELECT relname FROM pg_catalog.pg_class LIMIT 1", user=name)
    assert sorted(seen) == ["SELECT count(*) AS n FROM shared.firms", "SELECT relname FROM pg_catalog.pg_class LIMIT 1"]
