"""The departments, element and datasets of the standard SQL world."""

from __future__ import annotations

DEPARTMENTS = {"departments": [
    {"code": "psb", "name": "公安局", "name_en": "Public Security", "systems": [{"code": "psb_core", "name": "人口库"}]},
    {"code": "tax", "name": "税务局", "name_en": "Tax", "systems": [{"code": "tax_core", "name": "征管系统"}]},
    {"code": "edu", "name": "教育局", "name_en": "Education", "systems": [{"code": "edu_core", "name": "学籍系统"}]},
]}
ELEMENTS = {"elements": [{"name": "mobile", "name_zh": "手机号码", "name_en": "Mobile", "type": "string",
                          "authority": "people", "format": "mobile", "sensitivity": 3}],
            "code_lists": {"district": {"A": "甲区", "B": "乙区", "C": "丙区"}}}


def dataset(name: str, title: str, key: str, columns: list[dict]) -> dict:
    return {"name": name, "title": title, "owner": "psb", "system": "psb_core", "update_cycle": "daily",
            "share_type": "conditional", "conditions": "by grant", "key": [key],
            "connector": {"kind": "file", "path": f"psb/{name}.csv", "format": "csv"}, "columns": columns}
