"""The registry: the demo's validates; each kind of mistake is reported with its file and line."""

from __future__ import annotations

import json

import pytest

from examples.changsha.data import DemoConfig
from examples.changsha.generate import write_registry as write_demo_registry
from onesource.cli import main
from schemas import RegistryError, check_registry, load_registry
from tests.helpers import ELEMENTS, dump, firms_dataset, write_registry


def issues_of(root):
    _, issues = check_registry(root)
    return [str(i) for i in issues]


@pytest.mark.parametrize("departments", [3, 12, 87])
def test_demo_registry_is_valid(tmp_path, departments):
    write_demo_registry(tmp_path / "registry", DemoConfig(departments=departments))
    registry = load_registry(tmp_path / "registry")
    # the departments asked for, plus the data bureau that runs OneSource and owns the KPI tables
    assert len(registry.departments) == departments + 1 and registry.departments[-1].code == "dsj"
    platform = {d.name for d in registry.datasets if d.platform}
    assert {"kpi_figures", "kpi_dataset_status", "kpi_duplicate_pairs", "registry_conformance", "registry_lineage",
            "data_catalogue"} <= platform
    # the enterprise profile needs the credit code's authority (market regulation, among the first three)
    assert "enterprise_profile" in platform
    assert registry.dataset("amr_enterprise_register").table == "shared.amr_enterprise_register"
    # every element has exactly one authority, and that dataset holds it
    for el in registry.elements:
        assert any(c.element == el.name for c in registry.dataset(el.authority).columns)


