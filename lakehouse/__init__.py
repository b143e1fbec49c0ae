"""The lake: DuckLake storage, zones, write-audit-publish loads, snapshots.

>>> results = run_dataset(settings, registry, "amr_enterprise_register", os.environ)
>>> [(r.status, r.rows) for r in results]
"""

from lakehouse.lake import Lake
from lakehouse.load import LoadResult, run_dataset

__all__ = ["Lake", "LoadResult", "run_dataset"]
