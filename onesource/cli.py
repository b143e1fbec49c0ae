"""The `onesource` command: one way in to every stage.

    onesource demo [--departments N]          build the demo city and load it through Airflow (a plugin:
                                              examples/changsha, through the onesource.commands entry point)
    onesource registry check|list [--json]    validate / list the registry
    onesource registry diff|apply|history X   schema versions and compatibility (Confluent's modes)
    onesource registry conformance|lineage    once-only: who re-collects what; where each element goes
    onesource registry export --format xlsx   the catalogue (GB/T 21063.3 core fields)
    onesource registry schema [--out FILE]    JSON Schema of the registry files, for editors (docs/registry.md)
    onesource prefill annual-report USCC      an enterprise's annual report, pre-filled from authorities
    onesource forms list | fill FORM ...      a registry form filled from the lake as XLSX (--as DEPT)
    onesource ingest DATASET... | --all       load datasets now, without Airflow (backfills, debugging)
    onesource status                          every dataset: rows shared, last load and why (damaged tables too)
    onesource doctor [--full]                 check the home end to end, one line per check
    onesource quality report DATASET [--all]  the last validation: failing checks, failing rows with reasons
    onesource quality consistency             compare copies of elements with their authority (多元校核)
    onesource sql "SELECT ..." [--as-of T]    query the lake (read-only, for engineers; audited), as of a snapshot
    onesource sql --as DEPT "SELECT ..."      a department's governed query (grants, masking, audit)
    onesource grants add|list|revoke          conditional datasets' grants
    onesource subscriptions add|list|deliver|cancel   数据回流: a department's view delivered on every publish
    onesource requests create|list|approve|refuse|revoke   access requests, decided within the SLA
    onesource serve                           HTTP API and Postgres-wire endpoint
    onesource users add USER --department D [--role R]   a new user; password and token shown once
    onesource users list|disable|enable|reset-password|rotate-token [USER]   (reset: both at once)
    onesource metrics [--period YYYY-MM]      the sharing KPIs, per department and city-wide
                      [--publish] [--export F] (shared KPI tables; XLSX/CSV for the annual assessment)
    onesource audit verify                    check the audit log: keyed chain, anchor, key
    onesource backup DEST                     a consistent copy of the home while it runs: catalog, data,
                                              landing zone, audit log and its key (outside the home)
    onesource restore SRC [--home PATH]       verify a backup and restore it into an empty home
    onesource airflow ARGS...                 the Airflow CLI on this home (e.g. `dags list`)
    onesource airflow standalone [--api-port N]  Airflow's UI and scheduler; Ctrl-C stops every process
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import datetime as dt
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import Settings
from core.errors import ConfigurationError, OneSourceError
from onesource import damage
from onesource.home import secure_home

# Only what parsing the arguments needs is imported here: each command imports its stage itself, and rich on
# its first print, so `onesource sql` pays for the governed engine and nothing else (tests/test_cli_speed.py).


class _Console:
    """rich's Console, made on first use. Piped output (CI logs, `make demo | tee`) gets 140 columns instead
    of rich's default 80."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(stderr=self._stderr, width=None if stream.isatty() else 140)
        return getattr(self._console, name)

    # rich's Progress and status use the console as a context manager (`with console:`); dunder methods
    # bypass __getattr__, so they are passed on by hand
    def __enter__(self):
        return self.__getattr__("__enter__")()

    def __exit__(self, *exc):
        return self._console.__exit__(*exc)


console = _Console()
err = _Console(stderr=True)


def Table(*args, **kwargs):  # noqa: N802 - stands for rich's Table, imported when a table is printed
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    from schemas import check_registry

    if args.action == "schema":
        return _registry_schema(args.out)
    registry, issues = check_registry(settings.registry_dir)
    if args.action == "check":
        if issues:
            for issue in issues:
                err.print(f"[red]{issue}[/]", highlight=False, soft_wrap=True)
            err.print(f"{len(issues)} error(s) in {settings.registry_dir}")
            return 1
        console.print(f"registry OK: {len(registry.departments)} departments, {len(registry.elements)} elements, "
                      f"{len(registry.datasets)} datasets (version {registry.version})")
        return 0
    if issues:
        for issue in issues:
            err.print(f"[red]{issue}[/]", highlight=False, soft_wrap=True)
        return 1
    if args.action != "list":
        return _registry_lake_action(args, settings, registry)
    listing = {
        "departments": [{"code": d.code, "name": d.name} for d in registry.departments],
        "datasets": [{"name": d.name, "owner": d.owner, "share_type": d.share_type, "update_cycle": d.update_cycle,
                      "table": d.table} for d in registry.datasets],
    }
    if args.json:
        print(json.dumps(listing, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"{len(registry.departments)} departments, {len(registry.datasets)} datasets")
    for col in ("dataset", "owner", "share type", "update cycle", "table"):
        table.add_column(col)
    for d in listing["datasets"]:
        table.add_row(d["name"], d["owner"], d["share_type"], d["update_cycle"], d["table"])
    console.print(table)
    return 0


def _registry_schema(out: str | None) -> int:
    """The registry files' JSON Schema (from schemas.model), for editors: stdout, or ``--out FILE``."""
    from schemas.reference import schema_text

    if out is None:
        sys.stdout.write(schema_text())
        return 0
    path = Path(out).expanduser()
    try:
        path.write_text(schema_text(), encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write the registry's JSON Schema to {path}: {exc.strerror or exc}; "
                                 "name a writable file with --out") from None
    console.print(f"wrote the registry's JSON Schema to {path}; a registry file uses it with the first line "
                  f"`# yaml-language-server: $schema={path.resolve()}` (docs/registry.md)", highlight=False, soft_wrap=True)
    return 0


def _registry_lake_action(args: argparse.Namespace, settings: Settings, registry) -> int:
    """diff / apply / history / conformance / lineage / export: the registry against the lake."""
    from lakehouse import Lake
    from lakehouse import registered_versions as versions

    with Lake(settings.lake) as lake:
        if args.action in ("diff", "apply"):
            changes = versions.diff(lake, registry)
            for c in changes:
                style = "red" if c.problems else "green"
                console.print(f"[{style}]{c.kind} {c.subject} -> version {c.version}[/]", highlight=False)
                for d in c.details:
                    console.print(f"    {d}", highlight=False)
                for problem in c.problems:
                    console.print(f"    [red]incompatible:[/] {problem}", highlight=False)
            if not changes:
                console.print("the registry matches its registered versions")
            if args.action == "apply":
                versions.apply(lake, registry)  # raises, listing every reason, when any change breaks
                console.print(f"registered {len(changes)} new version(s)")
            return 1 if any(c.problems for c in changes) else 0
        if args.action == "history":
            if not args.subject:
                err.print("name a dataset or element: onesource registry history DATASET")
                return 2
            table = Table(title=f"versions of {args.subject}")
            for col in ("version", "registered", "registry", "compatibility", "definition"):
                table.add_column(col)
            found = versions.history(lake, args.subject)
            named = {d.name for d in registry.datasets} | {e.name for e in registry.elements}
            if not found and args.subject not in named:  # a typo, not a dataset waiting for its first load
                from schemas.exceptions import UnknownNameError
                from schemas.model import unknown_name_message

                raise UnknownNameError(unknown_name_message("dataset or element", args.subject, named))
            for v in found:
                shown = (", ".join(f"{n}:{c['type']}{'!' if c['required'] else ''}"
                                   for n, c in v.definition["columns"].items())
                         if v.kind == "dataset" else json.dumps(v.definition, ensure_ascii=False))
                table.add_row(str(v.version), f"{v.registered_at:%Y-%m-%d %H:%M}", v.registry_version,
                              v.compatibility or "-", shown)
            console.print(table if found else f"{args.subject} has no registered version yet "
                                              "(`onesource registry apply`, or its first load, registers it)")
            return 0
        if args.action == "export":
            from metrics.resource_catalogue import export

            # by default into the home's reports, never the current folder (often the repository itself)
            path = Path(args.output or settings.reports_dir / "catalogue").with_suffix(f".{args.format}")
            path.parent.mkdir(parents=True, exist_ok=True)
            export(path, registry, lake)
            console.print(f"wrote the catalogue ({len(registry.datasets)} resources) to {path}"
                          + ("" if args.output else " (--output FILE to write it elsewhere)"), highlight=False)
            return 0
        from metrics.once_only import conformance, consumers, lineage

        consumed = consumers(lake)
    if args.action == "conformance":
        rows = conformance(registry, consumed, args.department)
        columns = ("department", "dataset", "column_name", "element_name", "authority_dataset", "status",
                   "consumes_authority")
    else:
        rows = lineage(registry, consumed, args.subject)
        columns = ("element", "authority_dataset", "holder", "holder_department", "kind", "consumers")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"{args.action}: {len(rows)} row(s)")
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in columns))
    console.print(table)
    return 0


