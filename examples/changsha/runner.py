"""`onesource demo`: build the demo city and load it through Airflow, end to end.

1. write the registry and every department's extract (deterministic: a rerun rewrites nothing);
2. check the registry;
3. start the hotline's HTTP API (a department system the connectors call);
4. write months of simulated history into the ledgers (examples.changsha.history) and publish their KPIs;
5. run the generated ``onesource_ingest_all`` DAG with ``airflow dags test`` (a real DAG run): every
   load, then 多元校核, then this month's KPIs;
6. summarise from the lake itself: datasets and rows published, loads failed and why, the KPIs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core.config import Settings
from core.errors import ConfigurationError
from examples.changsha.api import TOKEN_ENV, serve
from examples.changsha.city import BUREAU as BUREAU_DEPARTMENT
from examples.changsha.city import city_datasets
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from examples.changsha.history import publish_history, simulate
from lakehouse import ledger
from lakehouse.lake import CATALOG, Lake
from metrics.kpis import Period, sharing_statuses
from metrics.loads import DatasetStatus, dataset_statuses
from metrics.publish import publish_periods
from onesource import airflow_cli
from onesource.dagfactory import ALL_DAG_ID
from onesource.summary import SharedZone, print_shared_zone
from quality.consistency import latest_rates
from schemas import load_registry


@dataclass(frozen=True)
class DemoSummary:
    seconds: float
    datasets: int
    published_datasets: int
    published_rows: int
    loads_this_run: dict[str, int]
    statuses: list[DatasetStatus]
    airflow_exit: int
    warnings: list[tuple] = field(default_factory=list)
    """(dataset, check, column, failing records) of published loads that carry a warning."""
    consistency: list[tuple] = field(default_factory=list)
    """(dataset, element, authority, compared, equal) of the last consistency run."""
    kpis: dict[str, tuple] = field(default_factory=dict)
    """KPI -> (value, target), city-wide, this month."""
    shared_datasets: int | None = None
    """Datasets that count as shared now, by the sharing rate's own rule (metrics.kpis.sharing_reason)."""
    redelivered: list[str] = field(default_factory=list)
    """Datasets quarantined for the demo's injected blocking defects, corrected and sent again."""
    story: dict[str, tuple] = field(default_factory=dict)
    """KPI -> (first period, its value, this period's value, target), city-wide: baseline -> now."""
    jurisdictions: list[tuple] = field(default_factory=list)
    """(user, organisation code, its name, rows of the jurisdiction grant's dataset it reads) of the demo's
    district and street users."""
    subscription: dict | None = None
    """数据回流: the street user's subscription and its delivery (examples.changsha.subscriptions), or why skipped."""


def all_dag_tasks(registry) -> int:
    """Tasks of the ``onesource_ingest_all`` DAG (onesource.dagfactory): a load per source dataset, then
    consistency and metrics. Counted here so the demo needs no Airflow import; a test checks it against the
    DAG itself."""
    return len(registry.source_datasets) + 2


