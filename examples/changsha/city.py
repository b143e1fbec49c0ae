"""The demo city's registry, as data: departments, data elements, code lists, datasets.

Twelve core departments deliver fifteen datasets in the forms departments really send (CSV in
UTF-8 and GBK, XLSX, JSON, NDJSON, Parquet, a SQLite database, a paginated HTTP API). Further
departments (up to 87) each deliver one service-record dataset that re-collects enterprise names,
the way real bureaus do before once-only sharing reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (code, name, English name, system code, system name)
CORE_DEPARTMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("amr", "市场监督管理局", "Administration for Market Regulation", "amr_reg", "企业登记注册系统"),
    ("psb", "公安局", "Public Security Bureau", "psb_hukou", "人口户籍管理系统"),
    ("mca", "民政局", "Civil Affairs Bureau", "mca_biz", "民政业务系统"),
    ("tax", "税务局", "Tax Bureau", "tax_core", "税收征管系统"),
    ("hrss", "人力资源和社会保障局", "Human Resources and Social Security Bureau", "hrss_si", "社会保险系统"),
    ("health", "卫生健康委员会", "Health Commission", "health_inst", "医疗机构管理系统"),
    ("housing", "住房和城乡建设局", "Housing and Urban-Rural Development Bureau", "housing_permit", "施工许可系统"),
    ("nr", "自然资源和规划局", "Natural Resources and Planning Bureau", "nr_land", "不动产与地籍系统"),
    ("transport", "交通运输局", "Transport Bureau", "transport_lic", "道路运输许可系统"),
    ("edu", "教育局", "Education Bureau", "edu_school", "学校管理系统"),
    ("urban", "城市管理局", "Urban Management Bureau", "urban_case", "综合执法系统"),
    ("hotline", "12345政务服务便民热线", "12345 Citizen Service Hotline", "hotline_api", "热线工单系统"),
)

# Departments 13..87: further municipal bodies, each with one registered system.
EXTRA_DEPARTMENTS: tuple[tuple[str, str, str], ...] = (
    ("drc", "发展和改革委员会", "Development and Reform Commission"),
    ("finance", "财政局", "Finance Bureau"),
    ("audit", "审计局", "Audit Bureau"),
    ("stats", "统计局", "Statistics Bureau"),
    ("env", "生态环境局", "Ecology and Environment Bureau"),
    ("water", "水利局", "Water Resources Bureau"),
    ("agri", "农业农村局", "Agriculture and Rural Affairs Bureau"),
    ("commerce", "商务局", "Commerce Bureau"),
    ("culture", "文化广电旅游局", "Culture, Radio, Television and Tourism Bureau"),
    ("veterans", "退役军人事务局", "Veterans Affairs Bureau"),
    ("emergency", "应急管理局", "Emergency Management Bureau"),
    ("medsec", "医疗保障局", "Healthcare Security Bureau"),
    ("justice", "司法局", "Justice Bureau"),
    ("science", "科学技术局", "Science and Technology Bureau"),
    ("econ", "经济和信息化局", "Economy and Information Technology Bureau"),
    ("ethnic", "民族宗教事务局", "Ethnic and Religious Affairs Bureau"),
    ("forestry", "林业局", "Forestry Bureau"),
    ("sports", "体育局", "Sports Bureau"),
    ("civdef", "人民防空办公室", "Civil Air Defence Office"),
    ("archives", "档案局", "Archives Bureau"),
    ("petition", "信访局", "Letters and Visits Bureau"),
    ("offices", "机关事务管理局", "Government Offices Administration"),
    ("finreg", "地方金融管理局", "Local Financial Regulatory Bureau"),
    ("grain", "粮食和物资储备局", "Grain and Reserves Bureau"),
    ("supply", "供销合作社", "Supply and Marketing Cooperative"),
    ("hpf", "住房公积金管理中心", "Housing Provident Fund Centre"),
    ("ggzy", "公共资源交易中心", "Public Resources Trading Centre"),
    ("bigdata", "数据资源管理局", "Data Resources Bureau"),
    ("weather", "气象局", "Meteorological Bureau"),
    ("fire", "消防救援支队", "Fire and Rescue Detachment"),
    ("post", "邮政管理局", "Postal Administration"),
    ("tobacco", "烟草专卖局", "Tobacco Monopoly Bureau"),
    ("disabled", "残疾人联合会", "Disabled Persons' Federation"),
    ("redcross", "红十字会", "Red Cross Society"),
    ("union", "总工会", "Federation of Trade Unions"),
    ("youth", "共青团市委", "Communist Youth League Committee"),
    ("women", "妇女联合会", "Women's Federation"),
    ("sciassoc", "科学技术协会", "Association for Science and Technology"),
    ("chinese_os", "归国华侨联合会", "Federation of Returned Overseas Chinese"),
    ("socsci", "社会科学界联合会", "Federation of Social Sciences"),
    ("arts", "文学艺术界联合会", "Federation of Literary and Art Circles"),
    ("fic", "工商业联合会", "Federation of Industry and Commerce"),
    ("court", "中级人民法院", "Intermediate People's Court"),
    ("procur", "人民检察院", "People's Procuratorate"),
    ("customs", "海关", "Customs"),
    ("immig", "出入境管理局", "Exit and Entry Administration"),
    ("traffic", "交通警察支队", "Traffic Police Detachment"),
    ("metro", "地铁集团", "Metro Group"),
    ("waterco", "水务集团", "Water Supply Group"),
    ("power", "供电公司", "Power Supply Company"),
    ("gas", "燃气集团", "Gas Group"),
    ("telecom", "通信管理局", "Communications Administration"),
    ("radio", "无线电管理局", "Radio Administration"),
    ("ip", "知识产权局", "Intellectual Property Office"),
    ("drug", "药品监督管理局", "Medical Products Administration"),
    ("sasac", "国有资产监督管理委员会", "State-owned Assets Supervision Commission"),
    ("invest", "投资促进局", "Investment Promotion Bureau"),
    ("talent", "人才工作局", "Talent Affairs Bureau"),
    ("park", "高新区管委会", "High-tech Zone Administrative Committee"),
    ("port", "口岸办公室", "Port Office"),
    ("aviation", "机场集团", "Airport Group"),
    ("rail", "铁路办公室", "Railway Office"),
    ("landres", "土地储备中心", "Land Reserve Centre"),
    ("survey", "测绘地理信息局", "Surveying and Mapping Bureau"),
    ("seismic", "地震局", "Earthquake Administration"),
    ("hydro", "水文站", "Hydrological Station"),
    ("market", "市场发展中心", "Market Development Centre"),
    ("credit", "信用中心", "Credit Centre"),
    ("govsvc", "政务服务中心", "Government Service Centre"),
    ("cdc", "疾病预防控制中心", "Centre for Disease Control"),
    ("blood", "中心血站", "Central Blood Station"),
    ("library", "图书馆", "Library"),
    ("museum", "博物馆", "Museum"),
    ("garden", "园林文物局", "Gardens and Cultural Relics Bureau"),
    ("oldage", "老龄工作委员会办公室", "Ageing Affairs Office"),
)

MAX_DEPARTMENTS = len(CORE_DEPARTMENTS) + len(EXTRA_DEPARTMENTS)

# GB/T 2260 codes of the city's districts, counties and county-level cities (Changsha, shared/CITY.md).
DIVISIONS: dict[str, str] = {
    "430102": "芙蓉区", "430103": "天心区", "430104": "岳麓区", "430105": "开福区", "430111": "雨花区",
    "430112": "望城区", "430121": "长沙县", "430181": "浏阳市", "430182": "宁乡市",
}
CITY_CODE, CITY_NAME, PROVINCE_CODE = "430100", "长沙市", "430000"
CITY_NAME_EN = "Changsha"
DIVISIONS_EN: dict[str, str] = {
    "430102": "Furong District", "430103": "Tianxin District", "430104": "Yuelu District", "430105": "Kaifu District",
    "430111": "Yuhua District", "430112": "Wangcheng District", "430121": "Changsha County", "430181": "Liuyang",
    "430182": "Ningxiang",
}
# A few street offices (街道) of each district: 9-digit codes, the district's 6 and 3 more (organisations.yaml).
# Residents and enterprises of the demo city live in one of their district's streets.
STREETS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "430102": (("430102001", "文艺路街道", "Wenyilu Subdistrict"), ("430102002", "朝阳街道", "Chaoyang Subdistrict"),
               ("430102005", "五里牌街道", "Wulipai Subdistrict")),
    "430103": (("430103001", "坡子街街道", "Pozijie Subdistrict"), ("430103002", "城南路街道", "Chengnanlu Subdistrict"),
               ("430103004", "金盆岭街道", "Jinpenling Subdistrict")),
    "430104": (("430104001", "望月湖街道", "Wangyuehu Subdistrict"), ("430104002", "岳麓街道", "Yuelu Subdistrict"),
               ("430104003", "橘子洲街道", "Juzizhou Subdistrict")),
    "430105": (("430105001", "东风路街道", "Dongfenglu Subdistrict"), ("430105003", "望麓园街道", "Wangluyuan Subdistrict")),
    "430111": (("430111001", "侯家塘街道", "Houjiatang Subdistrict"), ("430111003", "左家塘街道", "Zuojiatang Subdistrict")),
    "430112": (("430112001", "高塘岭街道", "Gaotangling Subdistrict"), ("430112004", "白沙洲街道", "Baishazhou Subdistrict")),
    "430121": (("430121001", "星沙街道", "Xingsha Subdistrict"), ("430121002", "湘龙街道", "Xianglong Subdistrict")),
    "430181": (("430181001", "淮川街道", "Huaichuan Subdistrict"), ("430181002", "集里街道", "Jili Subdistrict")),
    "430182": (("430182001", "玉潭街道", "Yutan Subdistrict"), ("430182002", "白马桥街道", "Baimaqiao Subdistrict")),
}


def street_of(key: str, division: str) -> str:
    """The street a resident or an enterprise (``key``: its ID or credit code) lives in, within its district:
    a fixed function of the key, so that adding streets draws nothing from the city's random source."""
    import zlib

    streets = STREETS[division]
    return streets[zlib.crc32(key.encode()) % len(streets)][0]


