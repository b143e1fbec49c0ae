"""Cross-reference checks of the registry, as an ordered tuple of small rules.

Each rule takes the registry and yields :class:`Issue` values; :data:`RULES` runs them in order.
Per-field problems (YAML syntax, missing fields, unknown types) are found while loading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from schemas.exceptions import Issue
from schemas.formats import FORMAT_RULES
from schemas.model import (
    DIVISION_LEVELS,
    EXCEL_SHEET_FORBIDDEN,
    LOAD_MODES,
    OPEN_ATTRIBUTES,
    REFERENCE_TARGETS,
    SCHEMA_DRIFTS,
    SHARE_TYPES,
    SUBJECT_KINDS,
    UPDATE_CYCLES,
    Form,
    FormField,
    Organisation,
    Registry,
    Where,
    authority_join,
    authority_reference,
)
from schemas.versions import MODES

Rule = Callable[[Registry], Iterator[Issue]]


def _at(where: Where | None, message: str, key: str | None = None) -> Issue:
    """An issue at ``where``: at the line of its ``key`` when the entry wrote that key."""
    if where is not None and key:
        where = where.of(key)
    return Issue(where.file if where else "?", where.line if where else 0, message)


def duplicate_names(reg: Registry) -> Iterator[Issue]:
    """Department codes, element, code list, dataset and column names are each unique."""
    groups = (
        ("department", reg.departments, "code"),
        ("data element", reg.elements, "name"),
        ("code list", reg.code_lists, "name"),
        ("dataset", reg.datasets, "name"),
    )
    for what, items, attr in groups:
        first: dict[str, Where | None] = {}
        for item in items:
            name = getattr(item, attr)
            if name is None:
                continue
            if name in first:
                yield _at(item.where, f"duplicate {what} {name!r} (first declared at {first[name]})")
            else:
                first[name] = item.where
    for ds in reg.datasets:
        for name, n in Counter(c.name for c in ds.columns).items():
            if n > 1:
                col = next(c for c in ds.columns if c.name == name)
                yield _at(col.where, f"dataset {ds.name!r} declares column {name!r} {n} times")
    systems = Counter(s.code for d in reg.departments for s in d.systems)
    for d in reg.departments:
        for s in d.systems:
            if systems[s.code] > 1:
                yield _at(d.where, f"duplicate system code {s.code!r}")


def dataset_owner_and_system(reg: Registry) -> Iterator[Issue]:
    """A dataset's owner is a known department and its system one of that department's systems."""
    departments = {d.code: d for d in reg.departments}
    for ds in reg.datasets:
        dept = departments.get(ds.owner)
        if ds.owner and dept is None:
            yield _at(ds.where, f"dataset {ds.name!r}: unknown owner department {ds.owner!r}", key="owner")
        elif dept and ds.system and ds.system not in {s.code for s in dept.systems}:
            known = ", ".join(s.code for s in dept.systems if s.code) or "none registered"
            yield _at(ds.where, f"dataset {ds.name!r}: system {ds.system!r} is not one of {ds.owner}'s systems ({known})", key="system")


def dataset_columns_and_key(reg: Registry) -> Iterator[Issue]:
    """Columns name known elements, code lists and formats; every dataset has a key made of its columns."""
    elements = {e.name for e in reg.elements}
    code_lists = {c.name for c in reg.code_lists}
    for ds in reg.datasets:
        if not ds.columns:
            yield _at(ds.where, f"dataset {ds.name!r} has no columns")
        for col in ds.columns:
            if col.element and col.element not in elements:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: unknown element {col.element!r}")
            if col.code_list and col.code_list not in code_lists:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: unknown code list {col.code_list!r}")
            if col.format and col.format not in FORMAT_RULES:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: unknown format {col.format!r}")
        if not ds.key:
            yield _at(ds.where, f"dataset {ds.name!r} has no key; declare 'key:' (the columns that identify a record)")
        names = {c.name for c in ds.columns}
        for k in ds.key:
            if k not in names:
                yield _at(ds.where, f"dataset {ds.name!r}: key column {k!r} is not one of its columns", key="key")


def dataset_enums(reg: Registry) -> Iterator[Issue]:
    """Share type, update cycle and load mode take their listed values."""
    for ds in reg.datasets:
        if ds.share_type and ds.share_type not in SHARE_TYPES:
            yield _at(ds.where, f"dataset {ds.name!r}: share_type {ds.share_type!r} is not one of {', '.join(SHARE_TYPES)}", key="share_type")
        if ds.update_cycle and ds.update_cycle not in UPDATE_CYCLES:
            yield _at(ds.where, f"dataset {ds.name!r}: update_cycle {ds.update_cycle!r} is not one of {', '.join(UPDATE_CYCLES)}", key="update_cycle")
        if ds.load_mode not in LOAD_MODES:
            yield _at(ds.where, f"dataset {ds.name!r}: load_mode {ds.load_mode!r} is not one of {', '.join(LOAD_MODES)}", key="load_mode")
        if ds.compatibility not in MODES:
            yield _at(ds.where, f"dataset {ds.name!r}: compatibility {ds.compatibility!r} is not one of {', '.join(MODES)}", key="compatibility")
        if ds.schema_drift not in SCHEMA_DRIFTS:
            yield _at(ds.where, f"dataset {ds.name!r}: schema_drift {ds.schema_drift!r} is not one of {', '.join(SCHEMA_DRIFTS)}", key="schema_drift")
        if ds.open_attribute not in OPEN_ATTRIBUTES:
            yield _at(ds.where, f"dataset {ds.name!r}: open_attribute {ds.open_attribute!r} is not one of "
                                f"{', '.join(OPEN_ATTRIBUTES)}", key="open_attribute")


def referenced_columns(reg: Registry) -> Iterator[Issue]:
    """A column filled from its authority (``from_authority``) names an element owned by another dataset
    and can be joined to it: the dataset holds the authority's key element in a column of its own."""
    elements = {e.name: e for e in reg.elements}
    datasets = {d.name: d for d in reg.datasets}
    for ds in reg.datasets:
        for col in ds.columns:
            if not col.from_authority:
                continue
            el = elements.get(col.element or "")
            if el is None:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: from_authority needs an 'element'")
            elif el.authority == ds.name:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: the dataset is the authority of "
                                     f"{el.name!r}; it collects it, it cannot take it from itself")
            elif el.authority in datasets and authority_join(reg, ds, col) is None:
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: cannot join to {el.authority!r}: "
                                     "the dataset needs a column of that dataset's key element")


