"""Once-only conformance and lineage: who collects what it should consume, and where each fact goes.

* **Conformance**, per department: every element it collects although another department is the
  authority, the authoritative dataset it should take it from, and whether it already consumes that
  dataset (an allowed governed query on it, or a column filled ``from_authority``). A column declared
  ``from_authority`` is consumed, not collected, and leaves the duplicate collection rate.
* **Lineage**: element -> authoritative dataset -> the shared tables and derived products holding it
  (copies, references, the enterprise profile) -> the departments that consume each.
"""

from __future__ import annotations

from collections import defaultdict

from lakehouse.lake import CATALOG, OPS, Lake
from schemas.model import Registry


def consumers(lake: Lake) -> dict[str, set[str]]:
    """dataset -> departments other than its owner that ever read it with an allowed governed query."""
    out: dict[str, set[str]] = defaultdict(set)
    for dataset, department in lake.con.execute(
            f"""SELECT DISTINCT unnest(tables), department FROM {CATALOG}.{OPS}.audit_events
                WHERE decision = 'allowed'""").fetchall():
        out[dataset].add(department)
    return out


def conformance(registry: Registry, consumed: dict[str, set[str]], department: str | None = None) -> list[dict]:
    rows = []
    for ds in registry.source_datasets:
        if department and ds.owner != department:
            continue
        for col in ds.columns:
            if not col.element:
                continue
            el = registry.element(col.element)
            authority = registry.dataset(el.authority)
            if authority.owner == ds.owner:
                continue
            reads = ds.owner in consumed.get(authority.name, set())
            rows.append({
                "department": ds.owner, "dataset": ds.name, "column_name": col.name, "element": el.name,
                "element_name": el.name_zh, "authority_department": authority.owner,
                "authority_dataset": authority.name,
                "status": "references" if col.from_authority else "collects",
                "consumes_authority": bool(col.from_authority or reads),
                "advice": ("once-only: filled from the authority" if col.from_authority else
                           f"declare {col.name} from_authority (joined on the key) and stop collecting it"),
            })
    return rows


def lineage(registry: Registry, consumed: dict[str, set[str]], element: str | None = None) -> list[dict]:
    rows = []
    products = [d for d in registry.datasets if d.platform]
    for el in registry.elements:
        if element and el.name != element:
            continue
        authority = registry.dataset(el.authority)
        for ds in registry.datasets:
            held = [c for c in ds.columns if c.element == el.name]
            if not held:
                continue
            kind = ("authority" if ds.name == authority.name else "derived" if ds.platform else
                    "reference" if all(c.from_authority for c in held) else "copy")
            rows.append({"element": el.name, "element_name": el.name_zh, "authority_dataset": authority.name,
                         "authority_department": authority.owner, "holder": ds.name, "holder_department": ds.owner,
                         "kind": kind, "shared_table": ds.table,
                         "consumers": ", ".join(sorted(consumed.get(ds.name, set())))})
        for product in products:
            if any(c.name == el.name for c in product.columns) and not any(r["holder"] == product.name for r in rows
                                                                           if r["element"] == el.name):
                rows.append({"element": el.name, "element_name": el.name_zh, "authority_dataset": authority.name,
                             "authority_department": authority.owner, "holder": product.name,
                             "holder_department": product.owner, "kind": "derived", "shared_table": product.table,
                             "consumers": ", ".join(sorted(consumed.get(product.name, set())))})
    return rows
