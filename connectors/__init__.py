"""Extract: one module per source kind, each landing new data as immutable raw files.

>>> connector = connector_for("file", settings.sources_dir, Landing(settings.landing_dir), os.environ)
>>> extracts = connector.extract(dataset, SourceState(seen_sha256=..., watermark=...))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from connectors.base import Connector, Extract, SourceState
from connectors.exceptions import ExtractError, SourceUnavailableError
from connectors.landing import Landing, sha256_file


def _file(sources_dir: Path, landing: Landing, environ: Mapping[str, str]) -> Connector:
    from connectors.files import FileConnector

    return FileConnector(sources_dir, landing)


def _database(sources_dir: Path, landing: Landing, environ: Mapping[str, str]) -> Connector:
    from connectors.database import DatabaseConnector

    return DatabaseConnector(sources_dir, landing, environ)


def _http(sources_dir: Path, landing: Landing, environ: Mapping[str, str]) -> Connector:
    from connectors.http_api import HttpConnector

    return HttpConnector(landing, environ)


CONNECTORS: dict[str, Callable[[Path, Landing, Mapping[str, str]], Connector]] = {
    "file": _file, "database": _database, "http": _http}
"""Connector kind -> its factory (each imports its module when used). schemas.kinds lists each kind's
settings; a new kind is a module, a line here and its entry there."""


def connector_for(kind: str, sources_dir: Path, landing: Landing, environ: Mapping[str, str]) -> Connector:
    """The connector object for a kind (schemas.kinds lists each kind's settings)."""
    factory = CONNECTORS.get(kind)
    if factory is None:
        raise ExtractError(f"unknown connector kind {kind!r}: the kinds are {', '.join(sorted(CONNECTORS))}")
    return factory(sources_dir, landing, environ)


__all__ = ["Connector", "Extract", "ExtractError", "Landing", "SourceState", "SourceUnavailableError",
           "connector_for", "sha256_file"]
