"""The Postgres-wire endpoint (buenavista): psql, psycopg, DBeaver, Superset, pandas.read_sql.

Each connection logs in as a department user (md5 handshake against the verifier kept at rest,
see sharing.users). Every statement goes through the same governed engine as the CLI and HTTP. A
refusal comes back to the client as an ordinary Postgres error carrying the reason. Transaction
and session chatter that clients send on their own (BEGIN, COMMIT, SET, ...) is acknowledged and
not run: the lake is read-only to departments anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import socketserver

import buenavista.postgres
import pyarrow as pa
import sqlglot
from buenavista.backends.duckdb import DuckDBQueryResult
from buenavista.core import Connection, QueryResult, Session
from buenavista.postgres import BuenaVistaHandler, BuenaVistaServer
from sqlglot import exp

from onesource.logsafe import guarded
from sharing.catalog import is_catalog_query
from sharing.engine import GovernedEngine
from sharing.users import User, pg_verifier

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
            return DuckDBQueryResult(status=head)
        if is_catalog_query(sql):
            result = self.engine.catalog(self.user.department, sql, list(params) if params else None,
                                         user=self.user.name)
        else:
            if params:
                sql = bind(sql, list(params))
            result = self.engine.query(self.user.department, sql, user=self.user.name, purpose="postgres-wire")
        table = _arrow(result.columns, result.rows)
        return DuckDBQueryResult(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
                                 status=f"SELECT {len(result.rows)}")


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


class _Handler(BuenaVistaHandler):
    def handle_md5_password(self, ctx, payload: bytes) -> None:
        user_name = ctx.params.get("user", "")
        client_side = payload.decode("utf-8").rstrip("\x00")
        with self.server.conn.engine.cursor() as lake:
            found = pg_verifier(lake, user_name)
        expected = "md5" + hashlib.md5(found[1].encode() + ctx.salt).hexdigest() if found else None  # noqa: S324
        if found and hmac.compare_digest(client_side, expected):
            ctx.session.user = found[0]
            self.send_authentication_ok()
            self.handle_post_auth(ctx)
        else:
            log.warning("password authentication failed for user %r", user_name)
            self.send_error(f'password authentication failed for user "{user_name}"')


class GovernedPgServer(BuenaVistaServer):
    """A threading TCP server speaking the Postgres protocol, governed by ``engine``."""

    def __init__(self, address: tuple[str, int], engine: GovernedEngine):
        socketserver.ThreadingTCPServer.__init__(self, address, _Handler)
        self.conn = GovernedConnection(engine)
        self.rewriter = None
        self.extensions = {}
        self.ctxts = {}
        self.auth = {}  # not None: buenavista then asks every client for its md5 password
