"""Slow tier: department databases on real servers (PostgreSQL and MariaDB on this machine)."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import USCC, firms_dataset, load, rows, write_registry

pytestmark = pytest.mark.slow

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
MYSQL_DSN = "host=127.0.0.1 port=3306 user=root database=test"


def dataset(driver: str, dsn: str, table: str) -> dict:
    return firms_dataset(
        name="persons", key=["resident_id"], load_mode="upsert",
        columns=[{"name": "resident_id", "source": "sfzh", "type": "string", "required": True},
                 {"name": "person_name", "source": "xm", "type": "string"},
                 {"name": "employer", "source": "dwdm", "element": "uscc"},
                 {"name": "updated_at", "source": "gxsj", "type": "timestamp"}],
        connector={"kind": "database", "driver": driver, "dsn": dsn, "table": table, "watermark": "gxsj"})


@pytest.fixture
def pg_table():
    psycopg = pytest.importorskip("psycopg")
    schema = f"onesource_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); .ci/run shows how to start it")
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.rk (sfzh text primary key, xm text, dwdm text, gxsj timestamp)")
    yield conn, f"{schema}.rk"
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


def test_postgres_source_incremental(settings, pg_table):
    conn, table = pg_table
    conn.execute(f"INSERT INTO {table} VALUES ('11010519491231002X', '张三', %s, '2026-11-01 09:00'), "
                 f"('110105194912310011', '李四', %s, '2026-11-01 10:00')", [USCC[0], USCC[1]])
    write_registry(settings.registry_dir, [firms_dataset(), dataset("postgres", PG_DSN, table)])
    assert [(r.status, r.rows) for r in load(settings, "persons")] == [("published", 2)]
    assert [r.status for r in load(settings, "persons")] == ["unchanged"]
    conn.execute(f"UPDATE {table} SET xm = '李四（改）', gxsj = '2026-11-02 08:00' WHERE sfzh = '110105194912310011'")
    conn.execute(f"INSERT INTO {table} VALUES ('110105195001010012', '王五', %s, '2026-11-02 09:00')", [USCC[2]])
    assert [(r.status, r.rows) for r in load(settings, "persons")] == [("published", 2)]
    assert rows(settings, "SELECT resident_id, person_name FROM shared.persons ORDER BY 1") == [
        ("110105194912310011", "李四（改）"), ("11010519491231002X", "张三"), ("110105195001010012", "王五")]
    assert rows(settings, "SELECT DISTINCT source FROM ops.loads") == [(f"postgres:{table}",)]


def test_postgres_down_is_transient(settings):
    from connectors import SourceUnavailableError

    write_registry(settings.registry_dir, [firms_dataset(), dataset("postgres", "host=127.0.0.1 port=1 dbname=x",
                                                                    "public.t")])
    with pytest.raises(SourceUnavailableError, match="cannot open source database"):
        load(settings, "persons")


def test_postgres_drops_the_connection_mid_extract(settings, pg_table):
    """Bad-input corpus: the department database drops the connection while the extract is read. The
    load fails as transient (Airflow retries it), names the endpoint, lands nothing partial and leaves
    the shared table at its last good snapshot; the retry after the server is back publishes."""
    import threading

    import psycopg

    from connectors import SourceUnavailableError

    conn, table = pg_table
    conn.execute(f"INSERT INTO {table} VALUES ('11010519491231002X', '张三', %s, '2026-11-01 09:00')", [USCC[0]])
    schema = table.split(".")[0]
    # a view that reads slowly, so the extract is still running when its backend is terminated
    conn.execute(f"CREATE VIEW {schema}.slow AS SELECT rk.* FROM {table} rk, generate_series(1, 20) g "
                 "WHERE g = 1 OR pg_sleep(0.1) IS NULL")
    write_registry(settings.registry_dir, [firms_dataset(), dataset("postgres", PG_DSN, table)])
    assert [r.status for r in load(settings, "persons")] == ["published"]
    before = rows(settings, "SELECT * FROM shared.persons")
    conn.execute(f"INSERT INTO {table} VALUES ('110105194912310011', '李四', %s, '2026-11-02 09:00')", [USCC[1]])
    write_registry(settings.registry_dir, [firms_dataset(), dataset("postgres", PG_DSN, f"{schema}.slow")])

    def terminate() -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as killer:
            for _ in range(100):
                hit = killer.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'active' "
                                     "AND query LIKE %s AND pid <> pg_backend_pid()", [f"%{schema}%slow%"]).fetchall()
                if hit:
                    return
                threading.Event().wait(0.05)

    killer = threading.Thread(target=terminate)
    killer.start()
    with pytest.raises(SourceUnavailableError) as caught:
        load(settings, "persons")
    killer.join()
    message = str(caught.value)
    assert "dropped the connection" in message and "postgres://127.0.0.1:5432/test" in message, message
    assert "persons" in message and "retried" in message
    assert rows(settings, "SELECT * FROM shared.persons") == before
    assert not list((settings.landing_dir / "persons").glob(".extract-*")), "a partial extract was kept"
    # the watermark did not move: the retry extracts exactly the one new row
    assert [(r.status, r.rows) for r in load(settings, "persons")] == [("published", 1)]
    assert rows(settings, "SELECT count(*) FROM shared.persons") == [(2,)]


def test_mariadb_source(settings):
    from core.duck import connect

    table = f"rk_{uuid.uuid4().hex[:8]}"
    con = connect(extensions=("mysql_scanner",))
    try:
        con.execute(f"ATTACH '{MYSQL_DSN}' AS my (TYPE mysql)")
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not there
        pytest.fail(f"MariaDB is not running on 127.0.0.1:3306 ({exc}); .ci/run shows how to start it")
    con.execute(f"CREATE TABLE my.{table} (sfzh VARCHAR(18), xm VARCHAR(50), dwdm VARCHAR(18), gxsj DATETIME)")
    con.execute(f"INSERT INTO my.{table} VALUES ('11010519491231002X', '张三', '{USCC[0]}', '2026-11-01 09:00:00')")
    try:
        write_registry(settings.registry_dir, [firms_dataset(), dataset("mysql", MYSQL_DSN, table)])
        assert [(r.status, r.rows) for r in load(settings, "persons")] == [("published", 1)]
        assert rows(settings, "SELECT person_name FROM shared.persons") == [("张三",)]
    finally:
        con.execute(f"DROP TABLE my.{table}")
        con.close()
