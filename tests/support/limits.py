"""Queries that run long or short, and a second dataset, for the limits on a department."""

from __future__ import annotations

SLOW = ("WITH RECURSIVE r(i) AS (SELECT count(*) FROM shared.firms UNION ALL SELECT i + 1 FROM r WHERE i < 100000000) "
        "SELECT count(*) AS n FROM r")
"""A query that runs for minutes on three rows, in next to no memory."""
SMALL = "SELECT count(*) AS n FROM shared.firms"


def branches(**changes) -> dict:
    ds = {"name": "branches", "title": "分支机构", "owner": "amr", "system": "amr_reg", "update_cycle": "daily",
          "share_type": "conditional", "conditions": "税务稽查", "key": ["code"],
          "connector": {"kind": "file", "path": "amr/branches/*.csv", "format": "csv", "encoding": "utf-8"},
          "columns": [{"name": "code", "source": "编码", "type": "string", "required": True},
                      {"name": "city", "source": "城市", "type": "string"}]}
    ds.update(changes)
    return ds
