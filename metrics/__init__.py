"""Metrics: figures the data bureau watches, computed from the lake alone.

>>> statuses = dataset_statuses(lake, registry)
>>> kpis = compute(lake, registry, Period.month("2026-11", tz=settings.city_timezone))
>>> shared = sharing_statuses(lake, registry)   # dataset -> None (shared) or why not: the sharing rate's rule
"""

from metrics.kpis import KPI_NAMES, Figure, Member, Period, compute, sharing_reason, sharing_statuses
from metrics.loads import DatasetStatus, dataset_statuses

__all__ = ["KPI_NAMES", "DatasetStatus", "Figure", "Member", "Period", "compute", "dataset_statuses", "sharing_reason",
           "sharing_statuses"]
