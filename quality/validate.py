"""Validate a staged batch with its GX suite, called directly in the load task.

The suite runs through GX's SQL execution engine on DuckDB, reading the staged Parquet file where it
lies (quality.gx_duckdb explains the one GX fix this needs). With a ``docs_root`` the run goes through a
Checkpoint in a GX file context, so suites, results and Data Docs persist under the home.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from quality import docs_assets, fastpath, gx_files, marks
from quality.gx_duckdb import ROW, batch_definition, batch_query, duckdb_source, forget_assets, patch_gx_for_duckdb
from quality.suite import SuiteContext
from schemas.model import Dataset, Registry

if TYPE_CHECKING:  # GX is imported only under _setting_up (see there)
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context.data_context.abstract_data_context import AbstractDataContext
    from great_expectations.data_context.data_context.ephemeral_data_context import EphemeralDataContext
    from great_expectations.data_context.data_context.file_data_context import FileDataContext
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    check: str
    expectation: str
    column: str | None
    blocking: bool
    success: bool
    unexpected_count: int = 0
    sample_rows: tuple[int, ...] = ()
    """1-based data rows of the extract that failed (first few)."""
    sample_values: tuple[Any, ...] = ()
    error: str | None = None
    skipped: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        if self.skipped:
            return f"{self.check}{where}: skipped ({self.skipped})"
        if self.error:
            return f"{self.check}{where}: the check itself failed: {self.error}"
        more = "…" if self.unexpected_count > len(self.sample_rows) else ""
        rows = f" (rows {', '.join(map(str, self.sample_rows))}{more})" if self.sample_rows else ""
        values = f", e.g. {', '.join(repr(v) for v in self.sample_values[:3])}" if self.sample_values else ""
        return f"{self.check}{where}: {self.unexpected_count} failing record(s){rows}{values}"


@dataclass(frozen=True)
class QualityReport:
    dataset: str
    rows: int
    results: tuple[CheckResult, ...] = field(default_factory=tuple)
    suite_version: str = ""
    marks: Any = field(default=None, compare=False, repr=False)
    """Every failing row with every check it failed, blocking and warning (quality.marks): a pyarrow
    table of ``_row`` (1-based) and ``_reasons``, or None when no row-level check failed."""
    seconds: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    """Where the validation's time went: ``gx_context`` (waiting for GX's import and context, set up on
    :func:`prepare`'s thread) and ``gx_setup`` (that set-up's own time), for the load's breakdown."""

    @property
    def row_reasons(self) -> dict[int, tuple[str, ...]]:
        """0-based batch row -> the checks it failed (a Python view of :attr:`marks`, for small batches)."""
        if self.marks is None:
            return {}
        return {r - 1: tuple(v) for r, v in zip(self.marks.column("_row").to_pylist(),
                                                 self.marks.column("_reasons").to_pylist(), strict=True)}

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.blocking and not r.success and not r.skipped]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.blocking and not r.success and not r.skipped]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.skipped]

    @property
    def passed(self) -> bool:
        return not self.blocking_failures

    def summary(self) -> str:
        failed = self.blocking_failures
        if not failed:
            return f"{len(self.results)} checks passed" + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        return "; ".join(r.describe() for r in failed)


def _quiet(context: AbstractDataContext) -> None:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)


@functools.lru_cache(maxsize=1)
def preload_gx() -> None:
    """Import GX the platform's way, once per process: its imports for checks never run here deferred (a
    third of its import, quality.gximport), the custom expectations registered, GX patched for DuckDB.
    Modules only, no context: safe before a fork (onesource.preload imports it in the process Airflow
    forks task processes from, so a load does not pay seconds for it)."""
    from quality import gximport

    gximport.defer()
    import great_expectations  # noqa: F401

    import quality.expectations  # noqa: F401 - registers the custom expectations

    patch_gx_for_duckdb()
    gx_files.patch_gx_file_writes()  # a load killed while GX writes a file leaves the old one, not a part


@functools.lru_cache(maxsize=1)
def _ephemeral_context() -> EphemeralDataContext:
    """One in-memory GX context per process: importing and setting up GX costs seconds."""
    preload_gx()
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    _quiet(context)
    return context


@functools.lru_cache(maxsize=4)
def _file_context(root: str) -> FileDataContext:
    """A GX file context under the home: suites, validation results and Data Docs persist there."""
    _ephemeral_context()  # first: GX imported its way (quality.gximport), custom expectations registered, GX patched
    import great_expectations as gx

    gx_files.set_aside_project_config(Path(root))  # a damaged one would fail every load of every dataset
    context = gx.get_context(mode="file", project_root_dir=root)
    _quiet(context)
    return context


def warm_up() -> None:
    """Import and set up GX now (it takes seconds), e.g. before a benchmark's clock starts."""
    _ephemeral_context()


