"""The finished portal (issue 20 item 6), in-process with FastAPI's test client over a small demo city:

* every page, in Chinese and in English, shows no raw code of the platform's code sets (share types,
  update cycles, request, dispute and load statuses, check kinds, severities), the sets taken from the
  modules that define them;
* a dataset page shows description, row count, status in the right colour (a quarantined, never
  published dataset is red and not queryable), the department's granted columns with the rest marked not
  granted, an audited governed preview, schema history and quality trend;
* 404 and 400 pages for page routes (unknown dataset, department, KPI; unknown or malformed period naming
  the valid range) while /api/ keeps JSON;
* KPI colours against the city's targets in the cards and the ranking;
* a dispute on a dataset whose key is masked for the department, picked by its row of the preview."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import run_dataset
from lakehouse import Lake
from metrics.kpis import KPI_NAMES, LOWER_IS_BETTER, TARGETS, Period
from metrics.publish import publish_periods
from onesource.serve import create_app
from portal.labels import CODE_LABELS, CODES
from portal.web import kpi_state
from sharing import requests
from sharing.engine import GovernedEngine
from tests.helpers import demo_home
from tests.support.portal import sign_in

QUARANTINED_DS = "health_medical_institutions"  # the demo injects nameless institutions: a blocking failure
GRANTED = ["resident_id", "person_name", "division_code"]  # tax's grant on the resident register: three columns
ALL_CODES = {c for codes in CODES.values() for c in codes}


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    settings_, registry = demo_home(tmp_path_factory.mktemp("finished") / "home",
                                    ("mca_admin_divisions", "amr_enterprise_register", "tax_taxpayer_register",
                                     "psb_resident_register"), users=True)
    [bad] = run_dataset(settings_, registry, QUARANTINED_DS, os.environ)
    assert bad.status == "quarantined", bad.message
    with Lake(settings_.lake) as lake:  # a request in every status, the approved one narrowed to three columns
        def ask(dept):
            return requests.create(lake, registry, dept, "psb_resident_register", purpose="核验",
                                   requested_by=f"{dept}_analyst")
        requests.approve(lake, registry, ask("tax").request_id, owner="psb", decided_by="psb_owner", columns=GRANTED)
        refused = ask("edu").request_id
        requests.refuse(lake, refused, owner="psb", decided_by="psb_owner", reason="请使用学籍数据")
        gone = requests.approve(lake, registry, ask("hrss").request_id, owner="psb", decided_by="psb_owner")
        requests.revoke(lake, gone.request_id, owner="psb", decided_by="psb_owner", reason="期满")
        ask("housing")
        publish_periods(lake, registry, [Period.month()])
    creds = json.loads((settings_.home / "demo-credentials.json").read_text())
    owners = json.loads((settings_.home / "demo-owner-credentials.json").read_text())
    engine = GovernedEngine(settings_, registry, persistent=True)
    with TestClient(create_app(engine)) as client:
        client.refused = refused
        yield client, creds, owners, registry, settings_
    engine.close()


class Visible(HTMLParser):
    """The text a reader sees: no tags, attributes, scripts or styles; ``<code>``/``<pre>`` and ``.ident``
    elements (column and element names, SQL) are names, not codes, and ``.prose`` is the registry's own
    words (a dataset's description), ``.data`` a table's rows as queried (the preview, the console): all
    are left out."""

    VOID = {"input", "br", "meta", "link", "img", "hr", "source", "wbr", "area", "col", "embed", "track", "path",
            "line", "rect", "circle"}

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        hidden = tag in ("script", "style", "code", "pre") or {"ident", "prose", "data"} & set(classes)
        self.stack.append((tag, hidden or any(h for _, h in self.stack[-1:])))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if data.strip() and not (self.stack and self.stack[-1][1]):
            self.texts.append(data)


def raw_codes(html: str, lang: str) -> set[str]:
    """(code, the text showing it) of the codes shown as such: in Chinese, any Latin word that is a code; in English, a code standing alone
    between separators (a label says 'Monthly', not 'monthly'), or any code with an underscore."""
    parser = Visible()
    parser.feed(html)
    found = set()
    for text in parser.texts:
        if lang == "zh":
            codes = set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", text)) & ALL_CODES
        else:
            codes = {s.strip() for s in re.split(r"[·,;:()\[\]|/\n]", text)} & ALL_CODES
            codes |= {w for w in re.findall(r"[A-Za-z0-9_]+", text) if "_" in w} & ALL_CODES
        found |= {(c, text.strip()[:120]) for c in codes}
    return found


def test_every_code_has_a_label_in_both_languages():
    for kind, codes in CODES.items():
        assert set(codes) == set(CODE_LABELS[kind]), kind
        for zh, en in CODE_LABELS[kind].values():
            assert zh and en and not re.search(r"[A-Za-z]", zh), (kind, zh)


def pages(registry) -> list[str]:
    return ["/catalogue", "/requests", "/console", "/dashboard", "/dashboard/duplicates",
            *(f"/catalogue/{d.name}" for d in registry.datasets),
            *(f"/dashboard/departments/{d.code}" for d in registry.departments),
            *(f"/dashboard/kpis/{k}" for k in KPI_NAMES), "/catalogue/nosuch", "/dashboard?period=1999-01"]


@pytest.mark.parametrize("who", ["tax", "psb_owner", "dsj"])
def test_no_page_shows_a_raw_code_in_either_language(portal, who):
    client, creds, owners, registry, _ = portal
    sign_in(client, owners["psb"] if who == "psb_owner" else creds[who])
    console = client.post("/console", data={"sql": "SELECT division_code FROM shared.psb_resident_register LIMIT 3"})
    assert console.status_code == 200
    for lang in ("zh", "en"):
        client.get("/catalogue", params={"lang": lang})  # remembered in the cookie from here on
        for path in pages(registry):
            r = client.get(path)
            assert r.headers["content-type"].startswith("text/html"), path
            assert not raw_codes(r.text, lang), (lang, path, raw_codes(r.text, lang))
        assert not raw_codes(client.post("/console", data={"sql": "SELECT 1 AS x"}).text, lang)
    client.get("/catalogue", params={"lang": "zh"})


def cell(html: str, id_: str) -> str:
    return re.search(rf'id="{id_}"[^>]*>(.*?)</td>', html, re.S).group(1)


def test_dataset_page_status_columns_preview_history_and_trend(portal):
    client, creds, _, registry, settings_ = portal
    sign_in(client, creds["tax"])
    client.get("/catalogue", params={"lang": "zh"})
    catalogue = client.get("/catalogue").text
    row = re.search(rf'<tr><td><a href="/catalogue/{QUARANTINED_DS}">.*?</tr>', catalogue, re.S).group(0)
    assert 'class="health bad" data-health="bad"' in row and "可查询 ✓" not in row  # red, not queryable
    bad = client.get(f"/catalogue/{QUARANTINED_DS}").text
    assert 'id="health" class="bad"' in bad and "可查询 ✓" not in bad and 'id="preview-none"' in bad
    assert "已隔离" in cell(bad, "last-load") and 'class="run-failed"' in bad  # the quality trend's red run
    assert 'id="failing-checks"' in bad and "必填项" in bad  # the failed check, by its label

    page = client.get("/catalogue/psb_resident_register").text
    with Lake(settings_.lake, read_only=True) as lake:
        total = lake.con.execute("SELECT count(*) FROM lake.shared.psb_resident_register").fetchone()[0]
        versions = lake.con.execute("SELECT count(*) FROM lake.ops.schema_versions WHERE kind = 'dataset' "
                                    "AND subject = 'psb_resident_register'").fetchone()[0]
    assert cell(page, "row-count") == f"{total:,}"
    listed = re.search(r'<a href="/catalogue/psb_resident_register">.*?<td class="num">([^<]*)</td>', catalogue, re.S)
    assert listed.group(1) == f"{total:,}"  # the catalogue's figure (the catalog's record count) agrees
    assert 'class="ok" data-health="ok"' in page and "可查询 ✓" in cell(page, "queryable")
    granted = re.findall(r'<tr class="granted" data-column="(\w+)"', page)
    refused = re.findall(r'<tr class="not-granted" data-column="(\w+)"', page)
    assert granted == GRANTED and len(refused) == len(registry.dataset("psb_resident_register").columns) - 3
    assert page.count("未授权") == len(refused)
    preview = re.search(r'<table id="preview" class="data">(.*?)</table>', page, re.S).group(1)
    assert preview.count("<tr>") == 21 and "********" in preview  # 20 rows, resident IDs masked for tax
    assert re.findall(r'<th class="ident">(\w+)</th>', preview) == GRANTED
    assert page.count("<tr><td>v") == versions >= 1 and "首个版本" in page  # schema history
    from sharing.audit import AuditLog

    before = len(AuditLog.of(settings_).entries())
    client.get("/catalogue/psb_resident_register")
    [audited] = AuditLog.of(settings_).entries()[before:]  # ran as the user, audited like any query
    assert (audited["user"], audited["department"], audited["purpose"]) == (creds["tax"]["user"], "tax",
                                                                            "dataset preview")


def test_a_masked_key_is_never_asked_for_the_record_is_picked_by_its_row(portal):
    client, creds, _, _, settings_ = portal
    sign_in(client, creds["tax"])
    page = client.get("/catalogue/psb_resident_register").text
    form = re.search(r'<form[^>]*id="dispute-form".*?</form>', page, re.S).group(0)
    assert 'name="key_value"' not in form and 'id="key-masked"' in form
    assert page.count('type="radio" name="row"') == 20
    first = re.search(r'<table id="preview" class="data">.*?<tr><td><input[^>]*></td><td>([^<]*)</td><td>([^<]*)</td>'
                      r'<td>([^<]*)</td>', page, re.S).groups()
    assert client.post("/catalogue/psb_resident_register/dispute",
                       data={"description": "姓名有误"}).text.count("请选择一条记录") == 1  # nothing picked
    r = client.post("/catalogue/psb_resident_register/dispute",
                    data={"row": "0", "column": "person_name", "description": "姓名与户籍不符"})
    assert r.status_code == 200 and "已记录" in r.text
    with Lake(settings_.lake, read_only=True) as lake:
        [(key,)] = lake.con.execute("SELECT key_value FROM lake.ops.disputes WHERE description = '姓名与户籍不符'"
                                    ).fetchall()
        name, division = lake.con.execute("SELECT person_name, division_code FROM lake.shared.psb_resident_register "
                                          "WHERE resident_id = ?", [key]).fetchone()
    assert (name, division) == (first[1], first[2])  # the record recorded is the row picked
    assert first[0] == key[:6] + "********" + key[-4:]  # shown masked in the preview, as the key
    assert f"⚑ {first[0]}.person_name" in r.text and key not in r.text  # the dispute, masked as tax reads it


def test_page_errors_are_pages_and_api_errors_stay_json(portal):
    client, creds, _, _, _ = portal
    sign_in(client, creds["dsj"])
    client.get("/catalogue", params={"lang": "en"})
    for path, status, words in (("/catalogue/nosuch", 404, "No dataset nosuch"),
                                ("/dashboard/departments/nosuch", 404, "No department with code nosuch"),
                                ("/dashboard/kpis/nosuch", 404, "No KPI nosuch"),
                                ("/nosuch", 404, "No page /nosuch"),
                                ("/dashboard/kpis/sharing_rate?department=nosuch", 404, "nosuch")):
        r = client.get(path)
        assert r.status_code == status and r.headers["content-type"].startswith("text/html"), path
        assert words in r.text and "{" not in re.search(r'id="error-message"[^>]*>(.*?)<', r.text).group(1)
    for bad in ("2099-01", "1999-12", "2026-13", "nonsense", "2026-1"):
        for path in ("/dashboard", "/dashboard/duplicates", "/dashboard/departments/tax", "/dashboard/kpis/timeliness"):
            r = client.get(path, params={"period": bad})
            assert r.status_code == 400 and "text/html" in r.headers["content-type"], (path, bad)
            message = re.search(r'id="error-message"[^>]*>(.*?)<', r.text).group(1)
            assert re.search(r"choose one from \d{4}-\d\d to \d{4}-\d\d", message), message
    for field in ("department", "share_type", "cycle", "element"):
        r = client.get("/catalogue", params={field: "nosuch"})
        assert r.status_code == 400 and f"Filter {field}=nosuch is not valid" in r.text
    assert client.get("/catalogue", params={"share_type": "conditional", "cycle": "daily"}).status_code == 200
    client.get("/catalogue", params={"lang": "zh"})
    assert "没有数据集 nosuch" in client.get("/catalogue/nosuch").text
    assert "可选" in client.get("/dashboard", params={"period": "2099-01"}).text
    bad_days = client.post("/catalogue/psb_resident_register/request", data={"purpose": "x", "days": "abc"})
    assert bad_days.status_code == 400 and "text/html" in bad_days.headers["content-type"]
    token = {"Authorization": f"Bearer {creds['dsj']['token']}"}
    assert client.get("/api/v1/nosuch", headers=token).json() == {"detail": "Not Found"}
    api = client.post("/api/v1/requests", json={"dataset": "psb_resident_register"}, headers=token)
    assert api.status_code == 422 and api.headers["content-type"] == "application/json"


@given(value=st.floats(0, 1), target=st.floats(0, 1), kpi=st.sampled_from(KPI_NAMES))
@settings(max_examples=200, deadline=None)
def test_a_figure_meets_its_target_from_the_right_side(value, target, kpi):
    state = kpi_state(kpi, {"value": value, "target": target})
    if value == target:
        assert state == "ontarget"
    else:
        better = value < target if kpi in LOWER_IS_BETTER else value > target
        assert state == ("ontarget" if better else "behind")
    no_target = kpi_state(kpi, {"value": value, "target": None})
    assert no_target == ("" if kpi not in TARGETS else kpi_state(kpi, {"value": value, "target": TARGETS[kpi]}))


def test_cards_and_ranking_are_coloured_against_the_targets(portal):
    client, creds, _, _, settings_ = portal
    sign_in(client, creds["dsj"])
    page = client.get("/dashboard").text
    assert 'id="kpi-cards"' in page, page[-3000:]
    with Lake(settings_.lake, read_only=True) as lake:
        figures = dict(lake.con.execute("SELECT kpi, value FROM lake.shared.kpi_figures WHERE scope = 'city' AND "
                                        "period = (SELECT max(period) FROM lake.shared.kpi_figures)").fetchall())
        ranks = dict(lake.con.execute("SELECT scope_name, value FROM lake.shared.kpi_figures WHERE kpi = "
                                      "'sharing_rate' AND scope <> 'city' AND denominator > 0 AND period = "
                                      "(SELECT max(period) FROM lake.shared.kpi_figures)").fetchall())
    for kpi in KPI_NAMES:
        value = figures.get(kpi)
        state = re.search(rf'<div class="card ?([a-z]*)" data-kpi="{kpi}">', page).group(1)
        if kpi not in TARGETS or value is None:
            assert state == "", kpi
        else:
            met = value <= TARGETS[kpi] if kpi in LOWER_IS_BETTER else value >= TARGETS[kpi]
            assert state == ("ontarget" if met else "behind"), (kpi, value)
    bars = re.findall(r'<a href="[^"]*" class="bar-(\w+)"><text[^>]*>([^<]+)</text>', page)
    assert len(bars) == len(ranks) > 0
    for state, name in bars:
        assert state == ("ontarget" if ranks[name] >= TARGETS["sharing_rate"] else "behind"), name
    assert {"ontarget", "behind"} >= {s for s, _ in bars}


@pytest.fixture(scope="module")
def firms(tmp_path_factory):
    from schemas import load_registry
    from tests.helpers import write_registry

    return load_registry(write_registry(tmp_path_factory.mktemp("reg"))).dataset("firms")


@given(share=st.sampled_from(sorted(CODE_LABELS["share_type"])), cycle=st.sampled_from(sorted(CODE_LABELS["cycle"])),
       status=st.none() | st.sampled_from(sorted(CODE_LABELS["load_status"])), hours=st.integers(0, 24 * 400))
@settings(max_examples=150, deadline=None)
def test_every_reason_a_dataset_is_not_shared_reads_in_both_languages(firms, share, cycle, status, hours):
    """metrics.kpis.sharing_reason, the reason the drill-down shows, for any share type, cycle, last load
    and age: no raw code in either language, and the Chinese has no English words but times."""
    import dataclasses
    import datetime as dt

    from metrics.kpis import sharing_reason
    from portal.labels import note

    ds = dataclasses.replace(firms, share_type=share, update_cycle=cycle, legal_basis="《条例》第十条")
    now = dt.datetime(2026, 11, 29, 12)
    reason = sharing_reason(ds, None if status is None else (status, now - dt.timedelta(hours=hours)), now)
    if reason is None:
        return
    zh, en = note(reason, "zh"), note(reason, "en")
    assert not re.search(r"[A-Za-z]", zh.replace("UTC", "")), (reason, zh)
    assert not raw_codes(f"<p>{zh}</p>", "zh") and not raw_codes(f"<p>{en}</p>", "en"), (reason, en)


def test_a_refused_decision_reads_in_the_readers_language(portal):
    """sharing.requests' refusal of a second decision names the status: shown as its label, not the code."""
    client, _, owners, _, _ = portal
    sign_in(client, owners["psb"])
    for lang, words in (("zh", "已是“已拒绝”状态"), ("en", "is Refused already")):
        client.get("/requests", params={"lang": lang})
        page = client.post(f"/requests/{client.refused}/approve", data={}).text
        assert words in re.search(r'<p class="notice"[^>]*>(.*?)</p>', page).group(1)
        assert not raw_codes(page, lang)
    client.get("/requests", params={"lang": "zh"})