class TaskCount:
    """Tasks of a DAG run that have ended, each counted once however many attempts it took (a retried
    task ends again under the same id); the total grows if the run shows more tasks than expected, so the
    progress never reads "17/15"."""

    def __init__(self, expected: int):
        self.expected = expected
        self.ended: set[str] = set()

    def done(self, task_id: str) -> None:
        self.ended.add(task_id)

    @property
    def completed(self) -> int:
        return len(self.ended)

    @property
    def total(self) -> int:
        return max(self.expected, self.completed)


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def run_demo(settings: Settings, config: DemoConfig, console: Console) -> DemoSummary:
    started, t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None), time.monotonic()
    check_api_port(config)
    datasets = city_datasets(config.departments)
    with _progress(console) as progress:
        gen = progress.add_task(f"[1/4] demo city: {config.departments} departments, {len(datasets)} extracts",
                                total=len(datasets))
        kept = generate_city(settings, config, progress=lambda _: progress.advance(gen)).get("registry_kept", [])
        progress.update(gen, completed=len(datasets))
    for path in kept:
        console.print(f"[yellow]kept your edited {path}[/]: the demo's version is beside it ({Path(path).name}"
                      ".demo); merge what you need of it, or delete your file to take the demo's", highlight=False)
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    console.print(f"[2/4] registry OK: {len(registry.departments)} departments, {len(registry.elements)} data "
                  f"elements, {len(registry.datasets)} datasets (version {registry.version})")
    with Lake(settings.lake) as lake:  # also creates the zones once, before parallel tasks race to do it
        with console.status(f"history: simulating {config.history_months} months before this one"):
            periods = simulate(lake, registry, config.history_months)
            # each month with the registry of its own month; the DAG's metrics task redoes the last one
            # with today's registry (the same by then)
            publish_history(lake, registry, periods[:-1])
    console.print(f"history: {config.history_months} months simulated ({periods[0].label} to {periods[-1].label}; "
                  "load ids start with 'hist-'), their KPIs published")
    reports = settings.reports_dir
    # the hotline API's token: new each run unless given; Airflow gets it by environment only
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    server = _start_api(settings, config, token)
    try:
        with console.status("[3/4] preparing Airflow (first run: `airflow db migrate`)"):
            migrated = airflow_cli.ensure_db(settings, reports / "airflow-db-migrate.log")
        console.print(f"[3/4] Airflow home {settings.airflow_home} " + ("created" if migrated else "ready"))
        with _progress(console) as progress:
            tasks = TaskCount(all_dag_tasks(registry))
            task = progress.add_task(f"[4/4] Airflow DAG run {ALL_DAG_ID}", total=tasks.total)

            def task_done(task_id: str) -> None:
                tasks.done(task_id)
                progress.update(task, total=tasks.total, completed=tasks.completed)

            code = airflow_cli.dags_test(settings, ALL_DAG_ID, reports / f"airflow-{ALL_DAG_ID}.log",
                                         on_task_done=task_done, secrets={TOKEN_ENV: token})
            # the run is over: tasks it never started (after a failed upstream) are done too
            progress.update(task, completed=tasks.total)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    _demo_users(settings, registry)
    jurisdictions = _demo_jurisdictions(settings, registry)
    _demo_requests(settings, registry)
    redelivered = _redeliver_corrected(settings, config, registry)
    subscription = _demo_subscription(settings, registry)
    with Lake(settings.lake, read_only=True) as lake:
        statuses = dataset_statuses(lake, registry)
        shared = sharing_statuses(lake, registry, tz=settings.city_timezone)
        this_run = dict(Counter(load.status for load in ledger.loads_since(lake.con, started)))
        warnings = lake.con.execute(
            f"""SELECT r.dataset, r.check_name, r.column_name, r.unexpected_count
                FROM {ledger.ref('quality_results')} r JOIN {ledger.ref('quality_runs')} q USING (load_id)
                WHERE q.passed AND NOT r.success AND r.skipped IS NULL
                  AND q.run_at = (SELECT max(run_at) FROM {ledger.ref('quality_runs')} x WHERE x.dataset = q.dataset)
                ORDER BY 1, 2""").fetchall()
        # a from_authority column is filled from the authority, equal by construction: not a copy to compare
        referenced = {(ds.name, c.element) for ds in registry.source_datasets for c in ds.columns if c.from_authority}
        consistency = [(r.dataset, r.element, r.authority, r.compared, r.equal) for r in latest_rates(lake)
                       if (r.dataset, r.element) not in referenced]
        story = _story(lake) if "kpi_figures" in lake.tables("shared") else {}
        kpis = {kpi: (value, target) for kpi, value, target in lake.con.execute(
            f"""SELECT kpi, value, target FROM {CATALOG}.shared.kpi_figures
                WHERE scope = 'city' AND period = ?""", [Period.month(tz=settings.city_timezone).label]).fetchall()} \
            if "kpi_figures" in lake.tables("shared") else {}
    summary = DemoSummary(
        seconds=round(time.monotonic() - t0, 1),
        datasets=len(statuses),
        published_datasets=sum(1 for s in statuses if s.rows is not None and not s.damaged),
        published_rows=sum(s.rows or 0 for s in statuses),
        loads_this_run=this_run,
        statuses=statuses,
        airflow_exit=code,
        warnings=[tuple(w) for w in warnings],
        consistency=consistency,
        kpis=kpis,
        shared_datasets=sum(reason is None for reason in shared.values()),
        redelivered=redelivered,
        story=story,
        jurisdictions=jurisdictions,
        subscription=subscription,
    )
    _write_report(reports / "demo-summary.json", summary)
    return summary


