"""The web server ``onesource serve`` runs: the HTTP API (:mod:`sharing.http`), its health check
(:mod:`onesource.doctor`) and the portal's pages (:mod:`portal.web`), composed here, above all three, so
that the API does not reach up into the portal or the operator's checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sharing.engine import GovernedEngine
    from sharing.signin import SignInGuard


def create_app(engine: GovernedEngine, guard: SignInGuard | None = None) -> FastAPI:
    """The API, ``/healthz`` and the portal; ``guard`` throttles sign-ins (share the wire endpoint's)."""
    from portal.web import mount_portal
    from sharing.http import create_api
    from sharing.signin import SignInGuard

    guard = guard or SignInGuard(engine.settings.signin, audit=engine.audit)
    app = create_api(engine, guard)
    _health(app, engine)
    mount_portal(app, engine, guard=guard)
    return app


def _health(app: FastAPI, engine: GovernedEngine) -> None:
    from fastapi.responses import JSONResponse

    from onesource.doctor import health

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """200 when the home and the catalog are usable, 503 with the reason when not (no sign-in needed)."""
        def probe():
            with engine.cursor() as lake:
                return lake.con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]

        ok, body = health(engine.settings, probe)
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})
