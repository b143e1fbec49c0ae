"""``onesource security rotate-keys``: a new audit key, and new encryption keys for an encrypted lake's files.

(being written)
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onesource.config import Settings


def add_commands(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("rotate-keys", help="rotate the audit key (the chain stays verifiable) and, when the lake "
                                               "is encrypted, rewrite its tables' files under new keys")
    p.add_argument("--by", help="who acts (default: $USER)")
    p.set_defaults(security_fn=cmd_rotate_keys)


def cmd_rotate_keys(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError
