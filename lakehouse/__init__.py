"""The lake: DuckLake storage, zones, write-audit-publish loads, snapshots.

>>> results = run_dataset(settings, registry, "amr_enterprise_register", os.environ)
>>> [(r.status, r.rows) for r in results]

The names below are imported on first use (PEP 562): ``from lakehouse import Lake`` does not bring in
the loading stage (connectors, Great Expectations' suites), which a query never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onesource.lazy import lazy_names

if TYPE_CHECKING:
    from lakehouse.lake import Lake
    from lakehouse.load import LoadResult, run_dataset

__all__ = ["Lake", "LoadResult", "run_dataset"]
_HOME = {"Lake": "lakehouse.lake", "LoadResult": "lakehouse.load", "run_dataset": "lakehouse.load"}

__getattr__ = lazy_names(__name__, _HOME)
