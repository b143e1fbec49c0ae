"""At rest: the home is its user's alone, the registry cache is data (never code), the authorities' keys
and the staged batches leave nothing behind (encrypted while they exist in an encrypted lake), and the
demo manifest names no one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import json
import os
import pickle
import re
import stat
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.config import Settings
from ingest import load as load_module
from onesource.home import secure_home
from schemas import cache, load_registry
from schemas import loader as loader_module
from tests.helpers import ROWS, USCC, csv_text, demo_home, drop, firms_dataset, load, rows, write_registry

RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
USCC_CODE = re.compile(r"(?<![0-9A-Za-z])[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}(?![0-9A-Za-z])")
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def login_umask():
    """The process starts as a login shell would (umask 022); the test puts the umask back afterwards."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_home_and_everything_written_into_it_are_private(tmp_path, login_umask):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)  # a home made before this rule (or by hand): readable by every local user
    secure_home(Settings(home=home))  # what `onesource ...` and every Airflow task do first
    assert mode(home) == 0o700
    assert os.umask(0o077) == 0o077  # the process's umask is set (and inherited by Airflow, its child)
    # a demo-style home: registry, sources, landing, a DuckLake lake, GX results, users and their credentials
    settings, _ = demo_home(home, ("mca_admin_divisions", "amr_enterprise_register"), users=True)
    load_registry(settings.registry_dir, settings.cache_dir)
    everything = [p for p in home.rglob("*") if not p.is_symlink()]
    assert len(everything) > 50 and any(p.suffix == ".parquet" for p in everything)
    loose = [(str(p.relative_to(home)), oct(mode(p))) for p in everything if mode(p) & 0o077]
    assert not loose, loose  # folders 0700, files 0600 (or stricter)
    landed = [p for p in settings.landing_dir.rglob("*") if p.is_file() and len(p.stem) == 64
              and not p.name.endswith(".meta.json")]
    assert landed and all(mode(p) == 0o400 for p in landed)  # raw extracts: read-only, the owner's alone
    assert all(mode(p) == 0o700 for p in everything if p.is_dir())


def test_the_cli_and_every_airflow_task_make_the_home_private(tmp_path, monkeypatch, login_umask):
    from onesource import cli, tasks

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    monkeypatch.setenv("ONESOURCE_HOME", str(home))
    write_registry(Settings(home=home).registry_dir)
    assert cli.main(["registry", "check"]) == 0
    assert mode(home) == 0o700 and os.umask(0o022) == 0o077
    home.chmod(0o750)
    assert tasks.task_settings().home == home
    assert mode(home) == 0o700 and os.umask(0o022) == 0o077


def test_secure_home_creates_a_missing_home_0700(tmp_path, login_umask):
    home = tmp_path / "a" / "new-home"
    secure_home(Settings(home=home))
    assert home.is_dir() and mode(home) == 0o700


def test_registry_cache_is_json_under_the_home_and_a_planted_file_is_never_run(tiny, tmp_path, monkeypatch):
    in_temp = set(glob.glob(os.path.join(tempfile.gettempdir(), "onesource-registry-*")))
    registry = load_registry(tiny.registry_dir, tiny.cache_dir)
    [entry] = tiny.cache_dir.glob("registry-*.json")
    assert mode(tiny.cache_dir) == 0o700 and mode(entry) == 0o600
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "onesource-registry-*"))) == in_temp
    assert json.loads(entry.read_text())["version"] == registry.version

    def no_reading(root):
        raise AssertionError("the cache was not used")

    with monkeypatch.context() as m:  # warm: the files are not read again, and the registry is the same
        m.setattr(loader_module, "check_registry", no_reading)
        cached = load_registry(tiny.registry_dir, tiny.cache_dir)
    assert cached == registry and cached.version == registry.version
    assert cached.dataset("firms").columns == registry.dataset("firms").columns

    # someone plants a pickle that would run code when unpickled: it is not JSON, so it is ignored and rewritten
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for planted in (pickle.dumps(Payload()), b"\x00garbage", b"{}",
                    json.dumps({"format": cache.FORMAT, "key": entry.stem.removeprefix("registry-"), "version": "x",
                                "registry": {"@": "Popen", "v": [["touch", str(marker)]]}}).encode()):
        entry.write_bytes(planted)
        assert load_registry(tiny.registry_dir, tiny.cache_dir) == registry
        assert not marker.exists()
        assert json.loads(entry.read_text())["registry"]["@"] == "Registry"  # rewritten as a good entry


def test_cache_encoding_keeps_every_type_exactly():
    value = {"a": (1, 2.5, None, True), "b": [dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5)], 3: b"\x00",
             "@x": {"s": {1, 2}}, "t": ("x", ("y",))}
    assert cache.decode(json.dumps(cache.encode(value))) == value
    with pytest.raises(cache.NotCacheable):
        cache.encode(object())


def _encrypted(settings: Settings) -> Settings:
    return dataclasses.replace(settings, lake=dataclasses.replace(settings.lake, encrypted=True))


def _firms_and_taxpayers(settings: Settings) -> None:
    taxpayers = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="unconditional",
                              connector={"kind": "file", "path": "tax/*.csv", "format": "csv"})
    write_registry(settings.registry_dir, [firms_dataset(), taxpayers])
    drop(settings, "amr/firms/a.csv", csv_text(ROWS[:2]))  # the authority knows two of the three codes
    assert [r.status for r in load(settings)] == ["published"]


