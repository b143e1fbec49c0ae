"""Load the registry's YAML files into :mod:`schemas.model` values, keeping file and line.

Layout of a registry folder::

    departments.yaml        departments: [{code, name, name_en, systems: [{code, name}]}]
    elements.yaml           elements: [{name, name_zh, name_en, type, authority, format?, code_list?,
                                        sensitivity?}]
                            code_lists: {NAME: {CODE: LABEL}}
    organisations.yaml      organisations: [{code, name, name_en, parent}]: the city, its districts, their
                            street offices, by division code (optional)
    datasets/**/*.yaml      one dataset per file (see README "Register a new source"); a column may
                            declare ``references: authority`` (schemas.model.Column.references)
    forms/*.yaml            one form per file: code, name, subject, key, subjects, fields, layout
                            (schemas.model.Form; filled by metrics.forms)

Every key of every mapping is one of the model's fields (:mod:`schemas.shape`; docs/registry.md lists them):
another is refused with its file:line:column and the key it most likely misspells, since a misspelt optional
key would otherwise leave its default silently in force. Code list names and codes, and an expectation's
``kwargs``, are data. Loading never stops at the first problem: it gathers every
:class:`~schemas.exceptions.Issue`, then :mod:`schemas.checks` adds the cross-reference checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any

from schemas.exceptions import Issue, RegistryError
from schemas.model import (
    ELEMENT_TYPES,
    RULE_KINDS,
    SEVERITIES,
    CodeList,
    Column,
    ConnectorSpec,
    CustomExpectation,
    Dataset,
    Department,
    Element,
    Form,
    FormField,
    FormLayout,
    Organisation,
    QualitySpec,
    Registry,
    System,
    Where,
    division_level,
)
from schemas.shape import FILES, connector_keys, known_keys, unknown_key_message


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]
    key_cols: dict[str, int]


@functools.cache
def _line_loader() -> type:
    """PyYAML's safe loader (the C one when there is one) making :class:`LineDict` mappings and refusing
    duplicate keys. Built on first use: a registry read from its cache (every CLI query) never imports yaml."""
    import yaml

    class LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
            mapping = LineDict(super().construct_mapping(node, deep=deep))
            mapping.line = node.start_mark.line + 1
            mapping.key_lines = {
                str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)
            }
            mapping.key_cols = {
                str(k.value): k.start_mark.column + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)
            }
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {k.value!r}", k.start_mark
                    )
                seen.add(k.value)
            return mapping

        def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> dt.date:
            # YAML reads 2000-13-01 as a date and PyYAML's datetime() raises a bare ValueError, with no line
            try:
                stamp: dt.date = super().construct_yaml_timestamp(node)  # a date or a datetime (a date too)
                return stamp
            except ValueError as exc:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{node.value!r} is not a date ({exc}); write an existing date as YYYY-MM-DD, "
                    "or quote it to keep it as text", node.start_mark) from exc

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, LineLoader.construct_mapping)
    LineLoader.add_constructor("tag:yaml.org,2002:timestamp", LineLoader.construct_yaml_timestamp)
    return LineLoader


class _Reader:
    """Collects issues while turning YAML mappings into model values."""

    def __init__(self, root: Path):
        self.root = root
        self.issues: list[Issue] = []

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)

    def parse(self, path: Path) -> Any:
        import yaml

        try:
            return yaml.load(path.read_text(encoding="utf-8"), Loader=_line_loader())  # noqa: S506 - safe loader
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            self.issues.append(Issue(self.rel(path), line, f"YAML syntax: {exc.problem or exc}"))
        except (OSError, UnicodeDecodeError) as exc:
            self.issues.append(Issue(self.rel(path), 1, f"cannot read: {exc}"))
        return None

    def issue(self, file: str, line: int, message: str, column: int = 0) -> None:
        self.issues.append(Issue(file, line, message, column))

    def closed(self, node: LineDict, known: tuple[str, ...], file: str, what: str, noun: str = "key") -> list[str]:
        """Report every key of ``node`` that is not in ``known`` (with file:line:column and a "did you
        mean"); returns them. A misspelt optional key would otherwise be ignored: its default applies."""
        unknown = [k for k in node if str(k) not in known]
        for k in unknown:
            self.issue(file, node.key_lines.get(str(k), node.line), f"{what}: {unknown_key_message(k, known, noun)}",
                       getattr(node, "key_cols", {}).get(str(k), 0))
        return unknown

    def field(self, node: LineDict, key: str, file: str, what: str, *, default: Any = ..., kind: type = str) -> Any:
        if key not in node or node[key] is None or node[key] == "":
            if default is ...:
                self.issue(file, node.line, f"{what}: missing required field {key!r}")
                return None
            return default
        value = node[key]
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind):
            self.issue(file, node.key_lines.get(key, node.line), f"{what}: {key!r} must be a {kind.__name__}")
            return None if default is ... else default
        return value

    def mappings(self, value: Any, file: str, line: int, what: str) -> list[LineDict]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, LineDict) for v in value):
            self.issue(file, line, f"{what} must be a list of mappings")
            return []
        return value


