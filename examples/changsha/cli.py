"""``onesource demo``: the demo city's command, contributed to the platform's CLI through the
``onesource.commands`` entry point (pyproject.toml) as any plugin's would be: ``onesource.cli`` imports
nothing of this package (imports run down the layers).

Imports stay light here: every ``onesource`` command that is not one of the platform's own builds its parser
with this one, so the city is imported only when the demo runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from onesource.cli import console, tcp_port

if TYPE_CHECKING:
    from core.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """The ``onesource.commands`` entry point: adds ``demo`` to the ``onesource`` command's subparsers."""
    demo = sub.add_parser("demo", help="build the demo city and load it through Airflow")
    demo.add_argument("--departments", type=int, default=12, help="12 by default, up to 87")
    demo.add_argument("--seed", type=int, default=20261126)
    demo.add_argument("--scale", type=float, default=1.0, help="multiply the demo's row counts")
    demo.add_argument("--api-port", type=tcp_port, default=18345, help="port of the demo hotline's HTTP API")
    demo.set_defaults(fn=cmd_demo, needs_home=False)  # the demo makes the home it loads into


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from examples.changsha.data import DemoConfig
    from examples.changsha.runner import print_summary, run_demo

    config = DemoConfig(departments=args.departments, seed=args.seed, scale=args.scale,
                        api_url=f"http://127.0.0.1:{args.api_port}/api/v1/tickets")
    summary = run_demo(settings, config, console)
    print_summary(console, summary, settings)
    return 0
