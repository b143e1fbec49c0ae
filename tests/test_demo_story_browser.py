"""Slow tier: the dashboard's trend charts show the city's climb, read from the page in a real headless
chromium (as tests/test_portal_browser.py drives it) served by a real `onesource serve`: the six
simulated months with the registry of each month, and this month after real loads. The sharing trend's
points rise from the baseline (~45%) to >= 90%, interconnection from < 50% to >= 80%, the duplicate-
collection trend falls with the registry; the enterprise annual report's prefill card shows what
metrics.prefill computes. A screenshot of the dashboard is kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from examples.changsha.history import publish_history, simulate
from examples.changsha.runner import _demo_users
from ingest import run_dataset
from lakehouse import Lake
from metrics.kpis import Period
from metrics.prefill import ANNUAL_REPORT, prefill_rates
from metrics.publish import publish_periods
from schemas import load_registry
from tests.helpers import free_port, wait_for_port
from tests.support.browser import CHROMIUM, SHOTS, browser, new_page, sign_in  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
LOADED = ("mca_admin_divisions", "amr_enterprise_register", "tax_taxpayer_register", "hrss_enterprise_insurance")
"""Real loads this month: the enterprise profile's sources, so the annual report's prefill is on the page."""


@pytest.fixture(scope="module")
def story_site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed (apt-get install chromium); .ci/run installs it")
    settings = Settings(home=tmp_path_factory.mktemp("story") / "home")
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in LOADED:
        [result] = run_dataset(settings, registry, name, os.environ)
        assert result.status == "published", result.message
    with Lake(settings.lake) as lake:
        periods = simulate(lake, registry, months=6, today=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2))
        history = publish_history(lake, registry, periods)
        [now] = publish_periods(lake, registry, [Period.month()])
        prefill, _ = prefill_rates(lake, registry)
    _demo_users(settings, registry)
    creds = json.loads((settings.home / "demo-credentials.json").read_text())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(port),
                             "--pg-port", str(free_port())], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}", creds, [*history, now], prefill
    proc.terminate()
    proc.wait(timeout=30)


def points(page, kpi: str) -> list[tuple[str, float]]:
    """(period, percent) of each point of a KPI's trend, as the page shows them (the circles' titles)."""
    panel = page.locator(f".grid .panel[data-kpi={kpi}]")
    # an SVG <title> is not rendered, so it has no inner text: read its text content
    titles = panel.locator("circle title").evaluate_all("els => els.map(e => e.textContent)")
    return [(m.group(1), float(m.group(2))) for m in (re.fullmatch(r"(\d{4}-\d\d): (\d+)%", t) for t in titles)]


def test_dashboard_trends_show_the_climb_from_the_baseline(story_site, browser):  # noqa: F811
    base, creds, results, prefill = story_site
    errors: list[str] = []
    page = new_page(browser, errors)
    sign_in(page, base, creds["dsj"])
    page.goto(f"{base}/dashboard?lang=en")
    page.screenshot(path=str(SHOTS / "dashboard-story.png"), full_page=True)
    expected = [r["period"] for r in results]
    sharing = points(page, "sharing_rate")
    connected = points(page, "interconnection_rate")
    duplicates = points(page, "duplicate_collection_rate")
    assert [p for p, _ in sharing] == [p for p, _ in connected] == [p for p, _ in duplicates] == expected
    # what the page shows is what metrics computed, month by month
    for kpi, shown in (("sharing_rate", sharing), ("interconnection_rate", connected),
                       ("duplicate_collection_rate", duplicates)):
        assert [v for _, v in shown] == [round(r["city"][kpi]["value"] * 100) for r in results], kpi
    history = len(results) - 1  # the simulated months; the last point is this month's (four real loads)
    assert 40 <= sharing[0][1] <= 50 and sharing[history - 1][1] >= 90, sharing
    assert [v for _, v in sharing[:history]] == sorted(v for _, v in sharing[:history])
    assert connected[0][1] < 50 and connected[history - 1][1] >= 80, connected
    assert duplicates[history - 1][1] < duplicates[0][1], duplicates
    # the annual report's prefill, with the fields enterprises no longer type
    card = page.locator("#prefill .card")
    assert prefill is not None and card.locator(".value").inner_text() == f"{prefill * 100:.1f}%"
    filled = int(card.get_attribute("data-filled"))
    enterprises = int(card.get_attribute("data-enterprises"))
    assert filled == round(prefill * enterprises * len(ANNUAL_REPORT))
    assert f"{filled:,} fields" in card.locator(".detail").inner_text()
    assert not errors, errors