def _departments(r: _Reader, path: Path) -> list[Department]:
    doc = r.parse(path)
    file = r.rel(path)
    if not isinstance(doc, LineDict):
        if doc is not None or path.exists():
            r.issue(file, 1, "expected a mapping with a 'departments' list")
        return []
    r.closed(doc, FILES["departments.yaml"], file, path.name)
    out = []
    for node in r.mappings(doc.get("departments"), file, doc.line, "departments"):
        code = r.field(node, "code", file, "department")
        what = f"department {code!r}"
        r.closed(node, known_keys(Department), file, what)
        systems = []
        for s in r.mappings(node.get("systems"), file, node.line, f"{what} systems"):
            r.closed(s, known_keys(System), file, f"{what} system")
            systems.append(System(code=r.field(s, "code", file, f"{what} system"),
                                  name=r.field(s, "name", file, f"{what} system")))
        out.append(
            Department(
                code=code,
                name=r.field(node, "name", file, what),
                name_en=r.field(node, "name_en", file, what, default=""),
                systems=tuple(systems),
                where=Where(file, node.line),
            )
        )
    return out


def _organisations(r: _Reader, path: Path) -> list[Organisation]:
    """``organisations.yaml`` (optional: a registry without it knows only city departments)."""
    if not path.exists():
        return []
    doc = r.parse(path)
    file = r.rel(path)
    if not isinstance(doc, LineDict):
        if doc is not None:
            r.issue(file, 1, "expected a mapping with an 'organisations' list")
        return []
    r.closed(doc, FILES["organisations.yaml"], file, path.name)
    out = []
    for node in r.mappings(doc.get("organisations"), file, doc.line, "organisations"):
        code = r.field(node, "code", file, "organisation")
        what = f"organisation {code!r}"
        r.closed(node, known_keys(Organisation), file, what)
        if code is not None and division_level(code) is None:
            r.issue(file, node.key_lines.get("code", node.line),
                    f"{what}: a division code has 6 digits (GB/T 2260: the city 430100, a district 430104), 9 (a "
                    "street office: its district's 6 and 3 more, 430104001) or 12 (a community); quote it if it "
                    "starts with 0")
        out.append(Organisation(code=code, name=r.field(node, "name", file, what),
                                name_en=r.field(node, "name_en", file, what, default=""),
                                parent=r.field(node, "parent", file, what, default=None),
                                where=Where(file, node.line, tuple(node.key_lines.items()))))
    return out


