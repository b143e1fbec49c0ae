"""The README's data-flow map and layout table match the tree: every module it names exists, every function it
names is defined in that module, every package is in the table, and the layers it states are the contract's."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _map() -> str:
    section = README.split("## Where the data flows", 1)[1]
    return section.split("```", 2)[1]


def test_every_module_and_function_the_map_names_exists():
    block = _map()
    named = re.findall(r"(?<![a-z_/.])((?:[a-z_]+/)+(?:(?:\{[a-z_,]+\}|[a-z_]+)\.py)?)(?: \(([a-z_]+)\))?", block)
    assert len(named) >= 20, named
    for path, function in named:
        if "{" in path:
            folder, options = path.split("{")
            paths = [f"{folder}{o}.py" for o in options.split("}")[0].split(",")]
        else:
            paths = [path]
        for p in paths:
            assert (ROOT / p).exists(), f"README map names {p}, which is not in the tree"
            if function:
                tree = ast.parse((ROOT / p).read_text(encoding="utf-8"))
                defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
                assert function in defined, f"README map names {p} ({function}), which it does not define"


def _packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench")}


def test_the_layout_table_lists_every_package_and_the_layers_are_the_contracts():
    listed = set(re.findall(r"^\| `([a-z_]+)/` \|", README, flags=re.M))
    assert _packages() <= listed, _packages() - listed
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layered] = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    layers = [name.strip() for layer in layered for name in layer.split("|")]  # "a | b": side by side
    assert set(layers) == _packages() | {"bench", "dags"}, set(layers) ^ _packages()
    stated = README.split("are layers, each importing only those below it", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"`([a-z_]+)`", stated.split("):", 1)[1]) == layers