def cmd_prefill(args: argparse.Namespace, settings: Settings) -> int:
    from lakehouse import Lake
    from metrics.prefill import annual_report, prefill_rates
    from schemas import load_registry

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake, read_only=True) as lake:
        overall, per = prefill_rates(lake, registry)
        form = annual_report(lake, registry, args.uscc) if args.uscc else None
    if args.uscc and form is None:
        err.print(f"{args.uscc} is not in the enterprise profile (not registered with market regulation, or the "
                  "profile's sources are not published yet)")
        return 1
    if args.json:
        print(json.dumps({"overall_prefill_rate": overall, "enterprises": len(per),
                          "form": [{"field": f.label, "element": f.element, "value": f.value, "source": f.source}
                                   for f in form or []]}, ensure_ascii=False, indent=2, default=str))
        return 0
    if form:
        table = Table(title=f"企业年度报告 {args.uscc}: pre-filled from authoritative sources")
        for col in ("field", "value", "filled from"):
            table.add_column(col)
        for f in form:
            table.add_row(f.label, "" if f.value is None else str(f.value),
                          f.source or "[yellow]the enterprise enters it[/]")
        console.print(table)
        filled = sum(1 for f in form if f.source)
        console.print(f"this enterprise: {filled}/{len(form)} fields pre-filled ({filled / len(form):.0%})")
    console.print(f"all {len(per)} enterprises: prefill rate {overall:.0%}" if overall is not None
                  else "no enterprise profile yet: load market regulation, tax and social security first")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import run_dataset
    from schemas import load_registry

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    names = [d.name for d in registry.source_datasets] if args.all else args.datasets
    if not names:
        err.print("name one or more datasets, or --all")
        return 2
    bad, statuses = 0, {}
    for name in names:
        with console.status(f"loading {name}"):
            results = run_dataset(settings, registry, name, os.environ)
        for r in results:
            colour = {"published": "green", "unchanged": "dim", "quarantined": "yellow"}.get(r.status, "red")
            said = (f": {_unchanged(settings, registry, r.dataset, statuses)}" if r.status == "unchanged"
                    else f" {r.rows:,} rows" if r.status in ("published", "quarantined") else "")
            notes = f"\n  {r.message}" if r.status == "published" and r.message else ""  # checks, drift, warnings
            console.print(f"[{colour}]{r.status:11}[/] {r.dataset}{said}" + ("" if r.ok else f"\n{r.message}") + notes,
                          highlight=False)
            bad += not r.ok
    from quality import build_data_docs

    with console.status("rendering the Data Docs"):
        console.print(f"Data Docs: {build_data_docs(settings.gx_project_root)}", highlight=False)
    return 1 if bad else 0


def _unchanged(settings: Settings, registry, dataset: str, statuses: dict) -> str:
    """What an ingest that found nothing new says: the last load, and what is shared now (not "0 rows").
    ``statuses`` is filled on the first call: a dataset with nothing new is not changed by the others' loads."""
    from lakehouse import Lake
    from metrics import dataset_statuses

    if not statuses:
        with Lake(settings.lake, read_only=True) as lake:
            statuses.update((s.dataset, s) for s in dataset_statuses(lake, registry, check_files=False))
    s = statuses[dataset]
    shared = "nothing shared yet" if s.rows is None else f"{s.rows:,} rows shared"
    last = (f"last load {s.last_load_at:%Y-%m-%d %H:%M} UTC, {s.last_status}" if s.last_load_at
            else "never loaded")
    # a file dropped one folder off is the usual reason: say where the extract is looked for
    connector = registry.dataset(dataset).connector
    where = ""
    if connector.kind == "file":
        where = f" in {settings.sources_dir / connector.settings['path']}"  # an absolute path stays itself
    return f"no new extract{where} ({last}; {shared})"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from lakehouse import Lake
    from metrics import dataset_statuses, sharing_statuses
    from schemas import load_registry

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake, read_only=True) as lake:
        statuses = dataset_statuses(lake, registry)
        shared = sharing_statuses(lake, registry, tz=settings.city_timezone)  # what the sharing rate counts
    damaged = 1 if any(s.damaged for s in statuses) else 0  # a table whose data files are gone fails the check
    for s in statuses:  # the ledger cannot know that files went missing since: queries of it fail, it is not shared
        if s.damaged and s.dataset in shared:
            shared[s.dataset] = f"damaged: {len(s.missing_files)} data file(s) missing"
    if args.json:
        print(json.dumps([{**asdict(s), "damaged": s.damaged, "counted_shared": shared[s.dataset] is None,
                           "sharing_reason": shared[s.dataset]} for s in statuses],
                         ensure_ascii=False, indent=2, default=str))
        return damaged
    from onesource.summary import SharedZone, print_shared_zone

    published = [s for s in statuses if s.rows is not None and not s.damaged]
    print_shared_zone(console, SharedZone(len(statuses), len(published), sum(s.rows or 0 for s in published),
                                          statuses, shared_datasets=sum(r is None for r in shared.values())),
                      settings)
    return damaged


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from onesource.doctor import FAIL, run
    from onesource.home import private_umask

    private_umask()  # whatever a check's library writes is private; the home itself is reported as found
    findings = run(settings, full=args.full)
    for f in findings:
        colour = {"ok": "green", "warn": "yellow"}.get(f.level, "red")
        console.print(f"[{colour}]{f.level:4}[/]  {f.check:9} {escape(f.message)}", highlight=False, soft_wrap=True)
    failed = [f.check for f in findings if f.level == FAIL]
    console.print(f"{len(findings) - len(failed)} of {len(findings)} checks passed" +
                  (f"; failed: {', '.join(failed)}" if failed else ""), highlight=False)
    return 1 if failed else 0