def _elements(r: _Reader, path: Path) -> tuple[list[Element], list[CodeList]]:
    doc = r.parse(path)
    file = r.rel(path)
    if not isinstance(doc, LineDict):
        if doc is not None:
            r.issue(file, 1, "expected a mapping with 'elements' and 'code_lists'")
        return [], []
    r.closed(doc, FILES["elements.yaml"], file, path.name)
    elements = []
    for node in r.mappings(doc.get("elements"), file, doc.line, "elements"):
        name = r.field(node, "name", file, "element")
        what = f"element {name!r}"
        r.closed(node, known_keys(Element), file, what)
        authority: Any = node.get("authority")  # as written (None or a list are reported), like r.field's values
        if isinstance(authority, list):
            r.issue(
                file,
                node.key_lines.get("authority", node.line),
                f"{what} has {len(authority)} authoritative datasets ({', '.join(map(str, authority))}); "
                "an element has exactly one source: keep one and let the others reference it",
            )
            authority = authority[0] if authority else None
        elif authority is None:
            r.issue(file, node.line, f"{what}: missing required field 'authority' (its one authoritative dataset)")
        etype = r.field(node, "type", file, what)
        if etype is not None and etype not in ELEMENT_TYPES:
            r.issue(file, node.key_lines.get("type", node.line), f"{what}: unknown type {etype!r}; one of {', '.join(ELEMENT_TYPES)}")
        sensitivity = r.field(node, "sensitivity", file, what, default=1, kind=int)
        if sensitivity not in (1, 2, 3, 4):
            r.issue(file, node.key_lines.get("sensitivity", node.line), f"{what}: sensitivity must be 1, 2, 3 or 4")
        elements.append(
            Element(
                name=name,
                name_zh=r.field(node, "name_zh", file, what),
                name_en=r.field(node, "name_en", file, what),
                type=etype,
                authority=authority,
                format=r.field(node, "format", file, what, default=None),
                code_list=r.field(node, "code_list", file, what, default=None),
                sensitivity=sensitivity,
                where=Where(file, node.line),
            )
        )
    code_lists = []
    raw_lists = doc.get("code_lists") or {}
    if not isinstance(raw_lists, LineDict):
        r.issue(file, doc.key_lines.get("code_lists", doc.line), "code_lists must be a mapping NAME: {CODE: LABEL}")
        raw_lists = LineDict()
    for name, codes in raw_lists.items():
        line = raw_lists.key_lines.get(name, raw_lists.line)
        if not isinstance(codes, dict) or not codes:
            r.issue(file, line, f"code list {name!r} must be a non-empty mapping CODE: LABEL")
            continue
        code_lists.append(CodeList(name=name, codes={str(k): str(v) for k, v in codes.items()}, where=Where(file, line)))
    return elements, code_lists


def _columns(r: _Reader, node: LineDict, file: str, what: str, element_types: dict[str, str]) -> list[Column]:
    out = []
    for c in r.mappings(node.get("columns"), file, node.key_lines.get("columns", node.line), f"{what} columns"):
        name = r.field(c, "name", file, f"{what} column")
        cwhat = f"{what} column {name!r}"
        r.closed(c, known_keys(Column), file, cwhat)
        element = r.field(c, "element", file, cwhat, default=None)
        ctype = r.field(c, "type", file, cwhat, default=None)
        if ctype is None:
            # A column mapped to an element takes the element's type; an unknown element is
            # reported by the cross-reference check, so fall back quietly here.
            ctype = element_types.get(element or "", "string" if element else None)
            if ctype is None:
                r.issue(file, c.line, f"{cwhat}: needs an 'element' or a 'type'")
                ctype = "string"
        elif ctype not in ELEMENT_TYPES:
            r.issue(file, c.key_lines.get("type", c.line), f"{cwhat}: unknown type {ctype!r}; one of {', '.join(ELEMENT_TYPES)}")
            ctype = "string"
        out.append(
            Column(
                name=name,
                source=str(c.get("source") or name),
                type=ctype,
                element=element,
                required=bool(c.get("required", False)),
                code_list=r.field(c, "code_list", file, cwhat, default=None),
                format=r.field(c, "format", file, cwhat, default=None),
                min=_bound(r, c, "min", file, cwhat),
                max=_bound(r, c, "max", file, cwhat),
                from_authority=bool(c.get("from_authority", False)),
                references=r.field(c, "references", file, cwhat, default=None),
                where=Where(file, c.line),
            )
        )
    return out


