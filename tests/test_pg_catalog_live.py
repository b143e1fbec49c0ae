"""Slow tier: the catalog through real clients on a real ``onesource serve`` (one server for the module).

psql 15's meta-commands, PgJDBC's DatabaseMetaData calls as DBeaver makes them (tests/clients/JdbcProbe.java)
and SQLAlchemy's inspector answer as PostgreSQL would, for each department only about what it may read,
with the registry's Chinese titles as table and column comments. Written against the public behaviour of
the wire endpoint, whatever server implements it.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import REPO_ROOT, Settings
from lakehouse import Lake
from sharing.users import create_user
from tests.helpers import ELEMENTS, csv_text, drop, firms_dataset, free_port, load, wait_for_port, write_registry
from tests.support.pg_catalog import JARS, TAXPAYERS

pytestmark = pytest.mark.slow

INTERNAL = ("os_pg_catalog", "os_information_schema", "os_facts", "pg_shim", "duckdb", "memory")
"""Names of the sandbox's own making (or DuckDB's): never in an answer."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """amr (firms) and tax (firms, and taxpayers which it owns): conditional taxpayers is not amr's."""
    settings = Settings(home=tmp_path_factory.mktemp("catalog-live") / "home")
    elements = copy.deepcopy(ELEMENTS)
    elements["elements"].append({"name": "taxpayer_status", "name_zh": "纳税人状态", "name_en": "Taxpayer status",
                                 "type": "string", "authority": "taxpayers"})
    write_registry(settings.registry_dir, [firms_dataset(), TAXPAYERS], elements=elements)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    creds = {}
    with Lake(settings.lake) as lake:
        for dept, name in (("amr", "amr_analyst"), ("tax", "tax_analyst")):
            creds[name] = create_user(lake, dept, name)[0]
    pg_port = free_port()
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home)}
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(free_port()),
                             "--pg-port", str(pg_port)], env=env, cwd=REPO_ROOT,
                            stdout=open(settings.home / "serve.out", "a"), stderr=subprocess.STDOUT)
    wait_for_port(pg_port, proc)
    yield creds, pg_port
    proc.terminate()
    proc.wait(timeout=30)


def psql(served, user: str, *commands: str, expanded: bool = False) -> str:
    creds, pg_port = served
    if not shutil.which("psql"):
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    args = ["psql", "-X", "-h", "127.0.0.1", "-p", str(pg_port), "-U", user, "-d", "onesource", "-v", "ON_ERROR_STOP=1"]
    for command in ((r"\x on",) if expanded else ()) + commands:
        args += ["-c", command]
    out = subprocess.run(args, env={**os.environ, "PGPASSWORD": creds[user]}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"{commands}: {out.stderr}"
    assert not any(name in out.stdout for name in INTERNAL), out.stdout
    return out.stdout


def test_psql_meta_commands_show_the_department_its_catalog(served):
    listed = psql(served, "amr_analyst", r"\l", r"\du", r"\dn", r"\dt", r"\df")
    assert "onesource | onesource | UTF8" in listed and "(1 row)" in listed.split("List of roles")[0]
    assert "amr_analyst" in listed and "tax_analyst" not in listed
    schemas = listed.split("List of schemas")[1].split("List of relations")[0]
    assert " shared | onesource" in schemas and "pg_catalog" not in schemas
    assert " shared | firms | table | onesource" in listed and "taxpayers" not in listed
    assert "List of functions" in listed and "(0 rows)" in listed.split("List of functions")[1]
    plus = psql(served, "amr_analyst", r"\dt+", r"\d", r"\d shared.firms", r"\d+ firms")
    assert "企业登记" in plus and "taxpayers" not in plus
    for column, title in (("uscc", "统一社会信用代码"), ("capital", "注册资本"), ("founded", "成立日期")):
        assert any(column in line and title in line for line in plus.splitlines()), (column, title, plus)
    assert "numeric(18,2)" in plus and 'Table "shared.firms"' in plus
    owner = psql(served, "tax_analyst", r"\dt+", r"\d+ shared.taxpayers", r"\du")
    assert "纳税人登记" in owner and "纳税人状态" in owner and "tax_analyst" in owner and "amr_analyst" not in owner
    hidden = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(served[1]), "-U", "amr_analyst", "-d",
                             "onesource", "-c", r"\d shared.taxpayers"],
                            env={**os.environ, "PGPASSWORD": served[0]["amr_analyst"]}, capture_output=True, text=True,
                            timeout=60)
    assert "taxpayers" not in hidden.stdout and "Did not find any relation" in hidden.stderr


