"""Errors of the sharing stage."""

from __future__ import annotations

import re

from core.errors import TerminalError


class QueryRefused(TerminalError):
    """The query was not run; the message says what was refused and why. ``http_status`` and ``sqlstate``
    are what the HTTP and Postgres-wire endpoints answer with (subclasses and instances may say otherwise)."""

    http_status = 403
    sqlstate = "42501"  # insufficient_privilege: refused by policy


class InvalidSQL(QueryRefused):
    """The text is not SQL this platform can read (a syntax error, an empty query): the sender's mistake to
    fix, not a refusal by policy. 400 over HTTP, 42601 on the Postgres wire, like PostgreSQL's syntax_error."""

    http_status = 400
    sqlstate = "42601"  # syntax_error

    @classmethod
    def of(cls, exc: Exception, what: str = "the query", dialect: str = "postgres",
           fix: str = "correct the SQL there and send it again") -> InvalidSQL:
        """sqlglot's ParseError or TokenError, told in SQL's words: where, near which text, what is missing;
        never the parser's Python class names (its messages say "<class 'sqlglot.expressions.core.Add'>")."""
        head = f"{what} cannot be parsed as {dialect} SQL: "
        fix = f"; {fix}"
        errors = getattr(exc, "errors", None) or []
        if not errors:  # the tokenizer's: an unterminated string, quoted name, dollar quote or comment
            near = str(exc).removeprefix("Error tokenizing ").strip()
            return cls(head + f"a quoted string, quoted name or comment is not closed (near {_shown(near)})" + fix)
        first = errors[0]
        near, line, col = str(first.get("highlight") or ""), first.get("line") or 1, first.get("col") or 1
        where = (f"at or near {_shown(near)}" if near else "at the end of the query") + \
            f" (line {line}, column {max(1, col - len(near) + 1)})"
        detail = _sql_words(str(first.get("description") or ""))
        return cls(head + f"syntax error {where}" + (f": {detail}" if detail else "") + fix)


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return '"' + (text if len(text) <= 60 else text[:57] + "...") + '"'


def _sql_words(description: str) -> str:
    """sqlglot's description of a syntax error without Python in it ('' when nothing is left to say)."""
    if description.startswith("Required keyword:"):
        return "something is missing after it"
    text = re.sub(r"<Token token_type: TokenType\.SENTINEL[^>]*>", "the end of the query", description)
    text = re.sub(r"<Token [^>]*text: ([^,>]*)[^>]*>", r"'\1'", text)
    text = re.sub(r"<class '(?:\w+\.)*(\w+)'>", lambda m: m.group(1).lower(), text)
    text = text.replace("Invalid expression / Unexpected token", "unexpected word or symbol")
    text = re.sub(r"^Expect(ed|ing)", "expected", text)
    return "" if re.search(r"sqlglot|TokenType|<\w|Traceback", text) else text


class QueryFailed(TerminalError):
    """The query ran and DuckDB reported an error (unknown table, bad column, ...)."""

    http_status = 400


class RequestError(TerminalError):
    """An access-request step that cannot be taken (unknown request, wrong state, missing reason)."""


class LimitExceeded(QueryRefused):
    """A query refused at one of the limits a department cannot exceed (core.config.QueryLimits):
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


class Frozen(QueryRefused):
    """The data bureau froze the user, its department or a dataset the query reads (sharing.security.freeze).
    ``ends_session``: a user or department freeze, on which the Postgres wire closes the connection (FATAL)."""

    http_status = 403
    sqlstate = "42501"  # insufficient_privilege: refused by policy, as every refusal

    def __init__(self, message: str, *, kind: str = "user"):
        super().__init__(message)
        self.kind = kind
        self.ends_session = kind in ("user", "department")


class ResultTooLarge(QueryStopped):
    """A result beyond the rows or bytes one answer may have (QueryLimits.rows, QueryLimits.result_bytes):
    stopped with the reason, never sent cut short."""

    sqlstate = "54000"  # program_limit_exceeded
