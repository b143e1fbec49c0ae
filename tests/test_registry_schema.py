"""The registry has a schema: a misspelt key anywhere is refused with file:line:column and the key it
misspells, the JSON Schema written for editors refuses it too, and docs/registry.md lists every key."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from examples.changsha.data import DemoConfig
from examples.changsha.generate import write_registry as write_demo_registry
from onesource.cli import main
from schemas import check_registry
from schemas.reference import generated_part, json_schema, markdown, schema_text
from tests.helpers import firms_dataset, write_registry

REPO = Path(__file__).resolve().parents[1]
LETTERS = "abcdefghijklmnopqrstuvwxyz_"
FREE = {"code_lists", "kwargs"}  # keys below these are data: code list names and codes, a GX expectation's arguments

# A dataset of the helpers' registry that uses the mappings the demo leaves out (expectations, bounds, severities).
RICH = firms_dataset(
    name="firms_rich", load_mode="upsert", description="test", compatibility="full", schema_drift="fail",
    quality={"severity": {"range": "blocking", "volume": "warning"}, "volume_tolerance": 0.3,
             "freshness_column": "founded",
             "expectations": [{"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "staff", "min_value": 0},
                               "blocking": True}]},
)
RICH["columns"][4].update(min=0, max=100000)
RICH["columns"][5].update(min="1949-10-01")
RICH["connector"] = {"kind": "http", "url": "http://127.0.0.1:1/x", "items": "rows", "page_size": 50,
                     "watermark": "updated_at", "timeout": 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """Valid registries: the demo's and the test helpers'."""
    base = tmp_path_factory.mktemp("corpus")
    demo = base / "demo" / "registry"
    write_demo_registry(demo, DemoConfig(departments=12))
    helpers = write_registry(base / "helpers" / "registry", [firms_dataset(), RICH])
    for root in (demo, helpers):
        assert check_registry(root)[1] == [], root
    return [demo, helpers]


def _plain(path: Path) -> object:
    """The file as an editor's YAML server hands it to the JSON Schema: keys text, dates text."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")), default=str))


@functools.cache
def _validator(cls=jsonschema.Draft202012Validator):
    return cls(json_schema())


