"""One dataset load, write-audit-publish: extract -> land -> standardize -> fill from authorities -> validate ->
publish. The file reads in that order: the dataset's run, then one extract's way through the stages, then the
ledger rows a load leaves.

* **write**: the extract lands as an immutable raw file (connectors.landing); standardize writes a staged Parquet
  batch (lakehouse.standardize), and columns the registry fills from their authority are filled in it;
* **audit**: the dataset's GX suite runs on the staged batch;
* **publish**: one DuckLake commit (:mod:`lakehouse.commit`) replaces (or upserts into) the shared table
  *and* appends the loads-ledger row, labelled with the load's metadata. It all lands, or none of it does.

A batch that fails standardize or a blocking check is moved to ``quarantine/`` with a report and
a ledger row saying why; the shared table keeps its last good snapshot. The same raw file (by
sha256) is never loaded twice.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connectors import Connector, Extract, ExtractError, Landing, SourceState, SourceUnavailableError, connector_for
from connectors.landing import Recheck
from core.citytime import utc_now
from core.config import Settings
from core.duck import literal as q
from core.duck import load as load_extension
from core.errors import ConfigurationError, OneSourceError
from core.logsafe import guarded, redact
from lakehouse import ledger
from lakehouse.commit import LedgerRows, publish_batch, quarantine_batch
from lakehouse.exceptions import CatalogBusyError, StandardizeError, StorageFullError
from lakehouse.lake import PARQUET_WRITE, SHARED, Lake, retrying
from lakehouse.ledger import CATALOG, FAILED, PUBLISHED, QUARANTINED, UNCHANGED
from lakehouse.registered_versions import IncompatibleChangeError
from lakehouse.registered_versions import apply as apply_versions
from lakehouse.staging import claim as claim_staging
from lakehouse.staging import sweep as sweep_staging
from lakehouse.standardize import extensions_for, ident, standardize
from quality.context import gather
from quality.validate import QualityReport, validate_batch
from quality.validate import prepare as prepare_validation
from schemas.model import Dataset, Registry, authority_join

log = guarded("onesource.load")



@dataclass(frozen=True)
class LoadResult:
    dataset: str
    status: str
    """published | quarantined (bad batch, kept aside) | failed (source or system) | unchanged (no new data)."""
    rows: int = 0
    load_id: str | None = None
    source: str | None = None
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time per stage (standardize, validate, publish), for logs and benchmarks."""

    @property
    def ok(self) -> bool:
        return self.status in (PUBLISHED, UNCHANGED)


def new_load_id(sha256: str) -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{sha256[:8]}"


# ---------------------------------------------------------------------------------------------
# The dataset's run: open the lake, bring the registry's versions in, ask the ledger what the source already
# delivered, extract (each connector lands what it fetches as an immutable raw file: connectors.landing), then
# load each new extract.
# ---------------------------------------------------------------------------------------------

def run_dataset(settings: Settings, registry: Registry, name: str, environ: Mapping[str, str]) -> list[LoadResult]:
    """Load every new extract of dataset ``name``. Raises a TransientError when a retry may help."""
    try:
        return _run_dataset(settings, registry, name, environ)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        raise StorageFullError(f"dataset {name}: no space left writing {exc.filename or 'a file'} ({exc.strerror}); "
                               f"nothing was published and the raw files are kept. Free space under "
                               f"{settings.home} (or the lake's data path) and the load is retried") from exc
    except Exception as exc:  # DuckDB and its SQLite catalog say it in their own words
        text = str(exc).lower()
        if isinstance(exc, OneSourceError) or not any(words in text for words in _FULL):
            raise
        raise StorageFullError(f"dataset {name}: no space left writing the lake or its catalog ({str(exc)[:200]}); "
                               f"nothing was published and the raw files are kept. Free space under "
                               f"{settings.home} (or the lake's data path) and the load is retried") from exc


_FULL = ("no space left", "database or disk is full", "disk i/o error", "file too large", "disk quota")
"""How DuckDB and SQLite word a full disk (SQLite's "disk I/O error" is what a write past the limit gives)."""


