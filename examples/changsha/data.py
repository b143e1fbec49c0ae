"""Synthetic city data with valid national codes, and defects injected at known rates.

Every row is generated from one seeded random source, so the same config always yields the same
extracts. Each injected defect is recorded in the manifest (dataset, kind, row, key) so checks
can be compared with exact expected counts.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from faker import Faker

from examples.changsha.city import (
    CITY_CODE,
    CITY_NAME,
    CODE_LISTS,
    DIVISIONS,
    PROVINCE_CODE,
    DemoDataset,
    street_of,
)
from schemas.formats import USCC_ALPHABET, org_code_check_char, resident_id_check_char, uscc_check_char

AS_OF = dt.date(2026, 11, 1)
FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo city looks like. Counts scale with ``scale``; defect rates are exact."""

    departments: int = 12
    seed: int = 20261126
    scale: float = 1.0
    enterprises: int = 1200
    residents: int = 2500
    bad_check_digit_rate: float = 0.01
    name_mismatch_rate: float = 0.02
    missing_required: int = 3
    """Rows of health_medical_institutions without a name: a blocking failure, so it is quarantined."""
    duplicate_keys: int = 2
    """Repeated case numbers in urban_enforcement_cases: a blocking failure, so it is quarantined."""
    api_url: str = "http://127.0.0.1:18345/api/v1/tickets"
    history_months: int = 6
    """Months of simulated history before this one (examples.changsha.history), for the KPI trends."""

    def n(self, count: int) -> int:
        return max(5, int(count * self.scale))


@dataclass
class Enterprise:
    uscc: str
    name: str
    legal_rep: str
    capital: float
    address: str
    status: str
    established: dt.date
    division: str


@dataclass
class Resident:
    resident_id: str
    name: str
    gender: str
    birth: dt.date
    division: str
    address: str
    phone: str


@dataclass
class Defects:
    """The manifest of injected defects: ``{dataset: {kind: [{"row": n, "key": ...}]}}``."""

    found: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, dataset: str, kind: str, row: int, key: Any, **detail: Any) -> None:
        self.found.setdefault(dataset, {}).setdefault(kind, []).append({"row": row, "key": key, **detail})


