"""Connector kinds as data: the settings each kind takes, checked by ``onesource registry check``.

Kept free of heavy imports: the registry check and the DAG files import it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FILE_FORMATS = ("csv", "xlsx", "json", "ndjson", "parquet")
ENCODINGS = ("utf-8", "gbk", "gb18030", "gb2312")
DB_DRIVERS = ("sqlite", "postgres", "mysql")


@dataclass(frozen=True)
class KindSpec:
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    doc: str = ""


KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            "file",
            required=("path",),
            optional=("format", "encoding", "delimiter", "sheet", "skip_rows"),
            choices=(("format", FILE_FORMATS), ("encoding", ENCODINGS)),
            doc="files a department drops (glob under the home's sources/ folder); each new file (by sha256) is one load",
        ),
        KindSpec(
            "database",
            required=("driver", "dsn"),
            optional=("table", "query", "watermark"),
            choices=(("driver", DB_DRIVERS),),
            doc="a table or query in a department database; incremental by a watermark column",
        ),
        KindSpec(
            "http",
            required=("url",),
            optional=("items", "page_param", "size_param", "page_size", "since_param", "watermark", "timeout", "token_env"),
            doc="a paginated JSON API; incremental by a watermark field",
        ),
        KindSpec(
            "platform",
            required=("product",),
            optional=(),
            choices=(("product", ("kpi_figures", "kpi_members", "kpi_dataset_status", "kpi_duplicate_pairs",
                                  "registry_conformance",
                                  "registry_lineage", "data_catalogue", "enterprise_profile")),),
            doc="a table OneSource computes itself (the sharing KPIs), published by the metrics DAG",
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
    if kind == "database" and not (settings.get("table") or settings.get("query")):
        problems.append("database connector needs 'table' or 'query'")
    if "password" in str(settings.get("dsn", "")).lower():
        problems.append("the dsn holds a password; put it in an environment variable and write ${NAME} in the dsn")
    return problems
