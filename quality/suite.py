"""Great Expectations suites derived from the registry, one per dataset.

Checks are named templates with a ``blocking`` flag (after SQLMesh's audits). Each template turns
a dataset (its columns, their elements, the facts the lake knows) into GX 1.x expectations tagged
in ``meta`` with the rule kind, the column and whether a failure stops the load. Severity defaults
per rule kind (``schemas.model.RULE_KINDS``) and a dataset overrides it under ``quality.severity``.

The suite is rebuilt on every load from the registry, so a registry change changes the next load's
checks; ``suite_version`` names the exact suite in the results.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schemas.exceptions import UnknownNameError
from schemas.formats import FORMAT_RULES
from schemas.model import Column, Dataset, Registry

if TYPE_CHECKING:  # GX is imported lazily (see build_suite)
    from great_expectations.core.expectation_suite import ExpectationSuite

CHECK_DIGIT_FORMATS = ("uscc", "resident_id", "org_code")


@dataclass(frozen=True)
class SuiteContext:
    """What the lake knows that some checks need; gathered by the load (quality.context)."""

    references: dict[str, str | None] = field(default_factory=dict)
    """authority dataset -> a Parquet file of its published keys (None: not published yet, check skipped)."""
    previous_rows: int | None = None
    """Rows of the dataset's last published snapshot load (volume check)."""
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))


@dataclass(frozen=True)
class CheckSpec:
    """One expectation to build: GX class name, its kwargs, and what a failure means."""

    check: str
    expectation: str
    kwargs: dict[str, Any]
    blocking: bool
    column: str | None = None
    skipped: str | None = None
    """Why the check could not run this time (recorded, not silently dropped)."""


Template = Callable[[Dataset, Registry, SuiteContext], Iterator[CheckSpec]]


def _spec(ds: Dataset, rule: str, expectation: str, kwargs: dict[str, Any], column: str | None = None,
          skipped: str | None = None) -> CheckSpec:
    return CheckSpec(rule, expectation, kwargs, ds.quality.blocking(rule), column, skipped)


def _element_attr(col: Column, reg: Registry, attr: str) -> Any:
    own = getattr(col, attr)
    if own or not col.element:
        return own
    return getattr(reg.element(col.element), attr)


def key_unique(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """No two records share a key (DuckLake has no PRIMARY KEY: the suite enforces it)."""
    if len(ds.key) == 1:
        yield _spec(ds, "key_unique", "ExpectColumnValuesToBeUnique", {"column": ds.key[0]}, ds.key[0])
    elif ds.key:
        yield _spec(ds, "key_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": list(ds.key)}, ",".join(ds.key))