def cmd_quality(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from lakehouse import Lake, ledger
    from schemas import load_registry

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    if args.action == "consistency":
        from quality.consistency import run_consistency

        with Lake(settings.lake) as lake:
            run_id, rates = run_consistency(lake, registry)
        if args.json:
            print(json.dumps({"run_id": run_id, "results": [{**asdict(r), "rate": r.rate} for r in rates]},
                             ensure_ascii=False, indent=2))
            return 0
        table = Table(title=f"多元校核 consistency run {run_id}: copies compared with their authority")
        for col in ("department", "dataset", "element", "authority", "compared", "equal", "rate"):
            table.add_column(col, justify="right" if col in ("compared", "equal", "rate") else "left")
        for r in rates:
            table.add_row(r.owner, r.dataset, r.element, r.authority, f"{r.compared:,}", f"{r.equal:,}",
                          "-" if r.rate is None else f"{r.rate:.2%}")
        console.print(table)
        console.print(f"mismatching records: SELECT * FROM {ledger.ref('consistency_mismatches')} WHERE run_id = "
                      f"'{run_id}'", highlight=False)
        return 0
    from quality.report import dataset_quality

    if not args.dataset:
        err.print("name the dataset: onesource quality report DATASET")
        return 2
    registry.dataset(args.dataset)  # an unknown name fails here with the known ones listed
    with Lake(settings.lake, read_only=True) as lake:
        report = dataset_quality(lake, args.dataset, sample=None if args.all else 10)
    if args.json:
        print(json.dumps(asdict(report), ensure_ascii=False, indent=2, default=str))
        return 0
    if report.load_id is None:
        console.print(f"{args.dataset}: no load has been validated yet")
        return 0
    verdict = "[green]passed[/]" if report.passed else "[red]failed a blocking check (quarantined)[/]"
    console.print(f"{args.dataset}: last load {report.load_id} at {report.run_at:%Y-%m-%d %H:%M:%S}, "
                  f"{report.rows:,} rows, {verdict} (suite {report.suite_version})")
    table = Table()
    for col in ("check", "column", "severity", "result", "failing", "sample rows", "sample values"):
        table.add_column(col, justify="right" if col == "failing" else "left")
    for c in report.checks:
        result = "skipped: " + c["skipped"] if c["skipped"] else ("ok" if c["success"] else "[red]FAILED[/]")
        table.add_row(c["check_name"], c["column_name"] or "", "blocking" if c["blocking"] else "warning", result,
                      f"{c['unexpected_count']:,}" if not c["success"] else "",
                      ", ".join(map(str, c["sample_rows"])), ", ".join(c["sample_values"])[:60])
    console.print(table)
    if report.failing_rows:
        _print_failing_rows(report, args.dataset)
    return 0


def _print_failing_rows(report, dataset: str) -> None:
    """Every failing row with all its reasons under ``--all``; else the first few and how to see the rest."""
    from lakehouse import ledger

    where = (f"SELECT * FROM quarantine.{dataset} WHERE _reasons IS NOT NULL" if "key_value" not in report.failing_rows[0]
             else f"SELECT * FROM {ledger.ref('quality_rows')} WHERE load_id = '{report.load_id}'")
    shown = len(report.failing_rows)
    more = "" if shown == report.failing_total else f", the first {shown}; --all prints every one"
    console.print(f"\n{report.failing_total:,} failing row(s){more} ({where}):", highlight=False)
    cells = (["" if v is None else ", ".join(v) if isinstance(v, list) else str(v) for v in r.values()]
             for r in report.failing_rows)
    if shown > TABLE_ROWS:  # a rich table measures every cell first: 100,000 rows would take minutes
        print("\t".join(report.failing_rows[0]))
        for line in cells:
            print("\t".join(c.replace("\t", " ").replace("\n", " ") for c in line))
        return
    rows = Table()
    for col in report.failing_rows[0]:
        rows.add_column(col)
    for line in cells:
        rows.add_row(*line)
    console.print(rows)


def _as_of(text: str | None):
    """``--as-of``: a snapshot id (digits) or an ISO timestamp (UTC); argparse's message when it is neither."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    return _timestamp(text)


def _timestamp(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: write an ISO date or timestamp such as 2026-11-01 "
                                         "or 2026-11-01T08:30 (--as-of also takes a snapshot id)") from None


def _month(text: str) -> str:
    try:
        dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month: write YYYY-MM, e.g. 2026-11") from None
    return text


def _as_of_text(text: str) -> str:
    """metrics' ``--as-of`` stays text (a time without a zone is the city's): only checked here."""
    _as_of(text)
    return text


TABLE_ROWS = 1_000
"""Rows ``onesource sql`` prints as a table unless ``--max-rows`` says otherwise; when there are more it says
so plainly ("first N of M rows"). CSV and JSON print every row unless ``--max-rows`` is given; ``--output``
writes every row."""


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from sharing.export import SUFFIXES

    fmt = args.format or (SUFFIXES.get(Path(args.output).suffix.lower(), "") if args.output else "table")
    if not fmt or fmt == "table" and args.output:
        print(f"error: say which format to write {args.output} in: --format csv|json|parquet|arrow "
              "(or name the file .csv, .json, .parquet, .arrow)", file=sys.stderr)
        return 2
    if fmt in ("parquet", "arrow") and not args.output:
        print(f"error: --format {fmt} writes a file: add --output FILE", file=sys.stderr)
        return 2
    if args.output and not Path(args.output).absolute().parent.is_dir():  # before the query runs, not after
        raise ConfigurationError(f"cannot write {args.output}: the folder {Path(args.output).absolute().parent} "
                                 "does not exist; create it first, or name a file in an existing folder")
    arrow = fmt in ("parquet", "arrow")  # fetched as Arrow batches; otherwise Python values (no pyarrow import)
    if args.department:
        from schemas import load_registry
        from sharing.engine import GovernedEngine, Limits

        engine = GovernedEngine(settings, load_registry(settings.registry_dir, settings.cache_dir),
                                Limits(rows=settings.limits.rows, seconds=args.timeout or settings.limits.seconds),
                                as_of=args.as_of)
        engine.arrow = arrow
        result = engine.query(args.department, args.query, user=args.user, purpose=args.purpose, dialect=args.dialect)
    else:
        from sharing import run_sql

        result = run_sql(settings, args.query, as_of=args.as_of, user=args.user, purpose=args.purpose,
                         arrow=arrow)
    if args.output:
        return _write_result(result, Path(args.output), fmt)
    return _print_result(result, fmt, args.max_rows)


def _write_result(result, path: Path, fmt: str) -> int:
    """Every row into ``path``: Parquet, Arrow IPC (file format), CSV, or JSON (a list of objects)."""
    from sharing.export import write

    if fmt == "json":
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps([dict(zip(result.columns, row, strict=True)) for row in result.rows],
                                      ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        partial.replace(path)
    else:
        write(result, path, fmt)
    print(f"{result.row_count:,} row(s) written to {path} ({fmt})", file=sys.stderr)
    return 0


def _print_result(result, fmt: str, max_rows: int | None) -> int:
    """Every row, or the first ``max_rows`` (the table: :data:`TABLE_ROWS` by default) and a plain notice
    saying how many there are and how to get them all."""
    total = result.row_count
    shown = max_rows if max_rows is not None else TABLE_ROWS if fmt == "table" else 0
    rows = result.rows if not shown or total <= shown else result.rows[:shown]
    notice = None if len(rows) == total else \
        f"first {len(rows):,} of {total:,} rows (use --max-rows 0 / --output file.parquet to get all)"
    if fmt == "json":
        print(json.dumps([dict(zip(result.columns, row, strict=True)) for row in rows], ensure_ascii=False,
                         indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")  # LF as psql and DuckDB print it (csv's default: CRLF)
        writer.writerow(result.columns)
        writer.writerows(rows)
    else:
        table = Table(show_lines=False)
        for col in result.columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)
        console.print(notice or f"{total} row(s)")
        return 0
    if notice:  # CSV and JSON go to stdout for a program: the notice goes beside them
        print(notice, file=sys.stderr)
    return 0


def cmd_grants(args: argparse.Namespace, settings: Settings) -> int:
    from lakehouse import Lake, ledger
    from schemas import load_registry
    from sharing.grants import add_grant, revoke_grant

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake) as lake:
        if args.action == "add":
            if not (args.department and args.dataset):
                err.print("--department and --dataset are required")
                return 2
            grant_id = add_grant(lake, registry, args.department, args.dataset,
                                 columns=args.columns.split(",") if args.columns else None, row_filter=args.row_filter,
                                 expires_at=args.expires,
                                 match=args.match.split(",") if args.match else None,
                                 match_quota=args.match_quota, scope=args.scope)
            console.print(f"granted {args.dataset} to {args.department}: grant {grant_id}"
                          + (" (each user: the rows of its organisation's jurisdiction)"
                             if args.scope == "jurisdiction" else ""))
        elif args.action == "revoke":
            revoke_grant(lake, args.grant_id)
            console.print(f"revoked {args.grant_id}")
        else:
            from core.output import cell, print_json, print_table, records_of

            cur = lake.con.execute(f"SELECT * FROM {ledger.ref('grants')} ORDER BY granted_at, grant_id")
            found = records_of([d[0] for d in cur.description], cur.fetchall())
            matches: dict[str, list] = {}
            for grant_id, column, quota in lake.con.execute(
                    f"SELECT grant_id, column_name, daily_quota FROM {ledger.ref('grant_matches')} ORDER BY 1, 2").fetchall():
                matches.setdefault(grant_id, []).append({"column": column, "daily_quota": quota})
            for g in found:
                g["match"] = matches.get(g["grant_id"], [])
            if args.json:
                print_json(found)
                return 0
            if not found:
                console.print("no grants yet: onesource grants add --department D --dataset DS")
                return 0
            print_table(console, list(found[0]),
                        ([cell(v) if k != "match" else ", ".join(f"{m['column']} ({m['daily_quota']}/day)" for m in v)
                          for k, v in g.items()] for g in found),
                        title=f"{len(found)} grant(s); revoke one with: onesource grants revoke --grant-id ID",
                        whole=("grant_id", "row_filter"))
    return 0


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    """Users administration; every change is audited with who acted (``--by``, default $USER)."""
    from lakehouse import Lake
    from sharing import users
    from sharing.audit import AuditLog

    action = args.action
    if action != "list" and not args.user:
        raise users.UserError(f"say which user: onesource users {action} USER")
    if action == "add" and not args.department:
        raise users.UserError("say which department the user belongs to: onesource users add USER --department CODE "
                              "[--role analyst|steward|bureau|operator]")
    audit = AuditLog.of(settings) if action != "list" else None
    who = {"by": args.by or os.environ.get("USER", "cli"), "audit": audit}
    shown: dict[str, str] = {}
    with Lake(settings.lake, read_only=action == "list") as lake, contextlib.closing(audit) if audit else \
            contextlib.nullcontext():
        if action == "list":
            found = users.accounts(lake, args.department)
        elif action == "add":
            from schemas import load_registry

            registry = load_registry(settings.registry_dir)
            codes = [d.code for d in registry.departments]
            shown["password"], shown["token"] = users.add_user(
                lake, codes, args.user, args.department, args.role or "analyst", **who,
                organisation=args.organisation, organisations=[o.code for o in registry.organisations])
        elif action == "reset":  # the old command: both at once
            shown["password"], shown["token"] = users.reset_user(lake, args.user, **who)
        elif action == "reset-password":
            shown["password"] = users.reset_password(lake, args.user, **who)
        elif action == "rotate-token":
            shown["token"] = users.rotate_token(lake, args.user, **who)
        elif action == "set-role":
            if not args.role:
                raise users.UserError(f"say which role: onesource users set-role {args.user} --role "
                                      "analyst|steward|bureau|operator")
            shown["was"] = users.set_role(lake, args.user, args.role, **who)
            shown["role"] = args.role
        elif action == "disable":
            users.disable_user(lake, args.user, **who)
        else:
            users.enable_user(lake, args.user, **who)
    if action == "list":
        from core.output import cell, print_json, print_table

        rows = [{"user": a.name, "department": a.department, "organisation": a.organisation, "role": a.role,
                 "enabled": a.enabled, "created": a.created, "last_change": a.changed, "changed_by": a.changed_by}
                for a in found]
        if args.json:
            print_json(rows)
            return 0
        print_table(console, ("user", "department", "organisation", "role", "enabled", "created", "last change", "by"),
                    ([*(cell(r[k]) for k in ("user", "department")), r["organisation"] or "city",
                      cell(r["role"]), "yes" if r["enabled"] else "no",
                      *(cell(r[k]) for k in ("created", "last_change", "changed_by"))] for r in rows),
                    title=f"{len(rows)} user(s)", whole=("user",))
        return 0
    if args.json:
        print(json.dumps({"user": args.user, "action": action, **shown}, ensure_ascii=False, indent=2))
        return 0
    if action == "set-role":
        console.print(f"user {args.user}: role {shown['was']} -> {shown['role']} (its portal sessions ended)",
                      highlight=False)
        return 0
    if action in ("disable", "enable"):
        console.print(f"user {args.user} {action}d" + (": refused from its next request or query on"
                                                         if action == "disable" else ""))
        return 0
    what = " and ".join(f"new {k}" if action != "add" else k for k in shown)
    console.print(f"user {args.user}: {what} (shown once, only hashes are kept)\n"
                  + "\n".join(f"{k}: {v}" for k, v in shown.items()), markup=False, highlight=False)
    return 0


def cmd_requests(args: argparse.Namespace, settings: Settings) -> int:
    from core.calendar import WorkCalendar
    from core.citytime import deadline_day
    from lakehouse import Lake
    from schemas import load_registry
    from sharing import requests

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    user = args.user or os.environ.get("USER", "cli")
    with Lake(settings.lake) as lake:
        if args.action == "create":
            if not (args.department and args.dataset and args.purpose):
                err.print("--department, --dataset and --purpose are required")
                return 2
            req = requests.create(lake, registry, args.department, args.dataset, purpose=args.purpose,
                                  requested_by=user, columns=args.columns.split(",") if args.columns else None,
                                  row_filter=args.row_filter, period_days=args.days,
                                  calendar=WorkCalendar.for_settings(settings), scope=args.scope or "all")
            console.print(f"request {req.request_id}: {req.status}" +
                          (f", the owner ({req.owner}) decides by the end of "
                           f"{deadline_day(req.due_at, settings.city_timezone)} ({settings.city_timezone})"
                           if req.status == "pending" else ""))
        elif args.action == "list":
            from core.output import print_json, print_table, record

            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            found = requests.listing(lake, department=args.department, owner=args.owner, status=args.status)
            if args.json:
                print_json({**record(r), "overdue": r.overdue(now)} for r in found)
                return 0
            # IDs to copy into approve/refuse and the row filter the owner decides on: never folded
            print_table(console, ("request", "department", "dataset", "owner", "columns", "row filter", "status",
                                  "requested", "due", "reason"),
                        ([escape(r.request_id), escape(r.department), escape(r.dataset), escape(r.owner),
                          escape(", ".join(r.columns or ["*"])), escape(r.row_filter or "—"),
                          "[red]overdue[/]" if r.overdue(now) else escape(r.status), f"{r.requested_at:%Y-%m-%d}",
                          f"{r.due_at:%Y-%m-%d}", escape(r.reason or "")] for r in found),
                        whole=("request", "row filter"), markup=True)
        else:
            if not (args.request_id and args.owner):
                err.print("--request-id and --owner (the owning department deciding) are required")
                return 2
            if args.action == "approve":
                req = requests.approve(lake, registry, args.request_id, owner=args.owner, decided_by=user,
                                       columns=args.columns.split(",") if args.columns else None,
                                       row_filter=args.row_filter, reason=args.reason, scope=args.scope)
            elif args.action == "refuse":
                req = requests.refuse(lake, args.request_id, owner=args.owner, decided_by=user, reason=args.reason or "")
            else:
                req = requests.revoke(lake, args.request_id, owner=args.owner, decided_by=user,
                                      reason=args.reason or "")
            console.print(f"request {req.request_id}: {req.status}")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from sharing.audit import AuditLog, verify

    verdict = verify(AuditLog.of(settings))
    for note in verdict.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if verdict.ok:
        console.print(f"audit log intact: {verdict.entries} entries")
        return 0
    err.print(f"[red]audit log check failed[/]: {verdict.reason}", highlight=False, soft_wrap=True)
    return 1


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from onesource.backup import backup

    with console.status(f"backing up {settings.home}"):
        report = backup(settings, Path(args.dest), log=lambda text: console.print(text, highlight=False))
    console.print(f"backup of {settings.home} in {report.folder}: {report.files:,} files, {report.bytes / 2**20:,.1f} MiB, "
                  f"lake snapshot {report.snapshot}, in {report.seconds:.1f} s", highlight=False)
    if report.key:
        console.print(f"the audit key {report.key} (outside the home) is in the backup as keys/audit.key: keep the "
                      "backup as private as the key", highlight=False)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from onesource.backup import restore

    if args.home:
        settings = Settings.from_env({**os.environ, "ONESOURCE_HOME": str(Path(args.home).expanduser())})
    if not Path(args.src).is_dir():  # checked before the home is made: a typo must not leave an empty home
        raise ConfigurationError(f"{args.src} is not a folder: name the backup folder `onesource backup DEST` wrote")
    secure_home(settings)
    with console.status(f"verifying {args.src} and restoring it into {settings.home}"):
        report = restore(Path(args.src), settings, log=lambda text: console.print(text, highlight=False))
    console.print(f"restored {report.files:,} files ({report.bytes / 2**20:,.1f} MiB) into {settings.home}: the lake "
                  f"opens at snapshot {report.snapshot}, in {report.seconds:.1f} s", highlight=False)
    if report.key:
        console.print(f"the audit key is at {report.key}", highlight=False)
    for note in report.notes:
        console.print(note, highlight=False)
    if args.home:
        console.print(f"use it with ONESOURCE_HOME={settings.home}", highlight=False)
    return 0 if not any("does not verify" in n for n in report.notes) else 1


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from core.calendar import WorkCalendar
    from core.citytime import parse_local
    from lakehouse import Lake
    from metrics.kpis import KPI_NAMES, Period, compute, snapshot_time
    from metrics.publish import export_rows, publish, write_csv, write_xlsx
    from schemas import load_registry
    from sharing.audit import AuditLog, sync_to_lake

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    if args.department:
        registry.department(args.department)
    with Lake(settings.lake) as lake:
        sync_to_lake(lake, AuditLog(settings.home / "audit"))
        as_of = None
        if args.as_of:
            # a time without a zone is the city's (the periods are the city's months)
            as_of = (snapshot_time(lake, int(args.as_of)) if args.as_of.isdigit()
                     else parse_local(args.as_of, settings.city_timezone))
        figures = compute(lake, registry, Period.month(args.period, tz=settings.city_timezone), as_of=as_of,
                          calendar=WorkCalendar.for_settings(settings))
        if args.publish:
            written = publish(lake, registry, figures)
            err.print(f"published {figures['period']}: " + ", ".join(f"shared.{k} ({v} rows)" for k, v in written.items()))
        if args.export:
            path = Path(args.export)
            rows = export_rows(lake, None if args.all_periods else figures["period"])
            (write_xlsx if path.suffix.lower() == ".xlsx" else write_csv)(path, rows)
            err.print(f"wrote {len(rows)} KPI rows to {path}")
    if args.department:
        figures["departments"] = [d for d in figures["departments"] if d["code"] == args.department]
    if args.json:
        figures.pop("datasets"), figures.pop("duplicate_pairs"), figures.pop("members")
        print(json.dumps(figures, ensure_ascii=False, indent=2, default=str))
        return 0
    from core.output import percent, print_table, target_text
    from metrics.kpis import LOWER_IS_BETTER

    def count(x: float) -> str:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"

    def cell(f: dict, kpi: str) -> str:
        # one decimal, and never rounded across its target: 99.95% against 100% shows 99.9%, not 100.0%
        if f["value"] is None:
            return "-"
        if kpi == "reuse_factor":
            return f"{f['value']:.2f}"
        return (f"{percent(f['value'], f.get('target'), kpi in LOWER_IS_BETTER)} "
                f"({count(f['numerator'])}/{count(f['denominator'])})")

    # a row per department (87 in a big city), a column per KPI: every cell whole, wrapped if need be
    city = figures["city"]
    rows = [["target", *(target_text(city[k]["target"], k in LOWER_IS_BETTER) for k in KPI_NAMES)],
            ["city", *(cell(city[k], k) for k in KPI_NAMES)],
            *([d["code"], *(cell(d[k], k) for k in KPI_NAMES)] for d in figures["departments"])]
    print_table(console, ["department", *(k.replace("_", " ") for k in KPI_NAMES)], rows,
                title=f"OneSource KPIs, {figures['period']} (as of {figures['as_of']})",
                right=[k.replace("_", " ") for k in KPI_NAMES])
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # both ports are bound before anything is announced (and before the servers' imports, so that a busy one
    # is named at once, with the flag that moves it)
    http = _bound(args.host, args.http_port, "--http-port", "the HTTP API")
    try:  # the wire's port is bound for good below, once the engine is open: checked now, to fail at once
        _bound(args.host, args.pg_port, "--pg-port", "the Postgres-wire endpoint").close()
    except BaseException:
        http.close()
        raise
    import threading

    import uvicorn

    from onesource.serve import create_app
    from schemas import load_registry
    from sharing.engine import GovernedEngine
    from sharing.pgwire import GovernedPgServer
    from sharing.signin import SignInGuard

    engine = GovernedEngine(settings, load_registry(settings.registry_dir, settings.cache_dir), persistent=True)
    try:
        engine.open_slots()  # one DuckDB instance per running query (its memory limit), ready before we listen
        # one count of failed sign-ins for the wire and the portal, each failure audited
        guard = SignInGuard(settings.signin, audit=engine.audit)
        try:
            pg = GovernedPgServer((args.host, args.pg_port), engine, guard)
        except OSError as exc:
            raise _busy(args.host, args.pg_port, "--pg-port", "the Postgres-wire endpoint", exc) from exc
    except BaseException:
        http.close()
        engine.close()
        raise
    threading.Thread(target=pg.serve_forever, name="pgwire", daemon=True).start()
    console.print(f"Postgres wire: psql 'host={args.host} port={args.pg_port} user=<dept>_analyst dbname=onesource'\n"
                  f"HTTP: http://{args.host}:{args.http_port}/docs  (credentials: $ONESOURCE_HOME/demo-credentials.json)")
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(engine, guard), log_level="warning"))
        server.run(sockets=[http])
        if not server.started:  # as uvicorn.run does: its own startup failure, already logged above
            raise ConfigurationError(f"the HTTP API on {args.host}:{args.http_port} did not start (the lines above "
                                     "say why); run `onesource doctor` to check the home")
    finally:
        http.close()
        pg.shutdown()
        pg.server_close()
        engine.close()
    return 0


def _bound(host: str, port: int, flag: str, what: str):
    """A listening socket on ``host:port`` (what uvicorn would open), or the reason it cannot be one."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _busy(host, port, flag, what, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise _busy(host, port, flag, what, exc) from exc
    return sock


