"""Registry versions: every change to a dataset's schema or a data element is a new immutable version.

A *subject* is a dataset (its columns, types, required flags and key) or a data element (its type,
authority, format, code list, sensitivity). Versions live in the lake (``ops.schema_versions``), one
row each, never updated. A dataset's new version must be compatible with the earlier ones under its
``compatibility`` mode, with Confluent Schema Registry's meaning:

* ``BACKWARD``: the new schema reads data written with the previous one (delete a column, add an
  optional one; no new required column, no type change, no optional -> required);
* ``FORWARD``: data written with the new schema is readable with the previous one (add columns, delete
  optional ones; no deleting a required column, no type change, no required -> optional);
* ``FULL``: both; the ``_TRANSITIVE`` forms check against every earlier version, not only the last;
* ``NONE``: anything goes.

Elements have no mode: changing an element's type or authority breaks every dataset that uses it, so
it is refused unless the change is to its labels, format or sensitivity.

Two more kinds of subject record governance, so that a change to them is registered too (and a running
server, which re-reads the registry when a version is registered, applies it on the next query): a
dataset's ``sharing`` (share type, owner, the columns' formats, which decide masking) and a
``department``. Any change to them is compatible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from schemas.model import COMPATIBILITY_MODES, Dataset, Department, Element, Registry

Definition = dict[str, Any]
"""A subject's definition: the JSON object fingerprinted and kept in ``ops.schema_versions`` (read back with
``json.loads``); its keys depend on the kind of subject (the ``*_definition`` functions below)."""

MODES = tuple(COMPATIBILITY_MODES)
DEFAULT_MODE = "BACKWARD"


def dataset_definition(ds: Dataset) -> Definition:
    return {"columns": {c.name: {"type": c.type, "required": c.required, "element": c.element,
                                 "from_authority": c.from_authority,
                                 # only when declared: a registry without references keeps its fingerprints
                                 **({"references": c.references} if c.references else {})} for c in ds.columns},
            "key": list(ds.key)}


def element_definition(el: Element) -> Definition:
    return {"type": el.type, "authority": el.authority, "format": el.format, "code_list": el.code_list,
            "sensitivity": el.sensitivity, "name_zh": el.name_zh, "name_en": el.name_en}


def sharing_definition(ds: Dataset) -> Definition:
    """Who may read a dataset, and how: its share type, its owner, its columns' formats (masking)."""
    return {"share_type": ds.share_type, "owner": ds.owner,
            "formats": {c.name: c.format for c in ds.columns if c.format}}


def department_definition(department: Department) -> Definition:
    return {"name": department.name, "name_en": department.name_en}


def definitions(registry: Registry) -> dict[tuple[str, str], tuple[Definition, str | None]]:
    """(kind, subject) -> (definition, compatibility mode) of every subject the registry defines."""
    out: dict[tuple[str, str], tuple[Definition, str | None]] = {
        ("dataset", d.name): (dataset_definition(d), d.compatibility) for d in registry.datasets}
    out |= {("element", e.name): (element_definition(e), None) for e in registry.elements}
    out |= {("sharing", d.name): (sharing_definition(d), None) for d in registry.datasets}
    out |= {("department", d.code): (department_definition(d), None) for d in registry.departments}
    return out


def fingerprint(definition: Definition) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


_FINGERPRINTS: dict[str, dict[tuple[str, str], str]] = {}
"""registry.version -> the fingerprint of each subject's definition: every load compares the registry with
the lake's versions, and at 2,000 datasets computing these costs ~0.1 s a load. Kept per process (a task
process forked from a preloaded one inherits them, onesource.preload)."""


def fingerprints(registry: Registry) -> dict[tuple[str, str], str]:
    """(kind, subject) -> the fingerprint of its definition, for every subject the registry defines."""
    known = _FINGERPRINTS.get(registry.version)
    if known is None:
        known = {k: fingerprint(d) for k, (d, _) in definitions(registry).items()}
        if len(_FINGERPRINTS) >= 4:
            _FINGERPRINTS.clear()
        _FINGERPRINTS[registry.version] = known
    return known


