"""The misuse corpus: what a newcomer gets wrong, run through the real `onesource` command and the real servers.

For every case: a non-zero exit, one paragraph that names what is wrong and how to fix it, no Python
traceback (in the output, nor in a server's log), no parser internals (sqlglot's class names); and
`onesource --debug` does show the traceback behind the message. SQL that cannot be parsed is the sender's
mistake (HTTP 400, SQLSTATE 42601), kept apart from a refusal by policy (HTTP 403, SQLSTATE 42501) on every
way in: the CLI, HTTP and the Postgres wire.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlglot
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import Lake
from schemas import load_registry
from tests.helpers import csv_text, drop, firms_dataset, free_port, load, wait_for_port, write_registry

ONESOURCE = str(Path(sys.executable).with_name("onesource"))
INTERNALS = ("Traceback", "sqlglot", "<class", "TokenType", "ParseError", "TokenError", "Error tokenizing")
"""Words a user's error message must never hold: a traceback, or the SQL parser's Python."""
CONDITIONAL = firms_dataset(share_type="conditional", conditions="tax audits of registered firms")


def make_home(root: Path) -> Settings:
    """A home with one conditional dataset (firms, owned by amr) loaded once: grants and time travel apply."""
    settings = Settings(home=root / "home")
    write_registry(settings.registry_dir, [CONDITIONAL])
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    return settings


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    return make_home(tmp_path_factory.mktemp("misuse"))


def run(settings: Settings | None, *args: str, env: dict[str, str] | None = None, home: str | None = None,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "ONESOURCE_DEBUG"}
    environ.update({"COLUMNS": "200", **(env or {})})
    environ["ONESOURCE_HOME"] = home or str(settings.home)
    return subprocess.run([*prefix, ONESOURCE, *args], capture_output=True, text=True, env=environ, timeout=120,
                          cwd=environ["ONESOURCE_HOME"] if Path(environ["ONESOURCE_HOME"]).is_dir() else None)


def assert_clean_refusal(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A non-zero exit, one paragraph holding every fragment (what is wrong, how to fix it), nothing internal."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for word in INTERNALS:
        assert word not in out, out
    message = proc.stderr.strip()
    assert message, f"no message on stderr: {out}"
    # one paragraph: argparse prints its usage first, then one error line; ours is a single error line
    paragraph = message.split("\n\n")[-1]
    last = paragraph.splitlines()[-1] if "usage:" in paragraph else paragraph
    assert "\n\n" not in last and len(last) < 1200, message
    for fragment in fragments:
        assert fragment.lower() in last.lower(), f"{fragment!r} not in: {last}"
    return last


# (id, arguments, fragments the one paragraph must hold: the thing named, and the way out)
CASES = [
    ("unknown-dataset-ingest", ["ingest", "nosuch"], ["nosuch", "known", "firms"]),
    ("unknown-dataset-quality", ["quality", "report", "nosuch"], ["nosuch", "known", "firms"]),
    ("no-dataset-named", ["ingest"], ["name one or more datasets", "--all"]),
    ("unknown-department-sql", ["sql", "SELECT 1", "--as", "nosuch"], ["nosuch", "known", "amr, tax"]),
    ("a-user-name-for-a-department", ["sql", "SELECT 1", "--as", "tax_analyst"], ["tax_analyst", "amr, tax"]),
    ("unknown-department-metrics", ["metrics", "--department", "nosuch"], ["nosuch", "known"]),
    ("unknown-department-grant", ["grants", "add", "--department", "nosuch", "--dataset", "firms"],
     ["nosuch", "known"]),
    ("unknown-dataset-grant", ["grants", "add", "--department", "tax", "--dataset", "nosuch"], ["nosuch", "known"]),
    ("unknown-column-grant", ["grants", "add", "--department", "tax", "--dataset", "firms", "--columns", "nosuch"],
     ["nosuch"]),
    ("bad-format", ["sql", "SELECT 1", "--format", "xml"], ["--format", "xml", "choose from"]),
    ("unknown-command", ["nosuch"], ["nosuch", "choose from"]),
    ("as-of-not-a-time", ["sql", "SELECT 1", "--as-of", "yesterday"], ["yesterday", "iso date"]),
    ("as-of-before-the-first-snapshot", ["sql", "SELECT 1", "--as-of", "2000-01-01"],
     ["no snapshot at 2000-01-01", "--as-of", "snapshots 0"]),
    ("as-of-past-the-last-snapshot", ["sql", "SELECT 1", "--as-of", "99999"], ["no snapshot 99999", "--as-of"]),
    ("as-of-before-the-first-snapshot-governed", ["sql", "SELECT 1", "--as", "tax", "--as-of", "2000-01-01"],
     ["no snapshot at 2000-01-01", "--as-of"]),
    ("as-of-before-the-table", ["sql", "SELECT count(*) FROM shared.firms", "--as-of", "1"],
     ["firms", "later time"]),
    ("malformed-sql", ["sql", "SELECT 1 +"], ["cannot be parsed", "line 1, column 10", "correct the sql"]),
    ("malformed-sql-governed", ["sql", "SELECT * FROM shared.firms WHERE", "--as", "amr"],
     ["cannot be parsed", "where", "correct the sql"]),
    ("unclosed-string", ["sql", "SELECT 'abc", "--as", "tax"], ["cannot be parsed", "not closed"]),
    ("unclosed-string-operator", ["sql", "SELECT 'abc"], ["cannot be parsed", "not closed"]),
    ("empty-query", ["sql", " "], ["empty"]),
    ("empty-query-governed", ["sql", "", "--as", "tax"], ["empty"]),
    ("unknown-table", ["sql", "SELECT * FROM shared.nosuch"], ["nosuch", "registry list"]),
    ("ungranted-table", ["sql", "SELECT * FROM shared.firms", "--as", "tax"], ["not granted to tax",
                                                                              "requests create"]),
    ("output-folder-missing", ["sql", "SELECT 1", "--output", "/nonexistent-folder/x.csv"],
     ["/nonexistent-folder", "does not exist"]),
    ("row-filter-unparsable", ["grants", "add", "--department", "tax", "--dataset", "firms", "--row-filter",
                               "staff >"], ["row filter", "cannot be parsed", "condition"]),
    ("row-filter-wrong-type", ["grants", "add", "--department", "tax", "--dataset", "firms", "--row-filter",
                               "founded > 5"], ["row filter", "cannot be applied", "founded DATE"]),
    ("row-filter-bad-literal", ["grants", "add", "--department", "tax", "--dataset", "firms", "--row-filter",
                                "staff = 'many'"], ["row filter", "cannot be applied", "staff BIGINT"]),
    ("row-filter-not-a-condition", ["grants", "add", "--department", "tax", "--dataset", "firms", "--row-filter",
                                    "staff"], ["row filter", "not a condition"]),
    ("row-filter-unknown-column", ["grants", "add", "--department", "tax", "--dataset", "firms", "--row-filter",
                                   "district = 'x'"], ["district", "its columns"]),
    ("request-row-filter-wrong-type", ["requests", "create", "--department", "tax", "--dataset", "firms",
                                       "--purpose", "audit", "--row-filter", "founded > 5"],
     ["row filter", "cannot be applied"]),
    ("grant-expires-not-a-time", ["grants", "add", "--department", "tax", "--dataset", "firms", "--expires",
                                  "tomorrow"], ["tomorrow", "iso date"]),
    ("revoke-unknown-grant", ["grants", "revoke", "--grant-id", "nosuch"], ["nosuch", "grants list"]),
    ("revoke-no-grant-named", ["grants", "revoke"], ["--grant-id", "grants list"]),
    ("approve-unknown-request", ["requests", "approve", "--request-id", "nosuch", "--owner", "amr"],
     ["nosuch", "requests list"]),
    ("metrics-period-not-a-month", ["metrics", "--period", "2026-13"], ["2026-13", "yyyy-mm"]),
    ("metrics-as-of-not-a-time", ["metrics", "--as-of", "nonsense"], ["nonsense", "iso date"]),
]


@pytest.mark.parametrize(("args", "fragments"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_a_misuse_gets_one_paragraph_and_a_non_zero_exit(home, args, fragments):
    assert_clean_refusal(run(home, *args), *fragments)


def test_a_missing_home_is_named_with_onesource_home(tmp_path):
    gone = tmp_path / "nohome"
    assert_clean_refusal(run(None, "sql", "SELECT 1", home=str(gone)), str(gone), "ONESOURCE_HOME")
    assert not gone.exists(), "a command must not make an empty home where none was"


def test_a_restore_from_nowhere_makes_no_home(tmp_path):
    target = tmp_path / "newhome"
    assert_clean_refusal(run(None, "restore", str(tmp_path / "nosuch-backup"), "--home", str(target),
                             home=str(tmp_path / "other")), "nosuch-backup")
    assert not target.exists() and not (tmp_path / "other").exists()


def test_a_home_without_its_registry_folder(tmp_path):
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir(mode=0o700)
    assert_clean_refusal(run(settings, "ingest", "--all"), "registry folder not found", "ONESOURCE_HOME")


def test_a_registry_file_with_a_yaml_mistake(tmp_path):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir, [CONDITIONAL])
    broken = settings.registry_dir / "datasets" / "amr" / "firms.yaml"
    broken.write_text(broken.read_text(encoding="utf-8") + "name: [firms\n", encoding="utf-8")
    assert_clean_refusal(run(settings, "ingest", "firms"), "firms.yaml", "registry check")


def test_an_approval_with_a_row_filter_that_cannot_apply_is_refused(home):
    """The owner narrows a request with a filter DuckDB cannot apply to the columns: refused at the approval,
    with the reason, and the request stays pending (nothing was granted)."""
    import re

    created = run(home, "requests", "create", "--department", "tax", "--dataset", "firms", "--purpose", "audit")
    assert created.returncode == 0, created.stderr
    request_id = re.search(r"request (\w+): pending", created.stdout).group(1)
    assert_clean_refusal(run(home, "requests", "approve", "--request-id", request_id, "--owner", "amr",
                             "--row-filter", "founded > 5"), "row filter", "cannot be applied", "founded DATE")
    with Lake(home.lake, read_only=True) as lake:
        assert lake.con.execute("SELECT status FROM lake.ops.access_requests WHERE request_id = ?",
                                [request_id]).fetchone()[0] == "pending"


def test_an_extract_of_no_known_format_names_the_file_and_the_setting(tmp_path):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir, [firms_dataset(connector={"kind": "file", "path": "amr/firms/*"})])
    drop(settings, "amr/firms/firms.dat", csv_text())
    proc = run(settings, "ingest", "firms")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not any(w in out for w in INTERNALS), out
    assert "firms.dat" in out and "set 'format'" in out, out


def test_a_stored_row_filter_that_cannot_apply_refuses_naming_the_grant(tmp_path):
    """A grant written before filters were checked (or edited in the lake): every later query through it is
    refused with the grant and the remedy, never DuckDB's (or sqlglot's) error about SQL nobody sent."""
    from sharing.grants import add_grant

    settings = make_home(tmp_path)
    registry = load_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        grant_id = add_grant(lake, registry, "tax", "firms", row_filter="staff > 1")
    for stored, fragments in ((""""staff" >""", ["cannot be parsed", grant_id, "revoke"]),
                              ('"founded" > 5', ["founded", "cannot be applied", "revoke", "grants list"]),
                              (""""staff" = 'many'""", ["staff", "cannot be applied", "revoke"])):
        with Lake(settings.lake) as lake:
            lake.con.execute("UPDATE lake.ops.grants SET row_filter = ? WHERE grant_id = ?", [stored, grant_id])
        for _ in range(2):  # and again: the same refusal on every later query
            assert_clean_refusal(run(settings, "sql", "SELECT count(*) FROM shared.firms", "--as", "tax"),
                                 "shared.firms", "row filter", *fragments)


@pytest.mark.parametrize("args", [["--debug", "sql", "SELECT 1", "--as-of", "99999"],
                                  ["--debug", "ingest", "nosuch"],
                                  ["--debug", "sql", "SELECT 1 +", "--as", "tax"]])
def test_debug_shows_the_traceback_behind_the_message(home, args):
    proc = run(home, *args)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr  # the message still ends it


def test_onesource_debug_1_is_the_same_switch(home):
    proc = run(home, "ingest", "nosuch", env={"ONESOURCE_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_ok(), reason="a read-only mount needs a private mount namespace (unshare -m)")
@pytest.mark.parametrize("args", [["demo", "--scale", "0.01"], ["ingest", "firms"]])
def test_a_read_only_home_names_the_path_and_onesource_home(home, tmp_path, args):
    """EROFS: the home on a read-only file system (a mount made in a private namespace, so only the command
    sees it). The demo writes into a fresh home; ingest into the module's loaded one."""
    target = tmp_path / "ro"
    target.mkdir(mode=0o700)
    source = str(home.home) if args[0] == "ingest" else "tmpfs"
    mount = (f"mount --bind -o ro {source} {target}" if source != "tmpfs"
             else f"mount -t tmpfs -o ro,mode=0700 tmpfs {target}")
    if args[0] == "ingest":  # a new delivery, so that ingest has something to write
        drop(home, "amr/firms/b.csv", csv_text().replace("杭州甲", "杭州丁"))
    proc = run(None, *args, home=str(target), prefix=("unshare", "-m", "sh", "-c", f'{mount} && exec "$0" "$@"'))
    if args[0] == "ingest":
        (home.sources_dir / "amr/firms/b.csv").unlink()
    assert_clean_refusal(proc, str(target), "read-only", "ONESOURCE_HOME")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="an unreadable file needs another user to run as (root, with setpriv)")
