"""The registry as typed, frozen values.

A department is data, never a branch in code: everything OneSource knows about a department, a
data element or a dataset is one of these values, loaded from the registry's YAML files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

# Element type -> DuckDB type. Decimal precision is fixed so every department's amounts compare.
ELEMENT_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(18,2)",
    "number": "DOUBLE",  # ratios and rates (the KPI tables), where DECIMAL(18,2) would round them
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN",
}

SHARE_TYPES = ("unconditional", "conditional", "not_shared")

# Update cycle -> (Airflow schedule, how long a load stays fresh).
UPDATE_CYCLES: dict[str, tuple[str, dt.timedelta]] = {
    "hourly": ("@hourly", dt.timedelta(hours=1)),
    "daily": ("@daily", dt.timedelta(days=1)),
    "weekly": ("@weekly", dt.timedelta(weeks=1)),
    "monthly": ("@monthly", dt.timedelta(days=31)),
    "quarterly": ("@quarterly", dt.timedelta(days=92)),
    "yearly": ("@yearly", dt.timedelta(days=366)),
}

LOAD_MODES = ("snapshot", "upsert", "append")
"""snapshot: each batch is the whole table; upsert: rows replace rows with the same key; append: insert."""

SENSITIVITY_LEVELS = (1, 2, 3, 4)
"""1 public, 2 internal, 3 sensitive (masked for consumers), 4 highly sensitive (encrypted at rest)."""
ENCRYPTED_LEVEL = 4
"""A dataset with a column at this level loads only into an encrypted lake."""


@dataclass(frozen=True)
class Where:
    """Where a registry entry was declared, so every error can name file and line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class System:
    code: str
    name: str


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    name_en: str
    systems: tuple[System, ...] = ()
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CodeList:
    name: str
    codes: dict[str, str]
    """code -> label (labels are accepted on input and mapped to their code)."""
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Element:
    """A data element: one fact with exactly one authoritative dataset."""

    name: str
    name_zh: str
    name_en: str
    type: str
    authority: str
    """The dataset that is the one source of this element."""
    format: str | None = None
    code_list: str | None = None
    sensitivity: int = 1
    where: Where | None = field(default=None, compare=False)


RULE_KINDS: dict[str, bool] = {
    # rule kind -> blocking by default. A dataset overrides any of them under quality.severity.
    "key_unique": True,
    "required": True,
    "type": True,
    "code_list": True,
    "format": True,
    "check_digit": True,
    "range": False,
    "reference": False,
    "volume": False,
    "freshness": False,
    "custom": False,
}
SEVERITIES = ("blocking", "warning")


@dataclass(frozen=True)
class CustomExpectation:
    """An extra GX expectation a dataset declares: class name, its arguments, blocking or not."""

    type: str
    kwargs: dict[str, Any]
    blocking: bool = False
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class QualitySpec:
    """Per-dataset quality settings (all optional)."""

    severity: dict[str, str] = field(default_factory=dict)
    """rule kind -> blocking | warning, overriding RULE_KINDS."""
    volume_tolerance: float = 0.5
    """A snapshot load whose row count moves more than this fraction from the last load is flagged."""
    freshness_column: str | None = None
    """A date/timestamp column whose newest value must be within the update cycle."""
    expectations: tuple[CustomExpectation, ...] = ()

    def blocking(self, rule: str) -> bool:
        if rule in self.severity:
            return self.severity[rule] == "blocking"
        return RULE_KINDS.get(rule, True)


@dataclass(frozen=True)
class Column:
    """A column of a dataset's shared table, read from a column of the department's extract."""

    name: str
    source: str
    """Header (or field) name in the department's extract."""
    type: str
    element: str | None = None
    required: bool = False
    code_list: str | None = None
    format: str | None = None
    min: Any = None
    """Smallest allowed value (a number, or an ISO date for date columns): the range check."""
    max: Any = None
    from_authority: bool = False
    """Not collected: filled from the element's authoritative dataset, joined on the dataset's key
    (once only: the department consumes the element instead of collecting it again)."""
    references: str | None = None
    """``authority``: this column is the key through which the dataset references the element's
    authoritative dataset (a credit code, a resident ID, a division code naming the authority's record).
    The department holds the identifier in order to reference the authority, not to collect the fact
    again, so the duplicate collection rate does not count it (schemas.checks verifies the declaration)."""
    where: Where | None = field(default=None, compare=False)

    @property
    def duck_type(self) -> str:
        return ELEMENT_TYPES[self.type]


