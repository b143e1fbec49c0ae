"""The Postgres-wire endpoint: psql, psycopg, psycopg2, asyncpg, SQLAlchemy/pandas, PgJDBC (DBeaver), Superset.

Our own implementation of PostgreSQL's frontend/backend protocol 3.0 (simple and extended query, COPY out,
cancel requests, TLS), on the governed engine: every statement a client sends is planned, limited and
audited exactly as over the CLI and HTTP.

* :mod:`sharing.pgwire.server`: connections, sign-in (SCRAM-SHA-256), TLS, the protocol's messages;
* :mod:`sharing.pgwire.session`: a session's SQL: queries, cursors, COPY, transaction chatter, settings;
* :mod:`sharing.pgwire.types`: PostgreSQL's types in text and binary format, for results and parameters;
* :mod:`sharing.pgwire.params`: parameter types and the literals bound values become.

Each connection signs in as a department user with SCRAM-SHA-256, as PostgreSQL does it (sharing.scram
checks the client's proof against the verifier kept at rest, sharing.users): the password never travels,
and neither the verifier nor anything seen on the wire is enough to sign in. md5 is not offered; a user
whose password predates SCRAM is told to have it reset. Failed sign-ins are throttled and lock the user
name (or the client address) for a while (sharing.signin). Without TLS the session itself travels in
clear: configure a certificate (core.config.WireSettings, docs/deploy.md) or keep the endpoint on
loopback.

A refusal comes back to the client as an ordinary Postgres error carrying the reason and PostgreSQL's
SQLSTATE (42501 refused, 53300 too many queries in flight, 57014 cancelled or timed out, 53200 out of
memory, 28000/28P01 sign-in). ``SET statement_timeout`` (also ``options=-c statement_timeout=...``)
lowers the session's time limit, never above the server's (core.config.QueryLimits.seconds), and a
cancel request (psql's Ctrl-C, psycopg's ``cancel()``, JDBC's ``Statement.cancel``) with the session's
key stops the query it is running.

Why our own server: buenavista 0.5.0 (unmaintained since 2024-10) needed runtime patches and still broke
real clients (binary dates, NULL and array parameters, cursors, pool pings); pygwire 0.2.0 is a message
codec only (no type codecs, a dataclass per row), while the framing we need is a few hundred lines and
the per-row cost is what decides the endpoint's throughput.
"""

from sharing.pgwire.params import bind
from sharing.pgwire.server import GovernedPgServer
from sharing.pgwire.session import GovernedSession, statement_timeout

__all__ = ["GovernedPgServer", "GovernedSession", "bind", "statement_timeout"]
