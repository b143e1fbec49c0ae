"""One module owns the ledger (issue 22): only ``lakehouse/ledger.py`` names the ``lake.ops.*`` tables. Every other
module reads them through ``ledger.ref(table)`` (SQL it writes itself) or a typed reader of the ledger, so a table
or schema renamed, or a table name mistyped, is one place to change and fails before any SQL runs.

The scan reads each Python file of the project outside ``tests/`` (AST: docstrings may describe ``ops.loads``;
code, string constants and f-string parts may not): importing or using a name ``OPS``, a string ``"ops"``, a
qualified ``.ops.`` and ``ops.<table>`` / ``ops.{...}`` all count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lakehouse import ledger

ROOT = Path(__file__).resolve().parents[1]
OWNER = "lakehouse/ledger.py"
SKIPPED = {"tests", "web", "docs", "build", "dist"}
"""Folders of the checkout that hold no module of the platform (the tests spell the tables on purpose)."""

PENDING: dict[str, str] = {}
"""Modules that still name the ledger's tables, each with the reason; an entry with nothing left to find fails, so
the list only shrinks. Hint strings shown to users are built with ``ledger.ref`` too: none is allowed here."""

_SPELLED = re.compile(r"\.ops\.|(?<![\w.])ops\.(?:" + "|".join(ledger.TABLES) + r")\b|(?<![\w.])ops\.(?:\{|$)")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are documentation: a bare string statement (module, class, function and
    attribute docstrings)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def spellings(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place ``source`` names the ledger's schema or one of its tables outside documentation."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "OPS" for a in node.names):
            found.append((node.lineno, f"imports OPS from {node.module}"))
        elif (isinstance(node, ast.Name) and node.id == "OPS") or (isinstance(node, ast.Attribute) and node.attr == "OPS"):
            found.append((node.lineno, "uses OPS"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value == "ops" or _SPELLED.search(node.value):
                found.append((node.lineno, f"spells {node.value.strip()[:80]!r}"))
    return sorted(set(found))


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not any(part.startswith(".") or part in SKIPPED for part in p.relative_to(ROOT).parts[:-1]))


def test_only_the_ledger_names_its_tables():
    found = {}
    for path in _modules():
        name = path.relative_to(ROOT).as_posix()
        if name != OWNER:
            hits = spellings(path.read_text(encoding="utf-8"))
            if hits:
                found[name] = hits
    offending = {name: hits for name, hits in found.items() if name not in PENDING}
    assert not offending, (
        "only lakehouse/ledger.py names the ledger's tables; read one with ledger.ref('<table>') or a reader of "
        "lakehouse.ledger instead:\n" + "\n".join(f"  {name}:{line}: {what}" for name, hits in offending.items()
                                                  for line, what in hits))
    done = sorted(set(PENDING) - set(found))
    assert not done, f"no longer names the ledger's tables: remove {done} from PENDING"


@pytest.mark.parametrize("source", [
    'from lakehouse.lake import CATALOG, OPS, Lake',
    'from lakehouse.ledger import OPS as SCHEMA',
    'from lakehouse import ledger\nx = ledger.OPS',
    'sql = f"SELECT * FROM {CATALOG}.{OPS}.loads"',
    'sql = "SELECT * FROM lake.ops.grants"',
    'sql = f"SELECT * FROM {CATALOG}.ops.{table}"',
    'hint = "SELECT * FROM ops.quality_rows WHERE load_id = ?"',
    'hint = f"SELECT * FROM ops.{table} WHERE 1"',
    'names = lake.tables("ops")',
    'p.add_parser("alerts", help="list alerts (ops.security_alerts)")',
    'def f():\n    """Doc."""\n    return "FROM ops.users"',
])
def test_the_scan_finds_each_way_of_spelling_a_table(source):
    assert spellings(source), source


@pytest.mark.parametrize("source", [
    '"""Rows of ``ops.loads`` and ``ops.quality_runs``."""',
    'def f():\n    """Reads ``lake.ops.users``."""\n    return ledger.ref("users")',
    'X = 1\n"""Attribute docstring naming ops.grants."""',
    'sql = f"SELECT * FROM {ledger.ref(\'loads\')} WHERE status = \'published\'"',
    'sql = f"SELECT * FROM {CATALOG}.{SHARED}.firms"',
    'note = "the shop stops.loads of text, devops.grants, shops.users"',
])
def test_the_scan_leaves_documentation_and_other_names_alone(source):
    assert not spellings(source), source
