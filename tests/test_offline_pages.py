"""Pages that must work with no network but the loopback (README: no external network): /docs (Swagger UI)
and /redoc of `onesource serve`, and GX's Data Docs, their scripts and styles taken from the npm packages of
web/package-lock.json. The slow tests open them in Debian's chromium behind a proxy that answers nothing
(loopback bypasses it), so any load from elsewhere fails; a control page shows that it does."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from core.webassets import WEB, AssetsMissing, package_dir
from quality import docs_assets
from sharing.docs import mount_docs
from tests.helpers import free_port, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ONESOURCE_SCREENSHOTS", "/tmp/onesource-screenshots"))
GX_TEMPLATES = Path(find_spec("great_expectations").origin).parent / "render" / "view"  # without importing GX
URL = re.compile(r"""https?://[^\s"'()<>]+""")


# fast: the asset table against what GX's installed templates and the npm packages really hold

def test_every_url_gx_loads_from_the_internet_has_a_local_copy():
    """A GX upgrade that names a new CDN file fails here, not in a city's browser. Every URL in GX's
    templates and styles is a link to read (greatexpectations.io) or has a copy in a package."""
    found = {u for path in (*GX_TEMPLATES.glob("templates/*"), *GX_TEMPLATES.glob("static/styles/*.css"))
             for u in URL.findall(path.read_text(encoding="utf-8"))}
    loads = {u for u in found if urlsplit(u).hostname not in ("greatexpectations.io", "docs.greatexpectations.io")}
    assert len(loads) >= 15, "GX's templates name fewer CDN files than they did: is the pattern still right?"
    for url in loads - {docs_assets.GX_IMAGES}:
        if url.startswith(docs_assets.GX_IMAGES):
            assert (GX_TEMPLATES / "static" / "images" / docs_assets.IMAGES[url.split("/")[-1]]).is_file()
        else:
            asset = docs_assets.BY_URL[url]
            assert (package_dir(asset.package) / asset.path).is_file(), url
    navbar = (GX_TEMPLATES / "templates" / "top_navbar.j2").read_text(encoding="utf-8")
    assert set(re.findall(r'static_images_dir \+ "([^"]+)"', navbar)) <= set(docs_assets.IMAGES)


def test_the_packages_hold_the_very_files_gx_pins_by_hash():
    """GX pins popper and bootstrap by SRI hash: the npm files are those bytes."""
    pinned = re.findall(r'src="([^"]+)" integrity="sha384-([^"]+)"',
                        (GX_TEMPLATES / "templates" / "js_script_imports.j2").read_text(encoding="utf-8"))
    assert len(pinned) >= 2
    for url, digest in pinned:
        asset = docs_assets.BY_URL[url]
        data = (package_dir(asset.package) / asset.path).read_bytes()
        assert base64.b64encode(hashlib.sha384(data).digest()).decode() == digest, url


PAGE = """<html><head><link rel="stylesheet" href="{css}"/>
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" integrity="sha384-x" crossorigin="anonymous"></script>
<style>.a {{ background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png') }}</style>
</head><body><a href="https://greatexpectations.io">GX</a>
<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&amp;dataContextId=x"/>
<link rel="shortcut icon" href="../static/images/favicon.ico" type="image/x-icon"/>
{extra}</body></html>"""


@settings(max_examples=25, deadline=None)
@given(depth=st.lists(st.sampled_from(["onesource", "firms", "run 1", "20260101T000000Z"]), max_size=5),
       asset=st.sampled_from(docs_assets.ASSETS), unknown=st.booleans())