STORY_KPIS = ("sharing_rate", "duplicate_collection_rate", "interconnection_rate")


def _redeliver_corrected(settings: Settings, config: DemoConfig, registry) -> list[str]:
    """The last step of the story: the owners whose delivery was quarantined for the demo's injected
    blocking defects (names missing, case numbers repeated) correct their extract and send it again,
    through the same loader; this month's KPIs are then published again. A rerun finds nothing
    quarantined and sends nothing."""
    import dataclasses

    from examples.changsha.data import City
    from examples.changsha.generate import without_references, write_extract
    from ingest.load import run_dataset

    with Lake(settings.lake, read_only=True) as lake:
        statuses = sharing_statuses(lake, registry, tz=settings.city_timezone)
    quarantined = [ds for ds in city_datasets(config.departments)
                   if (statuses.get(ds.name) or "").startswith("last load failed its quality checks")]
    if not quarantined:
        return []
    clean = City(dataclasses.replace(config, missing_required=0, duplicate_keys=0))
    done = []
    for ds in quarantined:
        write_extract(settings.sources_dir, ds, without_references(ds, clean.rows(ds)))
        if any(r.status == "published" for r in run_dataset(settings, registry, ds.name, os.environ)):
            done.append(ds.name)
    with Lake(settings.lake) as lake:
        publish_periods(lake, registry, [Period.month(tz=settings.city_timezone)])
    return done


def _story(lake: Lake) -> dict[str, tuple]:
    """KPI -> (first period, its value, the last period's value, target): the city from its baseline."""
    rows = lake.con.execute(
        f"""SELECT kpi, arg_min(period, period), arg_min(value, period), arg_max(value, period), any_value(target)
            FROM {CATALOG}.shared.kpi_figures WHERE scope = 'city' AND kpi IN ({", ".join("?" for _ in STORY_KPIS)})
            GROUP BY kpi""", list(STORY_KPIS)).fetchall()
    return {kpi: (first, then, now, target) for kpi, first, then, now, target in rows}


def _demo_users(settings: Settings, registry) -> None:
    """Each department's accounts, made with its data: an analyst (the data bureau's own department: a user
    of the ``bureau`` role, who sees every KPI) in demo-credentials.json (0600) so every endpoint can be
    tried at once; a steward (who decides access requests and disputes) in demo-owner-credentials.json; and
    the bureau's operator (users administration, /admin/users) in demo-operator-credentials.json. Kept
    across reruns: a department with its accounts keeps them, one added since gets its own. Audited as
    made by ``demo``."""
    from sharing.audit import AuditLog
    from sharing.roles import ANALYST, BUREAU, OPERATOR, STEWARD
    from sharing.users import create_user

    files = {"analyst": settings.home / "demo-credentials.json", "steward": settings.home / "demo-owner-credentials.json",
             "operator": settings.home / "demo-operator-credentials.json"}
    held = {kind: json.loads(path.read_text()) if path.exists() else {} for kind, path in files.items()}
    bureau = next((d.owner for d in registry.datasets if d.platform), None)
    wanted = [(kind, dept.code, name, role) for dept in registry.departments for kind, name, role in (
        ("analyst", f"{dept.code}_bureau", BUREAU) if dept.code == bureau else ("analyst", f"{dept.code}_analyst", ANALYST),
        ("steward", f"{dept.code}_owner", STEWARD))]
    if bureau:
        wanted.append(("operator", bureau, f"{bureau}_operator", OPERATOR))
    missing = [w for w in wanted if w[1] not in held[w[0]]]
    if not missing:
        return
    audit = AuditLog.of(settings)
    try:
        with Lake(settings.lake) as lake:
            for kind, code, user, role in missing:
                password, token = create_user(lake, code, user, role=role, by="demo", audit=audit)
                held[kind][code] = {"user": user, "password": password, "token": token}
    finally:
        audit.close()
    for kind in {w[0] for w in missing}:
        files[kind].write_text(json.dumps(held[kind], indent=2))
        files[kind].chmod(0o600)


JURISDICTION_CREDENTIALS = "demo-jurisdiction-credentials.json"
"""In the home (0600): the district's and streets' users (examples.changsha.city.JURISDICTION_USERS)."""


