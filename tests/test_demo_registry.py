"""The demo city's registry reads like a real one: every dataset a department shares carries its description."""

from __future__ import annotations

from examples.changsha.city import city_datasets
from examples.changsha.generate import DemoConfig
from examples.changsha.generate import write_registry as write_demo_registry
from schemas import load_registry


def test_every_demo_dataset_has_a_description_naming_what_it_holds(tmp_path):
    write_demo_registry(tmp_path / "registry", DemoConfig())
    registry = load_registry(tmp_path / "registry")
    demo = {d.name for d in city_datasets(DemoConfig().departments)}
    described = {d.name: d.description for d in registry.datasets if d.name in demo}
    assert set(described) == demo
    empty = [name for name, text in described.items() if len(text) < 20]
    assert not empty, f"datasets shown as （无说明） in the portal: {empty}"
    assert len(set(described.values())) == len(described), "two datasets share one description"


def test_a_demo_rerun_keeps_registry_files_edited_by_hand(tmp_path):
    """Defect: a second demo run (another --api-port, scale...) rewrote departments.yaml and elements.yaml, so a
    department or element a newcomer added by hand was gone and its dataset refused. A file edited since the
    demo wrote it is kept, the demo's version written beside it; untouched files follow the demo."""
    import yaml

    from examples.changsha.generate import KEPT_SUFFIX

    root = tmp_path / "registry"
    assert write_demo_registry(root, DemoConfig()) == []
    departments = root / "departments.yaml"
    data = yaml.safe_load(departments.read_text(encoding="utf-8"))
    data["departments"].append({"code": "wlj", "name": "文旅局", "name_en": "Culture and Tourism",
                                "systems": [{"code": "wlj_core", "name": "文旅系统"}]})
    edited = yaml.safe_dump(data, allow_unicode=True)
    departments.write_text(edited, encoding="utf-8")
    elements_before = (root / "elements.yaml").read_text(encoding="utf-8")
    kept = write_demo_registry(root, DemoConfig(api_url="http://127.0.0.1:18999/api"))
    assert kept == [departments]
    assert departments.read_text(encoding="utf-8") == edited  # the newcomer's department is still there
    assert (root / ("departments.yaml" + KEPT_SUFFIX)).exists()
    assert (root / "elements.yaml").read_text(encoding="utf-8") == elements_before
    hotline = next(root.rglob("hotline_tickets.yaml")).read_text(encoding="utf-8")
    assert "18999" in hotline  # a file the newcomer did not touch takes the new run's settings
    assert "wlj" in {d.code for d in load_registry(root).departments}
    assert write_demo_registry(root, DemoConfig(api_url="http://127.0.0.1:18999/api")) == [departments]
