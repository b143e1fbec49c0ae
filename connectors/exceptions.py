"""Errors of the extract stage."""

from __future__ import annotations

from core.errors import TerminalError, TransientError


class ExtractError(TerminalError):
    """The source gave something that cannot be loaded (bad file, HTML instead of JSON, ...)."""


class SourceUnavailableError(TransientError):
    """The source did not answer (timeout, connection refused, 5xx); the load is retried later."""