def _busy(host: str, port: int, flag: str, what: str, exc: OSError) -> ConfigurationError:
    import errno

    if exc.errno == errno.EADDRINUSE:
        why = (f"port {port} on {host} is already in use (another `onesource serve`, or another program). Stop "
               f"what holds it, or choose another port: onesource serve {flag} N (`ss -ltnp 'sport = :{port}'` "
               "shows who listens)")
    elif exc.errno == errno.EACCES:
        why = f"port {port} needs privileges (ports below 1024); choose another: onesource serve {flag} N"
    else:
        why = (f"it cannot listen on {host}:{port} ({exc.strerror or exc}); give --host an address of this machine "
               f"(127.0.0.1, or 0.0.0.0 for every interface) and {flag} a free port")
    return ConfigurationError(f"{what} cannot start: {why}")


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    from onesource.airflow_cli import airflow_bin, airflow_env, standalone

    if args.args[:1] == ["standalone"]:  # supervised: the port follows settings, a stop leaves no orphans
        return standalone(settings, args.args[1:])
    os.execvpe(airflow_bin(), [airflow_bin(), *args.args], airflow_env(settings))
    return 0  # pragma: no cover - exec does not return


def tcp_port(raw: str) -> int:
    """A port flag's value: 1-65535 (bind() raised OverflowError on 99999, shown as "unexpected")."""
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a TCP port: give a number from 1 to 65535")
    return int(raw)


