"""Paginated HTTP JSON APIs (the 12345 hotline's ticket API, for one).

Pages are fetched with ``?page=N&page_size=M`` (parameter names configurable) and, once a
watermark is known, ``&since=<last watermark>``; pagination stops at an empty or short page. The
records land as one NDJSON file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.base import Extract, SourceState
from connectors.exceptions import ExtractError, SourceUnavailableError
from connectors.landing import Landing
from schemas.model import Dataset

MAX_PAGES = 100_000


class HttpConnector:
    kind = "http"

    def __init__(self, landing: Landing, environ: Mapping[str, str]):
        self.landing = landing
        self.environ = environ

    def extract(self, dataset: Dataset, state: SourceState) -> list[Extract]:
        s = dataset.connector.settings
        url = str(s["url"])
        items_key = str(s.get("items", "items"))
        page_param, size_param = str(s.get("page_param", "page")), str(s.get("size_param", "page_size"))
        page_size = int(s.get("page_size", 500))
        wm_field = s.get("watermark")
        headers = {"Accept": "application/json"}
        if s.get("token_env"):
            token = self.environ.get(str(s["token_env"]))
            if not token:
                raise ExtractError(f"dataset {dataset.name}: environment variable {s['token_env']} (the API token) is not set")
            headers["Authorization"] = f"Bearer {token}"
        params: dict[str, str | int] = {size_param: page_size}
        if state.watermark and s.get("since_param"):
            params[str(s["since_param"])] = state.watermark
        tmp = self.landing.scratch(dataset.name, ".ndjson")
        count, high = 0, state.watermark
        try:
            with httpx.Client(timeout=float(s.get("timeout", 30)), headers=headers) as client, \
                    open(tmp, "w", encoding="utf-8") as out:
                for page in range(1, MAX_PAGES):
                    items = self._page(client, dataset.name, url, {**params, page_param: page}, items_key)
                    for item in items:
                        if state.watermark and wm_field and str(item.get(wm_field)) <= state.watermark:
                            continue  # the API ignored `since`: keep the extract incremental anyway
                        out.write(json.dumps(item, ensure_ascii=False) + "\n")
                        count += 1
                        if wm_field and item.get(wm_field) is not None and (high is None or str(item[wm_field]) > high):
                            high = str(item[wm_field])
                    if len(items) < page_size:
                        break
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if count == 0:
            tmp.unlink(missing_ok=True)
            return []
        landed, sha = self.landing.land_temp(dataset.name, tmp, "ndjson", source=url)
        if sha in state.seen_sha256:
            return []
        return [Extract(dataset=dataset.name, path=landed, sha256=sha, source=url, format="ndjson", watermark=high)]

    @staticmethod
    def _page(client: httpx.Client, dataset: str, url: str, params: dict[str, Any],
              items_key: str) -> list[dict[str, Any]]:
        where = f"dataset {dataset}: endpoint {url} page {params.get('page', '?')}"
        try:
            resp = client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise SourceUnavailableError(f"{where} timed out ({exc}); the load will be retried") from exc
        except httpx.TransportError as exc:
            raise SourceUnavailableError(f"{where} is unreachable ({exc}); the load will be retried") from exc
        if resp.status_code >= 500:
            raise SourceUnavailableError(f"{where} answered HTTP {resp.status_code}; the load will be retried")
        if resp.status_code >= 400:
            raise ExtractError(f"{where} answered HTTP {resp.status_code}: {resp.text[:200]!r}; check url and token")
        try:
            body = resp.json()
        except ValueError:
            kind = resp.headers.get("content-type", "unknown content type")
            raise ExtractError(f"{where} did not return JSON ({kind}): {resp.text[:120]!r}; "
                               "check the url (an HTML page usually means a login or error page)") from None
        items = body.get(items_key) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ExtractError(f"{where}: the JSON has no list under {items_key!r}; set 'items' in the connector")
        return items

