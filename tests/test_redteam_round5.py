"""Red team, round 5: emergency response (issue 23) attacked from outside: the freeze (sharing.security.freeze),
the misuse alerts (sharing.security.alerts) and who-saw (sharing.security.replay).

Each test names the defect it guards against. Fixed ones failed before their fix; the ones still open are
``xfail(strict=True)`` with the reason, so that the day they are fixed the marker must go.

The home is test_security_replay's: ``people`` (one row a person, owned by psb) and ``visits`` (owned by nhc),
both holding the element ``person_id``; the record looked for is person 3's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused
from sharing.security.alerts import list_alerts, scan
from sharing.security.replay import who_saw
from sharing.users import create_user
from sharing.visible_catalog import _ALLOWED
from tests.helpers import free_port, wait_for_port
from tests.support.replay import VALUE, make_home


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    made = make_home(tmp_path_factory.mktemp("redteam5"))
    with Lake(made.lake) as lake:
        create_user(lake, "tax", "prober")
    return made


@pytest.fixture(scope="module")
def engine(home):
    """A server's engine on the home (persistent: file scans, slots), as the wire and HTTP use it."""
    made = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    yield made
    made.close()


# --- alerts: a probe the catalog cannot answer was audited "failed", never counted as a refusal -----------

def _refused_functions() -> list[str]:
    """DuckDB's own scalar functions that neither the catalog nor a governed query may call, among those
    PostgreSQL's grammar reads as a call of that very name (``apply`` is not: InvalidSQL; ``current_schema``
    is read as the catalog's own). Every one of them, in each shape below, was checked refused (42501)."""
    import duckdb
    import sqlglot

    def a_call(name: str) -> bool:
        try:
            tree = sqlglot.parse_one(f"SELECT * FROM {name}('x') WHERE {name}('x') IS NULL", read="postgres")
        except Exception:  # noqa: BLE001 - any failure to parse: not a name to draw
            return False
        return isinstance(tree.find(sqlglot.exp.Func), sqlglot.exp.Anonymous)  # not one sqlglot renames

    names = duckdb.connect().execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = "
                                     "'scalar' AND function_name SIMILAR TO '[a-z_]+' ORDER BY 1").fetchall()
    return [n for (n,) in names if n not in _ALLOWED and a_call(n)][:400]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["getenv", "pg_read_file", *_refused_functions()]),
       shape=st.sampled_from(["SELECT {f}('x')", "SELECT 1 WHERE {f}('x') IS NULL", "SELECT * FROM {f}('x')",
                              "SELECT relname FROM pg_class WHERE relname = {f}('x')"]))
def test_a_wire_statement_calling_a_function_nobody_may_call_is_a_refusal_the_alerts_count(engine, name, shape):
    """Over the wire a SELECT without a shared table is a catalog question; ``SELECT getenv('HOME')`` failed
    there ("does not exist in the catalogue", XX000) and was audited ``failed``: the refusal-burst rule never
    saw a probe the governed planner refuses (42501, ``refused``) when the query names a shared table."""
    with pytest.raises(QueryRefused) as refused:
        engine.statement("tax", shape.format(f=name), user="prober")
    assert refused.value.sqlstate == "42501" and "not allowed" in str(refused.value)
    entry = engine.audit.entries()[-1]
    assert (entry["user"], entry["decision"]) == ("prober", "refused"), entry


# --- alerts: the whole register in one row -------------------------------------------------------------------

def test_the_register_taken_as_one_aggregated_row_raises_sensitive_rows_like_the_rows_themselves(home, engine):
    plain = set()
    for _ in range(3):
        plain |= set(engine.query("psb", "SELECT pid, name FROM shared.people", user="bulk_rows").rows)
    packed = engine.query("psb", "SELECT list(pid) AS p, list(name) AS n FROM shared.people", user="bulk_list").rows
    for _ in range(2):
        engine.query("psb", "SELECT string_agg(pid || ' ' || name, ';') FROM shared.people", user="bulk_list")
    assert set(zip(packed[0][0], packed[0][1], strict=True)) == plain  # the same persons, names and IDs
    floor = 2 * len(plain)  # three plain reads pass it; the same data, aggregated, must too
    tuned = dataclasses.replace(home, security=dataclasses.replace(  # working hours all day: no unusual_hours
        home.security, sensitive_rows_floor=floor, work_start=0, work_end=24))
    scan(tuned, now=dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=16))
    with Lake(home.lake) as lake:
        raised = {a["user_name"] for a in list_alerts(lake.con, kind="sensitive_rows")}
    assert "bulk_rows" in raised
    assert "bulk_list" in raised


# --- who-saw: results that plainly held the record, not listed ------------------------------------------------

