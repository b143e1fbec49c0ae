"""Freezes (sharing.security.freeze): generated sequences of freezes, unfreezes and queries, checked against an
oracle of who may query what; tokens revoked for good; every action audited; clear errors for bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse.lake import Lake
from onesource.cli import main
from schemas import load_registry
from sharing.audit import AuditLog, verify
from sharing.engine import GovernedEngine
from sharing.exceptions import Frozen
from sharing.security.freeze import FreezeError, active_freezes, freeze, unfreeze
from sharing.users import create_user, rotate_token, user_by_token
from tests.helpers import csv_text, drop, firms_dataset, load, write_registry
from tests.support.freeze import LEDGER

USERS = {"amr_a": "amr", "amr_b": "amr", "tax_a": "tax"}
DATASETS = ("firms", "ledger")


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """Two departments, a dataset of each, three users (with their tokens)."""
    settings = Settings(home=tmp_path_factory.mktemp("freeze") / "home")
    write_registry(settings.registry_dir, [firms_dataset(), LEDGER])
    drop(settings, "amr/firms/a.csv", csv_text())
    drop(settings, "tax/ledger/a.csv", "代码,数\na,1\nb,2\n")
    assert [r.status for r in load(settings)] == ["published"]
    assert [r.status for r in load(settings, "ledger")] == ["published"]
    tokens = {}
    with Lake(settings.lake) as lake:
        for user, dept in USERS.items():
            tokens[user] = create_user(lake, dept, user)[1]
    return settings, load_registry(settings.registry_dir), tokens


def _unfreeze_all(settings: Settings) -> None:  # (each test begins with no freeze in force)
    with Lake(settings.lake) as lake:
        lake.write("test: every freeze ends", "UPDATE lake.ops.security_freezes SET unfrozen_at = now() "
                   "WHERE unfrozen_at IS NULL", [])


def _may(frozen: set[tuple[str, str]], user: str, dataset: str) -> bool:
    """The oracle: a query runs unless its user, the user's department or its dataset is frozen."""
    return not ({("user", user), ("department", USERS[user]), ("dataset", dataset)} & frozen)


ACTIONS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["freeze", "unfreeze"]),
              st.sampled_from([("user", u) for u in USERS] + [("department", "amr"), ("department", "tax")]
                              + [("dataset", d) for d in DATASETS])),
    st.tuples(st.just("query"), st.tuples(st.sampled_from(list(USERS)), st.sampled_from(DATASETS)))),
    min_size=1, max_size=8)


@pytest.fixture(scope="module")
def server(town):
    """A running server's engine (cached per stamp) and a writer, kept across the generated examples."""
    settings, registry, _ = town
    engine = GovernedEngine(settings, registry, persistent=True)
    writer = Lake(settings.lake)
    yield engine, writer
    writer.close()
    engine.close()


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_generated_freezes_stop_exactly_the_queries_the_oracle_says(town, server, actions):
    """A running server's engine answers each query as the oracle says, at once after each freeze and
    unfreeze; a refusal names what is frozen and whom to contact, never the reason."""
    settings, registry, _ = town
    engine, lake = server
    lake.write("test: every freeze ends", "UPDATE lake.ops.security_freezes SET unfrozen_at = now() "
               "WHERE unfrozen_at IS NULL", [])
    frozen: set[tuple[str, str]] = set()
    for verb, arg in actions:
        if verb == "query":
            user, dataset = arg
            sql = f"SELECT count(*) FROM shared.{dataset}"
            if _may(frozen, user, dataset):
                assert engine.query(USERS[user], sql, user=user, signed_in=True).rows[0][0] > 0
            else:
                with pytest.raises(Frozen) as refused:
                    engine.query(USERS[user], sql, user=user, signed_in=True)
                text = str(refused.value)
                assert "frozen by the data bureau since" in text and "contact the data bureau" in text
                assert "secret-reason" not in text
                assert refused.value.sqlstate == "42501" and refused.value.http_status == 403
            continue
        kind, subject = arg
        act = freeze if verb == "freeze" else unfreeze
        if verb == "freeze" and arg in frozen or verb == "unfreeze" and arg not in frozen:
            with pytest.raises(FreezeError, match="frozen already" if verb == "freeze" else "is not frozen"):
                act(lake, registry, kind, subject, "secret-reason", by="op", audit=None)
            continue
        act(lake, registry, kind, subject, "secret-reason", by="op", audit=None)
        (frozen.add if verb == "freeze" else frozen.discard)(arg)
    assert {(f.kind, f.subject) for f in engine.freezes()} == frozen
    assert {(f.kind, f.subject) for f in active_freezes(lake)} == frozen


