"""The servers read a shared table straight from its Parquet files only where that is the table (sharing.filescan).

The oracle for every answer is the same engine reading through DuckLake's own scan. The file scan must
fall back to DuckLake whenever the files alone are not the table (delete files, rows inlined in the catalog,
a column added since the files were written, an encrypted lake), follow each commit, and pass
:func:`sharing.policy.verify` only as the planner wrote it: a ``read_parquet`` with any other argument, option
or list is refused.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused
from sharing.grants import add_grant, revoke_grant
from sharing.policy import verify
from tests.helpers import drop, firms_dataset, load, write_registry
from tests.support.filescan import ThroughDuckLake, answer, direct, extract, make_home, uscc


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    return make_home(tmp_path_factory.mktemp("filescan"))


@pytest.fixture(scope="module")
def engines(home):
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    oracle = ThroughDuckLake(home, load_registry(home.registry_dir), persistent=True)
    yield fast, oracle
    fast.close()
    oracle.close()


COLUMNS = ("uscc", "enterprise_name", "enterprise_status", "capital", "staff", "founded")
FILTERS = (None, "enterprise_status = '1'", "capital > 1500", "staff % 2 = 0 OR founded > DATE '2020-01-04'")


@st.composite
def queries(draw) -> str:
    """Projections, predicates, groupings, joins and subqueries over the shared table."""
    cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4, unique=True))
    where = draw(st.sampled_from(["", " WHERE capital > {n}", " WHERE staff BETWEEN {n} AND {m}",
                                  " WHERE enterprise_status IN ('1', '9')", " WHERE uscc LIKE '9143%'"]))
    n = draw(st.integers(0, 4000))
    shape = draw(st.sampled_from(["plain", "group", "join", "sub", "union"]))
    where = where.format(n=n, m=n // 50 + 5)
    if shape == "group":
        return f"SELECT {cols[0]}, count(*) AS n, max(capital) AS top FROM shared.firms{where} GROUP BY 1"
    if shape == "join":
        return (f"SELECT a.{cols[0]}, b.staff FROM shared.firms a JOIN shared.firms b ON a.uscc = b.uscc"
                f"{where.replace('WHERE ', 'WHERE a.')}")
    if shape == "sub":
        return f"SELECT {', '.join(cols)} FROM shared.firms WHERE capital > (SELECT avg(capital) FROM shared.firms)"
    if shape == "union":
        return f"SELECT {cols[0]} FROM shared.firms{where} UNION ALL SELECT {cols[0]} FROM shared.firms"
    return f"SELECT {', '.join(cols)} FROM shared.firms{where}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=queries(), columns=st.sampled_from([None, ("uscc", "enterprise_status", "capital"),
                                               ("uscc", "enterprise_name", "staff")]),
       row_filter=st.sampled_from(FILTERS))
def test_file_scan_answers_equal_ducklake_scan_under_every_grant(home, engines, sql, columns, row_filter):
    fast, oracle = engines
    with Lake(home.lake) as lake:
        grant = add_grant(lake, load_registry(home.registry_dir), "tax", "firms",
                          columns=list(columns) if columns else None, row_filter=row_filter)
    try:
        got, expected = answer(fast, sql), answer(oracle, sql)
        assert got == expected, sql
        if got[0] != "refused":
            assert direct(fast, sql), "a table whose files are the table is read from its files"
    finally:
        with Lake(home.lake) as lake:
            revoke_grant(lake, grant)


def test_each_commit_is_read_at_once(tmp_path):
    home = make_home(tmp_path)
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    try:
        sql = "SELECT count(*) AS n, sum(capital) AS c FROM shared.firms"
        assert answer(fast, sql, "amr")[1] == [(40, 82000)]
        drop(home, "amr/firms/b.csv", extract(range(1, 61)))  # a new delivery replaces the snapshot
        assert [r.status for r in load(home)] == ["published"]
        assert answer(fast, sql, "amr")[1] == [(60, 183000)]
        assert direct(fast, sql, "amr")
    finally:
        fast.close()


def _fallback_case(home: Settings, case: str) -> None:
    with Lake(home.lake) as lake:
        if case == "inlined":  # a small insert kept in the catalog database: in no file
            lake.con.execute("CALL lake.set_option('data_inlining_row_limit', 100)")
            lake.con.execute(f"INSERT INTO lake.shared.firms VALUES ('{uscc(99)}', '长沙第99有限公司', '2', 9900, 99, "
                             "DATE '2021-01-01')")
        elif case == "deleted":  # a delete file beside the data file
            lake.con.execute("DELETE FROM lake.shared.firms WHERE staff % 4 = 0")
        elif case == "column":  # a column added since the files were written
            lake.con.execute("ALTER TABLE lake.shared.firms ADD COLUMN remark VARCHAR DEFAULT 'x'")
        elif case == "renamed":  # a column renamed: DuckLake maps it by field id, read_parquet by name
            lake.con.execute("ALTER TABLE lake.shared.firms RENAME COLUMN staff TO staff_count")
            lake.con.execute("ALTER TABLE lake.shared.firms ADD COLUMN staff BIGINT DEFAULT 7")


@pytest.mark.parametrize("case", ["inlined", "deleted", "column", "renamed"])
def test_tables_that_are_more_than_their_files_are_read_through_ducklake(tmp_path, case):
    home = make_home(tmp_path)
    _fallback_case(home, case)
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    oracle = ThroughDuckLake(home, load_registry(home.registry_dir), persistent=True)
    try:
        for sql in ("SELECT uscc, staff, capital FROM shared.firms", "SELECT count(*) AS n FROM shared.firms"):
            assert answer(fast, sql, "amr") == answer(oracle, sql, "amr")
            assert not direct(fast, sql, "amr"), case
        with Lake(home.lake, read_only=True) as lake:
            truth = lake.con.execute("SELECT count(*) FROM lake.shared.firms").fetchone()[0]
        assert answer(fast, "SELECT count(*) AS n FROM shared.firms", "amr")[1] == [(truth,)]
    finally:
        fast.close()
        oracle.close()


def test_an_encrypted_lake_is_read_through_ducklake(tmp_path):
    home = Settings(home=tmp_path / "home")
    home = dataclasses.replace(home, lake=dataclasses.replace(home.lake, encrypted=True))
    write_registry(home.registry_dir, [firms_dataset()])
    drop(home, "amr/firms/a.csv", extract(range(1, 11)))
    assert [r.status for r in load(home, environ={"ONESOURCE_ENCRYPT": "1"})] == ["published"]
    fast = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    try:
        sql = "SELECT count(*) AS n FROM shared.firms"
        assert answer(fast, sql, "amr")[1] == [(10,)]
        assert not direct(fast, sql, "amr")
    finally:
        fast.close()


# verify(): a file scan is admitted only exactly as the planner writes it

FILES = ("/lake/data/shared/firms/ducklake-a.parquet", "/lake/data/shared/firms/ducklake-b.parquet")
OTHER = ("/lake/data/shared/persons/ducklake-c.parquet",)


def _scan(args: str) -> str:
    return f'SELECT "__os_scan"."uscc" AS "uscc" FROM {args} AS "__os_scan"'


def _list(files) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def test_the_planned_file_scan_is_admitted():
    verify(_scan(f"READ_PARQUET({_list(FILES)})"), {"firms"}, {"firms": FILES})


MUTATIONS = [
    lambda: f"READ_PARQUET({_list(FILES)}, filename = TRUE)",
    lambda: f"READ_PARQUET({_list(FILES)}, hive_partitioning = TRUE)",
    lambda: f"READ_PARQUET({_list(FILES)}, union_by_name = TRUE)",
    lambda: f"READ_PARQUET({_list(FILES[:1])})",
    lambda: f"READ_PARQUET({_list(FILES + OTHER)})",
    lambda: f"READ_PARQUET({_list(OTHER)})",
    lambda: f"READ_PARQUET({_list(reversed(FILES))})",
    lambda: "READ_PARQUET('/lake/data/shared/firms/*.parquet')",
    lambda: f"READ_PARQUET('{FILES[0]}')",
    lambda: f"READ_CSV({_list(FILES)})",
    lambda: f"PARQUET_SCAN({_list(FILES)})",
    lambda: f"main.READ_PARQUET({_list(FILES)})",
    lambda: "READ_PARQUET(['/etc/passwd'])",
    lambda: f"READ_PARQUET({_list(FILES)}) AS x(a, b)",
    lambda: f"READ_PARQUET(list_concat({_list(FILES)}, ['/etc/passwd']))",
]


@pytest.mark.parametrize("mutation", range(len(MUTATIONS)))
def test_any_other_file_scan_is_refused(mutation):
    with pytest.raises(QueryRefused):
        verify(_scan(MUTATIONS[mutation]()), {"firms"}, {"firms": FILES})


def test_a_file_scan_of_a_dataset_the_query_does_not_read_is_refused():
    with pytest.raises(QueryRefused):  # persons' files are resolved, but the query reads only firms
        verify(_scan(f"READ_PARQUET({_list(OTHER)})"), {"firms"}, {"firms": FILES, "persons": OTHER})
    with pytest.raises(QueryRefused):  # no file scans resolved at all (the CLI, time travel)
        verify(_scan(f"READ_PARQUET({_list(FILES)})"), {"firms"})


@settings(max_examples=200, deadline=None)
@given(files=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30),
                      min_size=1, max_size=4),
       planned=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30),
                        min_size=1, max_size=4))
def test_a_list_is_admitted_only_when_it_is_the_resolved_one_value_for_value(files, planned):
    sql = _scan(f"READ_PARQUET({_list(planned)})")
    if tuple(planned) == tuple(files):
        verify(sql, {"firms"}, {"firms": tuple(files)})
    else:
        with pytest.raises(QueryRefused):
            verify(sql, {"firms"}, {"firms": tuple(files)})


def test_a_department_cannot_write_a_file_scan(engines):
    fast, _ = engines
    with Lake(fast.settings.lake, read_only=True) as lake:
        [path] = [r[0] for r in lake.con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'firms', schema => 'shared')").fetchall()]
    for sql in (f"SELECT * FROM read_parquet('{path}')", f"SELECT * FROM read_parquet(['{path}'])",
                f"SELECT * FROM parquet_scan('{path}')", f"SELECT * FROM '{path}'"):
        with pytest.raises(QueryRefused):
            fast.query("amr", sql)
