"""The Postgres-wire endpoint (buenavista): psql, psycopg, DBeaver, Superset, pandas.read_sql.

Each connection signs in as a department user with SCRAM-SHA-256, as PostgreSQL does it (sharing.scram
checks the client's proof against the verifier kept at rest, sharing.users): the password never travels,
and neither the verifier nor anything seen on the wire is enough to sign in. md5 is not offered; a user
whose password predates SCRAM is told to have it reset. Failed sign-ins are throttled and lock the user
name (or the client address) for a while (sharing.signin). Without TLS the session itself travels in
clear: keep the endpoint on loopback or put it behind TLS.

Every statement goes through the same governed engine as the CLI and HTTP. A refusal comes back to the
client as an ordinary Postgres error carrying the reason (and PostgreSQL's SQLSTATE where one applies:
53300 too many queries in flight, 57014 cancelled or timed out, 53200 out of memory). Transaction and
session chatter that clients send on their own (BEGIN, COMMIT, SET, ...) is acknowledged and not run: the
lake is read-only to departments anyway. Two settings are honoured: ``SET statement_timeout`` (also
``options=-c statement_timeout=...`` at sign-in) lowers the session's time limit, never above the
server's (onesource.config.QueryLimits.seconds), and a cancel request (psql's Ctrl-C, psycopg's
``cancel()``, JDBC's ``Statement.cancel``) with the session's key stops the query it is running.
"""

from __future__ import annotations

import hmac
import io
import re
import secrets
import socketserver
import struct
from dataclasses import dataclass

import buenavista.postgres
import pyarrow as pa
import sqlglot
from buenavista.backends.duckdb import DuckDBQueryResult
from buenavista.core import Connection, QueryResult, Session
from buenavista.postgres import NULL_BYTE, BuenaVistaHandler, BuenaVistaServer, BVBuffer, BVContext
from sqlglot import exp

from onesource.logsafe import guarded
from sharing.engine import GovernedEngine
from sharing.limits import Canceller
from sharing.scram import MECHANISM, ProofRejected, ScramError, ServerExchange, Verifier, mock_verifier
from sharing.signin import LockedOut, SignInGuard
from sharing.users import User, scram_verifier

log = guarded("onesource.pgwire")


class _TextParams:
    """buenavista parses every untyped (oid 0) bind parameter as a date, and fails on ordinary strings
    such as the 'hstore' SQLAlchemy asks about. PostgreSQL treats an untyped parameter as text and lets
    the query's casts decide; so do we (DuckDB casts '$1::VARCHAR', dates compare as text)."""

    class parser:  # noqa: N801 - mirrors dateutil's module layout
        @staticmethod
        def parse(text: str) -> str:
            return text


buenavista.postgres.dateutil = _TextParams
# SQLAlchemy's reflection binds booleans in binary format, which buenavista does not decode.
buenavista.postgres.TYPE_OIDS.setdefault(16, ("BOOLOID", "?", True))
CHATTER = ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SET", "RESET", "DISCARD", "DEALLOCATE")