def _key_sites(root: Path) -> list[tuple[Path, tuple, str, int, int, int, int]]:
    """Every key of a closed mapping in the registry: (file, mapping path, key, line, column, start, end)."""
    sites = []

    def walk(file: Path, node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if not FREE & set(map(str, path)):
                    sites.append((file, path, k.value, k.start_mark.line + 1, k.start_mark.column + 1,
                                  k.start_mark.index, k.end_mark.index))
                walk(file, v, (*path, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(file, item, (*path, i))

    for file in sorted(root.rglob("*.yaml")):
        walk(file, yaml.compose(file.read_text(encoding="utf-8")), ())
    return sites


def _one_edit_away(word: str, key: str) -> bool:
    """``word`` is one dropped, inserted, replaced or swapped (adjacent) character away from ``key``."""
    edits = {key[:i] + key[i + 1:] for i in range(len(key))}
    edits |= {key[:i] + key[i + 1] + key[i] + key[i + 2:] for i in range(len(key) - 1)}
    edits |= {key[:i] + c + key[i + off:] for i in range(len(key) + 1) for c in LETTERS for off in (0, 1)}
    return word in edits


@st.composite
def typos(draw, sites):
    site = draw(st.sampled_from(sites))
    key = site[2]
    op = draw(st.sampled_from(["drop", "swap", "insert"]))
    if op == "insert":
        i = draw(st.integers(0, len(key)))
        typo = key[:i] + draw(st.sampled_from(LETTERS)) + key[i:]
    elif op == "drop":
        i = draw(st.integers(0, len(key) - 1))
        typo = key[:i] + key[i + 1:]
    else:
        assume(len(key) > 1)
        i = draw(st.integers(0, len(key) - 2))
        typo = key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return site, typo


@pytest.fixture(scope="module")
def sites(corpus):
    return [(root, site) for root in corpus for site in _key_sites(root)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_misspelt_key_is_refused_naming_file_line_and_the_key(sites, data):
    index = data.draw(st.integers(0, len(sites) - 1), label="site")
    root, _ = sites[index]
    (file, path, key, line, column, start, end), typo = data.draw(typos([sites[index][1]]), label="typo")
    assume(typo and typo != key)
    # a key YAML reads as text (not yes/no/null), and not another key of the same mapping
    assume(list(yaml.safe_load(f"{typo}: 1")) == [typo])
    siblings = {s[2] for _, s in sites if s[0] == file and s[1] == path}
    assume(typo not in siblings)
    # departments.yaml and elements.yaml are told apart by their top-level keys, the loader by the file's
    # name: a misspelt one of those is left to test_top_level_keys_of_the_shared_files
    assume(path or file.parent != root)
    text = file.read_text(encoding="utf-8")
    assert text[start:end] == key
    try:  # edited in place (the corpus is the module's), and put back whatever happens
        file.write_text(text[:start] + typo + text[end:], encoding="utf-8")

        # the JSON Schema refuses it, at the same mapping; its keys there are the ones a suggestion may name
        errors = [e for e in _validator().iter_errors(_plain(file))
                  if e.validator == "additionalProperties" and typo in e.message]
        assert [tuple(e.absolute_path) for e in errors] == [path], errors
        known = set(errors[0].schema["properties"])
        assert key in known
        closest = {k for k in known if _one_edit_away(typo, k)}

        _, issues = check_registry(root)
        rel = f"registry/{file.relative_to(root)}"
        mine = [i for i in issues if i.file == rel and f"{typo!r}" in i.message and "unknown" in i.message]
        assert len(mine) == 1, issues
        issue = mine[0]
        assert (issue.line, issue.column) == (line, column), (str(issue), line, column)
        assert str(issue).startswith(f"{rel}:{line}:{column}: ")
        suggested = issue.message.split("did you mean `", 1)[1].split("`", 1)[0]
        assert suggested in closest, (str(issue), closest)
        if closest == {key}:
            assert suggested == key
    finally:
        file.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("edit, message", [
    (("load_mode: upsert", "load_mod: upsert"), "unknown key 'load_mod'; did you mean `load_mode`?"),
    (("severity:", "severty:"), "quality: unknown key 'severty'; did you mean `severity`?"),
    (("  min: 0\n", "  minimum: 0\n"), "unknown key 'minimum'; did you mean `min`?"),
    (("  kind: http", "  kidn: http"), "connector: unknown setting 'kidn'; did you mean `kind`?"),
    (("  items: rows", "  item: rows"), "connector: unknown setting 'item'; did you mean `items`?"),
    (("  range: blocking", "  rnage: blocking"), "unknown rule kind 'rnage'; did you mean `range`?"),
])
def test_the_issue_examples(tmp_path, edit, message):
    """The typos of issue 20 (and their kin): each was "registry OK", the load silently taking the default."""
    root = write_registry(tmp_path / "registry", [firms_dataset(), RICH])
    path = root / "datasets" / "amr" / "firms_rich.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(edit[0]) == 1
    path.write_text(text.replace(*edit), encoding="utf-8")
    _, issues = check_registry(root)
    assert any(message in i.message and i.column > 0 for i in issues), [str(i) for i in issues]


def test_every_error_of_a_file_is_reported(tmp_path):
    root = write_registry(tmp_path / "registry", [firms_dataset(), RICH])
    path = root / "datasets" / "amr" / "firms_rich.yaml"
    text = path.read_text(encoding="utf-8")
    for a, b in (("load_mode:", "load_mod:"), ("severity:", "severty:"), ("  min: 0\n", "  minimum: 0\n"),
                 ("  watermark:", "  watermak:")):
        text = text.replace(a, b)
    path.write_text(text, encoding="utf-8")
    found = [str(i) for i in check_registry(root)[1] if "unknown" in i.message]
    assert len(found) == 4, found
    assert all(f.startswith("registry/datasets/amr/firms_rich.yaml:") for f in found)


def test_top_level_keys_of_the_shared_files(tmp_path):
    root = write_registry(tmp_path / "registry")
    for name, a, b in (("departments.yaml", "departments:", "departmets:"), ("elements.yaml", "code_lists:", "codelists:")):
        path = root / name
        path.write_text(path.read_text(encoding="utf-8").replace(a, b), encoding="utf-8")
    found = [str(i) for i in check_registry(root)[1]]
    assert any(f.startswith("registry/departments.yaml:1:1: ") and "did you mean `departments`?" in f for f in found)
    assert any(f.startswith("registry/elements.yaml:") and "did you mean `code_lists`?" in f for f in found), found


@pytest.mark.parametrize("draft", [jsonschema.Draft202012Validator, jsonschema.Draft7Validator])
def test_every_demo_file_validates_against_the_schema(tmp_path, corpus, draft):
    """Every registry file the demo writes (87 departments: every dataset it has) and the helpers' validate;
    draft-07 too, the dialect VS Code's YAML extension validates with."""
    draft.check_schema(json_schema())
    root = tmp_path / "registry"
    write_demo_registry(root, DemoConfig(departments=87))
    files = sorted(root.rglob("*.yaml")) + sorted(corpus[1].rglob("*.yaml"))
    assert len(files) > 90
    validator = _validator(draft)
    for path in files:
        assert [e.message for e in validator.iter_errors(_plain(path))] == [], path
    # and a typo fails it in both dialects
    doc = _plain(root / "datasets" / "amr" / "amr_enterprise_register.yaml")
    doc["load_mod"] = doc.pop("load_mode")
    assert any("load_mod" in e.message for e in validator.iter_errors(doc))


def test_demo_files_name_the_schema_beside_them(tmp_path):
    root = tmp_path / "registry"
    write_demo_registry(root, DemoConfig(departments=3))
    assert json.loads((root / "registry.schema.json").read_text(encoding="utf-8")) == json_schema()
    first = (root / "datasets" / "amr" / "amr_enterprise_register.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../registry.schema.json"
    assert (root / "departments.yaml").read_text(encoding="utf-8").startswith(
        "# yaml-language-server: $schema=registry.schema.json\n")


def test_every_key_has_a_description_and_the_page_is_up_to_date():
    schema = json_schema()

    def props(node):
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                yield key, value
            for key, value in node.items():
                if key != "if":  # a condition's properties are not keys a file writes
                    yield from props(value)
        elif isinstance(node, list):
            for value in node:
                yield from props(value)

    missing = sorted({k for k, v in props(schema) if not v.get("description")})
    assert missing == []
    page = (REPO / "docs" / "registry.md").read_text(encoding="utf-8")
    assert generated_part(page) == markdown(), "run: .venv/bin/python -m schemas.reference docs/registry.md"
    for key in ("load_mode", "sensitivity", "code_list", "format", "min", "max", "path", "share_type", "token_env"):
        assert f"| `{key}` |" in page, key


def test_cli_schema_needs_no_home(tmp_path, monkeypatch, capsys):
    home = tmp_path / "no-home"
    monkeypatch.setenv("ONESOURCE_HOME", str(home))
    out = tmp_path / "registry.schema.json"
    assert main(["registry", "schema", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == schema_text() and not home.exists()
    assert "yaml-language-server: $schema=" in capsys.readouterr().out
    assert main(["registry", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_cli_check_refuses_a_typo_without_a_traceback(tmp_path):
    home = tmp_path / "home"
    root = write_registry(home / "registry", [firms_dataset(), RICH])
    path = root / "datasets" / "amr" / "firms_rich.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("load_mode:", "load_mod:"), encoding="utf-8")
    line = next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "load_mod:" in text)
    proc = subprocess.run([sys.executable, "-m", "onesource.cli", "registry", "check"], capture_output=True, text=True,
                          env={**os.environ, "ONESOURCE_HOME": str(home), "COLUMNS": "200"}, timeout=120, cwd=REPO)
    assert proc.returncode == 1
    assert f"registry/datasets/amr/firms_rich.yaml:{line}:1:" in proc.stderr
    assert "did you mean `load_mode`?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "registry OK" not in proc.stdout


@pytest.mark.parametrize("required", ["code: amr_reg", "code: amr", "name: 市场监督管理局", "name: 登记系统"])
def test_a_misspelt_required_key_is_reported_not_a_crash_of_a_later_check(tmp_path, required):
    """Found by the generated test on CI: a department system's `code` misspelt left the system without a code,
    and the owner/system cross-check crashed (TypeError in a join) instead of listing the unknown key. A check
    that cannot read an entry the files already got wrong is skipped; the typo itself is reported."""
    root = write_registry(tmp_path / "registry", [firms_dataset()])
    departments = root / "departments.yaml"
    text = departments.read_text(encoding="utf-8")
    key, value = required.split(": ")
    typo = key[0] + key[2:]  # one letter dropped
    assert f"{key}: {value}" in text, text
    departments.write_text(text.replace(f"{key}: {value}", f"{typo}: {value}", 1), encoding="utf-8")
    _, issues = check_registry(root)
    assert any(f"unknown key '{typo}'" in i.message and f"did you mean `{key}`" in i.message for i in issues), issues