def test_a_page_at_any_depth_points_at_the_site_copies(tmp_path_factory, depth, asset, unknown):
    """Every known load is rewritten to the copy relative to the page, integrity attributes go (a file://
    page refuses a script fetched with CORS), links to read stay, a relative static path climbs to the site
    (GX's favicon link on a validation page is a folder short), and an unknown external load is reported."""
    site = tmp_path_factory.mktemp("site")
    page = site.joinpath(*depth, "page.html")
    page.parent.mkdir(parents=True, exist_ok=True)
    extra = '<script src="https://cdn.example.org/new.js"></script>' if unknown else ""
    page.write_text(PAGE.format(css=asset.url, extra=extra), encoding="utf-8")
    left = docs_assets.localize(site)
    assert left == ([f"{page.relative_to(site)}: https://cdn.example.org/new.js"] if unknown else [])
    html = page.read_text(encoding="utf-8")
    up = "/".join([".."] * len(depth)) or "."
    assert f'href="{up}/static/vendor/{asset.package}/{asset.path}"' in html
    assert f'src="{up}/static/vendor/popper.js/dist/umd/popper.min.js">' in html and "integrity" not in html
    assert f"url('{up}/static/images/logo-long.png')" in html and f'src="{up}/static/images/logo-long.png"' in html
    assert 'href="https://greatexpectations.io"' in html and "dataContextId" not in html
    assert f'<link rel="shortcut icon" href="{up}/static/images/favicon.ico"' in html
    copy = site / "static" / "vendor" / asset.package / asset.path
    assert copy.read_bytes() == (package_dir(asset.package) / asset.path).read_bytes()


def test_only_new_pages_are_read_again(tmp_path):
    site = tmp_path / "site"
    (site / "old.html").parent.mkdir(parents=True)
    docs_assets.localize(site)
    old = site / "old.html"
    old.write_text(PAGE.format(css=docs_assets.ASSETS[0].url, extra=""), encoding="utf-8")
    os.utime(old, (1, 1))
    assert docs_assets.localize(site, since=100) == [] and "https://cdnjs" in old.read_text(encoding="utf-8")
    assert docs_assets.localize(site, since=0.5) == [] and "https://cdnjs" not in old.read_text(encoding="utf-8")


