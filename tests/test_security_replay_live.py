"""Slow tier: who-saw against a real `onesource serve`, queried over HTTP and the Postgres wire (psycopg).

Every query selects the row ids (``rid``, or ``list(rid)`` per group) of what it returns, so the results the
test keeps say which of them held the record, with no help from who-saw. Then a load changes the table (the
record's row updated, another removed, one added: a later snapshot) and more queries follow, among them the
text of one made before the load, whose answer the load changed. `onesource security who-saw` must list exactly
the queries whose kept results held the record, each at the snapshot it read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from lakehouse import Lake
from schemas import load_registry
from sharing.grants import add_grant
from sharing.users import create_user
from tests.helpers import drop, free_port, load, rows, wait_for_port
from tests.support.replay import RECORD, VALUE, csv, make_home, people_rows

pytestmark = pytest.mark.slow


def held(columns: list[str], rows: list, record: set[int]) -> bool:
    """From a kept result: a row whose rid is the record's, or a group whose packed rids hold it (the record's
    id left in the list: red team round 5, who-saw's second rule)."""
    for row in rows:
        for name, value in zip(columns, row, strict=True):
            if name.startswith("rid") and value in record:
                return True
            # a list over HTTP (JSON), PostgreSQL's text form '{1,2,3}' over the wire
            items = value if isinstance(value, list) else [int(x) for x in re.findall(r"-?\d+", str(value or ""))]
            if name.startswith("rids") and any(r in record for r in items):
                return True
    return False