def _bound(r: _Reader, node: LineDict, key: str, file: str, what: str) -> Any:
    value = node.get(key)
    if value is None or isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        pass
    r.issue(file, node.key_lines.get(key, node.line), f"{what}: {key} must be a number or a date")
    return None


def _quality(r: _Reader, node: LineDict, file: str, what: str) -> QualitySpec:
    q = node.get("quality")
    if q is None:
        return QualitySpec()
    line = node.key_lines.get("quality", node.line)
    if not isinstance(q, LineDict):
        r.issue(file, line, f"{what}: 'quality' must be a mapping (severity, volume_tolerance, freshness_column, "
                            "expectations)")
        return QualitySpec()
    r.closed(q, known_keys(QualitySpec), file, f"{what} quality")
    severity = q.get("severity") or {}
    if not isinstance(severity, dict):
        r.issue(file, q.key_lines.get("severity", q.line), f"{what}: quality.severity must map rule kinds to "
                                                            "blocking or warning")
        severity = {}
    if isinstance(severity, LineDict):
        r.closed(severity, tuple(RULE_KINDS), file, f"{what} quality.severity", noun="rule kind")
    for rule, level in severity.items():
        sline = severity.key_lines.get(rule, q.line) if isinstance(severity, LineDict) else q.line
        if level not in SEVERITIES:
            r.issue(file, sline, f"{what}: severity of {rule!r} must be blocking or warning, not {level!r}")
    custom = []
    for e in r.mappings(q.get("expectations"), file, q.key_lines.get("expectations", q.line), f"{what} expectations"):
        etype = r.field(e, "type", file, f"{what} expectation")
        r.closed(e, known_keys(CustomExpectation), file, f"{what} expectation {etype!r}")
        kwargs = e.get("kwargs") or {}
        if etype and not re.fullmatch(r"Expect[A-Za-z]+", str(etype)):
            r.issue(file, e.line, f"{what}: expectation type {etype!r} is not a GX expectation class name")
        if not isinstance(kwargs, dict):
            r.issue(file, e.line, f"{what}: expectation kwargs must be a mapping")
            kwargs = {}
        custom.append(CustomExpectation(type=str(etype), kwargs=dict(kwargs), blocking=bool(e.get("blocking", False)),
                                        where=Where(file, e.line)))
    tolerance = q.get("volume_tolerance", 0.5)
    if not isinstance(tolerance, int | float) or tolerance < 0:
        r.issue(file, q.key_lines.get("volume_tolerance", q.line), f"{what}: volume_tolerance must be a number >= 0")
        tolerance = 0.5
    return QualitySpec(severity={str(k): str(v) for k, v in severity.items()}, volume_tolerance=float(tolerance),
                       freshness_column=q.get("freshness_column"), expectations=tuple(custom))


