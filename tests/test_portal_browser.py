"""Slow tier: the portal in a real headless browser (Debian's chromium driven by Playwright), served by a
real `onesource serve` over a lake with months of simulated history and the real pipeline's loads.

* an analyst finds a dataset, requests it; the owner approves it; the analyst queries it in the console
  and downloads the result; a refused request shows its reason to the requester;
* the bureau's dashboard: KPI cards and trends, drill-down, the duplicate matrix, XLSX export.
Screenshots of every step, and no console errors on any page."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from examples.changsha.history import simulate
from examples.changsha.runner import _demo_users
from ingest import run_dataset
from lakehouse import Lake
from metrics.kpis import Period
from metrics.publish import publish_periods
from schemas import load_registry
from tests.helpers import free_port, wait_for_port
from tests.support.browser import CHROMIUM, SHOTS, browser, new_page, sign_in  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed (apt-get install chromium); .ci/run installs it")
    settings = Settings(home=tmp_path_factory.mktemp("dash") / "home")
    generate_city(settings, DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none"))
    registry = load_registry(settings.registry_dir)
    for name in ("mca_admin_divisions", "amr_enterprise_register", "tax_taxpayer_register", "psb_resident_register"):
        run_dataset(settings, registry, name, os.environ)
    with Lake(settings.lake) as lake:
        # history ends two days ago, so a daily dataset the test did not load is overdue at any hour
        # (ending today, a run just after midnight found urban's last simulated load still fresh)
        periods = simulate(lake, registry, months=4, today=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2))
        publish_periods(lake, registry, [*periods, Period.month()])
    _demo_users(settings, registry)
    creds = json.loads((settings.home / "demo-credentials.json").read_text())
    creds["owners"] = json.loads((settings.home / "demo-owner-credentials.json").read_text())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(port),
                             "--pg-port", str(free_port())], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}", creds, periods
    proc.terminate()
    proc.wait(timeout=30)


def test_request_approve_query_and_download_in_the_browser(site, browser, tmp_path):  # noqa: F811 (the fixture imported above)
    base, creds, _ = site
    errors: list[str] = []
    page = new_page(browser, errors)
    sign_in(page, base, creds["tax"])
    # find the dataset: search the catalogue, open its page
    page.click("nav a[href='/catalogue']")
    page.fill("#search input[name=q]", "户籍")
    page.click("#search button[type=submit]")
    page.click("#datasets a[href='/catalogue/psb_resident_register']")
    assert "敏感（脱敏）" in page.locator("#columns").inner_text()
    page.screenshot(path=str(SHOTS / "portal-dataset.png"), full_page=True)
    # request it: purpose, two columns only
    page.fill("#request-form input[name=purpose]", "税务稽查：纳税人身份核验")
    for name in ("person_name", "gender", "birth_date", "household_address"):
        box = page.locator(f"#request-form input[name=columns][value={name}]")
        if box.count():
            box.uncheck()
    page.click("#request-form button[type=submit]")
    assert "待审批" in page.locator(".notice").inner_text()  # pending
    # the owner approves it
    sign_in(page, base, creds["owners"]["psb"])
    page.goto(f"{base}/requests")
    row = page.locator("#to-decide tr", has_text="税务稽查")
    page.screenshot(path=str(SHOTS / "portal-owner.png"), full_page=True)
    row.locator("form.approve button").click()
    assert "已批准" in page.locator(".notice").inner_text()
    # the analyst queries it in the console and downloads the result
    sign_in(page, base, creds["tax"])
    page.goto(f"{base}/console")
    page.fill("#console textarea", "SELECT resident_id, division_code FROM shared.psb_resident_register "
                                   "ORDER BY division_code LIMIT 20")
    page.fill("#console input[name=purpose]", "稽查核验")
    page.click("#run")
    assert page.locator("#result tr").count() == 21
    assert "********" in page.locator("#result").inner_text()  # resident IDs masked for tax
    page.screenshot(path=str(SHOTS / "portal-console.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#download-csv")
    saved = tmp_path / "result.csv"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8-sig").count("\n") == 21
    # a query outside the grant is refused, with the reason shown
    page.fill("#console textarea", "SELECT person_name FROM shared.psb_resident_register")
    page.click("#run")
    assert "not granted" in page.locator("#refusal").inner_text()
    page.screenshot(path=str(SHOTS / "portal-refusal.png"), full_page=True)
    # a refused request: the owner must give a reason, and the requester sees it
    sign_in(page, base, creds["edu"])
    page.goto(f"{base}/catalogue/psb_resident_register")
    page.fill("#request-form input[name=purpose]", "学籍核验")
    page.click("#request-form button[type=submit]")
    sign_in(page, base, creds["owners"]["psb"])
    page.goto(f"{base}/requests")
    row = page.locator("#to-decide tr", has_text="学籍核验")
    row.locator("form.refuse button").click()
    assert "needs a reason" in page.locator(".notice").inner_text()
    row = page.locator("#to-decide tr", has_text="学籍核验")
    row.locator("form.refuse input[name=reason]").fill("请使用教育部门学籍数据")
    row.locator("form.refuse button").click()
    sign_in(page, base, creds["edu"])
    page.goto(f"{base}/requests?lang=en")
    assert "请使用教育部门学籍数据" in page.locator("#mine").inner_text()
    page.screenshot(path=str(SHOTS / "portal-refused.png"), full_page=True)
    assert errors == []


def test_dashboard_sign_in_drill_down_and_export(site, browser, tmp_path):  # noqa: F811 (the fixture imported above)
    base, creds, periods = site
    errors: list[str] = []
    page = new_page(browser, errors)

    page.goto(f"{base}/dashboard")
    assert page.url.startswith(f"{base}/login")  # signed out: sent to sign in
    page.fill("input[name=username]", creds["dsj"]["user"])
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").is_visible()
    page.fill("input[name=username]", creds["dsj"]["user"])
    page.fill("input[name=password]", creds["dsj"]["password"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    this_month = f"{dt.date.today():%Y-%m}"
    assert this_month in page.locator("h1").inner_text()
    # nine KPI cards; the sharing rate card shows numerator / denominator and the 90% target
    assert page.locator("#kpi-cards .card").count() == 9
    sharing = page.locator('#kpi-cards .card[data-kpi="sharing_rate"]').inner_text()
    assert "90%" in sharing and "/ 15" in sharing
    # one trend chart per KPI, with a point per published month
    assert page.locator(".grid svg").count() == 9
    assert page.locator(".grid .panel").first.locator("circle").count() == len(periods) + 1
    assert page.locator("#ranking svg rect").count() >= 10
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    page.click("#quality a:has-text('税务局')")
    page.wait_for_url("**/dashboard/departments/tax**")
    assert page.locator("#datasets tr").count() == 2  # header + tax_taxpayer_register
    assert "企业名称" in page.locator("#duplicates").inner_text()  # tax re-collects the enterprise name
    page.screenshot(path=str(SHOTS / "department.png"), full_page=True)

    page.goto(f"{base}/dashboard/departments/urban?lang=en")
    reasons = page.locator("#datasets").inner_text()
    # urban's cases were not loaded today: the drill-down says why they do not count as shared
    assert "Why not counted as shared" in reasons and "not counted" in reasons
    assert any(why in reasons.lower() for why in ("overdue", "never loaded", "quality checks")), reasons

    page.goto(f"{base}/dashboard/duplicates")
    assert page.locator("#matrix rect.cell-duplicate").count() > 0
    assert page.locator("#matrix rect.cell-authority").count() > 0
    page.screenshot(path=str(SHOTS / "duplicates.png"), full_page=True)

    page.goto(f"{base}/dashboard")
    with page.expect_download() as download:
        page.click("a[href^='/dashboard/export.xlsx?period=']")
    saved = tmp_path / "kpis.xlsx"
    download.value.save_as(saved)
    from openpyxl import load_workbook

    sheet = load_workbook(saved).active
    assert sheet.cell(1, 1).value == "period" and sheet.max_row > 1 + 9
    assert errors == []


def non_blank(png: bytes) -> bool:
    """A PNG that shows something: besides its background (white, or black once filtered to zeros), at least
    0.2% of its filtered pixel bytes take other values (text, colours, charts). about:blank fails it."""
    import struct
    import zlib

    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    data, at = b"", 8
    while at < len(png):
        length, kind = struct.unpack("!I4s", png[at:at + 8])
        if kind == b"IDAT":
            data += png[at + 8:at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(data)
    other = len(raw) - raw.count(0) - raw.count(255)
    return other > 0.002 * len(raw)


def test_screenshots_of_catalogue_dataset_and_dashboard_in_both_languages(site, browser, tmp_path):  # noqa: F811 (the fixture imported above)
    """The acceptance's screenshots: the catalogue, a dataset page and the dashboard in zh and en, saved as
    PNG into the test's folder (and into $ONESOURCE_ARTEFACTS when set), each checked not blank."""
    base, creds, _ = site
    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto("about:blank")
    assert not non_blank(page.screenshot(full_page=True))  # the check can fail
    sign_in(page, base, creds["dsj"])
    folders = [tmp_path / "screenshots"] + ([Path(os.environ["ONESOURCE_ARTEFACTS"])]
                                            if os.environ.get("ONESOURCE_ARTEFACTS") else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    shots = {}
    for lang in ("zh", "en"):
        for name, path, ready in (("catalogue", "/catalogue", "#datasets"),
                                  ("dataset", "/catalogue/amr_enterprise_register", "#preview"),
                                  ("dashboard", "/dashboard", "#kpi-cards")):
            page.goto(f"{base}{path}?lang={lang}")
            assert page.locator(ready).count() == 1, (lang, path)
            assert page.locator("html").get_attribute("lang") == ("zh-CN" if lang == "zh" else "en")
            png = page.screenshot(full_page=True)
            assert non_blank(png), (lang, name)
            for folder in folders:
                (folder / f"portal-{name}-{lang}.png").write_bytes(png)
            shots[(name, lang)] = png
    assert len({hash(p) for p in shots.values()}) == 6  # six different pictures
    # the dataset page: status in colour, a preview of 20 rows, the schema history
    page.goto(f"{base}/catalogue/amr_enterprise_register?lang=en")
    assert page.locator("#health").get_attribute("class") in ("ok", "warn")
    assert page.locator("#preview tr").count() == 21 and page.locator("#schema-history tr").count() >= 2
    assert errors == []
