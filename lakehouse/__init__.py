"""The lake: DuckLake storage, zones, the publish commit, snapshots, time travel, maintenance.

A load's orchestration (extract, land, standardize, validate, publish) is :mod:`ingest`'s; this package
stores what it publishes. The names below are imported on first use (PEP 562): ``from lakehouse import
Lake`` brings in nothing a query does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_names

if TYPE_CHECKING:
    from lakehouse.lake import Lake

__all__ = ["Lake"]
_HOME = {"Lake": "lakehouse.lake"}

__getattr__ = lazy_names(__name__, _HOME)
