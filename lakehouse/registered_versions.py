"""The registry's versions in the lake: read them, and register what the YAML files changed.

:func:`apply` registers every compatible change as a new version in one commit, and refuses the
whole set when any change breaks its dataset's compatibility mode, listing every reason field by
field: a half-applied registry would leave datasets joined to elements of different versions.
Ingestion applies the registry before each load, so an incompatible edit fails the load with the
reasons instead of publishing under a schema no one agreed to.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

from core.errors import TerminalError
from lakehouse import ledger
from lakehouse.lake import Lake, retrying
from schemas.model import Registry
from schemas.versions import Change, Version, definitions, fingerprints, pending


class IncompatibleChangeError(TerminalError):
    """A registry change breaks a dataset's compatibility mode (or an element's type or authority)."""

    def __init__(self, changes: list[Change]):
        self.changes = changes
        lines = [f"  {c.kind} {c.subject} (would be version {c.version}): {p}" for c in changes for p in c.problems]
        super().__init__("the registry change is incompatible; nothing was registered:\n" + "\n".join(lines) +
                         "\nRevert the change, make it compatible, or set the dataset's compatibility mode "
                         "(e.g. NONE for a deliberate break)")


def load_versions(lake: Lake) -> dict[tuple[str, str], list[Version]]:
    out: dict[tuple[str, str], list[Version]] = defaultdict(list)
    for subject, kind, version, fp, definition, mode, reg, at in lake.con.execute(
            f"SELECT * FROM {ledger.ref('schema_versions')} ORDER BY subject, kind, version").fetchall():
        out[(kind, subject)].append(Version(subject, kind, version, fp, json.loads(definition), mode, reg, at))
    return out


def history(lake: Lake, subject: str) -> list[Version]:
    versions = load_versions(lake)
    return versions.get(("dataset", subject)) or versions.get(("element", subject)) or []


def diff(lake: Lake, registry: Registry) -> list[Change]:
    # Most loads meet a registry the lake already has: the latest fingerprint per subject says so without
    # reading and parsing every definition ever registered (~0.25 s a load at 2,000 datasets)
    latest = dict(((kind, subject), fp) for kind, subject, fp in lake.con.execute(
        f"SELECT kind, subject, fingerprint FROM {ledger.ref('schema_versions')} "
        "QUALIFY row_number() OVER (PARTITION BY kind, subject ORDER BY version DESC) = 1").fetchall())
    if all(latest.get(key) == fp for key, fp in fingerprints(registry).items()):
        return []
    return pending(registry, load_versions(lake))


def apply(lake: Lake, registry: Registry) -> list[Change]:
    """Register every change as a new version; raise :class:`IncompatibleChangeError` if any breaks."""
    changes = diff(lake, registry)
    broken = [c for c in changes if c.problems]
    if broken:
        raise IncompatibleChangeError(broken)
    if not changes:
        return []
    defined, prints = definitions(registry), fingerprints(registry)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows: list[ledger.SchemaVersionRow] = []
    for c in changes:
        definition, mode = defined[(c.kind, c.subject)]
        rows.append({"subject": c.subject, "kind": c.kind, "version": c.version,
                     "fingerprint": prints[(c.kind, c.subject)],
                     "definition": json.dumps(definition, ensure_ascii=False, sort_keys=True), "compatibility": mode,
                     "registry_version": registry.version, "registered_at": now})

    def write() -> None:
        with lake.transaction() as con:
            # another process may have registered the same change meanwhile: skip what exists
            have = {(s, k, v) for s, k, v in con.execute(
                f"SELECT subject, kind, version FROM {ledger.ref('schema_versions')}").fetchall()}
            fresh = [r for r in rows if (r["subject"], r["kind"], r["version"]) not in have]
            if fresh:
                ledger.append(con, "schema_versions", *fresh)
                lake.commit_message(f"registry {registry.version}", {"registry_version": registry.version,
                                                                     "versions": len(fresh)})

    retrying(write, lake.settings.commit_retries, "registering the registry's versions")
    return changes
