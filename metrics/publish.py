"""Publish the KPIs as shared tables, and export them for the annual assessment.

The tables are the registry's ``connector: platform`` datasets (``kpi_figures``, ``kpi_members``: every
figure's items with what each adds to numerator and denominator, ``kpi_dataset_status``,
``kpi_duplicate_pairs``); each holds one slice per period, replaced in one
commit when the period is recomputed, so the bureau queries the history with governed SQL like any
shared dataset.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from core.calendar import WorkCalendar
from lakehouse.lake import CATALOG, SHARED, Lake, retrying
from metrics.kpis import KPI_NAMES, Period, compute
from schemas.model import Dataset, Registry

EXTRA_FIGURES = ("approval_rate",)


def figure_rows(result: dict, computed_at: dt.datetime) -> list[dict]:
    """One row per (scope, KPI): scope ``city`` or a department code."""
    as_of = dt.datetime.fromisoformat(result["as_of"])
    scopes = [("city", "全市", result["city"])] + [(d["code"], d["name"], d) for d in result["departments"]]
    empty = {"value": None, "numerator": 0, "denominator": 0, "target": None}
    approvals = result.get("approval_rate", {})
    rows = []
    for code, name, figures in scopes:
        for kpi in (*KPI_NAMES, *EXTRA_FIGURES):
            figure = figures[kpi] if kpi in KPI_NAMES else approvals.get(code, empty)
            rows.append({"period": result["period"], "as_of": as_of, "scope": code, "scope_name": name, "kpi": kpi,
                         **{k: figure[k] for k in ("value", "numerator", "denominator", "target")},
                         "computed_at": computed_at})
    return rows


@dataclass(frozen=True)
class Inputs:
    """What a platform product is made from: the period's KPI result and when it was computed, the lake and
    the registry, which datasets consume which elements (metrics.once_only.consumers), the product's own
    dataset and the tables already in the shared zone."""

    result: dict
    computed_at: dt.datetime
    lake: Lake | None = None
    registry: Registry | None = None
    consumed: dict | None = None
    dataset: Dataset | None = None
    published: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Product:
    """One of OneSource's own tables (a registry dataset ``connector: {kind: platform, product: ...}``)."""

    rows: Callable[[Inputs], list[dict] | str | None]
    """Its rows: a list of dicts, or the SELECT that makes them from the lake's tables, or None: nothing to
    publish yet (the table is neither created nor replaced)."""
    sliced: bool = False
    """Kept one slice per period (the KPI history: a recomputed period replaces its slice); else replaced whole."""


def _period_rows(key: str) -> Callable[[Inputs], list[dict]]:
    """The KPI result's rows under ``key``, each with its period."""
    return lambda i: [{"period": i.result["period"], **row} for row in i.result[key]]


def _conformance(i: Inputs) -> list[dict]:
    from metrics import once_only

    return once_only.conformance(i.registry, i.consumed or {})


def _lineage(i: Inputs) -> list[dict]:
    from metrics import once_only

    return once_only.lineage(i.registry, i.consumed or {})


def _catalogue(i: Inputs) -> list[dict]:
    from metrics import resource_catalogue

    return resource_catalogue.rows(i.registry, i.lake)


def _prefill(i: Inputs) -> list[dict]:
    """The forms' prefill over every subject (metrics.forms)."""
    from metrics.forms import prefill_rows

    return prefill_rows(i.lake, i.registry)


def _enterprise_profile(i: Inputs) -> str | None:
    """The profile's SELECT over its sources, once every one of them is in the shared zone."""
    from metrics.prefill import profile_sources, profile_sql

    if set(profile_sources(i.registry, i.dataset)) <= i.published:
        return profile_sql(i.registry, i.dataset)
    return None


PRODUCTS: dict[str, Product] = {
    "kpi_figures": Product(lambda i: figure_rows(i.result, i.computed_at), sliced=True),
    "kpi_members": Product(_period_rows("members"), sliced=True),
    "kpi_dataset_status": Product(_period_rows("datasets"), sliced=True),
    "kpi_duplicate_pairs": Product(_period_rows("duplicate_pairs"), sliced=True),
    "registry_conformance": Product(_conformance),
    "registry_lineage": Product(_lineage),
    "data_catalogue": Product(_catalogue),
    "enterprise_profile": Product(_enterprise_profile),
    "form_prefill": Product(_prefill),
}
"""The platform products by name: what schemas/kinds.py's ``platform`` kind lets a dataset name
(tests/test_platform_products.py keeps the two lists equal)."""