def organisation_entries() -> list[dict[str, str]]:
    """``organisations.yaml`` of the demo city: the city, its districts, their streets."""
    out = [{"code": CITY_CODE, "name": CITY_NAME, "name_en": CITY_NAME_EN}]
    for code, name in DIVISIONS.items():
        out.append({"code": code, "name": name, "name_en": DIVISIONS_EN[code], "parent": CITY_CODE})
        out += [{"code": s, "name": n, "name_en": en, "parent": code} for s, n, en in STREETS[code]]
    return out


# The demo's jurisdiction: civil affairs reads the resident register under a grant scoped to each user's
# jurisdiction; its users in a district's and two streets' offices each read their own residents only.
JURISDICTION_GRANT = ("mca", "psb_resident_register", "街道、区县民政办：辖区低保对象身份与户籍核查")
JURISDICTION_USERS: tuple[tuple[str, str, str], ...] = (
    ("mca_yuelu", "mca", "430104"), ("mca_wangyuehu", "mca", "430104001"), ("mca_yuelujd", "mca", "430104002"))
"""(user, department, organisation) of the demo's district and street users."""

CODE_LISTS: dict[str, dict[str, str]] = {
    "division": {CITY_CODE: CITY_NAME, **DIVISIONS},
    "gender": {"1": "男", "2": "女"},
    "street": {code: name for streets in STREETS.values() for code, name, _ in streets},
    "enterprise_status": {"1": "存续", "2": "在业", "3": "吊销", "4": "注销", "5": "迁出"},
    "taxpayer_type": {"1": "一般纳税人", "2": "小规模纳税人"},
    "tax_credit_rating": {"A": "A", "B": "B", "M": "M", "C": "C", "D": "D"},
    "insurance_type": {"110": "企业职工基本养老保险", "210": "失业保险", "310": "职工基本医疗保险", "410": "工伤保险"},
    "institution_level": {"3A": "三级甲等", "3B": "三级乙等", "2A": "二级甲等", "2B": "二级乙等", "1": "一级", "0": "未定级"},
    "land_use": {"05": "商服用地", "06": "工矿仓储用地", "07": "住宅用地", "08": "公共管理与公共服务用地", "11": "水域及水利设施用地"},
    "school_type": {"kg": "幼儿园", "pri": "小学", "jun": "初级中学", "sen": "高级中学", "voc": "中等职业学校"},
    "violation_type": {"ad": "违规设置户外广告", "dump": "乱倒建筑垃圾", "stall": "占道经营", "noise": "施工噪声扰民"},
    "ticket_category": {"consult": "咨询", "complaint": "投诉", "suggest": "建议", "help": "求助", "report": "举报"},
}

