"""The tests' own layout: no test file imports from another; what several share lives in tests/support/,
tests/helpers.py or tests/conftest.py (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _test_modules_imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of each import of a ``tests.test_*`` module, at any depth (imports inside functions too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "tests":
            names = [f"tests.{alias.name}" for alias in node.names]  # from tests import test_x
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):  # relative: from .test_x import y, from . import test_x
            names = [f"tests.{node.module}"] if node.module else [f"tests.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.startswith("tests.test_")]
    return sorted(found)


def test_no_test_file_imports_another():
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 50, files
    offences = [f"tests/{path.name}:{line}: imports {module}"
                for path in files
                for line, module in _test_modules_imported(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offences, ("a test file imports another test file; move what they share to tests/support/ "
                          "(or tests/helpers.py, tests/conftest.py):\n" + "\n".join(offences))


def test_the_support_modules_import_no_test_file():
    modules = [TESTS / "helpers.py", TESTS / "conftest.py", *sorted((TESTS / "support").glob("*.py"))]
    offences = [f"tests/{path.relative_to(TESTS)}:{line}: imports {module}"
                for path in modules
                for line, module in _test_modules_imported(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offences, "\n".join(offences)


def test_the_check_sees_every_form_of_import():
    source = ("from tests.test_portal import sign_in\n"
              "import tests.test_dags\n"
              "def f():\n"
              "    from tests import test_limits, helpers\n"
              "    from .test_faults import x\n"
              "    from . import test_filescan\n"
              "from tests.support.portal import sign_in\n"
              "from tests.helpers import load\n"
              "import testsuite.test_x\n")
    assert _test_modules_imported(ast.parse(source)) == [
        (1, "tests.test_portal"), (2, "tests.test_dags"), (4, "tests.test_limits"), (5, "tests.test_faults"),
        (6, "tests.test_filescan")]
