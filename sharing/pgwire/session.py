"""One Postgres-wire session: who signed in, its settings, transaction state, prepared statements, portals
and cursors, and every statement run through the governed engine.

The session speaks SQL, the connection (sharing.pgwire.server) speaks the protocol. What a session runs:

* queries (SELECT, EXPLAIN, SHOW, catalog questions): ``engine.statement``, governed and audited;
* ``DECLARE c CURSOR FOR <query>`` / ``FETCH n FROM c`` / ``MOVE`` / ``CLOSE``: server-side cursors, as
  psycopg's named cursors and psycopg2's use them (forward only; the query is governed when declared);
* ``COPY (query) TO STDOUT`` (text or CSV), psql's ``\\copy (query) to stdout``;
* session chatter (BEGIN, COMMIT, SET, DISCARD ALL, ...): acknowledged, not run (the lake is read-only to
  departments), except ``SET statement_timeout`` which lowers this session's time limit. BEGIN/COMMIT do
  move the transaction status clients track, and an error inside a transaction block makes the block
  refuse further statements until ROLLBACK, as PostgreSQL does (25P02).
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import OneSourceError
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryRefused
from sharing.limits import Canceller
from sharing.pgwire import params as binding
from sharing.pgwire import types as t
from sharing.users import User


class WireError(QueryRefused):
    """A statement the wire refuses itself, with PostgreSQL's SQLSTATE."""

    def __init__(self, sqlstate: str, message: str):
        super().__init__(message)
        self.sqlstate = sqlstate


CHATTER = ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SET", "RESET", "DISCARD", "DEALLOCATE",
           "SAVEPOINT", "RELEASE", "LISTEN", "UNLISTEN")
_HEAD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.S)
_SET_TIMEOUT = re.compile(r"\s*SET\s+(?:SESSION\s+|LOCAL\s+)?statement_timeout\s*(?:=|\bTO\b)\s*(.*?)[\s;]*$",
                          re.I | re.S)
_RESET_TIMEOUT = re.compile(r"\s*RESET\s+(statement_timeout|ALL)\b", re.I)
_SHOW_TIMEOUT = re.compile(r"\s*SHOW\s+statement_timeout[\s;]*$", re.I)
MAX_CURSORS = 32
"""Cursors a session may hold open at once. A cursor's answer is fetched whole at DECLARE (up to the engine's
result_bytes) and held until closed: without a bound, one session declaring cursor after cursor held answer
after answer, until the server ran out of memory."""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_DECLARE = re.compile(r"\s*DECLARE\s+" + _NAME + r"\s+((?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL)\s+)*"
                      r"CURSOR\s+(?:(WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.*?)[\s;]*$", re.I | re.S)
_FETCH = re.compile(r"\s*(FETCH|MOVE)\s+(?:(NEXT|PRIOR|FIRST|LAST|ABSOLUTE\s+[-+]?\d+|RELATIVE\s+[-+]?\d+|ALL|"
                    r"FORWARD(?:\s+(?:\d+|ALL))?|BACKWARD(?:\s+(?:\d+|ALL))?|[-+]?\d+)\s+)?(?:(?:FROM|IN)\s+)?"
                    + _NAME + r"[\s;]*$", re.I | re.S)
_CLOSE = re.compile(r"\s*CLOSE\s+(ALL|" + _NAME[1:-1] + r")[\s;]*$", re.I | re.S)
_COPY = re.compile(r"\s*COPY\s+(.*?)\s+(TO|FROM)\s+(STDOUT\b.*|STDIN\b.*|PROGRAM\b.*|'.*)$", re.I | re.S)


def head_of(sql: str) -> str:
    found = _HEAD.match(sql)
    return found.group(1).upper() if found else ""


def statement_timeout(text: str) -> float | None:
    """PostgreSQL's ``statement_timeout`` value in seconds: a number of milliseconds or a quantity with
    a unit (``'5s'``, ``'2min'``); 0 and DEFAULT mean the server's limit (None)."""
    value = text.strip().strip("'\"").strip()
    if value.upper() == "DEFAULT":
        return None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?", value, re.I)
    if not found:
        raise ValueError(f'invalid value for parameter "statement_timeout": "{value}" '
                         "(milliseconds, or a number with us, ms, s, min, h or d)")
    seconds = float(found.group(1)) * _UNITS[(found.group(2) or "ms").lower()]
    return seconds or None