# name, 中文名, English name, type, authoritative dataset, format, code list, sensitivity
ELEMENTS: tuple[tuple[str, str, str, str, str, str | None, str | None, int], ...] = (
    ("uscc", "统一社会信用代码", "Unified social credit code", "string", "amr_enterprise_register", "uscc", None, 1),
    ("enterprise_name", "企业名称", "Enterprise name", "string", "amr_enterprise_register", None, None, 1),
    ("legal_representative", "法定代表人", "Legal representative", "string", "amr_enterprise_register", None, None, 2),
    ("registered_capital", "注册资本（万元）", "Registered capital (10k CNY)", "decimal", "amr_enterprise_register", None, None, 1),
    ("enterprise_address", "企业住所", "Registered address", "string", "amr_enterprise_register", None, None, 1),
    ("enterprise_status", "登记状态", "Registration status", "string", "amr_enterprise_register", None, "enterprise_status", 1),
    ("established_date", "成立日期", "Date of establishment", "date", "amr_enterprise_register", None, None, 1),
    ("resident_id", "公民身份号码", "Resident identity number", "string", "psb_resident_register", "resident_id", None, 3),
    ("person_name", "姓名", "Person name", "string", "psb_resident_register", None, None, 2),
    ("gender", "性别", "Gender", "string", "psb_resident_register", None, "gender", 2),
    ("birth_date", "出生日期", "Date of birth", "date", "psb_resident_register", None, None, 3),
    ("household_address", "户籍地址", "Household registration address", "string", "psb_resident_register", None, None, 3),
    ("division_code", "行政区划代码", "Administrative division code", "string", "mca_admin_divisions", "division_code", "division", 1),
    ("division_name", "行政区划名称", "Administrative division name", "string", "mca_admin_divisions", None, None, 1),
    ("taxpayer_type", "纳税人类型", "Taxpayer type", "string", "tax_taxpayer_register", None, "taxpayer_type", 1),
    ("tax_credit_rating", "纳税信用等级", "Tax credit rating", "string", "tax_taxpayer_register", None, "tax_credit_rating", 2),
    ("insured_employees", "参保职工人数", "Insured employees", "integer", "hrss_enterprise_insurance", None, None, 2),
    ("insurance_type", "险种", "Insurance type", "string", "hrss_person_insurance", None, "insurance_type", 2),
    ("contribution_base", "缴费基数", "Contribution base", "decimal", "hrss_person_insurance", None, None, 3),
    ("institution_level", "医疗机构级别", "Medical institution level", "string", "health_medical_institutions", None, "institution_level", 1),
    ("land_use", "土地用途", "Land use", "string", "nr_land_parcels", None, "land_use", 1),
    ("caller_phone", "来电号码", "Caller phone number", "string", "hotline_tickets", "mobile", None, 3),
    ("allowance_amount", "保障金额（元）", "Subsistence allowance (CNY a month)", "decimal", "mca_subsistence_allowance",
     None, None, 2),
    ("allowance_start_date", "保障起始日期", "Allowance start date", "date", "mca_subsistence_allowance", None, None, 2),
)


