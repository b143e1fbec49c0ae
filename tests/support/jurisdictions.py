"""Organisation trees and a registry with a dataset scoped by division code."""

from __future__ import annotations

from pathlib import Path

from schemas import check_registry
from tests.helpers import dump, firms_dataset, write_registry

CITY = "430100"
PLACES = {
    "name": "places", "title": "网格事件", "owner": "amr", "system": "amr_reg", "update_cycle": "daily",
    "share_type": "conditional", "conditions": "测试", "key": ["id"], "division_column": "division",
    "connector": {"kind": "file", "path": "amr/places/*.csv", "format": "csv"},
    "columns": [{"name": "id", "type": "string", "required": True}, {"name": "division", "type": "string"},
                {"name": "n", "type": "integer"}, {"name": "secret", "type": "string"}],
}


def organisations(*items: tuple[str, str, str | None]) -> dict:
    return {"organisations": [{"code": c, "name": n, **({"parent": p} if p else {})} for c, n, p in items]}


TREE = organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY), ("430104001", "望月湖街道", "430104"),
                     ("430104002", "岳麓街道", "430104"), ("430102", "芙蓉区", CITY))


def registry_at(root: Path, orgs: dict | None = TREE, places: dict | None = None):
    write_registry(root, [firms_dataset(), places or PLACES])
    if orgs is not None:
        dump(root / "organisations.yaml", orgs)
    return check_registry(root)


def messages(issues) -> str:
    return "\n".join(f"{i.file}:{i.line}: {i.message}" for i in issues)