MISSED = {
    "window_count": "SELECT pid, name, count(*) OVER () AS n FROM shared.people",
    "row_number": "SELECT pid, row_number() OVER (ORDER BY rid) AS k FROM shared.people",
    "lag": "SELECT rid, lag(pid) OVER (ORDER BY rid) AS previous FROM shared.people",
    "offset": "SELECT pid, name FROM shared.people ORDER BY rid LIMIT 5 OFFSET 1",
    "string_agg": "SELECT district, string_agg(pid, ',') AS ids FROM shared.people GROUP BY district",
    "list": "SELECT list(pid) AS ids FROM shared.people",
    "json": "SELECT to_json(list(p)) AS everyone FROM shared.people p",
}
FOUND = {  # shapes who-saw does get right, beside them (the test's own check that hits are read right)
    "plain": "SELECT pid, name FROM shared.people",
    "cte": "WITH x AS (SELECT * FROM shared.people) SELECT pid FROM x",
    "quoted": '/* 注释 */ SELECT "pid" AS 身份证 FROM shared.people -- 尾注',
    "union": "SELECT pid FROM shared.people WHERE age < 40 UNION SELECT pid FROM shared.people WHERE age > 100",
}


@pytest.fixture(scope="module")
def replayed(home, engine):
    """Each query run by the owner (pid unmasked) as its own user; the kept results; who-saw over them."""
    kept, seqs = {}, set()
    for name, sql in {**MISSED, **FOUND}.items():
        kept[name] = engine.query("psb", sql, user=f"ws_{name}").rows
        seqs.add(engine.audit.entries()[-1]["seq"])
    entries = [e for e in engine.audit.entries() if e["seq"] in seqs]
    report = who_saw(home, engine.registry, "person_id", VALUE, entries=entries)
    return kept, {h.user for h in report.hits}, report


def _held(rows) -> bool:
    """The oracle on values: the record's ID is in a cell of the kept result (as is, in a list, in a text)."""
    return any(VALUE in json.dumps(cell, default=str, ensure_ascii=False) for row in rows for cell in row)


@pytest.mark.parametrize("name", sorted(FOUND))
def test_who_saw_lists_a_result_that_held_the_record(replayed, name):
    kept, hits, report = replayed
    assert _held(kept[name]) and f"ws_{name}" in hits and not report.unreplayed


@pytest.mark.parametrize("name", sorted(MISSED))
def test_who_saw_lists_a_result_holding_the_record_through_a_window_offset_or_packed_aggregate(replayed, name):
    kept, hits, report = replayed
    assert _held(kept[name]), kept[name]  # the oracle: the person's ID was in the answer the user got
    assert not report.unreplayed
    assert f"ws_{name}" in hits


# --- freeze: a token issued during a department's freeze ------------------------------------------------------

