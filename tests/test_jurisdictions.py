"""Jurisdictions: organisations as a tree of division codes, and grants scoped to the requester's jurisdiction.

Registry checks on ``organisations.yaml`` and ``division_column``; then hypothesis over generated organisation
trees, rows and grants, with an oracle computed by hand here (a division code lies under an organisation when
it starts with the organisation's significant digits): the policy view of a grant scoped to the jurisdiction
holds exactly the rows under the requester's code, and a street's user never sees a neighbour's row, whatever
the query's shape. The planner and the policy relations are the real ones (sharing.grants.visible,
sharing.policy.plan); the table lies in an in-memory DuckDB attached as the lake, so the tier stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.changsha.city import DIVISIONS
from schemas import check_registry, load_registry
from schemas.model import division_level, division_prefix
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.grants import Grant, add_grant, visible
from sharing.policy import plan
from tests.helpers import DEPARTMENTS, ELEMENTS, dump, firms_dataset, write_registry
from tests.support.jurisdictions import CITY, PLACES, TREE, messages, organisations, registry_at

# --- the registry -------------------------------------------------------------------------------------

def test_a_tree_of_organisations_and_a_division_column_load(tmp_path):
    registry, issues = registry_at(tmp_path / "registry")
    assert not issues, messages(issues)
    assert [o.level for o in registry.organisations] == ["city", "district", "street", "street", "district"]
    assert registry.organisation("430104001").parent == "430104"
    assert registry.dataset("places").division_column == "division"
    assert load_registry(tmp_path / "registry", tmp_path / "cache").organisations == registry.organisations


def test_a_registry_without_organisations_keeps_its_version(tmp_path):
    """Neither an absent organisations.yaml nor the new dataset key changes an existing registry's version."""
    write_registry(tmp_path / "a", [firms_dataset()])
    before = load_registry(tmp_path / "a").version
    assert load_registry(tmp_path / "a").organisations == ()
    dump(tmp_path / "a" / "organisations.yaml", TREE)
    assert load_registry(tmp_path / "a").version != before


@pytest.mark.parametrize(("orgs", "places", "expected"), [
    (organisations((CITY, "长沙市", None), ("430104001", "望月湖街道", "430199")), None,
     r"organisation '430104001' \(望月湖街道\): unknown parent '430199'"),
    (organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY), ("430102001", "文艺路街道", "430104")), None,
     r"'430102001' \(文艺路街道\): its code is not under its parent 430104 \(岳麓区\).*430104"),
    (organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY), ("430104", "岳麓区", CITY)), None,
     r"duplicate organisation '430104'"),
    (organisations((CITY, "长沙市", None), ("430104001", "望月湖街道", None)), None,
     r"only the city has no parent; name the district"),
    (organisations((CITY, "长沙市", None), ("4301041", "某街道", CITY)), None,
     r"organisation '4301041': a division code has 6 digits"),
    (organisations((CITY, "长沙市", None), ("430104", "岳麓区", "430104001"), ("430104001", "望月湖街道", "430104")),
     None, r"'430104' \(岳麓区\): its code is not under its parent 430104001"),
    (TREE, {**PLACES, "division_column": "district"}, r"division_column 'district' is not one of its columns"),
    (TREE, {**PLACES, "division_column": "n"}, r"division_column 'n' is a integer column; division codes are text"),
    ({"organisation": []}, None, r"organisations.yaml: unknown key 'organisation'; did you mean `organisations`"),
])
def test_registry_checks_name_the_organisation_and_the_fix(tmp_path, orgs, places, expected):
    _, issues = registry_at(tmp_path / "registry", orgs, places)
    assert re.search(expected, messages(issues)), messages(issues)
    assert all(i.file.endswith((".yaml",)) and i.line >= 1 for i in issues)


def test_the_division_column_error_names_its_line(tmp_path):
    _, issues = registry_at(tmp_path / "registry", TREE, {**PLACES, "division_column": "district"})
    [issue] = [i for i in issues if "division_column" in i.message]
    text = Path(tmp_path / "registry" / "datasets" / "amr" / "places.yaml").read_text().splitlines()
    assert text[issue.line - 1].startswith("division_column:")