def required_values(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Key columns and columns marked ``required`` have a value in every record."""
    for col in ds.columns:
        if col.required or col.name in ds.key:
            yield _spec(ds, "required", "ExpectColumnValuesToNotBeNull", {"column": col.name}, col.name)


def column_types(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Every value has its column's type (standardize casts; this proves the batch is what it claims)."""
    for col in ds.columns:
        yield _spec(ds, "type", "ExpectColumnValuesToHaveStorageType", {"column": col.name, "type_": col.duck_type},
                    col.name)


def code_lists(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Coded columns hold codes of their code list."""
    for col in ds.columns:
        name = _element_attr(col, reg, "code_list")
        if name:
            yield _spec(ds, "code_list", "ExpectColumnValuesToBeInSet",
                        {"column": col.name, "value_set": sorted(reg.code_list(name).codes)}, col.name)


def formats(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Values match their element's format rule; national codes also carry valid check digits."""
    for col in ds.columns:
        fmt = _element_attr(col, reg, "format")
        if not fmt:
            continue
        yield _spec(ds, "format", "ExpectColumnValuesToMatchFormat", {"column": col.name,
                                                                       "pattern": FORMAT_RULES[fmt].pattern}, col.name)
        if fmt in CHECK_DIGIT_FORMATS:
            from quality.expectations import NATIONAL_CODES

            yield _spec(ds, "check_digit", NATIONAL_CODES[fmt].expectation.__name__, {"column": col.name}, col.name)


def ranges(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Values lie within the column's declared ``min``/``max``."""
    for col in ds.columns:
        if col.min is None and col.max is None:
            continue
        bounds = {"min_value": col.min, "max_value": col.max}
        if col.type in ("date", "timestamp"):
            bounds = {k: v and dt.date.fromisoformat(str(v)[:10]).isoformat() for k, v in bounds.items()}
        yield _spec(ds, "range", "ExpectColumnValuesToBeBetween", {"column": col.name, **bounds}, col.name)


def reference_key(reg: Registry, col: Column, ds: Dataset) -> tuple[Dataset, str] | None:
    """(authority dataset, its key column) when ``col`` holds the key element of another authority."""
    if not col.element:
        return None
    try:
        authority = reg.dataset(reg.element(col.element).authority)
    except UnknownNameError:
        return None
    if authority.name == ds.name or len(authority.key) != 1:
        return None
    key_col = authority.column(authority.key[0])
    return (authority, key_col.name) if key_col.element == col.element else None


def references(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Every code that names another department's record exists at the authority (e.g. each credit
    code in the tax extract is in market regulation's register)."""
    for col in ds.columns:
        ref = reference_key(reg, col, ds)
        if ref is None:
            continue
        authority = ref[0].name
        keys = ctx.references.get(authority)
        kwargs = {"column": col.name, "keys_path": keys or "", "authority": authority}
        yield _spec(ds, "reference", "ExpectColumnValuesToExistInAuthority", kwargs, col.name,
                    skipped=None if keys else f"{authority} has no published snapshot yet")


def volume(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """A full snapshot's row count stays within ``volume_tolerance`` of the last published one."""
    if ds.load_mode != "snapshot" or not ctx.previous_rows:
        return
    tol = ds.quality.volume_tolerance
    low, high = int(ctx.previous_rows * (1 - tol)), int(ctx.previous_rows * (1 + tol) + 0.999)
    yield _spec(ds, "volume", "ExpectTableRowCountToBeBetween", {"min_value": max(low, 0), "max_value": high})


def freshness(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """The newest record (``quality.freshness_column``) is within the dataset's update cycle."""
    column = ds.quality.freshness_column
    if not column:
        return
    oldest_ok = ctx.now - ds.freshness
    value = oldest_ok.date().isoformat() if ds.column(column).type == "date" else oldest_ok.isoformat(sep=" ")
    yield _spec(ds, "freshness", "ExpectColumnMaxToBeBetween", {"column": column, "min_value": value}, column)


def custom(ds: Dataset, reg: Registry, ctx: SuiteContext) -> Iterator[CheckSpec]:
    """Extra expectations the dataset declares under ``quality.expectations``."""
    for e in ds.quality.expectations:
        blocking = e.blocking if "custom" not in ds.quality.severity else ds.quality.blocking("custom")
        yield CheckSpec("custom", e.type, dict(e.kwargs), blocking, e.kwargs.get("column"))


TEMPLATES: tuple[Template, ...] = (key_unique, required_values, column_types, code_lists, formats, ranges,
                                   references, volume, freshness, custom)


def suite_specs(ds: Dataset, reg: Registry, ctx: SuiteContext | None = None) -> list[CheckSpec]:
    ctx = ctx or SuiteContext()
    return [spec for template in TEMPLATES for spec in template(ds, reg, ctx)]


def suite_version(specs: list[CheckSpec]) -> str:
    """Hash of the checks (reference value sets summarised by size), to tell suites apart in results."""
    def plain(s: CheckSpec) -> dict[str, Any]:
        kwargs = {k: v for k, v in s.kwargs.items() if k != "keys_path"}  # the keys file changes per snapshot
        return {"check": s.check, "expectation": s.expectation, "kwargs": kwargs, "blocking": s.blocking}

    return hashlib.sha256(json.dumps([plain(s) for s in specs], sort_keys=True, default=str).encode()).hexdigest()[:12]


# Verdict forms: an expectation that answers the same pass/fail question more cheaply, for the first
# pass. ExpectColumnValuesToBeUnique is a join of the batch with its per-value counts (0.88 s on 5M
# keys); counting equal neighbours among the sorted 64-bit hashes costs 0.35 s, and a collision can
# only make it report a duplicate that the second pass then clears.
# The second pass, for failures only, uses the original form, which names the duplicated rows.
VERDICT_FORMS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "ExpectColumnValuesToBeUnique": ("ExpectColumnValuesToBeUniqueByHash",
                                     lambda kw: {"column": kw["column"], "min_value": 1.0}),
}


def build_suite(ds: Dataset, specs: list[CheckSpec], *, verdict: bool = False,
                only: set[int] | None = None) -> ExpectationSuite:
    """The GX suite of ``specs`` (each expectation's meta "n" is its index); ``verdict`` uses the
    verdict forms, ``only`` keeps those indexes. Returns a gx.ExpectationSuite (GX is imported lazily)."""
    import great_expectations as gx

    import quality.expectations as custom_expectations
    from quality.exceptions import SuiteError

    expectations = []
    for n, spec in enumerate(specs):
        if spec.skipped or (only is not None and n not in only):
            continue
        if verdict and spec.expectation in VERDICT_FORMS:
            name, convert = VERDICT_FORMS[spec.expectation]
            spec = dataclasses.replace(spec, expectation=name, kwargs=convert(spec.kwargs))
        cls = getattr(gx.expectations, spec.expectation, None) or getattr(custom_expectations, spec.expectation, None)
        if cls is None:
            raise SuiteError(f"dataset {ds.name}: {spec.expectation} is not a Great Expectations expectation; "
                             "fix quality.expectations in the dataset's registry file")
        try:
            expectations.append(cls(**spec.kwargs, meta={"check": spec.check, "blocking": spec.blocking,
                                                          "column": spec.column, "n": n}))
        except Exception as exc:  # noqa: BLE001 - GX raises pydantic errors for bad kwargs
            raise SuiteError(f"dataset {ds.name}: cannot build {spec.expectation}({spec.kwargs}): {exc}") from exc
    # Given all at once: add_expectation on a suite whose name the file context already stores writes
    # the whole suite back to the store on every call (12 writes per load, ~0.1 s).
    return gx.ExpectationSuite(name=f"onesource.{ds.name}" + ("" if only is None else ".failures"),
                               expectations=expectations)