def _shown(seconds: float) -> str:
    return f"{seconds:g}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


@dataclass
class Copy:
    """How ``COPY ... TO STDOUT`` writes rows: PostgreSQL's text format or CSV."""

    csv: bool = False
    header: bool = False
    delimiter: str = "\t"
    null: str = "\\N"


@dataclass
class Result:
    """What one statement gives the client: a command tag, and rows when ``columns`` is not None."""

    tag: str
    columns: list[str] | None = None
    oids: list[int] | None = None
    rows: Iterator[tuple] | None = None
    copy: Copy | None = None
    counted: bool = True
    """The tag ends with the number of rows sent (SELECT n, FETCH n, COPY n)."""
    nbytes: int = 0
    """The answer's size as fetched (its Arrow columns): what holding it costs (HeldAnswers)."""


@dataclass
class Cursor:
    columns: list[str]
    oids: list[int]
    rows: Iterator[tuple]
    hold: bool
    in_block: bool
    query: str = ""
    params: list | None = None
    """The declared query and its values: each FETCH plans it again (no row asked) through the engine."""
    policy: tuple | None = None
    """The grants the rows were planned under (QueryResult.policy): a FETCH under other ones is refused."""
    nbytes: int = 0
    """The answer's size as fetched: held until the cursor is closed."""


@dataclass
class Prepared:
    """A statement of the extended protocol (Parse): its text, kind and parameter types."""

    sql: str
    kind: str
    param_oids: list[int]
    description: tuple[list[str], list[int]] | None = None


@dataclass
class Portal:
    prepared: Prepared
    params: list
    formats: list[int]
    result: Result | None = None
    rows: Iterator[tuple] | None = None
    sent: int = 0
    described: bool = False
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def kind_of(sql: str) -> str:
    """What a statement is, by its first word (the engine decides anything that reads data)."""
    head = head_of(sql)
    if not head:
        return "empty"
    if head in CHATTER:
        return "chatter"
    if head in ("DECLARE", "FETCH", "MOVE", "CLOSE", "COPY"):
        return head.lower()
    if head == "SHOW" and _SHOW_TIMEOUT.match(sql):
        return "show_timeout"
    if head in ("WITH", "SELECT") and (_TYPE_LOOKUP.match(sql) or _JIT.match(sql)):
        return "types"
    return "query"


