"""Extract: one module per source kind, each landing new data as immutable raw files.

>>> connector = connector_for("file", settings.sources_dir, Landing(settings.landing_dir), os.environ)
>>> extracts = connector.extract(dataset, SourceState(seen_sha256=..., watermark=...))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from connectors.base import Connector, Extract, SourceState
from connectors.exceptions import ExtractError, SourceUnavailableError
from connectors.landing import Landing, sha256_file


def connector_for(kind: str, sources_dir: Path, landing: Landing, environ: Mapping[str, str]) -> Connector:
    """The connector object for a kind (schemas.kinds lists each kind's settings)."""
    if kind == "file":
        from connectors.files import FileConnector

        return FileConnector(sources_dir, landing)
    if kind == "database":
        from connectors.database import DatabaseConnector

        return DatabaseConnector(sources_dir, landing, environ)
    if kind == "http":
        from connectors.http import HttpConnector

        return HttpConnector(landing, environ)
    raise ExtractError(f"unknown connector kind {kind!r}")


__all__ = ["Connector", "Extract", "ExtractError", "Landing", "SourceState", "SourceUnavailableError",
           "connector_for", "sha256_file"]
