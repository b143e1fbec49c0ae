"""The portal in Debian's chromium driven by Playwright: the browser, its pages, signing in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ONESOURCE_SCREENSHOTS", "/tmp/onesource-screenshots"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def new_page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    return page


def sign_in(page, base: str, who: dict) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/login")
    page.fill("input[name=username]", who["user"])
    page.fill("input[name=password]", who["password"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
