"""Typed settings, built once at the edge (CLI, DAG task, test fixture) and passed down.

No other module reads the environment: they take a :class:`Settings`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".onesource"
DEFAULT_CITY_TIMEZONE = "Asia/Shanghai"
"""Changsha's zone: the KPIs' days, months, update-cycle windows and request deadlines begin at its midnight."""


def default_audit_key_file(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where a home's audit key lives unless ``ONESOURCE_AUDIT_KEY`` says otherwise: outside the home, in
    ``$XDG_CONFIG_HOME/onesource/keys/`` (``~/.config`` by default), named after the home's path, so
    that each home (and each test's temporary home) has its own key."""
    env = os.environ if environ is None else environ
    config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    name = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:32]
    return config / "onesource" / "keys" / f"{name}.audit.key"


@dataclass(frozen=True)
class LakeSettings:
    """Where the DuckLake catalog and its data files live."""

    catalog: str
    """DuckLake metadata location after ``ducklake:``: ``sqlite:/path/catalog.sqlite`` (default) or
    ``postgres:dbname=... host=...`` for a catalog shared by several machines."""
    data_path: str
    """Folder (or object-store prefix) for the Parquet data files."""
    commit_retries: int = 12
    """How often a commit that met a catalog lock or a conflict is retried (with backoff)."""
    encrypted: bool = False
    """Encrypt every Parquet file DuckLake writes (its keys stay in the catalog): required for a city whose
    registry holds highly sensitive elements (level 4); a dataset with such a column is refused by an
    unencrypted lake. DuckLake encrypts per catalog, not per table, so the whole lake is encrypted.
    Decided when the lake is created and kept in its catalog (with inlining off), so a process that
    attaches later without the flag still writes encrypted files. ``ONESOURCE_ENCRYPT=1``."""