def reference_keys(reg: Registry) -> Iterator[Issue]:
    """A column declared ``references: authority`` is the key of its element's authoritative dataset, held
    by another dataset to name the authority's record: the duplicate collection rate does not count it as
    collected, so a declaration that is not such a key is an error, never a quiet exemption."""
    elements = {e.name: e for e in reg.elements}
    datasets = {d.name: d for d in reg.datasets}
    for ds in reg.datasets:
        for col in ds.columns:
            if col.references is None:
                continue
            where = f"dataset {ds.name!r} column {col.name!r}"
            el = elements.get(col.element or "")
            if col.references not in REFERENCE_TARGETS:
                yield _at(col.where, f"{where}: references {col.references!r} is not one of {', '.join(REFERENCE_TARGETS)}")
            elif col.from_authority:
                yield _at(col.where, f"{where}: a from_authority column is filled by the join; it cannot also be "
                                     "the key the join uses (drop 'references')")
            elif el is None:
                yield _at(col.where, f"{where}: references needs an 'element' (the authority's key element)")
            elif el.authority == ds.name:
                yield _at(col.where, f"{where}: the dataset is the authority of {el.name!r}; it references nothing")
            elif el.authority in datasets and authority_reference(reg, ds, col) is None:
                yield _at(col.where, f"{where}: {el.name!r} is not the single-column key of its authority "
                                     f"{el.authority!r}, so this column cannot reference it")


def organisation_tree(reg: Registry) -> Iterator[Issue]:
    """Organisations form one tree by division code: codes are unique, one city and only it has no parent, a parent
    is a known organisation of a higher level, and a code lies under its parent's (starts with the parent's
    significant digits: 430104001 under 430104, 430104 under 430100)."""
    known = {o.code: o for o in reg.organisations}
    first: dict[str, Where | None] = {}
    order = tuple(DIVISION_LEVELS)
    city: Organisation | None = None
    for org in reg.organisations:
        what = f"organisation {org.code!r} ({org.name})"
        if org.code in first:
            yield _at(org.where, f"duplicate organisation {org.code!r} (first declared at {first[org.code]})",
                      key="code")
            continue
        first[org.code] = org.where
        if org.level is None:
            continue  # its code's form was reported when it was read
        if org.level in ("street", "community") and len(org.prefix) != len(org.code):
            # 430104000 reads as 430104: its users would read every row of the district (a street's code
            # ending in 000 is its district's own code, written with a zero group)
            yield _at(org.where, f"{what}: a {org.level}'s code does not end in 000 (that is the code of the "
                                 f"organisation above it, {org.prefix}, whose rows its users would read); give the "
                                 f"{org.level}'s own code", key="code")
            continue
        if org.parent is None:
            if org.level != "city":
                yield _at(org.where, f"{what}: only the city has no parent; name the {order[order.index(org.level) - 1]} "
                                     "it belongs to with 'parent: CODE'")
            elif city is not None:
                # a user of any city-level organisation reads every row of the lake: one city only
                yield _at(org.where, f"{what}: a second city (the city is {city.code}, {city.name}); one "
                                     "organisations.yaml holds one city, its districts and their streets",
                          key="code")
            else:
                city = org
            continue
        parent = known.get(org.parent)
        if parent is None:
            yield _at(org.where, f"{what}: unknown parent {org.parent!r}; declare it in organisations.yaml first "
                                 f"(known: {', '.join(sorted(known)[:12]) or 'none'})", key="parent")
        elif parent.level is not None and (order.index(parent.level) >= order.index(org.level)
                                           or not org.code.startswith(parent.prefix)):
            yield _at(org.where, f"{what}: its code is not under its parent {parent.code} ({parent.name}): a "
                                 f"{org.level}'s code starts with its parent's significant digits {parent.prefix}",
                      key="parent")


