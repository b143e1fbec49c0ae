"""Once-only conformance and lineage: who collects what it should consume, and where each fact goes.

* **Conformance**, per department: every element it collects although another department is the
  authority, the authoritative dataset it should take it from, and whether it already consumes that
  dataset (an allowed governed query on it, or a column filled ``from_authority``). A column declared
  ``from_authority`` is consumed, not collected, and a key column declared ``references: authority``
  names the authority's record: neither counts in the duplicate collection rate.
* **Lineage**: element -> authoritative dataset -> the shared tables and derived products holding it
  (copies, references, the enterprise profile) -> the departments that consume each.
"""

from __future__ import annotations

from collections import defaultdict

from lakehouse import ledger
from lakehouse.lake import Lake
from metrics.kpis import collects
from schemas.model import Column, Dataset, Registry


def consumers(lake: Lake) -> dict[str, set[str]]:
    """dataset -> departments other than its owner that ever read it with an allowed governed query."""
    out: dict[str, set[str]] = defaultdict(set)
    for dataset, department in lake.con.execute(
            f"""SELECT DISTINCT unnest(tables), department FROM {ledger.ref('audit_events')}
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
            referenced = not collects(registry, ds, col)  # the duplicate collection rate's own reading
            rows.append({
                "department": ds.owner, "dataset": ds.name, "column_name": col.name, "element": el.name,
                "element_name": el.name_zh, "authority_department": authority.owner,
                "authority_dataset": authority.name,
                "status": "references" if referenced else "collects",
                "consumes_authority": bool(referenced or reads),
                "advice": _advice(registry, ds, col, authority),
            })
    return rows


def _advice(registry: Registry, ds: Dataset, col: Column, authority: Dataset) -> str:
    if col.from_authority:
        return "once-only: filled from the authority"
    if col.references:
        return "once-only: the key naming the authority's record (references: authority)"
    if len(authority.key) == 1 and authority.column(authority.key[0]).element == col.element:
        # the key itself cannot be filled from the authority: it is what the join needs
        return f"declare {col.name} references: authority (the key naming {authority.name}'s record)"
    return f"declare {col.name} from_authority (joined on the key) and stop collecting it"


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
