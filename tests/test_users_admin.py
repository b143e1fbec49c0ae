"""Users and roles: ``onesource users add|list|disable|enable|reset-password|rotate-token`` (and ``reset``),
the operators' page /admin/users, every change in the audit log without a secret, and each role's rights
enforced at the server on every page and API call (the full role x endpoint class matrix, in-process over
FastAPI's test client)."""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import Lake
from onesource import cli
from onesource.serve import create_app
from schemas import load_registry
from sharing import roles
from sharing.audit import AuditLog, verify
from sharing.engine import GovernedEngine
from sharing.users import (
    UserError,
    accounts,
    add_user,
    authenticate,
    create_user,
    disable_user,
    enable_user,
    reset_password,
    rotate_token,
    still_valid,
    user_by_token,
)
from tests.helpers import write_registry
from tests.support.portal import signed_in

DEPARTMENT, OTHER = "tax", "amr"

# What each role may do, written out by hand (the spec; sharing.roles.CLASSES must say the same).
MAY = {
    "read": {"analyst", "steward", "bureau", "operator"},
    "request": {"analyst", "steward", "bureau"},
    "decide": {"steward"},
    "overview": {"analyst", "steward", "bureau"},
    "department_kpis": {"bureau"},  # and analysts and stewards for their own department
    "all_kpis": {"bureau"},
    "admin": {"operator"},
}
PUBLIC = {"/login", "/logout", "/", "/healthz", "/openapi.json", "/redoc"}
"""Routes anyone may call: they sign in, sign out, redirect, or describe the API (and /docs*: its pages)."""
SAMPLE = {"name": "firms", "code": DEPARTMENT, "request_id": "r-nope", "action": "approve", "dispute_id": "d-nope",
          "kpi": "sharing_rate", "fmt": "csv"}
FORM = {"purpose": "p", "description": "d", "key_value": "1", "sql": "SELECT 1", "reason": "r", "resolution": "r",
        "name": "matrix_user", "department": DEPARTMENT, "role": "analyst", "days": "30"}