class GovernedSession:
    """A signed-in department user's session on the governed engine."""

    def __init__(self, engine: GovernedEngine):
        self.engine = engine
        self.user: User | None = None
        self.timeout: float | None = None
        """``SET statement_timeout`` in seconds (None: the server's limit); it only ever lowers that."""
        self.canceller = Canceller()
        self.status = "I"
        """Transaction status as ReadyForQuery reports it: I idle, T in a block, E in a failed block."""
        self.cursors: dict[str, Cursor] = {}
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.policy: tuple | None = None
        """The grants the last query was planned under (QueryResult.policy)."""
        self.held: Callable[[GovernedSession, int, str], None] | None = None
        """The server's check of what this session's user and all sessions hold (HeldAnswers.check)."""
        self.fetched: tuple[str, Cursor] | None = None
        """The cursor (and its name) the last FETCH read from: a FETCH portal's rows are that cursor's."""

    # --- settings ----------------------------------------------------------------------------------------
    def effective_timeout(self) -> float:
        server = self.engine.limits.seconds
        return min(server, self.timeout) if self.timeout else server

    def sign_in_options(self, options: str) -> None:
        """``options`` of the startup packet (libpq's ``options=-c statement_timeout=5s``, PGOPTIONS)."""
        for value in re.findall(r"(?:-c\s*|--)statement_timeout=(\S+)", options or ""):
            self.timeout = statement_timeout(value)

    # --- statements --------------------------------------------------------------------------------------
    def execute_sql(self, sql: str, params: list | None = None) -> Result:
        """Run one statement; an error inside a transaction block fails the block (until ROLLBACK)."""
        if self.user is None:
            raise PermissionError("not authenticated")
        kind = kind_of(sql)
        if self.status == "E" and not (kind == "chatter" and head_of(sql) in ("ROLLBACK", "ABORT", "COMMIT", "END")):
            raise WireError("25P02", "current transaction is aborted, commands ignored until end of transaction block")
        try:
            return self._run(kind, sql, params)
        except BaseException:
            if self.status == "T":
                self.status = "E"
            raise

    def _run(self, kind: str, sql: str, params: list | None) -> Result:
        if kind == "empty":
            return Result("")
        if kind == "chatter":
            return self._chatter(sql)
        if kind == "show_timeout":
            return Result("SHOW", ["statement_timeout"], [t.TEXT], iter([(_shown(self.effective_timeout()),)]),
                          counted=False)
        if kind == "declare":
            return self._declare(sql, params)
        if kind in ("fetch", "move"):
            return self._fetch(sql)
        if kind == "close":
            return self._close(sql)
        if kind == "copy":
            return self._copy(sql, params)
        if kind == "types":
            return type_lookup(sql, params)
        return self.query(sql, params)

    def query(self, sql: str, params: list | None = None) -> Result:
        assert self.user is not None
        answer = self.engine.statement(self.user.department, sql, list(params) if params else None,
                                       user=self.user.name, seconds=self.timeout, cancel=self.canceller)
        self.policy = getattr(answer, "policy", None)
        head = head_of(sql)
        return rows_result(answer, "SELECT" if head not in ("EXPLAIN", "SHOW") else head, head not in ("EXPLAIN", "SHOW"))

    def still_granted(self, policy: tuple | None, what: str) -> None:
        """After its query was planned again (no row asked): refused unless the grants are those its rows were
        planned under. A narrowed row filter, a column masked or taken away since must not let rows read
        under the old grant out (a cursor lives as long as its session or transaction block)."""
        if self.policy != policy:
            raise WireError("42501", f"{what} was opened under grants that have changed since (a row filter, mask "
                                     "or column of the department's access): its remaining rows are not sent; "
                                     "run the query again to read under the current grants")

    def _chatter(self, sql: str) -> Result:
        head = head_of(sql)
        upper = " ".join(sql.upper().split()).rstrip(";").strip()
        if head == "SET" and (found := _SET_TIMEOUT.match(sql)):
            self.timeout = statement_timeout(found.group(1))
        elif head == "RESET" and _RESET_TIMEOUT.match(sql):
            self.timeout = None
        if head in ("BEGIN", "START"):
            self.status = "T" if self.status == "I" else self.status
            return Result("BEGIN" if head == "BEGIN" else "START TRANSACTION")
        if head in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            if head == "ROLLBACK" and " TO " in f" {upper} ":
                self.status = "T" if self.status != "I" else "I"
                return Result("ROLLBACK")
            failed = self.status == "E"
            self._end_block()
            return Result("ROLLBACK" if failed or head in ("ROLLBACK", "ABORT") else "COMMIT")
        if head == "DISCARD":
            if upper.endswith("ALL"):
                self.timeout = None
                self.cursors.clear()
                self.prepared = {k: v for k, v in self.prepared.items() if not k}
            return Result(upper)
        if head == "DEALLOCATE":
            name = upper.split()[-1]
            if name == "ALL":
                self.prepared = {k: v for k, v in self.prepared.items() if not k}
                return Result("DEALLOCATE ALL")
            words = sql.strip().rstrip(";").split()
            self.prepared.pop(_unquote(words[-1]), None)
            return Result("DEALLOCATE")
        return Result(head)

    def _end_block(self) -> None:
        """COMMIT or ROLLBACK: cursors declared in the block without HOLD go with it."""
        self.status = "I"
        self.cursors = {k: c for k, c in self.cursors.items() if c.hold or not c.in_block}

    # --- cursors -----------------------------------------------------------------------------------------
    def _declare(self, sql: str, params: list | None) -> Result:
        found = _DECLARE.match(sql)
        if not found:
            raise WireError("42601", "DECLARE: expected DECLARE name [NO SCROLL] CURSOR [WITH|WITHOUT HOLD] FOR query")
        name = _unquote(found.group(1))
        if name in self.cursors:
            raise WireError("42P03", f'cursor "{name}" already exists')
        if len(self.cursors) >= MAX_CURSORS:
            raise WireError("54000", f"too many open cursors: at most {MAX_CURSORS} a session; CLOSE one first")
        if found.group(2) and "SCROLL" in found.group(2).upper() and "NO" not in found.group(2).upper():
            raise WireError("0A000", "SCROLL cursors are not supported: cursors here scan forward only")
        result = self.query(found.group(4), params)
        assert result.columns is not None and result.oids is not None and result.rows is not None
        if self.held is not None:
            self.held(self, result.nbytes, f'cursor "{name}"')
        self.cursors[name] = Cursor(result.columns, result.oids, result.rows,
                                    hold=(found.group(3) or "").upper() == "WITH", in_block=self.status == "T",
                                    query=found.group(4), params=params, policy=self.policy, nbytes=result.nbytes)
        return Result("DECLARE CURSOR")

    def cursor(self, name: str) -> Cursor:
        found = self.cursors.get(name)
        if found is None:
            raise WireError("34000", f'cursor "{name}" does not exist')
        return found

    def _fetch(self, sql: str) -> Result:
        found = _FETCH.match(sql)
        if not found:
            raise WireError("42601", "FETCH: expected FETCH [FORWARD] [n | ALL | NEXT] FROM name")
        verb, direction, name = found.group(1).upper(), (found.group(2) or "NEXT").upper(), _unquote(found.group(3))
        cursor = self.cursor(name)
        # the rows were planned when the cursor was declared: a grant revoked or a user disabled since (a
        # WITH HOLD cursor lives as long as the session) must stop them, as it stops any new query
        self.check_cursor(cursor, name)
        self.fetched = (name, cursor)
        words = direction.split()
        if words[0] in ("NEXT", "FORWARD") and len(words) == 1:
            count: int | None = 1
        elif words[-1] == "ALL" and words[0] in ("ALL", "FORWARD"):
            count = None
        elif words[0] == "FORWARD" or words[0].lstrip("+").isdigit():
            count = int(words[-1])
        else:
            raise WireError("55000", "cursor can only scan forward (FETCH NEXT, FORWARD n, n or ALL)")
        rows = itertools.islice(cursor.rows, count) if count is not None else cursor.rows
        if verb == "MOVE":
            moved = sum(1 for _ in rows)
            return Result(f"MOVE {moved}", counted=False)
        return Result("FETCH", cursor.columns, cursor.oids, iter(rows))

    def held_bytes(self) -> int:
        """What this session holds beyond the statement running: its open cursors' answers and its portals'
        answers not sent in full."""
        return (sum(c.nbytes for c in list(self.cursors.values()))
                + sum(p.result.nbytes for p in list(self.portals.values()) if p.result is not None and not p.done))

    def check_cursor(self, cursor: Cursor, name: str) -> None:
        """The cursor's query planned again (no row asked): refused unless under the grants it was declared
        under (a FETCH, and a FETCH portal resumed or executed after Describe, whose rows are the cursor's)."""
        self.query(binding.no_rows(cursor.query), cursor.params)
        self.still_granted(cursor.policy, f'cursor "{name}"')

    def _close(self, sql: str) -> Result:
        found = _CLOSE.match(sql)
        if not found:
            raise WireError("42601", "CLOSE: expected CLOSE name or CLOSE ALL")
        if found.group(1).upper() == "ALL":
            self.cursors.clear()
            return Result("CLOSE CURSOR ALL")
        name = _unquote(found.group(1))
        self.cursor(name)
        del self.cursors[name]
        return Result("CLOSE CURSOR")

    # --- COPY --------------------------------------------------------------------------------------------
    def _copy(self, sql: str, params: list | None) -> Result:
        found = _COPY.match(sql.strip().rstrip(";"))
        if not found or found.group(2).upper() != "TO" or not found.group(3).upper().startswith("STDOUT"):
            refusal = WireError("42501", "only COPY (query) TO STDOUT is accepted here: the lake is read-only to "
                                         "departments and the server writes no files (psql: \\copy (query) to 'file')")
            self._audit_refusal(sql, refusal)
            raise refusal
        source, rest = found.group(1).strip(), ""
        target = re.match(r"(.*?)\s+TO\s+STDOUT\b(.*)$", sql.strip().rstrip(";"), re.I | re.S)
        rest = target.group(2) if target else ""
        if source.startswith("("):
            query = source[1:source.rindex(")")]
        else:  # COPY table [(columns)] TO STDOUT
            table = re.fullmatch(r"([\w.\"]+)\s*(?:\((.*)\))?", source, re.S)
            if table is None:
                raise WireError("42601", "COPY: expected COPY (query) or COPY table [(columns)]")
            query = f"SELECT {table.group(2) or '*'} FROM {table.group(1)}"
        options = _copy_options(rest)
        result = self.query(query, params)
        result.tag, result.copy = "COPY", options
        return result


    def _audit_refusal(self, sql: str, refusal: WireError) -> None:
        """A statement the wire refuses itself, before the engine sees it (COPY to a file or a program), is
        audited as the engine audits its refusals: a probe of the policy is counted (sharing.security.alerts)."""
        from sharing.limits import clip

        self.engine.audit.append(department=self.user.department, user=self.user.name, purpose="postgres-wire",
                                 **clip("sql_sent", sql, self.engine.settings.limits.audit_sql_bytes),
                                 dialect="postgres", tables=[], decision="refused", reason=str(refusal))