def test_authority_keys_are_encrypted_while_they_exist_and_gone_after_the_load(tmp_path, monkeypatch):
    settings = _encrypted(Settings(home=tmp_path / "home"))
    _firms_and_taxpayers(settings)
    seen: list[Path] = []
    validate = load_module.validate_batch

    def spy(ds, registry, staged, context, **kwargs):
        for path in filter(None, context.references.values()):
            path = Path(path)
            seen.append(path)
            data = path.read_bytes()
            assert path.name.endswith(".enc.parquet") and mode(path.parent) == 0o700
            assert not any(code.encode() in data for code in USCC), "authority keys in plaintext"
            with pytest.raises(Exception, match="(?i)encrypt"):
                pq.read_table(path)  # nothing but this process (which holds the key) reads it
        return validate(ds, registry, staged, context, **kwargs)

    monkeypatch.setattr(load_module, "validate_batch", spy)
    drop(settings, "tax/a.csv", csv_text())
    [result] = load(settings, "taxpayers")
    assert result.status == "published", result.message
    assert seen and not any(p.exists() for p in seen)  # removed after use
    # the reference check did read the encrypted keys: it found the one code the authority lacks
    assert rows(settings, "SELECT unexpected_count, sample_values, error FROM ops.quality_results "
                          "WHERE dataset = 'taxpayers' AND check_name = 'reference'") == [(1, json.dumps([USCC[2]]), None)]
    assert not [p for p in settings.staging_dir.rglob("*") if p.is_file()]  # staging is empty


def test_authority_keys_in_a_plain_lake_are_plain_and_gone_after_the_load(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path / "home")
    _firms_and_taxpayers(settings)
    seen: list[Path] = []
    validate = load_module.validate_batch

    def spy(ds, registry, staged, context, **kwargs):
        seen.extend(Path(p) for p in context.references.values() if p)
        assert all(pq.read_table(p).num_rows == 2 for p in seen)
        return validate(ds, registry, staged, context, **kwargs)

    monkeypatch.setattr(load_module, "validate_batch", spy)
    drop(settings, "tax/a.csv", csv_text())
    [result] = load(settings, "taxpayers")
    assert result.status == "published" and seen and not any(p.exists() for p in seen)


def test_a_failing_load_leaves_no_staged_batch_nor_keys(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path / "home")
    _firms_and_taxpayers(settings)

    def broken(ds, registry, staged, context, **kwargs):
        assert staged.exists() and any(Path(p).exists() for p in context.references.values() if p)
        raise RuntimeError("GX fell over")

    monkeypatch.setattr(load_module, "validate_batch", broken)
    drop(settings, "tax/a.csv", csv_text())
    with pytest.raises(RuntimeError, match="GX fell over"):
        load(settings, "taxpayers")
    assert not [p for p in settings.staging_dir.rglob("*") if p.is_file()]


def test_an_encrypted_lake_keeps_no_quarantined_batch_in_clear(tmp_path):
    settings = _encrypted(Settings(home=tmp_path / "home"))
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text(ROWS + ROWS[:1]))  # a duplicated key: blocking
    [result] = load(settings)
    assert result.status == "quarantined"
    [folder] = (settings.quarantine_dir / "firms").iterdir()
    assert not (folder / "batch.parquet").exists()  # its rows are in quarantine.firms, encrypted like the lake
    report = (folder / "report.json").read_text(encoding="utf-8")
    assert "sample_values" not in report and "quarantine.firms" in json.loads(report)["values"]
    assert rows(settings, "SELECT count(*) FROM quarantine.firms") == [(4,)]
    assert not [p for p in settings.staging_dir.rglob("*") if p.is_file()]


def test_demo_manifest_names_no_one(tmp_path):
    from examples.changsha.city import city_datasets
    from examples.changsha.data import City, DemoConfig
    from examples.changsha.generate import generate_city, key_digest

    settings = Settings(home=tmp_path / "home")
    config = DemoConfig(scale=0.05, api_url="http://127.0.0.1:9/none")
    manifest = generate_city(settings, config)
    text = (settings.home / "demo" / "manifest.json").read_text(encoding="utf-8")
    for pattern in (RESIDENT_ID, USCC_CODE, MOBILE):
        assert not pattern.search(text), pattern.search(text).group(0)
    # the defects are still named exactly: masked, with a salted hash of the full code (the same city again)
    city = City(config)
    for ds in city_datasets(config.departments):
        city.rows(ds)
    raw = city.defects.found
    assert {d: set(k) for d, k in raw.items()} == {d: set(k) for d, k in manifest["defects"].items()}
    hashed = 0
    for dataset, kinds in raw.items():
        for kind, items in kinds.items():
            for original, kept in zip(items, manifest["defects"][dataset][kind], strict=True):
                assert kept["row"] == original["row"] and kept.get("column") == original.get("column")
                code = original["key"] if isinstance(original["key"], str) else original["key"][0]
                if "key_digest" in kept:
                    hashed += 1
                    assert kept["key_digest"] == key_digest(manifest["key_salt"], code)
                    shown = kept["key"] if isinstance(kept["key"], str) else kept["key"][0]
                    assert shown == code[:6] + "********" + code[-4:]
                else:
                    assert kept["key"] == original["key"]  # a case or permit number names no person
    assert hashed >= 2  # a resident ID (social security) and a credit code (tax), at this scale
    person = manifest["defects"]["hrss_person_insurance"]["bad_check_digit"][0]
    assert re.fullmatch(r"\d{6}\*{8}\d{3}[\dX]", person["key"][0])
