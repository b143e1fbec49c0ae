"""Metrics: figures the data bureau watches, computed from the lake alone.

>>> statuses = dataset_statuses(lake, registry)
"""

from metrics.loads import DatasetStatus, dataset_statuses

__all__ = ["DatasetStatus", "dataset_statuses"]