class City:
    """The people and enterprises of the demo city, and each dataset's extract rows."""

    def __init__(self, config: DemoConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(config.seed)
        self.defects = Defects()
        self.enterprises = [self._enterprise() for _ in range(config.n(config.enterprises))]
        self.residents = [self._resident() for _ in range(config.n(config.residents))]

    # -- entities --------------------------------------------------------------------------
    def _uscc(self, division: str, kind: str = "91") -> str:
        body = "".join(self.rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(6))
        org8 = "MA" + body
        org = org8 + org_code_check_char(org8)
        if org[-1] not in USCC_ALPHABET:  # pragma: no cover - X and digits are in the alphabet
            return self._uscc(division, kind)
        head = kind + division + org
        return head + uscc_check_char(head)

    def _date(self, start: dt.date, end: dt.date) -> dt.date:
        return start + dt.timedelta(days=self.rng.randrange((end - start).days))

    def _enterprise(self) -> Enterprise:
        division = self.rng.choice(list(DIVISIONS))
        return Enterprise(
            uscc=self._uscc(division),
            name=self.fake.company(),
            legal_rep=self.fake.name(),
            capital=round(self.rng.choice([10, 50, 100, 300, 500, 1000, 5000, 12000]) * self.rng.uniform(0.5, 2), 2),
            address=f"{CITY_NAME}{DIVISIONS[division]}{self.fake.street_name()}{self.rng.randint(1, 999)}号",
            status=self.rng.choices(["1", "2", "3", "4"], weights=[70, 20, 4, 6])[0],
            established=self._date(dt.date(1995, 1, 1), AS_OF),
            division=division,
        )

    def _resident(self) -> Resident:
        division = self.rng.choice(list(DIVISIONS))
        birth = self._date(dt.date(1940, 1, 1), dt.date(2020, 12, 31))
        gender = self.rng.choice(["1", "2"])
        seq = self.rng.randrange(0, 50) * 2 + (1 if gender == "1" else 0)  # odd for men, even for women
        body = f"{division}{birth:%Y%m%d}{self.rng.randrange(0, 10)}{seq:02d}"
        return Resident(
            resident_id=body + resident_id_check_char(body),
            name=self.fake.name_male() if gender == "1" else self.fake.name_female(),
            gender=gender,
            birth=birth,
            division=division,
            address=f"{CITY_NAME}{DIVISIONS[division]}{self.fake.street_name()}{self.rng.randint(1, 300)}号",
            phone=self.fake.phone_number(),
        )

    # -- defects ---------------------------------------------------------------------------
    def _pick(self, n_rows: int, rate: float, avoid: frozenset[int] = frozenset()) -> list[int]:
        """Rows for one defect kind; ``avoid`` keeps kinds apart, so each defect is counted once."""
        free = [i for i in range(n_rows) if i not in avoid]
        return sorted(self.rng.sample(free, min(len(free), round(n_rows * rate))))

    @staticmethod
    def _wrong_check(code: str, alphabet: str) -> str:
        return code[:-1] + next(c for c in alphabet if c != code[-1])

    def _variant_name(self, name: str) -> str:
        for a, b in (("有限公司", "有限责任公司"), ("科技", "技术"), ("信息", "资讯")):
            if a in name:
                return name.replace(a, b, 1)
        return name + "（分公司）"

    # -- datasets --------------------------------------------------------------------------
    def rows(self, ds: DemoDataset) -> list[dict[str, Any]]:
        """The extract rows of ``ds``, keyed by source header, defects included."""
        make = getattr(self, f"_rows_{ds.name}", None)
        return make(ds) if make else self._rows_service_records(ds)

    def _rows_amr_enterprise_register(self, ds: DemoDataset) -> list[dict]:
        status = CODE_LISTS["enterprise_status"]
        out = []
        for i, e in enumerate(self.enterprises):
            date_fmt = ("%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日")[i % 3]  # departments mix date formats
            out.append({"统一社会信用代码": e.uscc, "企业名称": e.name, "法定代表人": e.legal_rep,
                        "注册资本(万元)": f"{e.capital:,.2f}", "住所": e.address,
                        "登记状态": status[e.status] if i % 2 else e.status,  # labels and codes both arrive
                        "成立日期": e.established.strftime(date_fmt), "行政区划代码": e.division,
                        "所属街道": street_of(e.uscc, e.division)})
        return out

    def _rows_psb_resident_register(self, ds: DemoDataset) -> list[dict]:
        return [{"sfzh": r.resident_id, "xm": r.name, "xb": r.gender, "csrq": r.birth.strftime("%Y%m%d"),
                 "hjqh": r.division, "hjdz": r.address,
                 "gxsj": f"{AS_OF - dt.timedelta(days=i % 90)} 0{i % 10}:00:00",
                 "jdqh": street_of(r.resident_id, r.division)} for i, r in enumerate(self.residents)]

    def _rows_psb_household_moves(self, ds: DemoDataset) -> list[dict]:
        people = self.rng.sample(self.residents, min(len(self.residents), self.config.n(200)))
        return [{"迁移编号": f"QY{AS_OF:%Y}{i:06d}", "公民身份号码": r.resident_id, "迁出地": r.division,
                 "迁入地": self.rng.choice(list(DIVISIONS)), "迁移日期": str(self._date(dt.date(2024, 1, 1), AS_OF))}
                for i, r in enumerate(people)]

    def _rows_mca_admin_divisions(self, ds: DemoDataset) -> list[dict]:
        return [{"code": CITY_CODE, "name": CITY_NAME, "parent": PROVINCE_CODE, "level": 2}] + [
            {"code": c, "name": n, "parent": CITY_CODE, "level": 3} for c, n in DIVISIONS.items()]

    def _rows_mca_subsistence_allowance(self, ds: DemoDataset) -> list[dict]:
        people = self.rng.sample(self.residents, min(len(self.residents), self.config.n(300)))
        return [{"idCard": r.resident_id, "name": r.name, "area": r.division,
                 "amount": round(self.rng.uniform(600, 1200), 2), "startDate": str(self._date(dt.date(2020, 1, 1), AS_OF)),
                 "street": street_of(r.resident_id, r.division)}
                for r in people]

    def _rows_tax_taxpayer_register(self, ds: DemoDataset) -> list[dict]:
        firms = self.enterprises[: self.config.n(1000)]
        rows = [{"纳税人识别号": e.uscc, "纳税人名称": e.name, "纳税人类型": self.rng.choice(["一般纳税人", "小规模纳税人"]),
                 "纳税信用等级": self.rng.choice("ABBBMCD"), "登记日期": str(e.established + dt.timedelta(days=30))}
                for e in firms]
        bad = self._pick(len(rows), self.config.bad_check_digit_rate)
        for i in bad:
            rows[i]["纳税人识别号"] = self._wrong_check(rows[i]["纳税人识别号"], USCC_ALPHABET)
            self.defects.add(ds.name, "bad_check_digit", i + 1, rows[i]["纳税人识别号"], column="uscc")
        for i in self._pick(len(rows), self.config.name_mismatch_rate, avoid=frozenset(bad)):
            rows[i]["纳税人名称"] = self._variant_name(rows[i]["纳税人名称"])
            self.defects.add(ds.name, "name_mismatch", i + 1, rows[i]["纳税人识别号"], column="enterprise_name",
                             value=rows[i]["纳税人名称"], authority=firms[i].name)
        return rows

    def _rows_hrss_enterprise_insurance(self, ds: DemoDataset) -> list[dict]:
        firms = self.enterprises[: self.config.n(800)]
        return [{"单位统一社会信用代码": e.uscc, "单位名称": e.name, "参保人数": self.rng.randint(1, 500),
                 "缴费月份": f"{AS_OF:%Y-%m}"} for e in firms]

    def _rows_hrss_person_insurance(self, ds: DemoDataset) -> list[dict]:
        people = self.residents[: self.config.n(1500)]
        rows = []
        for i, r in enumerate(people):
            for kind in self.rng.sample(list(CODE_LISTS["insurance_type"]), self.rng.randint(1, 2)):
                rows.append({"aac002": r.resident_id, "aac003": r.name, "aab998": self.rng.choice(self.enterprises).uscc,
                             "aae140": kind, "aic020": round(self.rng.uniform(3957, 22311), 2),
                             "aae036": f"{AS_OF - dt.timedelta(days=i % 28)} 1{i % 10}:30:00"})
        for i in self._pick(len(rows), self.config.bad_check_digit_rate):
            rows[i]["aac002"] = self._wrong_check(rows[i]["aac002"], "0123456789X")
            self.defects.add(ds.name, "bad_check_digit", i + 1, [rows[i]["aac002"], rows[i]["aae140"]], column="resident_id")
        return rows

    def _rows_health_medical_institutions(self, ds: DemoDataset) -> list[dict]:
        levels = list(CODE_LISTS["institution_level"].values())
        firms = self.rng.sample(self.enterprises, min(len(self.enterprises), self.config.n(120)))
        rows = [{"登记号": f"PDY{430100 + i:08d}", "机构名称": f"{e.name.removesuffix('有限公司')}医院",
                 "统一社会信用代码": e.uscc, "机构级别": self.rng.choice(levels), "核定床位": self.rng.randint(0, 1200),
                 "所在区县": e.division} for i, e in enumerate(firms)]
        for i in sorted(self.rng.sample(range(len(rows)), min(len(rows), self.config.missing_required))):
            rows[i]["机构名称"] = ""
            self.defects.add(ds.name, "missing_required", i + 1, rows[i]["登记号"], column="institution_name")
        return rows

    def _rows_housing_construction_permits(self, ds: DemoDataset) -> list[dict]:
        firms = [self.rng.choice(self.enterprises) for _ in range(self.config.n(300))]
        return [{"permit_no": f"{e.division}2026{i:05d}0101", "builder_uscc": e.uscc, "builder_name": e.name,
                 "project_name": f"{self.fake.street_name()}{self.rng.choice(['住宅', '综合体', '学校', '厂房'])}项目",
                 "project_address": e.address, "floor_area": f"{self.rng.uniform(1000, 150000):,.2f}",
                 "issued_on": self._date(dt.date(2025, 1, 1), AS_OF).strftime("%Y%m%d")} for i, e in enumerate(firms)]

    def _rows_nr_land_parcels(self, ds: DemoDataset) -> list[dict]:
        uses = list(CODE_LISTS["land_use"])
        return [{"zddm": f"{e.division}00{i:06d}GB{i % 100:05d}", "qhdm": e.division, "tdyt": self.rng.choice(uses),
                 "mj": round(self.rng.uniform(200, 90000), 2), "qlr_dm": e.uscc}
                for i, e in enumerate(self.rng.sample(self.enterprises, min(len(self.enterprises), self.config.n(400))))]

    def _rows_transport_operator_licenses(self, ds: DemoDataset) -> list[dict]:
        firms = self.rng.sample(self.enterprises, min(len(self.enterprises), self.config.n(200)))
        rows = [{"许可证号": f"湘交运管许可长字{430100000000 + i}号", "统一社会信用代码": e.uscc, "业户名称": e.name,
                 "负责人": e.legal_rep, "车辆数": str(self.rng.randint(1, 80)),
                 "有效期至": str(self._date(AS_OF, dt.date(2030, 12, 31)))} for i, e in enumerate(firms)]
        for i in range(0, len(rows), 7):  # some clerks type full-width digits
            rows[i]["车辆数"] = rows[i]["车辆数"].translate(FULLWIDTH_DIGITS)
        for i in self._pick(len(rows), self.config.name_mismatch_rate):
            rows[i]["业户名称"] = self._variant_name(rows[i]["业户名称"])
            self.defects.add(ds.name, "name_mismatch", i + 1, rows[i]["许可证号"], column="enterprise_name",
                             value=rows[i]["业户名称"], authority=firms[i].name)
        return rows

    def _rows_edu_schools(self, ds: DemoDataset) -> list[dict]:
        types = CODE_LISTS["school_type"]
        out = []
        for i in range(self.config.n(150)):
            kind = self.rng.choice(list(types))
            division = self.rng.choice(list(DIVISIONS))
            out.append({"学校标识码": f"{3143000000 + i}", "学校名称": f"{CITY_NAME}{DIVISIONS[division]}{self.fake.street_name()}{types[kind]}",
                        "办学类型": types[kind], "在校生数": self.rng.randint(80, 3000), "所在地区": division})
        return out

    def _rows_urban_enforcement_cases(self, ds: DemoDataset) -> list[dict]:
        kinds = list(CODE_LISTS["violation_type"])
        rows = [{"caseNo": f"长城管罚〔2026〕{i:05d}号", "partyCode": self.rng.choice(self.enterprises).uscc,
                 "violation": self.rng.choice(kinds), "fine": round(self.rng.choice([200, 500, 1000, 5000]) * 1.0, 2),
                 "caseDate": str(self._date(dt.date(2026, 1, 1), AS_OF))} for i in range(self.config.n(250))]
        for j in range(min(self.config.duplicate_keys, len(rows) - 1)):
            dup = dict(rows[j], fine=rows[j]["fine"] + 100)
            rows.append(dup)
            self.defects.add(ds.name, "duplicate_key", len(rows), dup["caseNo"], column="case_no")
        return rows

    def _rows_hotline_tickets(self, ds: DemoDataset) -> list[dict]:
        cats = list(CODE_LISTS["ticket_category"])
        handlers = ["市场监督管理局", "城市管理局", "住房和城乡建设局", "交通运输局", "人力资源和社会保障局", "公安局"]
        out = []
        start = dt.datetime.combine(AS_OF - dt.timedelta(days=30), dt.time(8))
        for i in range(self.config.n(1500)):
            at = start + dt.timedelta(minutes=29 * i + self.rng.randrange(0, 20))
            r = self.rng.choice(self.residents)
            out.append({"ticket_id": f"GD{at:%Y%m%d}{i:06d}", "created_at": at.strftime("%Y-%m-%d %H:%M:%S"),
                        "category": self.rng.choice(cats), "district": r.division, "caller_phone": r.phone,
                        "summary": self.fake.sentence(nb_words=12), "handler": self.rng.choice(handlers)})
        return out

    def _rows_service_records(self, ds: DemoDataset) -> list[dict]:
        return [{"办件编号": f"{ds.owner.upper()}{AS_OF:%Y}{i:06d}", "统一社会信用代码": e.uscc, "单位名称": e.name,
                 "事项名称": f"{ds.title.removesuffix('业务办理记录')}业务办理", "办结日期": str(self._date(dt.date(2026, 1, 1), AS_OF))}
                for i, e in enumerate(self.rng.sample(self.enterprises, min(len(self.enterprises), self.config.n(80))))]