class GovernedSession(Session):
    def __init__(self, engine: GovernedEngine):
        super().__init__()
        self.engine = engine
        self.user: User | None = None
        self.timeout: float | None = None
        """``SET statement_timeout`` in seconds (None: the server's limit); it only ever lowers that."""
        self.canceller = Canceller()

    def cursor(self):
        return None

    def close(self) -> None:
        pass

    def in_transaction(self) -> bool:
        return False

    def execute_sql(self, sql: str, params=None) -> QueryResult:
        if self.user is None:
            raise PermissionError("not authenticated")
        head = (sql.strip().split() or [""])[0].upper().rstrip(";")
        if head in CHATTER:
            self._session_setting(head, sql)
            return DuckDBQueryResult(status=head)
        if _SHOW_TIMEOUT.match(sql):
            return _result(["statement_timeout"], [(_shown(self.effective_timeout()),)])
        result = self.engine.statement(self.user.department, sql, list(params) if params else None,
                                       user=self.user.name, seconds=self.timeout, cancel=self.canceller)
        return _result(result.columns, result.rows)

    def effective_timeout(self) -> float:
        server = self.engine.limits.seconds
        return min(server, self.timeout) if self.timeout else server

    def _session_setting(self, head: str, sql: str) -> None:
        """``SET statement_timeout`` (and its RESET, DISCARD ALL) changes this session's time limit; any
        other setting is chatter, acknowledged and ignored."""
        if head == "SET" and (found := _SET_TIMEOUT.match(sql)):
            self.timeout = statement_timeout(found.group(1))
        elif head == "RESET" and _RESET_TIMEOUT.match(sql) or head == "DISCARD" and "ALL" in sql.upper():
            self.timeout = None

    def sign_in_options(self, options: str) -> None:
        """``options`` of the startup packet (libpq's ``options=-c statement_timeout=5s``, PGOPTIONS)."""
        for value in re.findall(r"(?:-c\s*|--)statement_timeout=(\S+)", options or ""):
            self.timeout = statement_timeout(value)


_SET_TIMEOUT = re.compile(r"\s*SET\s+(?:SESSION\s+|LOCAL\s+)?statement_timeout\s*(?:=|\bTO\b)\s*(.*?)[\s;]*$",
                          re.I | re.S)
_RESET_TIMEOUT = re.compile(r"\s*RESET\s+(statement_timeout|ALL)\b", re.I)
_SHOW_TIMEOUT = re.compile(r"\s*SHOW\s+statement_timeout[\s;]*$", re.I)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


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


def _result(columns: list[str], rows: list[tuple]) -> DuckDBQueryResult:
    table = _arrow(columns, rows)
    return DuckDBQueryResult(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
                             status=f"SELECT {len(rows)}")


