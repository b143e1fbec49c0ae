"""Browser assets from npm packages, never from a CDN: ``web/package-lock.json`` pins them and ``make setup``
installs them (``npm ci``) into ``web/node_modules``. The server serves Swagger UI and ReDoc from there;
the Data Docs build copies GX's scripts and styles from there into the site."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import ConfigurationError

WEB = Path(__file__).resolve().parents[1] / "web"
"""The folder holding package.json, package-lock.json and, once installed, node_modules."""


class AssetsMissing(ConfigurationError):
    """A browser asset package is not installed, or not at the version web/package.json pins."""


def package_dir(name: str, web: Path = WEB) -> Path:
    """The installed folder of npm package ``name``, checked against the version ``web/package.json`` pins
    (a node_modules left over from an older lock would serve other files than the tests saw)."""
    pinned = json.loads((web / "package.json").read_text(encoding="utf-8"))["dependencies"].get(name)
    if pinned is None:
        raise AssetsMissing(f"{name} is not one of the browser asset packages of {web / 'package.json'}")
    folder = web / "node_modules" / name
    manifest = folder / "package.json"
    installed = json.loads(manifest.read_text(encoding="utf-8"))["version"] if manifest.is_file() else None
    if installed != pinned:
        found = f"version {installed} is installed" if installed else "it is not installed"
        raise AssetsMissing(
            f"the browser asset package {name} {pinned} is needed (Swagger UI, ReDoc and the Data Docs pages "
            f"load their scripts from {web / 'node_modules'}, never from the internet), but {found}. "
            f"Run `make setup` (or `npm ci --prefix {web}`).")
    return folder
