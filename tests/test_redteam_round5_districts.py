"""Red team, round 5 (issue 24): a street's user reaching a neighbour's or its district's rows, and a careless
operator's organisations.yaml and subscriptions.

Each test is a finding, failing before its fix:
* a webhook delivery's signed link was served to any user of the subscribing department, so a neighbouring
  street's clerk of the same department holding the link read the other street's rows (sharing.subscriptions.links);
* two subscriptions could write into one drop folder (or one database table): the same file name for the same
  dataset and snapshot, so one street's file held the other street's rows (sharing.subscriptions.store);
* a DSN written as a URI with its password (postgresql://user:pw@host/db) was stored in the lake in clear;
* organisations.yaml: a street's code ending in 000 (430104000) is its district's code, so its users read the
  whole district; a second parentless city-level organisation read the whole lake (schemas.checks).
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import re
import threading

import pytest

from lakehouse import Lake
from schemas.model import division_prefix
from sharing.grants import add_grant, jurisdiction
from sharing.subscriptions import store
from sharing.subscriptions.deliver import deliver
from sharing.subscriptions.store import SubscriptionError, check_secrets
from sharing.users import create_user
from tests.helpers import drop, load
from tests.support.jurisdictions import CITY, TREE, messages, organisations, registry_at

ROWS = [("e1", "430104001001", 1, "x"), ("e2", "430104002003", 2, "y"), ("e3", "430102001001", 3, "z"),
        ("e4", "430104001002", 4, "w")]
PEOPLE = {"moon": "430104001", "yuelu": "430104002", "district": "430104", "city": None}


def _street_city(settings):
    """The places dataset published with ROWS, a grant to tax scoped to the jurisdiction, and tax's users of two
    streets, their district and the city; returns (registry, user -> token)."""
    registry, issues = registry_at(settings.registry_dir)
    assert not issues, messages(issues)
    drop(settings, "amr/places/1.csv", "id,division,n,secret\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS))
    assert [r.status for r in load(settings, "places")] == ["published"]
    tokens = {}
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "tax", "places", columns=["id", "division", "n"], scope="jurisdiction")
        for name, code in PEOPLE.items():
            _, tokens[name] = create_user(lake, "tax", f"tax_{name}", organisation=code)
    return registry, tokens


def _ids_under(code: str | None) -> set[str]:
    return {r[0] for r in ROWS if code is None or r[1].startswith(code)}


# --- subscriptions ----------------------------------------------------------------------------------------------

class _Hook(http.server.BaseHTTPRequestHandler):
    got: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        _Hook.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow  # a load, a delivery through a local webhook receiver, the HTTP API in process (~10 s)
def test_a_webhook_link_serves_no_neighbouring_streets_user_of_the_same_department(settings):
    """望月湖's clerk subscribes by webhook; the link, leaked to 岳麓街道's clerk of the same department, gave
    望月湖's rows to a user whose governed queries never show them. Now: the subscriber and the users whose
    jurisdiction contains its street (the district's, the city's) fetch it; the neighbour gets a 404."""
    from fastapi.testclient import TestClient

    from onesource.serve import create_app
    from sharing.engine import GovernedEngine

    registry, tokens = _street_city(settings)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Lake(settings.lake) as lake:
            sub = store.add(lake, registry, department="tax", user="tax_moon", dataset="places", target_kind="webhook",
                            target={"url": f"http://127.0.0.1:{server.server_port}/hook", "api_url": "http://api.test"},
                            mode="snapshot")
        _Hook.got.clear()
        outcome = deliver(settings, registry, sub, backoff=0.05)
    finally:
        server.shutdown()
    assert (outcome.status, outcome.rows) == ("delivered", len(_ids_under(PEOPLE["moon"])))
    path = _Hook.got[-1]["link"].removeprefix("http://api.test")
    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        client = TestClient(create_app(engine))

        def fetched(name: str):
            answer = client.get(path, headers={"Authorization": f"Bearer {tokens[name]}"})
            if answer.status_code != 200:
                return answer.status_code
            return {row["id"] for row in csv.DictReader(io.StringIO(answer.text))}

        def governed(name: str) -> set[str]:
            return {r[0] for r in engine.query("tax", "SELECT id FROM shared.places", user=f"tax_{name}").rows}

        assert fetched("moon") == governed("moon") == _ids_under("430104001")
        assert fetched("district") == _ids_under("430104001")  # the district reads them anyway
        assert fetched("city") == _ids_under("430104001")
        assert not governed("yuelu") & _ids_under("430104001")
        assert fetched("yuelu") == 404  # was 200 with e1 and e4: 望月湖's residents, to 岳麓街道
    finally:
        engine.close()


@pytest.mark.slow  # a load and two deliveries into drop folders (~8 s)
def test_two_streets_subscriptions_never_share_a_drop_folder(settings, tmp_path):
    """Both streets' subscriptions pointed at one drop folder (an operator's copy and paste): the file of a
    delivery is named by dataset and snapshot only: 望月湖's office found 岳麓街道's rows in its folder (and two
    deliveries at one lake snapshot, a DAG run beside a manual one, wrote the same file: the last one's rows
    under both manifests). The second subscription is refused now; whatever is allowed, every file in a
    subscriber's folder holds only its own street's rows."""
    registry, _ = _street_city(settings)
    folder = tmp_path / "district_share"
    subs = {}
    refused = []
    for name in ("moon", "yuelu"):
        with Lake(settings.lake) as lake:
            try:
                subs[name] = store.add(lake, registry, department="tax", user=f"tax_{name}", dataset="places",
                                       target_kind="files", target={"folder": str(folder)}, mode="snapshot")
            except SubscriptionError as exc:
                refused.append((name, str(exc)))
    for sub in subs.values():
        assert deliver(settings, registry, sub).status == "delivered"
    for name, sub in subs.items():
        manifest = json.loads((folder / f".onesource-{sub.subscription_id}.json").read_text(encoding="utf-8"))
        ids = {r["id"] for r in csv.DictReader(io.StringIO((folder / manifest["file"]).read_text(encoding="utf-8")))}
        assert ids == _ids_under(PEOPLE[name]), (name, ids)
        for path in sorted(folder.glob("places-*.csv")):  # what the street's office finds in its drop folder
            held = {r["id"] for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))}
            assert held <= _ids_under(PEOPLE[name]), (name, path.name, held)
    assert [n for n, _ in refused] == ["yuelu"]
    assert subs["moon"].subscription_id in refused[0][1] and "own table or folder" in refused[0][1]


@pytest.mark.slow  # a lake made and six subscriptions recorded: 7 s at load 15
def test_a_second_subscription_into_the_same_table_or_folder_is_refused(tiny, tmp_path):
    """Two subscriptions in one database table: each snapshot delivery empties the table of the other's rows
    (one subscriber's view in the other's database). The same table written another way (schema left out,
    other case, spaced DSN) is the same table; a cancelled subscription's table may be taken again."""
    from schemas import load_registry
    from sharing.users import add_user

    registry = load_registry(tiny.registry_dir)
    dsn = "host=127.0.0.1 port=5432 dbname=test user=postgres"
    with Lake(tiny.lake) as lake:
        add_user(lake, ["amr", "tax"], "tax_a", "tax", "analyst", by="test", audit=None)
        add_user(lake, ["amr", "tax"], "tax_b", "tax", "analyst", by="test", audit=None)
        first = store.add(lake, registry, department="tax", user="tax_a", dataset="firms", target_kind="postgres",
                          target={"dsn": dsn, "table": "street.firms"})
        for table, spelled in (("street.firms", dsn), ("STREET.firms", "host=127.0.0.1  port=5432 dbname=test "
                                                                         "user=postgres")):
            with pytest.raises(SubscriptionError, match=first.subscription_id):
                store.add(lake, registry, department="tax", user="tax_b", dataset="firms", target_kind="postgres",
                          target={"dsn": spelled, "table": table})
        plain = store.add(lake, registry, department="tax", user="tax_a", dataset="firms", target_kind="postgres",
                          target={"dsn": dsn, "table": "firms"})
        with pytest.raises(SubscriptionError, match=plain.subscription_id):
            store.add(lake, registry, department="tax", user="tax_b", dataset="firms", target_kind="postgres",
                      target={"dsn": dsn, "table": "public.firms"})
        (tmp_path / "drop").mkdir()
        files = store.add(lake, registry, department="tax", user="tax_a", dataset="firms", target_kind="files",
                          target={"folder": str(tmp_path / "drop")})
        for folder in (tmp_path / "x" / ".." / "drop", tmp_path / "drop" / "b", tmp_path):  # same, inside, holding
            with pytest.raises(SubscriptionError, match=files.subscription_id):
                store.add(lake, registry, department="tax", user="tax_b", dataset="firms", target_kind="files",
                          target={"folder": str(folder)})
        store.add(lake, registry, department="tax", user="tax_b", dataset="firms", target_kind="files",
                  target={"folder": str(tmp_path / "drop_b")})  # a sibling whose name starts the same: its own
        store.cancel(lake, first.subscription_id)
        store.add(lake, registry, department="tax", user="tax_b", dataset="firms", target_kind="postgres",
                  target={"dsn": dsn, "table": "street.firms"})