def test_psql_expanded_display_and_session_values(served):
    out = psql(served, "amr_analyst", r"\dt", "SELECT current_user, session_user, current_database(), "
               "current_catalog, current_schema(), version(), count(*) FROM pg_catalog.pg_class", expanded=True)
    assert "Name   | firms" in out or "Name   | firms".replace("   ", "  ") in out
    for line in ("current_user     | amr_analyst", "session_user     | amr_analyst", "current_database | onesource",
                 "current_catalog  | onesource", "current_schema   | shared", "count            | 1"):
        assert line in out, out
    assert "PostgreSQL 15" in out and "OneSource" in out


def test_pgjdbc_metadata_as_dbeaver_asks_it(served):
    creds, pg_port = served
    jar = next((j for j in JARS if j.exists()), None)
    if not shutil.which("java") or jar is None:
        pytest.fail("java and the PgJDBC jar are needed (apt-get install default-jre-headless)")
    probe = Path(__file__).parent / "clients" / "JdbcProbe.java"
    out = subprocess.run(["java", "-cp", str(jar), str(probe), f"jdbc:postgresql://127.0.0.1:{pg_port}/onesource",
                          "amr_analyst", creds["amr_analyst"], "firms"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert not [r for r in rows if r[0] == "error"], out.stdout
    assert not any(name in out.stdout for name in INTERNAL)

    def answers(call: str) -> list[list[str]]:
        return [r[1:] for r in rows if r[0] == call]

    assert answers("catalogs") == [["onesource"]] and answers("catalog") == [["onesource"]]
    assert ["shared", "onesource"] in answers("schema") and answers("schema_now") == [["shared"]]
    assert answers("table") == [["shared", "firms", "TABLE", "企业登记"]]
    assert [r[1] for r in answers("any_table")] == ["firms"]
    assert answers("column") == [["uscc", "varchar", "12", "1", "统一社会信用代码"],
                                 ["enterprise_name", "varchar", "12", "2", "企业名称"],
                                 ["enterprise_status", "varchar", "12", "3", "登记状态"],
                                 ["capital", "numeric", "2", "4", "注册资本"], ["staff", "int8", "-5", "5", "人数"],
                                 ["founded", "date", "91", "6", "成立日期"]]
    assert {r[0] for r in answers("all_columns")} == {"firms"}
    for call in ("pk", "fk", "exported", "index", "function", "procedure"):
        assert answers(call) == [], call
    assert ["varchar", "12"] in answers("type") and ["int8", "-5"] in answers("type")
    assert answers("session")[0][:3] == ["amr_analyst", "onesource", "shared"]
    assert answers("rows") == [["2", "6"]]


def test_sqlalchemy_inspector_as_superset_reflects(served):
    import sqlalchemy as sa

    creds, pg_port = served
    engine = sa.create_engine(f"postgresql+psycopg://amr_analyst:{creds['amr_analyst']}@127.0.0.1:{pg_port}/onesource")
    try:
        inspector = sa.inspect(engine)
        assert "shared" in inspector.get_schema_names()
        assert inspector.default_schema_name == "shared"
        assert inspector.get_table_names(schema="shared") == ["firms"] == inspector.get_table_names()
        columns = inspector.get_columns("firms", schema="shared")
        assert [(c["name"], c["comment"]) for c in columns] == [
            ("uscc", "统一社会信用代码"), ("enterprise_name", "企业名称"), ("enterprise_status", "登记状态"),
            ("capital", "注册资本"), ("staff", "人数"), ("founded", "成立日期")]
        assert [type(c["type"]).__name__ for c in columns] == ["VARCHAR", "VARCHAR", "VARCHAR", "NUMERIC", "BIGINT",
                                                               "DATE"]
        assert inspector.get_table_comment("firms", schema="shared") == {"text": "企业登记"}
        assert inspector.get_pk_constraint("firms", schema="shared")["constrained_columns"] == []
        assert inspector.get_foreign_keys("firms", schema="shared") == []
        assert inspector.get_indexes("firms", schema="shared") == []
        assert not inspector.has_table("taxpayers", schema="shared")
    finally:
        engine.dispose()