@dataclass(frozen=True)
class ConnectorSpec:
    """Connector kind plus its kind-specific settings (validated by the kind in ``connectors``)."""

    kind: str
    settings: dict[str, Any]
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    owner: str
    system: str
    connector: ConnectorSpec
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    update_cycle: str
    share_type: str
    load_mode: str = "snapshot"
    conditions: str | None = None
    legal_basis: str | None = None
    description: str = ""
    quality: QualitySpec = field(default_factory=QualitySpec)
    compatibility: str = "BACKWARD"
    """How a new version of this dataset's schema must relate to earlier ones (schemas.versions)."""
    schema_drift: str = "evolve"
    """An extract whose columns differ from the registry: ``evolve`` (load when only optional columns are
    missing or unknown ones were added, reporting each) or ``fail`` (any difference fails the load)."""
    open_attribute: str = "不予开放"
    """开放属性 of the national catalogue (GB/T 21063.3): 无条件开放, 有条件开放 or 不予开放 to the public."""
    where: Where | None = field(default=None, compare=False)

    @property
    def platform(self) -> bool:
        """A table OneSource computes itself (the KPI tables): shared like any dataset, but not a
        department's data, so it has no ingestion DAG and does not count in the sharing KPIs."""
        return self.connector.kind == "platform"

    @property
    def table(self) -> str:
        """Name of the shared table, as ``onesource sql`` reads it."""
        return f"shared.{self.name}"

    @property
    def schedule(self) -> str:
        return UPDATE_CYCLES[self.update_cycle][0]

    @property
    def freshness(self) -> dt.timedelta:
        return UPDATE_CYCLES[self.update_cycle][1]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


@dataclass(frozen=True)
class Registry:
    departments: tuple[Department, ...]
    elements: tuple[Element, ...]
    code_lists: tuple[CodeList, ...]
    datasets: tuple[Dataset, ...]

    # Lookups by name are indexed once per registry (a city has thousands of datasets; the DAG factory
    # and the KPIs look names up tens of thousands of times). cached_property writes the instance's
    # __dict__ directly, which a frozen dataclass allows.
    @cached_property
    def _index(self) -> dict[str, dict[str, Any]]:
        return {"department": {d.code: d for d in self.departments}, "data element": {e.name: e for e in self.elements},
                "code list": {c.name: c for c in self.code_lists}, "dataset": {d.name: d for d in self.datasets}}

    def _lookup(self, what: str, name: str) -> Any:
        found = self._index[what].get(name)
        if found is None:
            from schemas.exceptions import UnknownNameError

            known = ", ".join(sorted(self._index[what])[:20])
            raise UnknownNameError(f"unknown {what} {name!r}; known: {known}")
        return found

    def department(self, code: str) -> Department:
        return self._lookup("department", code)

    def element(self, name: str) -> Element:
        return self._lookup("data element", name)

    def code_list(self, name: str) -> CodeList:
        return self._lookup("code list", name)

    def dataset(self, name: str) -> Dataset:
        return self._lookup("dataset", name)

    @cached_property
    def source_datasets(self) -> tuple[Dataset, ...]:
        """The departments' own datasets: what is ingested, and what the sharing KPIs count."""
        return tuple(d for d in self.datasets if not d.platform)

    def encrypted_columns(self, ds: Dataset) -> list[str]:
        """Columns of ``ds`` whose element is highly sensitive (level 4): their files must be encrypted."""
        return [c.name for c in ds.columns
                if c.element in self._index["data element"] and self.element(c.element).sensitivity >= ENCRYPTED_LEVEL]

    @cached_property
    def version(self) -> str:
        """Content hash of the registry: the same registry always gets the same version."""
        payload = json.dumps(
            [[_plain(x) for x in group] for group in (self.departments, self.elements, self.code_lists, self.datasets)],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


OPEN_ATTRIBUTES = ("无条件开放", "有条件开放", "不予开放")


def authority_join(registry: Registry, ds: Dataset, col: Column) -> tuple[Dataset, Column, Column] | None:
    """For a ``from_authority`` column: (authority dataset, this dataset's join column, the authority's key
    column), joining on the authority's single-column key element; None when no such join exists."""
    try:
        authority = registry.dataset(registry.element(col.element or "").authority)
    except KeyError:
        return None
    if len(authority.key) != 1:
        return None
    auth_key = authority.column(authority.key[0])
    if not auth_key.element:
        return None
    mine = next((c for c in ds.columns if c.element == auth_key.element and not c.from_authority), None)
    return (authority, mine, auth_key) if mine else None


REFERENCE_TARGETS = ("authority",)
"""What a column's ``references`` may name: today only the authoritative dataset of its element."""


def authority_reference(registry: Registry, ds: Dataset, col: Column) -> Dataset | None:
    """The authoritative dataset ``col`` references by its key, when the column declares
    ``references: authority`` and really is that key: it holds the element that is the single-column key
    of the element's authoritative dataset, which is another dataset. None otherwise (an undeclared key
    column is a copy like any other: no silent exemption)."""
    if col.references != "authority" or not col.element:
        return None
    try:
        authority = registry.dataset(registry.element(col.element).authority)
    except KeyError:
        return None
    if authority.name == ds.name or len(authority.key) != 1:
        return None
    return authority if authority.column(authority.key[0]).element == col.element else None


def _plain(value: Any) -> dict[str, Any]:
    data = asdict(value)
    _drop_where(data)
    return data


def _drop_where(data: Any) -> None:
    if isinstance(data, dict):
        data.pop("where", None)
        for v in data.values():
            _drop_where(v)
    elif isinstance(data, list | tuple):
        for v in data:
            _drop_where(v)