@pytest.mark.parametrize("dsn", ["postgresql://onesource:hunter2@127.0.0.1:5432/x", "postgres://u:hunter2@db/x",
                                 "mysql://root:hunter2@127.0.0.1:3306/test"])
def test_a_password_in_a_dsn_uri_is_refused(dsn):
    """libpq's URI form carries the password in its userinfo: it was stored in ops.subscriptions in clear."""
    with pytest.raises(SubscriptionError, match=r"in clear.*\$\{VARIABLE\}"):
        check_secrets({"dsn": dsn, "table": "t"})


@pytest.mark.parametrize("dsn", ["postgresql://onesource:${SUB_PG_PASSWORD}@127.0.0.1:5432/x",
                                 "postgresql://onesource@127.0.0.1:5432/x", "postgresql://127.0.0.1/x",
                                 "host=h port=5432 dbname=x user=u password=${P}"])
def test_a_dsn_uri_without_a_password_in_clear_is_taken(dsn):
    check_secrets({"dsn": dsn, "table": "t"})


# --- organisations.yaml -------------------------------------------------------------------------------------

STREET_AS_DISTRICT = organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY),
                                   ("430104001", "望月湖街道", "430104"), ("430104002", "岳麓街道", "430104"),
                                   ("430104000", "某街道", "430104"))