def test_a_jurisdiction_grant_needs_a_division_column(tmp_path):
    from core.config import Settings
    from lakehouse import Lake

    settings = Settings(home=tmp_path / "home")
    registry, issues = registry_at(settings.registry_dir, TREE, {k: v for k, v in PLACES.items()
                                                                 if k != "division_column"})
    assert not issues, messages(issues)
    with Lake(settings.lake) as lake, pytest.raises(QueryRefused, match="places declares no division_column"):
        add_grant(lake, registry, "tax", "places", scope="jurisdiction")
    with Lake(settings.lake) as lake, pytest.raises(QueryRefused, match="no grant scope 'street'"):
        add_grant(lake, registry, "tax", "places", scope="street")


def test_division_codes_by_hand():
    assert [division_level(c) for c in ("430100", "430104", "430104001", "430104001002", "430000", "4301", "43010x")] \
        == ["city", "district", "street", "community", None, None, None]
    assert [division_prefix(c) for c in ("430100", "430104", "430104001", "430104000", "430104001000")] \
        == ["4301", "430104", "430104001", "430104", "430104001"]


# --- generated trees, rows and grants, against an oracle computed here ----------------------------------

@st.composite
def trees(draw):
    """The city, some of its real districts, 9-digit streets under them, some 12-digit communities."""
    districts = draw(st.lists(st.sampled_from(sorted(DIVISIONS)), min_size=1, max_size=3, unique=True))
    orgs = [(CITY, "长沙市", None)] + [(d, DIVISIONS[d], CITY) for d in districts]
    for d in districts:
        for s in draw(st.lists(st.integers(1, 12), max_size=3, unique=True)):
            street = f"{d}{s:03d}"
            orgs.append((street, f"街道{street}", d))
            if draw(st.integers(0, 3)) == 0:
                orgs.append((f"{street}001", f"社区{street}", street))
    return orgs


@st.composite
def worlds(draw):
    orgs = draw(trees())
    codes = [c for c, _, _ in orgs]
    # rows placed anywhere in the tree, in other districts and streets, outside the city, or nowhere
    elsewhere = ["430181", "430181003", "440103", "440103001", "4301", "", None, "4301040010", "430104x01"]
    places = draw(st.lists(st.sampled_from(codes + elsewhere), min_size=1, max_size=25))
    rows = [(f"r{i:04d}", code, draw(st.integers(0, 9)), f"s{i:04d}") for i, code in enumerate(places)]
    own = draw(st.one_of(st.none(), st.integers(0, 9)))  # the jurisdiction grant's own row filter: n >= own
    other = draw(st.one_of(st.none(), st.integers(0, 9)))  # a second grant, to all rows with n >= other
    requester = draw(st.sampled_from([*codes, None, "430199", "430104099"]))
    department = draw(st.sampled_from(["tax", "tax", "tax", "amr"]))  # amr owns the dataset
    return orgs, rows, own, other, requester, department


def under(code: str | None, requester: str | None, known: set[str]) -> bool:
    """The oracle: a row's code lies under the requester's organisation (by hand, not the platform's code)."""
    if requester is None:
        return True  # no organisation: the city
    if requester not in known:
        return False  # an organisation the registry does not list: nothing (deny by default)
    digits = requester
    while len(digits) > 6 and digits[-3:] == "000":
        digits = digits[:-3]
    if len(digits) == 6 and digits[-2:] == "00":
        return True  # the city 430100: every row
    well_formed = code is not None and code.isdigit() and len(code) in (6, 9, 12)
    return well_formed and code[:len(digits)] == digits


def expected_ids(world) -> set[str]:
    orgs, rows, own, other, requester, department = world
    known = {c for c, _, _ in orgs}
    if department == "amr":
        return {r[0] for r in rows if under(r[1], requester, known)}
    mine = {r[0] for r in rows if under(r[1], requester, known) and (own is None or r[2] >= own)}
    return mine | ({r[0] for r in rows if r[2] >= other} if other is not None else set())


_REGISTRY_CACHE: dict[tuple, object] = {}


def registry_of(tmp_path_factory, orgs):
    key = tuple(orgs)
    if key not in _REGISTRY_CACHE:
        root = tmp_path_factory.mktemp("jur") / "registry"
        write_registry(root, [firms_dataset(), PLACES])
        dump(root / "organisations.yaml", organisations(*orgs))
        _REGISTRY_CACHE[key] = load_registry(root)
    return _REGISTRY_CACHE[key]