_setting_up = threading.Lock()
"""GX's context and datasource set-up is not thread-safe: :func:`prepare`'s thread and a validation
take turns (the validation waits until the set-up is done). Importing GX is part of the set-up: no code
in this module imports a GX module before :func:`_ephemeral_context` has run under this lock, or it may
meet :func:`prepare`'s thread halfway through the same imports (Python's import locks then deadlock)."""


def _ready(docs_root: Path | None) -> AbstractDataContext:
    """The context a validation runs in, with its DuckDB datasource (and SQL engine) created. (Not
    called under :func:`_docs_lock`: it takes that lock itself, and a second flock in one process
    waits for the first.)"""
    with _setting_up:
        context: AbstractDataContext
        if docs_root is None:
            context = _ephemeral_context()
            duckdb_source(context)
        else:
            with _docs_lock(docs_root):  # on a fresh home, GX writes its project config
                context = _file_context(str(docs_root))
                source = duckdb_source(context)
                # under the lock no validation runs, so any asset left is a dead one (homes from before
                # assets were forgotten after their run kept one per dataset: see forget_assets)
                forget_assets(source, [a.name for a in source.assets])
        return context


_SETUP: dict[str, float] = {}
"""How long the last GX set-up on :func:`prepare`'s thread took (import, contexts, datasource): reported by the
next validation, once (before, every later load of a process repeated the first load's figure)."""


def _timed_ready(docs_root: Path | None) -> None:
    started = time.perf_counter()
    _ready(docs_root)
    _SETUP["gx_setup"] = round(time.perf_counter() - started, 4)


def prepare(docs_root: Path | None = None) -> None:
    """Set GX up on a background thread: importing it, its contexts and the datasource's SQL engine
    cost a fresh process 0.2 s (seconds with the import, as in a new Airflow task), which a load's
    standardize stage (DuckDB, which releases the GIL) now hides. The next validation waits for it."""
    # not a daemon: on a fresh home it writes GX's project config, which must not be cut off at exit
    threading.Thread(target=_timed_ready, args=(docs_root,), name="onesource-gx-setup", daemon=False).start()


DOCS_KEEP = 30
"""Validation results (and their Data Docs pages) kept per suite. GX rebuilds the site index from every
stored result on each run: with all of them kept, a year of daily loads makes each load seconds slower
(measured: 0.54 s per validation with no stored result, 1.1 s with 300). The full history stays in the
lake (``ops.quality_runs``, ``ops.quality_results``) and the portal."""


def _uncommitted(root: Path) -> Path:
    """GX's file context under ``root``: stored validation results and rendered Data Docs live here."""
    return root / "gx" / "uncommitted"


def _site(root: Path) -> Path:
    return _uncommitted(root) / "data_docs" / "local_site"


def _prune_results(root: Path, suite_name: str, keep: int) -> None:
    """Delete all but the newest ``keep`` stored results of one suite, with their rendered pages."""
    stores = [_uncommitted(root) / "validations", _site(root) / "validations"]
    results = stores[0].joinpath(*suite_name.split("."))
    runs = sorted((p for p in results.glob("*/*") if p.is_dir()), key=lambda p: p.name)  # <run name>/<run time>
    for old in runs[:max(len(runs) - keep, 0)]:
        relative = old.relative_to(stores[0])
        for store in stores:
            shutil.rmtree(store / relative, ignore_errors=True)
            with contextlib.suppress(OSError):
                (store / relative).parent.rmdir()  # the run name's folder, once empty


@contextlib.contextmanager
def _docs_lock(root: Path) -> Iterator[None]:
    """GX's file stores and Data Docs index are not safe for concurrent writers: one load at a time."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".gx.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_data_docs(root: Path) -> Path:
    """Render the GX Data Docs pages of the results stored since the last build (and their suites), and
    the site index; return the index page. Called once per ingest run (the consistency task after the
    loads, ``onesource ingest`` at its end). Incremental because a full build renders every stored
    result again: thousands of pages for a city."""
    marker = _uncommitted(root) / ".data_docs_built_through"
    context = _ready(root)  # waits for a load's prepare() thread, if one is still setting GX up
    # Only now: GX is imported whole by then. Importing a GX module here first, while prepare()'s thread is
    # importing GX (a run whose only batch was quarantined at standardize never waited for it), made the
    # two imports deadlock (_DeadlockError, then a half-initialised module).
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier
    with _docs_lock(root):
        since = marker.read_text().strip() if marker.exists() else ""
        # the validation results store's keys (GX declares them as any store's keys)
        keys = cast("list[ValidationResultIdentifier]", context.validation_results_store.list_keys())
        new = [k for k in keys if _run_time(k) > since]
        started = time.time()
        if new or not since:
            suites = {k.expectation_suite_identifier.name for k in new}
            identifiers = [*new, *(ExpectationSuiteIdentifier(name=n) for n in suites)]
            # GX declares a list of one kind of key; its site builder takes results and their suites together
            context.build_data_docs(resource_identifiers=identifiers)  # type: ignore[arg-type]
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(max((_run_time(k) for k in new), default=since or "0"))
        docs_assets.localize(_site(root), since=started - 2)  # the scripts GX loads from CDNs, from packages
    return _site(root) / "index.html"


def _run_time(key: ValidationResultIdentifier) -> str:
    """A stored result's run time as sortable text (GX names run folders by it)."""
    run_time: str = key.run_id.to_tuple()[1]
    return run_time


