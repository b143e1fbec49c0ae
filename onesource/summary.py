"""The shared zone read back from the lake, printed: what `onesource status` shows, and how a run's summary
starts (the demo city's, examples/changsha/runner.py, goes on with its KPIs and story)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onesource.dagfactory import ALL_DAG_ID

if TYPE_CHECKING:
    from rich.console import Console

    from core.config import Settings
    from metrics.loads import DatasetStatus


@dataclass(frozen=True)
class SharedZone:
    datasets: int
    published_datasets: int
    published_rows: int
    statuses: list[DatasetStatus]
    shared_datasets: int | None = None
    """Datasets that count as shared now, by the sharing rate's own rule (metrics.kpis.sharing_reason)."""
    warnings: list[tuple] = field(default_factory=list)
    """(dataset, check, column, failing records) of published loads that carry a warning."""
    consistency: list[tuple] = field(default_factory=list)
    """(dataset, element, authority, compared, equal) of the last consistency run."""


def print_shared_zone(console: Console, zone: SharedZone, settings: Settings, *,
                      title: str = "OneSource: the shared zone",
                      run: tuple[dict[str, int], float] | None = None) -> None:
    """Every dataset's rows shared and last load, the tables damaged, the loads that did not publish and why,
    then where things are and how to query them. ``run``: (loads of this run by status, its seconds), said
    after the counts; without it (`onesource status`, which loaded nothing) no "loads this run ... took 0 s"."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("dataset", "owner", "share type", "rows shared", "last load"):
        table.add_column(col, justify="right" if col == "rows shared" else "left")
    for s in zone.statuses:
        style = {"published": "green", "quarantined": "yellow", "failed": "red"}.get(s.last_status or "", "")
        last = f"[{style}]{s.last_status or 'never loaded'}[/]" if style else (s.last_status or "never loaded")
        if s.damaged:
            last = f"[bold red]damaged[/] ({len(s.missing_files)} data file(s) missing)"
        table.add_row(s.dataset, s.owner, s.share_type, "-" if s.rows is None else f"{s.rows:,}", last)
    console.print(table)
    damaged = [s for s in zone.statuses if s.damaged]
    if damaged:
        from lakehouse.integrity import damage_message

        console.print(f"\n[bold red]Damaged tables ({len(damaged)})[/], not published as they stand:")
        for s in damaged:
            console.print(f"  [red]{s.dataset}[/]: {damage_message(f'shared.{s.dataset}', list(s.missing_files))}",
                          highlight=False, soft_wrap=True)
    failed = [s for s in zone.statuses if s.last_status in ("quarantined", "failed")]
    if failed:
        console.print(f"\n[bold]Loads that did not publish ({len(failed)}), and why:[/]")
        for s in failed:
            console.print(f"  [yellow]{s.dataset}[/]: {_first_lines(s.last_error or '', 2)}")
    if zone.warnings:
        console.print("\n[bold]Published with warnings[/] (recorded; `onesource quality report DATASET` shows the rows):")
        for dataset, check, column, n in zone.warnings:
            console.print(f"  {dataset}: {check} on {column}: {n} record(s)")
    if zone.consistency:
        console.print("\n[bold]多元校核: copies compared with their authority[/]")
        for dataset, element, authority, compared, equal in zone.consistency:
            rate = f"{equal / compared:.1%}" if compared else "-"
            console.print(f"  {dataset}.{element} vs {authority}: {equal:,}/{compared:,} equal ({rate})")
    if run is None:
        after = "."
    else:
        loads, seconds = run
        runs = ", ".join(f"{n} {k}" for k, n in sorted(loads.items())) or "none (nothing new: idempotent)"
        after = f"; loads this run: {runs}; took {seconds:.0f} s."
    console.print(
        f"\n[bold]{zone.shared_datasets}/{zone.datasets} datasets shared[/] (as the sharing rate counts: "
        f"published, last load passed, within the update cycle; not_shared never), "
        f"[bold]{zone.published_datasets} tables with {zone.published_rows:,} rows published[/]" + after + "\n"
        f"Home: {settings.home}  (lake: lake/, raw files: landing/, quarantine: quarantine/, "
        f"Data Docs: gx/uncommitted/data_docs/local_site/index.html, "
        f"Airflow logs: reports/airflow-{ALL_DAG_ID}.log)\n"
        "Query it:  .venv/bin/onesource sql \"SELECT * FROM shared.amr_enterprise_register LIMIT 5\"\n"
        "As a department (governed, audited):  .venv/bin/onesource sql --as tax \"SELECT count(*) FROM "
        "shared.amr_enterprise_register\"\n"
        "Serve HTTP + Postgres wire:  .venv/bin/onesource serve  (users and passwords: demo-credentials.json)"
    )


def _first_lines(text: str, n: int) -> str:
    return " ".join(text.splitlines()[:n])