def lake_with(rows) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    con.execute("CREATE SCHEMA lake.shared")
    con.execute("CREATE TABLE lake.shared.places (id VARCHAR, division VARCHAR, n BIGINT, secret VARCHAR)")
    con.executemany("INSERT INTO lake.shared.places VALUES (?, ?, ?, ?)", rows)
    return con


def access_of(registry, world):
    _, _, own, other, requester, department = world
    grants = [Grant("g1", "tax", "places", None, f'"n" >= {own}' if own is not None else None, None, {},
                    "jurisdiction")]
    if other is not None:
        grants.append(Grant("g2", "tax", "places", None, f'"n" >= {other}', None, {}, "all"))
    return visible(registry, grants if department == "tax" else [], department, requester)


def governed(con, registry, access, department, sql):
    planned = plan(sql, access, registry, department, dialect="duckdb")
    return con.execute(planned.sql_run).fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds())
def test_the_policy_view_holds_exactly_the_rows_under_the_requester(tmp_path_factory, world):
    orgs, rows, *_, department = world
    registry = registry_of(tmp_path_factory, orgs)
    access = access_of(registry, world)
    con = lake_with(rows)
    got = governed(con, registry, access, department, "SELECT id, division, n, secret FROM shared.places")
    assert sorted(r[0] for r in got) == sorted(expected_ids(world))
    by_id = {r[0]: r for r in rows}
    assert all(tuple(r) == by_id[r[0]] for r in got)  # the rows themselves, not altered


NEIGHBOURS = [(CITY, "长沙市", None), ("430104", "岳麓区", CITY), ("430104001", "望月湖街道", "430104"),
              ("430104002", "岳麓街道", "430104"), ("430104010", "岳麓第十街道", "430104"),
              ("430102", "芙蓉区", CITY), ("430102001", "文艺路街道", "430102")]
NEIGHBOUR_ROWS = [(f"r{i:04d}", code, i % 10, f"s{i:04d}") for i, code in enumerate(
    ["430104001"] * 4 + ["430104002"] * 3 + ["430104010", "4301040010", "430104", "430102001", "430102", None, ""])]
"""r0008's code has a digit too many: under no district nor street (only the city reads it)."""
MINE = {r[0] for r in NEIGHBOUR_ROWS if r[1] == "430104001"}
TABLE = "shared.places"
ALIASES = ["p", "t", "places", "q"]
COLUMNS = ["id", "division", "n", "secret"]


@st.composite
def value(draw, alias):
    col = draw(st.sampled_from(COLUMNS))
    kind = draw(st.sampled_from(["col", "row", "struct", "cast", "agg", "list", "func", "case", "subq"]))
    return {"col": f"{alias}.{col}", "row": alias, "struct": f"{{'k': {alias}}}", "cast": f"CAST({alias} AS VARCHAR)",
            "agg": f"max({alias}.{col})", "list": f"list({alias}.{col})", "func": f"upper({alias}.{col})",
            "case": f"CASE WHEN {col} LIKE '4301%' THEN {col} END",
            "subq": f"(SELECT string_agg({col}, ',') FROM {TABLE})"}[kind]


@st.composite
def select(draw):
    alias = draw(st.sampled_from(ALIASES))
    values = ", ".join(draw(st.lists(value(alias), min_size=1, max_size=3)))
    src = f"{TABLE} AS {alias}"
    join = draw(st.sampled_from(["", "", "self", "natural", "lateral", "using"]))
    if join == "self":
        src += f" JOIN {TABLE} AS j ON j.division <> {alias}.division"
    elif join == "natural":
        src += f" NATURAL JOIN {TABLE} AS j"
    elif join == "using":
        src += f" JOIN {TABLE} AS j USING ({draw(st.sampled_from(COLUMNS))})"
    elif join == "lateral":
        src += f", LATERAL (SELECT {alias}.{draw(st.sampled_from(COLUMNS))} AS v) AS l"
    sql = f"SELECT {values} FROM {src}"
    if draw(st.booleans()):
        sql += draw(st.sampled_from([" WHERE division LIKE '430104%'", " WHERE division = '430104002'",
                                     " WHERE division IS NULL OR division <> ''",
                                     f" WHERE EXISTS (SELECT 1 FROM {TABLE} e WHERE e.division <> {alias}.division)",
                                     f" WHERE id IN (SELECT id FROM {TABLE})"]))
    if "max(" in values or "list(" in values:
        sql += draw(st.sampled_from(["", " GROUP BY ALL"]))
    return sql