def _copy_options(text: str) -> Copy:
    """COPY's options, new style ``WITH (FORMAT csv, HEADER)`` or old ``CSV HEADER DELIMITER ','``."""
    words = re.findall(r"'(?:[^']|'')*'|[A-Za-z_]+", text)
    copy = Copy()
    i = 0
    while i < len(words):
        word = words[i].upper()
        value = words[i + 1] if i + 1 < len(words) else None
        if word == "FORMAT" and value:
            if value.strip("'").upper() == "BINARY":
                raise WireError("0A000", "COPY in binary format is not supported: use text or csv")
            copy.csv = value.strip("'").upper() == "CSV"
            i += 1
        elif word == "CSV":
            copy.csv = True
        elif word == "HEADER":
            copy.header = not (value and value.upper() in ("FALSE", "OFF", "0"))
            if value and value.upper() in ("TRUE", "ON", "FALSE", "OFF"):
                i += 1
        elif word == "DELIMITER" and value and value.startswith("'"):
            copy.delimiter = value[1:-1].replace("''", "'")
            i += 1
        elif word == "NULL" and value and value.startswith("'"):
            copy.null = value[1:-1].replace("''", "'")
            i += 1
        i += 1
    if copy.csv:
        copy.delimiter = "," if copy.delimiter == "\t" and "DELIMITER" not in text.upper() else copy.delimiter
        copy.null = "" if copy.null == "\\N" and " NULL " not in f" {text.upper()} " else copy.null
    return copy


