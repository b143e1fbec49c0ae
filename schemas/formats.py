"""Format rules of data elements, with the national check-digit algorithms.

Each rule is a name (used by ``format:`` in elements.yaml), a regular expression that DuckDB and
pandas can both evaluate, and an optional check-digit function. The demo city generates valid
codes with the same functions, so generator and checks cannot drift apart.

>>> uscc_check_char("91430102MA2AXXXX0")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# GB 32100-2015: the unified social credit code's alphabet leaves out I, O, Z, S, V.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# GB 11714-1997: organisation code, 8 body characters and a check character.
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
# GB 11643-1999: citizen identity number, ISO 7064 MOD 11-2.
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def uscc_check_char(body17: str) -> str:
    """Check character of a unified social credit code from its first 17 characters."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def org_code_check_char(body8: str) -> str:
    """Check character of an organisation code (GB 11714) from its 8 body characters."""
    total = sum(int(c, 36) * w for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    value = 11 - total % 11
    return {10: "X", 11: "0"}.get(value, str(value))


def resident_id_check_char(body17: str) -> str:
    """Check character of an 18-digit resident identity number from its first 17 digits."""
    return ID_CHECK[sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS, strict=True)) % 11]


def is_valid_uscc(code: str) -> bool:
    if not re.fullmatch(r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}", code or ""):
        return False
    org = code[8:17]
    return code[17] == uscc_check_char(code[:17]) and org[8] == org_code_check_char(org[:8])


def is_valid_resident_id(code: str) -> bool:
    if not re.fullmatch(r"\d{17}[\dX]", code or ""):
        return False
    return code[17] == resident_id_check_char(code[:17])


def is_valid_org_code(code: str) -> bool:
    code = (code or "").replace("-", "")
    if not re.fullmatch(r"[0-9A-Z]{8}[0-9X]", code):
        return False
    return code[8] == org_code_check_char(code[:8])


@dataclass(frozen=True)
class FormatRule:
    """A named format: a regex every value must match, and optionally a check-digit test."""

    name: str
    pattern: str
    description: str
    check: Callable[[str], bool] | None = None


FORMAT_RULES: dict[str, FormatRule] = {
    rule.name: rule
    for rule in (
        FormatRule(
            "uscc",
            r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$",
            "unified social credit code, GB 32100-2015",
            is_valid_uscc,
        ),
        FormatRule("resident_id", r"^\d{17}[\dX]$", "resident identity number, GB 11643-1999", is_valid_resident_id),
        FormatRule("org_code", r"^[0-9A-Z]{8}-?[0-9X]$", "organisation code, GB 11714", is_valid_org_code),
        FormatRule("division_code", r"^\d{6}$", "administrative division code, GB/T 2260"),
        FormatRule("mobile", r"^1[3-9]\d{9}$", "mainland mobile number"),
        FormatRule("phone", r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$", "mobile or landline number"),
        FormatRule("postcode", r"^\d{6}$", "postal code"),
    )
}
