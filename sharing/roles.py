"""Roles, and which pages and API calls each may reach: one table, checked at the server on every signed-in
request (the HTTP API's bearer-token dependency and the portal's ``Site.user``), refused by default.

* ``analyst``: queries its department's grants (catalogue, console, API), requests access, flags records;
  sees the city's KPI overview and its own department's figures.
* ``steward``: as an analyst, and decides its department's access requests and disputes (the role was
  called ``owner``; rows stored so are read as ``steward``).
* ``bureau``: as an analyst, and every department's KPIs: drill-downs, the items behind a figure, the
  duplicate-collection matrix, the export.
* ``operator``: administers users (the ``/admin`` pages and ``onesource users``) and the ops pages;
  reads data only as its department's grants allow, like anyone, and neither requests nor decides.

A route a signed-in user reaches must match a rule of :data:`RULES`, else it is refused for every role
(a new page or call is added here with the class it belongs to; tests/test_users_admin.py walks every
route of the app against this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

ANALYST, STEWARD, BUREAU, OPERATOR = "analyst", "steward", "bureau", "operator"
ROLES = (ANALYST, STEWARD, BUREAU, OPERATOR)
ALIASES = {"owner": STEWARD}
"""Role names stored before the roles were named as today."""

ADMINS = frozenset({OPERATOR})
"""Who administers users on the portal's /admin pages (the bureau's operators; the bureau role itself
watches KPIs and, kept apart from it, does not hand out accounts)."""

CLASSES: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),                       # governed reads: each role within its department's grants
    "request": frozenset({ANALYST, STEWARD, BUREAU}),  # access requests and disputes raised, and their lists
    "decide": frozenset({STEWARD}),                  # approve, refuse, revoke; resolve disputes
    "overview": frozenset({ANALYST, STEWARD, BUREAU}),  # the city's KPI overview and their definitions
    "department_kpis": frozenset({BUREAU}),          # a department's figures: the bureau any, others their own
    "all_kpis": frozenset({BUREAU}),                 # items behind figures, duplicates matrix, export
    "admin": ADMINS,                                 # users administration, ops pages
}
OWN_DEPARTMENT: dict[str, tuple[str, frozenset[str]]] = {
    "department_kpis": ("code", frozenset({ANALYST, STEWARD})),
}
"""class -> (path parameter, roles allowed when that parameter is the user's own department)."""

RULES: tuple[tuple[str, str, str], ...] = (
    # (methods, route path pattern (fnmatch, first match wins), class)
    ("GET", "/api/v1/catalogue", "read"),
    ("POST", "/api/v1/query", "read"),
    ("GET POST", "/api/v1/requests", "request"),
    ("POST", "/api/v1/requests/*", "decide"),
    ("GET POST", "/api/v1/disputes", "request"),
    ("GET", "/api/v1/deliveries", "read"),  # a subscription's webhook delivery (sharing.subscriptions.links)
    ("POST", "/catalogue/*/request", "request"),
    ("POST", "/catalogue/*/dispute", "request"),
    ("GET", "/catalogue", "read"),
    ("GET", "/catalogue/*", "read"),
    ("GET POST", "/console", "read"),
    ("GET", "/requests", "request"),
    ("POST", "/requests/*", "decide"),
    ("POST", "/disputes/*", "decide"),
    ("GET", "/dashboard", "overview"),
    ("GET", "/dashboard/definitions", "overview"),
    ("GET", "/dashboard/departments/*", "department_kpis"),
    ("GET", "/dashboard/*", "all_kpis"),
    ("GET POST", "/admin", "admin"),
    ("GET POST", "/admin/*", "admin"),
    ("GET POST", "/ops", "admin"),
    ("GET POST", "/ops/*", "admin"),
)

HOME = {ANALYST: "/catalogue", STEWARD: "/requests", BUREAU: "/dashboard", OPERATOR: "/admin/users"}
"""Where each role lands when the page it asked for (the sign-in's default, /dashboard) is not its own."""


def canonical(role: str) -> str:
    return ALIASES.get(role, role)


def endpoint_class(method: str, route: str) -> str | None:
    """The class of the route (its path template, e.g. ``/catalogue/{name}``) for ``method``; None: no rule."""
    for methods, pattern, kind in RULES:
        if method.upper() in methods.split() and fnmatchcase(route, pattern):
            return kind
    return None


@dataclass(frozen=True)
class Refusal:
    kind: str | None
    reason: str


def check(role: str, department: str, method: str, route: str, params: dict | None = None) -> Refusal | None:
    """None when ``role`` of ``department`` may call ``method route``; else why not (one sentence)."""
    role = canonical(role)
    kind = endpoint_class(method, route)
    if kind is None:
        return Refusal(None, f"{method} {route} is open to no role (sharing/roles.py RULES does not list it)")
    if role in CLASSES[kind]:
        return None
    own = OWN_DEPARTMENT.get(kind)
    if own and role in own[1] and (params or {}).get(own[0]) == department:
        return None
    allowed = sorted(CLASSES[kind] | (own[1] if own else frozenset()))
    mine = " (their own department's only)" if own and role in own[1] else ""
    return Refusal(kind, f"the {role} role may not do this ({kind.replace('_', ' ')}: "
                         f"{', '.join(allowed)}{mine}); ask an operator for a user with the right role")