@dataclass(frozen=True)
class SignInSettings:
    """Throttling of sign-ins, on the portal and the Postgres-wire endpoint alike (sharing.signin)."""

    max_failures: int = 5
    """Failed sign-ins for one user name within ``window_minutes`` that lock that name for
    ``lockout_minutes``. ``ONESOURCE_SIGNIN_MAX_FAILURES``."""
    max_failures_per_address: int = 20
    """The same for one client address, whatever the user names tried (higher than ``max_failures``: a
    department's office may reach the server through one address). ``ONESOURCE_SIGNIN_MAX_FAILURES_PER_ADDRESS``."""
    window_minutes: float = 15
    """How far back failures count. ``ONESOURCE_SIGNIN_WINDOW_MINUTES``."""
    lockout_minutes: float = 15
    """How long a locked user name or address is refused, right password or not.
    ``ONESOURCE_SIGNIN_LOCKOUT_MINUTES``."""
    delay_seconds: float = 0.5
    """A failed sign-in is answered after this many seconds per failure so far (1st: 0.5 s, 2nd: 1 s, ...).
    ``ONESOURCE_SIGNIN_DELAY_SECONDS``."""
    max_delay_seconds: float = 3.0
    """The longest that delay gets. ``ONESOURCE_SIGNIN_MAX_DELAY_SECONDS``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SignInSettings:
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(f"ONESOURCE_SIGNIN_{name.upper()}")
            if raw:
                values[name] = (int if f.type == "int" else float)(raw)
        return cls(**values)


@dataclass(frozen=True)
class QueryLimits:
    """Limits a department's queries cannot exceed, on every endpoint (sharing.engine, sharing.limits).

    Each figure has an environment variable ``ONESOURCE_QUERY_<NAME>`` (``ONESOURCE_QUERY_SECONDS=10``)."""

    seconds: float = 30.0
    """Time a query may take from its arrival: waiting for a slot, planning and running together (catalog
    questions too). A Postgres-wire session may lower it for itself (``SET statement_timeout``), never raise it."""
    rows: int = 0
    """Rows one answer may have; 0: no bound but ``result_bytes``. A result with more is an error that says so
    (never an answer cut short): every row is sent, on every endpoint."""
    result_bytes: str = "2GiB"
    """Size one answer may have as it is fetched (Arrow's size of its columns; DuckDB's size syntax). A server
    fetches a result whole before sending it, so that a slow client holds memory, not a running slot: a result
    beyond this is stopped with the reason (SQLSTATE 54000) and nothing is sent."""
    memory: str = "2GiB"
    """Memory one running query may use (DuckDB's size syntax). Each running query has its own DuckDB
    instance on the lake with this ``memory_limit`` (DuckDB's limit is per instance, not per query), so a
    query that needs more is stopped with the reason and the others are untouched; nothing spills to disk.
    The server's query memory is at most ``memory`` times ``concurrent``."""
    threads: int = 0
    """DuckDB threads one query may use. 0: in a server, the machine's cores shared among the ``concurrent``
    running slots (at least 1 each); a query of the CLI, every core."""
    concurrent: int = 4
    """Queries running at once in one server, all users together; further ones wait (``queued``)."""
    queued: int = 64
    """Queries that may wait for a running slot in one server, all users together; beyond that a query is
    refused at once (HTTP 429, Postgres 53300). Each waiting query holds a thread (the HTTP server runs
    ``concurrent + queued + 40`` worker threads, so that other requests always find one)."""
    per_user: int = 2
    """Queries one user may have running at once: the rest of the ``concurrent`` slots stay free for
    other users, so one department's burst cannot starve the others."""
    per_user_queued: int = 8
    """Queries one user may have waiting on top of ``per_user``; beyond that refused at once (HTTP 429,
    Postgres 53300 'too many queries in flight')."""
    sql_bytes: int = 131_072
    """Longest SQL text accepted (UTF-8 bytes), refused with the reason before it is parsed: planning
    costs time in proportion (sqlglot plans about 10 KB a second for the heaviest shapes)."""
    request_bytes: int = 1_048_576
    """Largest HTTP request body (API and portal), refused with 413 before it is read in full."""
    audit_sql_bytes: int = 8_192
    """How much of a query's text the audit log keeps (sent and rewritten); a longer text is recorded by
    its first bytes, its size and its sha256, so that a huge query cannot flood the log."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QueryLimits:
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(f"ONESOURCE_QUERY_{name.upper()}")
            if raw:
                values[name] = {"int": int, "float": float}.get(str(f.type), str)(raw)
        return cls(**values)


@dataclass(frozen=True)
class WireSettings:
    """The Postgres-wire endpoint's TLS (``ONESOURCE_PG_TLS_*``). With a certificate and key, a client's
    SSLRequest is answered 'S' and the session is encrypted (``sslmode=require``); without, 'N'."""

    tls_cert: str | None = None
    """PEM certificate (chain) file. ``ONESOURCE_PG_TLS_CERT``."""
    tls_key: str | None = None
    """PEM private key file (may be in the certificate file). ``ONESOURCE_PG_TLS_KEY``."""
    tls_required: bool = False
    """Refuse clear-text sessions (a startup without TLS gets a FATAL error saying so).
    ``ONESOURCE_PG_TLS_REQUIRED=1``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WireSettings:
        return cls(tls_cert=env.get("ONESOURCE_PG_TLS_CERT") or None, tls_key=env.get("ONESOURCE_PG_TLS_KEY") or None,
                   tls_required=env.get("ONESOURCE_PG_TLS_REQUIRED", "").lower() in ("1", "true", "yes", "on"))


@dataclass(frozen=True)
class SecuritySettings:
    """Thresholds of the misuse alerts (sharing.security.alerts): each rule compares a user's use in one
    window with a floor and with the usual use of the user and its department (the baseline: the
    ``baseline_days`` whole city days before the window's day, so a burst today never raises its own bar).

    Each figure has an environment variable ``ONESOURCE_SECURITY_<NAME>`` (``ONESOURCE_SECURITY_WINDOW_MINUTES=10``)."""

    window_minutes: int = 15
    """Length of the windows use is counted in (aligned on the hour: 15 -> :00, :15, :30, :45)."""
    baseline_days: int = 14
    """How many whole city days before a window's day make the baseline it is compared with."""
    lookback_hours: float = 24
    """How far back a scan evaluates windows (more than the scan's schedule: a missed run is caught up)."""
    refusal_burst: int = 10
    """Refused queries of one user in one window that raise ``refusal_burst`` (probing the policy)..."""
    refusal_factor: float = 3
    """...or this many times the user's usual refusals per window, whichever is higher. Refusals are counted in
    sliding windows (any ``window_minutes`` from a refusal on), so a burst astride a window's edge still counts whole."""
    department_refusal_burst: int = 20
    """Refused queries of the users of one department, at least two of them, in one sliding window that raise
    ``department_refusals`` (probes spread over several accounts, each under ``refusal_burst``)... or
    ``refusal_factor`` times the department's usual refusals per window, whichever is higher."""
    sensitive_rows_floor: int = 1000
    """Sensitive rows one user may get in one window before ``sensitive_rows`` is raised whatever the
    baseline (a new user with no history is compared with its department, and with this floor)..."""
    sensitive_rows_factor: float = 5
    """...or this many times the usual (the higher of the user's and its department's), whichever is higher."""
    sensitive_value_bytes: int = 32
    """An answer that packs many values into one column (``string_agg``, ``to_json(list(...))``) counts this many
    bytes of that column's text as one sensitive row (a resident ID is 18, a name 6-30 bytes in UTF-8)."""
    match_quota_refusals: int = 1
    """Queries of one user refused in one window because a match quota was exhausted (``match_quota``)."""
    work_start: int = 8
    """First working hour, city time (8: from 08:00)."""
    work_end: int = 20
    """First hour after work, city time (20: until 19:59). A query outside these hours and outside the
    hours the user queried in during its baseline is at an unusual hour."""
    unusual_hours_queries: int = 1
    """Queries at unusual hours by one user in one city day that raise ``unusual_hours``."""
    signin_failures: int = 5
    """Failed (or locked-out) sign-ins for one user name in one window that raise ``signin_failures``."""
    signin_failures_per_address: int = 20
    """The same from one client address, whatever the user names tried (password spraying)."""

    def __post_init__(self) -> None:
        from core.errors import ConfigurationError

        for name in self.__dataclass_fields__:
            positive = ("window_minutes", "lookback_hours", "sensitive_value_bytes")  # lengths, and a divisor
            if getattr(self, name) < 0 or (getattr(self, name) == 0 and name in positive):
                raise ConfigurationError(f"ONESOURCE_SECURITY_{name.upper()}={getattr(self, name)} cannot be "
                                         "negative (nor 0 for a length of time or bytes): set a positive number")
        if not 0 <= self.work_start < self.work_end <= 24:
            raise ConfigurationError(f"working hours {self.work_start}-{self.work_end} are not hours of one day: set "
                                     "ONESOURCE_SECURITY_WORK_START and _WORK_END with 0 <= start < end <= 24")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SecuritySettings:
        from core.errors import ConfigurationError

        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            var = f"ONESOURCE_SECURITY_{name.upper()}"
            raw = env.get(var)
            if raw:
                try:
                    values[name] = (int if str(f.type) == "int" else float)(raw)
                except ValueError:
                    raise ConfigurationError(f"{var}={raw!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True)
class Settings:
    """One OneSource home: registry, source drops, landing, lake, Airflow home, reports."""

    home: Path
    lake: LakeSettings = field(default=None)  # type: ignore[assignment]
    registry_dir: Path = field(default=None)  # type: ignore[assignment]
    snapshot_retention_days: int = 180
    """Lake snapshots younger than this are kept (time travel, audits); older ones are expired by the
    maintenance DAG. ``ONESOURCE_SNAPSHOT_RETENTION_DAYS``."""
    signin: SignInSettings = field(default_factory=SignInSettings)
    wire: WireSettings = field(default_factory=WireSettings)
    """The Postgres-wire endpoint's TLS (``ONESOURCE_PG_TLS_*``, see :class:`WireSettings`)."""
    """Sign-in throttling and lockout (``ONESOURCE_SIGNIN_*``, see :class:`SignInSettings`)."""
    limits: QueryLimits = field(default_factory=QueryLimits)
    """What one query and one user may use (``ONESOURCE_QUERY_*``, see :class:`QueryLimits`)."""
    security: SecuritySettings = field(default_factory=SecuritySettings)
    """Thresholds of the misuse alerts (``ONESOURCE_SECURITY_*``, see :class:`SecuritySettings`)."""
    audit_key_file: Path = field(default=None)  # type: ignore[assignment]
    """The secret key that signs the audit log (HMAC-SHA256), kept outside the home so that whoever can
    rewrite the log cannot re-sign it. Created (0600, in a 0700 folder) on the first append to a new log,
    never while a log exists. ``ONESOURCE_AUDIT_KEY``; default :func:`default_audit_key_file`."""
    city_timezone: str = DEFAULT_CITY_TIMEZONE
    """The city's IANA time zone: every day boundary of the KPIs (periods, update-cycle windows, the
    working-day calendar, request deadlines) is a midnight there; the ledgers themselves stay in UTC.
    ``ONESOURCE_CITY_TIMEZONE``."""

    def __post_init__(self) -> None:
        home = Path(self.home).resolve()
        object.__setattr__(self, "home", home)
        if self.audit_key_file is None:
            object.__setattr__(self, "audit_key_file", default_audit_key_file(home))
        else:
            object.__setattr__(self, "audit_key_file", Path(self.audit_key_file).expanduser().resolve())
        if self.registry_dir is None:
            object.__setattr__(self, "registry_dir", home / "registry")
        if self.lake is None:
            lake_dir = home / "lake"
            object.__setattr__(
                self,
                "lake",
                LakeSettings(catalog=f"sqlite:{lake_dir / 'catalog.sqlite'}", data_path=f"{lake_dir / 'data'}/"),
            )

    # Folders below the home; each stage owns one.
    @property
    def sources_dir(self) -> Path:
        """Department systems' drop folders and demo source databases (outside the platform)."""
        return self.home / "sources"

    @property
    def landing_dir(self) -> Path:
        """Raw extracts as received, immutable, named by sha256."""
        return self.home / "landing"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def gx_project_root(self) -> Path:
        """Great Expectations keeps its project in ``<root>/gx``: suites, validation results and Data Docs
        (``gx/uncommitted/data_docs/local_site/index.html``)."""
        return self.home

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def cache_dir(self) -> Path:
        """Caches that only save time (the checked registry as JSON, schemas.cache); 0700, files 0600."""
        return self.home / "cache"

    @property
    def calendar_file(self) -> Path:
        """The city's own holidays and make-up working days (core.calendar)."""
        return self.home / "calendar.yaml"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``ONESOURCE_HOME`` (default ``.onesource/`` in the repo) and the
        optional ``ONESOURCE_CATALOG`` / ``ONESOURCE_DATA_PATH`` / ``ONESOURCE_AUDIT_KEY`` overrides."""
        env = os.environ if environ is None else environ
        home = Path(env.get("ONESOURCE_HOME") or DEFAULT_HOME)
        key = env.get("ONESOURCE_AUDIT_KEY")
        settings = cls(home=home, snapshot_retention_days=int(env.get("ONESOURCE_SNAPSHOT_RETENTION_DAYS") or 180),
                       signin=SignInSettings.from_env(env), wire=WireSettings.from_env(env),
                       limits=QueryLimits.from_env(env), security=SecuritySettings.from_env(env),
                       audit_key_file=Path(key) if key else default_audit_key_file(home, env))
        catalog = env.get("ONESOURCE_CATALOG")
        data_path = env.get("ONESOURCE_DATA_PATH")
        encrypted = env.get("ONESOURCE_ENCRYPT", "").lower() in ("1", "true", "yes")
        if catalog or data_path or encrypted:
            settings = cls(
                home=home,
                snapshot_retention_days=settings.snapshot_retention_days,
                signin=settings.signin,
                wire=settings.wire,
                limits=settings.limits,
                security=settings.security,
                audit_key_file=settings.audit_key_file,
                lake=LakeSettings(
                    catalog=catalog or settings.lake.catalog,
                    data_path=data_path or settings.lake.data_path,
                    encrypted=encrypted,
                ),
            )
        if env.get("ONESOURCE_CITY_TIMEZONE"):
            from dataclasses import replace

            settings = replace(settings, city_timezone=env["ONESOURCE_CITY_TIMEZONE"])
        return settings

    def environ(self) -> dict[str, str]:
        """Environment for a child process (Airflow) that must see this same home."""
        env = {
            "ONESOURCE_HOME": str(self.home),
            "ONESOURCE_CATALOG": self.lake.catalog,
            "ONESOURCE_DATA_PATH": self.lake.data_path,
            "ONESOURCE_ENCRYPT": "1" if self.lake.encrypted else "",
            "ONESOURCE_AUDIT_KEY": str(self.audit_key_file),
            "ONESOURCE_CITY_TIMEZONE": self.city_timezone,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        return env