def product(name: str) -> Product:
    """The platform product ``name``; ValueError for one OneSource does not make."""
    found = PRODUCTS.get(name)
    if found is None:
        raise ValueError(f"unknown platform product {name!r}")
    return found


def _arrow(ds: Dataset, rows: list[dict]) -> pa.Table:
    types = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_(),
             "timestamp": pa.timestamp("us"), "date": pa.date32()}
    return pa.table({c.name: pa.array([r.get(c.name) for r in rows], types.get(c.type, pa.string()))
                     for c in ds.columns})


def publish(lake: Lake, registry: Registry, result: dict, computed_at: dt.datetime | None = None) -> dict[str, int]:
    """Write every platform table in one commit: the period's slice of the KPI tables, and the current
    conformance, lineage, catalogue and enterprise profile. Returns rows written per table."""
    from metrics.once_only import consumers

    computed_at = computed_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    consumed = consumers(lake)
    published = frozenset(lake.tables(SHARED))
    tables: dict[str, tuple[Dataset, pa.Table | str]] = {}
    for ds in registry.datasets:
        if not ds.platform:
            continue
        data = product(ds.connector.settings["product"]).rows(
            Inputs(result, computed_at, lake, registry, consumed, ds, published))
        if data is not None:
            tables[ds.name] = (ds, data if isinstance(data, str) else _arrow(ds, data))
    written: dict[str, int] = {}

    def write() -> None:
        with lake.transaction() as con:
            for name, (ds, data) in tables.items():
                cols = ", ".join(f'"{c.name}" {c.duck_type}' for c in ds.columns)
                target = f'{CATALOG}.{SHARED}."{name}"'
                con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({cols})")
                if PRODUCTS[ds.connector.settings["product"]].sliced:
                    con.execute(f"DELETE FROM {target} WHERE period = ?", [result["period"]])
                else:
                    con.execute(f"DELETE FROM {target}")
                if isinstance(data, str):
                    written[name] = con.execute(f"INSERT INTO {target} {data}").fetchone()[0]
                    continue
                con.register("platform_rows", data)
                con.execute(f"INSERT INTO {target} SELECT * FROM platform_rows")
                con.unregister("platform_rows")
                written[name] = data.num_rows
            lake.commit_message(f"KPIs {result['period']}", {"as_of": result["as_of"]})

    retrying(write, lake.settings.commit_retries, f"publishing the KPIs of {result['period']}")
    return written


def publish_periods(lake: Lake, registry: Registry, periods: list[Period],
                    calendar: WorkCalendar | None = None) -> list[dict]:
    """Compute and publish each period (as of its end, or now for the running month)."""
    results = []
    for period in periods:
        result = compute(lake, registry, period, calendar=calendar)
        publish(lake, registry, result)
        results.append(result)
    return results


# -- exports for the annual assessment ---------------------------------------------------------

EXPORT_COLUMNS = ("period", "scope", "scope_name", "kpi", "value", "numerator", "denominator", "target", "as_of")


def export_rows(lake: Lake, period: str | None = None) -> list[tuple]:
    where, params = ("WHERE period = ?", [period]) if period else ("", [])
    return lake.con.execute(
        f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {CATALOG}.{SHARED}.kpi_figures {where} "
        "ORDER BY period, scope = 'city' DESC, scope, kpi", params).fetchall()


def write_csv(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:  # with BOM: Excel opens it as UTF-8
        writer = csv.writer(fh)
        writer.writerow(EXPORT_COLUMNS)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[tuple]) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "KPIs"
    ws.append(list(EXPORT_COLUMNS))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v for v in row])
    for col, width in zip("ABCDEFGHI", (9, 10, 22, 26, 9, 11, 12, 8, 20), strict=True):
        ws.column_dimensions[col].width = width
    for kpi, value in ws.iter_rows(min_row=2, min_col=4, max_col=5):
        if kpi.value != "reuse_factor":  # a mean count of departments, not a rate
            value.number_format = "0.00%"
    ws.freeze_panes = "A2"
    wb.save(path)
    return path
