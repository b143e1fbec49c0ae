"""The Postgres-wire server: PostgreSQL's frontend/backend protocol 3.0 over TCP, optionally TLS.

One thread per connection (the GIL is shared anyway). A connection reads whole messages, answers them
into one output buffer, and sends that buffer when the client waits for an answer (ReadyForQuery, Flush,
a suspended portal) or when it holds a batch of rows: rows are encoded with one encoder per column chosen
once per result (sharing.pgwire.types), and go out while later ones are still being encoded.

Sign-in: SCRAM-SHA-256 (sharing.scram; md5 is never offered), throttled and locked out by
sharing.signin. TLS: an SSLRequest is answered 'S' when the settings name a certificate and key
(core.config.WireSettings), else 'N'; with ``tls_required`` a clear-text startup is refused.
A cancel request with the session's key (drawn from ``secrets``, compared in constant time) stops the
query that session is running.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from dataclasses import dataclass

from core.errors import OneSourceError
from core.logsafe import guarded
from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.pgwire import types as t
from sharing.pgwire.params import no_rows
from sharing.pgwire.session import GovernedSession, Portal, Result, describe, prepare
from sharing.scram import MECHANISM, ProofRejected, ScramError, ServerExchange, Verifier, mock_verifier
from sharing.signin import LockedOut, SignInGuard
from sharing.sql import size_bytes
from sharing.users import User, scram_verifier

log = guarded("onesource.pgwire")

# Startup message codes: protocol 3.0, and the requests sent in place of a startup message
PROTOCOL_3, CANCEL_REQUEST, SSL_REQUEST, GSSENC_REQUEST = 196608, 80877102, 80877103, 80877104
# Authentication request codes (PostgreSQL's protocol, "AuthenticationXXX" messages)
AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 10, 11, 12
STARTUP_BYTES = 10_000
"""Largest startup or sign-in message accepted (PostgreSQL's own limit for the startup packet)."""
SIGN_IN_SECONDS = 60.0
"""A connection that has not signed in after this long is hung up on (nobody holds a thread for free): a
deadline for the whole sign-in, as PostgreSQL's authentication_timeout, not for each read (a client
trickling a byte a minute would otherwise hold its thread for ever)."""
MAX_SIGNING_IN = 128
"""Connections allowed at once on their way in (startup, TLS handshake, SCRAM); any more are refused with
PostgreSQL's 53300 at once, so that clients that never finish signing in cannot take every thread."""
MAX_SIGNING_IN_PER_ADDRESS = 32
"""Of those, from one client address: one host holding its share open cannot lock everybody else out (an
application server's pool opening its connections at once stays well under it)."""
MAX_SESSIONS = 256
"""Signed-in sessions at once, all users together (PostgreSQL's max_connections): each holds a thread and its
cursors' and portals' answers; beyond, a new sign-in is refused with 53300 (the pooled applications of the
departments stay far below it)."""
MAX_SESSIONS_PER_USER = 64
"""Of those, one user's (PostgreSQL's CONNECTION LIMIT of a role): one user's runaway pool cannot take every
session from the others."""
MAX_PORTALS = 64
"""Portals a session may hold at once. A portal executed holds its whole answer until the transaction block
ends (a block here can last for ever): as cursors (sharing.pgwire.session.MAX_CURSORS), they are bounded."""
RECHECK_SECONDS = 1.0
"""A portal's held rows are sent without planning its query again only this soon after it ran, and only when
no commit was made since (Connection.recheck)."""
PREPARED_BYTES = 16 * 1024 * 1024
"""SQL a session's named prepared statements may hold together (a client's statement cache: psycopg keeps 100,
PgJDBC 256 of a few KB each); without a bound, Parse after Parse of a 1 MiB text held memory without end."""
FREEZE_WATCH = 1.0
"""Seconds between two looks at the catalog's stamp for freezes that end live sessions (GovernedPgServer)."""
IDLE_LOOK = 0.5
"""Seconds an idle connection waits for its client before it looks whether its session was ended (a freeze)."""
SEND_BYTES = 256 * 1024
"""Output is sent once this much is buffered, and always when the client waits for an answer."""
_I, _H = struct.Struct("!i"), struct.Struct("!h")
_NULL = b"\xff\xff\xff\xff"


class Hangup(Exception):  # noqa: N818 - the end of a connection, not an error
    """The client went away, or the connection must end (after a FATAL error)."""


class Reader:
    """Whole messages from a socket, through one receive buffer."""

    def __init__(self, sock: socket.socket, deadline: float | None = None):
        self.sock = sock
        self.buf = bytearray()
        self.deadline = deadline
        """time.monotonic() by which the wanted bytes must have come (sign-in), None: no limit."""

    def _wait(self) -> None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client did not sign in in time")
            self.sock.settimeout(left)

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._wait()
            chunk = self.sock.recv(max(65_536, n - len(self.buf)))
            if not chunk:
                raise Hangup("the client closed the connection")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip(self, n: int) -> None:
        """Read past ``n`` bytes without keeping them (a message over the size limit)."""
        while n > 0:
            take = min(n, len(self.buf))
            del self.buf[:take]
            n -= take
            if n:
                self._wait()
                chunk = self.sock.recv(min(n, 1 << 20))
                if not chunk:
                    raise Hangup("the client closed the connection")
                self.buf += chunk


def _cstr(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end == -1:  # a message cut short: reported as a malformed message (08P01), as a struct.error is
        raise struct.error("a string without its terminating NUL byte")
    return data[pos:end].decode("utf-8"), end + 1


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I.pack(len(body) + 4) + body


def error_body(severity: str, sqlstate: str, text: str) -> bytes:
    fields = ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", text))
    return b"".join(tag + value.encode("utf-8", "replace") + b"\x00" for tag, value in fields) + b"\x00"


def sqlstate_of(exc: BaseException) -> str:
    """PostgreSQL's SQLSTATE for an error: the one it carries (refusals, invalid SQL, limits), else by DuckDB's
    words."""
    own = getattr(exc, "sqlstate", None)  # QueryRefused's: 42501 refused by policy, 42601 invalid SQL
    if own:
        return own
    text = str(exc)
    if isinstance(exc, QueryFailed):
        for words, state in (("Catalog Error: Table", "42P01"), ("Catalog Error: Scalar Function", "42883"),
                             ("Catalog Error", "42704"), ("Binder Error", "42703"), ("Parser Error", "42601"),
                             ("Conversion Error", "22P02"), ("Invalid Input Error", "22P02"),
                             ("Out of Range Error", "22003"), ("Division by zero", "22012")):
            if words in text:
                return state
        return "XX000"
    if isinstance(exc, ValueError):
        return "22023"
    return "XX000"


@dataclass
class _Pending:
    """A connection on its way in: who it says it is, and its SCRAM exchange so far."""

    user: User | None  # None: no such user (the exchange runs on a mock verifier and fails)
    exchange: ServerExchange


class Connection:
    """One client connection: startup, sign-in, then the simple and extended query protocols."""

    def __init__(self, server: GovernedPgServer, sock: socket.socket, address: tuple):
        self.server = server
        self.sock = sock
        self.address = address[0] if address else "?"
        self.reader = Reader(sock)
        self.out = bytearray()
        self.session = GovernedSession(server.engine)
        self.session.held = server.held.check
        self.params: dict[str, str] = {}
        self.tls = False
        self.process_id = 0
        self.secret_key = 0
        self.skipping = False
        """After an error in the extended protocol: messages are ignored until Sync."""
        self.ended: str | None = None
        """Set by the server's watcher when the data bureau froze this session's user or department: the
        FATAL message the connection ends with (:meth:`GovernedPgServer.end_frozen`)."""

    # --- output ------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out += data
        if len(self.out) >= SEND_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.out:
            self.sock.sendall(self.out)
            self.out.clear()

    def fatal(self, sqlstate: str, text: str) -> None:
        """A FATAL error, then hang up, as PostgreSQL does with a refused connection."""
        self.out += message(b"E", error_body("FATAL", sqlstate, text))
        self.flush()
        raise Hangup(text)

    def error(self, exc: BaseException) -> None:
        if self.ended:  # frozen while the statement ran (sharing.security.freeze): the session ends
            self.fatal("57P01", self.ended)
        if getattr(exc, "ends_session", False):  # the user or its department is frozen: no next statement either
            self.fatal(exc.sqlstate, str(exc))  # type: ignore[attr-defined]
        if not isinstance(exc, OneSourceError | ValueError | PermissionError):
            log.exception("postgres-wire: unexpected error for %s", self.address)
            text = f"internal error ({type(exc).__name__}); it was logged"
        else:
            text = str(exc)
        self.send(message(b"E", error_body("ERROR", sqlstate_of(exc), text)))

    def ready(self) -> None:
        self.send(message(b"Z", self.session.status.encode()))
        self.flush()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def serve(self) -> None:
        admitted = False
        try:
            admitted = self.server.admit(self.address)
            if not admitted:
                self.fatal("53300", "sorry, too many clients already (connections signing in)")
            self.reader.deadline = time.monotonic() + SIGN_IN_SECONDS
            self.sock.settimeout(SIGN_IN_SECONDS)
            signed_in = self.startup()
            self.server.admitted(self.address)
            admitted = False
            if not signed_in:
                return
            self.reader.deadline = None
            self.sock.settimeout(None)
            self.loop()
        except (Hangup, ConnectionError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.debug("postgres-wire connection from %s ended: %s", self.address, exc)
        finally:
            if admitted:
                self.server.admitted(self.address)
            self.session.canceller.cancel()
            self.server.forget(self.process_id)
            try:
                self.sock.close()
            except OSError:
                pass

    def startup(self) -> bool:
        """The startup packet (after any SSLRequest), then sign-in; False for a cancel request."""
        while True:
            length = _I.unpack(self.reader.exact(4))[0]
            if not 8 <= length <= STARTUP_BYTES:
                raise Hangup(f"startup packet of {length} bytes")
            body = self.reader.exact(length - 4)
            code = _I.unpack(body[:4])[0]
            if code == SSL_REQUEST and not self.tls:
                self.start_tls()
                continue
            if code == GSSENC_REQUEST and not self.tls:
                self.sock.sendall(b"N")  # no GSS encryption here: the client goes on with TLS or in clear
                continue
            if code == CANCEL_REQUEST:
                if len(body) != 12:  # a short one raised struct.error out of the connection's thread
                    raise Hangup(f"cancel request of {length} bytes")
                process_id, key = struct.unpack("!ii", body[4:12])
                self.server.cancel(process_id, key, self.address)
                return False  # PostgreSQL answers a cancel request with nothing, and hangs up
            if code >> 16 != 3:
                self.fatal("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                                    "this server speaks 3.0")
            fields = body[4:].split(b"\x00")
            self.params = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                           for k, v in zip(fields[::2], fields[1::2], strict=False) if k}
            if code != PROTOCOL_3:  # a newer minor version: say which one we speak (NegotiateProtocolVersion)
                self.send(message(b"v", _I.pack(0) + _I.pack(0)))
            break
        if self.server.tls_required and not self.tls:
            self.fatal("28000", "this server accepts TLS connections only: connect with sslmode=require "
                                "(psql 'sslmode=require ...', psycopg sslmode='require', JDBC ssl=true)")
        self.sign_in()
        return True

    def start_tls(self) -> None:
        context = self.server.tls
        if context is None:
            self.sock.sendall(b"N")  # the client goes on in clear (or gives up, with sslmode=require)
            return
        if self.reader.buf:  # bytes sent before the handshake would be read as if they had been encrypted
            raise Hangup("data received before the TLS handshake")
        self.sock.sendall(b"S")
        self.reader._wait()  # noqa: SLF001 - the handshake too is bound by the sign-in deadline
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.reader = Reader(self.sock, self.reader.deadline)
        self.tls = True

    # --- sign-in (SCRAM-SHA-256) -------------------------------------------------------------------------
    def _auth(self, code: int, data: bytes = b"") -> None:
        self.out += message(b"R", _I.pack(code) + data)
        self.flush()

    def _read_password(self) -> bytes:
        head = self.reader.exact(5)
        kind, length = head[:1], _I.unpack(head[1:])[0]
        if not 4 <= length <= STARTUP_BYTES:
            self.fatal("08P01", f"invalid message length {length} during sign-in")
        body = self.reader.exact(length - 4)
        if kind != b"p":
            self.fatal("08P01", f"expected a password message, got {kind!r}")
        return body

    def sign_in(self) -> None:
        user_name, address = self.params.get("user", ""), self.address
        guard: SignInGuard = self.server.guard
        try:
            guard.check(user_name, address, "postgres-wire")
        except LockedOut as exc:
            log.warning("refused sign-in for user %r from %s over postgres-wire: %s", user_name, address, exc)
            self.fatal("28000", str(exc))
        if not user_name:
            self.fatal("28000", "no user name was given")
        with self.server.engine.cursor() as lake:
            found = scram_verifier(lake, user_name)
        if found is not None and found[1] is None:
            log.warning("user %r tried to sign in over postgres-wire with a password stored before SCRAM-SHA-256: "
                        "it must be reset", user_name)
            self.fatal("28P01", f'the password of user "{user_name}" was set before this server moved to '
                                f"SCRAM-SHA-256 authentication and must be reset: ask an operator to run "
                                f"`onesource users reset {user_name}`")
        verifier = Verifier.parse(found[1]) if found else mock_verifier(self.server.mock_secret, user_name)
        pending = _Pending(found[0] if found else None, ServerExchange(verifier, known=found is not None))
        self._auth(AUTH_SASL, MECHANISM.encode() + b"\x00\x00")
        try:
            first = self._read_password()
            try:
                mechanism, pos = _cstr(first, 0)
                if mechanism != MECHANISM:
                    self.fatal("28000", f"authentication method {mechanism!r} is not supported: this server signs "
                                        f"in with {MECHANISM} only")
                (size,) = _I.unpack_from(first, pos)
            except (ValueError, struct.error) as exc:
                raise ScramError("malformed SASLInitialResponse") from exc
            data = first[pos + 4:pos + 4 + size] if size >= 0 else b""
            self._auth(AUTH_SASL_CONTINUE, pending.exchange.first(data))
            proof = self._read_password()
            # the lockout is checked again when the proof arrives (a connection opened before the lockout
            # must not buy a guess after it), with the user name's turn held while the outcome is recorded
            with guard.attempt(user_name, address, "postgres-wire"):
                try:
                    final = pending.exchange.final(proof)
                except ProofRejected:
                    locked = guard.failed(user_name, address, "postgres-wire")
                    text = f'password authentication failed for user "{user_name}"'
                    self.fatal("28P01", f"{text}; {locked}" if locked else text)
                guard.succeeded(user_name, address)
        except LockedOut as exc:
            log.warning("refused sign-in for user %r from %s over postgres-wire: %s", user_name, address, exc)
            self.fatal("28000", str(exc))
        except ScramError as exc:
            log.warning("SCRAM exchange with %s for user %r broken off: %s", address, user_name, exc)
            self.fatal("08P01", str(exc))
        self._auth(AUTH_SASL_FINAL, final)
        frozen = self.server.engine.freezes().stopping(pending.user.name, pending.user.department)
        if frozen is not None:
            log.warning("refused sign-in for user %r from %s over postgres-wire: frozen (%s)", user_name, address,
                        frozen.freeze_id)
            self.fatal("42501", str(frozen.refusal(user_name)))
        self.session.user = pending.user
        try:
            self.session.sign_in_options(self.params.get("options", ""))
        except ValueError as exc:
            self.fatal("22023", str(exc))
        registered = self.server.register(self)
        if isinstance(registered, str):
            log.warning("refused sign-in for user %r from %s over postgres-wire: %s", user_name, address, registered)
            self.fatal("53300", registered)
        self.process_id, self.secret_key = registered
        self.out += message(b"R", _I.pack(AUTH_OK))
        for name, value in self.server.parameters(user_name).items():
            self.out += message(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")
        self.out += message(b"K", struct.pack("!ii", self.process_id, self.secret_key))
        self.ready()

    # --- the message loop --------------------------------------------------------------------------------
    def loop(self) -> None:
        handlers = {b"Q": self.on_query, b"P": self.on_parse, b"B": self.on_bind, b"D": self.on_describe,
                    b"E": self.on_execute, b"S": self.on_sync, b"H": self.on_flush, b"C": self.on_close}
        limit = self.server.message_bytes
        while True:
            self.idle()
            head = self.reader.exact(5)
            kind, length = head[:1], _I.unpack(head[1:])[0]
            if kind == b"X":
                return
            if length < 4:
                self.fatal("08P01", f"invalid message length {length}")
            if length - 4 > limit:
                self.reader.skip(length - 4)
                too_big = QueryRefused(f"a message of {length:,} bytes is over the {limit:,} this server reads "
                                       "(ONESOURCE_QUERY_SQL_BYTES): send a shorter query or fewer values")
                too_big.sqlstate = "54000"  # type: ignore[attr-defined]
                self._failed(kind, too_big)
                continue
            body = self.reader.exact(length - 4)
            handler = handlers.get(kind)
            if handler is None:
                if kind in (b"d", b"c", b"f"):  # copy-in data without a COPY FROM: ignored, as PostgreSQL does
                    continue
                self.fatal("08P01", f"invalid frontend message type {kind!r}")
            if self.skipping and kind != b"S":
                continue
            try:
                handler(body)
            except (ConnectionError, ssl.SSLError, Hangup):
                raise
            except struct.error as exc:  # a message cut short, or counts that do not add up: the client's fault
                self._failed(kind, _wire("08P01", f"invalid {kind.decode('ascii', 'replace')!r} message: {exc}"))
            except UnicodeDecodeError as exc:
                self._failed(kind, _wire("22021", f"invalid byte sequence for encoding UTF8: {exc}"))
            except BaseException as exc:  # noqa: BLE001 - every error goes to the client; Stopped too
                self._failed(kind, exc)

    def idle(self) -> None:
        """Wait for the client's next message, looking every IDLE_LOOK seconds whether the session was ended
        (a freeze: GovernedPgServer.end_frozen sets ``ended``); if so, FATAL and hang up. Only this thread
        touches the socket, which a TLS connection needs (an SSL object is not for two threads at once)."""
        while True:
            if self.ended:
                self.fatal("57P01", self.ended)
            if self.reader.buf or getattr(self.sock, "pending", lambda: 0)():  # bytes already here (or decrypted)
                return
            poll = select.poll()  # (not select.select: it cannot wait on descriptors numbered 1024 and above)
            try:
                poll.register(self.sock, select.POLLIN | select.POLLPRI)
            except ValueError as exc:  # the socket was closed
                raise Hangup("the connection was closed") from exc
            if poll.poll(IDLE_LOOK * 1000):
                return

    def _failed(self, kind: bytes, exc: BaseException) -> None:
        """An error in a message: the rest of an extended-protocol batch is skipped up to Sync. The error is
        sent at once, as PostgreSQL does: a client that sent Flush instead of Sync (asyncpg's prepare) waits
        for it, and a Flush arriving while skipping is ignored."""
        self.error(exc)
        if kind == b"Q":
            self.ready()
            return
        if kind != b"S":
            self.skipping = True
        self.flush()

    # --- simple query --------------------------------------------------------------------------------------
    def on_query(self, body: bytes) -> None:
        sql = body[:-1].decode("utf-8")
        if "\x00" in sql:  # the query is a C string: PostgreSQL refuses one with a NUL inside it too
            raise _wire("08P01", "invalid string in message: the query holds a NUL byte")
        statements = split_statements(sql)
        if not statements:
            self.send(message(b"I"))
        for statement in statements:
            try:
                result = self.session.execute_sql(statement)
            except BaseException as exc:  # noqa: BLE001 - reported; the rest of the string is not run
                self.error(exc)
                break
            if result.columns is not None and result.copy is None:
                self.send(row_description(result.columns, result.oids or [], []))
            self.send_rows(result, [], 0)
        if self.session.status == "I":
            self.session.portals.clear()
        self.ready()

    # --- extended query ----------------------------------------------------------------------------------
    def on_parse(self, body: bytes) -> None:
        name, pos = _cstr(body, 0)
        sql, pos = _cstr(body, pos)
        (count,) = _H.unpack_from(body, pos)
        declared = list(struct.unpack_from(f"!{count}I", body, pos + 2))
        if name and name in self.session.prepared:
            raise _wire("42P05", f'prepared statement "{name}" already exists')
        kept = sum(len(p.sql) for k, p in self.session.prepared.items() if k != name)
        if name and kept + len(sql) > PREPARED_BYTES:
            raise _wire("54000", f"too many prepared statements: this session's hold {kept:,} characters of SQL, "
                                 f"{PREPARED_BYTES:,} at most; Close (DEALLOCATE) the ones no longer used")
        self.session.prepared[name] = prepare(self.session, sql, declared)
        self.send(message(b"1"))

    def on_bind(self, body: bytes) -> None:
        portal_name, pos = _cstr(body, 0)
        name, pos = _cstr(body, pos)
        prepared = self.session.prepared.get(name)
        if prepared is None:
            raise _wire("26000", f'prepared statement "{name}" does not exist')
        (nformats,) = _H.unpack_from(body, pos)
        formats = list(struct.unpack_from(f"!{nformats}h", body, pos + 2))
        pos += 2 + 2 * nformats
        (nparams,) = _H.unpack_from(body, pos)
        pos += 2
        if nparams != len(prepared.param_oids) and prepared.param_oids:
            raise _wire("08P01", f"bind message supplies {nparams} parameters, but prepared statement "
                                 f'"{name}" requires {len(prepared.param_oids)}')
        oids = prepared.param_oids or [t.TEXT] * nparams
        params = []
        for i in range(nparams):
            (size,) = _I.unpack_from(body, pos)
            pos += 4
            if size > len(body) - pos:
                raise struct.error(f"parameter ${i + 1} of {size} bytes is longer than the rest of the message")
            data = None if size < 0 else body[pos:pos + size]
            pos += max(size, 0)
            params.append(t.decode_parameter(oids[i], t.format_of(formats, i), data))
        (nresults,) = _H.unpack_from(body, pos)
        results = list(struct.unpack_from(f"!{nresults}h", body, pos + 2))
        if portal_name and portal_name in self.session.portals:
            raise _wire("42P03", f'portal "{portal_name}" already exists')
        if portal_name not in self.session.portals and len(self.session.portals) >= MAX_PORTALS:
            raise _wire("54000", f"too many open portals: at most {MAX_PORTALS} in a transaction block")
        self.session.portals[portal_name] = Portal(prepared, params, results)
        self.send(message(b"2"))

    def on_describe(self, body: bytes) -> None:
        what, (name, _) = body[:1], _cstr(body, 1)
        if what == b"S":
            prepared = self.session.prepared.get(name)
            if prepared is None:
                raise _wire("26000", f'prepared statement "{name}" does not exist')
            oids = prepared.param_oids
            self.send(message(b"t", _H.pack(len(oids)) + b"".join(struct.pack("!I", o) for o in oids)))
            described = describe(self.session, prepared)
            self.send(row_description(*described, []) if described else message(b"n"))
            return
        portal = self.session.portals.get(name)
        if portal is None and name in self.session.cursors:  # psycopg describes a declared cursor by its name
            cursor = self.session.cursors[name]
            self.send(row_description(cursor.columns, cursor.oids, []))
            return
        if portal is None:
            raise _wire("34000", f'portal "{name}" does not exist')
        result = self.run(portal, name) if portal.prepared.kind in ("query", "fetch", "show_timeout", "types") else None
        if result is None or result.columns is None or result.copy is not None:
            self.send(message(b"n"))
        else:
            self.send(row_description(result.columns, result.oids or [], portal.formats))
        portal.described = True

    def run(self, portal: Portal, name: str = "", holds: bool = True) -> Result:
        if portal.result is None:
            stamp, started = self.server.engine.stamp(), time.monotonic()  # before: the rows are at least as new
            self.session.fetched = None
            result = self.session.execute_sql(portal.prepared.sql, portal.params)
            if holds:  # its rows outlive this message: bounded with the session's cursors (HeldAnswers)
                self.server.held.check(self.session, result.nbytes, f'portal "{name}"')
            portal.result = result
            portal.extra.update(policy=self.session.policy, stamp=stamp, started=started,  # what its rows were
                                cursor=self.session.fetched if portal.prepared.kind == "fetch" else None)
        return portal.result

    def recheck(self, portal: Portal, name: str) -> None:
        """Rows a portal holds from before this Execute (a suspended portal resumed, or one whose Describe ran
        its query or FETCH) go out only under the grants they were planned under: a portal lives as long as
        its transaction block, for ever if the client wishes. Its query (or its cursor's) is planned again,
        no row asked, unless nothing was committed since it ran (the catalog's stamp) and that was under
        RECHECK_SECONDS ago (a grant's expiry needs no commit): the Describe-then-Execute of every extended-
        protocol query is not planned twice."""
        extra = portal.extra
        if (time.monotonic() - extra.get("started", 0.0) < RECHECK_SECONDS
                and extra.get("stamp") is not None and self.server.engine.stamp() == extra["stamp"]):
            return
        if portal.prepared.kind == "query":
            self.session.query(no_rows(portal.prepared.sql), portal.params)
            self.session.still_granted(extra.get("policy"), f'portal "{name}"')
        elif portal.prepared.kind == "fetch" and extra.get("cursor") is not None:
            self.session.check_cursor(extra["cursor"][1], extra["cursor"][0])

    def on_execute(self, body: bytes) -> None:
        name, pos = _cstr(body, 0)
        (max_rows,) = _I.unpack_from(body, pos)
        portal = self.session.portals.get(name)
        if portal is None:
            raise _wire("34000", f'portal "{name}" does not exist')
        if portal.done:  # PostgreSQL answers an exhausted portal with an empty completion
            self.send(message(b"C", _tag(portal.result, portal.sent)))
            return
        if portal.result is not None:  # rows held from a Describe or an earlier Execute
            self.recheck(portal, name)
        result = self.run(portal, name, holds=max_rows > 0)
        if result.tag == "" and result.columns is None:
            self.send(message(b"I"))
            portal.done = True
            return
        suspended = self.send_rows(result, portal.formats, max_rows, portal)
        if suspended:
            self.send(message(b"s"))
            self.flush()
        else:
            portal.done = True

    def on_sync(self, _body: bytes) -> None:
        self.skipping = False
        if self.session.status == "I":  # outside a transaction block, portals end with the implicit one
            self.session.portals.clear()
        self.ready()

    def on_flush(self, _body: bytes) -> None:
        self.flush()

    def on_close(self, body: bytes) -> None:
        what, (name, _) = body[:1], _cstr(body, 1)
        (self.session.prepared if what == b"S" else self.session.portals).pop(name, None)
        self.send(message(b"3"))

    # --- rows --------------------------------------------------------------------------------------------
    def send_rows(self, result: Result, formats: list[int], max_rows: int, portal: Portal | None = None) -> bool:
        """DataRows (or CopyData) for ``result``, at most ``max_rows`` (0: all), then CommandComplete;
        True when rows remain (the portal is suspended)."""
        if result.columns is None or result.rows is None:
            if result.tag:
                self.send(message(b"C", result.tag.encode() + b"\x00"))
            else:
                self.send(message(b"I"))
            return False
        if result.copy is not None:
            return self._send_copy(result)
        oids = result.oids or [t.TEXT] * len(result.columns)
        wire = [t.wire_format(o, t.format_of(formats, i)) for i, o in enumerate(oids)]
        encode = t.encoders(oids, wire)
        sent = portal.sent if portal else 0
        rows = itertools.islice(result.rows, max_rows) if max_rows > 0 else result.rows
        count = 0
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 500:
                self.send(data_rows(batch, encode))
                count += len(batch)
                batch = []
        if batch:
            self.send(data_rows(batch, encode))
            count += len(batch)
        if portal is not None:
            portal.sent = sent + count
        if max_rows > 0 and count == max_rows:
            peek = next(result.rows, None)
            if peek is not None:
                result.rows = itertools.chain((peek,), result.rows)
                return True
        self.send(message(b"C", _tag(result, sent + count)))
        return False

    def _send_copy(self, result: Result) -> bool:
        assert result.columns is not None and result.rows is not None and result.copy is not None
        copy = result.copy
        n = len(result.columns)
        self.send(message(b"H", b"\x00" + _H.pack(n) + b"\x00\x00" * n))
        text = [t.text_of(o) for o in (result.oids or [t.TEXT] * n)]
        line = _csv_line(copy) if copy.csv else _text_line(copy)
        chunk: list[str] = [line(result.columns, [str] * n)] if copy.header else []
        count = 0
        for row in result.rows:
            chunk.append(line(row, text))
            count += 1
            if len(chunk) >= 500:
                self.send(message(b"d", "".join(chunk).encode()))
                chunk = []
        if chunk:
            self.send(message(b"d", "".join(chunk).encode()))
        self.send(message(b"c"))
        self.send(message(b"C", f"COPY {count}".encode() + b"\x00"))
        return False


def _wire(sqlstate: str, text: str) -> QueryRefused:
    from sharing.pgwire.session import WireError

    return WireError(sqlstate, text)


def _tag(result: Result | None, count: int) -> bytes:
    if result is None:
        return b"SELECT 0\x00"
    return (f"{result.tag} {count}" if result.counted else result.tag).encode() + b"\x00"


def row_description(columns: list[str], oids: list[int], formats: list[int]) -> bytes:
    parts = [_H.pack(len(columns))]
    for i, (name, oid) in enumerate(zip(columns, oids, strict=True)):
        parts.append(name.encode() + b"\x00" + struct.pack("!IhIhih", 0, 0, oid, t.TYPE_SIZE.get(oid, -1), -1,
                                                             t.wire_format(oid, t.format_of(formats, i))))
    return message(b"T", b"".join(parts))


def data_rows(rows: list[tuple], encode: list) -> bytes:
    """DataRow messages for ``rows``, one encoder per column."""
    out = []
    count = _H.pack(len(encode))
    pack = _I.pack
    for row in rows:
        parts = [count]
        for value, enc in zip(row, encode, strict=True):
            if value is None:
                parts.append(_NULL)
            else:
                data = enc(value)
                parts.append(pack(len(data)))
                parts.append(data)
        body = b"".join(parts)
        out.append(b"D" + pack(len(body) + 4))
        out.append(body)
    return b"".join(out)


def _text_line(copy):
    """PostgreSQL's COPY text format: tab-separated, ``\\N`` for NULL, backslash escapes."""
    escapes = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", copy.delimiter: "\\" + copy.delimiter})

    def line(row, text) -> str:
        return copy.delimiter.join(copy.null if v is None else f(v).translate(escapes)
                                   for v, f in zip(row, text, strict=True)) + "\n"

    return line


def _csv_line(copy):
    """CSV as PostgreSQL writes it: quoted when needed, NULL unquoted and empty, an empty string quoted."""

    def field(value: str) -> str:
        if value == "" or any(c in value for c in (copy.delimiter, '"', "\n", "\r")) or value == copy.null:
            return '"' + value.replace('"', '""') + '"'
        return value

    def line(row, text) -> str:
        return copy.delimiter.join(copy.null if v is None else field(f(v)) for v, f in zip(row, text, strict=True)) + "\n"

    return line


def split_statements(sql: str) -> list[str]:
    """A simple-query string's statements, split at semicolons outside quotes, identifiers and comments."""
    if ";" not in sql:
        return [sql] if sql.strip() else []
    out, start, i, n = [], 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            i = sql.find(ch, i + 1)
            while i != -1 and i + 1 < n and sql[i + 1] == ch:  # a doubled quote inside
                i = sql.find(ch, i + 2)
            i = n if i == -1 else i + 1
        elif sql.startswith("--", i):
            i = sql.find("\n", i)
            i = n if i == -1 else i + 1
        elif sql.startswith("/*", i):
            i = sql.find("*/", i + 2)
            i = n if i == -1 else i + 2
        elif ch == "$" and (tag := _dollar_tag(sql, i)):
            i = sql.find(tag, i + len(tag))
            i = n if i == -1 else i + len(tag)
        elif ch == ";":
            out.append(sql[start:i])
            start = i = i + 1
        else:
            i += 1
    out.append(sql[start:])
    return [s for s in out if s.strip()]


def _dollar_tag(sql: str, i: int) -> str | None:
    end = sql.find("$", i + 1)
    if end == -1:
        return None
    tag = sql[i:end + 1]
    return tag if all(c.isalnum() or c == "_" for c in tag[1:-1]) and not tag[1:2].isdigit() else None


class HeldAnswers:
    """A bound on the answers sessions hold between statements (open cursors, portals not sent in full): each
    is fetched whole (up to result_bytes) and kept until closed, so without one a user's 64 sessions of 32
    cursors and 64 portals each could keep thousands of answers in the server's memory for as long as they
    stay connected. Per user at most ``per_user`` bytes, all sessions together ``total``; a new cursor or
    portal beyond is refused (53200, out of memory) naming what to close, and what the others hold is
    untouched. Counted on demand from the sessions themselves: nothing to release, nothing to drift."""

    def __init__(self, server: GovernedPgServer, total: int, per_user: int):
        self.server, self.total, self.per_user = server, total, per_user

    def check(self, session: GovernedSession, nbytes: int, what: str) -> None:
        """``session`` is about to hold ``nbytes`` more for ``what`` (a cursor or a portal)."""
        if not nbytes:
            return
        with self.server._lock:  # noqa: SLF001 - the server's own table of sessions
            sessions = [c.session for c in self.server._sessions.values()]  # noqa: SLF001
        if session not in sessions:
            sessions.append(session)
        name = session.user.name if session.user else None
        everyone = sum(s.held_bytes() for s in sessions) + nbytes
        mine = sum(s.held_bytes() for s in sessions if s.user and s.user.name == name) + nbytes
        if mine > self.per_user or everyone > self.total:
            whose = (f"user {name}'s sessions hold {_mib(mine - nbytes)} of open cursors and unfinished portals, "
                     f"{_mib(self.per_user)} at most" if mine > self.per_user else
                     f"all sessions hold {_mib(everyone - nbytes)} of open cursors and unfinished portals, "
                     f"{_mib(self.total)} at most")
            raise _wire("53200", f"out of memory for {what}: its answer is {_mib(nbytes)}, and {whose}; CLOSE "
                                 "cursors (or end the transaction block) that are no longer read, or fetch in "
                                 "smaller parts")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


HELD_ANSWERS_PER_USER = 1
"""What one user's sessions may hold between statements, in answers of the largest size (result_bytes)."""
HELD_ANSWERS = 4
"""What all sessions together may hold between statements, in answers of the largest size."""


class GovernedPgServer(socketserver.ThreadingTCPServer):
    """A threading TCP server speaking the Postgres protocol, governed by ``engine``; sign-ins are throttled
    by ``guard`` (share one with the portal, so that both count the same failures)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: GovernedEngine, guard: SignInGuard | None = None):
        super().__init__(address, _Handler)
        self.engine = engine
        self.guard = guard or SignInGuard(engine.settings.signin, audit=engine.audit)
        self.mock_secret = secrets.token_bytes(32)  # salts of unknown users, stable for this server's life
        wire = getattr(engine.settings, "wire", None)
        self.tls = tls_context(wire.tls_cert, wire.tls_key) if wire is not None and wire.tls_cert else None
        self.tls_required = bool(wire is not None and wire.tls_required)
        if self.tls_required and self.tls is None:
            raise OneSourceError("ONESOURCE_PG_TLS_REQUIRED is set but no certificate is: set ONESOURCE_PG_TLS_CERT "
                                 "and ONESOURCE_PG_TLS_KEY (docs/deploy.md)")
        limits = engine.settings.limits
        self.message_bytes = max(limits.request_bytes, 2 * limits.sql_bytes)
        self._sessions: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self.max_signing_in, self.max_signing_in_per_address = MAX_SIGNING_IN, MAX_SIGNING_IN_PER_ADDRESS
        self.max_sessions, self.max_sessions_per_user = MAX_SESSIONS, MAX_SESSIONS_PER_USER
        self._signing_in = 0
        largest = size_bytes(limits.result_bytes)
        self.held = HeldAnswers(self, HELD_ANSWERS * largest, HELD_ANSWERS_PER_USER * largest)
        self._signing_in_from: dict[str, int] = {}
        self._watching = threading.Event()
        threading.Thread(target=self._watch_freezes, name="pgwire-freezes", daemon=True).start()

    def admit(self, address: str) -> bool:
        """A connection from ``address`` may start signing in (False: too many are already, or from there)."""
        with self._lock:
            mine = self._signing_in_from.get(address, 0)
            if self._signing_in >= self.max_signing_in or mine >= self.max_signing_in_per_address:
                return False
            self._signing_in += 1
            self._signing_in_from[address] = mine + 1
            return True

    def admitted(self, address: str) -> None:
        """A connection is through sign-in (or gone): it no longer counts against MAX_SIGNING_IN."""
        with self._lock:
            self._signing_in -= 1
            left = self._signing_in_from.pop(address, 1) - 1
            if left:
                self._signing_in_from[address] = left

    def parameters(self, user: str) -> dict[str, str]:
        return {"server_version": "14.0 (OneSource governed)", "server_encoding": "UTF8", "client_encoding": "UTF8",
                "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC", "integer_datetimes": "on",
                "standard_conforming_strings": "on", "is_superuser": "off", "session_authorization": user,
                "application_name": ""}

    def register(self, conn: Connection) -> tuple[int, int] | str:
        """A process id and secret key for a signed-in connection (its cancel key); or why it is refused
        (MAX_SESSIONS, MAX_SESSIONS_PER_USER)."""
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                return (f"sorry, too many clients already ({self.max_sessions} sessions are signed in): try again "
                        "when one has closed")
            name = conn.session.user.name if conn.session.user else None
            if sum(1 for c in self._sessions.values() if c.session.user and c.session.user.name == name) \
                    >= self.max_sessions_per_user:
                return (f'too many connections for role "{name}" (at most {self.max_sessions_per_user} at once): '
                        "close idle ones, or lower the connection pool's size")
            pid = secrets.randbits(31)
            while pid in self._sessions or pid == 0:
                pid = secrets.randbits(31)
            self._sessions[pid] = conn
        return pid, secrets.randbits(31)

    def _watch_freezes(self) -> None:
        """End the sessions of frozen users within FREEZE_WATCH seconds, idle or not: a freeze is a lake commit,
        so the catalog's stamp (a stat of its files, for SQLite) tells when to read the freezes again."""
        seen: object = None
        while not self._watching.wait(FREEZE_WATCH):
            try:
                stamp = self.engine.stamp()
                if stamp == seen:
                    continue
                self.end_frozen()
                seen = stamp
            except Exception as exc:  # noqa: BLE001 - tried again next time; each query checks the freezes anyway
                log.warning("postgres-wire: could not read the freezes: %s", exc)

    def end_frozen(self) -> int:
        """Close every session whose user or department is frozen (FATAL 57P01 with the refusal, as PostgreSQL's
        pg_terminate_backend); returns how many. The connection's own thread sends the message and hangs up
        (Connection.idle looks every IDLE_LOOK seconds); this one marks it and stops its running query."""
        freezes = self.engine.freezes()
        if not freezes:
            return 0
        with self._lock:
            conns = list(self._sessions.values())
        ended = 0
        for conn in conns:
            user = conn.session.user
            frozen = freezes.stopping(user.name, user.department) if user is not None else None
            if frozen is None or conn.ended:
                continue
            conn.ended = f"terminating connection: {frozen.refusal(user.name)}"
            conn.session.canceller.cancel()  # a query running now stops; the connection's thread says why
            ended += 1
            log.warning("postgres-wire: ended the session of frozen user %s (freeze %s)", user.name, frozen.freeze_id)
        return ended

    def server_close(self) -> None:
        self._watching.set()
        super().server_close()

    def forget(self, pid: int) -> None:
        with self._lock:
            self._sessions.pop(pid, None)

    def cancel(self, pid: int, key: int, address: str) -> None:
        with self._lock:
            conn = self._sessions.get(pid)
        if conn is not None and hmac.compare_digest(struct.pack("!i", conn.secret_key), struct.pack("!i", key)):
            log.info("cancel request from %s for session %s", address, pid)
            conn.session.canceller.cancel()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        Connection(self.server, self.request, self.client_address).serve()  # type: ignore[arg-type]


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) for the certificate and key files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise OneSourceError(f"cannot load the wire endpoint's TLS certificate {cert} and key {key}: {exc} "
                             "(ONESOURCE_PG_TLS_CERT, ONESOURCE_PG_TLS_KEY)") from exc
    return context
