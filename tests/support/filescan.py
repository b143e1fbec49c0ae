"""A lake of firms read through the file scan, and its oracle: the same engine reading through DuckLake."""

from __future__ import annotations

import copy

from core.config import Settings
from schemas.formats import org_code_check_char, uscc_check_char
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused
from tests.helpers import ELEMENTS, HEADER, drop, firms_dataset, load, write_registry


def uscc(n: int) -> str:
    body8 = f"MA{n:06d}"
    code17 = "91430102" + body8 + org_code_check_char(body8)
    return code17 + uscc_check_char(code17)


def extract(numbers) -> str:
    return HEADER + "".join(f"{uscc(n)},长沙第{n}有限公司,{1 + n % 2},{100 * n},{n},2020-01-0{1 + n % 9}\n"
                            for n in numbers)


def make_home(root, **dataset) -> Settings:
    home = Settings(home=root / "home")
    elements = copy.deepcopy(ELEMENTS)
    for el in elements["elements"]:
        if el["name"] == "enterprise_name":
            el["sensitivity"] = 3  # masked for every department but the owner
    write_registry(home.registry_dir, [firms_dataset(share_type="conditional", conditions="税务稽查", **dataset)],
                   elements=elements)
    drop(home, "amr/firms/a.csv", extract(range(1, 41)))
    assert [r.status for r in load(home)] == ["published"]
    return home


class ThroughDuckLake(GovernedEngine):
    """The oracle: the same engine, every table read by DuckLake's own scan."""

    def _plan(self, sql, access, department, dialect, user=None, files=None):
        return super()._plan(sql, access, department, dialect, user, None)


def answer(engine, sql: str, department: str = "tax"):
    try:
        result = engine.query(department, sql)
    except QueryRefused as exc:
        return ("refused", str(exc))
    return (tuple(result.columns), sorted(result.rows, key=repr))


def direct(engine, sql: str, department: str = "tax") -> bool:
    """Whether the last plan of ``sql`` read the table's files (not DuckLake)."""
    engine.query(department, sql)
    planned = [p for (_, d, _, _, text), (_, p) in engine._plans.items() if text == sql and d == department]  # noqa: SLF001
    return "READ_PARQUET" in planned[-1].sql_run  # the latest: one plan per access, a grant later another
