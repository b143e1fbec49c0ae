"""Metrics: figures the data bureau watches, computed from the lake alone.

>>> statuses = dataset_statuses(lake, registry)
>>> kpis = compute(lake, registry, Period.month("2026-11"), AuditLog(home / "audit"))
"""

from metrics.kpis import KPI_NAMES, Figure, Period, compute
from metrics.loads import DatasetStatus, dataset_statuses

__all__ = ["KPI_NAMES", "DatasetStatus", "Figure", "Period", "compute", "dataset_statuses"]
