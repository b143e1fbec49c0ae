"""Validate a staged batch with its GX suite, called directly in the load task.

GX's SQL datasource fails on DuckDB (GX issue #10738), so the batch is validated as a pandas
DataFrame read from the staged Parquet file (Arrow-backed dtypes, no copy of string data).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quality.suite import SuiteContext
from schemas.model import Dataset, Registry


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
        rows = f" (rows {', '.join(map(str, self.sample_rows))}{'…' if self.unexpected_count > len(self.sample_rows) else ''})"
        values = f", e.g. {', '.join(repr(v) for v in self.sample_values[:3])}" if self.sample_values else ""
        return f"{self.check}{where}: {self.unexpected_count} failing record(s){rows if self.sample_rows else ''}{values}"


@dataclass(frozen=True)
class QualityReport:
    dataset: str
    rows: int
    results: tuple[CheckResult, ...] = field(default_factory=tuple)
    suite_version: str = ""
    row_reasons: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)
    """0-based batch row -> the checks it failed (blocking and warning), for the quarantine table."""

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


@functools.lru_cache(maxsize=1)
def _batch_definition():
    """One ephemeral GX context per process: importing and setting up GX costs seconds."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("onesource_staging")
    return source.add_dataframe_asset("staged_batch").add_batch_definition_whole_dataframe("whole_batch")


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, list | tuple | dict) and bool(pd.isna(value)))


def read_batch(path: Path):
    """The staged batch as pandas. Nullable integer and boolean dtypes keep NULLs without turning
    integers into floats; other columns use pandas' own dtypes, because GX hashes the whole frame
    on every batch and hashing Arrow-backed columns iterates in Python (4x slower, measured)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    def mapper(typ: pa.DataType):
        if pa.types.is_integer(typ):
            return pd.Int64Dtype()
        if pa.types.is_boolean(typ):
            return pd.BooleanDtype()
        return None

    return pq.read_table(path).to_pandas(types_mapper=mapper)


@functools.lru_cache(maxsize=4)
def _file_context(root: str):
    """A GX file context under the home: suites, validation results and Data Docs persist there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="file", project_root_dir=root)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@contextlib.contextmanager
def _docs_lock(root: Path):
    """GX's file stores and Data Docs index are not safe for concurrent writers: one load at a time."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".gx.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_with_docs(root: Path, dataset: str, suite, frame, run_name: str | None, result_format: dict):
    """Validate through a Checkpoint whose UpdateDataDocsAction renders the run into Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    with _docs_lock(root):
        context = _file_context(str(root))
        try:
            source = context.data_sources.get("onesource")
        except (KeyError, ValueError, LookupError):
            source = context.data_sources.add_pandas("onesource")
        try:
            asset = source.get_asset(dataset)
        except (KeyError, ValueError, LookupError):
            asset = source.add_dataframe_asset(dataset)
        try:
            batch_definition = asset.get_batch_definition("staged_batch")
        except (KeyError, ValueError, LookupError):
            batch_definition = asset.add_batch_definition_whole_dataframe("staged_batch")
        suite = context.suites.add_or_update(suite)  # regenerated from the registry on every load
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite))
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=suite.name, validation_definitions=[definition], result_format=result_format,
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")]))
        run = checkpoint.run(batch_parameters={"dataframe": frame},
                             run_id=RunIdentifier(run_name=run_name) if run_name else None)
        return next(iter(run.run_results.values()))


def validate_batch(dataset: Dataset, registry: Registry, batch_path: Path, context: SuiteContext | None = None,
                   sample: int = 5, docs_root: Path | None = None, run_name: str | None = None) -> QualityReport:
    """Run the dataset's suite on a staged batch and say, per check, what failed and on which rows.

    With ``docs_root`` the run goes through a GX Checkpoint in a file context there, so suites,
    results and Data Docs (``<docs_root>/gx/uncommitted/data_docs/local_site/index.html``) persist.
    """
    from quality.suite import build_suite, suite_specs, suite_version

    frame = read_batch(batch_path)
    batch_definition = _batch_definition()  # first: GX suites need an active context
    specs = suite_specs(dataset, registry, context)
    suite = build_suite(dataset, specs)
    result_format = {"result_format": "COMPLETE", "partial_unexpected_count": sample}
    if docs_root is not None:
        result = _run_with_docs(docs_root, dataset.name, suite, frame, run_name, result_format)
    else:
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format=result_format)
    checks: list[CheckResult] = []
    row_reasons: dict[int, list[str]] = {}
    for r in result.results:
        meta = r.expectation_config.meta or {}
        res = r.result or {}
        indexes = [i for i in (res.get("unexpected_index_list") or []) if isinstance(i, int)]
        raised = (r.exception_info or {}).get("raised_exception")
        check = CheckResult(
            check=meta.get("check", r.expectation_config.type),
            expectation=r.expectation_config.type,
            column=meta.get("column"),
            blocking=bool(meta.get("blocking", True)),
            success=bool(r.success),
            unexpected_count=int(res.get("unexpected_count") or 0),
            sample_rows=tuple(i + 1 for i in indexes[:sample]),
            sample_values=tuple(v for v in (res.get("partial_unexpected_list") or ()) if not _missing(v))[:sample],
            error=(r.exception_info or {}).get("exception_message") if raised else None,
            kwargs={k: v for k, v in r.expectation_config.kwargs.items() if k not in ("value_set", "batch_id")},
        )
        checks.append(check)
        if not check.success:
            label = f"{check.check}:{check.column}" if check.column else check.check
            for i in indexes:
                row_reasons.setdefault(i, []).append(label)
    for spec in specs:
        if spec.skipped:
            checks.append(CheckResult(check=spec.check, expectation=spec.expectation, column=spec.column,
                                      blocking=spec.blocking, success=True, skipped=spec.skipped))
    return QualityReport(dataset=dataset.name, rows=len(frame), results=tuple(checks), suite_version=suite_version(specs),
                         row_reasons={k: tuple(v) for k, v in row_reasons.items()})