@dataclass(frozen=True)
class DemoDataset:
    """A dataset of the demo city: its registry entry and how its extract is produced."""

    name: str
    title: str
    owner: str
    fmt: str
    """csv, csv-gbk, xlsx, json, ndjson, parquet, sqlite, http"""
    update_cycle: str
    share_type: str
    columns: tuple[tuple[str, str, dict[str, Any]], ...]
    """(column name, source header, extra registry fields: element/type/required/...)"""
    key: tuple[str, ...]
    load_mode: str = "snapshot"
    conditions: str | None = None
    legal_basis: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    division_column: str | None = None
    """The column of division codes a grant scoped to the jurisdiction filters on (registry ``division_column``)."""


def _e(element: str, **kw: Any) -> dict[str, Any]:
    return {"element": element, **kw}


def _ref(element: str, **kw: Any) -> dict[str, Any]:
    """A column holding the key of ``element``'s authoritative dataset (a credit code, a resident ID, a
    division code) declared as the dataset's reference to that authority ('one number' identification):
    the department holds it to name the authority's record, not to collect the fact again, so the
    duplicate collection rate does not count it (docs/kpis.md)."""
    return _e(element, references="authority", **kw)


def _t(type_: str, **kw: Any) -> dict[str, Any]:
    return {"type": type_, **kw}


DESCRIPTIONS = {  # what each demo dataset holds, as its owner describes it in the catalogue
    "amr_enterprise_register": "长沙市市场主体登记信息：统一社会信用代码、名称、法定代表人、注册资本、住所、登记状态、成立日期与"
                               "所在区划；市场监管局是企业身份的权威来源。",
    "psb_resident_register": "常住人口户籍信息：公民身份号码、姓名、性别、出生日期、户籍地址与所在区划；公安局是居民身份的"
                             "权威来源，有条件共享，按用途审批。",
    "psb_household_moves": "户籍迁入迁出记录（迁出地、迁入地、迁移日期），依法不予共享，仅供公安机关内部使用。",
    "mca_admin_divisions": "长沙市行政区划代码（4301xx 区县市及其下级），各部门引用的统一区划编码。",
    "mca_subsistence_allowance": "城乡最低生活保障对象：身份号码、姓名、所在区划、保障金额与起始日期；有条件共享。",
    "tax_taxpayer_register": "纳税人登记信息：统一社会信用代码、名称、纳税人类型、纳税信用等级与税务登记日期；GBK 编码报送。",
    "hrss_enterprise_insurance": "用人单位社会保险参保信息：统一社会信用代码、单位名称、参保职工人数与缴费月份。",
    "hrss_person_insurance": "个人社会保险参保信息：身份号码、姓名、参保单位、险种与缴费基数；涉及个人信息，有条件共享。",
    "health_medical_institutions": "医疗机构执业登记：机构代码、名称、统一社会信用代码、医院等级、床位数与所在区划。",
    "housing_construction_permits": "建筑工程施工许可证：许可证号、建设单位、项目名称与地址、建筑面积与发证日期。",
    "nr_land_parcels": "土地使用权宗地信息：宗地编号、所在区划、土地用途、面积与权利人统一社会信用代码。",
    "transport_operator_licenses": "道路运输经营许可：许可证号、经营者、法定代表人、车辆数与有效期；GBK 编码报送。",
    "edu_schools": "学校基本信息：学校代码、名称、办学类型、在校生数与所在区划。",
    "urban_enforcement_cases": "城市管理综合执法案件：案件编号、当事单位、违法类型、罚款金额与立案日期。",
    "hotline_tickets": "12345 政务服务便民热线工单：受理时间、诉求类别、所在区划、来电号码（脱敏）、诉求摘要与承办部门，"
                       "经 HTTP 接口汇聚。",
}
SERVICE_DESCRIPTION = "{title}：办件编号、服务企业的统一社会信用代码与名称、服务事项与办理日期。"
"""The departments' own service records (generated for each department of the city beyond the fifteen above)."""


