"""Extracts big enough that each load writes its own Parquet file."""

from __future__ import annotations

from schemas.formats import org_code_check_char, uscc_check_char
from tests.helpers import HEADER


def extract(batch: int, n: int = 200) -> str:
    """``n`` firms with valid credit codes: enough rows that each load writes its own Parquet file
    (DuckLake keeps very small inserts inlined in the catalog)."""
    lines = []
    for i in range(n):
        org8 = f"MA{batch:02d}{i:04d}"
        head = "91330106" + org8 + org_code_check_char(org8)
        lines.append(f"{head + uscc_check_char(head)},企业{batch}-{i},1,100.5,{i},2020-01-01")
    return HEADER + "\n".join(lines) + "\n"