COMMANDS_GROUP = "onesource.commands"
"""The entry-point group of commands contributed by installed packages (the demo city's ``demo``:
pyproject.toml). Each names a ``register(subparsers)`` that adds its commands, as ``add_parser`` does for the
platform's own; a command sets ``fn(args, settings) -> int``, and ``needs_home=False`` if it runs where no
home is yet (as NEEDS_NO_HOME)."""


def add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Every command of the ``onesource.commands`` entry points. One that fails to load is named on stderr
    and left out: the platform's commands still run."""
    from importlib.metadata import entry_points

    seen = set(sub.choices)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on the path, or a name the platform has
            continue
        seen.add(ep.name)
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001 - a broken plugin costs its own commands, not the CLI
            print(f"onesource: command {ep.name!r} ({ep.value}) did not load: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


def _builtin_command(argv: Sequence[str] | None, builtins) -> bool:
    """Whether ``argv`` runs a command of the platform's own (``--debug`` at most before it): its parse needs
    no plugin, so the CLI skips the entry points' scan (importlib.metadata and every installed package's
    metadata: about 30 ms of CPU, a 15th of a small `onesource sql`). Help, an unknown or a plugin's command
    builds the whole parser."""
    if argv is None:
        return False
    args = list(argv)
    word = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    return word is not None and args[word] in builtins and all(a == "--debug" for a in args[:word])


def parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``onesource`` command's parser: the platform's commands, then the plugins' (COMMANDS_GROUP), which
    ``argv`` naming one of the platform's commands leaves out."""
    p = argparse.ArgumentParser(prog="onesource", description="OneSource: one source, many uses.")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback behind an error message (the same as ONESOURCE_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    reg = sub.add_parser("registry", help="check, list, version and explore the registry")
    reg.add_argument("action", choices=["check", "list", "diff", "apply", "history", "conformance", "lineage",
                                        "export", "schema"])
    reg.add_argument("subject", nargs="?", help="history: a dataset or element; lineage: an element")
    reg.add_argument("--json", action="store_true")
    reg.add_argument("--department", help="conformance: one department")
    reg.add_argument("--format", choices=["xlsx", "csv"], default="xlsx", help="export: the catalogue's format")
    reg.add_argument("--output", help="export: the file to write (default: reports/catalogue.FORMAT in the home)")
    reg.add_argument("--out", help="schema: the file to write the JSON Schema to (stdout without it)")
    pre = sub.add_parser("prefill", help="pre-fill an enterprise's annual report from authoritative sources")
    pre.add_argument("form", choices=["annual-report"])
    pre.add_argument("uscc", nargs="?", help="the enterprise's unified social credit code (omit for the rates)")
    pre.add_argument("--json", action="store_true")
    pre.set_defaults(fn=cmd_prefill)
    reg.set_defaults(fn=cmd_registry)

    ing = sub.add_parser("ingest", help="load datasets now, without Airflow")
    ing.add_argument("datasets", nargs="*")
    ing.add_argument("--all", action="store_true")
    ing.set_defaults(fn=cmd_ingest)

    st = sub.add_parser("status", help="rows shared and last load of every dataset")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    doc = sub.add_parser("doctor", help="check the home end to end (permissions, catalog, data files, raw files, "
                                        "audit log, registry, staging); non-zero exit on a failed check")
    doc.add_argument("--full", action="store_true", help="hash every raw file of the landing zone, not a sample")
    doc.set_defaults(fn=cmd_doctor)

    qual = sub.add_parser("quality", help="quality report of a dataset, or a consistency (多元校核) run")
    qual.add_argument("action", choices=["report", "consistency"])
    qual.add_argument("dataset", nargs="?")
    qual.add_argument("--json", action="store_true")
    qual.add_argument("--all", action="store_true", help="report: every failing row with all its reasons, "
                                                        "not the first 10")
    qual.set_defaults(fn=cmd_quality)

    sql = sub.add_parser("sql", help="query the lake (read-only)")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet", "arrow"], default=None,
                     help="table (default), csv, json; parquet and arrow (an Arrow IPC file) with --output; "
                          "default with --output: the file's suffix")
    sql.add_argument("--output", metavar="FILE", help="write every row to FILE (bulk export) instead of printing")
    sql.add_argument("--max-rows", type=int, default=None, metavar="N",
                     help=f"print at most N rows, saying 'first N of M rows' when there are more (0: all; "
                          f"default: {TABLE_ROWS:,} for the table, all for csv and json)")
    sql.add_argument("--limit", dest="max_rows", type=int, help=argparse.SUPPRESS)  # the old name of --max-rows
    sql.add_argument("--as", dest="department", help="run as this department: governed (grants, masking, audit)")
    sql.add_argument("--user", default=None, help="who asks (recorded in the audit log; default: the OS user)")
    sql.add_argument("--purpose", default=None, help="why the data is needed (recorded in the audit log)")
    sql.add_argument("--dialect", default="postgres", choices=["postgres", "mysql", "duckdb"])
    sql.add_argument("--timeout", type=float, default=None,
                     help="seconds before a governed query is stopped (default: ONESOURCE_QUERY_SECONDS, 30)")
    sql.add_argument("--as-of", type=_as_of, help="read the lake as it was: a snapshot id or an ISO timestamp (UTC)")
    sql.set_defaults(fn=cmd_sql)

    met = sub.add_parser("metrics", help="the sharing KPIs per department and city-wide, against the targets")
    met.add_argument("--period", type=_month, help="YYYY-MM, a month of the city's calendar (default: this month)")
    met.add_argument("--department")
    met.add_argument("--json", action="store_true")
    met.add_argument("--as-of", type=_as_of_text, help="a timestamp (2026-11-01T00:00, city time unless it names a zone) or a lake "
                                     "snapshot id: the KPIs as they were")
    met.add_argument("--publish", action="store_true", help="also write the period into the shared KPI tables")
    met.add_argument("--export", metavar="FILE", help="write the published KPI table to FILE (.xlsx or .csv)")
    met.add_argument("--all-periods", action="store_true", help="with --export: every published period")
    met.set_defaults(fn=cmd_metrics)

    serve = sub.add_parser("serve", help="the HTTP API and the Postgres-wire endpoint (loopback by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--http-port", type=tcp_port, default=8765)
    serve.add_argument("--pg-port", type=tcp_port, default=5433)
    serve.set_defaults(fn=cmd_serve)

    grants = sub.add_parser("grants", help="grant, list or revoke a department's access to a conditional dataset")
    grants.add_argument("action", choices=["add", "list", "revoke"])
    grants.add_argument("--department")
    grants.add_argument("--dataset")
    grants.add_argument("--columns", help="comma-separated; all columns when omitted")
    grants.add_argument("--row-filter", help="a DuckDB condition on the dataset's columns, e.g. division_code = '430102'")
    grants.add_argument("--expires", type=_timestamp, help="ISO date or timestamp")
    grants.add_argument("--grant-id")
    grants.add_argument("--match", help="comma-separated masked columns the department may match values against "
                                        "(match_value(col, 'value') in SQL), e.g. resident_id")
    grants.add_argument("--match-quota", type=int, default=1000,
                        help="distinct values a day the department may match per column (default 1000)")
    grants.add_argument("--scope", choices=["all", "jurisdiction"], default="all",
                        help="add: all (every row the filter admits) or jurisdiction (each user reads only the rows "
                             "under its organisation's division code: the dataset's division_column)")
    grants.add_argument("--json", action="store_true", help="list: a JSON array of every grant, all fields")
    grants.set_defaults(fn=cmd_grants)

    req = sub.add_parser("requests", help="access requests: create, list, approve, refuse (with a reason), revoke")
    req.add_argument("action", choices=["list", "create", "approve", "refuse", "revoke"])
    req.add_argument("--department", help="the requesting department")
    req.add_argument("--dataset")
    req.add_argument("--purpose")
    req.add_argument("--columns", help="comma-separated; all columns when omitted (an approval may narrow them)")
    req.add_argument("--row-filter")
    req.add_argument("--days", type=int, help="how long the access is needed")
    req.add_argument("--request-id")
    req.add_argument("--owner", help="the owning department, deciding")
    req.add_argument("--status")
    req.add_argument("--reason", help="mandatory when refusing")
    req.add_argument("--scope", choices=["all", "jurisdiction"],
                     help="create: the grant asked for gives all rows (default) or each user's jurisdiction only; "
                          "approve: scope it to the jurisdiction (a jurisdiction request is never widened)")
    req.add_argument("--user", help="who acts (default: $USER)")
    req.add_argument("--json", action="store_true", help="list: a JSON array of the requests, all fields")
    req.set_defaults(fn=cmd_requests)

    users = sub.add_parser("users", help="add, list, disable or enable users, give a new password or token "
                                          "(shown once; every change audited)")
    users.add_argument("action", choices=["add", "list", "disable", "enable", "reset-password", "rotate-token",
                                          "set-role", "reset"], help="reset: a new password and token at once (also: a "
                                                         "password stored before SCRAM)")
    users.add_argument("user", nargs="?")
    users.add_argument("--department", help="add: the user's department (a code of the registry); list: only its users")
    users.add_argument("--role", choices=["analyst", "steward", "bureau", "operator"],
                       help="add, set-role: what the user may do (default analyst; see README, Users and roles)")
    users.add_argument("--organisation", metavar="CODE",
                       help="add: the division code of the user's organisation (organisations.yaml: a district's "
                            "430104, a street's 430104001); left out: the whole city")
    users.add_argument("--by", help="who acts, written in the audit log (default: $USER)")
    users.add_argument("--json", action="store_true", help="a JSON answer (list: every user, all fields)")
    users.set_defaults(fn=cmd_users)

    audit = sub.add_parser("audit", help="verify the hash-chained audit log")
    audit.add_argument("action", choices=["verify"])
    audit.set_defaults(fn=cmd_audit)

    bk = sub.add_parser("backup", help="a consistent copy of the home while it runs (catalog, data, landing zone, "
                                       "audit log, and the audit key from outside the home), with a sha256 manifest")
    bk.add_argument("dest", help="a new (or empty) folder, outside the home")
    bk.set_defaults(fn=cmd_backup)

    rs = sub.add_parser("restore", help="verify a backup against its manifest and restore it into an empty home")
    rs.add_argument("src", help="the backup folder (onesource backup DEST)")
    rs.add_argument("--home", help="restore into this folder instead of ONESOURCE_HOME (another path or machine)")
    rs.set_defaults(fn=cmd_restore)

    from sharing.security.cli import add_parser as add_security
    add_security(sub)
    from sharing.subscriptions.cli import add_parser as add_subscriptions
    add_subscriptions(sub)
    from onesource.forms_cli import add_parser as add_forms
    add_forms(sub)

    af = sub.add_parser("airflow", help="the Airflow CLI on this home, e.g. `onesource airflow standalone`")
    af.add_argument("args", nargs=argparse.REMAINDER)
    af.set_defaults(fn=cmd_airflow)
    if not _builtin_command(argv, sub.choices):
        add_plugin_commands(sub)
    return p


@contextlib.contextmanager
def _without_pandas():
    """pandas reads as not installed while the command runs (when this process has not imported it yet).

    DuckDB's Python client imports pandas the first time a query binds a parameter (to tell ``pandas.NA`` from
    a value), and pandas brings numpy and pyarrow: about 0.6 s of CPU, as much as the rest of a short
    ``onesource sql``, which prints Python values and never needs it. A module that is None in sys.modules is
    Python's own "not installed", which DuckDB takes as no pandas to check for."""
    if "pandas" in sys.modules:
        yield
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("pandas", False) is None:
            del sys.modules["pandas"]


@contextlib.contextmanager
def _without_cyclic_gc():
    """Python's cyclic garbage collector off while the command runs, and every object frozen at exit.

    The collector walked the imports' objects (sqlglot's and DuckDB's classes, thousands each) again and again
    while they loaded, and once more at shutdown: about 0.1 s of CPU of a small query, which makes little
    cyclic garbage itself (its parse trees). In a process that goes on (tests, a program calling main), the
    collector is back on after the command, and the freeze at its exit only skips the last collection."""
    global _FREEZE_AT_EXIT
    enabled = gc.isenabled()
    gc.disable()
    if not _FREEZE_AT_EXIT:
        atexit.register(gc.freeze)  # atexit runs before the interpreter's final collections
        _FREEZE_AT_EXIT = True
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_FREEZE_AT_EXIT = False


@contextlib.contextmanager
def _one_query():
    """What `onesource sql` (a process for one query) does without: pandas, the cyclic garbage collector."""
    with _without_pandas(), _without_cyclic_gc():
        yield


NEEDS_NO_HOME = ("restore", "doctor")
"""Commands that run where the home is not (yet) there (and a plugin's that sets ``needs_home=False``, as
the demo's): every other one refuses a missing home."""


def _traceback_if_debugging() -> None:
    if os.environ.get("ONESOURCE_DEBUG"):
        import traceback

        traceback.print_exc()


def _unwritable_home(exc: BaseException, settings: Settings, command: str) -> str | None:
    """One paragraph when the home cannot be written (a read-only file system, no permission, a full disk)."""
    import errno

    chain = [e for e in (exc, exc.__cause__, exc.__context__) if e is not None]
    codes = {e.errno for e in chain if isinstance(e, OSError)}
    try:
        read_only = bool(os.statvfs(settings.home).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    where = next((e.filename for e in chain if isinstance(e, OSError) and e.filename), None) or settings.home
    move = (f"point ONESOURCE_HOME at a writable folder (e.g. ONESOURCE_HOME=$HOME/onesource onesource "
            f"{command})")
    if errno.EROFS in codes or read_only:
        return (f"the home {settings.home} is on a read-only file system, so {where} cannot be written; nothing "
                f"was changed. Remount it read-write, or {move}")
    if errno.ENOSPC in codes:
        return f"the disk holding the home {settings.home} is full ({where}): free some space, or {move}"
    if codes & {errno.EACCES, errno.EPERM} and str(where).startswith(str(settings.home)):
        import getpass

        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no name for this uid (a container)
            user = str(os.getuid())
        return (f"{where}: permission denied for this user ({user}). Everything in the home {settings.home} "
                "(extracts dropped into it too) must be readable and writable by the user running onesource: fix "
                f"the owner or mode (chown -R {user} {settings.home}), or {move}")
    return None


SERVER_COMMANDS = ("serve", "airflow")
"""Commands that run until stopped: their log (sign-ins refused, loads of the scheduler) is the operator's."""


def _logging(command: str) -> None:
    """A server logs to stderr with the time; any other command prints its own outcome (a load's notes, a
    refusal), so the platform's log records would only say it twice: they are shown with --debug only."""
    import logging

    if command in SERVER_COMMANDS or os.environ.get("ONESOURCE_DEBUG"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.getLogger("onesource").addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(argv).parse_args(argv)
    if args.debug:  # the same switch as ONESOURCE_DEBUG=1, for this process and what it starts
        os.environ["ONESOURCE_DEBUG"] = "1"
    _logging(args.command)
    settings = Settings.from_env()
    homeless = args.command == "registry" and args.action == "schema"  # writes what the code knows: no home
    try:
        needs_home = args.command not in NEEDS_NO_HOME and getattr(args, "needs_home", True)
        if needs_home and not homeless and (missing := damage.missing_home(settings)):
            raise ConfigurationError(missing)  # never silently a new, empty home in its place
        # doctor only reads, and reports the home as it finds it; restore makes (and secures) its target itself
        if args.command not in ("doctor", "restore") and not homeless:
            # at rest: the home 0700 and everything this process (and Airflow, its child) writes there private
            secure_home(settings)
        with _one_query() if args.command == "sql" else contextlib.nullcontext():
            return args.fn(args, settings)
    except OneSourceError as exc:
        _traceback_if_debugging()
        # a query that met a deleted data file says so in DuckDB's words: name the table and the remedy
        err.print(f"[red]error:[/] {damage.missing_data_file(str(exc), settings) or exc}", highlight=False,
                  soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # damage surfaces as DuckDB or OS errors: one paragraph, never a raw traceback
        _traceback_if_debugging()
        text = _unwritable_home(exc, settings, args.command) or damage.explain(exc, settings) or damage.unexpected(exc)
        err.print(f"[red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