def rows_result(answer: Any, tag: str, counted: bool = True) -> Result:
    """The engine's answer (sharing.sql.QueryResult) as rows for the wire, with a PostgreSQL type per column:
    from the engine's DuckDB types where it gives them, else from the first value that is not NULL."""
    columns = list(answer.columns)
    types = getattr(answer, "types", None)
    if types:
        batches = getattr(answer, "held_batches", None) or ()
        return Result(tag, columns, [t.oid_of_duck(str(x)) for x in types], _stream(answer), counted=counted,
                      nbytes=sum(b.nbytes for b in batches))
    rows = answer.rows if isinstance(answer.rows, list) else list(answer.rows)
    nbytes = sum(sys.getsizeof(v) for row in rows for v in row)  # a catalog answer: at most 100,000 rows
    oids = []
    for i in range(len(columns)):
        first = next((r[i] for r in rows if r[i] is not None), None)
        oids.append(t.oid_of_value(first) if first is not None else t.TEXT)
    return Result(tag, columns, oids, iter(rows), counted=counted, nbytes=nbytes)


def _stream(answer: Any) -> Iterator[tuple]:
    """The rows of an answer, an Arrow batch at a time when the engine fetched it as batches (the servers):
    a batch's rows are made Python values just before they are sent, never the whole answer at once."""
    batches = getattr(answer, "held_batches", None)  # sharing.sql.QueryResult built from batches: not yet rows
    if batches is None:
        yield from answer.rows
        return
    from sharing.sql import python_rows

    for batch in batches:
        yield from python_rows(batch, answer.types)


# --- asyncpg's type introspection ---------------------------------------------------------------------------
# asyncpg decodes the built-in scalar types itself, and asks the server about any other type it meets (arrays
# of int8, varchar, date, ...) with one fixed query on pg_type, after turning JIT off. Both are answered here,
# from this server's own type table: they concern PostgreSQL's built-in types, not the department's data.
_TYPE_LOOKUP = re.compile(r"\s*WITH\s+RECURSIVE\s+typeinfo_tree\s*\(", re.I)
_JIT = re.compile(r"\s*SELECT\s+current_setting\('jit'\)\s+AS\s+cur,\s*set_config\('jit',", re.I)
_TYPE_COLUMNS = ["oid", "ns", "name", "kind", "basetype", "elemtype", "elemdelim", "range_subtype", "attrtypoids",
                 "attrnames", "depth", "basetype_name", "elemtype_name", "range_subtype_name"]
