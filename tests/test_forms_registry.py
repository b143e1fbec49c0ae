"""Form templates in the registry (forms/*.yaml): a bad binding is refused by `onesource registry check` with
the file and line of the field and what to do; a good form loads, round-trips through the registry cache."""

from __future__ import annotations

import copy

import pytest

from schemas import check_registry, load_registry
from tests.helpers import ELEMENTS, dump, firms_dataset, write_registry

TAXES = {
    "name": "taxes", "title": "纳税人", "owner": "tax", "system": "tax_core", "update_cycle": "monthly",
    "share_type": "unconditional", "key": ["uscc"],
    "connector": {"kind": "file", "path": "tax/taxes/*.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "uscc", "source": "纳税人识别号", "element": "uscc", "references": "authority"},
        {"name": "enterprise_name", "source": "纳税人名称", "element": "enterprise_name"},  # a copy, not the source
        {"name": "status", "source": "状态", "element": "enterprise_status", "from_authority": True},
        {"name": "rating", "source": "信用等级", "element": "tax_rating"},
    ],
}
ELEMENTS_PLUS = copy.deepcopy(ELEMENTS)
ELEMENTS_PLUS["elements"].append({"name": "tax_rating", "name_zh": "纳税信用等级", "name_en": "Tax rating",
                                  "type": "string", "authority": "taxes"})


def census(**changes) -> dict:
    form = {"code": "census", "name": "企业普查表", "subject": "enterprise", "key": "uscc", "subjects": "firms",
            "layout": {"sheet": "普查表", "header_rows": ["{form}", "单位：{scope}"], "serial": "序号"},
            "fields": [{"label": "统一社会信用代码", "element": "uscc", "dataset": "firms", "width": 22},
                       {"label": "企业名称", "element": "enterprise_name", "dataset": "firms"},
                       {"label": "登记状态", "element": "enterprise_status", "dataset": "taxes"},
                       {"label": "纳税信用等级", "element": "tax_rating", "dataset": "taxes"},
                       {"label": "从业人数", "typed": True}]}
    form.update(changes)
    return form


def registry_with(root, form: dict):
    write_registry(root, [firms_dataset(), TAXES], elements=ELEMENTS_PLUS)
    path = dump(root / "forms" / f"{form['code']}.yaml", form)
    return path


def field_line(path, label: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if f"label: {label}" in line)


def test_a_good_form_loads_and_survives_the_cache(settings):
    registry_with(settings.registry_dir, census())
    registry, issues = check_registry(settings.registry_dir)
    assert issues == []
    form = registry.form("census")
    assert [f.label for f in form.fields] == ["统一社会信用代码", "企业名称", "登记状态", "纳税信用等级", "从业人数"]
    assert form.layout.serial == "序号" and form.fields[0].width == 22 and form.fields[-1].typed
    cached = load_registry(settings.registry_dir, settings.cache_dir)  # written to the cache
    again = load_registry(settings.registry_dir, settings.cache_dir)  # read from it
    assert cached.forms == again.forms == registry.forms
    assert again.form("census").layout == form.layout


BAD = [
    # (change to the 企业名称 field, words the error must carry)
    ({"dataset": "nope"}, "dataset 'nope' is not registered"),
    ({"element": "nothing"}, "unknown element 'nothing'"),
    ({"dataset": "taxes", "element": "tax_rating", "label": "企业名称"}, None),  # fine: taxes is the authority
    ({"dataset": "taxes"}, "is not the authority of 'enterprise_name' (that is 'firms')"),
    ({"element": None, "dataset": None}, "bind it to an 'element' and the 'dataset'"),
    ({"typed": True}, "a typed field is not read from a dataset"),
    ({"width": -3}, "width must be a number > 0"),
    ({"elemnt": "uscc"}, "did you mean `element`?"),
]


@pytest.mark.parametrize(("change", "words"), BAD)
def test_a_bad_binding_names_the_field_and_its_line(settings, change, words):
    form = census()
    fields = form["fields"]
    fields[1] = {k: v for k, v in {**fields[1], **change}.items() if v is not None}
    path = registry_with(settings.registry_dir, form)
    _, issues = check_registry(settings.registry_dir)
    if words is None:
        assert issues == []
        return
    [issue] = [i for i in issues if words in i.message]
    assert issue.file.endswith("forms/census.yaml")
    assert issue.line in range(field_line(path, "企业名称"), field_line(path, "登记状态"))
    assert "企业名称" in issue.message or "elemnt" in issue.message


@pytest.mark.parametrize(("change", "words"), [
    ({"subject": "planet"}, "subject 'planet' is not one of resident, enterprise, household, street"),
    ({"key": "nothing"}, "key 'nothing' is not a data element"),
    ({"subjects": "nope"}, "subjects dataset 'nope' is not registered"),
    ({"key": "tax_rating"}, "subjects dataset 'firms' has no column of the key element 'tax_rating'"),
    ({"layout": {"sheet": "a/b"}}, "is not a sheet name Excel accepts"),
    ({"fields": []}, "has no fields"),
])
def test_a_bad_form_head_is_refused(settings, change, words):
    registry_with(settings.registry_dir, census(**change))
    _, issues = check_registry(settings.registry_dir)
    assert any(words in i.message and i.file.endswith("forms/census.yaml") and i.line >= 1 for i in issues), issues


def test_a_dataset_without_the_key_cannot_fill_a_field(settings):
    elements = copy.deepcopy(ELEMENTS_PLUS)
    elements["elements"].append({"name": "rating_note", "name_zh": "备注", "name_en": "Note", "type": "string",
                                 "authority": "notes"})
    notes = {**copy.deepcopy(TAXES), "name": "notes", "key": ["note_id"],
             "columns": [{"name": "note_id", "type": "string"}, {"name": "note", "element": "rating_note"}]}
    write_registry(settings.registry_dir, [firms_dataset(), TAXES, notes], elements=elements)
    form = census()
    form["fields"].append({"label": "备注", "element": "rating_note", "dataset": "notes"})
    dump(settings.registry_dir / "forms" / "census.yaml", form)
    _, issues = check_registry(settings.registry_dir)
    assert any("has no column of the form's key element 'uscc'" in i.message for i in issues), issues


def test_duplicate_labels_and_codes(settings):
    form = census()
    form["fields"].append(dict(form["fields"][0]))
    registry_with(settings.registry_dir, form)
    dump(settings.registry_dir / "forms" / "census2.yaml", census())
    _, issues = check_registry(settings.registry_dir)
    messages = [i.message for i in issues]
    assert any("field '统一社会信用代码' appears twice" in m for m in messages), messages
    assert any("duplicate form 'census'" in m for m in messages), messages
