"""The enterprise data pool and one real use of it: pre-filling an enterprise's annual report.

The **enterprise profile** is a derived product keyed by the unified social credit code: each of its
columns is a data element, taken only from that element's authoritative dataset (market regulation's
register, the tax register, social security), joined on the credit code. Nothing in it is collected
again. The **annual report** form lists its fields and the element each one is, if any; the platform
fills every field an authoritative source holds, marks the rest for the enterprise to enter, and
reports the prefill rate: fields filled from sources / fields in the report, per enterprise and overall.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakehouse.lake import CATALOG, SHARED, Lake
from schemas.model import Dataset, Registry

PROFILE = "enterprise_profile"
KEY_ELEMENT = "uscc"

# (field on the form, the data element that answers it, or None: only the enterprise knows)
ANNUAL_REPORT: tuple[tuple[str, str | None], ...] = (
    ("统一社会信用代码", "uscc"),
    ("企业名称", "enterprise_name"),
    ("法定代表人", "legal_representative"),
    ("注册资本（万元）", "registered_capital"),
    ("企业住所", "enterprise_address"),
    ("企业经营状态", "enterprise_status"),
    ("成立日期", "established_date"),
    ("纳税人类型", "taxpayer_type"),
    ("纳税信用等级", "tax_credit_rating"),
    ("参保职工人数", "insured_employees"),
    ("企业联系电话", None),
    ("电子邮箱", None),
    ("从业人数", None),
    ("资产总额（万元）", None),
    ("营业总收入（万元）", None),
)


def profile_sql(registry: Registry, profile: Dataset) -> str:
    """The profile as one SELECT over the authoritative shared tables (each column from its authority)."""
    key_authority = registry.dataset(registry.element(KEY_ELEMENT).authority)
    key_col = next(c.name for c in key_authority.columns if c.element == KEY_ELEMENT)
    aliases: dict[str, str] = {key_authority.name: "k"}
    joins, cols = [], []
    for col in profile.columns:
        authority = registry.dataset(registry.element(col.element or col.name).authority)
        if authority.name not in aliases:
            alias = f"a{len(aliases)}"
            aliases[authority.name] = alias
            their_key = next(c.name for c in authority.columns if c.element == KEY_ELEMENT)
            joins.append(f'LEFT JOIN {CATALOG}.{SHARED}."{authority.name}" {alias} ON {alias}."{their_key}" = k."{key_col}"')
        source = next(c.name for c in authority.columns if c.element == (col.element or col.name))
        cols.append(f'{aliases[authority.name]}."{source}" AS "{col.name}"')
    return f'SELECT {", ".join(cols)} FROM {CATALOG}.{SHARED}."{key_authority.name}" k {" ".join(joins)}'


def profile_sources(registry: Registry, profile: Dataset) -> list[str]:
    return sorted({registry.element(c.element or c.name).authority for c in profile.columns})


def profile_rows(lake: Lake, registry: Registry, profile: Dataset) -> list[dict]:
    missing = [s for s in profile_sources(registry, profile) if s not in lake.tables(SHARED)]
    if missing:
        return []  # an authority not published yet: no profile rather than a partial one
    cur = lake.con.execute(profile_sql(registry, profile))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@dataclass(frozen=True)
class FormField:
    label: str
    element: str | None
    value: object
    source: str | None
    """The authoritative dataset that filled it; None: the enterprise must enter it."""


def annual_report(lake: Lake, registry: Registry, uscc: str) -> list[FormField] | None:
    """One enterprise's pre-filled form, or None when the credit code is not in the profile."""
    profile = registry.dataset(PROFILE)
    rows = [r for r in profile_rows(lake, registry, profile) if r.get(KEY_ELEMENT) == uscc]
    if not rows:
        return None
    return _form(registry, rows[0])


def _form(registry: Registry, row: dict) -> list[FormField]:
    out = []
    for label, element in ANNUAL_REPORT:
        value = row.get(element) if element else None
        source = registry.element(element).authority if element and value is not None else None
        out.append(FormField(label, element, value, source))
    return out


def prefill_rates(lake: Lake, registry: Registry) -> tuple[float | None, list[tuple[str, float]]]:
    """(overall rate, [(uscc, rate)]) over every enterprise in the profile."""
    profile = registry.dataset(PROFILE)
    per = []
    filled = total = 0
    for row in profile_rows(lake, registry, profile):
        form = _form(registry, row)
        n = sum(1 for f in form if f.source)
        filled, total = filled + n, total + len(form)
        per.append((str(row.get(KEY_ELEMENT)), round(n / len(form), 4)))
    return (round(filled / total, 4) if total else None), per
