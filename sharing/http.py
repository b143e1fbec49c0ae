"""The HTTP API (FastAPI): the catalogue a department may see, and governed queries.

Every request carries ``Authorization: Bearer <department token>``. Queries go through the same
governed engine as the CLI and the Postgres-wire endpoint. Results come as JSON, CSV
(``Accept: text/csv``) or Arrow IPC (``Accept: application/vnd.apache.arrow.stream``). The OpenAPI
document is at ``/openapi.json``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sharing.engine import GovernedEngine
from sharing.exceptions import QueryFailed, QueryRefused
from sharing.users import User, user_by_token

ARROW = "application/vnd.apache.arrow.stream"


class QueryIn(BaseModel):
    sql: str = Field(description="one SELECT, in the dialect named below")
    purpose: str | None = Field(default=None, description="why the data is needed (recorded in the audit log)")
    dialect: str = Field(default="postgres", pattern="^(postgres|mysql|duckdb)$")


class QueryOut(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int


class Refusal(BaseModel):
    error: str
    reason: str


def create_app(engine: GovernedEngine) -> FastAPI:
    app = FastAPI(title="OneSource", version="1", description="Governed access to the city's shared data.")
    def current_user(authorization: str = Header(default="")) -> User:
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        with engine.cursor() as lake:
            user = user_by_token(lake, token) if token else None
        if user is None:
            raise HTTPException(status_code=401, detail="a valid department bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    @app.get("/api/v1/catalogue", summary="datasets this department may query")
    def catalogue(user: User = Depends(current_user)) -> list[dict[str, Any]]:
        with engine.cursor() as lake:
            access = engine._access(lake.con, user.department)
        out = []
        for ds in engine.registry.datasets:
            acc = access.get(ds.name)
            if acc is None:
                continue
            out.append({"name": ds.name, "title": ds.title, "owner": ds.owner, "share_type": ds.share_type,
                        "update_cycle": ds.update_cycle, "table": ds.table,
                        "columns": [{"name": c, "type": ds.column(c).type, "masked": c in acc.masked}
                                    for c in acc.columns],
                        "row_filtered": bool(acc.row_filters)})
        return out

    @app.post("/api/v1/query", response_model=QueryOut, responses={403: {"model": Refusal}, 400: {"model": Refusal}},
              summary="run one governed SELECT (JSON, CSV or Arrow IPC by the Accept header)")
    def query(body: QueryIn, request: Request, user: User = Depends(current_user)):
        try:
            result = engine.query(user.department, body.sql, user=user.name, purpose=body.purpose,
                                  dialect=body.dialect)
        except QueryRefused as exc:
            return JSONResponse(status_code=403, content={"error": "refused", "reason": str(exc)})
        except QueryFailed as exc:
            return JSONResponse(status_code=400, content={"error": "failed", "reason": str(exc)})
        accept = request.headers.get("accept", "")
        if "text/csv" in accept:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(result.columns)
            writer.writerows(result.rows)
            return Response(buf.getvalue(), media_type="text/csv; charset=utf-8")
        if ARROW in accept:
            import pyarrow as pa

            table = pa.Table.from_pylist([dict(zip(result.columns, r, strict=True)) for r in result.rows])
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return Response(sink.getvalue(), media_type=ARROW)
        return QueryOut(columns=result.columns, rows=[[_json(v) for v in r] for r in result.rows],
                        row_count=len(result.rows))

    from portal.web import mount_portal

    mount_portal(app, engine)
    return app


def _json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