COND_GOV = "仅限政府部门履行法定职责使用，不得向第三方提供；使用部门须说明用途并接受审计"
# Datasets that hold copies of another department's codes: a mistyped code is flagged and kept out
# of nothing else; it does not stop the department's whole delivery.
COPY_QUALITY = {"severity": {"check_digit": "warning"}}

CORE_DATASETS: tuple[DemoDataset, ...] = (
    DemoDataset("amr_enterprise_register", "企业登记信息", "amr", "csv", "daily", "unconditional", (
        ("uscc", "统一社会信用代码", _e("uscc", required=True)),
        ("enterprise_name", "企业名称", _e("enterprise_name", required=True)),
        ("legal_representative", "法定代表人", _e("legal_representative", required=True)),
        ("registered_capital", "注册资本(万元)", _e("registered_capital")),
        ("enterprise_address", "住所", _e("enterprise_address")),
        ("enterprise_status", "登记状态", _e("enterprise_status", required=True)),
        ("established_date", "成立日期", _e("established_date")),
        ("division_code", "行政区划代码", _ref("division_code")),
        ("street_code", "所属街道", _t("string", code_list="street")),
    ), ("uscc",), division_column="street_code"),
    DemoDataset("psb_resident_register", "常住人口户籍信息", "psb", "sqlite", "weekly", "conditional", (
        ("resident_id", "sfzh", _e("resident_id", required=True)),
        ("person_name", "xm", _e("person_name", required=True)),
        ("gender", "xb", _e("gender")),
        ("birth_date", "csrq", _e("birth_date")),
        ("division_code", "hjqh", _ref("division_code")),
        ("household_address", "hjdz", _e("household_address")),
        ("updated_at", "gxsj", _t("timestamp")),
        ("street_code", "jdqh", _t("string", code_list="street")),
    ), ("resident_id",), load_mode="upsert", conditions=COND_GOV, extra={"table": "rk_hjxx", "watermark": "gxsj"},
        division_column="street_code"),
    DemoDataset("psb_household_moves", "户籍迁移记录", "psb", "csv", "monthly", "not_shared", (
        ("move_id", "迁移编号", _t("string", required=True)),
        ("resident_id", "公民身份号码", _ref("resident_id")),
        ("from_division", "迁出地", _t("string")),
        ("to_division", "迁入地", _t("string")),
        ("move_date", "迁移日期", _t("date")),
    ), ("move_id",), legal_basis="《中华人民共和国户口登记条例》；户籍迁移明细涉及个人隐私，仅限公安机关依职权使用"),
    DemoDataset("mca_admin_divisions", "行政区划代码", "mca", "parquet", "yearly", "unconditional", (
        ("division_code", "code", _e("division_code", required=True)),
        ("division_name", "name", _e("division_name", required=True)),
        ("parent_code", "parent", _t("string")),
        ("level", "level", _t("integer")),
    ), ("division_code",)),
    DemoDataset("mca_subsistence_allowance", "最低生活保障对象", "mca", "json", "monthly", "conditional", (
        ("resident_id", "idCard", _ref("resident_id", required=True)),
        ("person_name", "name", _e("person_name", from_authority=True)),
        ("division_code", "area", _ref("division_code")),
        ("allowance_amount", "amount", _e("allowance_amount")),
        ("start_date", "startDate", _e("allowance_start_date")),
        ("street_code", "street", _t("string", code_list="street")),
    ), ("resident_id",), conditions=COND_GOV, division_column="street_code"),
    DemoDataset("tax_taxpayer_register", "纳税人登记信息", "tax", "csv-gbk", "monthly", "conditional", (
        ("uscc", "纳税人识别号", _ref("uscc", required=True)),
        ("enterprise_name", "纳税人名称", _e("enterprise_name")),
        ("taxpayer_type", "纳税人类型", _e("taxpayer_type")),
        ("tax_credit_rating", "纳税信用等级", _e("tax_credit_rating")),
        ("tax_registered_on", "登记日期", _t("date")),
    ), ("uscc",), load_mode="upsert", conditions=COND_GOV, quality=COPY_QUALITY),
    DemoDataset("hrss_enterprise_insurance", "单位参保信息", "hrss", "xlsx", "monthly", "conditional", (
        ("uscc", "单位统一社会信用代码", _ref("uscc", required=True)),
        ("enterprise_name", "单位名称", _e("enterprise_name", from_authority=True)),
        ("insured_employees", "参保人数", _e("insured_employees")),
        ("pay_month", "缴费月份", _t("string", required=True)),
    ), ("uscc", "pay_month"), conditions=COND_GOV),
    DemoDataset("hrss_person_insurance", "个人参保缴费信息", "hrss", "sqlite", "monthly", "conditional", (
        ("resident_id", "aac002", _ref("resident_id", required=True)),
        ("person_name", "aac003", _e("person_name", from_authority=True)),
        ("uscc", "aab998", _ref("uscc")),
        ("insurance_type", "aae140", _e("insurance_type", required=True)),
        ("contribution_base", "aic020", _e("contribution_base")),
        ("updated_at", "aae036", _t("timestamp")),
    ), ("resident_id", "insurance_type"), load_mode="upsert", conditions=COND_GOV,
        extra={"table": "ac02", "watermark": "aae036"}, quality=COPY_QUALITY),
    DemoDataset("health_medical_institutions", "医疗机构执业登记", "health", "csv", "monthly", "unconditional", (
        ("institution_code", "登记号", _t("string", required=True)),
        ("institution_name", "机构名称", _t("string", required=True)),
        ("uscc", "统一社会信用代码", _ref("uscc")),
        ("institution_level", "机构级别", _e("institution_level")),
        ("beds", "核定床位", _t("integer", min=0, max=5000)),
        ("division_code", "所在区县", _ref("division_code")),
    ), ("institution_code",), division_column="division_code"),
    DemoDataset("housing_construction_permits", "建筑工程施工许可", "housing", "ndjson", "weekly", "unconditional", (
        ("permit_no", "permit_no", _t("string", required=True)),
        ("uscc", "builder_uscc", _ref("uscc")),
        ("enterprise_name", "builder_name", _e("enterprise_name", from_authority=True)),
        ("project_name", "project_name", _t("string")),
        ("project_address", "project_address", _t("string")),
        ("floor_area", "floor_area", _t("decimal")),
        ("issued_on", "issued_on", _t("date")),
    ), ("permit_no",), load_mode="upsert"),
    DemoDataset("nr_land_parcels", "土地使用权宗地信息", "nr", "parquet", "quarterly", "conditional", (
        ("parcel_id", "zddm", _t("string", required=True)),
        ("division_code", "qhdm", _ref("division_code")),
        ("land_use", "tdyt", _e("land_use")),
        ("area_sqm", "mj", _t("decimal")),
        ("holder_uscc", "qlr_dm", _ref("uscc")),
    ), ("parcel_id",), conditions="仅限规划审批、不动产登记和税收征管使用", division_column="division_code"),
    DemoDataset("transport_operator_licenses", "道路运输经营许可", "transport", "csv-gbk", "monthly", "unconditional", (
        ("license_no", "许可证号", _t("string", required=True)),
        ("uscc", "统一社会信用代码", _ref("uscc")),
        ("enterprise_name", "业户名称", _e("enterprise_name")),
        ("legal_representative", "负责人", _e("legal_representative", from_authority=True)),
        ("vehicle_count", "车辆数", _t("integer")),
        ("valid_until", "有效期至", _t("date")),
    ), ("license_no",)),
    DemoDataset("edu_schools", "学校基本信息", "edu", "xlsx", "yearly", "unconditional", (
        ("school_code", "学校标识码", _t("string", required=True)),
        ("school_name", "学校名称", _t("string", required=True)),
        ("school_type", "办学类型", _t("string", code_list="school_type")),
        ("students", "在校生数", _t("integer", min=0, max=10000)),
        ("division_code", "所在地区", _ref("division_code")),
    ), ("school_code",), division_column="division_code"),
    DemoDataset("urban_enforcement_cases", "城市管理执法案件", "urban", "json", "daily", "conditional", (
        ("case_no", "caseNo", _t("string", required=True)),
        ("uscc", "partyCode", _ref("uscc")),
        ("violation_type", "violation", _t("string", code_list="violation_type")),
        ("fine_amount", "fine", _t("decimal")),
        ("case_date", "caseDate", _t("date")),
    ), ("case_no",), load_mode="upsert", conditions="仅限执法协作和信用监管使用"),
    DemoDataset("hotline_tickets", "12345热线工单", "hotline", "http", "daily", "conditional", (
        ("ticket_id", "ticket_id", _t("string", required=True)),
        ("created_at", "created_at", _t("timestamp", required=True)),
        ("category", "category", _t("string", code_list="ticket_category")),
        ("division_code", "district", _ref("division_code")),
        ("caller_phone", "caller_phone", _e("caller_phone")),
        ("summary", "summary", _t("string")),
        ("handling_department", "handler", _t("string")),
    ), ("ticket_id",), load_mode="upsert", conditions="工单明细仅限承办部门和数据主管部门使用；来电号码脱敏",
        extra={"watermark": "created_at", "since_param": "since", "page_size": 200}, division_column="division_code"),
)


