"""Deliveries of firms, good or bad, whose capital names the delivery."""

from __future__ import annotations

from tests.helpers import HEADER
from tests.support.filescan import uscc


def delivery(n: int, good: bool) -> str:
    """Three firms whose capital names the delivery; a bad one holds a status outside the code list."""
    status = "1" if good else "7"
    return HEADER + "".join(f"{uscc(k)},长沙第{k}有限公司,{status},{n}.00,{k},2020-01-01\n" for k in range(1, 4))
