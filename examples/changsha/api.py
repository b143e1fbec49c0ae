"""The 12345 hotline's ticket API, as the demo city's department system serves it.

``GET /api/v1/tickets?page=1&page_size=200&since=2026-10-02 08:00:00`` returns
``{"items": [...], "page": 1, "page_size": 200, "total": N}``, tickets ordered by ``created_at``.
Like a real department API it wants a bearer token (``Authorization: Bearer ...``) when started with
one; the connector takes it from the environment variable the registry names (``token_env``).
Run it with ``python -m examples.changsha.api --data tickets.json --port 18345 [--token-env VAR]``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

MAX_PAGE_SIZE = 1000


TOKEN_ENV = "ONESOURCE_HOTLINE_TOKEN"
"""The environment variable the demo registry's hotline connector reads its token from."""


def make_handler(tickets: list[dict], token: str | None = None) -> type[BaseHTTPRequestHandler]:
    ordered = sorted(tickets, key=lambda t: t["created_at"])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # keep the demo's output clean
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path == "/health":
                return self._send(200, {"status": "ok", "service": "onesource-demo-hotline"})
            if url.path != "/api/v1/tickets":
                return self._send(404, {"error": "not found"})
            if token and not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {token}"):
                return self._send(401, {"error": "a valid bearer token is required"})
            query = parse_qs(url.query)
            try:
                page = max(1, int(query.get("page", ["1"])[0]))
                size = min(MAX_PAGE_SIZE, max(1, int(query.get("page_size", ["100"])[0])))
            except ValueError:
                return self._send(400, {"error": "page and page_size are integers"})
            since = query.get("since", [None])[0]
            rows = [t for t in ordered if since is None or t["created_at"] > since]
            items = rows[(page - 1) * size: page * size]
            return self._send(200, {"items": items, "page": page, "page_size": size, "total": len(rows)})

    return Handler


def serve(data: Path, host: str = "127.0.0.1", port: int = 18345, token: str | None = None) -> ThreadingHTTPServer:
    """Start the API in a background thread; ``server.shutdown()`` stops it."""
    tickets = json.loads(Path(data).read_text(encoding="utf-8"))
    server = ThreadingHTTPServer((host, port), make_handler(tickets, token))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18345)
    parser.add_argument("--token-env", help="require the bearer token held by this environment variable")
    args = parser.parse_args()
    tickets = json.loads(args.data.read_text(encoding="utf-8"))
    token = os.environ[args.token_env] if args.token_env else None
    ThreadingHTTPServer((args.host, args.port), make_handler(tickets, token)).serve_forever()


if __name__ == "__main__":
    main()
