"""Signing in to the portal in-process (FastAPI's test client), with the session's CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def sign_in(client, creds) -> None:
    """Sign in, then send the session's CSRF token (as every page's forms do) with each later request."""
    client.cookies.clear()
    client.headers.pop("X-CSRF-Token", None)
    r = client.post("/login", data={"username": creds["user"], "password": creds["password"], "next": "/catalogue"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/catalogue"
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/console").text)


def csrf_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def signed_in(app, who: dict) -> TestClient:
    client = TestClient(app)
    r = client.post("/login", data={"username": who["user"], "password": who["password"], "next": "/console"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    client.headers["X-CSRF-Token"] = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console").text).group(1)
    return client