def bind(sql: str, params: list) -> str:
    """Put bound values ($1, $2, ...) into the query as literals, so that the governed engine sees (and
    the audit records) one complete statement. sqlglot writes the literals, quoting and all: a value
    cannot become SQL."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return sql  # the engine refuses it with the parse error

    def literal(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            index = int(node.this.this) - 1
            if not 0 <= index < len(params):
                raise ValueError(f"the query uses ${index + 1} but {len(params)} parameter(s) were bound")
            return exp.convert(params[index])
        return node

    return tree.transform(literal).sql(dialect="postgres")


def _arrow(columns: list[str], rows: list[tuple]) -> pa.Table:
    """Rows as Arrow; a column with no value at all is sent as text (buenavista has no NULL type)."""
    if not rows:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    table = pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in rows])
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, pa.nulls(table.num_rows, pa.string()))
    return table


class GovernedConnection(Connection):
    def __init__(self, engine: GovernedEngine):
        super().__init__()
        self.engine = engine

    def new_session(self) -> Session:
        return GovernedSession(self.engine)

    def parameters(self) -> dict[str, str]:
        return {"server_version": "14.0 (OneSource governed)", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
                "integer_datetimes": "on", "standard_conforming_strings": "on"}


# Startup message codes: protocol 3.0, and the requests sent in place of a startup message
PROTOCOL_3, CANCEL_REQUEST, SSL_REQUEST, GSSENC_REQUEST = 196608, 80877102, 80877103, 80877104
# Authentication request codes (PostgreSQL's protocol, "AuthenticationXXX" messages)
AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 10, 11, 12


@dataclass
class _Pending:
    """A connection on its way in: who it says it is, and its SCRAM exchange so far."""

    user: User | None  # None: no such user (the exchange runs on a mock verifier and fails)
    exchange: ServerExchange
    started: bool = False


class _Handler(BuenaVistaHandler):
    """buenavista's handler, signing in with SCRAM-SHA-256 instead of md5.

    buenavista calls :meth:`send_auth_request` once the startup message is read, and routes every ``p``
    message of a connection not yet signed in to :meth:`handle_md5_password`: with SCRAM these are the
    SASLInitialResponse and the SASLResponse. A refused connection gets a FATAL error and is hung up,
    as PostgreSQL does."""

    def handle_startup(self, conn: Connection) -> BVContext | None:
        """buenavista's, with a cancel request that stops the session's running query (buenavista closed
        the session, leaving the query running), and the session's key drawn from ``secrets``."""
        length = self.r.read_uint32() - 4
        code = self.r.read_uint32()
        if code in (SSL_REQUEST, GSSENC_REQUEST):  # no TLS nor GSS here: 'N', and the client goes on in clear
            self.wfile.write(b"N")
            return self.handle_startup(conn)
        if code == CANCEL_REQUEST:
            process_id, key = self.r.read_uint32(), self.r.read_uint32()
            ctx = self.server.ctxts.get(process_id)
            if ctx is not None and hmac.compare_digest(struct.pack("!I", ctx.secret_key), struct.pack("!I", key)):
                log.info("cancel request from %s for session %s", self.client_address[0], process_id)
                ctx.session.canceller.cancel()
            return None  # PostgreSQL answers a cancel request with nothing, and hangs up
        if code != PROTOCOL_3:
            raise ValueError(f"unsupported startup message: {code}")
        fields = [x.decode("utf-8") for x in self.r.read_bytes(length - 4).split(NULL_BYTE)]
        params = dict(zip(fields[::2], fields[1::2], strict=False))  # the packet ends in an extra NUL
        ctx = BVContext(conn.create_session(), self.server.rewriter, params)
        ctx.process_id = secrets.randbits(31)
        while ctx.process_id in self.server.ctxts:
            ctx.process_id = secrets.randbits(31)
        ctx.secret_key = secrets.randbits(32)
        self.send_auth_request(ctx)
        return ctx

    def send_error(self, exception, ctx: BVContext | None = None) -> None:
        """An ErrorResponse with the SQLSTATE the error carries (a limit: 53300, 57014, 53200, ...), so that
        clients can tell them apart; other errors as buenavista sends them."""
        sqlstate = getattr(exception, "sqlstate", None)
        if sqlstate is None:
            return super().send_error(exception, ctx)
        fields = b"".join(tag + value.encode("utf-8") + b"\x00" for tag, value in
                          ((b"S", "ERROR"), (b"V", "ERROR"), (b"C", sqlstate), (b"M", str(exception))))
        self.wfile.write(struct.pack("!ci", b"E", len(fields) + 5) + fields + b"\x00")
        if ctx:
            ctx.mark_error()
        return None

    def send_auth_request(self, ctx: BVContext) -> None:
        user_name = ctx.params.get("user", "")
        address = self.client_address[0]
        guard: SignInGuard = self.server.guard
        try:
            guard.check(user_name, address)
        except LockedOut as exc:
            log.warning("refused sign-in for user %r from %s over postgres-wire: %s", user_name, address, exc)
            return self._refuse("28000", str(exc))
        if not user_name:
            return self._refuse("28000", "no user name was given")
        with self.server.conn.engine.cursor() as lake:
            found = scram_verifier(lake, user_name)
        if found is not None and found[1] is None:
            log.warning("user %r tried to sign in over postgres-wire with a password stored before SCRAM-SHA-256: "
                        "it must be reset", user_name)
            return self._refuse("28P01", f'the password of user "{user_name}" was set before this server moved to '
                                         f"SCRAM-SHA-256 authentication and must be reset: ask an operator to run "
                                         f"`onesource users reset {user_name}`")
        verifier = Verifier.parse(found[1]) if found else mock_verifier(self.server.mock_secret, user_name)
        ctx.pending = _Pending(found[0] if found else None, ServerExchange(verifier, known=found is not None))
        self._auth_message(AUTH_SASL, MECHANISM.encode() + b"\x00\x00")

    def handle_md5_password(self, ctx: BVContext, payload: bytes) -> None:
        """A SASLInitialResponse or a SASLResponse (buenavista's name for the hook is the md5 one)."""
        pending: _Pending | None = getattr(ctx, "pending", None)
        user_name, address = ctx.params.get("user", ""), self.client_address[0]
        if pending is None:
            return self._refuse("08P01", "unexpected password message")
        try:
            if not pending.started:
                buf = BVBuffer(io.BytesIO(payload or b""))
                mechanism = bytearray()
                while (ch := buf.read_byte()) not in (b"\x00", b""):
                    mechanism += ch
                if mechanism.decode("utf-8", "replace") != MECHANISM:
                    return self._refuse("28000", f"authentication method {mechanism.decode('utf-8', 'replace')!r} "
                                                 f"is not supported: this server signs in with {MECHANISM} only")
                try:
                    length = buf.read_int32()
                except struct.error as exc:
                    raise ScramError("malformed SASLInitialResponse") from exc
                data = buf.read_bytes(length) if length >= 0 else b""
                pending.started = True
                self._auth_message(AUTH_SASL_CONTINUE, pending.exchange.first(data))
                return None
            # the lockout is checked again when the proof arrives (a connection opened before the lockout
            # must not buy a guess after it), with the user name's turn held while the outcome is recorded
            with self.server.guard.attempt(user_name, address):
                try:
                    final = pending.exchange.final(payload or b"")
                except ProofRejected:
                    locked = self.server.guard.failed(user_name, address, "postgres-wire")
                    message = f'password authentication failed for user "{user_name}"'
                    return self._refuse("28P01", f"{message}; {locked}" if locked else message)
                self.server.guard.succeeded(user_name, address)
        except LockedOut as exc:
            log.warning("refused sign-in for user %r from %s over postgres-wire: %s", user_name, address, exc)
            return self._refuse("28000", str(exc))
        except ScramError as exc:
            log.warning("SCRAM exchange with %s for user %r broken off: %s", address, user_name, exc)
            return self._refuse("08P01", str(exc))
        self._auth_message(AUTH_SASL_FINAL, final)
        ctx.session.user = pending.user
        ctx.pending = None
        try:
            ctx.session.sign_in_options(ctx.params.get("options", ""))
        except ValueError as exc:
            return self._refuse("22023", str(exc))
        self.send_authentication_ok()
        self.handle_post_auth(ctx)
        return None

    def _auth_message(self, code: int, data: bytes = b"") -> None:
        self.wfile.write(struct.pack("!cii", b"R", 8 + len(data), code) + data)

    def _refuse(self, sqlstate: str, message: str) -> None:
        """A FATAL error, then hang up: buenavista's loop reads end-of-stream and closes the connection."""
        fields = b"".join(tag + value.encode("utf-8") + b"\x00" for tag, value in
                          ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)))
        self.wfile.write(struct.pack("!ci", b"E", len(fields) + 5) + fields + b"\x00")
        self.r = BVBuffer(io.BytesIO())


class GovernedPgServer(BuenaVistaServer):
    """A threading TCP server speaking the Postgres protocol, governed by ``engine``; sign-ins are throttled
    by ``guard`` (share one with the portal, so that both count the same failures)."""

    def __init__(self, address: tuple[str, int], engine: GovernedEngine, guard: SignInGuard | None = None):
        socketserver.ThreadingTCPServer.__init__(self, address, _Handler)
        self.conn = GovernedConnection(engine)
        self.rewriter = None
        self.extensions = {}
        self.ctxts = {}
        self.auth = {}  # unused: _Handler.send_auth_request always asks for SCRAM-SHA-256
        self.guard = guard or SignInGuard(engine.settings.signin)
        self.mock_secret = secrets.token_bytes(32)  # salts of unknown users, stable for this server's life