def _run_dataset(settings: Settings, registry: Registry, name: str, environ: Mapping[str, str]) -> list[LoadResult]:
    ds = registry.dataset(name)
    if ds.platform:
        raise ConfigurationError(f"{name} is computed by OneSource itself ({ds.connector.settings.get('product')}); "
                                 "`onesource metrics --publish` writes it, ingestion does not")
    connector = connector_for(ds.connector.kind, settings.sources_dir, Landing(settings.landing_dir), environ)
    # older versions kept the authorities' keys here, in clear, between loads: each load has its own now
    shutil.rmtree(settings.staging_dir / "_authority_keys", ignore_errors=True)
    for gone in sweep_staging(settings.staging_dir):  # what killed loads left; never a live load's files
        log.warning("removed staging entries of %s load %s, which no live load owns (%s old)", gone.dataset,
                    gone.load_id, gone.age)
    try:
        if prefetch := getattr(connector, "prefetch", None):
            prefetch(ds)  # e.g. hash and copy new files on threads while the lake opens
        return _load_new_extracts(settings, registry, ds, connector)
    finally:
        if release := getattr(connector, "release", None):
            release()  # what prefetch copied for a load that stopped before extract took it


def _load_new_extracts(settings: Settings, registry: Registry, ds: Dataset, connector: Connector) -> list[LoadResult]:
    fixed, clock = {}, time.perf_counter()  # the load's fixed costs, for its breakdown (bench/cityday.py)
    with Lake(settings.lake) as lake:
        fixed["lake_open"], clock = round(time.perf_counter() - clock, 4), time.perf_counter()
        try:
            apply_versions(lake, registry)  # every schema change is a version, compatible or refused
        except IncompatibleChangeError as exc:
            return [_failed(lake, ds, registry, "registry", str(exc))]
        fixed["versions"], clock = round(time.perf_counter() - clock, 4), time.perf_counter()
        if refusal := _encryption_refusal(lake, ds, registry):
            return [_failed(lake, ds, registry, "registry", refusal)]
        state = source_state(lake, ds, registry.version)
        fixed["ledger"] = round(time.perf_counter() - clock, 4)
        started, clock = utc_now(), time.perf_counter()
        try:
            extracts = connector.extract(ds, state)
        except SourceUnavailableError as exc:
            _failed(lake, ds, registry, "extract", str(exc), started)
            raise
        except ExtractError as exc:
            return [_failed(lake, ds, registry, "extract", str(exc), started)]
        if not extracts:
            return [LoadResult(ds.name, UNCHANGED, message="no new data since the last load")]
        extract_seconds = round(time.perf_counter() - clock, 4)
        prepare_validation(settings.gx_project_root)  # on a thread, while the first extract is standardized
        results = [load_extract(settings, lake, ds, registry, ex) for ex in extracts]
        for r in results:
            r.seconds.setdefault("extract", extract_seconds / len(results))
            for k, v in fixed.items():
                r.seconds.setdefault(k, v)
        return results


def _encryption_refusal(lake: Lake, ds: Dataset, registry: Registry) -> str | None:
    """Highly sensitive (level 4) columns never reach a file in clear: such a dataset loads only into an
    encrypted lake. DuckLake encrypts a whole catalog, chosen when it is created, so the remedy is a lake
    created with ONESOURCE_ENCRYPT=1 (or a registry that does not call these elements level 4)."""
    columns = registry.encrypted_columns(ds)
    if not columns or lake.encrypted:
        return None
    return (f"dataset {ds.name}: columns {', '.join(columns)} are highly sensitive (level 4) and must be encrypted "
            "at rest, but this lake writes unencrypted files; nothing was extracted. Create the lake with "
            "ONESOURCE_ENCRYPT=1 (DuckLake encrypts a whole catalog; see docs/deploy.md), or lower the elements' "
            "sensitivity in the registry if level 4 was a mistake")


def _failed(lake: Lake, ds: Dataset, registry: Registry, stage: str, error: str,
            started: dt.datetime | None = None) -> LoadResult:
    """A load that failed before any extract was staged: its ledger row, and its result."""
    _record(lake, _ledger_row(ds, registry, None, new_load_id("0" * 8), FAILED, started or utc_now(), stage=stage,
                              error=error))
    return LoadResult(ds.name, FAILED, message=error)