_TYPE_OIDS = [t.OID, t.NAME, t.NAME, t.BYTEA, t.OID, t.OID, t.TEXT, t.OID, 1028, 1009, t.INT4, t.TEXT, t.TEXT, t.TEXT]


def type_lookup(sql: str, params: list | None) -> Result:
    if _JIT.match(sql):
        return Result("SELECT", ["cur", "new"], [t.TEXT, t.TEXT], iter([("off", "off")]))
    rows = []
    for oid in (params or [[]])[0] or []:
        element = t.ELEMENT_OF.get(oid)
        if element is not None and element in t.TYPE_NAMES:
            rows.append((element, "pg_catalog", t.TYPE_NAMES[element][0], b"b", None, None, None, None, None,
                         None, 1, None, None, None))
            rows.append((oid, "pg_catalog", "_" + t.TYPE_NAMES[element][0], b"b", None, element, ",", None, None,
                         None, 0, None, t.TYPE_NAMES[element][1], None))
        elif oid in t.TYPE_NAMES:
            rows.append((oid, "pg_catalog", t.TYPE_NAMES[oid][0], b"b", None, None, None, None, None, None, 0,
                         None, None, None))
    return Result("SELECT", _TYPE_COLUMNS, _TYPE_OIDS, iter(rows))


def describe(session: GovernedSession, prepared: Prepared) -> tuple[list[str], list[int]] | None:
    """The columns a prepared statement will return, before it has parameters (Describe Statement): the
    query runs governed with each parameter a NULL of its type and no row asked (``LIMIT 0``), so that names
    and types are the engine's own; None for a statement that returns no rows."""
    if prepared.kind in ("fetch",):
        found = _FETCH.match(prepared.sql)
        if found and found.group(1).upper() == "FETCH":
            cursor = session.cursor(_unquote(found.group(3)))
            return cursor.columns, cursor.oids
        return None
    if prepared.kind == "show_timeout":
        return ["statement_timeout"], [t.TEXT]
    if prepared.kind == "types":
        return (["cur", "new"], [t.TEXT, t.TEXT]) if _JIT.match(prepared.sql) else (_TYPE_COLUMNS, _TYPE_OIDS)
    if prepared.kind != "query":
        return None
    if prepared.description is None:
        sql = binding.with_nulls(prepared.sql, prepared.param_oids) if prepared.param_oids else prepared.sql
        result = session.query(binding.no_rows(sql))
        assert result.columns is not None and result.oids is not None
        prepared.description = (result.columns, result.oids)
    return prepared.description


def prepare(session: GovernedSession, sql: str, declared: list[int]) -> Prepared:
    """Parse: the statement's kind and its parameters' types (declared, else inferred from the query)."""
    kind = kind_of(sql)
    inner = sql
    if kind == "declare" and (found := _DECLARE.match(sql)):
        inner = found.group(4)
    elif kind == "types":
        return Prepared(sql, kind, [] if _JIT.match(sql) else [1028])
    elif kind not in ("query", "declare", "copy"):
        return Prepared(sql, kind, [o or t.TEXT for o in declared])
    if "$" not in inner:
        return Prepared(sql, kind, [o or t.TEXT for o in declared])
    return Prepared(sql, kind, binding.parameter_types(inner, declared, _column_types(session)))


def _column_types(session: GovernedSession):
    """A lookup of the type of a column the session's department may read (None for any other)."""
    access: dict | None = None

    def lookup(table: str | None, column: str) -> int | None:
        nonlocal access
        if access is None:
            try:
                with session.engine.cursor() as lake:
                    access = session.engine.access(lake.con, session.user.department,
                                                   user=session.user.name)
            except (OneSourceError, AssertionError, AttributeError):
                access = {}
        granted = access.get(table or "")
        if granted is None or column not in granted.columns:
            return None
        try:
            return t.oid_of_duck(session.engine.registry.dataset(table).column(column).duck_type)
        except (KeyError, ValueError, AttributeError):
            return None

    return lookup