def _run(context: AbstractDataContext, dataset: str, suite: ExpectationSuite, batch_path: Path, run_name: str | None,
         result_format: dict[str, Any], docs: bool) -> ExpectationSuiteValidationResult:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = duckdb_source(context)
    definition = batch_definition(source, dataset, str(batch_path))
    try:
        if not docs:
            return definition.get_batch().validate(suite, result_format=result_format)
        suite = context.suites.add_or_update(suite)  # regenerated from the registry on every load
        validation = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=definition, suite=suite))
        # No UpdateDataDocsAction: rendering the site (its index lists every stored result) cost each load
        # ~0.7 s. The result is stored here; build_data_docs renders the site once per ingest run.
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=suite.name, validation_definitions=[validation], result_format=result_format, actions=[]))
        run = checkpoint.run(run_id=RunIdentifier(run_name=run_name) if run_name else None)
        return next(iter(run.run_results.values()))
    finally:
        forget_assets(source, [dataset])


def _row_count(batch_path: Path) -> int:
    import pyarrow.parquet as pq

    rows: int = pq.ParquetFile(batch_path).metadata.num_rows
    return rows


def _rows_of(indexes: list[Any]) -> list[int]:
    """GX names failing rows by the batch's ``__row`` column (1-based)."""
    out = []
    for i in indexes:
        if isinstance(i, dict) and ROW in i:
            out.append(int(i[ROW]))
        elif isinstance(i, int):
            out.append(i + 1)
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def validate_batch(dataset: Dataset, registry: Registry, batch_path: Path, context: SuiteContext | None = None,
                   sample: int = 5, docs_root: Path | None = None, run_name: str | None = None,
                   fast_path: bool = True) -> QualityReport:
    """Run the dataset's suite on a staged batch and say, per check, what failed and on which rows.

    ``fast_path``: the check digits in numpy beside GX (quality.fastpath); without it GX evaluates their
    per-character SQL itself (the reference answer: the same report, slower).

    With ``docs_root`` the run goes through a GX Checkpoint in a file context there, so suites and
    results persist; :func:`build_data_docs` renders them
    (``<docs_root>/gx/uncommitted/data_docs/local_site/index.html``).
    """
    waited = time.perf_counter()
    with _setting_up:
        _ephemeral_context()  # GX suites need an active context before expectations are added
    waited = time.perf_counter() - waited
    with _one_at_a_time, contextlib.ExitStack() as stack:
        # the check digits' answers for this batch: made here, handed to GX's metrics for this run only,
        # and removed with their files when it ends (quality.fastpath)
        fast = stack.enter_context(fastpath.FastPath(batch_query(str(batch_path)), batch_path)) if fast_path else None
        if fast is not None:
            stack.enter_context(fast.active())
        report = _validate(dataset, registry, batch_path, context, sample, docs_root, run_name, fast)
        report.seconds["gx_context"] = round(report.seconds.get("gx_context", 0.0) + waited, 4)
        if "gx_setup" in _SETUP:
            report.seconds["gx_setup"] = _SETUP.pop("gx_setup")
        return report


_one_at_a_time = threading.Lock()
"""GX's contexts are per process and not thread-safe: one validation at a time in a process (loads run in
parallel as separate processes, as Airflow runs them)."""


