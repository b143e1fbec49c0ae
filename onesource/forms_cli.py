"""``onesource forms list|fill``: the registry's forms, and one filled from the lake as the office's XLSX.

    onesource forms list
    onesource forms fill dibao_roster --jurisdiction 430102001 --out roster.xlsx --as mca
    onesource forms fill enterprise_census --subject 91430102MA... --out census.xlsx --as amr --json

Imports stay light here (no DuckDB, no openpyxl, not even the ``metrics`` package, whose ``__init__`` loads the
KPIs): every ``onesource`` command builds the whole parser, so this lives beside the CLI, not in ``metrics/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    forms = sub.add_parser("forms", help="the registry's forms (forms/*.yaml), filled from the lake as the office's "
                                         "spreadsheet, with the prefill rate")
    actions = forms.add_subparsers(dest="forms_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="every form: subject, fields, how many are bound to an authority")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(forms_fn=cmd_list)
    fill = actions.add_parser("fill", help="fill a form for one subject or every subject in a jurisdiction")
    fill.add_argument("form", help="the form's code (onesource forms list)")
    which = fill.add_mutually_exclusive_group(required=True)
    which.add_argument("--subject", help="one subject's key (a resident ID, a credit code, ...)")
    which.add_argument("--jurisdiction", help="a division code: every subject whose division falls under it")
    fill.add_argument("--out", required=True, help="the .xlsx file to write")
    fill.add_argument("--as", dest="department", required=True,
                      help="the department filling it: its grants, masks and row filters apply")
    fill.add_argument("--user", help="the user filling it (default: the department)")
    fill.add_argument("--json", action="store_true", help="print the fill's summary as JSON")
    fill.set_defaults(forms_fn=cmd_fill)
    forms.set_defaults(fn=lambda args, settings: args.forms_fn(args, settings))


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from metrics.forms import bound_fields
    from schemas import load_registry

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    rows = [{"form": f.code, "name": f.name, "subject": f.subject, "key": f.key, "subjects": f.subjects,
             "fields": len(f.fields), "bound_fields": bound_fields(f),
             "typed": [x.label for x in f.fields if x.typed]} for f in registry.forms]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(f"no forms in {settings.registry_dir / 'forms'} (docs/registry.md: Form file)")
        return 0
    for r in rows:
        print(f"{r['form']}  {r['name']}  ({r['subject']} by {r['key']}, subjects from {r['subjects']}): "
              f"{r['bound_fields']}/{r['fields']} fields from authorities")
    return 0


def cmd_fill(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import ConfigurationError
    from metrics.forms import engine_query, fill, write_xlsx
    from schemas import load_registry
    from sharing.engine import GovernedEngine

    out = Path(args.out)
    if out.suffix.lower() != ".xlsx":
        raise ConfigurationError(f"cannot write {out}: a form is written as .xlsx; name the file FILE.xlsx")
    if not out.absolute().parent.is_dir():
        raise ConfigurationError(f"cannot write {out}: the folder {out.absolute().parent} does not exist")
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    form = registry.form(args.form)
    engine = GovernedEngine(settings, registry)
    query = engine_query(engine, args.department, args.user, purpose=f"form {form.code}")
    filled = fill(registry, form, query, subject=args.subject, jurisdiction=args.jurisdiction)
    write_xlsx(filled, out)
    summary = {**filled.summary(), "file": str(out)}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    rate = "–" if filled.rate is None else f"{filled.rate:.1%}"
    print(f"{form.code} {form.name} for {filled.scope}: {len(filled.subjects)} subject(s), "
          f"{filled.filled}/{filled.cells} cells prefilled ({rate}), written to {out}")
    if filled.typed_fields:
        print(f"still typed: {', '.join(filled.typed_fields)}")
    for label, why in filled.withheld.items():
        print(f"withheld {label}: {why}", file=sys.stderr)
    return 0
