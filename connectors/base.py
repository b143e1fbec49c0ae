"""What every connector kind returns: extracts landed as immutable raw files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas.model import Dataset


@dataclass(frozen=True)
class SourceState:
    """What the platform already has from this source (read from the loads ledger)."""

    seen_sha256: frozenset[str] = frozenset()
    """Raw files already loaded (published or failed terminally) under the current registry version."""
    watermark: str | None = None
    """Highest watermark value published so far (incremental database and API sources)."""


@dataclass(frozen=True)
class Extract:
    """One raw file in the landing zone, ready to be standardized."""

    dataset: str
    path: Path
    sha256: str
    source: str
    """Where it came from: the dropped file's path, the database table, the API endpoint."""
    format: str
    read_options: dict[str, Any] = field(default_factory=dict)
    watermark: str | None = None
    """New high watermark once this extract is published."""
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    wide_forms: bool | None = None
    """Whether the file may hold a full-width character, when the connector looked (connectors.landing.
    holds_wide_forms, as the file connector copies a UTF-8 file in); None: not looked."""


CSV_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gb18030", "gb2312": "gb18030", "gb18030": "gb18030"}
"""A dataset's ``encoding`` setting -> the encoding DuckDB reads its CSV files in."""


def csv_encoding(read_options: dict[str, Any]) -> str:
    """The encoding a CSV with these read options is read in (UTF-8 unless said otherwise)."""
    return CSV_ENCODINGS.get(str(read_options.get("encoding", "utf-8")).lower(), "utf-8")


def utf8_csv(fmt: str, read_options: dict[str, Any]) -> bool:
    """A CSV file read as UTF-8 bytes (what connectors.landing.holds_wide_forms can judge)."""
    return fmt == "csv" and csv_encoding(read_options) == "utf-8"


class Connector(Protocol):
    """A connector kind: reads a department source, lands new data, says nothing about the lake.

    It may also have ``prefetch(dataset)``: work that needs no ledger (the file connector hashes and copies
    new files), started on threads before the load opens the lake, and used by ``extract``; and then
    ``release()``, called when the load ends, for what ``extract`` did not take."""

    def extract(self, dataset: Dataset, state: SourceState) -> list[Extract]: ...
