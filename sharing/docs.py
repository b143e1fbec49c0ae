"""The API's documentation pages, /docs (Swagger UI) and /redoc, with their scripts and styles served by
this server from npm packages (core.webassets): FastAPI's defaults load them from a CDN, and a city's
network often reaches none, which left /docs blank."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from core.webassets import WEB, AssetsMissing, package_dir

ASSETS = "/docs-assets"
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; worker-src 'self' blob:")
"""Both pages carry an inline start-up script; 'self' alone keeps the browser itself from loading
anything from elsewhere (a future FastAPI default pointing at a CDN fails loudly in the browser test)."""
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK = b"data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
"""ReDoc 2 shows Redocly's logo from Redocly's CDN in its side menu, with no option to turn it off: its
bundle is served with a blank image there (the "API docs by Redocly" link stays)."""


def mount_docs(app: FastAPI, web: Path = WEB) -> None:
    """Add /docs, /redoc and the static routes under ``ASSETS`` they load. Without the packages installed,
    both pages answer 503 with what to run: the API itself does not need them."""
    try:
        swagger, redoc_js = package_dir("swagger-ui-dist", web), redoc_bundle(package_dir("redoc", web))
    except AssetsMissing as exc:
        missing = str(exc)
    else:
        missing = None
        app.mount(f"{ASSETS}/swagger-ui", StaticFiles(directory=swagger), name="docs-swagger-ui")
    favicon = f"{ASSETS}/swagger-ui/favicon-32x32.png"

    def page(html: HTMLResponse) -> HTMLResponse:
        html.headers["Content-Security-Policy"] = CSP
        return html

    @app.get("/docs", include_in_schema=False)
    def swagger_ui():
        if missing:
            return PlainTextResponse(missing, status_code=503)
        return page(get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI", oauth2_redirect_url=None,
            swagger_js_url=f"{ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui/swagger-ui.css", swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None}))  # else the spec is posted to swagger.io's validator

    @app.get(f"{ASSETS}/redoc/redoc.standalone.js", include_in_schema=False)
    def redoc_script():
        if missing:
            return PlainTextResponse(missing, status_code=503)
        return Response(redoc_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        if missing:
            return PlainTextResponse(missing, status_code=503)
        return page(get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                                   redoc_js_url=f"{ASSETS}/redoc/redoc.standalone.js", redoc_favicon_url=favicon,
                                   with_google_fonts=False))


def redoc_bundle(folder: Path) -> bytes:
    """ReDoc's standalone bundle from its package, its one external image blanked (see ``REDOC_LOGO``)."""
    js = (folder / "bundles" / "redoc.standalone.js").read_bytes()
    if js.count(REDOC_LOGO) != 1:  # another ReDoc: look again at what it loads (tests/test_offline_pages.py)
        raise AssetsMissing(f"{folder} holds a ReDoc bundle whose Redocly logo is not where this server expects it "
                            f"({js.count(REDOC_LOGO)} occurrences): check web/package.json's redoc version")
    return js.replace(REDOC_LOGO, BLANK)