# ---------------------------------------------------------------------------------------------
# One extract, in the order the data flows: standardize -> fill from authorities -> validate -> publish (or
# quarantine).
# ---------------------------------------------------------------------------------------------

def load_extract(settings: Settings, lake: Lake, ds: Dataset, registry: Registry, ex: Extract) -> LoadResult:
    """One extract through standardize, validate, publish (or quarantine). Its scratch files (the staged
    batch, the authorities' keys for the reference checks) are gone when it returns or raises."""
    load_id = new_load_id(ex.sha256)
    staged = settings.staging_dir / ds.name / f"{load_id}.parquet"
    keys = settings.staging_dir / ds.name / f"{load_id}.keys"
    # held while the load runs: a sweep (lakehouse.staging) removes a killed load's files, never a live one's
    with claim_staging(settings.staging_dir, ds.name, load_id):
        started = utc_now()
        try:
            return _load_extract_cleaned(settings, lake, ds, registry, ex, load_id, staged, keys)
        except Exception as exc:  # raised on (a retry may cure it), but never without its ledger row
            _record_failure(lake, ds, registry, ex, load_id, started, exc)
            raise


def _load_extract_cleaned(settings: Settings, lake: Lake, ds: Dataset, registry: Registry, ex: Extract, load_id: str,
                          staged: Path, keys: Path) -> LoadResult:
    try:
        return _load_extract(settings, lake, ds, registry, ex, load_id, staged, keys)
    finally:
        # The staged batch is plain Parquet (GX and the check-digit path read it as it is): published, it is
        # in the lake (adopted or copied, encrypted in an encrypted lake); quarantined, it moved; failed, it
        # is made again from the raw file by the retry. Whatever happened, nothing stays in staging.
        staged.unlink(missing_ok=True)
        staged.with_suffix(".filled.parquet").unlink(missing_ok=True)
        shutil.rmtree(keys, ignore_errors=True)


def _load_extract(settings: Settings, lake: Lake, ds: Dataset, registry: Registry, ex: Extract, load_id: str,
                  staged: Path, keys: Path) -> LoadResult:
    started = utc_now()
    for name in extensions_for(ex):
        load_extension(lake.con, name)  # verified first: the lake's connection trusts files it checked once
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 4)
        clock = now

    landed = Recheck(ex.path, ex.sha256)  # what standardize reads must still be what was delivered
    try:
        batch = standardize(lake.con, ex, ds, registry, staged)
        if batch.rows == 0:
            # a snapshot of nothing would empty the shared table: never the right reading of a delivery
            raise StandardizeError(ds.name, ex.source, str(ex.path),
                                   "has no rows (a header at most); the shared table keeps its last snapshot. "
                                   "Deliver the extract again with its records")
        landed.start()  # hashed again on a thread, beside the reference keys and validation
        notes = list(batch.drift) + fill_from_authorities(lake, ds, registry, staged)
        lap("standardize")
    except StandardizeError as exc:
        if problem := landed.problem():  # a quarantine would mark the delivered hash as handled
            return _landed_changed(settings, lake, ds, registry, ex, load_id, started, problem)
        problems = [asdict(p) for p in exc.problems]
        return _quarantine(settings, lake, ds, registry, ex, load_id, started, staged, "standardize", str(exc),
                           {"problems": problems, "problem_count": exc.total})
    context = gather(lake, ds, registry, keys)
    seconds["references"] = round(time.perf_counter() - clock, 4)  # part of "validate", as gx_context is
    report = validate_batch(ds, registry, staged, context, docs_root=settings.gx_project_root,
                            run_name=load_id)
    shutil.rmtree(keys, ignore_errors=True)  # the authorities' keys: not a moment longer than needed
    lap("validate")
    seconds.update(report.seconds)
    if problem := landed.problem():
        return _landed_changed(settings, lake, ds, registry, ex, load_id, started, problem)
    lap("recheck")
    if not report.passed:
        message = (f"dataset {ds.name}: file {ex.source}: {len(report.blocking_failures)} blocking check(s) failed: "
                   f"{report.summary()}. The batch is quarantined at "
                   f"{settings.quarantine_dir / ds.name / load_id}; the shared table keeps its last good snapshot. "
                   "Fix the records at the source and deliver the file again.")
        return _quarantine(settings, lake, ds, registry, ex, load_id, started, staged, "quality", message,
                           {"rows_in": batch.rows, "checks": [asdict(r) for r in report.results]}, report)
    publish(lake, ds, registry, ex, staged, batch.rows, load_id, started, report)
    lap("publish")
    staged.unlink(missing_ok=True)
    log.info("published %s load %s: %d rows from %s in %s", ds.name, load_id, batch.rows, ex.source, seconds)
    for note in notes:
        log.warning("%s load %s: %s", ds.name, load_id, note)
    summary = report.summary() + ("; " + "; ".join(notes) if notes else "")
    return LoadResult(ds.name, PUBLISHED, batch.rows, load_id, ex.source, summary, seconds)


