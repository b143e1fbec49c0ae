"""Users administration for the bureau's operators (``/admin/users``), and the portal's role check.

The page does what ``onesource users`` does: list the users, add one (its department must be in the
registry), disable or enable one, give a new password or a new token. A new password or token is shown
once, on the answer to the form that made it (never in a URL, never stored in clear; ``no-store``), and
every change goes to the audit log with who did it (sharing.users). Only the roles of
:data:`sharing.roles.ADMINS` (operators) reach these pages: :func:`authorise` checks every signed-in page
against sharing.roles, and a refused sign-in landing page (``/dashboard`` for an operator) goes to the
role's own home instead of a 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lakehouse import Lake
from portal.labels import LABELS
from sharing import roles, users
from sharing.users import User

if TYPE_CHECKING:
    from portal.web import Site

LANDING = ("/", "/dashboard")
"""Where a sign-in lands by default: a role that may not open it is sent to its own home."""
ACTIONS = ("disable", "enable", "reset-password", "rotate-token")

ADMIN_LABELS = {
    "zh": {
        "admin_users": "用户管理", "admin_add": "新增用户", "admin_add_button": "新增", "admin_role": "角色",
        "admin_enabled": "状态", "admin_on": "启用", "admin_off": "已停用", "admin_created": "创建时间",
        "admin_changed": "最近变更", "admin_by": "操作人", "admin_actions": "操作",
        "admin_organisation": "所属机构（辖区）", "admin_city": "全市",
        "admin_disable": "停用", "admin_enable": "启用", "admin_reset": "重置密码", "admin_rotate": "更换令牌",
        "admin_once": "以下凭据只显示这一次，系统只保存其哈希值：请现在交给用户。",
        "admin_token": "令牌（HTTP API）", "admin_password": "密码（门户与 PostgreSQL 接口）",
        "admin_done": "用户 {user}：{action}", "admin_self": "不能停用自己的账号",
        "admin_note": "变更均记入审计日志（操作人、操作、对象；不含密码与令牌）。命令行：onesource users。",
        "admin_forbidden": "角色「{role}」无权执行此操作（{kind}：仅限 {allowed}）；请联系运维管理员分配合适角色的用户。",
        "admin_no_rule": "该页面未向任何角色开放（sharing/roles.py 的 RULES 未列出）。",
        "role_analyst": "分析人员", "role_steward": "数据管理员（审批）", "role_bureau": "大数据局（考核）",
        "role_operator": "运维管理员",
        "kind_read": "查询", "kind_request": "申请与异议", "kind_decide": "审批", "kind_overview": "考核总览",
        "kind_department_kpis": "部门考核明细（本部门除外）", "kind_all_kpis": "全部考核指标",
        "kind_admin": "用户与运维管理",
    },
    "en": {
        "admin_users": "Users", "admin_add": "Add a user", "admin_add_button": "Add", "admin_role": "Role",
        "admin_enabled": "State", "admin_on": "enabled", "admin_off": "disabled", "admin_created": "Created",
        "admin_changed": "Last change", "admin_by": "By", "admin_actions": "Actions",
        "admin_organisation": "Organisation (jurisdiction)", "admin_city": "the whole city",
        "admin_disable": "Disable", "admin_enable": "Enable", "admin_reset": "Reset password",
        "admin_rotate": "Rotate token",
        "admin_once": "These credentials are shown this once; only their hashes are kept: hand them over now.",
        "admin_token": "Token (HTTP API)", "admin_password": "Password (portal and PostgreSQL endpoint)",
        "admin_done": "user {user}: {action}", "admin_self": "You cannot disable your own account",
        "admin_note": "Every change is written to the audit log (who, what, to whom; never a password or token). "
                      "Command line: onesource users.",
        "admin_forbidden": "The {role} role may not do this ({kind}: {allowed} only); ask an operator for a user "
                           "with the right role.",
        "admin_no_rule": "This page is open to no role (sharing/roles.py RULES does not list it).",
        "role_analyst": "analyst", "role_steward": "steward (decides requests)", "role_bureau": "bureau (KPIs)",
        "role_operator": "operator",
        "kind_read": "queries", "kind_request": "requests and disputes", "kind_decide": "decisions",
        "kind_overview": "KPI overview", "kind_department_kpis": "another department's KPIs",
        "kind_all_kpis": "all KPIs", "kind_admin": "users and operations",
    },
}
for _lang, _labels in ADMIN_LABELS.items():  # the pages' labels: one table (portal.labels), these beside
    LABELS[_lang].update({k: v for k, v in _labels.items() if k not in LABELS[_lang]})


class _Elsewhere(Exception):
    """A refused landing page: answered with a redirect to the role's own home."""

    def __init__(self, path: str):
        self.path = path


def authorise(request: Request, user: User) -> None:
    """Refuse ``user`` a page its role may not open (sharing.roles): 403 in the reader's language, or, for
    the sign-in's landing page, a redirect to the role's home."""
    route = request.scope.get("route")
    refusal = roles.check(user.role, user.department, request.method, getattr(route, "path", request.url.path),
                          request.path_params)
    if refusal is None:
        return
    if request.method == "GET" and request.url.path in LANDING and user.role in roles.HOME:
        raise _Elsewhere(roles.HOME[user.role])
    lang = request.query_params.get("lang") or request.cookies.get("onesource_lang") or "zh"
    t = LABELS[lang if lang in LABELS else "zh"]
    if refusal.kind is None:
        raise HTTPException(status_code=403, detail=t["admin_no_rule"])
    allowed = sorted(roles.CLASSES[refusal.kind] | roles.OWN_DEPARTMENT.get(refusal.kind, ("", frozenset()))[1])
    raise HTTPException(status_code=403, detail=t["admin_forbidden"].format(
        role=t.get(f"role_{user.role}", user.role), kind=t[f"kind_{refusal.kind}"],
        allowed=", ".join(t[f"role_{r}"] for r in allowed)))


