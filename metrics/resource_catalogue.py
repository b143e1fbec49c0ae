"""The data-resource catalogue with the core fields of the national standard (GB/T 21063.3), as rows
for the shared ``data_catalogue`` table and for ``onesource registry export --format xlsx|csv``."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from lakehouse import ledger
from lakehouse.lake import Lake
from schemas.model import Dataset, Registry

# (column, 中文字段名) in the standard's order
FIELDS = (
    ("name", "信息资源名称"), ("code", "信息资源代码"), ("provider", "信息资源提供方"), ("summary", "信息资源摘要"),
    ("format", "信息资源格式"), ("data_items", "信息项信息"), ("share_type", "共享类型"),
    ("share_condition", "共享条件"), ("share_method", "共享方式"), ("open_attribute", "开放属性"),
    ("update_cycle", "更新周期"), ("publish_date", "发布日期"),
)
SHARE_TYPES = {"unconditional": "无条件共享", "conditional": "有条件共享", "not_shared": "不予共享"}
CYCLES = {"hourly": "实时", "daily": "每日", "weekly": "每周", "monthly": "每月", "quarterly": "每季度",
          "yearly": "每年"}
TYPES = {"string": "字符型", "integer": "整数型", "decimal": "数值型", "number": "数值型", "date": "日期型",
         "timestamp": "日期时间型", "boolean": "布尔型"}
METHOD = "库表（受控SQL：命令行、HTTP接口、PostgreSQL协议）"


def _format(ds: Dataset) -> str:
    kind, settings = ds.connector.kind, ds.connector.settings
    if kind == "file":
        return f"电子文件（{str(settings.get('format', 'csv')).upper()}）"
    if kind == "database":
        return f"数据库（{settings.get('driver')}）"
    if kind == "http":
        return "接口（JSON）"
    return "库表（平台生成）"


def codes(registry: Registry) -> dict[str, str]:
    """Stable resource codes: the provider's code and the dataset's rank among its datasets."""
    out, seen = {}, {}
    for ds in sorted(registry.datasets, key=lambda d: (d.owner, d.name)):
        seen[ds.owner] = seen.get(ds.owner, 0) + 1
        out[ds.name] = f"OS-{ds.owner.upper()}-{seen[ds.owner]:04d}"
    return out


def rows(registry: Registry, lake: Lake | None = None) -> list[dict]:
    published: dict[str, dt.datetime] = {}
    if lake is not None:
        published = ledger.first_published(lake.con, excluding="hist-")
    code = codes(registry)
    out = []
    for ds in registry.datasets:
        items = "; ".join(f"{c.name}（{registry.element(c.element).name_zh if c.element else c.source}，"
                          f"{TYPES.get(c.type, c.type)}）" for c in ds.columns)
        first = published.get(ds.name)
        out.append({"name": ds.title, "code": code[ds.name], "provider": registry.department(ds.owner).name,
                    "summary": ds.description or ds.title, "format": _format(ds), "data_items": items,
                    "share_type": SHARE_TYPES.get(ds.share_type, ds.share_type),
                    "share_condition": ds.conditions or ds.legal_basis or "", "share_method": METHOD,
                    "open_attribute": ds.open_attribute, "update_cycle": CYCLES.get(ds.update_cycle, ds.update_cycle),
                    "publish_date": first.date() if first else None, "dataset": ds.name})
    return out


def export(path: Path, registry: Registry, lake: Lake | None = None) -> Path:
    data = rows(registry, lake)
    header = [zh for _, zh in FIELDS] + ["数据集"]
    keys = [k for k, _ in FIELDS] + ["dataset"]
    if path.suffix.lower() == ".xlsx":
        from openpyxl import Workbook
        from openpyxl.styles import Font

        wb = Workbook()
        ws = wb.active
        ws.title = "信息资源目录"
        ws.append(header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for r in data:
            ws.append([r[k] for k in keys])
        ws.freeze_panes = "A2"
        wb.save(path)
        return path
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[r[k] for k in keys] for r in data])
    return path