def extra_dataset(code: str, name: str) -> DemoDataset:
    """The one dataset of a department beyond the core twelve: service records naming enterprises."""
    return DemoDataset(f"{code}_service_records", f"{name}业务办理记录", code, "csv", "monthly", "unconditional", (
        ("record_no", "办件编号", _t("string", required=True)),
        ("uscc", "统一社会信用代码", _ref("uscc")),
        ("enterprise_name", "单位名称", _e("enterprise_name")),
        ("service_item", "事项名称", _t("string")),
        ("handled_on", "办结日期", _t("date")),
    ), ("record_no",))


def city_departments(n: int) -> list[tuple[str, str, str, str, str]]:
    """The first ``n`` departments: the core twelve (authorities first), then the others."""
    if not 3 <= n <= MAX_DEPARTMENTS:
        raise ValueError(f"--departments must be between 3 and {MAX_DEPARTMENTS}")
    extra = [(c, nm, en, f"{c}_sys", f"{nm}业务系统") for c, nm, en in EXTRA_DEPARTMENTS]
    return list(CORE_DEPARTMENTS + tuple(extra))[:n]


def city_datasets(n: int) -> list[DemoDataset]:
    codes = {d[0] for d in city_departments(n)}
    out = [d for d in CORE_DATASETS if d.owner in codes]
    out += [extra_dataset(c, nm) for c, nm, _ in EXTRA_DEPARTMENTS if c in codes]
    return out


