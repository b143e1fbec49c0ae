"""``onesource security ...``: the subcommands of the emergency-response modules, each added by its module.

Imports stay light here and in each module's ``add_commands`` (no DuckDB, no pyarrow): every ``onesource``
command builds the whole parser.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    from sharing.security import alerts, freeze, replay

    sec = sub.add_parser("security", help="emergency response: alerts on misuse, freeze a user, department or "
                                          "dataset everywhere, rotate keys, who saw a record (docs/security.md)")
    actions = sec.add_subparsers(dest="security_command", required=True, metavar="ACTION")
    for module in (alerts, freeze, replay):
        module.add_commands(actions)
    sec.set_defaults(fn=cmd_security)


def cmd_security(args: argparse.Namespace, settings: Settings) -> int:
    return args.security_fn(args, settings)