def division_columns(reg: Registry) -> Iterator[Issue]:
    """A dataset's ``division_column`` is one of its text columns (the division codes its rows are under)."""
    for ds in reg.datasets:
        name = ds.division_column
        if not name:
            continue
        col = next((c for c in ds.columns if c.name == name), None)
        if col is None:
            yield _at(ds.where, f"dataset {ds.name!r}: division_column {name!r} is not one of its columns "
                                f"({', '.join(c.name for c in ds.columns)})", key="division_column")
        elif col.type != "string":
            yield _at(ds.where, f"dataset {ds.name!r}: division_column {name!r} is a {col.type} column; division "
                                "codes are text (a code's leading digits place it), so declare the column as a "
                                "string", key="division_column")


def share_conditions(reg: Registry) -> Iterator[Issue]:
    """not_shared needs its legal basis; conditional needs its conditions (kpi-definitions.md share types)."""
    for ds in reg.datasets:
        if ds.share_type == "not_shared" and not ds.legal_basis:
            yield _at(ds.where, f"dataset {ds.name!r} is not_shared without a legal_basis; state the law or regulation")
        if ds.share_type == "conditional" and not ds.conditions:
            yield _at(ds.where, f"dataset {ds.name!r} is conditional without 'conditions' (who may use it, for what)")


def one_authority_per_element(reg: Registry) -> Iterator[Issue]:
    """Each element names one existing authoritative dataset, which holds a column of that element."""
    datasets = {d.name: d for d in reg.datasets}
    for el in reg.elements:
        if not el.authority:
            continue
        ds = datasets.get(el.authority)
        if ds is None:
            yield _at(el.where, f"element {el.name!r}: authoritative dataset {el.authority!r} is not registered")
        elif not any(c.element == el.name for c in ds.columns):
            yield _at(el.where, f"element {el.name!r}: authoritative dataset {el.authority!r} has no column for it")
        if el.format and el.format not in FORMAT_RULES:
            yield _at(el.where, f"element {el.name!r}: unknown format {el.format!r}; one of {', '.join(FORMAT_RULES)}")
        if el.code_list and el.code_list not in {c.name for c in reg.code_lists}:
            yield _at(el.where, f"element {el.name!r}: unknown code list {el.code_list!r}")


def connector_settings(reg: Registry) -> Iterator[Issue]:
    """Each connector names a known kind and carries the settings that kind requires."""
    from schemas.kinds import settings_problems

    for ds in reg.datasets:
        for problem in settings_problems(ds.connector.kind, ds.connector.settings):
            yield _at(ds.connector.where or ds.where, f"dataset {ds.name!r} connector: {problem}")


def quality_columns(reg: Registry) -> Iterator[Issue]:
    """A freshness column exists and holds dates; range bounds sit on numeric or date columns."""
    for ds in reg.datasets:
        names = {c.name: c for c in ds.columns}
        fc = ds.quality.freshness_column
        if fc and (fc not in names or names[fc].type not in ("date", "timestamp")):
            yield _at(ds.where, f"dataset {ds.name!r}: freshness_column {fc!r} must be one of its date/timestamp columns")
        for col in ds.columns:
            if (col.min is not None or col.max is not None) and col.type not in ("integer", "decimal", "date", "timestamp"):
                yield _at(col.where, f"dataset {ds.name!r} column {col.name!r}: min/max need a number or date column")


