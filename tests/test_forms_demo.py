"""The demo city's forms filled through the real governed engine (slow: a small demo home with real loads).

A street's (here a district's, the demo's finest division code) subsistence-allowance roster, filled as civil
affairs with a grant on the resident register that masks IDs and addresses but lets it match resident IDs,
equals the roster computed by hand from the lake's own rows with the masks applied; the XLSX written by
`onesource forms fill` holds it in the office's layout; every read was audited as civil affairs'."""

from __future__ import annotations

import json

import pytest

from lakehouse.lake import Lake
from metrics.forms import division_prefix
from onesource.cli import main
from sharing.grants import add_grant
from tests.helpers import demo_home

pytestmark = pytest.mark.slow


def _mask_id(v):
    return None if v is None else v[:6] + "********" + v[-4:]


def test_a_roster_exported_for_a_division_equals_the_hand_computed_one(tmp_path, capsys, monkeypatch):
    from openpyxl import load_workbook

    settings, registry = demo_home(tmp_path / "home", ("psb_resident_register", "mca_subsistence_allowance"))
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "mca", "psb_resident_register", match=["resident_id"], purpose="低保核查")
        allowance = lake.con.execute(
            "SELECT resident_id, division_code, allowance_amount, start_date FROM lake.shared.mca_subsistence_allowance"
        ).fetchall()
        people = {r[0]: r[1:] for r in lake.con.execute(
            "SELECT resident_id, person_name, gender, household_address FROM lake.shared.psb_resident_register"
        ).fetchall()}
    code = max({r[1] for r in allowance}, key=lambda c: sum(1 for r in allowance if r[1] == c))
    mine = sorted((r for r in allowance if r[1].startswith(division_prefix(code))), key=lambda r: r[0])
    assert mine
    # by hand: psb's name and gender as they are, its ID and address masked for mca; mca's own amount and date
    expected = []
    for rid, _, amount, start in mine:
        name, gender, _address = people.get(rid, (None, None, None))
        held = rid in people
        expected.append([name, _mask_id(rid) if held else None, gender, "***" if held else None,
                         float(amount) if amount is not None else None, start, None, None, None])

    out = tmp_path / "roster.xlsx"
    assert main(["forms", "fill", "dibao_roster", "--jurisdiction", code, "--out", str(out), "--as", "mca",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["subjects"] == len(mine)
    assert set(summary["withheld"]) == {"公民身份号码", "户籍地址"}  # masked for mca: the street still types them
    filled = sum(sum(v is not None for v in (row[0], row[2], row[4], row[5])) for row in expected)
    assert summary["prefilled"] == filled and summary["cells"] == 9 * len(mine)
    assert summary["prefill_rate"] == round(filled / (9 * len(mine)), 4)

    ws = load_workbook(out).active
    assert ws.title == "低保花名册"
    got = [list(r) for r in ws.iter_rows(values_only=True)]
    assert got[0][0] == "城乡最低生活保障对象月度花名册"
    assert got[1][0].startswith(f"填报单位（区划代码）：{code}")
    assert got[2] == ["序号", "姓名", "公民身份号码", "性别", "户籍地址", "保障金额（元）", "保障起始日期", "家庭人口数",
                      "联系电话", "备注"]
    body = [[row[0], *row[1:6], row[6].date() if row[6] is not None else None, *row[7:]] for row in got[3:]]
    assert body == [[n, *e] for n, e in enumerate(expected, 1)]

    # the same roster filled for the whole city by a civil-affairs user of that division holds that division's
    # rows only: the user's jurisdiction applies to every read of the fill (sharing.grants)
    from sharing.users import create_user

    with Lake(settings.lake) as lake:
        create_user(lake, "mca", "mca_local", organisation=code, by="test")
    city = tmp_path / "city.xlsx"
    assert main(["forms", "fill", "dibao_roster", "--jurisdiction", "430100", "--out", str(city), "--as", "mca",
                 "--user", "mca_local", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert local["subjects"] == len(mine) and local["prefilled"] == summary["prefilled"]
    assert [list(r)[1:] for r in load_workbook(city).active.iter_rows(min_row=4, values_only=True)] == \
        [list(r)[1:] for r in ws.iter_rows(min_row=4, values_only=True)]

    from sharing.audit import AuditLog  # every read audited as mca's, none refused

    entries = [e for e in AuditLog.of(settings).entries() if (e.get("purpose") or "") == "form dibao_roster"]
    assert entries and all(e["department"] == "mca" and e["decision"] == "allowed" for e in entries)


def test_a_department_without_a_grant_gets_its_fields_withheld_with_the_reason(tmp_path, capsys, monkeypatch):
    settings, _ = demo_home(tmp_path / "home", ("amr_enterprise_register", "tax_taxpayer_register"))
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    with Lake(settings.lake, read_only=True) as lake:
        uscc = lake.con.execute("SELECT min(uscc) FROM lake.shared.amr_enterprise_register").fetchone()[0]
    out = tmp_path / "census.xlsx"
    assert main(["forms", "fill", "enterprise_census", "--subject", uscc, "--out", str(out), "--as", "housing",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["subjects"] == 1
    assert {"纳税人类型", "纳税信用等级", "参保职工人数"} <= set(summary["withheld"])
    assert "tax_taxpayer_register" in summary["withheld"]["纳税人类型"]
    assert summary["prefilled"] == 5  # market regulation's five fields, unconditional


def test_the_dashboard_shows_the_city_prefill_and_the_fields_no_longer_typed(tmp_path):
    """The census sheet's city-wide figure, published by the KPI run (metrics.publish) into form_prefill and shown
    on the bureau's dashboard, equals a fill of every enterprise counted by hand."""
    import re

    from fastapi.testclient import TestClient

    from metrics.forms import fill
    from metrics.kpis import Period
    from metrics.publish import publish_periods
    from onesource.serve import create_app
    from sharing.engine import GovernedEngine
    from sharing.sql import QueryResult
    from tests.support.portal import sign_in

    settings, registry = demo_home(tmp_path / "home", ("amr_enterprise_register", "tax_taxpayer_register",
                                                       "hrss_enterprise_insurance"), users=True)
    with Lake(settings.lake) as lake:
        publish_periods(lake, registry, [Period.month(tz=settings.city_timezone)])

        def raw(sql):
            cur = lake.con.execute(sql)
            return QueryResult([d[0] for d in cur.description], cur.fetchall())

        census = fill(registry, registry.form("enterprise_census"), raw, everyone=True)
        published = lake.con.execute("SELECT field, subjects, filled FROM lake.shared.form_prefill "
                                     "WHERE form = 'enterprise_census' ORDER BY position").fetchall()
    # by hand: per field, the enterprises whose value was read (typed fields: none)
    assert published == [(f.label, len(census.subjects), sum(1 for r in census.prefilled if r[i]))
                         for i, f in enumerate(census.form.fields)]
    assert len(census.subjects) > 0 and 0 < census.filled < census.cells
    # the roster's datasets are not loaded here: no partial figure for it
    assert {r[0] for r in published} and "dibao_roster" not in {
        r[0] for r in Lake(settings.lake, read_only=True).con.execute(
            "SELECT DISTINCT form FROM lake.shared.form_prefill").fetchall()}

    bureau = json.loads((settings.home / "demo-credentials.json").read_text())["dsj"]
    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        with TestClient(create_app(engine)) as client:
            sign_in(client, bureau)
            page = client.get("/dashboard").text
            definitions = client.get("/dashboard/definitions").text
    finally:
        engine.close()
    card = re.search(r'data-kpi="form_prefill_rate" data-filled="(\d+)" data-cells="(\d+)"', page)
    assert card and (int(card[1]), int(card[2])) == (census.filled, census.cells)
    assert f"{census.filled / census.cells * 100:.1f}%" in page
    assert 'data-form="enterprise_census"' in page and "<svg" in page.split('id="forms-chart"')[1]
    assert 'href="/dashboard/definitions#form_prefill_rate"' in page and 'id="form_prefill_rate"' in definitions