def _backward(new: Definition, old: Definition) -> list[str]:
    """Reasons the new schema cannot read data written with the old one."""
    out = []
    for name, col in new["columns"].items():
        before = old["columns"].get(name)
        if before is None:
            if col["required"]:
                out.append(f"column {name}: added as required, but data written before has no value for it "
                           "(add it optional, or use compatibility NONE)")
            continue
        if before["type"] != col["type"]:
            out.append(f"column {name}: type changed from {before['type']} to {col['type']}")
        if col["required"] and not before["required"]:
            out.append(f"column {name}: made required, but data written before may lack it")
    if new["key"] != old["key"]:
        out.append(f"key changed from {old['key']} to {new['key']}")
    return out


def _forward(new: Definition, old: Definition) -> list[str]:
    """Reasons data written with the new schema cannot be read with the old one."""
    out = []
    for name, before in old["columns"].items():
        col = new["columns"].get(name)
        if col is None:
            if before["required"]:
                out.append(f"column {name}: removed, but readers of the previous version require it")
            continue
        if before["type"] != col["type"]:
            out.append(f"column {name}: type changed from {before['type']} to {col['type']}")
        if before["required"] and not col["required"]:
            out.append(f"column {name}: no longer required, but readers of the previous version rely on it")
    if new["key"] != old["key"]:
        out.append(f"key changed from {old['key']} to {new['key']}")
    return out


def incompatibilities(mode: str, new: Definition, history: list[Definition]) -> list[str]:
    """Field-level reasons ``new`` breaks ``mode`` against ``history`` (oldest first); empty if compatible."""
    if mode == "NONE" or not history:
        return []
    against = history if mode.endswith("_TRANSITIVE") else history[-1:]
    base = mode.removesuffix("_TRANSITIVE")
    reasons: list[str] = []
    for i, old in enumerate(against):
        label = f"version {len(history) - len(against) + i + 1}"
        found = (_backward(new, old) if base in ("BACKWARD", "FULL") else []) + \
                (_forward(new, old) if base in ("FORWARD", "FULL") else [])
        reasons += [f"{r} ({mode} against {label})" for r in dict.fromkeys(found)]
    return reasons


def element_incompatibilities(new: Definition, old: Definition) -> list[str]:
    return [f"{field} changed from {old[field]!r} to {new[field]!r}: every dataset using the element would break "
            "(register a new element instead)" for field in ("type", "authority") if new[field] != old[field]]


@dataclass(frozen=True)
class Version:
    subject: str
    kind: str
    version: int
    fingerprint: str
    definition: Definition
    compatibility: str | None
    registry_version: str
    registered_at: dt.datetime


@dataclass(frozen=True)
class Change:
    subject: str
    kind: str
    version: int
    """The version this change would become."""
    details: list[str]
    """What changed, field by field."""
    problems: list[str]
    """Why it is incompatible (empty: it may be registered)."""


def describe(new: Definition, old: Definition | None, kind: str) -> list[str]:
    if old is None:
        return ["new subject"]
    if kind != "dataset":
        return [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    out = [f"+ column {n} ({c['type']}{', required' if c['required'] else ''})"
           for n, c in new["columns"].items() if n not in old["columns"]]
    out += [f"- column {n}" for n in old["columns"] if n not in new["columns"]]
    for name, col in new["columns"].items():
        before = old["columns"].get(name)
        if before is not None and before != col:
            out += [f"~ column {name}.{k}: {before.get(k)!r} -> {v!r}" for k, v in col.items() if before.get(k) != v]
    if new["key"] != old["key"]:
        out.append(f"~ key: {old['key']} -> {new['key']}")
    return out


def pending(registry: Registry, versions: dict[tuple[str, str], list[Version]]) -> list[Change]:
    """What the registry's files change against the registered versions, subject by subject."""
    changes = []
    for (kind, name), (definition, mode) in definitions(registry).items():
        history = versions.get((kind, name), [])
        if history and history[-1].fingerprint == fingerprint(definition):
            continue
        old = history[-1].definition if history else None
        if kind == "dataset":
            problems = incompatibilities(mode or DEFAULT_MODE, definition, [v.definition for v in history])
        elif kind == "element":
            problems = element_incompatibilities(definition, old) if old else []
        else:  # sharing, department: any change is compatible
            problems = []
        changes.append(Change(name, kind, len(history) + 1, describe(definition, old, kind), problems))
    return changes