def _demo_subscription(settings: Settings, registry) -> dict | None:
    """The street user's subscription into the machine's PostgreSQL (or MariaDB), delivered now."""
    from dataclasses import asdict as as_dict

    from examples.changsha.subscriptions import demo_subscription

    found = demo_subscription(settings, registry)
    return as_dict(found) if found else None


def _demo_jurisdictions(settings: Settings, registry) -> list[tuple]:
    """A district's and two streets' users of civil affairs (each of its organisation), and civil affairs'
    grant of the resident register scoped to the jurisdiction; returns (user, organisation, name, rows it
    reads) as each reads it through the governed engine. Kept across reruns: users and the grant made once."""
    from examples.changsha.city import JURISDICTION_GRANT, JURISDICTION_USERS
    from sharing.audit import AuditLog
    from sharing.engine import GovernedEngine
    from sharing.grants import active_grants, add_grant
    from sharing.users import accounts, create_user

    department, dataset, purpose = JURISDICTION_GRANT
    names = {d.name for d in registry.datasets}
    codes = {o.code: o for o in registry.organisations}
    wanted = [u for u in JURISDICTION_USERS if u[1] in {d.code for d in registry.departments} and u[2] in codes]
    if dataset not in names or not wanted:
        return []
    path = settings.home / JURISDICTION_CREDENTIALS
    held = json.loads(path.read_text()) if path.exists() else {}
    audit = AuditLog.of(settings)
    try:
        with Lake(settings.lake) as lake:
            existing = {a.name for a in accounts(lake)}
            for user, dept, organisation in wanted:
                if user not in held or user not in existing:
                    password, token = create_user(lake, dept, user, by="demo", audit=audit, organisation=organisation)
                    held[user] = {"department": dept, "organisation": organisation, "password": password,
                                  "token": token}
            if not any(g.dataset == dataset and g.scope == "jurisdiction" for g in active_grants(lake, department)):
                add_grant(lake, registry, department, dataset, granted_by="demo", purpose=purpose,
                          scope="jurisdiction")
    finally:
        audit.close()
    path.write_text(json.dumps(held, indent=2, ensure_ascii=False))
    path.chmod(0o600)
    engine = GovernedEngine(settings, registry)
    out = []
    for user, dept, organisation in wanted:
        try:
            rows = engine.query(dept, f"SELECT count(*) FROM shared.{dataset}", user=user,
                                purpose="demo: rows of the user's jurisdiction").rows[0][0]
        except Exception:  # noqa: BLE001 - a dataset not loaded (quarantined): the summary says so
            rows = None
        out.append((user, organisation, codes[organisation].name, rows))
    return out


def _demo_requests(settings: Settings, registry) -> None:
    """Two live access requests, so the workflow has something to show: one approved, one waiting."""
    from sharing import requests

    with Lake(settings.lake) as lake:
        if any(not r.request_id.startswith("hist-") for r in requests.listing(lake)):
            return
        names = {d.name for d in registry.datasets}
        if {"urban_enforcement_cases", "psb_resident_register"} <= names:
            req = requests.create(lake, registry, "amr", "urban_enforcement_cases", purpose="信用监管：执法记录比对",
                                  requested_by="amr_analyst", period_days=180)
            requests.approve(lake, registry, req.request_id, owner="urban", decided_by="urban_owner")
            requests.create(lake, registry, "hrss", "psb_resident_register", purpose="参保人员身份核验",
                            requested_by="hrss_analyst", columns=["resident_id", "person_name"], period_days=365)


def _api_address(config: DemoConfig) -> tuple[str, int]:
    from urllib.parse import urlparse

    url = urlparse(config.api_url)
    return url.hostname or "127.0.0.1", url.port or 80


def check_api_port(config: DemoConfig) -> None:
    """Refuse at once, before minutes of work, a port the hotline API cannot listen on."""
    import socket

    host, port = _api_address(config)
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server's own bind does
            probe.bind((host, port))
    except OSError as exc:
        raise ApiPortError(host, port, exc) from exc