def outside_reach(lake: Lake, registry, operator: User, organisation: str | None,
                  department: str | None) -> str | None:
    """Why ``operator`` may not administer a user of ``organisation`` and ``department`` (None: it may). An
    operator of the whole city administers anyone; one of a district or street only users of its own
    department and of organisations under its own: never a user of the whole city, of a neighbour's
    organisation or of another department, whose sign-in would read rows the operator cannot."""
    from sharing.grants import NOTHING, jurisdiction

    mine = users.organisation_of(lake.con, operator.name)
    reach = jurisdiction(registry, mine)
    if reach is None:
        return None
    if department != operator.department:
        return (f"{operator.name} administers users of its own department {operator.department} (and its "
                f"organisation {mine}), not of {department}; an operator of the city does that")
    theirs = jurisdiction(registry, organisation) if organisation else None
    if reach != NOTHING and theirs not in (None, NOTHING) and theirs.startswith(reach):
        return None
    return (f"{operator.name} administers users of its organisation {mine} and the organisations under it, not "
            f"{'the whole city' if not organisation else 'organisation ' + organisation}; an operator of the city "
            "does that")


def register(app: FastAPI, site: Site) -> None:
    engine = site.engine

    @app.exception_handler(_Elsewhere)
    def _home(_request: Request, exc: _Elsewhere) -> RedirectResponse:
        return RedirectResponse(exc.path, status_code=303)

    def listing(request: Request, user: User, *, notice: str = "", error: str = "", shown: dict | None = None,
                status_code: int = 200) -> HTMLResponse:
        with engine.cursor() as lake:
            found = users.accounts(lake)
            if users.organisation_of(lake.con, user.name) is not None:  # a district's or street's operator
                found = [a for a in found if a.name == user.name
                         or outside_reach(lake, engine.registry, user, a.organisation, a.department) is None]
        en = site.lang(request) == "en"
        names = {d.code: (d.name_en or d.name) if en else d.name for d in engine.registry.departments}
        organisations = {o.code: (o.name_en or o.name) if en else o.name for o in engine.registry.organisations}
        response = site.page(request, "admin_users.html", status_code=status_code, user=user, accounts=found,
                             departments=names, organisations=organisations, roles=roles.ROLES, notice=notice,
                             error=error, shown=shown)
        if shown:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/admin", include_in_schema=False)
    def admin_home(request: Request) -> RedirectResponse:
        site.user(request)
        return RedirectResponse("/admin/users", status_code=303)

    @app.get("/admin/users", include_in_schema=False)
    def user_list(request: Request, notice: str = "") -> HTMLResponse:
        return listing(request, site.user(request), notice=notice)

    @app.post("/admin/users", include_in_schema=False)
    def add(request: Request, name: str = Form(...), department: str = Form(...),
            role: str = Form(roles.ANALYST), organisation: str = Form("")) -> Response:
        user = site.user(request)
        name = name.strip()
        try:
            with Lake(engine.settings.lake) as lake:
                refused = outside_reach(lake, engine.registry, user, organisation.strip() or None, department)
                if refused:
                    raise users.UserError(refused)
                password, token = users.add_user(lake, [d.code for d in engine.registry.departments], name,
                                                 department, role, by=user.name, by_department=user.department,
                                                 audit=engine.audit, organisation=organisation.strip() or None,
                                                 organisations=[o.code for o in engine.registry.organisations])
        except users.UserError as exc:
            return listing(request, user, error=str(exc), status_code=400)
        return listing(request, user, shown={"user": name, "password": password, "token": token})

    @app.post("/admin/users/{name}/{action}", include_in_schema=False)
    def act(request: Request, name: str, action: str) -> Response:
        user = site.user(request)
        if action not in ACTIONS:
            raise HTTPException(status_code=404, detail=f"no action {action!r}: {', '.join(ACTIONS)}")
        t = LABELS[site.lang(request)]
        if action == "disable" and name == user.name:
            return listing(request, user, error=t["admin_self"], status_code=400)
        who = {"by": user.name, "by_department": user.department, "audit": engine.audit}
        try:
            with Lake(engine.settings.lake) as lake:
                target = next((a for a in users.accounts(lake) if a.name == name), None)
                refused = outside_reach(lake, engine.registry, user, target.organisation if target else None,
                                        target.department if target else None)
                if refused:
                    raise users.UserError(refused)
                if action == "disable":
                    users.disable_user(lake, name, **who)
                elif action == "enable":
                    users.enable_user(lake, name, **who)
                elif action == "reset-password":
                    return listing(request, user, shown={"user": name,
                                                         "password": users.reset_password(lake, name, **who)})
                else:
                    return listing(request, user, shown={"user": name, "token": users.rotate_token(lake, name, **who)})
        except users.UserError as exc:
            return listing(request, user, error=str(exc), status_code=400)
        label = t["admin_disable" if action == "disable" else "admin_enable"]
        return RedirectResponse(f"/admin/users?notice={quote(t['admin_done'].format(user=name, action=label))}",
                                status_code=303)
