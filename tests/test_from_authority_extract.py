"""A department whose extract still carries a column the registry fills from its authority
(`from_authority: true`, its `source` the header it sends): the column is known, not read, and no drift,
so `schema_drift: fail` publishes; the value comes from the authority. It was "unknown column '企业名称'
(not in the registry)", which quarantined the batch under `fail` (newcomer walkthrough, issue 20)."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import csv_text, drop, firms_dataset, load, rows, write_registry


def _taxpayers(settings, drift: str) -> None:
    taxpayers = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="unconditional",
                              schema_drift=drift, connector={"kind": "file", "path": "tax/*.csv", "format": "csv"})
    write_registry(settings.registry_dir, [firms_dataset(), taxpayers])
    path = settings.registry_dir / "datasets" / "tax" / "taxpayers.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["columns"][1]["from_authority"] = True  # enterprise_name, its source header 企业名称 kept
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    drop(settings, "amr/firms/a.csv", csv_text())
    assert load(settings)[0].status == "published"


@pytest.mark.parametrize("drift", ["fail", "evolve"])
def test_a_column_sent_although_taken_from_the_authority_is_not_read_and_not_drift(settings, drift):
    _taxpayers(settings, drift)
    drop(settings, "tax/a.csv", csv_text().replace("杭州甲科技有限公司", "部门自己抄录的名称"))
    [result] = load(settings, "taxpayers")
    assert result.status == "published", result.message
    assert "unknown column" not in result.message
    assert "column '企业名称' is not read: enterprise_name is filled from its authority" in result.message
    assert rows(settings, "SELECT count(*) FROM shared.taxpayers t JOIN shared.firms f USING (uscc) "
                          "WHERE t.enterprise_name = f.enterprise_name") == [(3,)]


def test_a_column_the_registry_does_not_know_still_fails_under_fail(settings):
    _taxpayers(settings, "fail")
    lines = csv_text().splitlines()
    drop(settings, "tax/a.csv", "\n".join([lines[0] + ",备注"] + [line + ',"x"' for line in lines[1:]]) + "\n")
    [result] = load(settings, "taxpayers")
    assert result.status == "quarantined" and "unknown column '备注'" in result.message
    assert "企业名称" not in result.message.split("The file has")[0]