# The data bureau runs OneSource; its datasets are the KPI tables the platform publishes itself.
BUREAU: tuple[str, str, str, str, str] = ("dsj", "数据资源管理局", "Data Resources Bureau", "onesource",
                                          "OneSource 数据共享平台")
# (name, title, key, columns as (name, type) or (name, type, element)); the platform computes them
PLATFORM_DATASETS: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = (
    ("kpi_figures", "数据共享考核指标", ("period", "scope", "kpi"), (
        ("period", "string"), ("as_of", "timestamp"), ("scope", "string"), ("scope_name", "string"),
        ("kpi", "string"), ("value", "number"), ("numerator", "number"), ("denominator", "number"),
        ("target", "number"), ("computed_at", "timestamp"))),
    ("kpi_members", "考核指标明细（分子分母）", ("period", "kpi", "department", "item"), (
        ("period", "string"), ("kpi", "string"), ("department", "string"), ("item", "string"),
        ("numerator", "number"), ("denominator", "number"), ("note", "string"))),
    ("kpi_dataset_status", "数据目录共享状态", ("period", "dataset"), (
        ("period", "string"), ("dataset", "string"), ("title", "string"), ("owner", "string"),
        ("share_type", "string"), ("update_cycle", "string"), ("counted_shared", "boolean"), ("reason", "string"),
        ("last_load_status", "string"), ("last_load_at", "timestamp"), ("consumers", "integer"))),
    ("kpi_duplicate_pairs", "重复采集矩阵", ("period", "department", "element"), (
        ("period", "string"), ("department", "string"), ("element", "string"), ("element_name", "string"),
        ("authority_department", "string"), ("authority_dataset", "string"), ("datasets", "string"),
        ("duplicate", "boolean"))),
    ("registry_conformance", "一数一源符合性", ("department", "dataset", "column_name"), (
        ("department", "string"), ("dataset", "string"), ("column_name", "string"), ("element", "string"),
        ("element_name", "string"), ("authority_department", "string"), ("authority_dataset", "string"),
        ("status", "string"), ("consumes_authority", "boolean"), ("advice", "string"))),
    ("registry_lineage", "数据血缘", ("element", "holder"), (
        ("element", "string"), ("element_name", "string"), ("authority_dataset", "string"),
        ("authority_department", "string"), ("holder", "string"), ("holder_department", "string"),
        ("kind", "string"), ("shared_table", "string"), ("consumers", "string"))),
    ("data_catalogue", "政务信息资源目录", ("code",), (
        ("name", "string"), ("code", "string"), ("provider", "string"), ("summary", "string"), ("format", "string"),
        ("data_items", "string"), ("share_type", "string"), ("share_condition", "string"),
        ("share_method", "string"), ("open_attribute", "string"), ("update_cycle", "string"),
        ("publish_date", "date"), ("dataset", "string"))),
    ("enterprise_profile", "企业数据池（企业画像）", ("uscc",), (
        ("uscc", "string", "uscc"), ("enterprise_name", "string", "enterprise_name"),
        ("legal_representative", "string", "legal_representative"),
        ("registered_capital", "decimal", "registered_capital"),
        ("enterprise_address", "string", "enterprise_address"), ("enterprise_status", "string", "enterprise_status"),
        ("established_date", "date", "established_date"), ("taxpayer_type", "string", "taxpayer_type"),
        ("tax_credit_rating", "string", "tax_credit_rating"), ("insured_employees", "integer", "insured_employees"))),
    ("form_prefill", "表单预填情况", ("form", "field"), (
        ("form", "string"), ("form_name", "string"), ("position", "integer"), ("field", "string"),
        ("element", "string"), ("dataset", "string"), ("typed", "boolean"), ("subjects", "integer"),
        ("filled", "integer"))),
)


