"""On the demo city, the defects found equal the defects injected, and clean records raise nothing."""

from __future__ import annotations

import os
import secrets
from collections import Counter

import pytest

from examples.changsha.api import TOKEN_ENV, serve
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city, key_digest
from ingest import run_dataset
from lakehouse import Lake
from onesource.dagfactory import authority_edges
from quality.consistency import run_consistency
from schemas import load_registry
from tests.helpers import drop, free_port, rows


def load_order(registry) -> list[str]:
    """Authorities before the datasets that reference them (as the ingest DAG orders its tasks)."""
    names = [d.name for d in registry.source_datasets]
    edges = authority_edges(registry, set(names))
    done: list[str] = []
    while len(done) < len(names):
        for n in names:
            if n not in done and all(up in done for up, down in edges if down == n):
                done.append(n)
    return done


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from core.config import Settings

    settings = Settings(home=tmp_path_factory.mktemp("city") / "home")
    port = free_port()
    manifest = generate_city(settings, DemoConfig(scale=0.2, api_url=f"http://127.0.0.1:{port}/api/v1/tickets"))
    registry = load_registry(settings.registry_dir)
    token = secrets.token_urlsafe(16)
    server = serve(settings.sources_dir / "hotline" / "tickets.json", port=port, token=token)
    try:
        outcome = {}
        for name in load_order(registry):
            [result] = run_dataset(settings, registry, name, {**os.environ, TOKEN_ENV: token})
            outcome[name] = result.status
    finally:
        server.shutdown()
        server.server_close()
    with Lake(settings.lake) as lake:
        run_id, _ = run_consistency(lake, registry)
    return settings, manifest, outcome, run_id


def failures(settings) -> dict[tuple[str, str, str], int]:
    found = rows(settings, "SELECT dataset, check_name, column_name, unexpected_count FROM ops.quality_results "
                           "WHERE NOT success AND skipped IS NULL")
    return {(d, c, col): n for d, c, col, n in found}


def test_every_injected_defect_is_found_with_its_exact_count(city):
    settings, manifest, outcome, _ = city
    expected: dict[tuple[str, str, str], int] = {}
    for dataset, kinds in manifest["defects"].items():
        for kind, items in kinds.items():
            column = items[0]["column"]
            if kind == "bad_check_digit":
                # a mistyped code fails its check digit and is unknown to the authority: the same rows
                expected[(dataset, "check_digit", column)] = len(items)
                expected[(dataset, "reference", column)] = len(items)
            elif kind == "missing_required":
                expected[(dataset, "required", column)] = len(items)
            elif kind == "duplicate_key":
                expected[(dataset, "key_unique", column)] = 2 * len(items)  # the original and its duplicate
    assert failures(settings) == expected
    assert all(n > 0 for n in expected.values())


def test_failing_rows_are_the_injected_rows(city):
    settings, manifest, _, _ = city
    import json

    for dataset in ("tax_taxpayer_register", "hrss_person_insurance"):
        injected = manifest["defects"][dataset]["bad_check_digit"]
        [(sample_rows, sample_values)] = rows(settings, f"""SELECT sample_rows, sample_values FROM ops.quality_results
            WHERE dataset = '{dataset}' AND check_name = 'check_digit' AND column_name = '{injected[0]["column"]}'""")
        # the manifest names no one: it holds each injected code masked, and a salted hash of it
        keys = {d["key_digest"] for d in injected}
        found = {key_digest(manifest["key_salt"], v) for v in json.loads(sample_values)}
        assert found <= keys and len(json.loads(sample_values)) == min(5, len(keys))
        if dataset == "tax_taxpayer_register":  # a file keeps its row order; a database extract is ordered by watermark
            assert json.loads(sample_rows) == sorted(d["row"] for d in injected)[:5]
    quarantined = rows(settings, "SELECT _row FROM quarantine.health_medical_institutions "
                                 "WHERE _reasons IS NOT NULL ORDER BY _row")
    assert [r for (r,) in quarantined] == [d["row"] for d in manifest["defects"]["health_medical_institutions"]["missing_required"]]


