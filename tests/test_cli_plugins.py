"""Commands from other packages: the `onesource.commands` entry points (onesource.cli.COMMANDS_GROUP). The demo
city (examples/changsha) is one, so the CLI imports nothing of it; a broken plugin costs its own commands only,
and the platform's own commands parse without scanning the installed packages' metadata."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from onesource import cli
from onesource.cli import COMMANDS_GROUP, main, parser


def _commands(p) -> set[str]:
    [sub] = [a for a in p._actions if a.dest == "command"]
    return set(sub.choices)


def test_the_demo_comes_in_through_its_entry_point():
    [ep] = [e for e in importlib.metadata.entry_points(group=COMMANDS_GROUP) if e.name == "demo"]
    assert ep.value == "examples.changsha.cli:register"
    from examples.changsha.cli import cmd_demo

    args = parser().parse_args(["demo", "--departments", "3", "--api-port", "18999"])
    assert args.fn is cmd_demo and args.needs_home is False
    assert (args.departments, args.api_port, args.seed, args.scale) == (3, 18999, 20261126, 1.0)


@pytest.mark.parametrize(("argv", "plugins"), [
    (None, True), ([], True), (["demo"], True), (["--help"], True), (["-h", "sql"], True), (["nosuch"], True),
    (["sql", "SELECT 1"], False), (["--debug", "status"], False), (["status", "--help"], False),
])
def test_a_command_of_the_platforms_own_parses_without_the_plugins(argv, plugins):
    assert ("demo" in _commands(parser(argv))) is plugins
    assert {"sql", "status", "serve", "forms"} <= _commands(parser(argv))


def test_the_cli_and_a_platform_command_import_nothing_of_the_examples():
    code = ("import json, sys\nfrom onesource.cli import parser\nparser(['status'])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('examples', 'importlib'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout)
    assert not [m for m in loaded if m.startswith("examples")] and "importlib.metadata" not in loaded, loaded


def _register_hello(sub) -> None:
    hello = sub.add_parser("hello", help="a plugin's command")
    hello.add_argument("--homeless", action="store_true")
    hello.set_defaults(fn=lambda args, settings: print(f"hello from {settings.home.name}") or 0)


def _register_homeless(sub) -> None:
    sub.add_parser("hello-anywhere").set_defaults(fn=lambda args, settings: 0, needs_home=False)


@pytest.fixture
def plugins(monkeypatch):
    here = __name__
    points = [importlib.metadata.EntryPoint("broken", "tests.no_such_module:register", COMMANDS_GROUP),
              importlib.metadata.EntryPoint("hello", f"{here}:_register_hello", COMMANDS_GROUP),
              importlib.metadata.EntryPoint("hello", f"{here}:_register_hello", COMMANDS_GROUP),  # found twice
              importlib.metadata.EntryPoint("anywhere", f"{here}:_register_homeless", COMMANDS_GROUP),
              importlib.metadata.EntryPoint("sql", f"{here}:_register_hello", COMMANDS_GROUP)]  # a platform name
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [p for p in points if p.group == group])


def test_a_plugins_command_runs_and_a_broken_one_is_named_not_fatal(plugins, tiny, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    assert main(["hello"]) == 0
    out, err = capsys.readouterr()
    assert out == f"hello from {tiny.home.name}\n"
    assert "command 'broken' (tests.no_such_module:register) did not load: ModuleNotFoundError" in err
    assert err.count("did not load") == 1


def test_a_plugins_command_needs_the_home_unless_it_says_not(plugins, settings, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))  # not made: no home there
    assert main(["hello"]) == 1
    assert f"the OneSource home {settings.home} does not exist" in capsys.readouterr().err
    assert main(["hello-anywhere"]) == 0
    assert "demo" not in cli.NEEDS_NO_HOME  # the demo says so itself (needs_home=False)
