"""A dataset with every column type for the Postgres catalog, and where PgJDBC's jar may be."""

from __future__ import annotations

from pathlib import Path

TAXPAYERS = {
    "name": "taxpayers", "title": "纳税人登记", "owner": "tax", "system": "tax_core", "update_cycle": "daily",
    "share_type": "conditional", "conditions": "依法履职", "key": ["taxpayer_id"],
    "connector": {"kind": "file", "path": "tax/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [{"name": "taxpayer_id", "source": "nsrsbh", "type": "string", "required": True},
                {"name": "taxpayer_status", "source": "状态", "element": "taxpayer_status"},
                {"name": "enterprise_name", "source": "纳税人名称", "type": "string"},
                {"name": "revenue", "source": "营业收入", "type": "number"},
                {"name": "registered_at", "source": "登记时间", "type": "timestamp"},
                {"name": "active", "source": "有效", "type": "boolean"}],
}
JARS = (Path("/root/.m2/repository/org/postgresql/postgresql/42.7.13/postgresql-42.7.13.jar"),
        Path("/usr/share/java/postgresql.jar"))