def test_blocking_defects_quarantine_and_warnings_publish(city):
    settings, manifest, outcome, _ = city
    blocking = {d for d, kinds in manifest["defects"].items() if {"missing_required", "duplicate_key"} & set(kinds)}
    assert {d for d, s in outcome.items() if s == "quarantined"} == blocking
    assert {d for d, s in outcome.items() if s == "published"} == set(outcome) - blocking
    for name in blocking:
        assert rows(settings, f"SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shared' "
                              f"AND table_name = '{name}'") == [(0,)]


def test_clean_datasets_raise_nothing(city):
    settings, manifest, outcome, _ = city
    # name mismatches are not a defect of the batch itself: the consistency check finds them (below)
    dirty = {d for d, kinds in manifest["defects"].items() if set(kinds) - {"name_mismatch"}}
    flagged = {d for d, _, _ in failures(settings)}
    assert flagged == dirty
    skipped = rows(settings, "SELECT count(*) FROM ops.quality_results WHERE skipped IS NOT NULL")
    assert skipped == [(0,)]  # authorities were loaded first: every reference check ran


def test_consistency_mismatches_are_the_injected_ones(city):
    settings, manifest, _, run_id = city
    found = Counter(rows(settings, f"SELECT dataset, column_name FROM ops.consistency_mismatches WHERE run_id = '{run_id}'"))
    injected = Counter()
    for dataset, kinds in manifest["defects"].items():
        for item in kinds.get("name_mismatch", []):
            injected[(dataset, item["column"])] += 1
    assert found == injected and sum(injected.values()) > 0
    values = {r for r in rows(settings, f"SELECT value, authority_value FROM ops.consistency_mismatches "
                                        f"WHERE run_id = '{run_id}' AND dataset = 'tax_taxpayer_register'")}
    assert values == {(d["value"], d["authority"]) for d in manifest["defects"]["tax_taxpayer_register"]["name_mismatch"]}
    rates = rows(settings, f"SELECT dataset, element, compared, equal FROM ops.consistency_results WHERE run_id = '{run_id}'")
    assert all(eq == cmp for ds, el, cmp, eq in rates if (ds, el) not in injected)


def test_corrected_file_releases_the_quarantine(city):
    settings, manifest, _, _ = city
    bad = settings.sources_dir / "health" / "health_medical_institutions" / "health_medical_institutions_20261101.csv"
    fixed = bad.read_text(encoding="utf-8-sig").replace(",,", ",补录的医院名称,")
    drop(settings, "health/health_medical_institutions/health_medical_institutions_20261102.csv", fixed, "utf-8-sig")
    [result] = run_dataset(settings, load_registry(settings.registry_dir), "health_medical_institutions", os.environ)
    assert result.status == "published", result.message
    assert rows(settings, "SELECT count(*) FROM quarantine.health_medical_institutions") == [(0,)]
    assert rows(settings, "SELECT count(*) FROM shared.health_medical_institutions") == [
        (manifest["datasets"]["health_medical_institutions"]["rows"],)]


def test_data_docs_are_generated_under_the_home(city):
    """Loads store their results; the site is rendered once afterwards (the consistency task does it)."""
    from quality import build_data_docs

    settings, manifest, outcome, _ = city
    site = settings.gx_project_root / "gx" / "uncommitted" / "data_docs" / "local_site"
    assert build_data_docs(settings.gx_project_root) == site / "index.html"
    index = (site / "index.html").read_text(encoding="utf-8")
    for name in outcome:
        assert (site / "expectations" / "onesource" / f"{name}.html").exists(), name
    [(load_id,)] = rows(settings, "SELECT load_id FROM ops.loads WHERE dataset = 'tax_taxpayer_register'")
    pages = list((site / "validations" / "onesource" / "tax_taxpayer_register" / load_id).rglob("*.html"))
    assert pages and "expect_column_values_to_be_valid_uscc" in pages[0].read_text(encoding="utf-8")
    assert "tax_taxpayer_register" in index
