"""Database and HTTP API sources: incremental by watermark, clear errors when the source misbehaves."""

from __future__ import annotations

import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors import SourceUnavailableError
from examples.changsha.api import serve
from tests.helpers import USCC, firms_dataset, free_port, load, rows, write_registry

TICKET_COLUMNS = [
    {"name": "ticket_id", "source": "ticket_id", "type": "string", "required": True},
    {"name": "created_at", "source": "created_at", "type": "timestamp", "required": True},
    {"name": "summary", "source": "summary", "type": "string"},
]


def tickets(n, start=0):
    return [{"ticket_id": f"T{i:04d}", "created_at": f"2026-11-01 {8 + i // 60:02d}:{i % 60:02d}:00",
             "summary": f"第{i}号工单"} for i in range(start, start + n)]


def api_dataset(url, **extra):
    return firms_dataset(name="tickets", key=["ticket_id"], load_mode="upsert", columns=TICKET_COLUMNS,
                         connector={"kind": "http", "url": url, "page_size": 7, "watermark": "created_at",
                                    "since_param": "since", **extra})


def test_paginated_api_incremental(settings, tmp_path):
    import json

    data = tmp_path / "tickets.json"
    data.write_text(json.dumps(tickets(30), ensure_ascii=False), encoding="utf-8")
    port = free_port()
    write_registry(settings.registry_dir, [firms_dataset(), api_dataset(f"http://127.0.0.1:{port}/api/v1/tickets")])
    server = serve(data, port=port)
    try:
        [first] = load(settings, "tickets")
        assert (first.status, first.rows) == ("published", 30), first.message  # 5 pages of 7
        assert [r.status for r in load(settings, "tickets")] == ["unchanged"]
    finally:
        server.shutdown()
        server.server_close()
    data.write_text(json.dumps(tickets(45), ensure_ascii=False), encoding="utf-8")
    server = serve(data, port=port)
    try:
        [second] = load(settings, "tickets")
    finally:
        server.shutdown()
        server.server_close()
    assert (second.status, second.rows) == ("published", 15)  # only tickets after the watermark
    assert rows(settings, "SELECT count(*), count(DISTINCT ticket_id) FROM shared.tickets") == [(45, 45)]
    assert rows(settings, "SELECT watermark FROM ops.loads ORDER BY finished_at") == [
        ("2026-11-01 08:29:00",), ("2026-11-01 08:44:00",)]


def test_api_token_comes_from_the_environment_and_never_shows(settings, tmp_path):
    """The bearer token is named in the registry by variable only; a wrong one gets the API's 401 as a
    clear error that does not repeat it, the right one loads."""
    import json

    data = tmp_path / "tickets.json"
    data.write_text(json.dumps(tickets(3), ensure_ascii=False), encoding="utf-8")
    port = free_port()
    write_registry(settings.registry_dir, [firms_dataset(), api_dataset(f"http://127.0.0.1:{port}/api/v1/tickets",
                                                                        token_env="HOTLINE_TOKEN")])
    assert "s3cr3t" not in "".join(p.read_text() for p in settings.registry_dir.rglob("*.yaml"))
    server = serve(data, port=port, token="s3cr3t-right")
    try:
        [refused] = load(settings, "tickets", environ={"HOTLINE_TOKEN": "s3cr3t-wrong"})
        assert refused.status == "failed" and "401" in refused.message and "token" in refused.message
        assert "s3cr3t" not in refused.message
        [loaded] = load(settings, "tickets", environ={"HOTLINE_TOKEN": "s3cr3t-right"})
        assert (loaded.status, loaded.rows) == ("published", 3)
    finally:
        server.shutdown()
        server.server_close()
    assert "s3cr3t" not in str(rows(settings, "SELECT * FROM ops.loads"))


class _Stub(BaseHTTPRequestHandler):
    body, status, delay, ctype = b"", 200, 0.0, "text/html"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Type", self.ctype)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def stub_server(**attrs):
    handler = type("Handler", (_Stub,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/api/v1/tickets"


def test_api_returning_html_is_a_clear_terminal_error(settings):
    server, url = stub_server(body="<html><body>登录</body></html>".encode())
    try:
        write_registry(settings.registry_dir, [firms_dataset(), api_dataset(url)])
        [result] = load(settings, "tickets")
    finally:
        server.shutdown()
    assert result.status == "failed"
    assert f"endpoint {url} page 1 did not return JSON (text/html)" in result.message
    assert rows(settings, "SELECT status, error_stage FROM ops.loads") == [("failed", "extract")]


def test_api_timeout_is_transient_and_recorded(settings):
    server, url = stub_server(body=b"{}", delay=2.0, ctype="application/json")
    try:
        write_registry(settings.registry_dir, [firms_dataset(), api_dataset(url, timeout=0.3)])
        with pytest.raises(SourceUnavailableError, match="timed out"):
            load(settings, "tickets")
    finally:
        server.shutdown()
    assert rows(settings, "SELECT status, error_stage FROM ops.loads") == [("failed", "extract")]


def test_api_5xx_is_transient(settings):
    server, url = stub_server(body=b"oops", status=503)
    try:
        write_registry(settings.registry_dir, [firms_dataset(), api_dataset(url)])
        with pytest.raises(SourceUnavailableError, match="HTTP 503"):
            load(settings, "tickets")
    finally:
        server.shutdown()


def sqlite_dataset(**extra):
    return firms_dataset(
        name="insured", key=["uscc"], load_mode="upsert",
        columns=[{"name": "uscc", "source": "aab998", "element": "uscc", "required": True},
                 {"name": "enterprise_name", "source": "aab004", "element": "enterprise_name"},
                 {"name": "updated_at", "source": "aae036", "type": "timestamp"}],
        connector={"kind": "database", "driver": "sqlite", "dsn": "hrss/hrss.sqlite", "table": "ab01",
                   "watermark": "aae036", **extra})


def test_sqlite_source_incremental_upsert(settings):
    db_path = settings.sources_dir / "hrss" / "hrss.sqlite"
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE ab01 (aab998 TEXT, aab004 TEXT, aae036 TEXT)")
        db.executemany("INSERT INTO ab01 VALUES (?, ?, ?)", [(USCC[0], "甲公司", "2026-11-01 10:00:00"),
                                                            (USCC[1], "乙公司", "2026-11-01 11:00:00")])
    write_registry(settings.registry_dir, [firms_dataset(), sqlite_dataset()])
    assert [(r.status, r.rows) for r in load(settings, "insured")] == [("published", 2)]
    assert [r.status for r in load(settings, "insured")] == ["unchanged"]
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE ab01 SET aab004 = '乙公司（更名）', aae036 = '2026-11-02 09:00:00' WHERE aab998 = ?", [USCC[1]])
        db.execute("INSERT INTO ab01 VALUES (?, '丙公司', '2026-11-02 09:30:00')", [USCC[2]])
    assert [(r.status, r.rows) for r in load(settings, "insured")] == [("published", 2)]
    assert rows(settings, "SELECT uscc, enterprise_name FROM shared.insured ORDER BY uscc") == sorted(
        [(USCC[0], "甲公司"), (USCC[1], "乙公司（更名）"), (USCC[2], "丙公司")])


def test_database_dsn_takes_secrets_from_the_environment(settings, monkeypatch):
    write_registry(settings.registry_dir, [firms_dataset(), sqlite_dataset(dsn="${HRSS_DB_PATH}")])
    [result] = load(settings, "insured")
    assert result.status == "failed" and "HRSS_DB_PATH" in result.message and "not set" in result.message