COMMUNITY_AS_STREET = organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY),
                                    ("430104001", "望月湖街道", "430104"), ("430104001000", "某社区", "430104001"))
TWO_CITIES = organisations((CITY, "长沙市", None), ("430104", "岳麓区", CITY), ("430200", "株洲市", None))


@pytest.mark.parametrize(("orgs", "code", "expected"), [
    (STREET_AS_DISTRICT, "430104000", r"organisation '430104000' \(某街道\): a street's code does not end in 000"
                                      r".*430104"),
    (COMMUNITY_AS_STREET, "430104001000", r"organisation '430104001000' \(某社区\): a community's code does not end "
                                          r"in 000.*430104001"),
    (TWO_CITIES, "430200", r"organisation '430200' \(株洲市\): a second city \(the city is 430100"),
])
def test_an_organisation_reading_more_than_its_own_rows_is_refused(tmp_path, orgs, code, expected):
    """Each of these loaded, and a user of the organisation read rows beyond its own: 430104000 is the district
    430104 (both streets' rows), 430104001000 the street 430104001, and a second city the whole lake (the
    rows of 长沙 to 株洲's users). The registry refuses them now, naming the line and the fix."""
    registry, issues = registry_at(tmp_path / "registry", orgs)
    # the harm, had the registry been taken: the organisation's jurisdiction is wider than its own code
    assert jurisdiction(registry, code) in (None, division_prefix(code)) and (
        jurisdiction(registry, code) is None or len(division_prefix(code)) < len(code))
    assert re.search(expected, messages(issues)), messages(issues)


def test_the_demo_city_and_the_tests_tree_pass_the_new_checks(tmp_path):
    from examples.changsha.data import DemoConfig
    from examples.changsha.generate import write_registry as write_demo_registry
    from schemas import check_registry

    _, issues = registry_at(tmp_path / "registry", TREE)
    assert not issues, messages(issues)
    write_demo_registry(tmp_path / "demo", DemoConfig())
    _, issues = check_registry(tmp_path / "demo")
    assert not issues, messages(issues)



