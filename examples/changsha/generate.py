"""Write the demo city into a home: the registry YAML, each department's extract, the manifest.

Extracts go where the departments' systems would put them: drop folders under ``sources/<dept>/``,
SQLite databases, and the hotline's ticket store served by :mod:`examples.changsha.api`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import secrets
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from core.config import Settings
from examples.changsha.api import TOKEN_ENV
from examples.changsha.city import (
    BUREAU,
    CODE_LISTS,
    DESCRIPTIONS,
    ELEMENTS,
    SERVICE_DESCRIPTION,
    DemoDataset,
    city_datasets,
    city_departments,
    city_forms,
    organisation_entries,
    platform_dataset_entries,
)
from examples.changsha.data import City, DemoConfig

EXTENSIONS = {"csv": "csv", "csv-gbk": "csv", "xlsx": "xlsx", "json": "json", "ndjson": "ndjson", "parquet": "parquet"}


SCHEMA_FILE = "registry.schema.json"
"""The registry's JSON Schema, beside its files: each names it in its first line, so an editor with a YAML
language server (VS Code's YAML extension) completes and underlines them (docs/registry.md)."""


WRITTEN = ".demo-written.json"
"""In the registry folder: the sha256 of each file as the demo last wrote it, to tell a file edited by hand."""
KEPT_SUFFIX = ".demo"
"""Beside a registry file edited by hand, the demo's own version of it (the edited file is kept)."""


class _RegistryFiles:
    """Writes the demo's registry files, except one edited by hand since the demo wrote it (a newcomer's new
    department or element): that one is kept, and the demo's version written beside it (``<file>.demo``), as a
    package manager keeps an edited configuration file. A folder the demo never recorded is all the demo's."""

    def __init__(self, root: Path):
        self.root = root
        self.record_path = root / WRITTEN
        self.recorded = json.loads(self.record_path.read_text()) if self.record_path.exists() else None
        self.written: dict[str, str] = dict(self.recorded or {})
        self.kept: list[Path] = []

    def dump(self, path: Path, data: Any, schema: str | None = None) -> None:
        head = f"# yaml-language-server: $schema={schema}\n" if schema else ""
        text = head + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)
        digest, name = hashlib.sha256(text.encode()).hexdigest(), path.relative_to(self.root).as_posix()
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.recorded is not None and path.exists():
            current = hashlib.sha256(path.read_bytes()).hexdigest()
            if current not in (digest, self.recorded.get(name)):
                path.with_name(path.name + KEPT_SUFFIX).write_text(text, encoding="utf-8")
                self.kept.append(path)
                return
        path.write_text(text, encoding="utf-8")
        self.written[name] = digest

    def close(self) -> None:
        self.record_path.write_text(json.dumps(self.written, indent=1, sort_keys=True), encoding="utf-8")


def connector_settings(ds: DemoDataset, config: DemoConfig) -> dict[str, Any]:
    if ds.fmt == "sqlite":
        return {"kind": "database", "driver": "sqlite", "dsn": f"{ds.owner}/{ds.owner}.sqlite", **ds.extra}
    if ds.fmt == "http":
        # the token comes from the environment (an Airflow connection in production), never the registry
        return {"kind": "http", "url": config.api_url, "items": "items", "token_env": TOKEN_ENV, **ds.extra}
    settings = {"kind": "file", "path": f"{ds.owner}/{ds.name}/*.{EXTENSIONS[ds.fmt]}", "format": EXTENSIONS[ds.fmt]}
    if ds.fmt.startswith("csv"):
        settings["encoding"] = "gbk" if ds.fmt == "csv-gbk" else "utf-8"
    return settings