def fill_from_authorities(lake: Lake, ds: Dataset, registry: Registry, staged: Path) -> list[str]:
    """Fill the batch's ``from_authority`` columns from their authoritative shared tables, joined on the
    key element (once only: the department did not collect them). Returns notes for the load result."""
    joins, notes = [], []
    published = set(lake.tables(SHARED)) if any(c.from_authority for c in ds.columns) else set()
    for col in ds.columns:
        if not col.from_authority:
            continue
        found = authority_join(registry, ds, col)
        if found is None:
            continue
        authority, mine, key = found
        source = next(c for c in authority.columns if c.element == col.element)
        if authority.name not in published:
            notes.append(f"{col.name} left empty: its authority {authority.name} has not been published yet")
            continue
        joins.append((col, authority, mine, key, source))
    if not joins:
        return notes
    filled_by = {col.name: f"a{i}.{ident(src.name)}" for i, (col, _, _, _, src) in enumerate(joins)}
    cols = ", ".join(f"{filled_by[c.name]} AS {ident(c.name)}" if c.name in filled_by else f"s.{ident(c.name)}"
                     for c in ds.columns)
    froms = " ".join(f"LEFT JOIN {CATALOG}.{SHARED}.{ident(auth.name)} a{i} ON s.{ident(mine.name)} = "
                     f"a{i}.{ident(key.name)}" for i, (_, auth, mine, key, _) in enumerate(joins))
    filled = staged.with_suffix(".filled.parquet")
    # row order is kept: validation and quarantine reports name rows by their place in the extract
    lake.con.execute(f"COPY (SELECT {cols} FROM (SELECT *, row_number() OVER () AS __order FROM read_parquet("
                     f"{q(str(staged))})) s {froms} ORDER BY s.__order) TO {q(str(filled))} ({PARQUET_WRITE})")
    filled.replace(staged)
    return notes


def publish(lake: Lake, ds: Dataset, registry: Registry, ex: Extract, staged: Path, rows: int, load_id: str,
            started: dt.datetime, report: QualityReport) -> None:
    """Publish the validated batch with its loads-ledger and quality rows, in one commit (lakehouse.commit)."""
    extra = {"dataset": ds.name, "load_id": load_id, "source": ex.source, "sha256": ex.sha256,
             "registry_version": registry.version, "rows": rows, "warnings": len(report.warnings)}

    ledger_rows: LedgerRows = {"loads": [_ledger_row(ds, registry, ex, load_id, PUBLISHED, started, rows, rows)],
                               **_quality_rows(ds, registry, load_id, "quality", report)}
    publish_batch(lake, ds, staged, rows, load_id, ledger_rows, report.marks, extra)