@pytest.mark.slow  # a load, then the HTTP API in process (~8 s)
def test_a_neighbouring_streets_dispute_is_not_shown_to_a_street_user(settings):
    """A dispute raised by 望月湖's clerk names a record of 望月湖 and says what is wrong with it; every user of
    the same department was shown it (a department's own disputes skipped the row check), so 岳麓街道's clerk
    read 望月湖's record key and the complaint. Now a street's user sees its own disputes and those on its rows;
    the district's and the city's users see it, as the owner does."""
    from fastapi.testclient import TestClient

    from onesource.serve import create_app
    from sharing.engine import GovernedEngine

    registry, tokens = _street_city(settings)
    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        client = TestClient(create_app(engine))

        def auth(name: str) -> dict:
            return {"Authorization": f"Bearer {tokens[name]}"}

        made = client.post("/api/v1/disputes", headers=auth("moon"),
                           json={"dataset": "places", "key_value": "e1", "description": "户主已迁出，人数应为 0"})
        assert made.status_code == 201, made.text
        mine = client.post("/api/v1/disputes", headers=auth("yuelu"),
                           json={"dataset": "places", "key_value": "e2", "description": "人数有误"})
        assert mine.status_code == 201, mine.text

        def seen(name: str) -> set[str]:
            answer = client.get("/api/v1/disputes", headers=auth(name))
            assert answer.status_code == 200, answer.text
            return {d["key_value"] for d in answer.json()}

        assert seen("moon") == {"e1"}
        assert seen("yuelu") == {"e2"}  # was {"e1", "e2"}: 望月湖's record and its complaint
        assert seen("district") == seen("city") == {"e1", "e2"}
    finally:
        engine.close()


@pytest.mark.slow  # a load, a webhook delivery, the HTTP API in process (~12 s)
def test_a_webhook_link_stops_when_the_subscribers_policy_changes(settings):
    """A link works for its hours (24 by default, as long as link_hours says). 望月湖's clerk moved to 岳麓街道
    (its organisation changed) still fetched 望月湖's rows with the old link, and after the owner narrowed the
    grant (revoked, granted again without the column n) the old delivery still served n: only a revocation
    with no grant left, or a freeze, stopped it. Now the link serves the rows only under the policy they were
    cut under."""
    from fastapi.testclient import TestClient

    from lakehouse.lake import CATALOG
    from lakehouse.ledger import OPS
    from onesource.serve import create_app
    from sharing.engine import GovernedEngine
    from sharing.grants import revoke_grant

    registry, tokens = _street_city(settings)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Lake(settings.lake) as lake:
            sub = store.add(lake, registry, department="tax", user="tax_moon", dataset="places", target_kind="webhook",
                            target={"url": f"http://127.0.0.1:{server.server_port}/hook", "api_url": "http://api.test",
                                    "link_hours": 720}, mode="snapshot")
        _Hook.got.clear()
        assert deliver(settings, registry, sub, backoff=0.05).status == "delivered"
    finally:
        server.shutdown()
    path = _Hook.got[-1]["link"].removeprefix("http://api.test")

    def move(code: str) -> None:
        with Lake(settings.lake) as lake:
            lake.write("move tax_moon", f"UPDATE {CATALOG}.{OPS}.users SET organisation = ? WHERE user_name = ?",
                       [code, "tax_moon"])

    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        client = TestClient(create_app(engine))

        def fetch():
            answer = client.get(path, headers={"Authorization": f"Bearer {tokens['moon']}"})
            return answer.status_code, answer.text

        status, text = fetch()
        assert status == 200 and {r["id"] for r in csv.DictReader(io.StringIO(text))} == {"e1", "e4"}
        move("430104002")
        assert {r[0] for r in engine.query("tax", "SELECT id FROM shared.places", user="tax_moon").rows} == {"e2"}
        status, text = fetch()
        assert status == 403 and "changed since this delivery" in text, text  # was 200: e1 and e4
        move("430104001")
        assert fetch()[0] == 200  # the same policy again: the rows it may read anyway
        with Lake(settings.lake) as lake:
            [grant] = [g for (g,) in lake.con.execute(
                f"SELECT grant_id FROM {CATALOG}.{OPS}.grants WHERE department = 'tax' AND revoked_at IS NULL").fetchall()]
            revoke_grant(lake, grant)
            add_grant(lake, registry, "tax", "places", columns=["id", "division"], scope="jurisdiction")
        assert engine.query("tax", "SELECT * FROM shared.places", user="tax_moon").columns == ["id", "division"]
        status, text = fetch()
        assert status == 403, text  # was 200 with the column n, no longer granted
    finally:
        engine.close()