JSON = {"sql": "SELECT 1", "dataset": "firms", "purpose": "p", "key_value": "1", "description": "d", "reason": "r"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Two departments and the bureau's, with this month's KPIs published (the dashboard's pages answer),
    and a user of each role in tax."""
    from examples.changsha.city import BUREAU, platform_dataset_entries
    from metrics.kpis import Period
    from metrics.publish import publish_periods
    from tests.helpers import DEPARTMENTS, firms_dataset

    settings = Settings(home=tmp_path_factory.mktemp("users") / "home")
    bureau = {"code": BUREAU[0], "name": BUREAU[1], "name_en": BUREAU[2], "systems": [{"code": BUREAU[3], "name": BUREAU[4]}]}
    write_registry(settings.registry_dir, [firms_dataset(), *platform_dataset_entries({"uscc", "enterprise_name"})],
                   departments={"departments": [*DEPARTMENTS["departments"], bureau]})
    creds = {}
    with Lake(settings.lake) as lake:
        publish_periods(lake, load_registry(settings.registry_dir), [Period.month()])
        for role in roles.ROLES:
            creds[role] = dict(zip(("password", "token"), create_user(lake, DEPARTMENT, f"m_{role}", role), strict=True),
                               user=f"m_{role}")
    return settings, creds


@pytest.fixture(scope="module")
def app(home):
    settings, creds = home
    engine = GovernedEngine(settings, load_registry(settings.registry_dir), persistent=True)
    yield create_app(engine), creds, engine
    engine.close()


def cli_run(settings: Settings, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    code = cli.main(["users", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- the command ----------------------------------------------------------------------------------------------
def test_add_list_and_each_secret_alone(tmp_path, monkeypatch, capsys):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    code, _, err = cli_run(settings, monkeypatch, capsys, "add", "edu_analyst", "--department", "edu")
    assert code == 1 and "no department 'edu'" in err and "known: amr, tax" in err and "Traceback" not in err
    code, _, err = cli_run(settings, monkeypatch, capsys, "add", "tax_analyst")
    assert code == 1 and "--department" in err
    code, out, _ = cli_run(settings, monkeypatch, capsys, "add", "tax_steward", "--department", "tax", "--role",
                           "steward", "--json", "--by", "ops_wang")
    first = json.loads(out)
    assert code == 0 and first["user"] == "tax_steward" and first["password"] and first["token"]
    code, _, err = cli_run(settings, monkeypatch, capsys, "add", "tax_steward", "--department", "tax")
    assert code == 1 and "exists already" in err

    with Lake(settings.lake, read_only=True) as lake:
        assert authenticate(lake, "tax_steward", first["password"]).role == "steward"
    code, out, _ = cli_run(settings, monkeypatch, capsys, "reset-password", "tax_steward")
    password = re.search(r"password: (\S+)", out).group(1)
    assert code == 0 and "token" not in out.split("\n", 1)[1]
    with Lake(settings.lake, read_only=True) as lake:  # a new password, the same token
        assert authenticate(lake, "tax_steward", first["password"]) is None
        assert authenticate(lake, "tax_steward", password) is not None
        assert user_by_token(lake, first["token"]).name == "tax_steward"
    code, out, _ = cli_run(settings, monkeypatch, capsys, "rotate-token", "tax_steward")
    token = re.search(r"token: (\S+)", out).group(1)
    assert code == 0 and "password" not in out.split("\n", 1)[1]
    with Lake(settings.lake, read_only=True) as lake:  # a new token, the same password
        assert user_by_token(lake, first["token"]) is None and user_by_token(lake, token).name == "tax_steward"
        assert authenticate(lake, "tax_steward", password) is not None

    assert cli_run(settings, monkeypatch, capsys, "disable", "tax_steward", "--by", "ops_li")[0] == 0
    code, out, _ = cli_run(settings, monkeypatch, capsys, "list", "--json")
    [row] = json.loads(out)
    assert row["user"] == "tax_steward" and row["department"] == "tax" and row["role"] == "steward"
    assert row["enabled"] is False and row["created"] < row["last_change"] and row["changed_by"] == "ops_li"
    code, _, err = cli_run(settings, monkeypatch, capsys, "reset-password", "tax_steward")
    assert code == 1 and "is disabled" in err and "users enable tax_steward" in err
    assert cli_run(settings, monkeypatch, capsys, "enable", "tax_steward")[0] == 0
    with Lake(settings.lake, read_only=True) as lake:
        assert authenticate(lake, "tax_steward", password) is not None  # its credentials came back with it
    code, out, _ = cli_run(settings, monkeypatch, capsys, "list")
    assert "tax_steward" in out and "steward" in out and "yes" in out
    # the old command stays: both at once
    code, out, _ = cli_run(settings, monkeypatch, capsys, "reset", "tax_steward")
    assert code == 0 and re.search(r"password: \S+", out) and re.search(r"token: \S+", out)
    code, _, err = cli_run(settings, monkeypatch, capsys, "rotate-token", "nobody")
    assert code == 1 and "no user 'nobody'" in err

    # every change audited, by whom, to whom; no secret anywhere in the log
    log = AuditLog.of(settings)
    changes = [e for e in log.entries() if e.get("kind") == "users"]
    assert [e["action"] for e in changes] == ["add", "reset-password", "rotate-token", "disable", "enable", "reset"]
    assert changes[0]["user"] == "ops_wang" and changes[0]["subject"] == "tax_steward" and changes[0]["role"] == "steward"
    text = log.path.read_text()
    assert first["password"] not in text and first["token"] not in text and password not in text and token not in text
    assert verify(log).ok


def test_add_refuses_bad_names_and_roles(home):
    settings, _ = home
    with Lake(settings.lake) as lake:
        for name in ("Tax", "1tax", "tax analyst", "tax;drop", "", "x" * 64):
            with pytest.raises(UserError, match="not allowed"):
                add_user(lake, ["tax"], name, "tax", "analyst", by="t", audit=None)
        with pytest.raises(UserError, match="no role 'admin'"):
            add_user(lake, ["tax"], "tax_x", "tax", "admin", by="t", audit=None)


OPS = st.lists(st.sampled_from(["disable", "enable", "reset-password", "rotate-token"]), min_size=1, max_size=4)


@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, role=st.sampled_from(["analyst", "steward", "bureau", "operator", "owner"]))
def test_any_sequence_of_changes_leaves_exactly_the_last_secrets_working(home, ops, role):
    """A model of the account: enabled or not, its current password and token; the lake must agree after
    every step (a reset password keeps the token, a rotated token keeps the password, a disabled user signs
    in with neither, an enabled one with both again); a step the state refuses changes nothing."""
    settings, _ = home
    name = f"h{abs(hash((tuple(ops), role))) % 10**9}_{len(ops)}"
    with Lake(settings.lake) as lake:
        if any(a.name == name for a in accounts(lake)):
            return
        password, token = add_user(lake, ["tax", "amr"], name, "amr", role, by="model", audit=None)
        enabled, old = True, []
        for op in ops:
            fn = {"disable": disable_user, "enable": enable_user}.get(op)
            refused = (op == "enable") == enabled
            if refused:
                with pytest.raises(UserError):
                    (fn or {"reset-password": reset_password, "rotate-token": rotate_token}[op])(lake, name, by="m")
            elif op == "reset-password":
                old.append(password)
                password = reset_password(lake, name, by="m")
            elif op == "rotate-token":
                old.append(token)
                token = rotate_token(lake, name, by="m")
            else:
                fn(lake, name, by="m")
                enabled = not enabled
            assert (authenticate(lake, name, password) is not None) == enabled
            assert (user_by_token(lake, token) is not None) == enabled
        assert all(authenticate(lake, name, p) is None and user_by_token(lake, p) is None for p in old)
        [acc] = [a for a in accounts(lake) if a.name == name]
        assert acc.enabled == enabled and acc.role == roles.canonical(role) and acc.department == "amr"


def test_the_demo_makes_each_departments_accounts_and_a_new_departments_on_rerun(tmp_path):
    from examples.changsha.runner import _demo_users
    from tests.helpers import DEPARTMENTS

    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    _demo_users(settings, load_registry(settings.registry_dir))
    analysts = json.loads((settings.home / "demo-credentials.json").read_text())
    stewards = json.loads((settings.home / "demo-owner-credentials.json").read_text())
    assert set(analysts) == set(stewards) == {"amr", "tax"}
    with Lake(settings.lake, read_only=True) as lake:
        assert {(a.name, a.role) for a in accounts(lake)} == {
            ("amr_analyst", "analyst"), ("tax_analyst", "analyst"), ("amr_owner", "steward"), ("tax_owner", "steward")}
    edu = {"code": "edu", "name": "教育局", "name_en": "Education", "systems": [{"code": "edu_sys", "name": "学籍系统"}]}
    write_registry(settings.registry_dir, departments={"departments": [*DEPARTMENTS["departments"], edu]})
    _demo_users(settings, load_registry(settings.registry_dir))
    again = json.loads((settings.home / "demo-credentials.json").read_text())
    assert again["tax"] == analysts["tax"] and again["edu"]["user"] == "edu_analyst"  # kept; the new one added
    with Lake(settings.lake, read_only=True) as lake:
        assert authenticate(lake, "edu_analyst", again["edu"]["password"]).department == "edu"
        assert authenticate(lake, "tax_analyst", analysts["tax"]["password"]) is not None
    made = [e for e in AuditLog.of(settings).entries() if e.get("kind") == "users"]
    assert len(made) == 6 and {e["user"] for e in made} == {"demo"}


# --- roles at the server --------------------------------------------------------------------------------------
def test_the_table_says_what_the_roles_are_meant_to_do():
    assert {k: set(v) for k, v in roles.CLASSES.items()} == MAY
    assert roles.canonical("owner") == "steward"


def _routes(app):
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method in ("HEAD", "OPTIONS") or route.path in PUBLIC or route.path.startswith("/docs") or not hasattr(route, "endpoint"):
                continue
            yield method, route.path


def _call(client: TestClient, method: str, path: str, params: dict, headers: dict | None = None):
    url = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: params[m.group(1)], path)
    if method == "GET":
        return client.get(url, headers=headers, follow_redirects=False)
    if path.startswith("/api/"):
        return client.post(url, json=JSON, headers=headers, follow_redirects=False)
    return client.post(url, data=FORM, headers=headers, follow_redirects=False)


def test_every_route_needs_a_sign_in_and_has_a_rule(app):
    application, _, _ = app
    anonymous = TestClient(application)
    found = list(_routes(application))
    assert len(found) > 20
    for method, path in found:
        assert roles.endpoint_class(method, path) is not None, f"{method} {path}: add it to sharing.roles.RULES"
        r = _call(anonymous, method, path, SAMPLE)
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, path, r.status_code)
        else:  # a page: sign in first (a POST without a session is sent there too, nothing runs)
            assert r.status_code in (303, 403) and (r.status_code == 403 or "/login" in r.headers["location"]), \
                (method, path, r.status_code)
    # an unlisted route is refused to every role
    assert all(roles.check(role, DEPARTMENT, "GET", "/secret/new-page") is not None for role in roles.ROLES)


@pytest.mark.parametrize("kind", sorted(MAY))
@pytest.mark.parametrize("role", roles.ROLES)
def test_role_by_endpoint_class(app, role, kind):
    application, creds, _ = app
    who = creds[role]
    page = signed_in(application, who)
    api = TestClient(application)
    bearer = {"Authorization": f"Bearer {who['token']}"}
    routes = [(m, p) for m, p in _routes(application) if roles.endpoint_class(m, p) == kind]
    assert routes, kind
    for method, path in routes:
        for code in ((DEPARTMENT, OTHER) if "{code}" in path else (DEPARTMENT,)):
            params = {**SAMPLE, "code": code, "name": f"m_{role}_x" if path.startswith("/admin") else SAMPLE["name"]}
            may = role in MAY[kind] or (kind == "department_kpis" and role in ("analyst", "steward")
                                        and code == DEPARTMENT)
            r = _call(api if path.startswith("/api/") else page, method, path, params,
                      bearer if path.startswith("/api/") else None)
            where = f"{role} {method} {path} ({code})"
            if may:
                assert r.status_code not in (401, 403), f"{where}: {r.status_code} {r.text[:300]}"
                assert not (r.status_code == 303 and "/login" in r.headers.get("location", "")), where
            elif method == "GET" and path == "/dashboard":  # the sign-in's landing page: the role's own home
                assert r.status_code == 303 and r.headers["location"] == roles.HOME[role], where
            else:
                assert r.status_code == 403 and refused_by_role(r), f"{where}: {r.status_code} {r.text[:300]}"


def refused_by_role(r) -> bool:
    return r.status_code == 403 and any(m in r.text for m in ("role may not do this", "无权执行此操作"))


def test_a_refusal_names_the_role_in_the_readers_language(app):
    application, creds, _ = app
    client = signed_in(application, creds["analyst"])
    zh = client.get("/admin/users?lang=zh")
    assert zh.status_code == 403 and "分析人员" in zh.text and "运维管理员" in zh.text
    en = client.get("/admin/users?lang=en")
    assert "The analyst role may not do this" in en.text
    api = TestClient(application).post("/api/v1/requests/x/approve", json={},
                                       headers={"Authorization": f"Bearer {creds['analyst']['token']}"})
    assert api.status_code == 403 and "steward" in api.json()["detail"]


# --- the operators' page --------------------------------------------------------------------------------------
def test_operator_page_adds_resets_rotates_and_disables(app):
    application, creds, engine = app
    client = signed_in(application, creds["operator"])
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/admin/users"
    listing = client.get("/admin/users?lang=en")
    assert listing.status_code == 200 and "m_bureau" in listing.text and "Tax (tax)" in listing.text
    assert "税务局" in client.get("/admin/users?lang=zh").text
    refused = client.post("/admin/users", data={"name": "edu_x", "department": "edu", "role": "analyst"})
    assert refused.status_code == 400 and "no department 'edu'" in html.unescape(refused.text)
    assert "known: amr, dsj, tax" in refused.text
    added = client.post("/admin/users", data={"name": "page_user", "department": OTHER, "role": "analyst"})
    assert added.status_code == 200 and added.headers["cache-control"] == "no-store"
    password = re.search(r'id="shown-password">([^<]+)<', added.text).group(1)
    token = re.search(r'id="shown-token">([^<]+)<', added.text).group(1)
    # the new user signs in at once, and queries with the token
    user_client = signed_in(application, {"user": "page_user", "password": password})
    assert user_client.get("/console").status_code == 200
    assert TestClient(application).get("/api/v1/catalogue", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    rotated = client.post("/admin/users/page_user/rotate-token")
    new_token = re.search(r'id="shown-token">([^<]+)<', rotated.text).group(1)
    assert 'id="shown-password"' not in rotated.text and new_token != token
    assert TestClient(application).get("/api/v1/catalogue", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert user_client.get("/console").status_code == 200  # a new token leaves the session alone
    reset = client.post("/admin/users/page_user/reset-password")
    new_password = re.search(r'id="shown-password">([^<]+)<', reset.text).group(1)
    assert 'id="shown-token"' not in reset.text
    assert user_client.get("/console", follow_redirects=False).status_code == 303  # a new password ends sessions
    user_client = signed_in(application, {"user": "page_user", "password": new_password})

    done = client.post("/admin/users/page_user/disable", follow_redirects=False)
    assert done.status_code == 303 and "notice=" in done.headers["location"]
    assert 'data-user="page_user" data-enabled="false"' in client.get("/admin/users").text
    assert user_client.get("/console", follow_redirects=False).status_code == 303
    bad = TestClient(application).post("/login", data={"username": "page_user", "password": new_password})
    assert "用户名或密码错误" in bad.text
    assert client.post("/admin/users/m_operator/disable").status_code == 400  # not oneself
    assert client.post("/admin/users/page_user/enable", follow_redirects=False).status_code == 303
    assert client.post("/admin/users/page_user/explode").status_code == 404

    # a form from elsewhere, or without the session's token, changes nothing
    forged = TestClient(application, cookies=client.cookies)
    assert forged.post("/admin/users/page_user/disable").status_code == 403
    assert client.post("/admin/users/page_user/disable", headers={"Origin": "http://evil.example"}).status_code == 403
    assert 'data-user="page_user" data-enabled="true"' in client.get("/admin/users").text

    engine.audit.sync()
    changes = [e for e in engine.audit.entries() if e.get("kind") == "users" and e["subject"] == "page_user"]
    assert [(e["action"], e["user"], e["department"]) for e in changes] == [
        (a, "m_operator", DEPARTMENT) for a in ("add", "rotate-token", "reset-password", "disable", "enable")]
    text = engine.audit.path.read_text()
    assert all(secret not in text for secret in (password, token, new_token, new_password))


# --- the page in a real browser (slow) ------------------------------------------------------------------------
@pytest.mark.slow
def test_admin_page_in_chromium_adds_then_disables_and_sign_in_is_refused(home, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from tests.helpers import free_port, wait_for_port

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is needed (apt-get install chromium); .ci/run installs it")
    settings, creds = home
    shots = Path(os.environ.get("ONESOURCE_SCREENSHOTS", "/tmp/onesource-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(port),
                             "--pg-port", str(free_port())], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    errors: list[str] = []
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))

            def sign_in(user: str, password: str) -> None:
                page.context.clear_cookies()
                page.goto(f"{base}/login?lang=en")
                page.fill("input[name=username]", user)
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")

            sign_in(creds["operator"]["user"], creds["operator"]["password"])
            page.wait_for_url(f"{base}/admin/users")  # an operator lands on its own page
            page.fill("#add-user input[name=name]", "browser_user")
            page.select_option("#add-user select[name=department]", DEPARTMENT)
            page.select_option("#add-user select[name=role]", "analyst")
            page.click("#add-user button[type=submit]")
            password = page.locator("#shown-password").inner_text()
            assert page.locator("#shown-token").inner_text() and password
            page.screenshot(path=str(shots / "admin-users-added.png"), full_page=True)
            page.click("tr[data-user=browser_user] form.disable button")
            page.wait_for_selector("tr[data-user=browser_user][data-enabled=false]")
            assert "browser_user" in page.locator(".notice").inner_text()
            page.screenshot(path=str(shots / "admin-users-disabled.png"), full_page=True)

            sign_in("browser_user", password)
            assert page.locator(".error").is_visible() and "/login" in page.url
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == []


@pytest.mark.parametrize("role", roles.ROLES)
def test_every_link_a_role_is_shown_opens_for_it(app, role):
    """Crawl the portal as each role from its home page: every in-site link on every page it reaches opens
    (never a 403 for a link the page itself offered); the top links are the role's own (an operator sees
    user administration, an analyst no other department's figures)."""
    application, creds, _ = app
    client = signed_in(application, creds[role])
    seen, queue, shown = set(), [roles.HOME[roles.canonical(role)], "/catalogue", "/dashboard"], set()
    while queue and len(seen) < 60:
        href = queue.pop(0)
        if href in seen:
            continue
        seen.add(href)
        r = client.get(href, follow_redirects=True)
        assert r.status_code != 403, f"{role}: {href} was linked but refused: {r.text[:200]}"
        if "text/html" not in r.headers.get("content-type", ""):
            continue
        for link in re.findall(r'href="(/[^"#]*)"', r.text):
            link = link.replace("&amp;", "&")
            if link.startswith(("/dashboard", "/catalogue", "/requests", "/console", "/admin")) \
                    and "export." not in link and "lang=" not in link:
                shown.add(link.split("?")[0])
                queue.append(link)
    assert ("/admin/users" in shown) == (role == roles.OPERATOR)
    others = {s for s in shown if s.startswith("/dashboard/departments/") and not s.endswith(f"/{DEPARTMENT}")}
    assert not others or role == roles.BUREAU, others


def test_set_role_changes_what_the_user_may_do_ends_its_portal_sessions_and_is_audited(tmp_path, monkeypatch,
                                                                                       capsys):
    """An operator gives a user another role (a demo home's dsj_analyst made bureau, say): the token reads with
    the new role at once, a portal session from before ends, the change is in the audit log; no secret changes."""
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    code, out, _ = cli_run(settings, monkeypatch, capsys, "add", "tax_a", "--department", "tax", "--json")
    made = json.loads(out)
    with Lake(settings.lake, read_only=True) as lake:
        before = authenticate(lake, "tax_a", made["password"])
    code, out, err = cli_run(settings, monkeypatch, capsys, "set-role", "tax_a", "--role", "bureau", "--by", "ops_wang")
    assert code == 0 and "analyst -> bureau" in out, err
    with Lake(settings.lake, read_only=True) as lake:
        assert user_by_token(lake, made["token"]).role == "bureau"
        assert authenticate(lake, "tax_a", made["password"]).role == "bureau"  # the password is unchanged
        assert not still_valid(lake, before)  # the portal session signed in as an analyst is over
    for argv, message in ((("set-role", "tax_a", "--role", "bureau"), "has the role bureau already"),
                          (("set-role", "nobody", "--role", "steward"), "no user 'nobody'"),
                          (("set-role", "tax_a"), "say which role")):
        code, _, err = cli_run(settings, monkeypatch, capsys, *argv)
        assert code == 1 and message in err and "Traceback" not in err, err
    entries = [e for e in AuditLog.of(settings).entries() if e.get("kind") == "users" and e.get("subject") == "tax_a"]
    assert entries[-1]["action"] == "set-role (was analyst)" and entries[-1]["role"] == "bureau"
    assert entries[-1]["user"] == "ops_wang" and "password" not in json.dumps(entries[-1])
