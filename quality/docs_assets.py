"""GX Data Docs without the internet. GX's page templates load Bootstrap, jQuery, bootstrap-table, Vega and
Font Awesome from CDNs, and its logo from S3 with the project's id in the query: offline, the index's table
(filled by bootstrap-table) stayed empty. After each build the site gets those files from the npm packages
``web/package-lock.json`` pins (core.webassets), and the pages point at the copies."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.webassets import WEB, AssetsMissing, package_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    url: str
    """As GX's templates (great_expectations/render/view/templates) write it."""
    package: str
    path: str
    """The same file inside the npm package (GX's SRI hashes match these files byte for byte)."""
    folders: tuple[str, ...] = ()
    """Folders of the package the file refers to, copied beside it (Font Awesome's webfonts)."""


ASSETS = (
    Asset("https://cdn.jsdelivr.net/npm/vega@5", "vega", "build/vega.min.js"),
    Asset("https://cdn.jsdelivr.net/npm/vega-lite@5", "vega-lite", "build/vega-lite.min.js"),
    Asset("https://cdn.jsdelivr.net/npm/vega-embed@6", "vega-embed", "build/vega-embed.min.js"),
    Asset("https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css",
          "@fortawesome/fontawesome-free", "css/all.min.css", ("webfonts",)),
    Asset("https://code.jquery.com/jquery-3.7.1.min.js", "jquery", "dist/jquery.min.js"),
    Asset("https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js", "popper.js",
          "dist/umd/popper.min.js"),
    Asset("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js", "bootstrap",
          "dist/js/bootstrap.min.js"),
    Asset("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css", "bootstrap",
          "dist/css/bootstrap.min.css"),
    Asset("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js", "bootstrap-table",
          "dist/bootstrap-table.min.js"),
    Asset("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css", "bootstrap-table",
          "dist/bootstrap-table.min.css"),
    Asset("https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
          "bootstrap-table-filter-control.min.js", "bootstrap-table",
          "dist/extensions/filter-control/bootstrap-table-filter-control.min.js"),
    # the index page names 1.19.0's stylesheet, the other pages 1.19.0's unminified one: same rules as 1.19.1's
    Asset("https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
          "bootstrap-table-filter-control.min.css", "bootstrap-table",
          "dist/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    Asset("https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
          "bootstrap-table-filter-control.css", "bootstrap-table",
          "dist/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    Asset("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",
          "bootstrap-datepicker", "dist/js/bootstrap-datepicker.min.js"),
    Asset("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",
          "bootstrap-datepicker", "dist/css/bootstrap-datepicker.min.css"),
    Asset("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",
          "@forevolve/bootstrap-dark", "dist/css/bootstrap-prefers-dark.css"),
)
BY_URL = {a.url: a for a in ASSETS}

GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}
"""GX's logos on S3 -> the images GX itself copies into the site's static/images (it ships no dark one)."""

VENDOR = Path("static") / "vendor"
STAMP = "assets.json"
TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
URL_ATTR = re.compile(r"""\b(src|href)=(["'])(https?://[^"']*)\2""")
STATIC_ATTR = re.compile(r"""\b(src|href)=(["'])(?:\./|(?:\.\./)+)static/""")
SRI = re.compile(r"""\s+(?:integrity|crossorigin)=(["'])[^"']*\1""")
CSS_URL = re.compile(r"""url\((["']?)(https?://[^"')]*)\1\)""")


def localize(site: Path, since: float | None = None, web: Path = WEB) -> list[str]:
    """Copy the assets into ``site/static/vendor`` and point the pages written at or after ``since`` (all
    of them: None, or when the copies are new) at them. Returns the external loads left in those pages
    (none while GX's templates name only the URLs of ``ASSETS``). Without the packages installed the pages
    keep their CDN links and a warning says what to run."""
    try:
        versions = {a.package: _version(package_dir(a.package, web)) for a in ASSETS}
    except AssetsMissing as exc:
        log.warning("Data Docs keep loading their scripts from the internet: %s", exc)
        return []
    stamp = site / VENDOR / STAMP
    if not stamp.exists() or json.loads(stamp.read_text(encoding="utf-8")) != versions:
        _copy(site / VENDOR, web)
        stamp.write_text(json.dumps(versions, sort_keys=True), encoding="utf-8")
        since = None
    left = []
    for page in site.rglob("*.html"):
        if since is None or page.stat().st_mtime >= since:
            left += _rewrite(page, site)
    for item in left:
        log.warning("a Data Docs page still loads %s from the internet", item)
    return left


def _version(folder: Path) -> str:
    version: str = json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"]
    return version


def _copy(vendor: Path, web: Path) -> None:
    for asset in ASSETS:
        source = package_dir(asset.package, web)
        target = vendor / asset.package
        for relative in (asset.path, *asset.folders):
            src, dst = source / relative, target / relative
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dst)


def _rewrite(page: Path, site: Path) -> list[str]:
    """Point one page's CDN scripts, styles and images at the site's copies; return what stays external."""
    text = page.read_text(encoding="utf-8")
    up = os.path.relpath(site, page.parent).replace(os.sep, "/")

    def local(url: str) -> str | None:
        if url in BY_URL:
            asset = BY_URL[url]
            return f"{up}/{VENDOR.as_posix()}/{asset.package}/{asset.path}"
        name = url.removeprefix(GX_IMAGES).split("?")[0] if url.startswith(GX_IMAGES) else None
        return f"{up}/static/images/{IMAGES[name]}" if name in IMAGES else None

    def tag(match: re.Match[str]) -> str:
        found = URL_ATTR.search(match[0])
        target = local(found[3]) if found else None
        if found is None or target is None:  # GX's favicon link on a validation page climbs one folder short (a 404)
            return STATIC_ATTR.sub(lambda m: f"{m[1]}={m[2]}{up}/static/", match[0])
        # integrity and crossorigin make a file:// page refuse the script (a CORS fetch between files)
        return SRI.sub("", match[0].replace(found[0], f"{found[1]}={found[2]}{target}{found[2]}"))

    def css(match: re.Match[str]) -> str:
        target = local(match[2])
        return match[0] if target is None else f"url({match[1]}{target}{match[1]})"

    new = CSS_URL.sub(css, TAG.sub(tag, text))
    if new != text:
        page.write_text(new, encoding="utf-8")
    left = [m[3] for t in TAG.finditer(new) if (m := URL_ATTR.search(t[0]))]
    return [f"{page.relative_to(site)}: {url}" for url in left + [m[2] for m in CSS_URL.finditer(new)]]