def test_the_cli_engine_is_stopped_too_and_the_refusal_is_audited(town):
    settings, registry, _ = town
    _unfreeze_all(settings)
    with Lake(settings.lake) as lake:
        made, users = freeze(lake, registry, "dataset", "shared.ledger", "bulk reads", by="op", audit=None)
    assert users == [] and made.subject == "ledger"
    cli = GovernedEngine(settings, registry)  # `onesource sql --as`: no cache
    with pytest.raises(Frozen, match="dataset shared.ledger is frozen"):
        cli.query("tax", "SELECT * FROM shared.ledger", user="tax_a")
    assert cli.query("tax", "SELECT count(*) FROM shared.firms").rows == [(3,)]
    last = [e for e in AuditLog.of(settings).entries() if e.get("decision") == "refused"][-1]
    assert last["tables"] == ["ledger"] and "frozen" in last["reason"]
    with Lake(settings.lake) as lake:
        freeze(lake, registry, "department", "amr", "stolen account", by="op", audit=None)
    with pytest.raises(Frozen, match="department amr is frozen"):
        cli.query("amr", "SELECT count(*) FROM shared.firms")


def test_a_freeze_revokes_tokens_for_good_and_every_action_is_audited(town, capsys, monkeypatch):
    """The department's users' tokens (not the others') stop at once and stay stopped after the unfreeze; a
    new token works (users rotate-token). Each freeze and unfreeze is an audit entry with the reason."""
    settings, registry, _ = town
    _unfreeze_all(settings)
    with Lake(settings.lake) as lake:  # earlier tests' freezes revoked some
        tokens = {user: rotate_token(lake, user) for user in USERS}
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["security", "freeze", "--department", "amr", "--reason", "stolen account", "--by", "op1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens_revoked"] == ["amr_a", "amr_b"] and out["kind"] == "department"
    with Lake(settings.lake, read_only=True) as lake:
        assert user_by_token(lake, tokens["amr_a"]) is None and user_by_token(lake, tokens["amr_b"]) is None
        assert user_by_token(lake, tokens["tax_a"]).name == "tax_a"
    assert main(["security", "freezes", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["subject"] == "amr" and shown["reason"] == "stolen account" and shown["frozen_by"] == "op1"
    assert main(["security", "unfreeze", "--department", "amr", "--reason", "contained", "--by", "op2"]) == 0
    assert "rotate-token" in capsys.readouterr().out
    with Lake(settings.lake) as lake:
        assert user_by_token(lake, tokens["amr_a"]) is None  # never again
        new = rotate_token(lake, "amr_a")  # `onesource users rotate-token amr_a`
        assert user_by_token(lake, new).name == "amr_a"
    entries = [e for e in AuditLog.of(settings).entries() if e.get("kind") == "security"]
    assert [(e["action"], e["user"], e["subject"], e["reason"]) for e in entries[-2:]] == [
        ("freeze", "op1", "amr", "stolen account"), ("unfreeze", "op2", "amr", "contained")]
    assert entries[-2]["tokens_revoked"] == ["amr_a", "amr_b"]
    assert verify(AuditLog.of(settings)).ok


@pytest.mark.parametrize(("kind", "subject", "reason", "message"), [
    ("user", "nobody", "x", "no user 'nobody'"),
    ("department", "xyz", "x", "no department 'xyz' (known: amr, tax)"),
    ("dataset", "shared.nope", "x", "no dataset 'nope' (known: firms, ledger)"),
    ("user", "tax_a", "  ", "say why: --reason TEXT"),
])
def test_bad_input_is_a_clear_error(town, kind, subject, reason, message):
    settings, registry, _ = town
    with Lake(settings.lake) as lake, pytest.raises(FreezeError) as refused:
        freeze(lake, registry, kind, subject, reason, by="op", audit=None)
    assert message in str(refused.value)


def test_the_cli_says_what_is_wrong(town, capsys, monkeypatch):
    settings, _, _ = town
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    assert main(["security", "unfreeze", "--dataset", "firms", "--reason", "x"]) == 1
    assert "firms is not frozen; `onesource security freezes` lists the freezes" in capsys.readouterr().err