def write_registry(root: Path, config: DemoConfig) -> list[Path]:
    """The demo city's registry under ``root``; the files kept because they were edited by hand."""
    departments = [*city_departments(config.departments), BUREAU]
    datasets = city_datasets(config.departments)
    names = {d.name for d in datasets}
    from schemas.reference import schema_text

    root.mkdir(parents=True, exist_ok=True)
    (root / SCHEMA_FILE).write_text(schema_text(), encoding="utf-8")
    files = _RegistryFiles(root)
    files.dump(root / "departments.yaml", {"departments": [
        {"code": c, "name": n, "name_en": en, "systems": [{"code": sc, "name": sn}]} for c, n, en, sc, sn in departments
    ]}, SCHEMA_FILE)
    elements = [e for e in ELEMENTS if e[4] in names]
    used_lists = {e[6] for e in elements if e[6]} | {
        extra["code_list"] for d in datasets for _, _, extra in d.columns if "code_list" in extra}
    files.dump(root / "elements.yaml", {
        "elements": [
            {"name": n, "name_zh": zh, "name_en": en, "type": t, "authority": auth,
             **({"format": fmt} if fmt else {}), **({"code_list": cl} if cl else {}), "sensitivity": sens}
            for n, zh, en, t, auth, fmt, cl, sens in elements
        ],
        "code_lists": {k: v for k, v in CODE_LISTS.items() if k in used_lists},
    }, SCHEMA_FILE)
    files.dump(root / "organisations.yaml", {"organisations": organisation_entries()}, SCHEMA_FILE)
    systems = {c: sc for c, _, _, sc, _ in departments}
    for ds in datasets:
        entry: dict[str, Any] = {
            "name": ds.name, "title": ds.title, "owner": ds.owner, "system": systems[ds.owner],
            "update_cycle": ds.update_cycle, "share_type": ds.share_type,
        }
        entry["description"] = DESCRIPTIONS.get(ds.name) or SERVICE_DESCRIPTION.format(title=ds.title)
        if ds.conditions:
            entry["conditions"] = ds.conditions
        if ds.legal_basis:
            entry["legal_basis"] = ds.legal_basis
        entry["load_mode"] = ds.load_mode
        entry["key"] = list(ds.key)
        entry["connector"] = connector_settings(ds, config)
        entry["columns"] = [{"name": n, "source": src, **extra} for n, src, extra in ds.columns]
        if ds.quality:
            entry["quality"] = ds.quality
        if ds.division_column:
            entry["division_column"] = ds.division_column
        files.dump(root / "datasets" / ds.owner / f"{ds.name}.yaml", entry, f"../../{SCHEMA_FILE}")
    for entry in platform_dataset_entries({e[0] for e in elements}):
        files.dump(root / "datasets" / entry["owner"] / f"{entry['name']}.yaml", entry, f"../../{SCHEMA_FILE}")
    for form in city_forms(names):
        files.dump(root / "forms" / f"{form['code']}.yaml", form, f"../{SCHEMA_FILE}")
    files.close()
    return files.kept


# -- extract writers, one per form a department sends ----------------------------------------

def _write_csv(path: Path, rows: list[dict], encoding: str) -> None:
    with open(path, "w", encoding=encoding, errors="replace", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_xlsx(path: Path, rows: list[dict]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(list(rows[0]))
    for row in rows:
        ws.append(list(row.values()))
    wb.save(path)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_sqlite(path: Path, table: str, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        cols = list(rows[0])
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} TEXT' for c in cols)})")
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})",
                       [[str(r[c]) for c in cols] for r in rows])


def write_extract(sources: Path, ds: DemoDataset, rows: list[dict]) -> Path:
    if ds.fmt == "sqlite":
        path = sources / ds.owner / f"{ds.owner}.sqlite"
        _write_sqlite(path, ds.extra["table"], rows)
        return path
    if ds.fmt == "http":
        path = sources / ds.owner / "tickets.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        return path
    path = sources / ds.owner / ds.name / f"{ds.name}_20261101.{EXTENSIONS[ds.fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if ds.fmt == "csv":
        _write_csv(path, rows, "utf-8-sig")  # Excel-made UTF-8 CSVs carry a BOM
    elif ds.fmt == "csv-gbk":
        _write_csv(path, rows, "gbk")
    elif ds.fmt == "xlsx":
        _write_xlsx(path, rows)
    elif ds.fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    elif ds.fmt == "ndjson":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif ds.fmt == "parquet":
        _write_parquet(path, rows)
    return path


def without_references(ds: DemoDataset, rows: list[dict]) -> list[dict]:
    """The extract as the department sends it: a ``from_authority`` column is not collected any more, so
    its header is not in the file (the platform fills it from the authority)."""
    dropped = {src for _, src, extra in ds.columns if extra.get("from_authority")}
    return [{k: v for k, v in row.items() if k not in dropped} for row in rows] if dropped else rows


