"""Errors of the registry stage."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TerminalError


@dataclass(frozen=True)
class Issue:
    """One problem in the registry, located by file, line and (for a key) column."""

    file: str
    line: int
    message: str
    column: int = 0
    """1-based column of the offending key or value, when known (0: the line only)."""

    def __str__(self) -> str:
        at = f"{self.file}:{self.line}:{self.column}" if self.column else f"{self.file}:{self.line}"
        return f"{at}: {self.message}"


class RegistryError(TerminalError):
    """The registry does not validate; ``issues`` lists every problem with its file and line."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(
            f"the registry has {len(issues)} error(s); fix them and run `onesource registry check` again:\n{lines}"
        )


class UnknownNameError(TerminalError, KeyError):
    """A department, element, code list or dataset name that the registry does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
