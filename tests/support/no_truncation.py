"""A register of more firms than answers used to be cut to, and its oracles on the lake."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os

import pyarrow as pa

from core.config import Settings
from ingest import run_dataset
from lakehouse import Lake
from schemas import load_registry
from schemas.formats import org_code_check_char, uscc_check_char
from sharing.grants import active_grants, add_grant, visible
from sharing.policy import relation
from tests.helpers import ELEMENTS, firms_dataset, write_registry

ROWS = 12_345
FILTER = "staff >= 400"
ORDER = " ORDER BY uscc"


def firms_csv(rows: int) -> str:
    """``rows`` firms with valid credit codes (GB 32100 check characters), names that repeat, 92% with
    400 staff or more."""
    out = io.StringIO()
    out.write("统一社会信用代码,企业名称,登记状态,注册资本,人数,成立日期\n")
    for i in range(rows):
        org = f"M{i:07d}"
        body = f"91330106{org}{org_code_check_char(org)}"
        out.write(f"{body}{uscc_check_char(body)},杭州{i % 9973}号科技有限公司,{'1' if i % 3 else '2'},"
                  f"{(i % 100000) / 8:.2f},{(i * 7919) % 5000},{dt.date(2000, 1, 1) + dt.timedelta(days=i % 9000)}\n")
    return out.getvalue()


def big_home(root, rows: int = ROWS) -> tuple[Settings, object]:
    """The world of this module in the home ``root``: ``rows`` firms (conditional, names masked), a grant to
    ``tax`` with a row filter, and one user per department (``home/users.json``: name, password and token)."""
    from sharing.users import create_user

    settings = Settings(home=root)
    elements = copy.deepcopy(ELEMENTS)
    next(e for e in elements["elements"] if e["name"] == "enterprise_name")["sensitivity"] = 3
    write_registry(settings.registry_dir, [firms_dataset(share_type="conditional", conditions="按需申请")],
                   elements=elements)
    path = settings.sources_dir / "amr" / "firms" / "a.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(firms_csv(rows), encoding="utf-8")
    registry = load_registry(settings.registry_dir)
    [result] = run_dataset(settings, registry, "firms", os.environ)
    assert result.status == "published", result.message
    users = {}
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "tax", "firms", row_filter=FILTER)
        for department in ("amr", "tax"):
            password, token = create_user(lake, department, f"{department}_analyst")
            users[department] = {"user": f"{department}_analyst", "password": password, "token": token}
    (settings.home / "users.json").write_text(json.dumps(users))
    return settings, registry


def raw(settings: Settings, query: str) -> pa.Table:
    """DuckDB's own answer on the lake (the oracle's engine)."""
    with Lake(settings.lake, read_only=True) as lake:
        return lake.con.execute(query).to_arrow_table()


def policy_relation(settings: Settings, registry, department: str) -> str:
    """The department's view of the firms, as the SQL DuckDB runs on the lake."""
    with Lake(settings.lake, read_only=True) as lake:
        acc = visible(registry, active_grants(lake, department), department)["firms"]
    return relation(registry.dataset("firms"), acc, row_filters=acc.row_filters).sql(dialect="duckdb")