def test_without_the_packages_the_docs_say_what_to_run(tmp_path):
    """The API works without the browser packages; /docs and /redoc answer 503 naming `make setup`, and a
    package at another version than package.json pins counts as missing."""
    (tmp_path / "package.json").write_text(json.dumps({"dependencies": {"swagger-ui-dist": "5.0.0",
                                                                        "redoc": "2.0.0"}}))
    (tmp_path / "node_modules" / "swagger-ui-dist").mkdir(parents=True)
    (tmp_path / "node_modules" / "swagger-ui-dist" / "package.json").write_text('{"version": "4.0.0"}')
    with pytest.raises(AssetsMissing, match=r"swagger-ui-dist 5\.0\.0 .* version 4\.0\.0 is installed.*make setup"):
        package_dir("swagger-ui-dist", tmp_path)
    app = FastAPI(docs_url=None, redoc_url=None)
    mount_docs(app, tmp_path)
    client = TestClient(app)
    for path in ("/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 503 and "make setup" in r.text and "Traceback" not in r.text
    assert client.get("/openapi.json").status_code == 200


def test_the_docs_pages_name_only_this_server():
    app = FastAPI(docs_url=None, redoc_url=None)
    mount_docs(app)
    client = TestClient(app)
    for path in ("/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", r.text)
        assert urls and all(u.startswith("/docs-assets/") for u in urls), urls
        for url in urls:
            assert client.get(url).status_code == 200, url
    assert WEB.joinpath("package-lock.json").is_file()


# slow: in chromium with the network cut

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A real load's home (its Data Docs built by the pipeline's own call) and `onesource serve` on it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed (apt-get install chromium); .ci/run installs it")
    from quality import build_data_docs
    from tests.helpers import demo_home

    settings, _ = demo_home(tmp_path_factory.mktemp("offline") / "home", ("mca_admin_divisions",))
    index = build_data_docs(settings.gx_project_root)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(port),
                             "--pg-port", str(free_port())], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}", index
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Every request goes to a proxy where nothing listens, except loopback ones (Chromium bypasses the
        # proxy for them): a page that needs the internet fails as it would on a city's closed network.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--proxy-server=http://127.0.0.1:9"])
        yield b
        b.close()


class Visit:
    """A page with what it asked for, what failed, and its console errors."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1366, "height": 900})
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def elsewhere(self) -> list[str]:
        """Requests to anything but this machine (file:, data:, blob: and loopback are local)."""
        return [u for u in self.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                and urlsplit(u).hostname not in ("127.0.0.1", "localhost", "::1")]

    def assert_offline_and_clean(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"offline-{name}.png"), full_page=True)
        assert not self.elsewhere(), self.elsewhere()
        assert not self.failed, self.failed
        assert not self.errors, self.errors


@pytest.mark.slow
def test_the_network_is_really_cut(browser, home, tmp_path):
    """Control: the same browser cannot load a CDN script (so the tests below prove something), while the
    server on loopback answers."""
    control = tmp_path / "control.html"
    control.write_text('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
                       '<img src="http://93.184.215.14/x.png">', encoding="utf-8")
    visit = Visit(browser)
    visit.page.goto(control.as_uri())
    visit.page.wait_for_load_state("load")
    assert visit.page.evaluate("typeof vega") == "undefined"
    assert {u.split(" ")[0] for u in visit.failed} == {"https://cdn.jsdelivr.net/npm/vega@5",
                                                       "http://93.184.215.14/x.png"}, visit.failed
    assert all("ERR_PROXY_CONNECTION_FAILED" in f for f in visit.failed), visit.failed
    assert visit.page.goto(f"{home[0]}/healthz").status == 200
    visit.page.close()


@pytest.mark.slow
def test_swagger_ui_lists_the_operations_offline(browser, home):
    visit = Visit(browser)
    visit.page.goto(f"{home[0]}/docs")
    visit.page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    paths = visit.page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/v1/query", "/api/v1/catalogue", "/api/v1/requests"} <= {p.strip().replace("\u200b", "")
                                                                         for p in paths}, paths
    visit.page.locator(".opblock-summary-path", has_text="/api/v1/query").first.click()
    visit.page.wait_for_selector(".opblock-body .parameters-container, .opblock-body .opblock-section")
    visit.assert_offline_and_clean("swagger-ui")
    visit.page.close()


@pytest.mark.slow
def test_redoc_renders_offline(browser, home):
    visit = Visit(browser)
    visit.page.goto(f"{home[0]}/redoc")
    visit.page.wait_for_selector("h1", timeout=15_000)
    visit.page.get_by_text("run one governed SELECT").first.wait_for(timeout=15_000)
    assert "OneSource" in visit.page.locator("h1").first.inner_text()
    visit.assert_offline_and_clean("redoc")
    visit.page.close()


@pytest.mark.slow
def test_data_docs_show_their_validation_results_offline(browser, home):
    """The index's table (bootstrap-table fills it from JavaScript) lists the load; its validation page
    shows the checks with Bootstrap's styles and Font Awesome's icons; Vega draws a chart on it."""
    visit = Visit(browser)
    visit.page.goto(home[1].as_uri())
    rows = visit.page.locator("table.ge-index-page-validation-results-table tbody tr")
    rows.first.wait_for(timeout=15_000)
    assert "mca_admin_divisions" in rows.first.inner_text()
    assert visit.page.evaluate("getComputedStyle(document.querySelector('.navbar')).display") == "flex"
    visit.assert_offline_and_clean("data-docs-index")
    rows.first.click()
    visit.page.wait_for_url("**/validations/**")
    visit.page.get_by_text("Overview").first.wait_for()
    body = visit.page.locator("body").inner_text()
    assert "mca_admin_divisions" in body and re.search(r"expect_column_values_to_not_be_null|must never be null", body)
    assert visit.page.evaluate("document.fonts.check('900 1em \"Font Awesome 6 Free\"')")
    drawn = visit.page.evaluate("""async () => {
        const div = document.body.appendChild(document.createElement('div'));
        await vegaEmbed(div, {data: {values: [{a: 'x', b: 3}, {a: 'y', b: 5}]}, mark: 'bar',
                              encoding: {x: {field: 'a', type: 'nominal'}, y: {field: 'b', type: 'quantitative'}}},
                        {renderer: 'svg', actions: false});
        return div.querySelectorAll('svg .mark-rect path').length;
    }""")
    assert drawn == 2
    visit.assert_offline_and_clean("data-docs-validation")
    visit.page.close()
