"""The registry as typed, frozen values.

A department is data, never a branch in code: everything OneSource knows about a department, a
data element or a dataset is one of these values, loaded from the registry's YAML files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field
from functools import cached_property
from typing import Any, TypedDict, TypeVar, dataclass_transform

from schemas.formats import FORMAT_RULES

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

SHARE_TYPE_MEANINGS: dict[str, str] = {
    "unconditional": "every department may query it (无条件共享)",
    "conditional": "a department queries it once the owner grants a request; state the `conditions` (有条件共享)",
    "not_shared": "no department may query it; state the `legal_basis` (不予共享)",
}
SHARE_TYPES = tuple(SHARE_TYPE_MEANINGS)

# Update cycle -> (Airflow schedule, how long a load stays fresh).
UPDATE_CYCLES: dict[str, tuple[str, dt.timedelta]] = {
    "hourly": ("@hourly", dt.timedelta(hours=1)),
    "daily": ("@daily", dt.timedelta(days=1)),
    "weekly": ("@weekly", dt.timedelta(weeks=1)),
    "monthly": ("@monthly", dt.timedelta(days=31)),
    "quarterly": ("@quarterly", dt.timedelta(days=92)),
    "yearly": ("@yearly", dt.timedelta(days=366)),
}

def _span(delta: dt.timedelta) -> str:
    days, hours = delta.days, delta.seconds // 3600
    return f"{days} day{'s' * (days != 1)}" if days else f"{hours} hour{'s' * (hours != 1)}"


LOAD_MODE_MEANINGS: dict[str, str] = {
    "snapshot": "each batch is the whole table",
    "upsert": "a batch's rows replace the rows with the same key, and the others are added",
    "append": "a batch's rows are added",
}
LOAD_MODES = tuple(LOAD_MODE_MEANINGS)

SENSITIVITY_MEANINGS: dict[int, str] = {
    1: "public",
    2: "internal",
    3: "sensitive: masked for consuming departments",
    4: "highly sensitive: its datasets load only into an encrypted lake",
}
SENSITIVITY_LEVELS = tuple(SENSITIVITY_MEANINGS)
ENCRYPTED_LEVEL = 4
"""A dataset with a column at this level loads only into an encrypted lake."""


SCHEMA_DRIFTS: dict[str, str] = {
    "evolve": "load when only optional columns are missing or unknown ones were added, reporting each",
    "fail": "any difference between the extract's columns and the registry fails the load",
}
COMPATIBILITY_MODES: dict[str, str] = {  # Confluent Schema Registry's meanings (schemas.versions)
    "BACKWARD": "the new schema reads data written with the previous one (delete a column, add an optional one)",
    "BACKWARD_TRANSITIVE": "BACKWARD against every earlier version",
    "FORWARD": "data written with the new schema is readable with the previous one (add columns, delete optional ones)",
    "FORWARD_TRANSITIVE": "FORWARD against every earlier version",
    "FULL": "both BACKWARD and FORWARD",
    "FULL_TRANSITIVE": "FULL against every earlier version",
    "NONE": "any change is accepted",
}
OPEN_ATTRIBUTES = ("无条件开放", "有条件开放", "不予开放")
REFERENCE_TARGETS = ("authority",)
"""What a column's ``references`` may name: today only the authoritative dataset of its element."""


def spec(*, default: Any = MISSING, factory: Any = MISSING, choices: Any = (), keys: Any = (),
         optional: bool = False) -> Any:
    """A model field plus what the registry's schema needs beyond its type (read by schemas.shape):
    ``choices`` the values it takes (a mapping gives each value's meaning), ``keys`` the keys a mapping
    field takes, ``optional`` a key a registry file may leave out although the value always has one (the
    loader fills it in). Each field's description is the docstring under it. Keyword arguments only, as
    ``field``'s: a type checker reads ``default`` and ``factory`` by name (see :func:`registry_value`)."""
    meta = {"choices": choices, "keys": keys, "optional": optional}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_Value = TypeVar("_Value")