def config_digest(config: DemoConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]


def generate_city(settings: Settings, config: DemoConfig, progress=None) -> dict[str, Any]:
    """Write registry, extracts and manifest; a second call with the same config changes nothing."""
    stamp = settings.home / "demo" / "stamp.json"
    manifest_path = settings.home / "demo" / "manifest.json"
    digest = config_digest(config)
    if stamp.exists() and manifest_path.exists() and json.loads(stamp.read_text())["digest"] == digest:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    kept = write_registry(settings.registry_dir, config)
    city = City(config)
    datasets = city_datasets(config.departments)
    manifest: dict[str, Any] = {"config": asdict(config), "datasets": {}}
    for ds in datasets:
        rows = without_references(ds, city.rows(ds))
        path = write_extract(settings.sources_dir, ds, rows)
        manifest["datasets"][ds.name] = {"owner": ds.owner, "format": ds.fmt, "rows": len(rows),
                                         "source": str(path.relative_to(settings.home))}
        if progress:
            progress(ds.name)
    manifest["key_salt"] = secrets.token_hex(16)
    manifest["defects"] = private_defects(city.defects.found, manifest["key_salt"])
    manifest["recollection"] = recollection_pairs(datasets)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    stamp.write_text(json.dumps({"digest": digest}))
    return {**manifest, "registry_kept": [str(p) for p in kept]}


# -- the manifest names no one ------------------------------------------------------------------
# A defect's key is often an identifier: a resident ID, a credit code (a person's, for a sole trader), a
# mobile number. The manifest keeps its masked form (what a department sees through governed SQL) and a
# salted, slow hash of it, by which a test matches the values a check found to the defects injected.

IDENTIFIER = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}|\d{17}[\dXx]|1[3-9]\d{9}")
"""A credit code (GB 32100), a resident ID (GB 11643) or a mobile number, as the whole of a value."""
KEY_ROUNDS = 10_000
"""PBKDF2-SHA256 rounds of a manifest key's hash (the salt is in the manifest: make guessing slow)."""


def key_digest(salt: str, value: str) -> str:
    """How the manifest names an identifier that a defect's record holds."""
    return hashlib.pbkdf2_hmac("sha256", str(value).encode(), bytes.fromhex(salt), KEY_ROUNDS).hex()[:32]


def mask_identifier(value: str) -> str:
    """A mobile number keeps its last 4 characters, an 18-character code its first 6 and last 4 (the masks
    of governed SQL, sharing.policy.MASKS)."""
    return "*******" + value[-4:] if len(value) == 11 else value[:6] + "********" + value[-4:]


def private_defects(found: dict[str, dict[str, list[dict[str, Any]]]], salt: str) -> dict:
    """The injected defects with every identifier masked; a key that is one (or a list led by one) also
    gets ``key_digest``, :func:`key_digest` of the full value."""
    def masked(value: Any) -> Any:
        if isinstance(value, str) and IDENTIFIER.fullmatch(value):
            return mask_identifier(value)
        if isinstance(value, list):
            return [masked(v) for v in value]
        return value

    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for dataset, kinds in found.items():
        for kind, items in kinds.items():
            for item in items:
                key = item.get("key")
                lead = key[0] if isinstance(key, list) and key else key
                entry = {k: masked(v) for k, v in item.items()}
                if isinstance(lead, str) and IDENTIFIER.fullmatch(lead):
                    entry["key_digest"] = key_digest(salt, lead)
                out.setdefault(dataset, {}).setdefault(kind, []).append(entry)
    return out


def recollection_pairs(datasets: list[DemoDataset]) -> list[dict[str, str]]:
    """(department, element) pairs a department collects although another department is the source."""
    authority = {e[0]: e[4] for e in ELEMENTS}
    owner_of = {d.name: d.owner for d in datasets}
    pairs = set()
    for ds in datasets:
        for _, _, extra in ds.columns:
            el = extra.get("element")
            if extra.get("from_authority") or extra.get("references"):
                continue  # filled from the authority, or the declared key naming its record: not collected
            if el and authority.get(el) in owner_of and owner_of[authority[el]] != ds.owner:
                pairs.add((ds.owner, el, authority[el]))
    return [{"department": d, "element": e, "authority": a} for d, e, a in sorted(pairs)]