@pytest.mark.slow  # a load, then the portal in process, signing in (~10 s)
def test_a_street_operator_cannot_make_or_take_over_a_wider_account(settings):
    """An operator belongs to an organisation like any user. 望月湖's operator on /admin/users added a user of
    its department with no organisation (the whole city), signed in as it and read every street's rows through
    the jurisdiction grant; it could also reset the password of the district's user and take it over. Now an
    operator of a street administers only users of its street (and below); the city's operator anyone."""
    import html as htmlmod

    from fastapi.testclient import TestClient

    from onesource.serve import create_app
    from sharing.engine import GovernedEngine
    from tests.support.portal import signed_in

    registry, tokens = _street_city(settings)
    with Lake(settings.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_moon_op", "operator", organisation="430104001")
        city_password, _ = create_user(lake, "tax", "tax_city_op", "operator")
    engine = GovernedEngine(settings, registry, persistent=True)
    try:
        app = create_app(engine)
        op = signed_in(app, {"user": "tax_moon_op", "password": password})
        wide = op.post("/admin/users", data={"name": "tax_wide", "department": "tax", "role": "analyst"})
        assert wide.status_code == 400, "the street's operator made a user of the whole city"
        assert "not the whole city" in htmlmod.unescape(wide.text)
        other = op.post("/admin/users", data={"name": "tax_other", "department": "tax", "role": "analyst",
                                              "organisation": "430104002"})
        assert other.status_code == 400 and "not organisation 430104002" in htmlmod.unescape(other.text)
        elsewhere = op.post("/admin/users", data={"name": "amr_moon", "department": "amr", "role": "analyst",
                                                  "organisation": "430104001"})
        assert elsewhere.status_code == 400 and "not of amr" in htmlmod.unescape(elsewhere.text)
        taken = op.post("/admin/users/tax_district/reset-password")
        assert taken.status_code == 400 and "shown-password" not in taken.text  # the district's account stays
        listed = set(re.findall(r'data-user="([^"]+)"', op.get("/admin/users").text))
        assert listed == {"tax_moon", "tax_moon_op"}, listed  # not the city's, the district's or the neighbour's
        own = op.post("/admin/users", data={"name": "tax_moon2", "department": "tax", "role": "analyst",
                                            "organisation": "430104001"})
        assert own.status_code == 200 and "shown-password" in own.text
        new = re.search(r'id="shown-token">([^<]+)<', own.text).group(1)
        rows = TestClient(app).post("/api/v1/query", json={"sql": "SELECT id FROM shared.places ORDER BY id"},
                                    headers={"Authorization": f"Bearer {new}"})
        assert rows.status_code == 200 and [r[0] for r in rows.json()["rows"]] == ["e1", "e4"]
        city = signed_in(app, {"user": "tax_city_op", "password": city_password})
        assert city.post("/admin/users", data={"name": "tax_wide", "department": "tax", "role": "analyst"}
                         ).status_code == 200  # the city's operator: anyone
        assert city.post("/admin/users/tax_district/reset-password").status_code == 200
    finally:
        engine.close()


@pytest.mark.slow  # a load and a delivery (~8 s)
def test_a_drop_folder_in_onesource_home_is_not_written(settings):
    """A drop folder inside the home (here: where webhook deliveries of other subscribers wait, readable by the
    office the folder is shared with) was written like any other. Now the delivery fails and says why, and
    nothing is written there."""
    registry, _ = _street_city(settings)
    folder = settings.home / "subscriptions" / "outbox"
    with Lake(settings.lake) as lake:
        sub = store.add(lake, registry, department="tax", user="tax_moon", dataset="places", target_kind="files",
                        target={"folder": str(folder)}, mode="snapshot")
    outcome = deliver(settings, registry, sub)
    assert outcome.status == "failed" and "in OneSource's home" in outcome.message, outcome
    assert not list(folder.glob("places-*")) and not list(folder.glob(".onesource-*"))


@pytest.mark.parametrize(("dsn", "where"), [
    ("postgresql://onesource:${PW}@db.yuelu.gov:6543/street", "postgres://db.yuelu.gov:6543/street"),
    ("postgres://db.yuelu.gov/street?sslmode=require", "postgres://db.yuelu.gov:5432/street"),
    ("host=db.yuelu.gov port=6543 dbname=street user=u password=${PW}", "postgres://db.yuelu.gov:6543/street"),
])
def test_a_uri_dsn_is_named_by_its_own_host_in_messages(dsn, where):
    """Every failure of a delivery names the target (the ledger, the CLI, the task log): a URI DSN was named
    postgres://localhost:5432/ whatever its host, sending whoever reads the ledger to the wrong server."""
    from sharing.subscriptions.targets import target_for

    assert target_for("postgres", {"dsn": dsn, "table": "t"}).where() == f"{where} table public.t"