@st.composite
def queries(draw):
    inner = draw(select())
    shape = draw(st.sampled_from(["plain", "cte", "cte_shadow", "nested", "union", "pivot", "unpivot", "window",
                                  "recursive", "limit", "values"]))
    name = draw(st.sampled_from(ALIASES))
    return {
        "plain": inner,
        "cte": f"WITH {name} AS ({inner}) SELECT * FROM {name}",
        "cte_shadow": f"WITH {name} AS ({inner}) SELECT {name}.* FROM {TABLE} AS {name}",
        "nested": f"SELECT * FROM ({inner}) AS {name}",
        "union": f"{inner} UNION ALL {draw(select())}",
        "pivot": f"SELECT * FROM {TABLE} PIVOT (max(secret) FOR division IN ('430104001', '430104002', '430102001'))",
        "unpivot": f"SELECT * FROM {TABLE} UNPIVOT (v FOR k IN (id, division, secret))",
        "window": f"SELECT *, row_number() OVER (ORDER BY 1) FROM ({inner}) w",
        "recursive": (f"WITH RECURSIVE r(n, v) AS (SELECT 1, ({inner} LIMIT 1) UNION ALL SELECT n + 1, v FROM r "
                      "WHERE n < 3) SELECT * FROM r"),
        "limit": f"{inner} LIMIT 5",
        "values": f"SELECT * FROM (VALUES ('430104002')) v(d) JOIN {TABLE} p ON p.division = v.d",
    }[shape]


def leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from leaves(v)
    elif value is not None:
        yield str(value)


@pytest.fixture(scope="module")
def neighbours(tmp_path_factory):
    registry = registry_of(tmp_path_factory, NEIGHBOURS)
    return registry, lake_with(NEIGHBOUR_ROWS)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(sql=queries(), department=st.sampled_from(["tax", "amr"]))
def test_a_street_user_never_sees_a_neighbours_row_whatever_the_query(neighbours, sql, department):
    registry, con = neighbours
    world = (NEIGHBOURS, NEIGHBOUR_ROWS, None, None, "430104001", department)
    access = access_of(registry, world)
    try:
        got = governed(con, registry, access, department, sql)
    except (QueryRefused, QueryFailed, duckdb.Error):
        return
    for row in got:
        for cell in row:
            for text in leaves(cell):
                for marker in re.findall(r"[rs](\d{4})", text):
                    assert f"r{marker}" in MINE, f"a neighbour's row r{marker} came out of: {sql}"


def test_the_city_and_a_district_see_theirs_and_an_unknown_organisation_nothing(neighbours):
    registry, con = neighbours
    seen = {}
    for requester in (None, CITY, "430104", "430104001", "430102", "430199"):
        access = access_of(registry, (NEIGHBOURS, NEIGHBOUR_ROWS, None, None, requester, "tax"))
        seen[requester] = {r[0] for r in governed(con, registry, access, "tax", f"SELECT id FROM {TABLE}")}
    everything = {r[0] for r in NEIGHBOUR_ROWS}
    assert seen[None] == seen[CITY] == everything
    assert seen["430104"] == {r[0] for r in NEIGHBOUR_ROWS if (r[1] or "").startswith("430104")} - {"r0008"}
    assert seen["430104001"] == MINE
    assert seen["430102"] == {"r0010", "r0011"}
    assert seen["430199"] == set()


def test_registry_files_round_trip_through_yaml(tmp_path):
    """organisations.yaml as an engineer writes it, codes unquoted (YAML reads them as numbers)."""
    root = write_registry(tmp_path / "registry", [firms_dataset()], ELEMENTS, DEPARTMENTS)
    (root / "organisations.yaml").write_text(yaml.safe_dump(TREE, allow_unicode=True).replace("'", ""),
                                              encoding="utf-8")
    registry, issues = check_registry(root)
    assert not issues, messages(issues)
    assert registry.organisation("430104001").name == "望月湖街道"


# --- administration: the CLI and the operators' page -------------------------------------------------------

