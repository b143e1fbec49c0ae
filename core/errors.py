"""The root error type.

Every error OneSource raises on purpose derives from :class:`OneSourceError`. Its two mixins
say what the caller should do: a :class:`TransientError` (a catalog lock, a source timeout) is
worth retrying; a :class:`TerminalError` (a bad file, a broken registry) is not, and its
message says what to fix.
"""

from __future__ import annotations


class OneSourceError(Exception):
    """Root of every error OneSource raises on purpose."""


class TransientError(OneSourceError):
    """Retrying the same operation later may succeed."""


class TerminalError(OneSourceError):
    """Retrying will not help: the input or the configuration must change first."""


class ConfigurationError(TerminalError):
    """The settings or the environment are wrong (a path, a DSN, a missing package)."""
