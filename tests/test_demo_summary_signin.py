"""The demo's last lines name a user the demo made: the dashboard's sign-in is the data bureau's own user
(`dsj_bureau`, of the bureau role, in demo-credentials.json), not a `dsj_analyst` nobody can sign in as."""

from __future__ import annotations

from rich.console import Console

from core.config import Settings
from examples.changsha.data import DemoConfig
from examples.changsha.generate import write_registry
from examples.changsha.runner import DemoSummary, print_summary
from onesource.summary import SharedZone, print_shared_zone
from schemas import load_registry


def test_dashboard_line_names_the_bureau_user_the_demo_makes(tmp_path):
    write_registry(tmp_path / "registry", DemoConfig(departments=3))
    # _demo_users names the analyst of the department that owns the platform tables `<code>_bureau`
    bureau = next(d.owner for d in load_registry(tmp_path / "registry").datasets if d.platform)
    summary = DemoSummary(seconds=1.0, datasets=1, published_datasets=1, published_rows=1, loads_this_run={},
                          statuses=[], airflow_exit=0, kpis={"sharing_rate": (0.9, 0.9)}, shared_datasets=1)
    console = Console(record=True, width=400)
    print_summary(console, summary, Settings(home=tmp_path / "home"))
    text = console.export_text()
    assert f"sign in as {bureau}_bureau" in text, text
    assert "_analyst;" not in text and f"sign in as {bureau}_analyst" not in text


def test_status_reads_back_without_the_demos_run(tmp_path):
    """`onesource status` prints the shared zone as the demo's summary starts (onesource.summary), but ran no
    demo: no "demo" title, no "loads this run ... took 0 s"."""
    summary = DemoSummary(seconds=0, datasets=2, published_datasets=1, published_rows=5, loads_this_run={},
                          statuses=[], airflow_exit=0, shared_datasets=1)
    settings = Settings(home=tmp_path / "home")
    outputs = {}
    console = Console(record=True, width=400)
    print_summary(console, summary, settings)
    outputs[False] = console.export_text()
    console = Console(record=True, width=400)
    print_shared_zone(console, SharedZone(datasets=2, published_datasets=1, published_rows=5, statuses=[],
                                          shared_datasets=1), settings)
    outputs[True] = console.export_text()
    assert "OneSource demo: the shared zone" in outputs[False] and "loads this run: none" in outputs[False]
    assert "1 tables with 5 rows published; loads this run" in outputs[False]
    assert "OneSource: the shared zone" in outputs[True] and "demo:" not in outputs[True]
    assert "loads this run" not in outputs[True] and "took" not in outputs[True]
    assert "1/2 datasets shared" in outputs[True] and "1 tables with 5 rows published." in outputs[True]
    # past its title and the run's clause, the demo's summary starts as `onesource status` reads back
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.replace("OneSource demo: the shared zone", "OneSource: the shared zone")
                .replace("; loads this run: none (nothing new: idempotent); took 0 s.", ".").splitlines()]

    assert lines(outputs[False]) == lines(outputs[True])  # no KPIs: nothing of the city's story follows
