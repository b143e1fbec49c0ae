"""People and visits holding a resident ID element, the world of who-saw and its oracle."""

from __future__ import annotations

from core.config import Settings
from schemas.formats import resident_id_check_char
from tests.helpers import drop, dump, load

DEPARTMENTS = {"departments": [
    {"code": "psb", "name": "公安局", "name_en": "Public Security", "systems": [{"code": "psb_pop", "name": "人口系统"}]},
    {"code": "nhc", "name": "卫健委", "name_en": "Health", "systems": [{"code": "nhc_his", "name": "医疗系统"}]},
    {"code": "tax", "name": "税务局", "name_en": "Tax", "systems": [{"code": "tax_core", "name": "征管系统"}]},
]}
ELEMENTS = {"elements": [
    {"name": "person_id", "name_zh": "公民身份号码", "name_en": "Resident ID", "type": "string",
     "authority": "people", "format": "resident_id", "sensitivity": 3},
    {"name": "person_name", "name_zh": "姓名", "name_en": "Name", "type": "string", "authority": "people",
     "sensitivity": 3},
], "code_lists": {"status": {"1": "存续", "2": "注销"}}}
PEOPLE = {
    "name": "people", "title": "人口", "owner": "psb", "system": "psb_pop", "update_cycle": "daily",
    "share_type": "conditional", "conditions": "依法", "key": ["rid"], "load_mode": "snapshot",
    "connector": {"kind": "file", "path": "psb/people/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "rid", "source": "rid", "type": "integer", "required": True},
        {"name": "pid", "source": "pid", "element": "person_id", "required": True},
        {"name": "name", "source": "name", "element": "person_name"},
        {"name": "district", "source": "district", "type": "string"},
        {"name": "age", "source": "age", "type": "integer"},
    ],
}
VISITS = {
    "name": "visits", "title": "就诊", "owner": "nhc", "system": "nhc_his", "update_cycle": "daily",
    "share_type": "conditional", "conditions": "依法", "key": ["rid"], "load_mode": "snapshot",
    "connector": {"kind": "file", "path": "nhc/visits/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "rid", "source": "rid", "type": "integer", "required": True},
        {"name": "pid", "source": "pid", "element": "person_id", "required": True},
        {"name": "clinic", "source": "clinic", "type": "string"},
        {"name": "cost", "source": "cost", "type": "integer"},
    ],
}
DISTRICTS = ("A", "B", "C")


def person_id(n: int) -> str:
    body = f"43010219900101{n:03d}"
    return body + resident_id_check_char(body)


RECORD = 3
"""The person whose record is looked for (one row of people, two of visits)."""
VALUE = person_id(RECORD)


def people_rows(persons=range(1, 13), age_of=lambda n: 20 + 3 * n) -> list[tuple]:
    return [(n, person_id(n), f"人{n}", DISTRICTS[n % 3], age_of(n)) for n in persons]


def visit_rows(persons=range(1, 13)) -> list[tuple]:
    out, rid = [], 100
    for n in persons:
        for k in range(1 + (n % 2 == 1)):  # odd persons (the record among them) have two visits
            rid += 1
            out.append((rid, person_id(n), f"诊所{(n + k) % 3}", 10 * n + k))
    return out


def csv(header: str, rows: list[tuple]) -> str:
    return header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


def make_home(root, people=None, visits=None, lake=None) -> Settings:
    """``lake``: LakeSettings (another catalog); the home's own by default."""
    home = Settings(home=root / "home") if lake is None else Settings(home=root / "home", lake=lake)
    dump(home.registry_dir / "departments.yaml", DEPARTMENTS)
    dump(home.registry_dir / "elements.yaml", ELEMENTS)
    dump(home.registry_dir / "datasets" / "psb" / "people.yaml", PEOPLE)
    dump(home.registry_dir / "datasets" / "nhc" / "visits.yaml", VISITS)
    drop(home, "psb/people/1.csv", csv("rid,pid,name,district,age", people or people_rows()))
    drop(home, "nhc/visits/1.csv", csv("rid,pid,clinic,cost", visits or visit_rows()))
    for name in ("people", "visits"):
        assert [r.status for r in load(home, name)] == ["published"], name
    return home
