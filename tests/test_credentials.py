"""Credentials: SCRAM-SHA-256 on the Postgres wire (real psycopg and psql, and a hand-written client for what
real clients will not send), sign-in throttling and lockout on the wire and the portal, CSRF on the portal,
and users of a lake created before SCRAM (the column is added; they are told to reset their password)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import shutil
import struct
import subprocess
import threading

import psycopg
import pytest
from fastapi.testclient import TestClient

import lakehouse.ledger as ledger_module
from core.config import Settings, SignInSettings
from lakehouse.lake import CATALOG, Lake
from lakehouse.ledger import OPS
from onesource.serve import create_app
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.pgwire import GovernedPgServer
from sharing.scram import ProofRejected, ScramError, ServerExchange, Verifier, make_verifier, saslprep
from sharing.signin import LockedOut, SignInGuard
from sharing.users import create_user, scram_verifier
from tests.helpers import WireClient, free_port, write_registry

THROTTLE = SignInSettings(max_failures=3, max_failures_per_address=5, window_minutes=15, lockout_minutes=15,
                          delay_seconds=0.5, max_delay_seconds=1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def guard() -> tuple[SignInGuard, Clock, list[float]]:
    clock, slept = Clock(), []
    return SignInGuard(THROTTLE, clock=clock, sleep=slept.append), clock, slept


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("credentials") / "home")
    write_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_analyst")
        verifier = scram_verifier(lake, "tax_analyst")[1]
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    yield engine, password, verifier
    engine.close()


class Served:
    def __init__(self, engine: GovernedEngine, g: SignInGuard | None = None):
        self.server = GovernedPgServer(("127.0.0.1", free_port()), engine, g)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def connect(self, user: str, password: str, **kw) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname="onesource",
                               autocommit=True, connect_timeout=10, **kw)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wire(city):
    g, clock, slept = guard()
    served = Served(city[0], g)
    yield served, clock, slept
    served.close()


# --- a hand-written client: the protocol messages real clients will not send ---------------------------------
class RawClient(WireClient):
    def __init__(self, port: int, user: str):
        super().__init__(port)
        self.startup(user)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True


def error_fields(body: bytes) -> dict[str, str]:
    return {part[:1].decode(): part[1:].decode() for part in body.split(b"\0") if part}


def scram(port: int, user: str, *, password: str | None = None, client_key: bytes | None = None,
          stored_key: bytes | None = None, gs2: str = "n,,") -> tuple[bool, str]:
    """Sign in by hand; (True, "") when the server said AuthenticationOk, else (False, its error message)."""
    c = RawClient(port, user)
    try:
        return _scram(c, password, client_key, stored_key, gs2)
    finally:
        c.sock.close()


def _scram(c: RawClient, password: str | None, client_key: bytes | None, stored_key: bytes | None,
           gs2: str) -> tuple[bool, str]:
    kind, body = c.read()
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10
    bare = "n=,r=" + base64.b64encode(os.urandom(18)).decode()
    first = (gs2 + bare).encode()
    c.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
    kind, body = c.read()
    if kind == b"E":
        return False, error_fields(body)["M"]
    assert struct.unpack("!i", body[:4])[0] == 11
    server_first = body[4:].decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    if password is not None:
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = stored_key or hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    c.send(b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    kind, body = c.read()
    if kind == b"E":
        assert c.closed()  # a refused client is hung up on, as PostgreSQL does
        return False, error_fields(body)["M"]
    assert struct.unpack("!i", body[:4])[0] == 12
    kind, body = c.read()
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 0
    return True, ""


# --- SCRAM itself ----------------------------------------------------------------------------------------------
def test_scram_is_rfc_7677s_example_exchange():
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    exchange = ServerExchange(Verifier.parse(make_verifier("pencil", salt)), server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert exchange.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == \
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert exchange.final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                          b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") == \
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    wrong = ServerExchange(Verifier.parse(make_verifier("pencil", salt)))
    wrong.first(b"n,,n=user,r=abc")
    with pytest.raises(ScramError, match="nonce"):
        wrong.final(b"c=biws,r=abcXYZ,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    for bad in (b"p=tls-server-end-point,,n=,r=abc", b"n,a=admin,n=,r=abc", b"x,,n=,r=abc", b"n,,m=ext,n=,r=abc"):
        with pytest.raises(ScramError):
            ServerExchange(Verifier.parse(make_verifier("pencil"))).first(bad)


def test_the_stored_verifier_is_postgresqls_own(city):
    """PostgreSQL's text form, 4096 iterations, no md5 verifier written; and (where a PostgreSQL server runs,
    as for the lake-server tests) PostgreSQL derives the same keys from the same password and salt, SASLprep
    included."""
    engine, password, verifier = city
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", verifier)
    with engine.cursor() as lake:
        md5 = lake.con.execute(f"SELECT password_pg_md5 FROM {CATALOG}.{OPS}.users").fetchall()
    assert md5 == [(None,)]
    try:
        pg = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                             connect_timeout=3)
    except psycopg.OperationalError:
        return
    with pg:
        pg.execute("DROP ROLE IF EXISTS onesource_scram_check")
        odd = "Pässwörd Ⅸ\u00a0x\u00ad"  # NFKC, a non-ASCII space, a soft hyphen (mapped to nothing)
        pg.execute("SET password_encryption = 'scram-sha-256'")
        pg.execute(f"CREATE ROLE onesource_scram_check PASSWORD '{odd}'")
        theirs = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'onesource_scram_check'").fetchone()[0]
        pg.execute("DROP ROLE onesource_scram_check")
    parsed = Verifier.parse(theirs)
    assert make_verifier(odd, parsed.salt, parsed.iterations) == theirs


# --- the wire ----------------------------------------------------------------------------------------------------
def test_psycopg_and_psql_sign_in_with_scram_and_md5_is_not_offered(city, wire):
    engine, password, _ = city
    served, _, _ = wire
    with served.connect("tax_analyst", password) as conn:
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)
    # libpq itself says what the server asked for: SASL, not md5
    with pytest.raises(psycopg.OperationalError, match="server requested SASL authentication"):
        served.connect("tax_analyst", password, require_auth="md5")
    with served.connect("tax_analyst", password, require_auth="scram-sha-256") as conn:
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)
    raw = RawClient(served.port, "tax_analyst")
    kind, body = raw.read()
    raw.sock.close()
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10 and body[4:] == b"SCRAM-SHA-256\0\0"
    if shutil.which("psql"):
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(served.port), "-U", "tax_analyst", "-d", "onesource",
                              "-Atc", "SHOW standard_conforming_strings"], env={**os.environ, "PGPASSWORD": password},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "on", out.stderr


def test_wrong_passwords_and_the_stored_verifier_do_not_sign_in(city, wire, caplog):
    _, password, verifier = city
    served, clock, _ = wire
    caplog.set_level(logging.WARNING)
    parsed = Verifier.parse(verifier)
    stolen = [verifier, base64.b64encode(parsed.stored_key).decode(), base64.b64encode(parsed.server_key).decode()]
    for attempt in ["not-the-password", password + "x", *stolen]:
        with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "tax_analyst"'):
            served.connect("tax_analyst", attempt)
        clock.now += 16 * 60  # past the lockout: this test is about the password, not the throttle
    # who holds the verifier knows StoredKey and ServerKey, yet cannot make a proof without the ClientKey
    for key in (parsed.stored_key, parsed.server_key):
        ok, message = scram(served.port, "tax_analyst", client_key=key, stored_key=parsed.stored_key)
        assert not ok and "password authentication failed" in message
        clock.now += 16 * 60
    ok, message = scram(served.port, "nobody", password="x")  # an unknown user fails the same way, at the same step
    assert not ok and message == 'password authentication failed for user "nobody"'
    assert "failed sign-in for user 'tax_analyst' from 127.0.0.1 over postgres-wire" in caplog.text
    assert password not in caplog.text and "not-the-password" not in caplog.text


def test_channel_binding_flags(city, wire):
    _, password, _ = city
    served, _, _ = wire
    assert scram(served.port, "tax_analyst", password=password, gs2="n,,") == (True, "")
    assert scram(served.port, "tax_analyst", password=password, gs2="y,,") == (True, "")  # could bind; we don't offer
    ok, message = scram(served.port, "tax_analyst", password=password, gs2="p=tls-server-end-point,,")
    assert not ok and "channel binding is not supported" in message
    with pytest.raises(ProofRejected):  # the exchange, directly: a good first message, a forged proof
        ex = ServerExchange(Verifier.parse(make_verifier("pw")))
        nonce = ex.first(b"n,,n=,r=abc").decode().split(",")[0][2:]
        ex.final(f"c=biws,r={nonce},p={base64.b64encode(bytes(32)).decode()}".encode())


def test_the_wire_locks_a_user_after_repeated_failures_and_a_success_resets(city, wire):
    _, password, _ = city
    served, clock, slept = wire
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            served.connect("tax_analyst", "wrong")
    served.connect("tax_analyst", password).close()  # a success forgets those two
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            served.connect("tax_analyst", "wrong")
    with pytest.raises(psycopg.OperationalError, match="try again in 15 minutes"):
        served.connect("tax_analyst", "wrong")  # the third in a row: locked from now
    with pytest.raises(psycopg.OperationalError, match="too many failed sign-ins; try again in 15 minutes"):
        served.connect("tax_analyst", password)  # the right password too
    clock.now += 10 * 60
    with pytest.raises(psycopg.OperationalError, match="try again in 5 minutes"):
        served.connect("tax_analyst", password)
    clock.now += 5 * 60 + 1
    served.connect("tax_analyst", password).close()
    assert slept == [0.5, 1.0, 0.5, 1.0, 1.0]  # grows per failure, up to max_delay_seconds


def test_guard_locks_an_address_whatever_the_names():
    g, clock, _ = guard()
    for i in range(4):
        assert g.failed(f"user{i}", "10.0.0.9", "portal") is None
    assert isinstance(g.failed("user4", "10.0.0.9", "portal"), LockedOut)
    with pytest.raises(LockedOut):
        g.check("someone_else", "10.0.0.9")
    g.check("someone_else", "10.0.0.10")  # another address is fine
    clock.now += 16 * 60
    g.check("someone_else", "10.0.0.9")
    for _ in range(2):
        g.failed("a", "10.0.0.1", "wire")
    clock.now += 16 * 60  # failures older than the window no longer count
    assert g.failed("a", "10.0.0.1", "wire") is None


# --- a lake created before SCRAM -----------------------------------------------------------------------------
def test_an_older_lake_gains_the_column_and_its_md5_users_are_told_to_reset(tmp_path, monkeypatch, caplog):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    old = dict(ledger_module.TABLES, users="""user_name VARCHAR, department VARCHAR, role VARCHAR,
        password_scrypt VARCHAR, password_pg_md5 VARCHAR, token_sha256 VARCHAR, created_at TIMESTAMP,
        disabled_at TIMESTAMP""")
    with monkeypatch.context() as m:
        m.setattr(ledger_module, "TABLES", old)
        with Lake(settings.lake) as lake:
            md5 = "md5" + hashlib.md5(b"old-passwordlegacy").hexdigest()  # noqa: S324 - what the old code stored
            lake.con.execute(f"INSERT INTO {CATALOG}.{OPS}.users VALUES ('legacy', 'tax', 'analyst', 'scrypt$00$00', "
                             "?, 'x', now(), NULL)", [md5])
            assert "password_scram" not in lake.table_columns(OPS, "users")
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    served = Served(engine, guard()[0])
    caplog.set_level(logging.WARNING)
    try:
        # the server reads the older lake as it is (nobody wrote to it since)
        with pytest.raises(psycopg.OperationalError, match=r"must be reset.*onesource users reset legacy"):
            served.connect("legacy", "old-password")
        assert "user 'legacy' tried to sign in over postgres-wire with a password stored before SCRAM" in caplog.text
        with Lake(settings.lake) as lake:  # the next write adds the column; the old row reads NULL
            columns = lake.table_columns(OPS, "users")
            # every column added since that lake was made (password_scram, organisation, ...) is there
            assert list(columns)[8:] == [c for c, _ in ledger_module.column_specs(ledger_module.TABLES["users"])][8:]
            assert "password_scram" in columns and "password_pg_md5" in columns
            assert scram_verifier(lake, "legacy")[1] is None
        with pytest.raises(psycopg.OperationalError, match="must be reset"):
            served.connect("legacy", "old-password")
        from onesource import cli

        monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
        assert cli.main(["users", "reset", "legacy"]) == 0
        with Lake(settings.lake, read_only=True) as lake:
            row = lake.con.execute(f"SELECT password_pg_md5, password_scram, department, role FROM {CATALOG}.{OPS}.users "
                                   "WHERE user_name = 'legacy'").fetchone()
        assert row[0] is None and row[1].startswith("SCRAM-SHA-256$4096:") and row[2:] == ("tax", "analyst")
        assert cli.main(["users", "reset", "nobody"]) == 1
    finally:
        served.close()
        engine.close()


def test_reset_password_signs_in(tmp_path, capsys, monkeypatch):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        create_user(lake, "tax", "tax_analyst")
    from onesource import cli

    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert cli.main(["users", "reset", "tax_analyst"]) == 0
    password = re.search(r"password: (\S+)", capsys.readouterr().out).group(1)
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    served = Served(engine, guard()[0])
    try:
        served.connect("tax_analyst", password).close()
    finally:
        served.close()
        engine.close()


# --- the portal ------------------------------------------------------------------------------------------------
@pytest.fixture
def portal(city):
    engine, password, _ = city
    g, clock, slept = guard()
    with TestClient(create_app(engine, guard=g)) as client:
        yield client, password, clock, slept


def login(client, user: str, password: str, **headers):
    return client.post("/login", data={"username": user, "password": password, "next": "/console"},
                       headers=headers, follow_redirects=False)


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_portal_locks_a_user_after_repeated_failures_and_a_success_resets(portal):
    client, password, clock, slept = portal
    for _ in range(2):
        assert login(client, "tax_analyst", "wrong").status_code == 200
    assert login(client, "tax_analyst", password).status_code == 303
    client.cookies.clear()
    for _ in range(2):
        assert login(client, "tax_analyst", "wrong").status_code == 200
    third = login(client, "tax_analyst", "wrong")
    assert third.status_code == 429 and "15 分钟后再试" in third.text
    locked = client.post("/login?lang=en", data={"username": "tax_analyst", "password": password},
                         follow_redirects=False)
    assert locked.status_code == 429 and "Too many failed sign-ins; try again in 15 minutes" in locked.text
    assert SESSION_COOKIE not in client.cookies
    clock.now += 15 * 60 + 1
    assert login(client, "tax_analyst", password).status_code == 303
    assert slept == [0.5, 1.0, 0.5, 1.0, 1.0]


SESSION_COOKIE = "onesource_session"


def test_portal_posts_need_the_sessions_csrf_token_and_this_sites_origin(portal):
    client, password, _, _ = portal
    client.cookies.clear()
    here = {"Origin": "http://testserver"}
    # login CSRF: a foreign page may not sign the browser in (to an account of its choosing)
    assert login(client, "tax_analyst", password, Origin="https://evil.example").status_code == 403
    assert login(client, "tax_analyst", password, Origin="null").status_code == 403
    assert login(client, "tax_analyst", password, Referer="https://evil.example/x").status_code == 403
    assert login(client, "tax_analyst", password, **here).status_code == 303
    page = client.get("/console")
    token = token_of(page.text)
    assert page.text.count(f'name="csrf_token" value="{token}"') == 2  # the console's form and sign-out's
    query = {"sql": "SELECT 1", "purpose": "test"}
    assert client.post("/console", data=query).status_code == 403  # no token
    assert client.post("/console", data={**query, "csrf_token": "forged"}).status_code == 403
    foreign = client.post("/console", data={**query, "csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "cross-site" in foreign.text
    assert client.post("/console", data={**query, "csrf_token": token}, headers=here).status_code == 200
    assert client.post("/console", data=query, headers={"X-CSRF-Token": token, **here}).status_code == 200
    assert client.post("/catalogue/firms/request", data={"purpose": "x"}).status_code == 403
    # another session's token is no good: tokens are bound to their session
    other = TestClient(client.app)
    assert login(other, "tax_analyst", password).status_code == 303
    assert client.post("/console", data={**query, "csrf_token": token_of(other.get("/console").text)}).status_code == 403
    # the API (bearer tokens, which a browser does not send by itself) is not concerned
    assert client.post("/api/v1/query", json={"sql": "SELECT 1"}).status_code == 401
    # no session: nothing runs, sign in first
    client.cookies.clear()
    gone = client.post("/console", data={**query, "csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    # sign-out is a POST like the others
    assert login(client, "tax_analyst", password).status_code == 303
    assert client.post("/logout", follow_redirects=False).status_code == 403
    out = client.post("/logout", data={"csrf_token": token_of(client.get("/console").text)}, follow_redirects=False)
    assert out.status_code == 303 and client.get("/console", follow_redirects=False).status_code == 303


def test_every_post_form_of_the_portal_carries_the_token():
    from pathlib import Path

    import portal

    templates = Path(portal.__file__).parent / "templates"
    forms = 0
    for path in templates.glob("*.html"):
        for form in re.findall(r"<form[^>]*>.*?</form>", path.read_text(), flags=re.S):
            if 'method="post"' in form and 'action="/login"' not in form:
                forms += 1
                assert 'name="{{ csrf_field }}" value="{{ csrf }}"' in form, f"{path.name}: {form[:80]}"
    assert forms >= 9
