"""One source, many uses: registry versions and compatibility, schema drift at ingest, time travel,
once-only conformance (a column taken from its authority), lineage, the enterprise profile with the
annual-report prefill, and the GB/T 21063.3 catalogue export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from ingest import run_dataset
from lakehouse import Lake
from lakehouse import registered_versions as lake_versions
from metrics.kpis import Period, compute
from metrics.publish import publish
from onesource.cli import main
from schemas import load_registry
from schemas.versions import incompatibilities
from tests.helpers import csv_text, drop, firms_dataset, load, rows, write_registry

OLD = {"columns": {"id": {"type": "string", "required": True, "element": None, "from_authority": False},
                   "name": {"type": "string", "required": False, "element": None, "from_authority": False}},
       "key": ["id"]}


def changed(**columns) -> dict:
    new = json.loads(json.dumps(OLD))
    for name, spec in columns.items():
        if spec is None:
            new["columns"].pop(name)
        else:
            new["columns"][name] = {"type": "string", "required": False, "element": None, "from_authority": False,
                                    **spec}
    return new


@pytest.mark.parametrize(("mode", "new", "ok"), [
    ("BACKWARD", changed(extra={}), True),                         # add an optional column
    ("BACKWARD", changed(extra={"required": True}), False),        # add a required one
    ("BACKWARD", changed(name=None), True),                        # delete a column
    ("BACKWARD", changed(name={"type": "integer"}), False),        # change a type
    ("FORWARD", changed(name=None), True),                         # delete an optional column
    ("FORWARD", changed(id=None), False),                          # delete a required one
    ("FORWARD", changed(extra={"required": True}), True),          # add a required one
    ("FULL", changed(extra={}), True),
    ("FULL", changed(extra={"required": True}), False),
    ("FULL", changed(id=None), False),
    ("NONE", changed(name={"type": "integer"}), True),
])
def test_compatibility_modes_mean_what_confluent_means(mode, new, ok):
    reasons = incompatibilities(mode, new, [OLD])
    assert (reasons == []) is ok, reasons
    if not ok:
        assert all(mode in r for r in reasons)


def test_transitive_modes_check_every_earlier_version():
    v2 = changed(name=None)  # v2 dropped the optional 'name'
    v3 = changed(name={"type": "integer"})  # v3 brings 'name' back as an integer
    assert incompatibilities("BACKWARD", v3, [OLD, v2]) == []  # fine against v2 alone
    [reason] = incompatibilities("BACKWARD_TRANSITIVE", v3, [OLD, v2])
    assert "column name: type changed from string to integer" in reason and "version 1" in reason


def _edit(settings: Settings, name: str, edit) -> None:
    path = next(settings.registry_dir.glob(f"datasets/*/{name}.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def test_versions_are_registered_at_load_and_an_incompatible_change_fails_it(tiny, capsys, monkeypatch):
    drop(tiny, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    with Lake(tiny.lake) as lake:
        assert [v.version for v in lake_versions.history(lake, "firms")] == [1]
    # a new required column breaks BACKWARD: the load fails, listing the reason; nothing is registered
    _edit(tiny, "firms", lambda d: d["columns"].append({"name": "phone", "source": "电话", "type": "string",
                                                        "required": True}))
    drop(tiny, "amr/firms/b.csv", csv_text() + "\n")
    [result] = load(tiny)
    assert result.status == "failed" and "column phone: added as required" in result.message
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    assert main(["registry", "diff"]) == 1
    assert "incompatible" in capsys.readouterr().out
    # made optional, it is compatible: version 2, and the table gains the column in place
    _edit(tiny, "firms", lambda d: d["columns"][-1].update(required=False))
    drop(tiny, "amr/firms/c.csv", csv_text() + "91330106MA2C0D1E89,新企业,1,10,2,2020-01-01\n")
    results = load(tiny)  # b.csv (held back by the refused change) and c.csv
    assert [r.status for r in results] == ["published", "published"], results[-1].message
    assert "column '电话' (phone) is missing" in results[-1].message  # schema drift, evolved and reported
    with Lake(tiny.lake) as lake:
        assert [v.version for v in lake_versions.history(lake, "firms")] == [1, 2]
        assert "phone" in lake.table_columns("shared", "firms")
    assert main(["registry", "history", "firms"]) == 0
    assert "phone" in capsys.readouterr().out


def test_drift_policy_fail_lists_every_difference(tiny):
    _edit(tiny, "firms", lambda d: d.update(schema_drift="fail"))
    lines = csv_text().splitlines()
    drop(tiny, "amr/firms/a.csv", "\n".join([lines[0] + ",备注"] + [line + ',"x"' for line in lines[1:]]) + "\n")
    [result] = load(tiny)
    assert result.status == "quarantined" and "unknown column '备注'" in result.message
    assert "schema_drift: fail" in result.message


def test_sql_as_of_a_snapshot_reads_the_lake_as_it_was(tiny, capsys, monkeypatch):
    drop(tiny, "amr/firms/a.csv", csv_text())
    load(tiny)
    with Lake(tiny.lake) as lake:
        first = lake.con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0]
    drop(tiny, "amr/firms/b.csv", csv_text() + "91330106MA2C0D1E89,新企业,1,10,2,2020-01-01\n")
    load(tiny)
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    assert main(["sql", "--format", "csv", "--as-of", str(first), "SELECT count(*) AS n FROM shared.firms"]) == 0
    then = capsys.readouterr().out.split()[-1]
    assert main(["sql", "--format", "csv", "SELECT count(*) AS n FROM shared.firms"]) == 0
    now = capsys.readouterr().out.split()[-1]
    assert (int(then), int(now)) == (3, 4)
    assert main(["sql", "--as", "amr", "--format", "csv", "--as-of", str(first),
                 "SELECT count(*) AS n FROM shared.firms"]) == 0
    assert capsys.readouterr().out.split()[-1] == "3"


def test_a_column_taken_from_its_authority_is_filled_and_leaves_the_duplicate_rate(settings):
    taxpayers = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="unconditional",
                              connector={"kind": "file", "path": "tax/*.csv", "format": "csv"})
    write_registry(settings.registry_dir, [firms_dataset(), taxpayers])
    drop(settings, "amr/firms/a.csv", csv_text())
    load(settings)
    with Lake(settings.lake) as lake:
        before = compute(lake, load_registry(settings.registry_dir), Period.month())["city"]
    assert before["duplicate_collection_rate"]["numerator"] == 3  # tax re-collects uscc, name and status
    # tax stops collecting the enterprise name: it is taken from market regulation, joined on the credit code
    _edit(settings, "taxpayers", lambda d: d["columns"][1].update(from_authority=True, source="unused"))
    drop(settings, "tax/a.csv", csv_text().replace("企业名称", "名称（不再采集）").replace(",", ",", 1))
    [result] = load(settings, "taxpayers")
    assert result.status == "published", result.message
    assert rows(settings, "SELECT t.enterprise_name = f.enterprise_name FROM shared.taxpayers t "
                          "JOIN shared.firms f USING (uscc)") == [(True,)] * 3
    registry = load_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        after = compute(lake, registry, Period.month())["city"]
        from metrics.once_only import conformance, consumers, lineage

        status = {r["column_name"]: r["status"] for r in conformance(registry, consumers(lake), "tax")}
        kinds = {r["holder"]: r["kind"] for r in lineage(registry, consumers(lake), "enterprise_name")}
    assert after["duplicate_collection_rate"]["numerator"] == 2
    assert status == {"uscc": "collects", "enterprise_name": "references", "enterprise_status": "collects"}
    assert kinds == {"firms": "authority", "taxpayers": "reference"}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("once") / "home")
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in ("mca_admin_divisions", "amr_enterprise_register", "tax_taxpayer_register",
                 "hrss_enterprise_insurance"):
        run_dataset(settings, registry, name, os.environ)
    with Lake(settings.lake) as lake:
        written = publish(lake, registry, compute(lake, registry, Period.month()))
    assert written["enterprise_profile"] > 0
    return settings, registry


def test_enterprise_profile_prefills_the_annual_report(city, capsys, monkeypatch):
    settings, registry = city
    uscc, name, employees = rows(settings, """
        SELECT p.uscc, p.enterprise_name, p.insured_employees FROM shared.enterprise_profile p
        WHERE p.taxpayer_type IS NOT NULL AND p.insured_employees IS NOT NULL ORDER BY p.uscc LIMIT 1""")[0]
    # every profile column comes from its element's authority, joined on the credit code
    assert rows(settings, f"SELECT enterprise_name FROM shared.amr_enterprise_register WHERE uscc = '{uscc}'") \
        == [(name,)]
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["prefill", "annual-report", uscc, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    form = {f["field"]: f for f in out["form"]}
    assert form["企业名称"]["value"] == name and form["企业名称"]["source"] == "amr_enterprise_register"
    assert form["参保职工人数"]["value"] == employees and form["参保职工人数"]["source"] == "hrss_enterprise_insurance"
    assert form["纳税人类型"]["source"] == "tax_taxpayer_register"
    assert form["营业总收入（万元）"]["source"] is None  # only the enterprise knows it
    assert sum(1 for f in out["form"] if f["source"]) == 10 and len(out["form"]) == 15
    assert 0 < out["overall_prefill_rate"] <= 10 / 15
    assert main(["prefill", "annual-report", "91330000XXXXXXXXXX"]) == 1


def test_lineage_conformance_and_catalogue_are_tables_and_exports(city, tmp_path, monkeypatch, capsys):
    settings, registry = city
    lineage = rows(settings, "SELECT holder, kind FROM shared.registry_lineage WHERE element = 'enterprise_name'")
    assert ("amr_enterprise_register", "authority") in lineage and ("enterprise_profile", "derived") in lineage
    assert ("tax_taxpayer_register", "copy") in lineage
    tax = rows(settings, "SELECT element, authority_dataset, status FROM shared.registry_conformance "
                         "WHERE department = 'tax' ORDER BY element")
    assert ("enterprise_name", "amr_enterprise_register", "collects") in tax
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["registry", "lineage", "uscc"]) == 0 and "amr_enterprise_register" in capsys.readouterr().out
    assert main(["registry", "conformance", "--department", "tax", "--json"]) == 0
    assert {r["element"] for r in json.loads(capsys.readouterr().out)} >= {"uscc", "enterprise_name"}
    out = tmp_path / "catalogue.xlsx"
    assert main(["registry", "export", "--format", "xlsx", "--output", str(out)]) == 0
    sheet = load_workbook(out).active
    header = [c.value for c in sheet[1]]
    assert header[:12] == ["信息资源名称", "信息资源代码", "信息资源提供方", "信息资源摘要", "信息资源格式", "信息项信息",
                           "共享类型", "共享条件", "共享方式", "开放属性", "更新周期", "发布日期"]
    assert sheet.max_row == len(registry.datasets) + 1
    codes = rows(settings, "SELECT code, share_type FROM shared.data_catalogue WHERE dataset = 'amr_enterprise_register'")
    assert codes == [("OS-AMR-0001", "无条件共享")]
    assert main(["registry", "export", "--format", "csv", "--output", str(tmp_path / "c")]) == 0
    assert Path(tmp_path / "c.csv").read_text(encoding="utf-8-sig").startswith("信息资源名称,")


def test_conformance_on_the_demo_city_lists_exactly_the_injected_recollections(city):
    settings, registry = city
    manifest = json.loads((settings.home / "demo" / "manifest.json").read_text(encoding="utf-8"))
    injected = {(r["department"], r["element"], r["authority"]) for r in manifest["recollection"]}
    found = set(rows_of(settings, "SELECT department, element, authority_dataset FROM shared.registry_conformance "
                                  "WHERE status = 'collects'"))
    # the copied enterprise names of tax and transport; the credit codes, resident IDs and division codes
    # the demo's datasets hold are declared references to their authorities, not collections
    assert found == injected and len(found) >= 2
    keys = rows_of(settings, "SELECT status, advice FROM shared.registry_conformance WHERE department = 'tax' "
                             "AND element = 'uscc'")
    assert keys == [("references", "once-only: the key naming the authority's record (references: authority)")]


def test_switching_one_column_to_a_reference_lowers_the_rate_by_one_pair(city, tmp_path):
    import shutil

    settings, registry = city
    with Lake(settings.lake, read_only=True) as lake:
        before = compute(lake, registry, Period.month())["city"]["duplicate_collection_rate"]
    copy = tmp_path / "registry"
    shutil.copytree(settings.registry_dir, copy)
    path = copy / "datasets" / "transport" / "transport_operator_licenses.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    next(c for c in data["columns"] if c["name"] == "enterprise_name")["from_authority"] = True
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with Lake(settings.lake, read_only=True) as lake:
        after = compute(lake, load_registry(copy), Period.month())["city"]["duplicate_collection_rate"]
    # (transport, enterprise_name) is consumed now: one duplicate pair fewer, and one pair fewer in all
    assert (after["numerator"], after["denominator"]) == (before["numerator"] - 1, before["denominator"] - 1)


def rows_of(settings, sql):
    return [tuple(r) for r in rows(settings, sql)]
