"""Connector kinds as data: the settings each kind takes, checked by ``onesource registry check``.

Kept free of heavy imports: the registry check and the DAG files import it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FILE_FORMATS = ("csv", "xlsx", "json", "ndjson", "parquet")
ENCODINGS = ("utf-8", "gbk", "gb18030", "gb2312")
DB_DRIVERS = ("sqlite", "postgres", "mysql")
PLATFORM_PRODUCTS = ("kpi_figures", "kpi_members", "kpi_dataset_status", "kpi_duplicate_pairs", "registry_conformance",
                     "registry_lineage", "data_catalogue", "enterprise_profile", "form_prefill")
"""OneSource's own tables a ``platform`` dataset may name (what metrics.publish.PRODUCTS makes)."""


@dataclass(frozen=True)
class KindSpec:
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    """Groups of optional settings of which at least one must be given (a database's table or query)."""
    doc: str = ""
    settings_doc: dict[str, str] = field(default_factory=dict)
    """setting -> what it means (the registry's JSON Schema and docs/registry.md show it)."""


KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            "file",
            required=("path",),
            optional=("format", "encoding", "delimiter", "sheet", "skip_rows"),
            choices=(("format", FILE_FORMATS), ("encoding", ENCODINGS)),
            doc="files a department drops (glob under the home's sources/ folder); each new file (by sha256) is one load",
            settings_doc={
                "path": "glob of the department's files, relative to $ONESOURCE_HOME/sources/ (e.g. "
                        "tax/tax_taxpayer_register/*.csv) or absolute; each new file (by sha256) is one load",
                "format": "the files' format (by their extension when left out)",
                "encoding": "text encoding of CSV files (gbk and gb2312 are read as gb18030, their superset)",
                "delimiter": "CSV field separator (detected when left out)",
                "sheet": "XLSX: name of the worksheet to read (the first when left out)",
                "skip_rows": "CSV: lines to skip before the header",
            },
        ),
        KindSpec(
            "database",
            required=("driver", "dsn"),
            optional=("table", "query", "watermark"),
            choices=(("driver", DB_DRIVERS),),
            one_of=(("table", "query"),),
            doc="a table or query in a department database; incremental by a watermark column",
            settings_doc={
                "driver": "the database's kind",
                "dsn": "connection string; secrets as ${ENV_VAR}, never a literal password; a sqlite path is "
                       "relative to $ONESOURCE_HOME/sources/",
                "table": "[schema.]table to read (or give a query)",
                "query": "a SELECT to read (or give a table)",
                "watermark": "column whose highest value loaded is remembered: each load reads only newer rows",
            },
        ),
        KindSpec(
            "http",
            required=("url",),
            optional=("items", "page_param", "size_param", "page_size", "since_param", "watermark", "timeout", "token_env"),
            doc="a paginated JSON API; incremental by a watermark field",
            settings_doc={
                "url": "the endpoint, fetched with ?page=N&page_size=M",
                "items": "key of the list of records in each page's JSON object (items by default); a page that is a "
                         "JSON list is the list",
                "page_param": "name of the page number parameter (page by default)",
                "size_param": "name of the page size parameter (page_size by default)",
                "page_size": "records asked per page (500 by default); a shorter page ends the load",
                "since_param": "parameter that passes the last watermark, so the API sends only newer records",
                "watermark": "field whose highest value loaded is remembered: each load keeps only newer records",
                "timeout": "seconds to wait for a page (30 by default)",
                "token_env": "environment variable holding the API's bearer token (never the token itself)",
            },
        ),
        KindSpec(
            "platform",
            required=("product",),
            optional=(),
            choices=(("product", PLATFORM_PRODUCTS),),
            doc="a table OneSource computes itself (the sharing KPIs), published by the metrics DAG",
            settings_doc={"product": "which of OneSource's own tables this is"},
        ),
    )
}


def settings_problems(kind: str, settings: dict[str, Any]) -> list[str]:
    """What is wrong with a connector's settings, as sentences; empty when they are fine."""
    spec = KINDS.get(kind)
    if spec is None:
        return [f"unknown kind {kind!r}; one of {', '.join(KINDS)}"] if kind else [f"missing 'kind' (one of {', '.join(KINDS)})"]
    problems = [f"{kind} connector needs setting {name!r}" for name in spec.required if settings.get(name) in (None, "")]
    for name in settings:
        if name not in spec.required and name not in spec.optional:
            problems.append(f"unknown setting {name!r} for a {kind} connector (known: {', '.join(spec.required + spec.optional)})")
    for name, allowed in spec.choices:
        value = settings.get(name)
        if value is not None and str(value).lower() not in allowed:
            problems.append(f"setting {name}={value!r} is not one of {', '.join(allowed)}")
    for group in spec.one_of:
        if not any(settings.get(name) for name in group):
            problems.append(f"{kind} connector needs {' or '.join(repr(name) for name in group)}")
    if "password" in str(settings.get("dsn", "")).lower():
        problems.append("the dsn holds a password; put it in an environment variable and write ${NAME} in the dsn")
    return problems
