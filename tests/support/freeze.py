"""A second dataset, of tax, for freezes."""

from __future__ import annotations

LEDGER = {"name": "ledger", "title": "台账", "owner": "tax", "system": "tax_core", "update_cycle": "daily",
          "share_type": "unconditional", "key": ["code"],
          "connector": {"kind": "file", "path": "tax/ledger/*.csv", "format": "csv", "encoding": "utf-8"},
          "columns": [{"name": "code", "source": "代码", "type": "string", "required": True},
                      {"name": "n", "source": "数", "type": "integer"}]}
