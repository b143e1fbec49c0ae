"""(being written: see sharing/security/__init__.py)"""

from __future__ import annotations

import argparse


def add_commands(actions: argparse._SubParsersAction) -> None:
    """Adds this module's `onesource security` actions (each sets ``security_fn``)."""