def _validate(dataset: Dataset, registry: Registry, batch_path: Path, context: SuiteContext | None, sample: int,
              docs_root: Path | None, run_name: str | None, fast: fastpath.FastPath | None) -> QualityReport:
    from quality.expectations import prefetch_fast_answers
    from quality.suite import build_suite, suite_specs, suite_version

    specs = suite_specs(dataset, registry, context)
    if fast is not None:  # the check digits start now, on another thread, while GX builds and stores the suite
        prefetch_fast_answers(fast, specs)
    suite = build_suite(dataset, specs, verdict=True)
    # Two passes. GX asks every map expectation for its failing values and rows in queries of their
    # own, each scanning the batch and evaluating the check again (a check digit 5 times over). So the
    # first pass asks only pass/fail, for the whole suite (and stores it for Data Docs); the second asks for
    # counts, samples and every failing row, but only of the expectations that failed.
    verdict = {"result_format": "BOOLEAN_ONLY"}
    waited = time.perf_counter()
    gx_context = _ready(docs_root)
    waited = time.perf_counter() - waited
    if docs_root is not None:
        with _docs_lock(docs_root):
            # regenerated from the registry below: one left unreadable (by a kill before GX wrote whole files)
            # would fail this dataset's every load inside GX
            gx_files.drop_unreadable(gx_files.stored_definitions(docs_root, suite.name))
            _prune_results(docs_root, suite.name, DOCS_KEEP - 1)  # the run below adds one
            first = _run(gx_context, dataset.name, suite, batch_path, run_name, verdict, True)
    else:
        first = _run(gx_context, dataset.name, suite, batch_path, run_name, verdict, False)
    # GX's ExpectationValidationResult declares expectation_config Optional; a validation always sets it
    results: list[Any] = list(first.results)  # GX orders results its own way: match them by meta "n"
    failed = [r for r in results if not r.success]
    if failed:
        detail = build_suite(dataset, specs, only={r.expectation_config.meta["n"] for r in failed})
        # SUMMARY: counts and a few values and rows; every failing row comes from GX's index query (quality.marks)
        summary = {"result_format": "SUMMARY", "partial_unexpected_count": sample,
                   "unexpected_index_column_names": [ROW], "return_unexpected_index_query": True}
        second = _run(_ephemeral_context(), dataset.name, detail, batch_path, None, summary, False)
        second_results: list[Any] = second.results  # (expectation_config: as above)
        by_n = {r.expectation_config.meta["n"]: r for r in second_results}
        results = [by_n.get((r.expectation_config.meta or {}).get("n"), r) for r in results]
    found = _marks(results, batch_path, sample)
    checks = [_check_result(r, found, sample) for r in results]
    for spec in specs:
        if spec.skipped:
            checks.append(CheckResult(check=spec.check, expectation=spec.expectation, column=spec.column,
                                      blocking=spec.blocking, success=True, skipped=spec.skipped))
    return QualityReport(dataset=dataset.name, rows=_row_count(batch_path), results=tuple(checks),
                         suite_version=suite_version(specs), marks=found.table if found.counts else None,
                         seconds={"gx_context": round(waited, 4)})


def _label(meta: dict[str, Any], expectation: str) -> str:
    """A row's reason: ``check:column`` (``check`` alone for a check of several columns or none)."""
    check, column = meta.get("check", expectation), meta.get("column")
    return f"{check}:{column}" if column else check


def _marks(results: list[Any], batch_path: Path, sample: int) -> marks.Marks:
    """Every failing row of the failed row-level checks, from GX's own index queries. A check GX gave
    no query for keeps the rows GX named (its first few), and says so in the log."""
    queries = []
    for r in results:
        res, meta = r.result or {}, r.expectation_config.meta or {}
        if r.success or not res.get("unexpected_count"):
            continue  # passed, or not a check of rows (volume, freshness)
        rows = _rows_of(res.get("partial_unexpected_index_list") or res.get("unexpected_index_list") or [])
        named = f"SELECT * FROM (VALUES {', '.join(f'({row})' for row in rows) or '(NULL)'}) AS t({ROW}) " \
                f"WHERE {ROW} IS NOT NULL"
        query = res.get("unexpected_index_query")
        if not (isinstance(query, str) and query.strip()):
            log.warning("%s on %s: GX gave no query for its failing rows; only its first rows are marked",
                        r.expectation_config.type, meta.get("column"))
            query = named
        queries.append(marks.RowQuery(meta.get("n", -1), _label(meta, r.expectation_config.type),
                                      marks.repair(query, batch_query(str(batch_path))), named))
    return marks.collect(queries, sample)


def _check_result(r: Any, found: marks.Marks, sample: int) -> CheckResult:
    meta = r.expectation_config.meta or {}
    res = r.result or {}
    n = meta.get("n", -1)
    unexpected = int(res.get("unexpected_count") or 0)
    if n in found.counts and found.counts[n] != unexpected:
        log.warning("%s on %s: GX counted %d failing rows, its query selected %d", r.expectation_config.type,
                    meta.get("column"), unexpected, found.counts[n])
    raised = (r.exception_info or {}).get("raised_exception")
    return CheckResult(
        check=meta.get("check", r.expectation_config.type),
        expectation=r.expectation_config.type,
        column=meta.get("column"),
        blocking=bool(meta.get("blocking", True)),
        success=bool(r.success),
        unexpected_count=unexpected,
        sample_rows=found.first_rows.get(n, ()),
        sample_values=tuple(v for v in (res.get("partial_unexpected_list") or ()) if not _missing(v))[:sample],
        error=(r.exception_info or {}).get("exception_message") if raised else None,
        kwargs={k: v for k, v in r.expectation_config.kwargs.items() if k not in ("value_set", "batch_id")},
    )
