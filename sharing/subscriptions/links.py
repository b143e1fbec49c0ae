"""Signed, expiring links to a webhook delivery's rows, and the HTTP API route that serves them.

A webhook delivery keeps its rows (CSV, 0600) in ``<home>/subscriptions/outbox/`` and sends the subscriber a
link ``<api>/api/v1/deliveries?delivery=<delivery_id>&expires=<unix time>&signature=<hex>``: the signature is an
HMAC-SHA256 of the delivery id and the expiry under a key kept outside the home (beside the audit key), so a
link cannot be forged, extended or pointed at another delivery. The link is fetched with a token of the
subscriber, or of a user of its department whose jurisdiction contains the subscriber's (deny by default: a link
that leaks is not enough, even to a neighbouring street's user of the same department), and answers only while the
subscription is active and may be delivered (a grant revoked or a freeze since stops it at once), and the
subscriber's policy is the one the rows were cut under (a grant narrowed, or the user moved to another
organisation, stops it too).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.config import Settings
    from sharing.engine import GovernedEngine

_DELIVERY_ID = re.compile(r"^[0-9a-f]{12}-[0-9]{1,20}$")


def key_file(settings: Settings) -> Path:
    """The links' key: beside the audit key (outside the home), one per home."""
    audit = settings.audit_key_file
    return audit.with_name(audit.name.removesuffix(".audit.key") + ".links.key")


def _key(settings: Settings, create: bool) -> bytes | None:
    path = key_file(settings)
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def outbox_path(settings: Settings, delivery_id: str) -> Path:
    return settings.home / "subscriptions" / "outbox" / f"{delivery_id}.csv"


def _signature(key: bytes, delivery_id: str, expires: int) -> str:
    return hmac.new(key, f"{delivery_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def signed_link(settings: Settings, api: str, delivery_id: str, valid: dt.timedelta) -> tuple[str, dt.datetime]:
    """(the link, when it expires, UTC)."""
    expires = int(time.time() + valid.total_seconds())
    key = _key(settings, create=True)
    assert key is not None
    return (f"{api.rstrip('/')}/api/v1/deliveries?delivery={delivery_id}&expires={expires}"
            f"&signature={_signature(key, delivery_id, expires)}",
            dt.datetime.fromtimestamp(expires, dt.UTC).replace(tzinfo=None))


def check(settings: Settings, delivery_id: str, expires: int, signature: str, now: float | None = None) -> str | None:
    """Why the link is refused (None: it is good)."""
    if not _DELIVERY_ID.match(delivery_id):
        return "no such delivery"
    key = _key(settings, create=False)
    if key is None or not hmac.compare_digest(_signature(key, delivery_id, expires), signature or ""):
        return "the link's signature does not match: use the link as it was sent"
    if (now or time.time()) > expires:
        return "the link has expired; the next delivery sends a new one"
    return None


def _covers(lake, registry, fetcher: str, subscriber: str) -> bool:
    """Whether ``fetcher`` may read every row ``subscriber``'s deliveries hold: the same user, or one of the
    same department whose jurisdiction contains the subscriber's (the city's contains every one). A
    neighbouring street's user of the same department, holding a leaked link, reads nothing through it."""
    from sharing.grants import NOTHING, jurisdiction
    from sharing.users import organisation_of

    if fetcher == subscriber:
        return True
    mine = jurisdiction(registry, organisation_of(lake.con, fetcher))
    theirs = jurisdiction(registry, organisation_of(lake.con, subscriber))
    if mine is None:
        return True
    return mine != NOTHING and theirs is not None and theirs != NOTHING and theirs.startswith(mine)


def _same_policy(lake, registry, sub, path: Path) -> bool:
    """Whether the delivery at ``path`` was cut under the subscriber's policy of now (deny by default: a
    delivery whose policy is not known is not served)."""
    from sharing.subscriptions.deliver import policy_fingerprint
    from sharing.subscriptions.targets import policy_of

    try:
        held = policy_of(path).read_text().strip()
    except OSError:
        return False
    return hmac.compare_digest(held, policy_fingerprint(lake, registry, sub))


def add_routes(app: FastAPI, engine: GovernedEngine, current_user) -> None:
    """``GET /api/v1/deliveries?delivery=&expires=&signature=``: a webhook delivery's rows as CSV, for its
    valid link and a user of the subscribing department (the link alone is not enough: deny by default)."""
    from fastapi import Depends, Query
    from fastapi.responses import FileResponse, JSONResponse

    from sharing.subscriptions import store
    from sharing.subscriptions.deliver import refusal
    from sharing.users import User

    def refused(status: int, reason: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": "refused", "reason": reason})

    @app.get("/api/v1/deliveries", summary="a webhook delivery's rows (CSV), with the signed link the webhook "
             "carried and a token of the subscribing department; 404: a link forged or of another delivery, 410: "
             "expired, 403: a subscription no longer delivered (cancelled, grant revoked, frozen)")
    def delivery(delivery: str = Query(...), expires: int = Query(...), signature: str = Query(...),
                 user: User = Depends(current_user)):
        settings = engine.settings
        reason = check(settings, delivery, expires, signature)
        if reason is not None:
            return refused(410 if "expired" in reason else 404, reason)
        with engine.cursor() as lake:
            try:
                sub = store.subscription(lake, delivery.split("-")[0])
            except store.SubscriptionError:
                return refused(404, "no such delivery")
            if sub.department != user.department or not _covers(lake, engine.registry, user.name, sub.user):
                return refused(404, "no such delivery")
            reason = "the subscription was cancelled" if sub.cancelled_at is not None else \
                refusal(lake, engine.registry, sub)
            if reason is None and not _same_policy(lake, engine.registry, sub, outbox_path(settings, delivery)):
                reason = ("what the subscriber may see changed since this delivery (its grant, its organisation or "
                          "the dataset's version): its rows are no longer served; the next delivery sends the "
                          "current view")
        if reason is not None:
            return refused(403, reason)
        path = outbox_path(settings, delivery)
        if not path.exists():
            return refused(404, "no such delivery")
        return FileResponse(path, media_type="text/csv", filename=path.name)