def test_who_saw_over_http_and_the_wire_before_and_after_a_load(tmp_path):
    import httpx
    import psycopg

    home = make_home(tmp_path)
    registry = load_registry(home.registry_dir)
    with Lake(home.lake) as lake:
        add_grant(lake, registry, "tax", "people", columns=["rid", "pid", "district", "age"])
        add_grant(lake, registry, "tax", "visits", row_filter="cost > 15")
        tax_password, tax_token = create_user(lake, "tax", "tax_wang")
        psb_password, _ = create_user(lake, "psb", "psb_li")
        poll_password, _ = create_user(lake, "tax", "tax_poll")
    http_port, pg_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env={**os.environ, "ONESOURCE_HOME": str(home.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kept: list[tuple[str, str, bool]] = []  # (user, sql as sent, whether its kept result held the record)
    record = {"people": {RECORD}, "visits": {r[0] for r in rows(home, f"SELECT rid FROM lake.shared.visits "
                                                                      f"WHERE pid = '{VALUE}'")}}
    assert len(record["visits"]) == 2

    def over_http(sql: str, table: str = "people") -> None:
        answer = httpx.post(f"http://127.0.0.1:{http_port}/api/v1/query", json={"sql": sql, "purpose": "核查"},
                            headers={"Authorization": f"Bearer {tax_token}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        kept.append(("tax_wang", sql, held(body["columns"], body["rows"], record[table])))

    def over_wire(conn, user: str, sql: str, params=None, table: str = "people") -> None:
        cur = conn.execute(sql, params)
        columns = [d.name for d in cur.description]
        kept.append((user, sql, held(columns, cur.fetchall(), record[table])))

    try:
        wait_for_port(http_port, proc)
        wait_for_port(pg_port, proc)
        dsn = f"host=127.0.0.1 port={pg_port} dbname=onesource"
        with psycopg.connect(f"{dsn} user=tax_wang password={tax_password}", autocommit=True) as tax, \
                psycopg.connect(f"{dsn} user=psb_li password={psb_password}", autocommit=True) as psb, \
                psycopg.connect(f"{dsn} user=tax_poll password={poll_password}", autocommit=True) as poll:
            over_http("SELECT rid, pid FROM shared.people WHERE age > 40")
            over_http("SELECT rid, pid, district FROM shared.people WHERE district = 'A'")
            over_http("SELECT district, count(*) AS n, list(rid) AS rids FROM shared.people GROUP BY district")
            over_wire(tax, "tax_wang", "SELECT v.rid AS rid_v, v.cost FROM shared.people p JOIN shared.visits v "
                                       "ON p.pid = v.pid WHERE v.cost < 35", table="visits")
            over_wire(tax, "tax_wang", "SELECT rid FROM shared.people WHERE age = %s", [29])
            over_http("SELECT max(age) AS oldest, list(rid) AS rids FROM shared.people WHERE age < 30")
            over_http("SELECT max(age) AS oldest, list(rid) AS rids FROM shared.people WHERE age < 29")
            before = "SELECT rid, age FROM shared.people WHERE district = 'A' AND age < 40"
            over_wire(tax, "tax_wang", before)
            over_wire(psb, "psb_li", "SELECT rid, name FROM shared.people WHERE rid = 3")
            assert [h for _, _, h in kept].count(True) >= 5

            # a later load: the record's row updated (age 29 -> 61), person 12 gone, person 13 new
            later = people_rows(range(1, 14), age_of=lambda n: 61 if n == RECORD else 20 + 3 * n)
            drop(home, "psb/people/2.csv", csv("rid,pid,name,district,age", [r for r in later if r[0] != 12]))
            assert [r.status for r in load(home, "people")] == ["published"]
            deadline = time.time() + 30
            while time.time() < deadline:  # the servers see the commit on their next query
                if poll.execute("SELECT count(*) FROM shared.people WHERE rid = 13").fetchone()[0] == 1:
                    break
                time.sleep(0.2)
            over_wire(tax, "tax_wang", before)  # the same text: after the load, no longer the record
            over_http("SELECT rid, age FROM shared.people WHERE age > 60")
            over_wire(tax, "tax_wang", "SELECT rid, pid, district FROM shared.people WHERE district = 'A'")
        time.sleep(1)  # the server's audit group commit (0.2 s)
        out = subprocess.run([sys.executable, "-m", "onesource.cli", "security", "who-saw", "--element", "person_id",
                              "--value", VALUE, "--json"], env={**os.environ, "ONESOURCE_HOME": str(home.home)},
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    from sharing.audit import AuditLog

    entries = [e for e in AuditLog.of(home).entries() if e.get("decision") == "allowed"
               and e.get("user") in ("tax_wang", "psb_li")]
    assert len(entries) == len(kept), [(e["user"], e["sql_sent"]) for e in entries]
    for entry, (user, sql, _) in zip(entries, kept, strict=True):
        assert entry["user"] == user and (entry["sql_sent"] == sql or "%s" in sql), (entry["sql_sent"], sql)
    expected = [e["seq"] for e, (_, _, h) in zip(entries, kept, strict=True) if h]
    assert sorted(h["seq"] for h in report["hits"]) == expected
    assert report["unreplayed"] == {}
    snapshots = {e["seq"]: e["snapshot"] for e in entries}
    assert len({snapshots[s] for s in expected}) >= 2  # hits at the snapshots before and after the load
    first_before = next(e["seq"] for e in entries if e["sql_sent"] == before)
    assert first_before in expected and entries[-3]["sql_sent"] == before and entries[-3]["seq"] not in expected
    assert all(e.get("sql_lake") for e in entries)  # the servers read files; the audit keeps the table form


def test_who_saw_on_a_postgresql_catalog(tmp_path):
    """A PostgreSQL catalog has no pinned transactions: each server query runs in a transaction of its own, and
    the snapshot id it read as the catalog's stamp is the one recorded."""
    import uuid

    from core.config import LakeSettings
    from sharing.engine import GovernedEngine
    from sharing.security.replay import who_saw

    name = f"onesource_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        lake = LakeSettings(catalog=f"postgres:dbname={name} host=127.0.0.1 port=5432 user=postgres",
                            data_path=str(tmp_path / "data") + "/")
        home = make_home(tmp_path, lake=lake)
        registry = load_registry(home.registry_dir)
        engine = GovernedEngine(home, registry, persistent=True)
        try:
            sql = "SELECT rid, age FROM shared.people WHERE district = 'A' AND age < 40"
            assert RECORD in [r[0] for r in engine.query("psb", sql, user="li").rows]
            later = people_rows(range(1, 13), age_of=lambda n: 61 if n == RECORD else 20 + 3 * n)
            drop(home, "psb/people/2.csv", csv("rid,pid,name,district,age", later))
            assert [r.status for r in load(home, "people")] == ["published"]
            assert RECORD not in [r[0] for r in engine.query("psb", sql, user="li").rows]
            assert RECORD in [r[0] for r in engine.query("psb", "SELECT rid FROM shared.people WHERE age > 60",
                                                         user="li").rows]
        finally:
            engine.close()
        entries = [e for e in engine.audit.entries() if e.get("user") == "li"]
        assert entries[0]["snapshot"] < entries[1]["snapshot"] == entries[2]["snapshot"]
        report = who_saw(home, registry, "person_id", VALUE)
        assert [h.seq for h in report.hits] == [entries[0]["seq"], entries[2]["seq"]] and not report.unreplayed
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)
