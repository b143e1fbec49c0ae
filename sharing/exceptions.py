"""Errors of the sharing stage."""

from __future__ import annotations

from onesource.errors import TerminalError


class QueryRefused(TerminalError):
    """The query was not run; the message says what was refused and why."""


class QueryFailed(TerminalError):
    """The query ran and DuckDB reported an error (unknown table, bad column, ...)."""


class RequestError(TerminalError):
    """An access-request step that cannot be taken (unknown request, wrong state, missing reason)."""


class LimitExceeded(QueryRefused):
    """A query refused at one of the limits a department cannot exceed (onesource.config.QueryLimits):
    ``http_status`` and ``sqlstate`` are what the HTTP and Postgres-wire endpoints answer with."""

    http_status = 400
    sqlstate = "54000"  # program_limit_exceeded


class QueryTooLarge(LimitExceeded):
    http_status = 413


class TooManyQueries(LimitExceeded):
    http_status = 429
    sqlstate = "53300"  # too_many_connections: PostgreSQL's code for "too many ... in flight"


class QueryStopped(QueryFailed):
    """A query stopped while it was planned or ran: at its time limit or memory limit, or by the client."""

    http_status = 400
    sqlstate = "57014"  # query_canceled


class OutOfMemory(QueryStopped):
    sqlstate = "53200"  # out_of_memory


class AccountDisabled(QueryRefused):
    """The signed-in user was disabled or removed since signing in."""

    http_status = 401
    sqlstate = "28000"  # invalid_authorization_specification


class ResultTooLarge(QueryStopped):
    """A result beyond the rows or bytes one answer may have (QueryLimits.rows, QueryLimits.result_bytes):
    stopped with the reason, never sent cut short."""

    sqlstate = "54000"  # program_limit_exceeded