def _dataset(r: _Reader, path: Path, element_types: dict[str, str]) -> Dataset | None:
    node = r.parse(path)
    file = r.rel(path)
    if node is None:
        return None
    if not isinstance(node, LineDict):
        r.issue(file, 1, "a dataset file holds one mapping (name, owner, connector, columns, key, ...)")
        return None
    name = r.field(node, "name", file, "dataset")
    what = f"dataset {name!r}"
    r.closed(node, known_keys(Dataset), file, what)
    conn = node.get("connector")
    if not isinstance(conn, LineDict):
        r.issue(file, node.key_lines.get("connector", node.line), f"{what}: missing 'connector' mapping (kind and settings)")
        connector = ConnectorSpec(kind="", settings={}, where=Where(file, node.line))
    else:
        # reported here with its column; the kind's own check (schemas.kinds) sees only known settings
        unknown = r.closed(conn, connector_keys(conn.get("kind")), file, f"{what} connector", noun="setting")
        settings = {k: v for k, v in conn.items() if k != "kind" and k not in unknown}
        connector = ConnectorSpec(kind=str(conn.get("kind") or ""), settings=settings, where=Where(file, conn.line))
    key = node.get("key")
    key = (key,) if isinstance(key, str) else tuple(key or ())
    return Dataset(
        name=name,
        title=r.field(node, "title", file, what, default=name or ""),
        owner=r.field(node, "owner", file, what),
        system=r.field(node, "system", file, what),
        connector=connector,
        columns=tuple(_columns(r, node, file, what, element_types)),
        key=key,
        update_cycle=r.field(node, "update_cycle", file, what),
        share_type=r.field(node, "share_type", file, what),
        load_mode=r.field(node, "load_mode", file, what, default="snapshot"),
        conditions=r.field(node, "conditions", file, what, default=None),
        legal_basis=r.field(node, "legal_basis", file, what, default=None),
        description=r.field(node, "description", file, what, default=""),
        quality=_quality(r, node, file, what),
        compatibility=str(r.field(node, "compatibility", file, what, default="BACKWARD")).upper(),
        schema_drift=r.field(node, "schema_drift", file, what, default="evolve"),
        open_attribute=r.field(node, "open_attribute", file, what, default="不予开放"),
        division_column=r.field(node, "division_column", file, what, default=None),
        where=Where(file, node.line, tuple(node.key_lines.items())),
    )


def _form(r: _Reader, path: Path) -> Form | None:
    node = r.parse(path)
    file = r.rel(path)
    if node is None:
        return None
    if not isinstance(node, LineDict):
        r.issue(file, 1, "a form file holds one mapping (code, name, subject, key, subjects, fields, layout)")
        return None
    code = r.field(node, "code", file, "form")
    what = f"form {code!r}"
    r.closed(node, known_keys(Form), file, what)
    fields = []
    for f in r.mappings(node.get("fields"), file, node.key_lines.get("fields", node.line), f"{what} fields"):
        label = r.field(f, "label", file, f"{what} field")
        fwhat = f"{what} field {label!r}"
        r.closed(f, known_keys(FormField), file, fwhat)
        width = f.get("width")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int | float) or width <= 0):
            r.issue(file, f.key_lines.get("width", f.line), f"{fwhat}: width must be a number > 0 (Excel's "
                                                              "character units)")
            width = None
        typed = f.get("typed", False)
        if not isinstance(typed, bool):
            r.issue(file, f.key_lines.get("typed", f.line), f"{fwhat}: typed must be true or false")
            typed = False
        fields.append(FormField(label=label, element=r.field(f, "element", file, fwhat, default=None),
                                dataset=r.field(f, "dataset", file, fwhat, default=None), typed=typed,
                                width=float(width) if width is not None else None,
                                where=Where(file, f.line, tuple(f.key_lines.items()))))
    return Form(code=code, name=r.field(node, "name", file, what), name_en=r.field(node, "name_en", file, what, default=""),
                subject=r.field(node, "subject", file, what), key=r.field(node, "key", file, what),
                subjects=r.field(node, "subjects", file, what), fields=tuple(fields),
                layout=_layout(r, node, file, what), where=Where(file, node.line, tuple(node.key_lines.items())))


def _layout(r: _Reader, node: LineDict, file: str, what: str) -> FormLayout:
    lay = node.get("layout")
    if lay is None:
        return FormLayout()
    if not isinstance(lay, LineDict):
        r.issue(file, node.key_lines.get("layout", node.line), f"{what}: 'layout' must be a mapping (sheet, "
                                                                "header_rows, serial)")
        return FormLayout()
    r.closed(lay, known_keys(FormLayout), file, f"{what} layout")
    rows = lay.get("header_rows") or []
    if isinstance(rows, str):
        rows = [rows]
    if not isinstance(rows, list) or not all(isinstance(x, str | int | float) for x in rows):
        r.issue(file, lay.key_lines.get("header_rows", lay.line), f"{what}: layout.header_rows must be a list of "
                                                                    "lines of text")
        rows = []
    return FormLayout(sheet=r.field(lay, "sheet", file, f"{what} layout", default=""),
                      header_rows=tuple(str(x) for x in rows),
                      serial=r.field(lay, "serial", file, f"{what} layout", default=None),
                      where=Where(file, lay.line, tuple(lay.key_lines.items())))


