"""A date YAML cannot build (2000-13-01 as a column's `min`) is a registry problem with its file and line,
not an "unexpected ValueError" without either."""

from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import check_registry
from tests.helpers import firms_dataset, write_registry


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


@settings(max_examples=20, deadline=None)
@given(year=st.integers(1900, 2099), month=st.integers(1, 19), day=st.integers(1, 39))
def test_a_date_yaml_cannot_build_is_named_with_file_and_line(tmp_path_factory, year, month, day):
    ds = firms_dataset()
    ds["columns"].append({"name": "since", "source": "成立日期", "type": "date", "min": "PLACEHOLDER"})
    root = write_registry(tmp_path_factory.mktemp("reg") / "registry", [ds])
    path = root / "datasets" / "amr" / "firms.yaml"
    text = f"{year:04d}-{month:02d}-{day:02d}"  # unquoted: YAML reads it as a timestamp
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(n for n, s in enumerate(lines, 1) if "PLACEHOLDER" in s)
    path.write_text("\n".join(lines).replace("PLACEHOLDER", text) + "\n", encoding="utf-8")
    _, issues = check_registry(root)
    found = [str(i) for i in issues]
    if _is_date(year, month, day):
        assert found == [], found
    else:
        assert len(found) == 1, found
        assert found[0].startswith(f"registry/datasets/amr/firms.yaml:{line}:"), found
        assert f"'{text}' is not a date" in found[0] and "YYYY-MM-DD" in found[0], found