class ApiPortError(ConfigurationError):
    """The demo's hotline API cannot listen where the demo was told to start it."""

    def __init__(self, host: str, port: int, exc: OSError):
        import errno
        import socket

        with socket.socket() as spare:  # a port that is free now, to offer
            spare.bind((host, 0))
            free = spare.getsockname()[1]
        why = {errno.EADDRINUSE: "the port is already in use",
               errno.EACCES: "permission denied (ports below 1024 need root)"}.get(exc.errno, exc.strerror or str(exc))
        super().__init__(
            f"cannot start the demo's hotline API (the fake 12345-hotline ticket service the demo's connector "
            f"calls) on {host}:{port}: {why}. Stop whatever holds the port (an earlier `make demo` still "
            f"running?), or give the demo another port: make demo ARGS=\"--api-port {free}\" "
            f"(or: onesource demo --api-port {free})")


def _start_api(settings: Settings, config: DemoConfig, token: str):
    data = settings.sources_dir / "hotline" / "tickets.json"
    if not data.exists():
        return None
    host, port = _api_address(config)
    try:
        return serve(data, host, port, token)
    except OSError as exc:  # taken since the check at the start
        raise ApiPortError(host, port, exc) from exc


def _write_report(path: Path, summary: DemoSummary) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(summary), ensure_ascii=False, indent=2, default=str), encoding="utf-8")


def print_summary(console: Console, summary: DemoSummary, settings: Settings) -> None:
    """The demo's closing summary: the shared zone as `onesource status` reads it back (onesource.summary), with
    this run's loads and time, then the city's KPIs and story."""
    zone = SharedZone(summary.datasets, summary.published_datasets, summary.published_rows, summary.statuses,
                      summary.shared_datasets, summary.warnings, summary.consistency)
    print_shared_zone(console, zone, settings, title="OneSource demo: the shared zone",
                      run=(summary.loads_this_run, summary.seconds))
    if summary.kpis:
        from core.output import percent, target_text
        from metrics.kpis import LOWER_IS_BETTER

        def pct(v, kpi=None, target=None):  # one decimal, never rounded across the KPI's target
            return percent(v, target, kpi in LOWER_IS_BETTER)

        shown = ("sharing_rate", "duplicate_collection_rate", "interconnection_rate", "request_fulfilment_rate",
                 "quality_pass_rate", "timeliness")
        console.print("[bold]KPIs this month[/] (city; target): " + ", ".join(
            f"{k} {pct(summary.kpis[k][0], k, summary.kpis[k][1])}"
            + (f" ({target_text(summary.kpis[k][1], k in LOWER_IS_BETTER)})" if summary.kpis[k][1] else "")
            for k in shown if k in summary.kpis))
        if summary.redelivered:
            console.print("Corrected and sent again by their owners: " + ", ".join(summary.redelivered))
        if summary.jurisdictions:
            from examples.changsha.city import JURISDICTION_GRANT

            console.print(
                f"Jurisdictions: {JURISDICTION_GRANT[0]} reads {JURISDICTION_GRANT[1]} under a grant scoped to each "
                "user's jurisdiction (organisations.yaml: the city, 9 districts, their streets): "
                + "; ".join(f"{u} ({name} {code}) reads {'?' if n is None else n} rows"
                            for u, code, name, n in summary.jurisdictions)
                + f" ({JURISDICTION_CREDENTIALS})", highlight=False)
        if summary.subscription:
            sub = summary.subscription
            console.print(
                f"数据回流: {sub['user']} ({sub['organisation']}) subscribes to {sub['dataset']}: "
                + (f"{sub['status']}, {sub['rows']} row(s) into {sub['where']} ({sub['message']}); every publish "
                   "delivers again (DAG onesource_subscriptions, or `onesource subscriptions deliver`)"
                   if sub["status"] != "skipped" else f"skipped: {sub['message']}"), highlight=False)
        for kpi in STORY_KPIS:
            if kpi in summary.story:
                first, then, now, target = summary.story[kpi]
                met = now is not None and target is not None and (
                    now <= target if kpi == "duplicate_collection_rate" else now >= target)
                console.print(f"KPI {kpi}: {pct(then, kpi, target)} ({first}, baseline) -> {pct(now, kpi, target)} "
                              f"now; target {target_text(target, kpi in LOWER_IS_BETTER)}: "
                              f"{'[green]met[/]' if met else '[red]not met[/]'}")
        console.print("Dashboard:  .venv/bin/onesource serve, then http://127.0.0.1:8765/dashboard "
                      f"(sign in as {BUREAU_DEPARTMENT[0]}_bureau, demo-credentials.json: the bureau's user, who sees every "
                      "department's KPIs; months before this one are simulated history)")