@dataclass_transform(frozen_default=True, field_specifiers=(field, spec))
def registry_value(cls: type[_Value]) -> type[_Value]:
    """``@dataclass(frozen=True)``, and it tells type checkers that :func:`spec` declares a field, as ``field``
    does: a field is required unless its ``spec`` gives a ``default`` or a ``factory``."""
    return dataclass(frozen=True)(cls)


@registry_value
class Where:
    """Where a registry entry was declared, so every error can name file and line."""

    file: str
    line: int
    keys: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    """The line of each key of the entry's mapping, so an error about one value names that value's line."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def of(self, key: str) -> Where:
        """Where ``key`` of this entry was written (the entry's own line when it was left out)."""
        return Where(self.file, dict(self.keys).get(key, self.line))


@registry_value
class System:
    """A department's source system: each dataset names the system its extracts come from."""

    code: str
    """Code of the system, unique across departments (a dataset's ``system``)."""
    name: str
    """Name of the system (e.g. 登记系统)."""


@registry_value
class Department:
    """A department that owns datasets and consumes others' (``departments.yaml``)."""

    code: str
    """Short code of the department (e.g. ``amr``): a dataset's ``owner``, and the folder of its dataset files
    and of its drop folder under ``sources/``."""
    name: str
    """Name of the department in Chinese (e.g. 市场监督管理局)."""
    name_en: str = spec(default="", optional=True)
    """Name of the department in English."""
    systems: tuple[System, ...] = ()
    """The department's source systems."""
    where: Where | None = field(default=None, compare=False)


DIVISION_LEVELS: dict[str, str] = {
    "city": "the city (a 6-digit GB/T 2260 code ending in 00, e.g. 430100): sees every row",
    "district": "a district, county or county-level city (6 digits, GB/T 2260, e.g. 430104)",
    "street": "a street office, town or township (9 digits: its district's code and 3 more, e.g. 430104001)",
    "community": "a community or village (12 digits: its street's code and 3 more)",
}


def division_level(code: str) -> str | None:
    """The level of a division code by its form (:data:`DIVISION_LEVELS`); None when it is not one.

    >>> division_level("430100"), division_level("430104"), division_level("430104001")
    ('city', 'district', 'street')
    """
    if not isinstance(code, str) or not code.isascii() or not code.isdigit() or code[:2] == "00":
        return None
    if len(code) == 6:
        return None if code.endswith("0000") else "city" if code.endswith("00") else "district"
    return {9: "street", 12: "community"}.get(len(code))


def division_prefix(code: str) -> str:
    """The significant digits of a division code: every code under it starts with them, and no other does.
    Trailing zero groups of a longer code are dropped (430104000 is the district 430104), then a 6-digit
    code's trailing ``00`` pairs (the city 430100 -> 4301).

    >>> division_prefix("430100"), division_prefix("430104"), division_prefix("430104001")
    ('4301', '430104', '430104001')
    """
    while len(code) > 6 and code.endswith("000"):
        code = code[:-3]
    while len(code) in (4, 6) and code.endswith("00"):
        code = code[:-2]
    return code


@registry_value
class Organisation:
    """An organisation of the city's hierarchy (``organisations.yaml``): the city, a district or county, a
    street office. Users belong to one; a grant scoped to the jurisdiction shows each user the rows under it."""

    code: str
    """Division code of the organisation's jurisdiction: GB/T 2260 6 digits for the city and its districts
    (430100, 430104), 9 digits for a street office (430104001), 12 for a community."""
    name: str
    """Name in Chinese (e.g. 岳麓区, 望月湖街道)."""
    name_en: str = spec(default="", optional=True)
    """Name in English."""
    parent: str | None = None
    """Code of the organisation it belongs to (a street's district, a district's city); none for the city.
    A code lies under its parent's: it starts with the parent's significant digits."""
    where: Where | None = field(default=None, compare=False)

    @property
    def level(self) -> str | None:
        """city, district, street or community (:data:`DIVISION_LEVELS`), by the form of its code."""
        return division_level(self.code)

    @property
    def prefix(self) -> str:
        """The significant digits of its code: the rows under its jurisdiction start with them."""
        return division_prefix(self.code)


@registry_value
class CodeList:
    """A code list (``code_lists`` in ``elements.yaml``): ``NAME: {CODE: LABEL}``."""

    name: str
    """Name of the code list: an element's or a column's ``code_list``."""
    codes: dict[str, str]
    """code -> label (labels are accepted on input and mapped to their code)."""
    where: Where | None = field(default=None, compare=False)


@registry_value
class Element:
    """A data element: one fact with exactly one authoritative dataset."""

    name: str
    """Name of the element (e.g. ``uscc``): the ``element`` of the columns that hold it."""
    name_zh: str
    """Name of the element in Chinese (e.g. 统一社会信用代码)."""
    name_en: str
    """Name of the element in English."""
    type: str = spec(choices=ELEMENT_TYPES)
    """Type of the element's values; a column of this element takes it unless the column says otherwise."""
    authority: str
    """The dataset that is the one source of this element (exactly one: the others reference it)."""
    format: str | None = spec(default=None, choices={k: r.description for k, r in FORMAT_RULES.items()})
    """Format rule every value must match (with its check digit where the standard has one)."""
    code_list: str | None = None
    """Code list (in ``code_lists``) every value must come from; a label is accepted and stored as its code."""
    sensitivity: int = spec(default=1, choices=SENSITIVITY_MEANINGS)
    """1 public, 2 internal, 3 sensitive (masked for consuming departments), 4 highly sensitive (its datasets
    load only into an encrypted lake)."""
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
SEVERITY_MEANINGS = {"blocking": "a failing row quarantines the whole batch: nothing is published",
                     "warning": "failures are reported, the batch is published"}


@registry_value
class CustomExpectation:
    """An extra GX expectation a dataset declares: class name, its arguments, blocking or not."""

    type: str
    """Great Expectations class name of the expectation (e.g. ``ExpectColumnValuesToBeBetween``)."""
    kwargs: dict[str, Any] = spec(optional=True)
    """The expectation's arguments, as GX names them (e.g. ``{column: staff, min_value: 0}``)."""
    blocking: bool = False
    """Whether a failure quarantines the batch (true) or is only reported (false)."""
    where: Where | None = field(default=None, compare=False)


@registry_value
class QualitySpec:
    """Per-dataset quality settings (all optional)."""

    severity: dict[str, str] = spec(factory=dict, choices=SEVERITY_MEANINGS,
                                    keys={k: "blocking by default" if v else "a warning by default"
                                          for k, v in RULE_KINDS.items()})
    """Rule kind -> ``blocking`` or ``warning``, overriding the rule's default."""
    volume_tolerance: float = 0.5
    """A snapshot load whose row count moves more than this fraction from the last load is flagged."""
    freshness_column: str | None = None
    """A date/timestamp column whose newest value must be within the update cycle."""
    expectations: tuple[CustomExpectation, ...] = ()
    """Extra Great Expectations expectations, beyond those derived from the columns."""

    def blocking(self, rule: str) -> bool:
        if rule in self.severity:
            return self.severity[rule] == "blocking"
        return RULE_KINDS.get(rule, True)


@registry_value
class Column:
    """A column of a dataset's shared table, read from a column of the department's extract."""

    name: str
    """Name of the column in the shared table."""
    source: str = spec(optional=True)
    """Header (or field) name in the department's extract; the column's ``name`` when left out."""
    type: str = spec(choices=ELEMENT_TYPES, optional=True)
    """Type of the column; the element's type when left out (a column without an element needs one)."""
    element: str | None = None
    """The data element the column holds (``elements.yaml``): its type, format, code list and sensitivity
    apply, and the once-only KPIs count it."""
    required: bool = False
    """Every row must have a value (a blocking check unless ``quality.severity`` says otherwise)."""
    code_list: str | None = None
    """Code list every value must come from (beyond the element's own)."""
    format: str | None = spec(default=None, choices={k: r.description for k, r in FORMAT_RULES.items()})
    """Format rule every value must match (beyond the element's own); a format also decides masking."""
    min: Any = None
    """Smallest allowed value (a number, or an ISO date for date columns): the range check."""
    max: Any = None
    """Largest allowed value (a number, or an ISO date for date columns): the range check."""
    from_authority: bool = False
    """Not collected: filled from the element's authoritative dataset, joined on the dataset's key
    (once only: the department consumes the element instead of collecting it again)."""
    references: str | None = spec(default=None, choices=REFERENCE_TARGETS)
    """``authority``: this column is the key through which the dataset references the element's
    authoritative dataset (a credit code, a resident ID, a division code naming the authority's record).
    The department holds the identifier in order to reference the authority, not to collect the fact
    again, so the duplicate collection rate does not count it (the registry check verifies the declaration)."""
    where: Where | None = field(default=None, compare=False)

    @property
    def duck_type(self) -> str:
        return ELEMENT_TYPES[self.type]


@registry_value
class ConnectorSpec:
    """Connector kind plus its kind-specific settings (validated by the kind in ``connectors``)."""

    kind: str
    """How OneSource reaches the department's data: its other keys depend on the kind."""
    settings: dict[str, Any]
    """The kind's settings, written beside ``kind`` in the registry file (schemas.kinds)."""
    where: Where | None = field(default=None, compare=False)


@registry_value
class Dataset:
    """A dataset a department shares: where its extracts come from, its columns, key, schedule and share type."""

    name: str
    """Name of the dataset: its shared table is ``shared.<name>``; unique in the registry."""
    title: str = spec(optional=True)
    """Title shown in the catalogue (the name when left out)."""
    owner: str
    """Code of the department that owns the dataset (``departments.yaml``)."""
    system: str
    """Code of the owner's source system the extracts come from."""
    connector: ConnectorSpec
    """Where the department's extracts come from: ``kind`` and that kind's settings."""
    columns: tuple[Column, ...]
    """The columns of the shared table, each read from a column of the extract."""
    key: tuple[str, ...]
    """The column (or list of columns) that identifies a record: unique in every load."""
    update_cycle: str = spec(choices={k: f"scheduled {v[0]}, fresh for {_span(v[1])}" for k, v in UPDATE_CYCLES.items()})
    """How often the department updates it: the Airflow schedule and how long a load stays fresh."""
    share_type: str = spec(choices=SHARE_TYPE_MEANINGS)
    """Who may query the dataset."""
    load_mode: str = spec(default="snapshot", choices=LOAD_MODE_MEANINGS)
    """How a batch changes the shared table."""
    conditions: str | None = None
    """Conditional datasets: who may use it and for what (shown to requesting departments)."""
    legal_basis: str | None = None
    """Datasets not shared: the law or regulation that forbids sharing."""
    description: str = ""
    """What the dataset holds, shown in the catalogue."""
    quality: QualitySpec = field(default_factory=QualitySpec)
    """Quality settings beyond what the columns imply (severities, volume, freshness, extra expectations)."""
    compatibility: str = spec(default="BACKWARD", choices=COMPATIBILITY_MODES)
    """How a new version of this dataset's schema must relate to earlier ones (upper or lower case)."""
    schema_drift: str = spec(default="evolve", choices=SCHEMA_DRIFTS)
    """What a load does with an extract whose columns differ from the registry."""
    open_attribute: str = spec(default="不予开放", choices=OPEN_ATTRIBUTES)
    """开放属性 of the national catalogue (GB/T 21063.3): 无条件开放, 有条件开放 or 不予开放 to the public."""
    division_column: str | None = None
    """The text column holding each row's division code (a district's 6 digits, a street's 9, a community's
    12): a grant scoped to the jurisdiction shows a user of a district or street only the rows under its code."""
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


SUBJECT_KINDS: dict[str, str] = {
    "resident": "one person, identified by a resident ID",
    "enterprise": "one enterprise, identified by its unified social credit code",
    "household": "one household, identified by its household number",
    "street": "one street office or community, identified by its division code",
}
"""What a form is about: one form is filled per subject (forms in ``forms/*.yaml``)."""
EXCEL_SHEET_FORBIDDEN = "[]:*?/\\"
"""Characters Excel refuses in a sheet name (which is also at most 31 characters long)."""


@registry_value
class FormField:
    """A field of a form (an item of its ``fields``): filled from the dataset that is its element's authority,
    or ``typed`` by the person who files the form."""

    label: str
    """Title of the field's column, as the office's own form writes it (e.g. 公民身份号码)."""
    element: str | None = None
    """The data element that answers the field (``elements.yaml``); with ``dataset``."""
    dataset: str | None = None
    """The dataset the field is read from: the element's authority, or a dataset whose column of the element
    declares ``from_authority`` (filled from that authority); it holds a column of the form's ``key`` element."""
    typed: bool = False
    """No dataset holds it: the person filing the form types it (counted as not prefilled)."""
    width: float | None = None
    """Width of the field's column in the exported sheet, in Excel's character units."""
    where: Where | None = field(default=None, compare=False)


@registry_value
class FormLayout:
    """How the office files the form as a spreadsheet (``layout``)."""

    sheet: str = spec(default="", optional=True)
    """Name of the sheet (at most 31 characters, none of ``[]:*?/\\``); the form's name when left out."""
    header_rows: tuple[str, ...] = ()
    """Lines above the column titles (the form's title, the filing office), each merged across the columns;
    ``{form}``, ``{scope}`` (the jurisdiction's or subject's code) and ``{date}`` (the day it is filled) are
    replaced."""
    serial: str | None = None
    """Title of a numbering column before the fields (e.g. 序号); no such column when left out."""
    where: Where | None = field(default=None, compare=False)


@registry_value
class Form:
    """A recurring form an office files (``forms/<code>.yaml``), filled from the lake for one subject or for
    every subject in a jurisdiction (``onesource forms fill``)."""

    code: str
    """Code of the form, unique in the registry (e.g. ``dibao_roster``): ``onesource forms fill CODE``."""
    name: str
    """Name of the form in Chinese (e.g. 最低生活保障对象月度花名册)."""
    subject: str = spec(choices=SUBJECT_KINDS)
    """What one filled row is about."""
    key: str
    """The data element that identifies a subject (``resident_id``, ``uscc``, ...): every bound dataset holds a
    column of it, through which the field's row is found."""
    subjects: str
    """The dataset whose rows are the form's subjects (one per key value); its division column places a subject
    in a jurisdiction."""
    fields: tuple[FormField, ...]
    """The form's fields, in the order of its columns."""
    name_en: str = spec(default="", optional=True)
    """Name of the form in English."""
    layout: FormLayout = spec(factory=FormLayout, optional=True)
    """The sheet's name, the rows above the column titles, a numbering column; each column's width is its
    field's."""
    where: Where | None = field(default=None, compare=False)


_Index = TypedDict("_Index", {"department": dict[str, Department], "data element": dict[str, Element],
                             "code list": dict[str, CodeList], "dataset": dict[str, Dataset],
                             "organisation": dict[str, Organisation], "form": dict[str, Form]})
"""What :class:`Registry` looks up by name, name -> value for each kind of entry (its unknown-name errors' nouns)."""


@registry_value
class Registry:
    """Everything the registry folder declares."""

    departments: tuple[Department, ...]
    """The departments (``departments.yaml``)."""
    elements: tuple[Element, ...]
    """The data elements, each with its one authoritative dataset (``elements.yaml``)."""
    code_lists: tuple[CodeList, ...]
    """The code lists, ``NAME: {CODE: LABEL}`` (``elements.yaml``)."""
    datasets: tuple[Dataset, ...]
    """The datasets, one file each (``datasets/<owner>/<name>.yaml``)."""
    forms: tuple[Form, ...] = ()
    """The forms filled from the lake, one file each (``forms/<code>.yaml``)."""
    organisations: tuple[Organisation, ...] = ()
    """The city, its districts and its street offices (``organisations.yaml``), each under its parent."""

    # Lookups by name are indexed once per registry (a city has thousands of datasets; the DAG factory
    # and the KPIs look names up tens of thousands of times). cached_property writes the instance's
    # __dict__ directly, which a frozen dataclass allows.
    @cached_property
    def _index(self) -> _Index:
        return {"department": {d.code: d for d in self.departments}, "data element": {e.name: e for e in self.elements},
                "code list": {c.name: c for c in self.code_lists}, "dataset": {d.name: d for d in self.datasets},
                "organisation": {o.code: o for o in self.organisations},
                "form": {f.code: f for f in self.forms}}

    @staticmethod
    def _lookup(what: str, index: dict[str, _Value], name: str) -> _Value:
        found = index.get(name)
        if found is None:
            from schemas.exceptions import UnknownNameError

            raise UnknownNameError(unknown_name_message(what, name, index))
        return found

    def department(self, code: str) -> Department:
        return self._lookup("department", self._index["department"], code)

    def element(self, name: str) -> Element:
        return self._lookup("data element", self._index["data element"], name)

    def code_list(self, name: str) -> CodeList:
        return self._lookup("code list", self._index["code list"], name)

    def dataset(self, name: str) -> Dataset:
        return self._lookup("dataset", self._index["dataset"], name)

    def organisation(self, code: str) -> Organisation:
        return self._lookup("organisation", self._index["organisation"], code)

    def form(self, code: str) -> Form:
        return self._lookup("form", self._index["form"], code)

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
        """Content hash of the registry: the same registry always gets the same version. Forms are not part
        of it: a form changes no load and no share, and a new version is registered again with the lake."""
        payload = json.dumps(
            [[_plain(x) for x in group] for group in (self.departments, self.elements, self.code_lists, self.datasets)]
            # only when declared: a registry without organisations keeps its version
            + ([[_plain(o) for o in self.organisations]] if self.organisations else []),
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def authority_join(registry: Registry, ds: Dataset, col: Column) -> tuple[Dataset, Column, Column] | None:
    """For a ``from_authority`` column: (authority dataset, this dataset's join column, the authority's key
    column), joining on the authority's single-column key element; None when no such join exists."""
    try:
        authority = registry.dataset(registry.element(col.element or "").authority)
    except KeyError:
        return None
    if len(authority.key) != 1:
        return None
    # a key that is not one of the authority's columns is the registry check's to report, not a KeyError here
    auth_key = next((c for c in authority.columns if c.name == authority.key[0]), None)
    if auth_key is None or not auth_key.element:
        return None
    mine = next((c for c in ds.columns if c.element == auth_key.element and not c.from_authority), None)
    return (authority, mine, auth_key) if mine else None


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
    auth_key = next((c for c in authority.columns if c.name == authority.key[0]), None)
    return authority if auth_key is not None and auth_key.element == col.element else None


def _plain(value: Any) -> dict[str, Any]:
    data = asdict(value)
    _drop_where(data)
    return data


def _drop_where(data: Any) -> None:
    if isinstance(data, dict):
        data.pop("where", None)
        if "division_column" in data and data["division_column"] is None:
            del data["division_column"]  # only when declared: a registry without it keeps its version
        for v in data.values():
            _drop_where(v)
    elif isinstance(data, list | tuple):
        for v in data:
            _drop_where(v)


KNOWN_SHOWN = 30
"""Names an unknown-name error lists; beyond that it says how many more there are and where to see them."""
_WHERE_LISTED = {"dataset": "onesource registry list", "department": "onesource registry list --json",
                 "organisation": "organisations.yaml in the registry",
                 "data element": "elements.yaml in the registry", "code list": "elements.yaml in the registry",
                 "form": "onesource forms list"}


def unknown_name_message(what: str, name: str, names: Iterable[str]) -> str:
    """``unknown dataset 'firm'; did you mean 'firms'? known (3): firms, people, taxes``: the close
    matches first, every name up to :data:`KNOWN_SHOWN`, past that how many more and where they are listed."""
    import difflib

    known = sorted(names)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    guess = f" did you mean {close[0]!r}?" if close else ""
    if not known:
        return f"unknown {what} {name!r}; none is registered yet"
    shown = ", ".join(known[:KNOWN_SHOWN])
    more = (f", and {len(known) - KNOWN_SHOWN} more (all of them: {_WHERE_LISTED.get(what, 'the registry')})"
            if len(known) > KNOWN_SHOWN else "")
    return f"unknown {what} {name!r};{guess} known ({len(known)}): {shown}{more}"
