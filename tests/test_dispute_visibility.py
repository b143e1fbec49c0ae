"""Disputes name records by their key: only departments that can read the dataset see them, among the rows
they may read, with the key masked as they read that column (portal pages and the HTTP API alike)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from lakehouse.lake import Lake
from onesource.serve import create_app
from sharing import disputes
from sharing.engine import GovernedEngine
from sharing.grants import Access, add_grant
from tests.helpers import demo_home, rows
from tests.support.portal import sign_in


def masked(resident_id: str) -> str:
    return resident_id[:6] + "********" + resident_id[-4:]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings, registry = demo_home(tmp_path_factory.mktemp("disputes") / "home",
                                   ("mca_admin_divisions", "amr_enterprise_register", "psb_resident_register"),
                                   users=True)
    people = rows(settings, "SELECT resident_id, division_code FROM shared.psb_resident_register ORDER BY resident_id")
    inside = people[0]
    outside = next(p for p in people if p[1] != inside[1])
    [(uscc,)] = rows(settings, "SELECT uscc FROM shared.amr_enterprise_register ORDER BY uscc LIMIT 1")
    with Lake(settings.lake) as lake:
        disputes.flag(lake, registry, "hrss", "psb_resident_register", inside[0], f"户籍地址有误，身份证号 {inside[0]}",
                      reported_by="hrss_analyst")
        disputes.flag(lake, registry, "hrss", "psb_resident_register", outside[0], "姓名有误（乙）",
                      reported_by="hrss_analyst")
        disputes.flag(lake, registry, "tax", "amr_enterprise_register", uscc, "名称与执照不符（丙）",
                      reported_by="tax_analyst")
        # education reads the register's IDs and divisions, in one division only; tax and hrss read nothing of it
        add_grant(lake, registry, "edu", "psb_resident_register", columns=["resident_id", "division_code"],
                  row_filter=f"division_code = '{inside[1]}'")
    analysts = json.loads((settings.home / "demo-credentials.json").read_text())
    owners = json.loads((settings.home / "demo-owner-credentials.json").read_text())
    engine = GovernedEngine(settings, registry, persistent=True)
    with TestClient(create_app(engine)) as client:
        yield client, analysts, owners, inside[0], outside[0], uscc, registry
    engine.close()


def api(client, creds) -> list[dict]:
    r = client.get("/api/v1/disputes", headers={"Authorization": f"Bearer {creds['token']}"})
    assert r.status_code == 200
    return r.json()


def test_a_department_that_cannot_read_the_dataset_sees_none_of_its_disputes(city):
    client, analysts, _, inside, outside, uscc, _ = city
    sign_in(client, analysts["tax"])
    page = client.get("/catalogue/psb_resident_register").text
    for secret in (inside, outside, masked(inside), masked(outside), "户籍地址有误", "姓名有误"):
        assert secret not in page
    # hrss raised both, but has no grant: the API shows it nothing of a dataset it cannot read
    assert [d for d in api(client, analysts["hrss"]) if d["dataset"] == "psb_resident_register"] == []
    sign_in(client, analysts["hrss"])
    mine = client.get("/requests").text
    assert inside not in mine and masked(inside) not in mine and outside not in mine
    # what tax raised on an unconditional dataset it reads in full: shown as it is
    [own] = api(client, analysts["tax"])
    assert own["key_value"] == uscc and own["dataset"] == "amr_enterprise_register"


def test_keys_of_masked_elements_are_masked_and_row_filters_apply(city):
    client, analysts, _, inside, outside, _, _ = city
    sign_in(client, analysts["edu"])
    page = client.get("/catalogue/psb_resident_register").text
    assert masked(inside) in page and inside not in page  # the key and the ID in the description, masked
    assert "户籍地址有误" in page
    assert "姓名有误" not in page and masked(outside) not in page  # outside education's rows: not shown


def test_the_owner_sees_every_dispute_in_full(city):
    client, _, owners, inside, outside, _, _ = city
    shown = {d["key_value"] for d in api(client, owners["psb"])}
    assert shown == {inside, outside}
    sign_in(client, owners["psb"])
    page = client.get("/catalogue/psb_resident_register").text
    assert inside in page and outside in page


def test_a_department_without_read_access_cannot_flag_a_record(city):
    client, analysts, _, inside, _, _, _ = city
    r = client.post("/api/v1/disputes", headers={"Authorization": f"Bearer {analysts['tax']['token']}"},
                    json={"dataset": "psb_resident_register", "key_value": inside, "description": "猜一猜"})
    assert r.status_code == 409


def test_mask_value_is_the_sql_masks():
    assert disputes.mask_value("330106199001011234", "resident_id") == "330106********1234"
    assert disputes.mask_value("13812345678", "mobile") == "*******5678"
    assert disputes.mask_value("0571-88001234", "phone") == "*******1234"
    assert disputes.mask_value("张三", "text") == disputes.HIDDEN
    assert disputes.mask_value("91330106MA2B0C1D68", None) == "91330106MA2B0C1D68"


def test_for_department_hides_a_key_whose_column_is_not_granted(city):
    registry = city[-1]
    d = disputes.Dispute("x", "psb_resident_register", "psb", "330106199001011234", None, "desc", "hrss", "u",
                         None, "open", None, None, None)  # type: ignore[arg-type]
    only_division = {"psb_resident_register": Access("psb_resident_register", ("division_code",))}
    [shown] = disputes.for_department([d], registry, only_division, "hrss")
    assert shown.key_value == disputes.HIDDEN
    assert disputes.for_department([d], registry, {}, "hrss") == []
    # a row filter without a way to check the rows: only the department's own disputes are shown
    filtered = {"psb_resident_register": Access("psb_resident_register", ("resident_id",), ("division_code = 'x'",),
                                                {"resident_id": "resident_id"})}
    assert disputes.for_department([d], registry, filtered, "edu") == []
    [own] = disputes.for_department([d], registry, filtered, "hrss")
    assert own.key_value == "330106********1234"
