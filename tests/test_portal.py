"""The portal and the workflow API in-process (FastAPI's test client): sign-in, catalogue, a request
decided by the owner within the SLA, disputes, the SQL console with downloads, and the same workflow
over HTTP with bearer tokens. The headless-browser run is in test_portal_browser.py (slow)."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from onesource.serve import create_app
from sharing.engine import GovernedEngine
from tests.helpers import DISTRICT, demo_home
from tests.support.portal import sign_in


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    settings, registry = demo_home(tmp_path_factory.mktemp("portal") / "home",
                                   ("mca_admin_divisions", "amr_enterprise_register", "psb_resident_register"),
                                   users=True)
    analysts = json.loads((settings.home / "demo-credentials.json").read_text())
    owners = json.loads((settings.home / "demo-owner-credentials.json").read_text())
    engine = GovernedEngine(settings, registry, persistent=True)
    with TestClient(create_app(engine)) as client:
        client.onesource_settings = settings
        yield client, analysts, owners
    engine.close()


def test_pages_need_a_session_and_a_right_password(portal):
    client, analysts, _ = portal
    client.cookies.clear()
    for path in ("/catalogue", "/requests", "/console", "/dashboard", "/catalogue/amr_enterprise_register"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    bad = client.post("/login", data={"username": analysts["tax"]["user"], "password": "x"}, follow_redirects=False)
    assert bad.status_code == 200 and "用户名或密码错误" in bad.text
    evil = client.post("/login", data={**{"username": analysts["tax"]["user"], "password": analysts["tax"]["password"]},
                                       "next": "//evil.example/x"}, follow_redirects=False)
    assert evil.headers["location"] == "/dashboard"  # no open redirect


def test_catalogue_search_and_dataset_page(portal):
    client, analysts, _ = portal
    sign_in(client, analysts["tax"])
    page = client.get("/catalogue", params={"q": "户籍"}).text
    assert "psb_resident_register" in page and "amr_enterprise_register" not in page
    assert "urban_enforcement_cases" in client.get("/catalogue", params={"share_type": "conditional"}).text
    by_element = client.get("/catalogue", params={"element": "uscc"}).text
    assert "tax_taxpayer_register" in by_element and "psb_resident_register" not in by_element
    ds = client.get("/catalogue/psb_resident_register").text
    assert "敏感（脱敏）" in ds and "权威来源" in ds and "request-form" in ds  # tax has no grant: it may request
    assert "hrss_person_insurance" in ds  # lineage: social security takes the resident ID from here
    assert client.get("/catalogue/nope").status_code == 404


def test_request_approved_by_the_owner_then_queried_in_the_console(portal):
    client, analysts, owners = portal
    sign_in(client, analysts["tax"])
    r = client.post("/catalogue/psb_resident_register/request",
                    data={"purpose": "税务稽查核验", "columns": ["resident_id", "person_name", "division_code"],
                          "days": "30"})
    assert r.status_code == 200 and "待审批" in r.text  # pending, as a label
    refused = client.post("/console", data={"sql": "SELECT person_name FROM shared.psb_resident_register"})
    assert 'id="refusal"' in refused.text and "not granted to tax" in refused.text
    # an analyst cannot decide; the owner role of the owning department can
    sign_in(client, analysts["psb"])
    rid = next(x["request_id"] for x in client.get("/api/v1/requests",
               headers={"Authorization": f"Bearer {analysts['psb']['token']}"}).json()["to_decide"])
    assert client.post(f"/requests/{rid}/approve", data={}).status_code == 403
    sign_in(client, owners["psb"])
    assert rid in client.get("/requests").text
    done = client.post(f"/requests/{rid}/approve", data={"columns": ["resident_id", "division_code"]})
    assert "已批准" in done.text
    sign_in(client, analysts["tax"])
    ok = client.post("/console", data={"sql": "SELECT resident_id, division_code FROM shared.psb_resident_register "
                                              "ORDER BY division_code LIMIT 5", "purpose": "稽查"})
    assert ok.status_code == 200 and ok.text.count("<tr") == 6 and "********" in ok.text  # masked resident IDs
    narrowed = client.post("/console", data={"sql": "SELECT person_name FROM shared.psb_resident_register"})
    assert 'id="refusal"' in narrowed.text  # the owner narrowed the columns
    csv_ = client.post("/console", data={"sql": "SELECT division_code FROM shared.psb_resident_register LIMIT 3",
                                         "download": "csv"})
    assert csv_.headers["content-type"].startswith("text/csv") and csv_.content.decode("utf-8-sig").count("\n") == 4
    xlsx = client.post("/console", data={"sql": "SELECT division_code FROM shared.psb_resident_register LIMIT 3",
                                         "download": "xlsx"})
    assert load_workbook(io.BytesIO(xlsx.content)).active.max_row == 4


def test_refusal_needs_a_reason_and_the_requester_sees_it(portal):
    client, analysts, owners = portal
    headers = {"Authorization": f"Bearer {analysts['edu']['token']}"}
    created = client.post("/api/v1/requests", json={"dataset": "psb_resident_register", "purpose": "学籍核验"},
                          headers=headers)
    assert created.status_code == 201 and created.json()["status"] == "pending"
    rid = created.json()["request_id"]
    owner = {"Authorization": f"Bearer {owners['psb']['token']}"}
    assert client.post(f"/api/v1/requests/{rid}/refuse", json={}, headers=headers).status_code == 403
    no_reason = client.post(f"/api/v1/requests/{rid}/refuse", json={"reason": " "}, headers=owner)
    assert no_reason.status_code == 409 and "needs a reason" in no_reason.json()["reason"]
    assert client.post(f"/api/v1/requests/{rid}/refuse", json={"reason": "学籍核验应使用教育部门数据"},
                       headers=owner).json()["status"] == "refused"
    sign_in(client, analysts["edu"])
    assert "学籍核验应使用教育部门数据" in client.get("/requests").text
    assert client.post("/api/v1/requests", json={"dataset": "psb_household_moves", "purpose": "x"},
                       headers=headers).status_code == 409  # not_shared: cannot be requested


def test_dispute_flags_the_record_until_the_owner_resolves_it(portal):
    client, analysts, owners = portal
    sign_in(client, analysts["tax"])
    uscc = client.post("/console", data={"sql": "SELECT uscc FROM shared.amr_enterprise_register ORDER BY uscc "
                                                "LIMIT 1"}).text.split("<td>")[1].split("</td>")[0]
    r = client.post("/catalogue/amr_enterprise_register/dispute",
                    data={"key_value": uscc, "column": "enterprise_name", "description": "名称与营业执照不符"})
    assert "已记录" in r.text
    flagged = client.post("/console", data={"sql": "SELECT uscc, enterprise_name FROM shared.amr_enterprise_register "
                                                   "ORDER BY uscc LIMIT 3"}).text
    assert flagged.count('class="flagged"') == 1  # the disputed record carries the flag
    dispute = client.get("/api/v1/disputes", headers={"Authorization": f"Bearer {owners['amr']['token']}"}).json()[0]
    sign_in(client, owners["amr"])
    assert "名称与营业执照不符" in client.get("/requests").text
    assert "needs a reason" in client.post(f"/disputes/{dispute['dispute_id']}/rejected",
                                           data={"resolution": ""}).text
    client.post(f"/disputes/{dispute['dispute_id']}/corrected", data={"resolution": "已在登记系统更正"})
    sign_in(client, analysts["tax"])
    again = client.post("/console", data={"sql": "SELECT uscc FROM shared.amr_enterprise_register ORDER BY uscc "
                                                 "LIMIT 3"}).text
    assert 'class="flagged"' not in again
    assert "已更正" in client.get("/requests").text


def test_row_filters_are_refused_at_request_time_and_shown_normalised_to_the_owner(portal, capsys, monkeypatch):
    """A requested row filter is a governed expression: refused with the reason when it is made, stored in its
    normal form, and the owner sees exactly that form where the request is decided (portal, API, CLI)."""
    from onesource.cli import main

    client, analysts, owners = portal
    headers = {"Authorization": f"Bearer {analysts['housing']['token']}"}
    bad = client.post("/api/v1/requests", headers=headers, json={
        "dataset": "psb_resident_register", "purpose": "住房保障核验",
        "row_filter": "division_code IN (SELECT division_code FROM lake.ops.users)"})
    assert bad.status_code == 409 and "row filter" in bad.json()["reason"]
    ok = client.post("/api/v1/requests", headers=headers, json={
        "dataset": "psb_resident_register", "purpose": "住房保障核验", "row_filter": f"Division_Code = '{DISTRICT}'"})
    normal = f"\"division_code\" = '{DISTRICT}'"
    assert ok.status_code == 201 and ok.json()["row_filter"] == normal
    owner = {"Authorization": f"Bearer {owners['psb']['token']}"}
    listed = client.get("/api/v1/requests", headers=owner).json()["to_decide"]
    assert any(r["row_filter"] == normal for r in listed)
    sign_in(client, owners["psb"])
    page = client.get("/requests").text
    assert f"&#34;division_code&#34; = &#39;{DISTRICT}&#39;" in page or normal in page
    monkeypatch.setenv("ONESOURCE_HOME", str(client.onesource_settings.home))
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["requests", "list", "--owner", "psb"]) == 0
    out = capsys.readouterr().out
    assert normal in out
