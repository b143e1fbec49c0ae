"""A fast `onesource sql --as`: what it imports, and extensions whose signatures DuckDB checks once.

Not timing tests (timings on a shared host say little; bench/cli.py measures): the guards here are on what a
query imports, whose cost is known (pandas alone is about 0.6 s of CPU), and on the security of the one
shortcut the lake's read-only connections take (an extension file's signature is checked once per file).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core import duck
from lakehouse.lake import Lake
from schemas import load_registry
from tests.helpers import USCC

# Never on the path of `onesource sql`: each costs from 0.05 to over 1 s of CPU to import.
HEAVY = ("airflow", "great_expectations", "fastapi", "starlette", "uvicorn", "pydantic", "pandas", "numpy",
         "pyarrow", "matplotlib", "jinja2", "sqlalchemy", "openpyxl", "faker", "httpx", "psycopg", "buenavista",
         "connectors", "quality", "metrics", "portal", "ingest.load")
FIRMS = [(USCC[0], "杭州甲科技有限公司", "1", 1234.5, 12), (USCC[1], "杭州乙贸易有限公司", "2", 88.0, 3),
         (USCC[2], "杭州丙建设有限公司", "1", 1e6, 1024)]


MODULES_AFTER = """
import json, sys
from onesource.cli import main
code = main(sys.argv[1:]) if sys.argv[1:] else 0
print("MODULES" + json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)), file=sys.stderr)
sys.exit(code)
"""
"""Runs ``onesource ARGS`` (or only imports the CLI) as a fresh process, then lists the modules it imported
(a failed import attempt, like DuckDB's probe for pandas, is not one)."""


def _run(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-c", MODULES_AFTER, *args], capture_output=True, text=True,
                          env=os.environ, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES"))
    return proc, set(json.loads(line.removeprefix("MODULES")))


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


@pytest.fixture
def lake_home(tiny, monkeypatch):
    """A home with the registry's ``firms`` shared: the table written straight into the lake (a real
    DuckLake catalog), without running a load (which imports the loading stage this test keeps out), and the
    registry in its cache."""
    with Lake(tiny.lake) as lake:
        lake.con.execute("CREATE TABLE lake.shared.firms (uscc VARCHAR, enterprise_name VARCHAR, "
                         "enterprise_status VARCHAR, capital DECIMAL(18, 2), staff INTEGER, founded DATE)")
        lake.con.executemany("INSERT INTO lake.shared.firms VALUES (?, ?, ?, ?, ?, NULL)", FIRMS)
    load_registry(tiny.registry_dir, tiny.cache_dir)  # cached as after any first use (reading YAML checks more)
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    return tiny


def _sql(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    return _run("sql", *args)


def test_the_cli_module_imports_no_stage():
    _, modules = _run()
    assert "onesource.cli" in modules
    # parsing the arguments needs none of these: each command imports its own stage, rich its first print
    assert not _heavy(modules) and not {"duckdb", "sqlglot", "rich", "yaml", "sharing", "schemas"} & modules


def test_a_governed_query_imports_only_its_stage(lake_home):
    first, _ = _sql("--as", "tax", "--format", "csv", "SELECT uscc, staff FROM shared.firms ORDER BY uscc")
    assert first.stdout.splitlines() == ["uscc,staff", *(f"{u},{s}" for u, *_, s in sorted(FIRMS))]
    again, modules = _sql("--as", "tax", "--format", "csv",
                          "SELECT uscc, staff FROM shared.firms ORDER BY uscc LIMIT 2")
    assert again.stdout.splitlines() == ["uscc,staff", *(f"{u},{s}" for u, *_, s in sorted(FIRMS)[:2])]
    assert {"duckdb", "sqlglot", "sharing.engine"} <= modules  # the stage it needs, and nothing heavy
    assert not _heavy(modules), sorted(_heavy(modules))
    # the registry came from its JSON cache and CSV printing needs no rich
    assert not {"yaml", "rich"} & modules


def test_the_table_printout_imports_rich_and_nothing_heavy(lake_home):
    proc, modules = _sql("--as", "tax", "SELECT enterprise_name, staff FROM shared.firms ORDER BY staff LIMIT 5")
    assert [name for _, name, *_ in sorted(FIRMS, key=lambda r: r[4])][0] in proc.stdout
    assert "3 row(s)" in proc.stdout
    assert "rich.table" in modules and not _heavy(modules), sorted(_heavy(modules))


def test_pandas_and_the_collector_are_left_as_they_were(lake_home, capsys, monkeypatch):
    """In a process that goes on (tests, a program calling main), `sql` leaves pandas as it found it (the same
    module when it was imported, importable afterwards when it was not) and the cyclic collector on; while
    the query ran, both were off."""
    import gc

    import sharing.engine as engine
    from onesource.cli import main

    during = {}
    real = engine.GovernedEngine._answer

    def answer(self, *args, **kwargs):
        during.update(gc=gc.isenabled(), pandas=sys.modules.get("pandas", "absent"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.GovernedEngine, "_answer", answer)
    before = sys.modules.get("pandas")
    assert gc.isenabled()
    assert main(["sql", "--as", "tax", "--format", "csv", "SELECT count(*) AS n FROM shared.firms"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]
    assert during == {"gc": False, "pandas": before}  # None: "not installed", unless it was imported before
    assert sys.modules.get("pandas") is before and gc.isenabled()
    assert importlib.util.find_spec("pandas") is not None


@pytest.mark.parametrize("package, names", [("lakehouse", ("Lake",)), ("ingest", ("LoadResult", "run_dataset")),
                                            ("sharing", ("QueryFailed", "QueryRefused", "QueryResult", "run_sql"))])
def test_package_names_load_on_first_use(package, names):
    module = importlib.import_module(package)
    assert set(module.__all__) == set(names)
    for name in names:
        value = getattr(module, name)
        assert value is getattr(importlib.import_module(module._HOME[name]), name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


# Extensions: DuckDB checks each file's signature once.

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onesource" / duck.VERIFIED_FILE


@pytest.fixture
def copy_of_tpch(tmp_path, monkeypatch):
    """A copy of a real, signed extension file (tpch: the smallest) that the test may tamper with."""
    path = tmp_path / "ext" / "tpch.duckdb_extension"
    path.parent.mkdir()
    path.write_bytes(duck.extension_path("tpch").read_bytes())
    real = duck.extension_path
    monkeypatch.setattr(duck, "extension_path", lambda name: path if name == "tpch" else real(name))
    return path


def _unsigned_allowed(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0])


def _tamper(path: Path) -> None:
    with open(path, "r+b") as f:  # one byte in the middle of the code: the signature no longer matches
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_file_is_checked_once_and_recorded_privately(cache, copy_of_tpch):
    con = duck.connect(extensions=("tpch",))
    assert not _unsigned_allowed(con) and not cache.exists()  # the default: DuckDB checks every LOAD
    con = duck.connect(extensions=("tpch",), verified_once=True)
    assert con.execute("SELECT count(*) FROM tpch_queries()").fetchone()[0] == 22
    assert _unsigned_allowed(con)
    assert cache.stat().st_mode & 0o777 == 0o600 and cache.parent.stat().st_mode & 0o777 == 0o700
    assert str(copy_of_tpch) in cache.read_text()
    again = duck.connect(extensions=("tpch",), verified_once=True)  # from the record now
    assert again.execute("SELECT count(*) FROM tpch_queries()").fetchone()[0] == 22


def test_a_file_changed_after_its_check_is_checked_again_and_refused(cache, copy_of_tpch):
    duck.connect(extensions=("tpch",), verified_once=True)
    recorded = cache.read_text()
    _tamper(copy_of_tpch)
    with pytest.raises(duckdb.Error, match="signature"):
        duck.connect(extensions=("tpch",), verified_once=True)
    assert cache.read_text() == recorded  # nothing of the changed file was recorded


def test_a_record_others_could_write_is_not_believed(cache, copy_of_tpch):
    _tamper(copy_of_tpch)
    cache.parent.mkdir(parents=True, mode=0o700)
    cache.write_text(json.dumps({str(copy_of_tpch): duck._identity(copy_of_tpch)}))  # a planted "verified"
    cache.chmod(0o666)
    with pytest.raises(duckdb.Error, match="signature"):
        duck.connect(extensions=("tpch",), verified_once=True)


def test_a_later_load_on_a_trusting_connection_is_verified_too(cache, copy_of_tpch):
    con = duck.connect(extensions=("sqlite_scanner",), verified_once=True)
    assert _unsigned_allowed(con)
    _tamper(copy_of_tpch)
    with pytest.raises(duckdb.Error, match="signature"):
        duck.load(con, "tpch")


def test_a_locked_down_connection_loads_nothing(cache, copy_of_tpch, tmp_path):
    """A department's query runs on a connection locked down first: no LOAD at all, verified or not."""
    from sharing.sql import lock_down

    con = duck.connect(extensions=("sqlite_scanner",), verified_once=True)
    lock_down(con, str(tmp_path))
    with pytest.raises(duckdb.Error, match="disabled"):
        con.execute(f"LOAD {duck.literal(str(copy_of_tpch))}")


def _copy_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A copy of a real, signed extension file that the test may tamper with, loaded in place of the package's."""
    path = tmp_path / "ext" / f"{name}.duckdb_extension"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(duck.extension_path(name).read_bytes())
    real = duck.extension_path
    monkeypatch.setattr(duck, "extension_path", lambda wanted: path if wanted == name else real(wanted))
    return path


def test_a_writer_checks_its_extensions_once_and_refuses_a_changed_file(cache, tmp_path, monkeypatch):
    """A load's lake connection (a writer) trusts an extension file only as a reader does: checked by DuckDB
    once, unchanged since. Its 0.2-0.3 s signature check was a fifth of a small load's fixed cost."""
    from core.config import Settings

    ducklake = _copy_extension(tmp_path, monkeypatch, "ducklake")
    settings = Settings(home=tmp_path / "home")
    with Lake(settings.lake) as lake:
        assert _unsigned_allowed(lake.con) and not lake.read_only
        lake.con.execute("CREATE TABLE lake.shared.t AS SELECT 1 AS x")
    assert str(ducklake) in cache.read_text()
    with Lake(settings.lake) as lake:  # from the record now
        assert lake.con.execute("SELECT x FROM lake.shared.t").fetchall() == [(1,)]
    _tamper(ducklake)
    with pytest.raises(duckdb.Error, match="signature"):
        Lake(settings.lake)


def test_a_load_verifies_the_extension_its_extract_needs(cache, tmp_path, monkeypatch):
    """A GBK extract needs the encodings extension, loaded on the writer mid-load: through core.duck.load,
    verified first. A changed file fails the load (nothing published, the raw file kept); the real one loads."""
    from core.config import Settings
    from tests.helpers import csv_text, drop, firms_dataset, load, shared_count, write_registry

    encodings = _copy_extension(tmp_path, monkeypatch, "encodings")
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir, [firms_dataset(
        connector={"kind": "file", "path": "amr/firms/*.csv", "format": "csv", "encoding": "gbk"})])
    drop(settings, "amr/firms/firms_1.csv", csv_text(), encoding="gbk")
    good = encodings.read_bytes()
    _tamper(encodings)
    with pytest.raises(duckdb.Error, match="signature"):
        load(settings)
    assert shared_count(settings, "firms") is None
    assert list(settings.landing_dir.glob("firms/*.csv"))  # the raw file is kept for the retry
    encodings.write_bytes(good)
    [result] = load(settings)
    assert (result.status, result.rows) == ("published", 3), result.message


def test_the_cli_looks_up_with_one_thread_and_queries_with_every_core(lake_home, monkeypatch, capsys):
    """The lake's own lookups (grants, the catalog) run on one DuckDB thread: a second only doubled their CPU.
    The department's query itself has every core again (QueryLimits.threads 0, the CLI's default)."""
    import sharing.engine as engine
    from onesource.cli import main

    seen = {}
    real_steps, real_answer = engine.GovernedEngine._steps, engine.GovernedEngine._answer

    def steps(self, kind, on, *args, **kwargs):
        seen["lookups"] = on.con.execute("SELECT current_setting('threads')").fetchone()[0]
        return real_steps(self, kind, on, *args, **kwargs)

    def answer(self, con, *args, **kwargs):
        seen["query"] = con.execute("SELECT current_setting('threads')").fetchone()[0]
        return real_answer(self, con, *args, **kwargs)

    monkeypatch.setattr(engine.GovernedEngine, "_steps", steps)
    monkeypatch.setattr(engine.GovernedEngine, "_answer", answer)
    assert main(["sql", "--as", "tax", "--format", "csv", "SELECT count(*) AS n FROM shared.firms"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]
    assert seen == {"lookups": 1, "query": os.cpu_count()}
