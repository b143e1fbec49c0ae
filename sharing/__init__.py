"""Sharing: SQL on the shared zone (for engineers now; grants, masking and audit build on it).

>>> result = run_sql(settings, "SELECT count(*) FROM shared.amr_enterprise_register")
"""

from sharing.exceptions import QueryFailed, QueryRefused
from sharing.sql import QueryResult, run_sql

__all__ = ["QueryFailed", "QueryRefused", "QueryResult", "run_sql"]
