"""Sharing: SQL on the shared zone (for engineers now; grants, masking and audit build on it).

>>> result = run_sql(settings, "SELECT count(*) FROM shared.amr_enterprise_register")

The names below are imported on first use (PEP 562), so importing one module of the package (the
governed engine, its exceptions) costs only what that module needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_names

if TYPE_CHECKING:
    from sharing.exceptions import QueryFailed, QueryRefused
    from sharing.sql import QueryResult, run_sql

__all__ = ["QueryFailed", "QueryRefused", "QueryResult", "run_sql"]
_HOME = {"QueryFailed": "sharing.exceptions", "QueryRefused": "sharing.exceptions", "QueryResult": "sharing.sql",
         "run_sql": "sharing.sql"}

__getattr__ = lazy_names(__name__, _HOME)
