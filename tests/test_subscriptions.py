"""Subscriptions (数据回流), fast tier: the change computation against an oracle, secrets and signed links, and
a drop-folder subscription following publishes (the database targets are in test_subscriptions_servers.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse import Lake
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.subscriptions import store
from sharing.subscriptions.deliver import changes, deliver
from sharing.subscriptions.links import check, signed_link
from sharing.subscriptions.store import SubscriptionError, check_secrets
from sharing.subscriptions.targets import Change, target_for
from sharing.users import add_user
from tests.helpers import HEADER, USCC, drop, firms_dataset, load, write_registry

ROW = st.tuples(st.integers(0, 12), st.sampled_from(["a", "b", "", None, "甲"]), st.one_of(st.none(), st.integers(0, 3)))


def _table(rows: dict) -> pa.Table:
    return pa.table({"k": pa.array(list(rows), pa.int64()), "name": pa.array([r[0] for r in rows.values()], pa.string()),
                     "n": pa.array([r[1] for r in rows.values()], pa.int64())})


@hsettings(max_examples=30, deadline=None)
@given(old=st.lists(ROW, max_size=12), new=st.lists(ROW, max_size=12))
def test_changes_applied_to_the_old_view_give_the_new_one(old, new):
    """Oracle: upserting the changed rows and deleting the gone keys (as a table target does) turns the old
    view into the new one, whatever was added, removed, changed, or left alone (NULLs and '' included)."""
    before = {k: (name, n) for k, name, n in old}
    after = {k: (name, n) for k, name, n in new}
    upserts, gone = changes(_table(after), _table(before), ["k"])
    change = Change("changes", [("k", "BIGINT"), ("name", "VARCHAR"), ("n", "BIGINT")], ["k"], upserts, gone)
    applied = dict(before)
    for key in change.stale_keys().to_pylist():
        applied.pop(key["k"], None)
    for row in upserts.to_pylist():
        applied[row["k"]] = (row["name"], row["n"])
    assert applied == after
    # only what changed is sent
    assert {r["k"] for r in upserts.to_pylist()} == {k for k in after if before.get(k, object()) != after[k]}
    assert {r["k"] for r in gone.to_pylist()} == set(before) - set(after)


@pytest.mark.parametrize("target", [
    {"dsn": "host=x dbname=y user=u password=hunter2", "table": "t"},
    {"dsn": "host=x dbname=y user=u PASSWORD = 'x'", "table": "t"},
    {"url": "https://x", "api_url": "https://y", "secret": "plain"},
])
def test_a_secret_in_clear_is_refused(target):
    with pytest.raises(SubscriptionError, match=r"in clear.*\$\{VARIABLE\}"):
        check_secrets(target)


def test_a_secret_by_variable_is_taken_from_the_environment():
    check_secrets({"dsn": "host=x user=u password=${SUB_PW}", "table": "t"})
    target = target_for("postgres", {"dsn": "host=x user=u password=${SUB_PW}", "table": "s.t"}, environ={})
    with pytest.raises(SubscriptionError, match="SUB_PW"):
        target.connect()
    assert "password" not in target.where() and target.where().startswith("postgres://x:5432/")


@pytest.mark.parametrize("kind, settings, words", [
    ("postgres", {"dsn": "host=x", "table": "a;drop"}, "plain [schema.]table"),
    ("mysql", {"dsn": "", "table": "t"}, "needs dsn"),
    ("files", {"folder": "relative/dir"}, "absolute path"),
    ("files", {"folder": "/tmp/x", "format": "pdf"}, "csv, xlsx"),
    ("webhook", {"url": "ftp://x"}, "http(s)"),
])
def test_target_settings_are_checked(kind, settings, words):
    with pytest.raises(SubscriptionError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        target_for(kind, settings)


def test_signed_links(tmp_path):
    from core.config import Settings

    s = Settings(home=tmp_path / "home")
    link, expires = signed_link(s, "http://api", "0123456789ab-42", dt.timedelta(hours=1))
    query = dict(p.split("=") for p in link.split("?")[1].split("&"))
    assert query["delivery"] == "0123456789ab-42"
    assert check(s, "0123456789ab-42", int(query["expires"]), query["signature"]) is None
    assert "signature" in check(s, "0123456789ab-43", int(query["expires"]), query["signature"])  # another delivery
    assert "signature" in check(s, "0123456789ab-42", int(query["expires"]) + 3600, query["signature"])  # extended
    assert "expired" in check(s, "0123456789ab-42", int(query["expires"]), query["signature"],
                              now=int(query["expires"]) + 1)
    assert check(s, "../../etc/passwd", 1, "x") == "no such delivery"


def _firms_csv(rows: list[tuple]) -> str:
    return HEADER + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


@pytest.mark.slow  # two loads and seven deliveries: ~15 s on a quiet machine
def test_a_drop_folder_follows_publishes(settings, tmp_path):
    """An upsert dataset, subscribed by another department in changes mode (CSV) and snapshot mode (XLSX):
    after each publish, the snapshot file is the governed view, and the change files replayed over the
    first snapshot give it too; a rerun sends nothing; the ledger and the audit say what happened."""
    write_registry(settings.registry_dir, [firms_dataset(load_mode="upsert")])
    registry = load_registry(settings.registry_dir)
    first = [(USCC[0], "甲公司", 1, 100, 5, "2020-01-01"), (USCC[1], "乙公司", 1, 200, 6, "2021-01-01")]
    drop(settings, "amr/firms/a.csv", _firms_csv(first))
    assert [r.status for r in load(settings)] == ["published"]
    with Lake(settings.lake) as lake:
        add_user(lake, ["amr", "tax"], "tax_clerk", "tax", "analyst", by="test", audit=None)
        changed = store.add(lake, registry, department="tax", user="tax_clerk", dataset="firms", target_kind="files",
                            target={"folder": str(tmp_path / "drop")}, mode="changes")
        whole = store.add(lake, registry, department="tax", user="tax_clerk", dataset="firms", target_kind="files",
                          target={"folder": str(tmp_path / "xlsx"), "format": "xlsx"})
    engine = GovernedEngine(settings, registry)

    def view() -> dict:
        result = engine.query("tax", "SELECT * FROM shared.firms", user="tax_clerk")
        return {r[0]: tuple("" if v is None else str(v) for v in r) for r in result.rows}

    replayed: dict = {}
    for step, batch in enumerate([None, [(USCC[1], "乙公司（更名）", 2, 200, 6, "2021-01-01"),
                                         (USCC[2], "丙公司", 1, 300, 7, "2022-01-01")]]):
        if batch:
            drop(settings, f"amr/firms/{step}.csv", _firms_csv(batch))
            assert [r.status for r in load(settings)] == ["published"]
        outcome = deliver(settings, registry, changed)
        assert outcome.status == "delivered" and outcome.kind == ("snapshot" if step == 0 else "changes")
        assert outcome.rows == 2  # the first: the whole view; then one changed and one new row, not the third
        assert deliver(settings, registry, whole).status == "delivered"
        name = (tmp_path / "drop" / f".onesource-{changed.subscription_id}.json").read_text(encoding="utf-8")
        latest = tmp_path / "drop" / __import__("json").loads(name)["file"]
        for row in csv.DictReader(io.StringIO(latest.read_text(encoding="utf-8"))):
            if row.pop("_change", "upsert") == "delete":
                replayed.pop(row["uscc"], None)
            else:
                replayed[row["uscc"]] = tuple(row.values())
        assert replayed == view()
        from openpyxl import load_workbook

        [xlsx] = sorted((tmp_path / "xlsx").glob("firms-*-snapshot.xlsx"), key=lambda p: p.stat().st_mtime)[-1:]
        sheet = load_workbook(xlsx, read_only=True).active
        cells = [tuple("" if v is None else str(v) for v in r) for r in sheet.iter_rows(values_only=True)][1:]
        assert {c[0]: c for c in cells}.keys() == view().keys()
        assert deliver(settings, registry, changed).status == "unchanged"  # a rerun sends nothing
    with Lake(settings.lake, read_only=True) as lake:
        ledger = store.deliveries(lake, changed.subscription_id)
    assert [(d.status, d.kind, d.rows) for d in ledger] == [("delivered", "snapshot", 2), ("delivered", "changes", 2)]
    from sharing.audit import AuditLog

    audited = [e for e in AuditLog.of(settings).entries() if e.get("purpose") == f"subscription:{changed.subscription_id}"]
    # each delivery is the subscriber's governed query (the second also read the view it had, to diff)
    assert {(e["department"], e["user"], e["decision"], tuple(e["tables"])) for e in audited} == \
        {("tax", "tax_clerk", "allowed", ("firms",))}
    assert len(audited) == 3


@pytest.mark.slow  # parses every DAG with Airflow (a subprocess): ~15 s
def test_the_subscriptions_dag_runs_on_every_published_dataset(settings):
    from examples.changsha.data import DemoConfig
    from examples.changsha.generate import write_registry as write_demo_registry
    from tests.support.airflow import dagbag

    write_demo_registry(settings.registry_dir, DemoConfig())
    registry = load_registry(settings.registry_dir)
    bag = dagbag(settings)
    assert bag["errors"] == {}
    dag = bag["dags"]["onesource_subscriptions"]
    assert dag["tasks"] == ["deliver"]
    assert "AssetAny" in dag["schedule"]
    for ds in registry.source_datasets:  # every dataset a load publishes (its task's outlet) triggers it
        assert f"onesource://shared/{ds.name}" in dag["schedule"], ds.name
    # a thin DAG file: parsing it imports nothing heavy (the scheduler parses it every few seconds)
    import subprocess
    import sys

    from core.config import REPO_ROOT

    code = (f"import runpy, sys; runpy.run_path({str(REPO_ROOT / 'dags' / 'onesource_subscriptions.py')!r}); "
            "print('HEAVY', sorted(m for m in ('duckdb', 'great_expectations', 'pandas', 'pyarrow', 'faker') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env={**settings.environ(), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert "HEAVY []" in proc.stdout, proc.stdout[-1000:] + proc.stderr[-2000:]


@pytest.mark.slow  # a lake of its own, two loads and six deliveries
def test_a_street_subscriber_gets_only_its_streets_rows(settings, tmp_path):
    """A grant scoped to the jurisdiction (sharing.grants, helper D's organisations): each street's user, and
    the district's, receive in every delivery exactly the rows under their organisation's code, also when a
    row moves from one street to the other (a delete for one, an upsert for the other)."""
    from sharing.grants import add_grant
    from sharing.users import create_user
    from tests.support.jurisdictions import registry_at

    registry, issues = registry_at(settings.registry_dir)
    assert not issues
    rows = [("e1", "430104001001", 1, "x"), ("e2", "430104002003", 2, "y"), ("e3", "430102001001", 3, "z"),
            ("e4", "430104001002", 4, "w")]
    drop(settings, "amr/places/1.csv", "id,division,n,secret\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    assert [r.status for r in load(settings, "places")] == ["published"]
    people = {"moon": "430104001", "yuelu": "430104002", "district": "430104"}
    subs = {}
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "tax", "places", columns=["id", "division", "n"], scope="jurisdiction")
        for name, code in people.items():
            create_user(lake, "tax", f"tax_{name}", organisation=code)
            subs[name] = store.add(lake, registry, department="tax", user=f"tax_{name}", dataset="places",
                                   target_kind="files", target={"folder": str(tmp_path / name)}, mode="changes")
    held: dict[str, dict] = {name: {} for name in people}
    for step in range(2):
        if step:  # e1 moves from 望月湖 to 岳麓街道, e4 is gone, e5 is new in 望月湖
            moved = [("e1", "430104002009", 1, "x"), ("e2", "430104002003", 2, "y"), ("e3", "430102001001", 3, "z"),
                     ("e5", "430104001007", 5, "v")]
            drop(settings, "amr/places/2.csv",
                 "id,division,n,secret\n" + "".join(",".join(map(str, r)) + "\n" for r in moved))
            assert [r.status for r in load(settings, "places")] == ["published"]
            rows = moved
        for name, code in people.items():
            outcome = deliver(settings, registry, subs[name])
            assert outcome.status == "delivered", outcome
            manifest = __import__("json").loads(
                (tmp_path / name / f".onesource-{subs[name].subscription_id}.json").read_text(encoding="utf-8"))
            for row in csv.DictReader(io.StringIO((tmp_path / name / manifest["file"]).read_text(encoding="utf-8"))):
                assert "secret" not in row
                if row.pop("_change", "upsert") == "delete":
                    held[name].pop(row["id"])
                else:
                    held[name][row["id"]] = (row["division"], row["n"])
            expected = {r[0]: (r[1], str(r[2])) for r in rows if r[1].startswith(code)}
            assert held[name] == expected, (name, step)
    assert set(held["moon"]) == {"e5"} and set(held["yuelu"]) == {"e1", "e2"} and set(held["district"]) == {"e1", "e2", "e5"}


def test_the_cli_refuses_with_the_reason(tiny, monkeypatch, capsys):
    """`onesource subscriptions add` says what is wrong: a password in clear, a dataset not registered, a user
    that does not exist; nothing is recorded, and list says there is nothing yet."""
    from onesource.cli import main

    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))

    def run(*argv: str) -> tuple[int, str]:
        code = main(["subscriptions", *argv])
        out = capsys.readouterr()
        return code, out.out + out.err

    base = ["add", "firms", "--department", "tax", "--user", "tax_clerk", "--target", "postgres", "--table", "t"]
    code, text = run(*base, "--dsn", "host=x user=u password=hunter2")
    assert code == 1 and "in clear" in text and "hunter2" not in text and "Traceback" not in text
    code, text = run(*base, "--dsn", "host=x user=u password=${PW}")
    assert code == 1 and "no user tax_clerk" in text
    code, text = run("add", "nope", "--department", "tax", "--user", "u", "--target", "files", "--folder", "/tmp/x")
    assert code == 1 and "nope" in text and "Traceback" not in text
    code, text = run("list")
    assert code == 0 and "no subscriptions yet" in text
    code, text = run("cancel", "abc")
    assert code == 1 and "no subscription 'abc'" in text


def test_one_process_delivers_a_subscription_at_a_time(settings):
    """A second run (a DAG task beside a CLI run) finds the subscription busy and leaves it; the lock is the
    kernel's (flock), so a killed run never leaves it held."""
    import subprocess
    import sys

    from sharing.subscriptions.deliver import _locked

    sub = store.Subscription("0123456789ab", "tax", "u", "firms", "files", {"folder": "/tmp/x"})
    with _locked(settings, sub) as first:
        assert first
        with _locked(settings, sub) as second:
            assert not second
        other = store.Subscription("ba9876543210", "tax", "u", "firms", "files", {"folder": "/tmp/x"})
        with _locked(settings, other) as third:
            assert third  # another subscription is not held up
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
            "os.kill(os.getpid(), 9)")
    lock = settings.home / "subscriptions" / f"{sub.subscription_id}.lock"
    assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == -9
    with _locked(settings, sub) as after_a_kill:
        assert after_a_kill


