"""Errors of the sharing stage."""

from __future__ import annotations

from onesource.errors import TerminalError


class QueryRefused(TerminalError):
    """The query was not run; the message says what was refused and why."""


class QueryFailed(TerminalError):
    """The query ran and DuckDB reported an error (unknown table, bad column, ...)."""


class RequestError(TerminalError):
    """An access-request step that cannot be taken (unknown request, wrong state, missing reason)."""