@pytest.mark.slow  # a lake opened by each of eight commands, then a server's engine: some 17 s
def test_users_and_grants_carry_the_organisation_and_the_scope(tmp_path, monkeypatch, capsys):
    import json

    from fastapi.testclient import TestClient

    from core.config import Settings
    from lakehouse import Lake
    from onesource import cli
    from onesource.serve import create_app
    from sharing.engine import GovernedEngine
    from sharing.grants import active_grants
    from sharing.roles import OPERATOR
    from sharing.users import create_user

    settings = Settings(home=tmp_path / "home")
    registry_at(settings.registry_dir)
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = run("users", "add", "tax_moon", "--department", "tax", "--organisation", "430104009")
    assert code == 1 and "no organisation '430104009'" in err and "430104001" in err and "Traceback" not in err
    assert run("users", "add", "tax_moon", "--department", "tax", "--organisation", "430104001", "--json")[0] == 0
    assert run("users", "add", "tax_city", "--department", "tax")[0] == 0
    code, out, _ = run("users", "list", "--json")
    assert {u["user"]: u["organisation"] for u in json.loads(out)} == {"tax_moon": "430104001", "tax_city": None}
    code, out, _ = run("users", "list")
    assert code == 0 and "430104001" in out and "city" in out
    code, out, _ = run("grants", "add", "--department", "tax", "--dataset", "places", "--scope", "jurisdiction")
    assert code == 0 and "its organisation's jurisdiction" in out
    with Lake(settings.lake, read_only=True) as lake:
        assert [g.scope for g in active_grants(lake, "tax")] == ["jurisdiction"]
    code, out, _ = run("grants", "list", "--json")
    assert [g["scope"] for g in json.loads(out)] == ["jurisdiction"]

    with Lake(settings.lake) as lake:
        password, _ = create_user(lake, "amr", "amr_ops", OPERATOR)
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    try:
        client = TestClient(create_app(engine))
        assert client.post("/login", data={"username": "amr_ops", "password": password, "next": "/admin/users"},
                           follow_redirects=False).status_code == 303
        page = client.get("/admin/users?lang=zh").text
        assert "望月湖街道 (430104001)" in page and "全市" in page and '<option value="430104">岳麓区' in page
        client.headers["X-CSRF-Token"] = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        added = client.post("/admin/users", data={"name": "tax_district", "department": "tax", "role": "analyst",
                                                  "organisation": "430104"})
        assert added.status_code == 200 and "岳麓区 (430104)" in added.text
        refused = client.post("/admin/users", data={"name": "tax_x", "department": "tax", "role": "analyst",
                                                     "organisation": "430199"})
        assert refused.status_code == 400 and "no organisation &#39;430199&#39;" in refused.text
    finally:
        engine.close()


@pytest.mark.slow  # a lake of its own: some 5 s
def test_an_access_request_carries_the_scope_and_is_never_widened(tmp_path):
    from core.config import Settings
    from lakehouse import Lake
    from sharing import requests
    from sharing.grants import active_grants

    settings = Settings(home=tmp_path / "home")
    registry, _ = registry_at(settings.registry_dir)
    with Lake(settings.lake) as lake:
        with pytest.raises(requests.RequestError, match="firms declares no division_column"):
            requests.create(lake, registry, "tax", "firms", purpose="核查", requested_by="t", scope="jurisdiction")
        req = requests.create(lake, registry, "tax", "places", purpose="辖区核查", requested_by="t",
                              scope="jurisdiction")
        assert requests.get(lake, req.request_id).scope == "jurisdiction"
        with pytest.raises(requests.RequestError, match="not widen it to every row"):
            requests.approve(lake, registry, req.request_id, owner="amr", decided_by="o", scope="all")
        done = requests.approve(lake, registry, req.request_id, owner="amr", decided_by="o")
        assert done.status == "approved" and done.scope == "jurisdiction"
        narrowed = requests.create(lake, registry, "tax", "places", purpose="全市", requested_by="t")
        assert requests.approve(lake, registry, narrowed.request_id, owner="amr", decided_by="o",
                                scope="jurisdiction").scope == "jurisdiction"  # an owner may narrow
        assert [g.scope for g in active_grants(lake, "tax")] == ["jurisdiction", "jurisdiction"]
        assert {r.scope for r in requests.listing(lake)} == {"jurisdiction"}
