"""One load, in the order the data flows: extract (connectors) -> land (connectors.landing) -> standardize
(lakehouse.standardize) -> validate (quality) -> publish (lakehouse: one DuckLake commit), with the ledger
row of every load (the loads ledger, :mod:`lakehouse.ledger`). The stage packages never call back up into this one.

>>> results = run_dataset(settings, registry, "amr_enterprise_register", os.environ)
>>> [(r.status, r.rows) for r in results]

The names below are imported on first use (PEP 562): importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_names

if TYPE_CHECKING:
    from ingest.load import LoadResult, run_dataset

__all__ = ["LoadResult", "run_dataset"]
_HOME = {"LoadResult": "ingest.load", "run_dataset": "ingest.load"}

__getattr__ = lazy_names(__name__, _HOME)
