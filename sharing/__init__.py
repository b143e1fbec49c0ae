"""Sharing: SQL on the shared zone (for engineers now; grants, masking and audit build on it).

>>> result = run_sql(settings, "SELECT count(*) FROM shared.amr_enterprise_register")

The names below are imported on first use (PEP 562), so importing one module of the package (the
governed engine, its exceptions) costs only what that module needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sharing.exceptions import QueryFailed, QueryRefused
    from sharing.sql import QueryResult, run_sql

__all__ = ["QueryFailed", "QueryRefused", "QueryResult", "run_sql"]
_HOME = {"QueryFailed": "sharing.exceptions", "QueryRefused": "sharing.exceptions", "QueryResult": "sharing.sql",
         "run_sql": "sharing.sql"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
