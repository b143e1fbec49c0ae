"""Sharing KPIs on a hand-built scenario where every figure is known in advance (docs/kpi-definitions.md)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from lakehouse import Lake
from metrics.kpis import Period, compute
from onesource.cli import main
from schemas import load_registry
from sharing.audit import AuditLog, sync_to_lake
from sharing.engine import GovernedEngine
from tests.helpers import csv_text, drop, firms_dataset, load, write_registry


@pytest.fixture
def scenario(settings):
    """amr owns `firms` (unconditional, the authority of every element), loaded; tax owns `taxpayers`
    (conditional, re-collects all three elements), never loaded; amr's `moves` is not_shared, loaded."""
    taxpayers = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="conditional",
                              conditions="稽查", connector={"kind": "file", "path": "tax/*.csv", "format": "csv"})
    moves = firms_dataset(name="moves", share_type="not_shared", legal_basis="法规", key=["uscc"],
                          columns=[{"name": "uscc", "source": "统一社会信用代码", "type": "string", "required": True}],
                          connector={"kind": "file", "path": "amr/moves/*.csv", "format": "csv"})
    write_registry(settings.registry_dir, [firms_dataset(), taxpayers, moves])
    drop(settings, "amr/firms/a.csv", csv_text())
    drop(settings, "amr/moves/a.csv", "统一社会信用代码\n91330106MA2B0C1D68\n")
    assert [r.status for r in load(settings, "firms")] == ["published"]
    assert [r.status for r in load(settings, "moves")] == ["published"]
    return settings


def figures(settings, as_of=None, **period):
    with Lake(settings.lake) as lake:
        sync_to_lake(lake, AuditLog(settings.home / "audit"))
        return compute(lake, load_registry(settings.registry_dir), Period.month(**period), as_of=as_of)


def by_dept(result, code):
    return next(d for d in result["departments"] if d["code"] == code)


def test_sharing_rate_counts_not_shared_and_unloaded_in_the_denominator(scenario):
    city = figures(scenario)["city"]["sharing_rate"]
    assert (city["numerator"], city["denominator"], city["value"], city["target"]) == (1, 3, 0.3333, 0.9)
    assert by_dept(figures(scenario), "tax")["sharing_rate"]["value"] == 0.0


def test_overdue_is_not_shared(scenario):
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert figures(scenario, as_of=now + dt.timedelta(hours=23))["city"]["sharing_rate"]["numerator"] == 1
    assert figures(scenario, as_of=now + dt.timedelta(days=2))["city"]["sharing_rate"]["numerator"] == 0  # daily


def test_duplicate_collection_and_interconnection(scenario):
    result = figures(scenario)
    dup = result["city"]["duplicate_collection_rate"]
    assert (dup["numerator"], dup["denominator"]) == (3, 6)  # tax re-collects uscc, name and status
    assert by_dept(result, "amr")["duplicate_collection_rate"]["value"] == 0.0
    inter = result["city"]["interconnection_rate"]
    assert (inter["numerator"], inter["denominator"]) == (1, 2)  # amr_reg loaded, tax_core never


def test_usage_never_counts_the_owner(scenario):
    engine = GovernedEngine(scenario, load_registry(scenario.registry_dir))
    engine.query("amr", "SELECT count(*) FROM shared.firms")  # the owner itself
    assert figures(scenario)["city"]["usage_rate"]["numerator"] == 0
    engine.query("tax", "SELECT count(*) FROM shared.firms")
    result = figures(scenario)
    # over shared datasets only: firms (taxpayers never loaded, moves is not_shared)
    assert (result["city"]["usage_rate"]["numerator"], result["city"]["usage_rate"]["denominator"]) == (1, 1)
    assert result["city"]["reuse_factor"]["value"] == 1.0  # one authoritative dataset, one consumer


def test_quality_pass_rate_and_the_cli_json_shape(scenario, monkeypatch, capsys):
    drop(scenario, "amr/firms/b.csv", csv_text() + csv_text().splitlines()[1] + "\n")  # a duplicate key
    assert [r.status for r in load(scenario, "firms")] == ["quarantined"]
    q = figures(scenario)["city"]["quality_pass_rate"]
    assert (q["numerator"], q["denominator"]) == (2, 3)
    monkeypatch.setenv("ONESOURCE_HOME", str(scenario.home))
    assert main(["metrics", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"period", "city", "departments"}
    assert set(out["city"]) == {"sharing_rate", "usage_rate", "reuse_factor", "duplicate_collection_rate",
                                "request_fulfilment_rate", "interconnection_rate", "quality_pass_rate", "timeliness",
                                "consistency_rate"}
    assert set(out["city"]["sharing_rate"]) == {"value", "numerator", "denominator", "target"}
    assert out["departments"][0]["code"] == "amr" and "sharing_rate" in out["departments"][0]