def platform_dataset_entries(elements: set[str] | None = None) -> list[dict[str, Any]]:
    """Registry entries for the platform's tables, owned by the bureau and readable by every department.
    With ``elements`` (those the registry has), the enterprise profile keeps only the columns whose
    element exists, and is left out without its key (a city without market regulation)."""
    out = []
    for name, title, key, columns in PLATFORM_DATASETS:
        kept = [c for c in columns if len(c) < 3 or elements is None or c[2] in elements]
        if any(k not in {c[0] for c in kept} for k in key):
            continue
        out.append({"name": name, "title": title, "owner": BUREAU[0], "system": BUREAU[3], "update_cycle": "daily",
                    "share_type": "unconditional", "load_mode": "snapshot", "key": list(key),
                    "connector": {"kind": "platform", "product": name},
                    "columns": [{"name": c[0], "source": c[0], "type": c[1], **({"element": c[2]} if len(c) > 2 else {})}
                                for c in kept]})
    return out


# The grassroots forms of the demo city (forms/<code>.yaml): each field names the element and its authority, or is
# typed by the street's staff. Filled with `onesource forms fill CODE --jurisdiction CODE --as DEPT --out F.xlsx`.
FORMS: tuple[dict[str, Any], ...] = (
    {"code": "dibao_roster", "name": "城乡最低生活保障对象月度花名册", "name_en": "Monthly subsistence allowance roster",
     "subject": "resident", "key": "resident_id", "subjects": "mca_subsistence_allowance",
     "layout": {"sheet": "低保花名册", "header_rows": ["{form}", "填报单位（区划代码）：{scope}　　填报日期：{date}"],
                "serial": "序号"},
     "fields": [
         {"label": "姓名", "element": "person_name", "dataset": "psb_resident_register", "width": 10},
         {"label": "公民身份号码", "element": "resident_id", "dataset": "psb_resident_register", "width": 22},
         {"label": "性别", "element": "gender", "dataset": "psb_resident_register", "width": 6},
         {"label": "户籍地址", "element": "household_address", "dataset": "psb_resident_register", "width": 36},
         {"label": "保障金额（元）", "element": "allowance_amount", "dataset": "mca_subsistence_allowance", "width": 14},
         {"label": "保障起始日期", "element": "allowance_start_date", "dataset": "mca_subsistence_allowance",
          "width": 14},
         {"label": "家庭人口数", "typed": True, "width": 10},
         {"label": "联系电话", "typed": True, "width": 14},
         {"label": "备注", "typed": True, "width": 16}]},
    {"code": "enterprise_census", "name": "社区企业基本情况普查表", "name_en": "Community enterprise census sheet",
     "subject": "enterprise", "key": "uscc", "subjects": "amr_enterprise_register",
     "layout": {"sheet": "企业普查表", "header_rows": ["{form}", "社区（区划代码）：{scope}　　填报日期：{date}"],
                "serial": "序号"},
     "fields": [
         {"label": "统一社会信用代码", "element": "uscc", "dataset": "amr_enterprise_register", "width": 22},
         {"label": "企业名称", "element": "enterprise_name", "dataset": "amr_enterprise_register", "width": 30},
         {"label": "法定代表人", "element": "legal_representative", "dataset": "amr_enterprise_register", "width": 10},
         {"label": "企业住所", "element": "enterprise_address", "dataset": "amr_enterprise_register", "width": 36},
         {"label": "登记状态", "element": "enterprise_status", "dataset": "amr_enterprise_register", "width": 8},
         {"label": "纳税人类型", "element": "taxpayer_type", "dataset": "tax_taxpayer_register", "width": 12},
         {"label": "纳税信用等级", "element": "tax_credit_rating", "dataset": "tax_taxpayer_register", "width": 12},
         {"label": "参保职工人数", "element": "insured_employees", "dataset": "hrss_enterprise_insurance", "width": 12},
         {"label": "联系电话", "typed": True, "width": 14},
         {"label": "主营业务", "typed": True, "width": 20}]},
)


def city_forms(datasets: set[str]) -> list[dict[str, Any]]:
    """The demo forms whose datasets the city has (a smaller city leaves out a form it cannot fill)."""
    return [f for f in FORMS if f["subjects"] in datasets
            and all(x.get("typed") or x["dataset"] in datasets for x in f["fields"])]