def read_registry(root: Path) -> tuple[Registry, list[Issue]]:
    """Read every registry file below ``root``; return what could be read and all issues found."""
    root = Path(root)
    r = _Reader(root)
    if not root.is_dir():
        r.issue(str(root), 1, "registry folder not found; run `onesource demo` or point ONESOURCE_HOME at a home")
        return Registry((), (), (), ()), r.issues
    departments = _departments(r, root / "departments.yaml")
    elements, code_lists = _elements(r, root / "elements.yaml")
    organisations = _organisations(r, root / "organisations.yaml")
    element_types = {e.name: e.type for e in elements if e.name and e.type}
    datasets = []
    for path in sorted((root / "datasets").rglob("*.y*ml")):
        ds = _dataset(r, path, element_types)
        if ds is not None:
            datasets.append(ds)
    forms = [f for f in (_form(r, path) for path in sorted((root / "forms").glob("*.y*ml"))) if f is not None]
    registry = Registry(tuple(departments), tuple(elements), tuple(code_lists), tuple(datasets), tuple(forms),
                        organisations=tuple(organisations))
    return registry, r.issues


def check_registry(root: Path) -> tuple[Registry, list[Issue]]:
    """Read and cross-check the registry: every issue, each with file and line."""
    from schemas.checks import run_checks

    registry, issues = read_registry(root)
    if not any(i.message.startswith(("YAML syntax", "cannot read")) for i in issues):
        # Cross-references are only meaningful once every file parsed: a dataset lost to a
        # syntax error would otherwise show up again as "not registered" everywhere.
        issues = issues + run_checks(registry, after_errors=bool(issues))
    return registry, sorted(issues, key=lambda i: (i.file, i.line, i.column, i.message))


def load_registry(root: Path, cache_dir: Path | None = None) -> Registry:
    """The registry below ``root``; raises :class:`RegistryError` if it has any issue.

    With ``cache_dir`` (``Settings.cache_dir``: ``$ONESOURCE_HOME/cache``) a valid registry is cached
    there as JSON (:mod:`schemas.cache`), keyed by every file's path, size and mtime: Airflow re-parses
    the DAG file every few seconds, and 2,000 dataset files take seconds to read; an unchanged registry
    then loads in a fraction of that. Any edit changes the key. Without it, the files are read."""
    root = Path(root)
    if cache_dir is None:
        return _checked(root)
    from schemas import cache

    key = _cache_key(root)
    entry = cache.path_for(Path(cache_dir), key)
    known = _LOADED.get(key)
    if known is not None and known[1] == _identity(entry):
        return known[0]
    registry = cache.read(Path(cache_dir), key)
    if registry is None:
        registry = _checked(root)
        cache.write(Path(cache_dir), key, registry)
    _LOADED.clear()  # one registry per process: the one its files hold now
    _LOADED[key] = (registry, _identity(entry))
    return registry


_LOADED: dict[str, tuple[Registry, tuple[int, ...] | None]] = {}
"""The cache key -> the registry and its cache entry's identity, in this process: a load task reads the
registry twice (its DAG file's parse, then the load), and a task process forked from a preloaded one
(onesource.preload) finds it here (at 2,000 datasets, ~0.3 s each time from the cache file). The same key
means the same registry files; an entry changed since (rewritten, or planted) is read again, as checked."""


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _checked(root: Path) -> Registry:
    registry, issues = check_registry(root)
    if issues:
        raise RegistryError(issues)
    return registry


def _cache_key(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256(str(root.resolve()).encode())
    code = sorted(Path(__file__).parent.glob("*.py"))  # a new field in the model must not meet an old entry
    for path in code:
        digest.update(f"{path.name}\0{path.stat().st_mtime_ns}\n".encode())
    for path in sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.yml")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]