def forms(reg: Registry) -> Iterator[Issue]:
    """A form names its subject kind, a known key element and a subjects dataset holding it; each field is
    either typed or bound to an element and a dataset that is the element's authority (or fills that column
    ``from_authority``) and holds the key element, so the field's row can be found; its sheet name is one Excel
    accepts. Codes are unique."""
    first: dict[str, Where | None] = {}
    for form in reg.forms:
        if form.code in first:
            yield _at(form.where, f"duplicate form {form.code!r} (first declared at {first[form.code]})", key="code")
        first.setdefault(form.code, form.where)
        yield from _form_head(reg, form)
        labels: set[str] = set()
        for f in form.fields:
            if f.label in labels:
                yield _at(f.where, f"form {form.code!r}: field {f.label!r} appears twice; each column has its own title")
            labels.add(f.label)
            yield from _form_field(reg, form, f)


def _form_head(reg: Registry, form: Form) -> Iterator[Issue]:
    what = f"form {form.code!r}"
    if form.subject and form.subject not in SUBJECT_KINDS:
        yield _at(form.where, f"{what}: subject {form.subject!r} is not one of {', '.join(SUBJECT_KINDS)}", key="subject")
    elements = {e.name for e in reg.elements}
    if form.key and form.key not in elements:
        yield _at(form.where, f"{what}: key {form.key!r} is not a data element (elements.yaml)", key="key")
    datasets = {d.name: d for d in reg.datasets}
    subjects = datasets.get(form.subjects or "")
    if form.subjects and subjects is None:
        yield _at(form.where, f"{what}: subjects dataset {form.subjects!r} is not registered", key="subjects")
    elif subjects is not None and form.key and not any(c.element == form.key for c in subjects.columns):
        yield _at(form.where, f"{what}: subjects dataset {form.subjects!r} has no column of the key element "
                              f"{form.key!r}, so it cannot list the form's subjects", key="subjects")
    if not form.fields:
        yield _at(form.where, f"{what} has no fields")
    sheet = form.layout.sheet
    if len(sheet) > 31 or any(ch in EXCEL_SHEET_FORBIDDEN for ch in sheet):
        yield _at(form.layout.where or form.where, f"{what}: layout.sheet {sheet!r} is not a sheet name Excel "
                  f"accepts (at most 31 characters, none of {EXCEL_SHEET_FORBIDDEN})", key="sheet")


def _form_field(reg: Registry, form: Form, f: FormField) -> Iterator[Issue]:
    what = f"form {form.code!r} field {f.label!r}"
    if f.typed:
        if f.element or f.dataset:
            yield _at(f.where, f"{what}: a typed field is not read from a dataset; drop 'element' and 'dataset', "
                               "or 'typed'", key="typed")
        return
    if not f.element or not f.dataset:
        yield _at(f.where, f"{what}: bind it to an 'element' and the 'dataset' that is its authority, or mark it "
                           "'typed: true' (the person filing the form types it)")
        return
    elements, datasets = {e.name: e for e in reg.elements}, {d.name: d for d in reg.datasets}
    el, ds = elements.get(f.element), datasets.get(f.dataset)
    if el is None:
        yield _at(f.where, f"{what}: unknown element {f.element!r}", key="element")
        return
    if ds is None:
        yield _at(f.where, f"{what}: dataset {f.dataset!r} is not registered", key="dataset")
        return
    col = next((c for c in ds.columns if c.element == f.element), None)
    if col is None:
        yield _at(f.where, f"{what}: dataset {f.dataset!r} holds no column of element {f.element!r}", key="dataset")
    elif el.authority != ds.name and not col.from_authority:
        yield _at(f.where, f"{what}: dataset {f.dataset!r} is not the authority of {f.element!r} (that is "
                           f"{el.authority!r}) and its column {col.name!r} is not filled from_authority; bind the "
                           f"field to {el.authority!r}", key="dataset")
    elif form.key and not any(c.element == form.key for c in ds.columns):
        yield _at(f.where, f"{what}: dataset {f.dataset!r} has no column of the form's key element {form.key!r}, "
                           "so no row of it can be found for a subject", key="dataset")


RULES: tuple[Rule, ...] = (
    duplicate_names,
    dataset_owner_and_system,
    dataset_columns_and_key,
    dataset_enums,
    share_conditions,
    one_authority_per_element,
    referenced_columns,
    reference_keys,
    connector_settings,
    quality_columns,
    organisation_tree,
    division_columns,
    forms,
)


def run_checks(reg: Registry, *, after_errors: bool = False) -> list[Issue]:
    """Every cross-check's issues. ``after_errors``: the files already had errors (a required key misspelt
    leaves its field empty in the model), so a check that cannot read such an entry is skipped: its issue
    would be a consequence of one already reported, and the user fixes those first."""
    issues: list[Issue] = []
    for rule in RULES:
        try:
            issues += list(rule(reg))
        except (TypeError, AttributeError, KeyError, ValueError):
            if not after_errors:
                raise
    return issues