def _quarantine(settings: Settings, lake: Lake, ds: Dataset, registry: Registry, ex: Extract, load_id: str,
                started: dt.datetime, staged: Path, stage: str, error: str, details: dict[str, Any],
                quality: QualityReport | None = None) -> LoadResult:
    folder = settings.quarantine_dir / ds.name / load_id
    folder.mkdir(parents=True, exist_ok=True)
    if staged.exists():
        shutil.move(str(staged), folder / "batch.parquet")
    encrypted = lake.encrypted
    report = {"dataset": ds.name, "load_id": load_id, "stage": stage, "error": redact(error) if encrypted else error,
              "source": ex.source,
              "raw_file": str(ex.path), "sha256": ex.sha256, "registry_version": registry.version,
              **(_without_values(details) if encrypted else details)}
    if encrypted:
        report["values"] = (f"not in this file (the lake is encrypted): the rows are in quarantine.{ds.name}, the "
                            f"failing values in {ledger.ref('quality_results')}")
    (folder / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    batch = folder / "batch.parquet"
    row = _ledger_row(ds, registry, ex, load_id, QUARANTINED, started, details.get("rows_in", 0), 0, stage,
                      error, str(folder))
    quarantine_batch(lake, ds, load_id, stage,
                     {"loads": [row], **_quality_rows(ds, registry, load_id, stage, quality,
                                                      details.get("problem_count", 0), error)},
                     batch if quality is not None and batch.exists() else None,
                     quality.marks if quality is not None else None)
    if encrypted:  # the batch is plain Parquet: its rows are in quarantine.<dataset> now, encrypted like the lake
        batch.unlink(missing_ok=True)
    log.warning("quarantined %s load %s at %s: %s", ds.name, load_id, stage, error)
    return LoadResult(ds.name, QUARANTINED, 0, load_id, ex.source, error)


def _without_values(details: dict[str, Any]) -> dict[str, Any]:
    """A quarantine report's details without the values of cells (an encrypted lake's report file)."""
    out = dict(details)
    if "problems" in out:
        out["problems"] = [{k: v for k, v in p.items() if k != "value"} for p in out["problems"]]
    if "checks" in out:
        out["checks"] = [{k: v for k, v in c.items() if k != "sample_values"} for c in out["checks"]]
    return out


def _landed_changed(settings: Settings, lake: Lake, ds: Dataset, registry: Registry, ex: Extract, load_id: str,
                    started: dt.datetime, problem: str) -> LoadResult:
    """The landed raw file no longer holds the bytes its sha256 name promises: nothing is published or
    quarantined (either would stand for the delivered file), the file is moved aside as evidence, and the
    failed load is in the ledger (a failed load does not count the hash as handled, so the extract loads
    when it is delivered again)."""
    aside = Landing(settings.landing_dir).set_aside(ex.path, load_id)
    again = ("The next load lands it again from the drop folder if the department's file is still there; "
             "otherwise ask the department to deliver the extract again" if ds.connector.kind == "file" else
             "The next load extracts it again from the source")
    error = (f"dataset {ds.name}: the landed raw file {ex.path} (from {ex.source}) {problem}, so it is no longer "
             f"the extract that was delivered under sha256 {ex.sha256}; nothing was published. The changed file is "
             f"kept aside at {aside}. {again}; and find out who changed the landing zone (landed files are "
             "read-only, 0400)")
    _record(lake, _ledger_row(ds, registry, ex, load_id, FAILED, started, stage="landing", error=error))
    log.error("%s", error)
    return LoadResult(ds.name, FAILED, 0, load_id, ex.source, error)



# ---------------------------------------------------------------------------------------------
# The ledger: what the lake already holds from a source, and the rows a load leaves there (the commits are
# lakehouse.commit's).
# ---------------------------------------------------------------------------------------------

def source_state(lake: Lake, ds: Dataset, registry_version: str) -> SourceState:
    """Raw files already handled and the watermark reached, from the loads ledger (:mod:`lakehouse.ledger`).

    A quarantined file is tried again under a new registry version (the fix may have been the registry's),
    except, for a dataset whose batches replace what was there (snapshot, upsert), once a later delivery has
    been published: loading the older file then would put older data over newer (and a demo run after any
    registry change quarantined its defective deliveries again over their corrected ones)."""
    seen = ledger.handled_sha256(lake.con, ds.name, registry_version,
                                 superseded_by_publish=ds.load_mode != "append")
    return SourceState(seen_sha256=seen, watermark=ledger.published_watermark(lake.con, ds.name))


def _ledger_row(ds: Dataset, registry: Registry, ex: Extract | None, load_id: str, status: ledger.LoadStatus,
                started: dt.datetime, rows_in: int = 0, rows_published: int = 0, stage: str | None = None,
                error: str | None = None, quarantine: str | None = None) -> ledger.LoadRow:
    """The load's row of the loads ledger."""
    return {"load_id": load_id, "dataset": ds.name, "owner": ds.owner, "status": status,
            "source": ex.source if ex else None, "landed_path": str(ex.path) if ex else None,
            "sha256": ex.sha256 if ex else None, "registry_version": registry.version, "rows_in": rows_in,
            "rows_published": rows_published, "watermark": ex.watermark if ex and status == PUBLISHED else None,
            "started_at": started, "finished_at": utc_now(), "error_stage": stage, "error": error,
            "quarantine_path": quarantine}


def _quality_rows(ds: Dataset, registry: Registry, load_id: str, stage: str, report: QualityReport | None,
                  problems: int = 0, error: str | None = None) -> LedgerRows:
    """The ledger's quality_runs and quality_results rows for one batch."""
    at = utc_now()

    def run(rows: int, passed: bool, checks: int, blocking_failed: int, warnings: int, skipped: int,
            suite_version: str | None) -> ledger.QualityRunRow:
        return {"load_id": load_id, "dataset": ds.name, "owner": ds.owner, "run_at": at, "stage": stage,
                "rows": rows, "passed": passed, "checks": checks, "blocking_failed": blocking_failed,
                "warnings": warnings, "skipped": skipped, "suite_version": suite_version,
                "registry_version": registry.version}

    if report is None:  # standardize refused the batch: one failed blocking check of its own
        return {
            "quality_runs": [run(rows=0, passed=False, checks=1, blocking_failed=1, warnings=0, skipped=0,
                                 suite_version=None)],
            "quality_results": [{
                "load_id": load_id, "dataset": ds.name, "run_at": at, "check_name": "standardize", "expectation": None,
                "column_name": None, "blocking": True, "success": False, "skipped": None, "unexpected_count": problems,
                "sample_rows": None, "sample_values": None, "error": error}]}
    return {
        "quality_runs": [run(
            rows=report.rows, passed=report.passed, checks=len(report.results),
            blocking_failed=len(report.blocking_failures), warnings=len(report.warnings),
            skipped=len(report.skipped), suite_version=report.suite_version)],
        "quality_results": [{
            "load_id": load_id, "dataset": ds.name, "run_at": at, "check_name": r.check, "expectation": r.expectation,
            "column_name": r.column, "blocking": r.blocking, "success": r.success, "skipped": r.skipped,
            "unexpected_count": r.unexpected_count, "sample_rows": json.dumps(list(r.sample_rows)),
            "sample_values": json.dumps([str(v) for v in r.sample_values], ensure_ascii=False), "error": r.error}
            for r in report.results]}


def _record(lake: Lake, row: ledger.LoadRow) -> None:
    def write() -> None:
        with lake.transaction() as con:
            ledger.append(con, "loads", row)
            lake.commit_message(f"record {row['status']} load of {row['dataset']}",
                                {"load_id": row["load_id"], "status": row["status"]})

    retrying(write, lake.settings.commit_retries, f"recording load {row['load_id']}")


FAILURE_RECORD_SECONDS = 120.0
"""How long a failed load's ledger row keeps being retried (with backoff) while the catalog refuses it: the
lock or conflict that made the load fail may refuse its row at first too."""


def _record_failure(lake: Lake, ds: Dataset, registry: Registry, ex: Extract, load_id: str, started: dt.datetime,
                    exc: Exception) -> None:
    """The loads-ledger row of a load that raised (the catalog stayed locked at publish, a full disk, a defect):
    every load is in the ledger, published or not, with its reason. If even the row cannot be written, that
    is logged and the load's own error is raised (the retry of the load records again)."""
    stage = "publish" if "publishing" in str(exc) else getattr(exc, "stage", None) or "load"
    error = str(exc) if isinstance(exc, OneSourceError) else f"{type(exc).__name__}: {exc}"
    row = _ledger_row(ds, registry, ex, load_id, FAILED, started, stage=stage, error=error[:8000])
    deadline, pause = time.monotonic() + FAILURE_RECORD_SECONDS, 0.5
    while True:
        try:
            _record(lake, row)
            return
        except Exception as again:  # the load's own error is the one raised
            if not isinstance(again, CatalogBusyError) or time.monotonic() + pause > deadline:
                log.error("could not record failed %s load %s in %s (%s); it failed with: %s", ds.name,
                          load_id, ledger.ref("loads"), again, error)
                return
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