def test_version_is_a_content_hash(tmp_path):
    write_registry(tmp_path / "a")
    write_registry(tmp_path / "b")
    assert load_registry(tmp_path / "a").version == load_registry(tmp_path / "b").version
    write_registry(tmp_path / "c", [firms_dataset(update_cycle="weekly")])
    assert load_registry(tmp_path / "c").version != load_registry(tmp_path / "a").version


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    root = write_registry(tmp_path / "registry")
    path = root / "datasets" / "amr" / "firms.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(3, "owner: [amr")  # an unclosed flow sequence
    path.write_text("\n".join(lines), encoding="utf-8")
    found = issues_of(root)
    assert len(found) == 1 and found[0].startswith("registry/datasets/amr/firms.yaml:") and "YAML syntax" in found[0]


def test_unknown_element(tmp_path):
    ds = firms_dataset()
    ds["columns"].append({"name": "x", "source": "X", "element": "no_such_element"})
    found = issues_of(write_registry(tmp_path / "registry", [ds]))
    assert any("firms.yaml:" in f and "unknown element 'no_such_element'" in f for f in found), found
    line = int(next(f for f in found if "no_such_element" in f).split(":")[1])
    text = (tmp_path / "registry/datasets/amr/firms.yaml").read_text(encoding="utf-8").splitlines()
    assert "name: x" in text[line - 1]


def test_element_with_two_authoritative_datasets(tmp_path):
    elements = json.loads(json.dumps(ELEMENTS))
    elements["elements"][1]["authority"] = ["firms", "taxpayers"]
    found = issues_of(write_registry(tmp_path / "registry", elements=elements))
    assert any(f.startswith("registry/elements.yaml:") and "2 authoritative datasets" in f for f in found), found


def test_authority_must_exist_and_hold_the_element(tmp_path):
    elements = json.loads(json.dumps(ELEMENTS))
    elements["elements"][0]["authority"] = "ghost"
    found = issues_of(write_registry(tmp_path / "registry", elements=elements))
    assert any("authoritative dataset 'ghost' is not registered" in f for f in found)


def test_not_shared_needs_legal_basis(tmp_path):
    found = issues_of(write_registry(tmp_path / "registry", [firms_dataset(share_type="not_shared")]))
    assert any("firms.yaml:1:" in f and "not_shared without a legal_basis" in f for f in found), found


def test_conditional_needs_conditions(tmp_path):
    found = issues_of(write_registry(tmp_path / "registry", [firms_dataset(share_type="conditional")]))
    assert any("conditional without 'conditions'" in f for f in found)


def test_dataset_without_key(tmp_path):
    ds = firms_dataset()
    del ds["key"]
    found = issues_of(write_registry(tmp_path / "registry", [ds]))
    assert any("firms.yaml:1:" in f and "has no key" in f for f in found), found


def test_duplicate_names(tmp_path):
    root = write_registry(tmp_path / "registry")
    dump(root / "datasets" / "amr" / "firms_copy.yaml", firms_dataset())
    ds = firms_dataset(name="other")
    ds["columns"].append(dict(ds["columns"][0]))
    dump(root / "datasets" / "amr" / "other.yaml", ds)
    found = issues_of(root)
    assert any("firms_copy.yaml:1:" in f and "duplicate dataset 'firms'" in f for f in found), found
    assert any("other.yaml:" in f and "declares column 'uscc' 2 times" in f for f in found), found


def test_duplicate_yaml_key(tmp_path):
    root = write_registry(tmp_path / "registry")
    path = root / "datasets" / "amr" / "firms.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "owner: tax\n", encoding="utf-8")
    found = issues_of(root)
    assert any("firms.yaml:" in f and "duplicate key 'owner'" in f for f in found), found


@pytest.mark.parametrize("connector, expected", [
    ({"kind": "file", "format": "csv"}, "file connector needs setting 'path'"),
    ({"kind": "database", "driver": "postgres", "table": "t"}, "database connector needs setting 'dsn'"),
    ({"kind": "database", "driver": "oracle", "dsn": "x", "table": "t"}, "driver='oracle' is not one of"),
    ({"kind": "http"}, "http connector needs setting 'url'"),
    ({"kind": "ftp", "path": "x"}, "unknown kind 'ftp'"),
    ({"kind": "file", "path": "x", "pattern": "y"}, "unknown setting 'pattern'"),
    ({"kind": "database", "driver": "postgres", "dsn": "host=db password=secret", "table": "t"}, "holds a password"),
])
def test_connector_settings(tmp_path, connector, expected):
    found = issues_of(write_registry(tmp_path / "registry", [firms_dataset(connector=connector)]))
    assert any("firms.yaml:" in f and expected in f for f in found), found


def test_unknown_owner_and_enums(tmp_path):
    ds = firms_dataset(owner="nobody", update_cycle="sometimes", share_type="open", load_mode="merge")
    found = issues_of(write_registry(tmp_path / "registry", [ds]))
    for text in ("unknown owner department 'nobody'", "update_cycle 'sometimes'", "share_type 'open'",
                 "load_mode 'merge'"):
        assert any(text in f for f in found), (text, found)


def test_load_registry_raises_with_every_issue(tmp_path):
    ds = firms_dataset(share_type="not_shared")
    del ds["key"]
    with pytest.raises(RegistryError) as info:
        load_registry(write_registry(tmp_path / "registry", [ds]))
    assert len(info.value.issues) == 2
    assert "onesource registry check" in str(info.value)


def test_cli_check_exit_codes(tiny, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    assert main(["registry", "check"]) == 0
    dump(tiny.registry_dir / "datasets" / "amr" / "firms.yaml", firms_dataset(share_type="not_shared"))
    assert main(["registry", "check"]) == 1
    err = capsys.readouterr().err
    assert "registry/datasets/amr/firms.yaml:1:" in err and "legal_basis" in err


def test_cli_list_json(tiny, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    assert main(["registry", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["departments"] == [{"code": "amr", "name": "市场监督管理局"}, {"code": "tax", "name": "税务局"}]
    assert listing["datasets"] == [{"name": "firms", "owner": "amr", "share_type": "unconditional",
                                    "update_cycle": "daily", "table": "shared.firms"}]


def test_references_authority_is_checked(tmp_path):
    """``references: authority`` takes a column out of the duplicate collection rate, so only the
    authority's own key, held by another dataset, may declare it; anything else is an error."""
    def taxpayers(**column):
        uscc = {"name": "uscc", "source": "代码", "element": "uscc", "required": True}
        name = {"name": "enterprise_name", "source": "名称", "element": "enterprise_name"}
        cols = [{**c, **column.get(c["name"], {})} for c in (uscc, name)]
        return firms_dataset(name="taxpayers", owner="tax", system="tax_core", columns=cols)

    def found(firms_uscc=None, **column):
        firms = firms_dataset()
        if firms_uscc:
            firms["columns"][0].update(firms_uscc)
        return issues_of(write_registry(tmp_path / f"r{len(list(tmp_path.iterdir()))}", [firms, taxpayers(**column)]))

    assert found(uscc={"references": "authority"}) == []
    registry = load_registry(write_registry(tmp_path / "ok", [firms_dataset(), taxpayers(uscc={"references": "authority"})]))
    assert registry.dataset("taxpayers").column("uscc").references == "authority"
    assert any("not the single-column key of its authority 'firms'" in f
               for f in found(enterprise_name={"references": "authority"}))
    assert any("references 'firms' is not one of authority" in f for f in found(uscc={"references": "firms"}))
    assert any("the dataset is the authority of 'uscc'" in f for f in found(firms_uscc={"references": "authority"}))
    assert any("cannot also be the key the join uses" in f
               for f in found(uscc={"references": "authority"}, enterprise_name={"from_authority": True, "references": "authority"}))
