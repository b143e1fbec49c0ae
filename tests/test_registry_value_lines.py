"""A dataset's wrong value is reported at the line of its key (share_type: conditonal on line 7 says :7),
not at the dataset's first line, so a newcomer's editor jumps to it (newcomer walkthrough, issue 20)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import check_registry
from tests.helpers import firms_dataset, write_registry

WRONG = {"share_type": "unconditonal", "update_cycle": "month", "load_mode": "upsrt", "owner": "amx",
         "system": "amr_nope", "compatibility": "BACK", "schema_drift": "evolv", "open_attribute": "开放",
         "key": ["uscc_typo"]}


@settings(max_examples=len(WRONG) * 2, deadline=None)
@given(key=st.sampled_from(sorted(WRONG)))
def test_a_wrong_value_is_reported_at_its_keys_line(tmp_path_factory, key):
    root = write_registry(tmp_path_factory.mktemp("reg") / "registry", [firms_dataset(**{key: WRONG[key]})])
    [path] = (root / "datasets").glob("*/firms.yaml")  # under its owner's folder
    line = next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if text.startswith(f"{key}:"))
    _, issues = check_registry(root)
    found = [str(i) for i in issues if key in i.message or repr(WRONG[key]) in i.message
             or (key == "key" and "uscc_typo" in i.message)]
    assert found, [str(i) for i in issues]
    assert found[0].startswith(f"registry/datasets/{path.parent.name}/firms.yaml:{line}:"), (line, found)
