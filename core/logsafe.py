"""Logs never carry secrets or sensitive values.

Task logs (Airflow keeps them, engineers read them) would otherwise show what a load saw: a DSN
with its password, a bearer token, or the failing values of a quality check, resident IDs and phone
numbers among them. :class:`Redact` rewrites every record of the ``onesource`` loggers before any
handler sees it: passwords and tokens become ``***``, resident IDs keep their first 6 and last 4
characters, mobile numbers their last 4 (the masks governed SQL uses).
"""

from __future__ import annotations

import logging
import re

RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),  # user:password@ in a URL or DSN
    (re.compile(r"\b(password|passwd|pwd|secret|token|aws_secret_access_key)(\s*[=:]\s*)[^\s,;'\"]+", re.I),
     r"\1\2***"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\b(\d{6})\d{8}(\d{3}[\dXx])\b"), r"\1********\2"),  # resident ID (GB 11643)
    (re.compile(r"\b(1[3-9]\d)\d{4}(\d{4})\b"), r"\1****\2"),  # mobile number
)


def redact(text: str) -> str:
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text


class Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def guarded(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redaction filter on it (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, Redact) for f in logger.filters):
        logger.addFilter(Redact())
    return logger
