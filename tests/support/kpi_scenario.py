"""The hand-built city of the KPI scenario: its departments, datasets and owners."""

from __future__ import annotations

from schemas import load_registry
from tests.helpers import ELEMENTS, firms_dataset, write_registry

DEPARTMENTS = {"departments": [
    {"code": "amr", "name": "市场监督管理局", "name_en": "Market Regulation",
     "systems": [{"code": "amr_reg", "name": "登记系统"}, {"code": "amr_old", "name": "旧许可系统"}]},
    {"code": "tax", "name": "税务局", "name_en": "Tax", "systems": [{"code": "tax_core", "name": "征管系统"}]},
    {"code": "hrss", "name": "人社局", "name_en": "HR and Social Security",
     "systems": [{"code": "hrss_sys", "name": "人社系统"}]},
]}


def file(path: str) -> dict:
    return {"kind": "file", "path": path, "format": "csv"}


def registry_entries() -> list[dict]:
    """firms (amr, the authority of all three elements), taxpayers (tax: its key uscc is declared the
    reference to firms, copies the name, takes the status from_authority), moves (amr, not_shared),
    licences (amr's old system, monthly), permits (hrss, weekly, its key uscc not declared a reference:
    re-collected), hrss_people (hrss, daily, re-collects the enterprise name)."""
    uscc = {"name": "uscc", "source": "统一社会信用代码", "element": "uscc", "required": True}
    return [
        firms_dataset(connector=file("amr/firms/*.csv")),
        firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="conditional", conditions="稽查",
                      connector=file("tax/*.csv"),
                      columns=[{**uscc, "references": "authority"}, {"name": "enterprise_name", "source": "企业名称", "element": "enterprise_name"},
                               {"name": "enterprise_status", "source": "登记状态", "element": "enterprise_status",
                                "from_authority": True}]),
        firms_dataset(name="moves", share_type="not_shared", legal_basis="法规", connector=file("amr/moves/*.csv"),
                      columns=[uscc]),
        firms_dataset(name="licences", system="amr_old", update_cycle="monthly", connector=file("amr/lic/*.csv"),
                      columns=[uscc, {"name": "licence_no", "source": "许可证号", "type": "string"}]),
        firms_dataset(name="permits", owner="hrss", system="hrss_sys", update_cycle="weekly",
                      connector=file("hrss/permits/*.csv"), columns=[uscc, {"name": "permit_no", "source": "编号", "type": "string"}]),
        firms_dataset(name="hrss_people", owner="hrss", system="hrss_sys", share_type="conditional", conditions="核验",
                      key=["pid"], connector=file("hrss/people/*.csv"),
                      columns=[{"name": "pid", "source": "编号", "type": "string", "required": True},
                               {"name": "enterprise_name", "source": "单位名称", "element": "enterprise_name"}]),
    ]


def write_scenario_registry(settings) -> object:
    write_registry(settings.registry_dir, registry_entries(), elements=ELEMENTS, departments=DEPARTMENTS)
    return load_registry(settings.registry_dir)


OWNERS = {"firms": "amr", "taxpayers": "tax", "moves": "amr", "licences": "amr", "permits": "hrss",
          "hrss_people": "hrss"}