@pytest.fixture(scope="module")
def served(home, tmp_path_factory):
    """`onesource serve` on the home, in a process of its own."""
    http_port, pg_port = free_port(), free_port()
    env = {**os.environ, "ONESOURCE_HOME": str(home.home)}
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, proc)
        wait_for_port(pg_port, proc)
        yield env, http_port, pg_port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "onesource.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_a_wire_probe_of_a_function_is_refused_42501_on_a_live_server(home, served):
    _, _, pg_port = served
    with Lake(home.lake) as lake:
        password, _ = create_user(lake, "tax", "wire_prober")
    with psycopg.connect(host="127.0.0.1", port=pg_port, user="wire_prober", password=password, dbname="onesource",
                         autocommit=True, connect_timeout=10) as conn:
        for sql in ("SELECT getenv('HOME')", "SELECT pg_read_file('/etc/passwd')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
                conn.execute(sql)
    mine = [e for e in _entries(home) if e.get("user") == "wire_prober"]
    assert [e["decision"] for e in mine] == ["refused", "refused"]


def _entries(home) -> list[dict]:
    from sharing.audit import AuditLog

    log = AuditLog.of(home)
    try:
        return log.entries()
    finally:
        log.close()


@pytest.mark.slow
def test_a_token_issued_while_the_department_is_frozen_opens_no_route_over_http(home, served):
    """A freeze revokes the tokens its users hold; a steward added to the frozen department afterwards (or a
    token rotated before the unfreeze) was refused only on /api/v1/query: it listed the department's requests
    and approved another department's request for the frozen owner's resident register."""
    env, http_port, _ = served
    base = f"http://127.0.0.1:{http_port}"
    with Lake(home.lake) as lake:
        _, tax_token = create_user(lake, "tax", "tax_requester")
    _cli(env, "security", "freeze", "--department", "psb", "--reason", "steward account stolen", "--by", "op")
    try:
        added = json.loads(_cli(env, "users", "add", "psb_new_steward", "--department", "psb", "--role", "steward",
                                "--json"))
        steward = {"Authorization": f"Bearer {added['token']}"}
        asked = httpx.post(f"{base}/api/v1/requests", headers={"Authorization": f"Bearer {tax_token}"},
                           json={"dataset": "people", "purpose": "稽查需要核对人口信息", "columns": ["pid"]}, timeout=30)
        assert asked.status_code == 201, asked.text
        request_id = asked.json()["request_id"]
        for method, path, body in (("GET", "/api/v1/catalogue", None), ("GET", "/api/v1/requests", None),
                                   ("POST", f"/api/v1/requests/{request_id}/approve", {})):
            answer = httpx.request(method, base + path, headers=steward, json=body, timeout=30)
            assert answer.status_code == 403, (path, answer.status_code, answer.text)
            assert "frozen" in answer.text and "steward account stolen" not in answer.text  # never the reason
        query = httpx.post(f"{base}/api/v1/query", headers=steward, json={"sql": "SELECT count(*) FROM shared.people"},
                           timeout=30)
        assert query.status_code == 403 and "frozen" in query.text
    finally:
        _cli(env, "security", "unfreeze", "--department", "psb", "--reason", "test over", "--by", "op")
    listed = httpx.get(f"{base}/api/v1/requests", headers=steward, timeout=30)  # unfrozen: the token works
    assert listed.status_code == 200 and request_id in {r["request_id"] for r in listed.json()["to_decide"]}


# --- alerts: a burst of refusals split by a window's edge -------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(probes=st.integers(min_value=11, max_value=18), spread=st.integers(min_value=30, max_value=110))
def test_a_burst_of_refusals_astride_a_window_edge_raises_refusal_burst(probes, spread):
    from core.config import SecuritySettings
    from sharing.security.alerts import Event, evaluate

    rules = SecuritySettings()
    edge = dt.datetime(2026, 11, 20, 2, 15)  # a quarter hour (UTC), at night in the city
    half = min(rules.refusal_burst - 1, probes // 2)  # each window's share stays under the threshold
    times = [edge - dt.timedelta(seconds=spread * (k + 1) / half) for k in range(half)] + \
            [edge + dt.timedelta(seconds=spread * k / (probes - half)) for k in range(probes - half)]
    assert probes >= rules.refusal_burst and probes - half < rules.refusal_burst
    events = [Event(seq, at, "thief", "tax", "refused", reason="table shared.people does not exist or is not granted")
              for seq, at in enumerate(sorted(times), start=1)]
    found = evaluate(events, frozenset(), rules, edge + dt.timedelta(minutes=20), departments={"thief": "tax"})
    assert any(a.kind == "refusal_burst" and a.user == "thief" for a in found), found


# --- keys: a backup taken while the audit key rotates -----------------------------------------------------------

@pytest.mark.parametrize("when", ["after the log is copied", "before the log is copied"])
def test_a_backup_taken_while_the_audit_key_rotates_restores_a_log_that_verifies_and_goes_on(
        tiny, tmp_path, monkeypatch, when):
    """The backup copied the audit log early and the key last: a rotation in between (another operator's
    `security rotate-keys`) gave a backup whose log ended before the rotation with the new key beside it. The
    restored log did not verify, and its next append, signed with that key and no rotation entry, broke the
    chain for good ("entry edited"). Now the key is copied before the log and the keyring after it, and a
    rotation the copied log holds has its key installed in the copy."""
    from core.config import Settings
    from onesource import backup as backup_module
    from onesource.backup import backup, restore
    from sharing.audit import AuditLog, verify
    from tests.helpers import csv_text, drop, load

    drop(tiny, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    log = AuditLog.of(tiny)
    log.append(kind="test", n=1)
    log.close()
    copy_log = backup_module._copy_log

    def rotating(src, dst):  # the real rotation, by another AuditLog (another operator), at that moment
        def rotate():
            other = AuditLog.of(tiny)
            other.rotate_key(kind="security", user="op", decision="admin", reason="drill")
            other.append(kind="test", n=2)  # signed with the new key
            other.close()

        if when == "before the log is copied":
            rotate()
        copied = copy_log(src, dst)
        if when == "after the log is copied":
            rotate()
        return copied

    monkeypatch.setattr(backup_module, "_copy_log", rotating)
    backup(tiny, tmp_path / "bk")
    other = Settings(home=tmp_path / "restored" / "home")
    report = restore(tmp_path / "bk", other)
    assert any(note.startswith("audit log verified") for note in report.notes), report.notes
    restored = AuditLog.of(other)
    restored.append(kind="test", n=3)  # the restored platform goes on appending
    restored.close()
    verdict = verify(AuditLog.of(other))
    assert verdict.ok, verdict
