"""Errors of the quality stage."""

from __future__ import annotations

from core.errors import TerminalError


class SuiteError(TerminalError):
    """A dataset's suite cannot be built (an unknown or misconfigured expectation in the registry)."""