def test_an_encrypted_lake_takes_no_webhook_subscription(tmp_path):
    """A webhook's rows would wait in the home in clear: refused on a lake that encrypts (level-4 data)."""
    from core.config import LakeSettings, Settings

    home = tmp_path / "home"
    s = Settings(home=home, lake=LakeSettings(catalog=f"sqlite:{home / 'lake' / 'catalog.sqlite'}",
                                              data_path=f"{home / 'lake' / 'data'}/", encrypted=True))
    write_registry(s.registry_dir)
    with Lake(s.lake) as lake, pytest.raises(SubscriptionError, match="encrypted.*postgres, mysql or files"):
        store.add(lake, load_registry(s.registry_dir), department="tax", user="u", dataset="firms",
                  target_kind="webhook", target={"url": "https://x", "api_url": "https://y"})


@pytest.mark.slow  # a lake of its own: a load and a few deliveries
def test_a_frozen_user_department_or_dataset_gets_no_delivery(settings, tmp_path):
    """Each freeze (sharing.security.freeze) stops the subscription: refused in the ledger with the freeze,
    nothing written to the drop folder; once unfrozen, the next delivery sends the view."""
    from sharing.security.freeze import freeze, unfreeze

    write_registry(settings.registry_dir)
    registry = load_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", _firms_csv([(USCC[0], "甲公司", 1, 100, 5, "2020-01-01")]))
    assert [r.status for r in load(settings)] == ["published"]
    with Lake(settings.lake) as lake:
        add_user(lake, ["amr", "tax"], "tax_clerk", "tax", "analyst", by="test", audit=None)
        sub = store.add(lake, registry, department="tax", user="tax_clerk", dataset="firms", target_kind="files",
                        target={"folder": str(tmp_path / "drop")})
    for kind, subject in (("user", "tax_clerk"), ("department", "tax"), ("dataset", "firms")):
        with Lake(settings.lake) as lake:
            frozen, _ = freeze(lake, registry, kind, subject, "test: suspected misuse", by="test", audit=None)
        outcome = deliver(settings, registry, sub)
        assert outcome.status == "refused" and f"the {kind} {subject} is frozen" in outcome.message, outcome
        assert frozen.freeze_id in outcome.message and "misuse" not in outcome.message  # never the reason
        assert not (tmp_path / "drop").exists() or not list((tmp_path / "drop").iterdir())
        with Lake(settings.lake) as lake:
            unfreeze(lake, registry, kind, subject, "test: cleared", by="test", audit=None)
    assert deliver(settings, registry, sub).status == "delivered"
    with Lake(settings.lake, read_only=True) as lake:
        assert [d.status for d in store.deliveries(lake, sub.subscription_id)] == ["refused"] * 3 + ["delivered"]