def test_an_unreadable_extract_names_the_file_and_the_owner_to_fix():
    """A department drops an extract the platform's user cannot read (another owner, mode 0600): the command,
    run as an unprivileged user over its own home, names the file and the fix."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="misuse-unreadable-", dir="/tmp"))
    try:
        root.chmod(0o755)
        settings = Settings(home=root / "home")
        write_registry(settings.registry_dir, [CONDITIONAL])
        extract = drop(settings, "amr/firms/a.csv", csv_text())
        (root / "config").mkdir()
        subprocess.run(["chown", "-R", "65534:65534", str(root / "home"), str(root / "config")], check=True)
        os.chown(extract, 0, 0)
        extract.chmod(0o600)
        proc = run(settings, "ingest", "firms", env={"XDG_CONFIG_HOME": str(root / "config"), "HOME": str(root)},
                   prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
        assert_clean_refusal(proc, str(extract), "permission denied", "chown -R", "ONESOURCE_HOME")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- servers: busy ports, probes, and malformed SQL over HTTP and the Postgres wire ------------------------------

def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("flag", ["--pg-port", "--http-port"])
def test_serve_names_a_busy_port_and_the_flag_before_announcing(home, flag):
    busy = _listening()
    try:
        port = busy.getsockname()[1]
        other = "--http-port" if flag == "--pg-port" else "--pg-port"
        proc = run(home, "serve", flag, str(port), other, str(free_port()))
        assert_clean_refusal(proc, f"port {port}", "already in use", f"{flag} N")
        assert "psql" not in proc.stdout and "http://" not in proc.stdout, "announced a server that never served"
        debug = run(home, "--debug", "serve", flag, str(port), other, str(free_port()))
        assert debug.returncode != 0 and "Traceback" in debug.stderr
    finally:
        busy.close()


def test_serve_names_a_host_it_cannot_listen_on(home):
    assert_clean_refusal(run(home, "serve", "--host", "no-such-host.invalid", "--http-port", str(free_port())),
                         "no-such-host.invalid", "--host")


@pytest.fixture(scope="module")
def inprocess(home):
    """The HTTP app (TestClient) and the Postgres-wire server, in this process, on the module's home."""
    from fastapi.testclient import TestClient

    from onesource.serve import create_app
    from sharing.engine import GovernedEngine
    from sharing.grants import add_grant
    from sharing.pgwire import GovernedPgServer
    from sharing.users import create_user

    registry = load_registry(home.registry_dir)
    with Lake(home.lake) as lake:
        password, token = create_user(lake, "tax", "misuse_tax")
        amr_password, _ = create_user(lake, "amr", "misuse_amr")
        add_grant(lake, registry, "amr", "firms")  # the owner reads it anyway; tax has no grant: refusals
    engine = GovernedEngine(home, registry, persistent=True)
    server = GovernedPgServer(("127.0.0.1", free_port()), engine)
    crashed: list = []
    server.handle_error = lambda request, address: crashed.append(sys.exc_info()[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with TestClient(create_app(engine)) as client:
        yield {"client": client, "token": token, "port": server.server_address[1], "password": password,
               "amr_password": amr_password, "crashed": crashed}
    server.shutdown()
    server.server_close()
    engine.close()


def _unparsable(sql: str, dialect: str = "postgres") -> bool:
    try:
        return not [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return True


def test_http_answers_400_to_malformed_sql_and_403_to_a_refusal(inprocess):
    client, auth = inprocess["client"], {"Authorization": f"Bearer {inprocess['token']}"}
    bad = client.post("/api/v1/query", json={"sql": "SELECT * FROM shared.firms WHERE"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid", bad.text
    assert "cannot be parsed" in bad.json()["reason"] and not any(w in bad.text for w in INTERNALS)
    refused = client.post("/api/v1/query", json={"sql": "SELECT * FROM shared.firms"}, headers=auth)
    assert refused.status_code == 403 and refused.json()["error"] == "refused", refused.text
    assert "not granted to tax" in refused.json()["reason"]


def _wire(inprocess, user: str = "misuse_tax", password: str | None = None):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=inprocess["port"], dbname="onesource", user=user,
                           password=password or inprocess["password"], autocommit=True, connect_timeout=10)


def test_the_wire_answers_42601_to_malformed_sql_and_42501_to_a_refusal(inprocess):
    import psycopg

    with _wire(inprocess) as conn:
        with pytest.raises(psycopg.Error) as bad:
            conn.execute("SELECT * FROM shared.firms WHERE")
        assert bad.value.sqlstate == "42601" and "cannot be parsed" in str(bad.value)
        assert not any(w in str(bad.value) for w in INTERNALS)
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT * FROM shared.firms")
        assert refused.value.sqlstate == "42501" and "not granted to tax" in str(refused.value)


SQL_WORDS = ["SELECT", "FROM", "WHERE", "shared.firms", "firms", "(", ")", ",", "+", "*", "'", '"', "1", "'a'",
             "=", ">", "AND", "OR", "NOT", "GROUP BY", "ORDER BY", "LIMIT", "CAST", "AS", "INT", "staff", "uscc",
             "CASE", "WHEN", "THEN", "END", "JOIN", "ON", "IN", "BETWEEN", "::", "[", "]", "/*", "--", "$$", ";", "E'"]
MALFORMED = st.one_of(
    st.lists(st.sampled_from(SQL_WORDS), min_size=1, max_size=14).map(" ".join),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=60),
    st.tuples(st.sampled_from(["SELECT uscc FROM shared.firms WHERE staff > 1",
                               "SELECT count(*) FROM shared.firms GROUP BY staff ORDER BY 1"]),
              st.integers(1, 40)).map(lambda t: t[0][:t[1]]),  # a good query cut short
)


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=MALFORMED)
def test_generated_sql_over_http_is_never_a_500_nor_python(inprocess, sql):
    client = inprocess["client"]
    for token in (inprocess["token"],):
        answer = client.post("/api/v1/query", json={"sql": sql}, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code in (200, 400, 403), (sql, answer.status_code, answer.text)
        if answer.status_code != 200:
            reason = answer.json()["reason"]
            assert not any(w in reason for w in INTERNALS), (sql, reason)
            assert "internal error" not in reason, (sql, reason)
        if _unparsable(sql):
            assert answer.status_code == 400 and answer.json()["error"] == "invalid", (sql, answer.text)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=MALFORMED.filter(lambda s: s.strip(" ;") != "" and "%" not in s))
@example(sql="/;A")  # found on CI's run: a bare word, an expression and no statement, was refused as 42501
@example(sql="shared.firms staff ; * NOT THEN uscc SELECT AS GROUP BY")  # an aliased expression, refused as 42501 before
def test_generated_sql_over_the_wire_is_never_internal(inprocess, sql):
    import psycopg

    with _wire(inprocess) as conn:
        try:
            conn.execute(sql.encode("utf-8", "replace"))
        except psycopg.Error as exc:
            text = str(exc)
            assert exc.sqlstate not in (None, "XX000"), (sql, exc.sqlstate, text)
            assert not any(w in text for w in INTERNALS), (sql, text)
            if _unparsable(sql) and exc.sqlstate != "0A000":
                assert exc.sqlstate == "42601", (sql, exc.sqlstate, text)
    assert not inprocess["crashed"]


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=MALFORMED.filter(lambda s: _unparsable(s, "duckdb") and not s.startswith("-")))
def test_generated_malformed_sql_in_the_cli_is_one_paragraph(home, sql):
    message = assert_clean_refusal(run(home, "sql", sql))
    assert "cannot be parsed" in message or "the query is empty" in message, message


# --- the real `onesource serve`: probes and mistakes leave no traceback in its log --------------------------------

@pytest.mark.slow
def test_the_real_servers_log_no_traceback_for_probes_and_mistakes(home, inprocess, tmp_path):
    import httpx
    import psycopg

    http_port, pg_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    environ = {**os.environ, "ONESOURCE_HOME": str(home.home)}
    with log.open("w") as out:
        proc = subprocess.Popen([ONESOURCE, "serve", "--http-port", str(http_port), "--pg-port", str(pg_port)],
                                env=environ, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(pg_port, proc, seconds=60)
        wait_for_port(http_port, proc, seconds=60)
        lines_before = log.read_text().count("\n")
        for _ in range(10):  # a TCP health probe: connect, then close without a word
            socket.create_connection(("127.0.0.1", pg_port), timeout=5).close()
        for _ in range(5):  # a probe that resets the connection, and one that sends half a startup packet
            s = socket.create_connection(("127.0.0.1", pg_port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            s = socket.create_connection(("127.0.0.1", pg_port), timeout=5)
            s.sendall(b"\x00\x00")
            s.close()
        socket.create_connection(("127.0.0.1", http_port), timeout=5).close()
        base = f"http://127.0.0.1:{http_port}"
        auth = {"Authorization": f"Bearer {inprocess['token']}"}
        bad = httpx.post(f"{base}/api/v1/query", json={"sql": "SELECT 'unclosed"}, headers=auth, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid", bad.text
        refused = httpx.post(f"{base}/api/v1/query", json={"sql": "SELECT * FROM shared.firms"}, headers=auth,
                             timeout=30)
        assert refused.status_code == 403, refused.text
        with psycopg.connect(host="127.0.0.1", port=pg_port, dbname="onesource", user="misuse_tax",
                             password=inprocess["password"], autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as exc:
                conn.execute("SELECT 1 +")
            assert exc.value.sqlstate == "42601"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=pg_port, dbname="onesource", user="misuse_tax",
                            password="wrong", connect_timeout=10).close()
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("\n") - lines_before <= 21, text  # at most one quiet line a probe (and the sign-in)
