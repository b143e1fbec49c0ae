"""Great Expectations suites derived from the registry.

Checks are named templates with a ``blocking`` flag (after SQLMesh's audits): each template turns
a dataset (and a column) into GX 1.x expectations, tagged in ``meta`` with the check name, the
column and whether a failure stops the load. A blocking failure quarantines the batch; a warning
is recorded and the batch is published.

The foundation's templates cover key uniqueness, required values, types and code lists; the
quality issue adds format rules, check digits, references, volume and freshness the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from schemas.model import Column, Dataset, Registry

# Column type -> the Python type name GX observes in the batch's values.
GX_TYPE_NAMES = {"string": "str", "integer": "int", "decimal": "Decimal", "date": "date",
                 "timestamp": "datetime64", "boolean": "bool"}


@dataclass(frozen=True)
class CheckSpec:
    """One expectation to build: GX class name, its kwargs, and what the failure means."""

    check: str
    expectation: str
    kwargs: dict[str, Any]
    blocking: bool
    column: str | None = None


Template = Callable[[Dataset, Registry], Iterator[CheckSpec]]


def key_unique(ds: Dataset, reg: Registry) -> Iterator[CheckSpec]:
    """No two records share a key (DuckLake has no PRIMARY KEY: the suite enforces it)."""
    if len(ds.key) == 1:
        yield CheckSpec("key_unique", "ExpectColumnValuesToBeUnique", {"column": ds.key[0]}, True, ds.key[0])
    elif ds.key:
        yield CheckSpec("key_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": list(ds.key)}, True,
                        ",".join(ds.key))


def required_values(ds: Dataset, reg: Registry) -> Iterator[CheckSpec]:
    """Key columns and columns marked ``required`` have a value in every record."""
    for col in ds.columns:
        if col.required or col.name in ds.key:
            yield CheckSpec("required", "ExpectColumnValuesToNotBeNull", {"column": col.name}, True, col.name)


def column_types(ds: Dataset, reg: Registry) -> Iterator[CheckSpec]:
    """Every value has its column's type (standardize casts; this proves the batch is what it claims)."""
    for col in ds.columns:
        yield CheckSpec("type", "ExpectColumnValuesToBeOfType", {"column": col.name, "type_": GX_TYPE_NAMES[col.type]},
                        True, col.name)


def code_lists(ds: Dataset, reg: Registry) -> Iterator[CheckSpec]:
    """Coded columns hold codes of their code list."""
    for col in ds.columns:
        name = _code_list(col, reg)
        if name:
            yield CheckSpec("code_list", "ExpectColumnValuesToBeInSet",
                            {"column": col.name, "value_set": sorted(reg.code_list(name).codes)}, True, col.name)


def _code_list(col: Column, reg: Registry) -> str | None:
    if col.code_list:
        return col.code_list
    return reg.element(col.element).code_list if col.element else None


TEMPLATES: tuple[Template, ...] = (key_unique, required_values, column_types, code_lists)


def suite_specs(ds: Dataset, reg: Registry) -> list[CheckSpec]:
    return [spec for template in TEMPLATES for spec in template(ds, reg)]


def build_suite(ds: Dataset, reg: Registry):  # -> gx.ExpectationSuite (GX imported lazily: it is slow)
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=f"onesource.{ds.name}")
    for spec in suite_specs(ds, reg):
        cls = getattr(gx.expectations, spec.expectation)
        suite.add_expectation(cls(**spec.kwargs, meta={"check": spec.check, "blocking": spec.blocking,
                                                       "column": spec.column}))
    return suite
