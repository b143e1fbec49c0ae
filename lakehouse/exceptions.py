"""Errors of the lake stage."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TerminalError, TransientError


class CatalogBusyError(TransientError):
    """The lake catalog stayed locked by other writers; the load is retried later."""


class LakeCatalogError(TerminalError):
    """The lake's catalog cannot be opened as it is; the message names the file and what to do."""


class CatalogLostError(LakeCatalogError):
    """The catalog is missing, empty, truncated, not a catalog, or a new one, while the lake's data (data
    files, landing zone, audit log) exists: the lake is refused, never silently recreated, because a new
    catalog would forget every table, user, grant and load, and maintenance would then delete the old data
    files as orphans. The remedy is to restore the home (or the catalog) from a backup."""


class SnapshotNotFound(TerminalError):
    """Time travel (``--as-of``) to a snapshot the lake does not have: before its first, or past its last."""


class BackupError(TerminalError):
    """A backup that cannot be taken or restored as asked (a damaged backup: the file is named); nothing
    was written."""


class StorageFullError(TransientError):
    """A disk (landing, staging or the lake's data path) ran out of space; the load is retried later
    and nothing was published."""


@dataclass(frozen=True)
class CellProblem:
    """One bad value: where it is in the extract and why it cannot be standardized."""

    row: int
    """1-based data row in the extract (the header is not counted)."""
    column: str
    value: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}: {self.reason} (value {self.value!r})"


class StandardizeError(TerminalError):
    """An extract that cannot be mapped onto its dataset's columns; says which file, row and column."""

    def __init__(self, dataset: str, source: str, landed: str, summary: str, problems: list[CellProblem] | None = None,
                 total: int | None = None):
        self.dataset, self.source, self.landed = dataset, source, landed
        self.summary = summary
        self.problems = problems or []
        self.total = total if total is not None else len(self.problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:10])
        more = f"\n  ... and {self.total - 10} more" if self.total > 10 else ""
        super().__init__(
            f"dataset {dataset}: file {source}: {summary}"
            + (f"\n{shown}{more}" if shown else "")
            + f"\nThe raw file is kept at {landed}; fix the extract at the source and deliver it again."
        )


class SchemaMismatchError(TerminalError):
    """The shared table's columns differ from the registry in a way a load cannot fix by itself."""
