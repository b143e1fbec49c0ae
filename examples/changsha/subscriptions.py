"""The demo city's subscription (数据回流): a street office's user gets its residents delivered into a database.

The street user of the demo's jurisdiction grant (examples.changsha.city.JURISDICTION_USERS: 望月湖街道's civil
affairs clerk) subscribes to the resident register, delivered into a table of the PostgreSQL on this machine
(``ONESOURCE_DEMO_SUBSCRIBER_DSN`` names another; a password in it as ``${VARIABLE}``), else of the MariaDB;
when neither answers, the demo says it skipped the subscription and why. Made once: a rerun delivers what is
new to the same subscription.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings

CANDIDATES = (("postgres", "host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=3"),
              ("mysql", "host=127.0.0.1 port=3306 user=root database=test"))
"""Where the demo delivers, first that answers: the machine's PostgreSQL, then its MariaDB."""
DSN_ENV = "ONESOURCE_DEMO_SUBSCRIBER_DSN"


@dataclass(frozen=True)
class DemoSubscription:
    user: str
    organisation: str
    dataset: str
    where: str
    """The target (no password), or '' when skipped."""
    status: str
    """delivered | unchanged | refused | failed | skipped"""
    rows: int = 0
    message: str = ""


def _reachable(kind: str, dsn: str, environ: Mapping[str, str]) -> str | None:
    """None when the server answers, else why not (one line)."""
    from sharing.subscriptions.targets import DatabaseTarget

    target = DatabaseTarget(kind, {"dsn": dsn, "table": "probe"}, environ)
    try:
        target.connect().close()  # the same connection a delivery opens
    except Exception as exc:  # noqa: BLE001 - any failure means: not this one
        return str(exc).splitlines()[0]
    return None


def demo_subscription(settings: Settings, registry, environ: Mapping[str, str] | None = None) -> DemoSubscription | None:
    """Subscribe (once) and deliver; None when the demo city has no street user or dataset for it."""
    from examples.changsha.city import JURISDICTION_GRANT, JURISDICTION_USERS
    from lakehouse import Lake
    from sharing.subscriptions import store
    from sharing.subscriptions.deliver import deliver, key_problem
    from sharing.subscriptions.targets import target_for

    environ = os.environ if environ is None else environ
    department, dataset, _ = JURISDICTION_GRANT
    streets = [u for u in JURISDICTION_USERS if len(u[2]) > 6 and u[1] == department]
    if not streets or dataset not in {d.name for d in registry.datasets}:
        return None
    user, _, organisation = streets[0]
    given = environ.get(DSN_ENV)  # libpq says dbname=, the MySQL client database=
    candidates = [("postgres" if "dbname=" in given else "mysql", given)] if given else list(CANDIDATES)
    why = []
    for kind, dsn in candidates:
        problem = _reachable(kind, dsn, environ)
        if problem is None:
            break
        why.append(f"{kind}: {problem}")
    else:
        return DemoSubscription(user, organisation, dataset, "", "skipped",
                                message="no database to deliver into answered (" + "; ".join(why) + f"); set {DSN_ENV} "
                                        "to a PostgreSQL or MySQL DSN and run the demo again")
    table = f"street_{organisation}.residents" if kind == "postgres" else f"street_{organisation}_residents"
    target = {"dsn": dsn, "table": table}
    with Lake(settings.lake) as lake:
        existing = [s for s in store.subscriptions(lake, dataset=dataset, department=department)
                    if s.user == user and s.target == target]
        if existing:
            sub = existing[0]
        else:
            probe = store.Subscription("", department, user, dataset, kind, target, "changes")
            mode = "snapshot" if key_problem(lake, registry, probe) else "changes"
            try:
                sub = store.add(lake, registry, department=department, user=user, dataset=dataset, target_kind=kind,
                                target=target, mode=mode, by="demo")
            except store.SubscriptionError as exc:
                return DemoSubscription(user, organisation, dataset, "", "skipped", message=str(exc))
    outcome = deliver(settings, registry, sub, environ=environ)
    where = target_for(kind, target, environ).where()
    return DemoSubscription(user, organisation, dataset, where, outcome.status, outcome.rows,
                            f"{sub.mode} subscription {sub.subscription_id}" + (f": {outcome.message}"
                                                                                 if outcome.message else ""))
