"""The demo city's registry reads like a real one: every dataset a department shares carries its description."""

from __future__ import annotations

from onesource.demo.city import city_datasets
from onesource.demo.generate import DemoConfig
from onesource.demo.generate import write_registry as write_demo_registry
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
