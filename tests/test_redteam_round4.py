"""Red team, round 4: today's file scans (sharing.filescan), the wire's checks of held answers against
changed grants, and the session caps, attacked from outside as a department analyst with a valid account.

Each test names the defect it guards against; every one failed before its fix."""

from __future__ import annotations

import itertools
import struct
import sys
import threading

import pytest

from lakehouse import Lake
from onesource.config import Settings
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.grants import add_grant, revoke_grant
from sharing.pgwire import GovernedPgServer
from sharing.users import create_user
from tests.conftest import free_port
from tests.helpers import drop, firms_dataset, load, write_registry
from tests.test_ingest_files import csv_text
from tests.test_pgwire_attack import Raw, _sync_answer, _value_of, errors

SECRETS = firms_dataset(name="firm_secrets", share_type="conditional", conditions="稽查",
                        connector={"kind": "file", "path": "amr/secrets/*.csv", "format": "csv", "encoding": "utf-8"})


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings_ = Settings(home=tmp_path_factory.mktemp("redteam4") / "home")
    write_registry(settings_.registry_dir, [firms_dataset(), SECRETS])
    drop(settings_, "amr/firms/a.csv", csv_text())
    drop(settings_, "amr/secrets/a.csv", csv_text())
    assert [r.status for r in load(settings_)] == ["published"]
    assert [r.status for r in load(settings_, "firm_secrets")] == ["published"]
    with Lake(settings_.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_analyst")
    engine = GovernedEngine(settings_, load_registry(settings_.registry_dir), persistent=True)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    crashed: list[tuple] = []
    server.handle_error = lambda request, address: crashed.append((address, sys.exc_info()[1]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"engine": engine, "server": server, "port": server.server_address[1], "password": password,
           "crashed": crashed}
    server.shutdown()
    server.server_close()
    engine.close()
    assert not crashed, crashed


def _signed_in(city) -> Raw:
    r = Raw(city["port"])
    r.sign_in(city["password"])
    return r


_USERS = itertools.count()


def _narrow(engine, grant, change: str):
    """The department's grant on firm_secrets, narrowed: the grant in force afterwards."""
    with Lake(engine.settings.lake) as lake:
        revoke_grant(lake, grant)
        if change == "row_filter":  # no row passes it
            return add_grant(lake, engine.registry, "tax", "firm_secrets", row_filter="capital < 0")
        return add_grant(lake, engine.registry, "tax", "firm_secrets", columns=["capital", "staff"])


def _parse(sql: bytes, name: bytes = b"") -> tuple[bytes, bytes]:
    return b"P", name + b"\0" + sql + b"\0" + struct.pack("!h", 0)


def _bind(portal: bytes, statement: bytes = b"") -> tuple[bytes, bytes]:
    return b"B", portal + b"\0" + statement + b"\0" + struct.pack("!hhh", 0, 0, 0)


def _execute(portal: bytes, max_rows: int = 0) -> tuple[bytes, bytes]:
    return b"E", portal + b"\0" + struct.pack("!i", max_rows)


def _refused(answer) -> bool:
    """No row, and refused by policy: the grants changed since, or a column no longer granted at all."""
    return _value_of(answer) == [] and any("42501" in e for e in errors(answer))


# --- 1. held answers: every way rows planned under an old grant could still go out -------------------------------
@pytest.mark.parametrize("change", ["row_filter", "columns"])
def test_a_portal_described_before_the_grant_narrowed_sends_no_rows(city, change):
    """Defect: Describe of a portal runs its query (the rows are then held by the portal), and the first
    Execute sent them without planning again: only a resumed portal (rows sent before) was checked. In a
    transaction block the portal outlives Sync, so Bind + Describe, a grant narrowed by the owner, then
    Execute handed out the rows read under the old grant."""
    engine = city["engine"]
    with Lake(engine.settings.lake) as lake:
        grant = add_grant(lake, engine.registry, "tax", "firm_secrets")
    r = _signed_in(city)
    try:
        r.send(b"Q", b"BEGIN\0")
        assert r.until()[-1] == (b"Z", b"T")
        answer = _sync_answer(r, _parse(b"SELECT uscc, capital FROM shared.firm_secrets"), _bind(b"p"),
                              (b"D", b"Pp\0"))
        assert not errors(answer) and any(k == b"T" for k, _ in answer), answer  # described: rows held
        grant = _narrow(engine, grant, change)
        answer = _sync_answer(r, _execute(b"p"))
        assert _refused(answer), f"a described portal sent rows of a grant narrowed since ({change}): {answer}"
    finally:
        r.close()
        with Lake(engine.settings.lake) as lake:
            revoke_grant(lake, grant)


@pytest.mark.parametrize("order", ["suspended", "described"])
def test_a_fetch_portal_sends_no_rows_once_the_grant_narrowed(city, order):
    """Defect: FETCH ALL through the extended protocol is a portal whose rows are the cursor's; resumed after
    a row limit (or executed after Describe, which ran the FETCH), it was never checked again: only portals of
    queries were, so the cursor's remaining rows under the old grant went out."""
    engine = city["engine"]
    with Lake(engine.settings.lake) as lake:
        grant = add_grant(lake, engine.registry, "tax", "firm_secrets")
    r = _signed_in(city)
    try:
        r.send(b"Q", b"BEGIN; DECLARE c CURSOR FOR SELECT uscc, capital FROM shared.firm_secrets\0")
        assert r.until()[-1] == (b"Z", b"T")
        if order == "suspended":
            answer = _sync_answer(r, _parse(b"FETCH ALL FROM c"), _bind(b"f"), _execute(b"f", 1))
            assert not errors(answer) and len(_value_of(answer)) == 1 and (b"s", b"") in answer, answer
        else:
            answer = _sync_answer(r, _parse(b"FETCH ALL FROM c"), _bind(b"f"), (b"D", b"Pf\0"))
            assert not errors(answer), answer
        _narrow(engine, grant, "row_filter")
        answer = _sync_answer(r, _execute(b"f"))
        assert _refused(answer), f"a FETCH portal sent the cursor's rows under a narrowed grant ({order}): {answer}"
    finally:
        r.close()
        with Lake(engine.settings.lake) as lake:
            for g in lake.con.execute("SELECT grant_id FROM lake.ops.grants WHERE revoked_at IS NULL").fetchall():
                revoke_grant(lake, g[0])


# --- 2. file scans: the files must be the table, column ids included ---------------------------------------------
@pytest.mark.parametrize("dropped", [1, 2, 3])
def test_a_column_dropped_and_added_again_reads_as_ducklake_reads_it(tmp_path, dropped):
    """Defect: the servers' file scan (sharing.filescan) compared a file's column names and types with the
    table's, not their ids. A column dropped and added again under the same name and type (the last ones, so
    the order is unchanged too) is a new column to DuckLake, NULL in the files written before; read_parquet
    maps by name and answered the values of the dropped column: data an owner removed came back to every
    department with a grant on the table."""
    from tests.test_filescan import ThroughDuckLake, answer, direct, make_home

    home = make_home(tmp_path)
    columns = ["uscc", "enterprise_name", "enterprise_status", "capital", "staff", "founded"]
    types = {"capital": "DECIMAL(18,2)", "staff": "BIGINT", "founded": "DATE", "enterprise_status": "VARCHAR"}
    with Lake(home.lake) as lake:
        for name in columns[-dropped:]:
            lake.con.execute(f"ALTER TABLE lake.shared.firms DROP COLUMN {name}")
        for name in columns[-dropped:]:
            lake.con.execute(f"ALTER TABLE lake.shared.firms ADD COLUMN {name} {types[name]}")
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    oracle = ThroughDuckLake(home, load_registry(home.registry_dir), persistent=True)
    try:
        sql = f"SELECT uscc, {', '.join(columns[-dropped:])} FROM shared.firms"
        expected = answer(oracle, sql, "amr")
        assert expected[0] != "refused" and all(v is None for row in expected[1] for v in row[1:]), expected
        assert answer(fast, sql, "amr") == expected, "the file scan read the values of a dropped column"
        assert not direct(fast, sql, "amr")
    finally:
        fast.close()
        oracle.close()


def test_a_table_whose_columns_keep_their_ids_is_still_read_from_its_files(tmp_path):
    """The control: the id check does not turn the file scan off for an ordinary table."""
    from tests.test_filescan import direct, make_home

    home = make_home(tmp_path)
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    try:
        assert direct(fast, "SELECT uscc, founded FROM shared.firms", "amr")
    finally:
        fast.close()
