"""Where a delivery goes, one small class per kind; each keeps, with what it delivered, a mark of it.

* ``postgres`` / ``mysql``: a table in the subscriber's own database (DuckDB's postgres and mysql scanners:
  libpq and the MySQL client library). The rows and the mark (table ``onesource_deliveries`` beside it: the
  delivery, the lake snapshot and load, the policy's fingerprint) change in one transaction of that database,
  so a delivery killed at any point leaves either the old table and mark or the new ones.
* ``files``: a CSV or XLSX file per delivery in a drop folder, written under a temporary name and renamed
  (atomic), then the folder's manifest ``.onesource-<subscription>.json`` (also renamed into place).
* ``webhook``: the delivery's rows kept for the HTTP API, then a POST to the subscriber's URL with an HMAC
  signature and a signed, expiring link to fetch them (sharing.subscriptions.links); its mark is kept in the
  home once the receiver answered 2xx (a crash in between POSTs again the same delivery id: receivers dedupe).

A secret never sits in a target's settings: a DSN or a webhook secret names it as ``${VARIABLE}``, taken from
the environment of the process that delivers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import TransientError
from sharing.subscriptions.store import Subscription, SubscriptionError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from core.config import Settings

LEDGER_TABLE = "onesource_deliveries"
"""The mark's table in a database target, beside the delivered table."""
CHANGE_COLUMN = "_change"
"""In a file or webhook delivery of changes: ``upsert`` (the row as it is now) or ``delete`` (only the key)."""
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class TargetUnavailable(TransientError):
    """The target did not answer or dropped the connection: the delivery is retried."""


@dataclass(frozen=True)
class Mark:
    """What a target holds: the delivery that last reached it."""

    delivery_id: str
    snapshot_id: int
    load_id: str | None
    policy: str
    rows: int = 0
    delivered_at: str = ""


@dataclass
class Change:
    """What one delivery sends: ``kind`` ``snapshot`` (``rows`` is the whole view) or ``changes`` (``rows``
    the rows new or changed since the target's mark, ``deleted`` the keys of rows no longer in the view)."""

    kind: str
    columns: list[tuple[str, str]]
    """(name, DuckDB type) of the view's columns."""
    key: list[str]
    rows: pa.Table
    deleted: pa.Table | None = None

    @property
    def row_count(self) -> int:
        return self.rows.num_rows

    @property
    def deleted_count(self) -> int:
        return self.deleted.num_rows if self.deleted is not None else 0

    def stale_keys(self) -> pa.Table:
        """Keys a table target removes before inserting ``rows``: rows gone, and the old version of rows changed."""
        import pyarrow as pa

        changed = self.rows.select(self.key)
        if self.deleted is None or not self.deleted.num_rows:
            return changed
        return pa.concat_tables([self.deleted.select(self.key).cast(changed.schema), changed])

    def with_change_column(self) -> pa.Table:
        """The rows for a file or a webhook: changes carry ``_change`` (upsert, or delete with only the key)."""
        import pyarrow as pa

        if self.kind == "snapshot":
            return self.rows
        upserts = self.rows.append_column(CHANGE_COLUMN, pa.array(["upsert"] * self.rows.num_rows, pa.string()))
        if not self.deleted_count:
            return upserts
        cols = {f.name: (self.deleted.column(f.name) if f.name in self.deleted.column_names
                         else pa.nulls(self.deleted.num_rows, f.type)) for f in self.rows.schema}
        cols[CHANGE_COLUMN] = pa.array(["delete"] * self.deleted.num_rows, pa.string())
        return pa.concat_tables([upserts, pa.table(cols, schema=upserts.schema)])


def resolve(text: str, environ: Mapping[str, str], what: str) -> str:
    """``${NAME}`` in a target setting, from the environment (a secret is never stored in the lake)."""
    try:
        return string.Template(text).substitute(environ)
    except KeyError as exc:
        raise SubscriptionError(f"the {what} names environment variable {exc} which is not set here; export it "
                                "where deliveries run (the Airflow worker, the shell running `onesource "
                                "subscriptions deliver`)") from None
    except ValueError as exc:
        raise SubscriptionError(f"the {what} has a malformed ${{...}} reference ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------

class DatabaseTarget:
    """A table in the subscriber's PostgreSQL (``kind = 'postgres'``) or MySQL/MariaDB (``'mysql'``)."""

    EXTENSIONS = {"postgres": ("postgres_scanner", "postgres"), "mysql": ("mysql_scanner", "mysql")}

    def __init__(self, kind: str, settings: dict, environ: Mapping[str, str] | None = None):
        self.kind = kind
        self.dsn_template = str(settings.get("dsn") or "")
        if not self.dsn_template:
            raise SubscriptionError(f"a {kind} target needs dsn (e.g. 'host=db.district.gov port=5432 dbname=x "
                                    "user=onesource password=${DISTRICT_PG_PASSWORD}')")
        table = str(settings.get("table") or "")
        parts = table.split(".")
        if not table or len(parts) > 2 or not all(_NAME.match(p) for p in parts):
            raise SubscriptionError(f"the {kind} target's table {table!r} is not a plain [schema.]table name "
                                    "(letters, digits, '_')")
        self.schema = parts[0] if len(parts) == 2 else ("public" if kind == "postgres" else None)
        self.table = parts[-1]
        self.environ = os.environ if environ is None else environ
        self._con: duckdb.DuckDBPyConnection | None = None

    # names ------------------------------------------------------------------------------------------
    def _q(self, name: str) -> str:
        return f"`{name}`" if self.kind == "mysql" else f'"{name}"'

    def _native(self, table: str) -> str:
        """The table's name in the target's own SQL (for statements run there)."""
        return f"{self._q(self.schema)}.{self._q(table)}" if self.schema and self.kind == "postgres" else self._q(table)

    def _duck(self, table: str) -> str:
        """The table's name through DuckDB's attached database ``tgt``."""
        return f'tgt."{self.schema}"."{table}"' if self.schema and self.kind == "postgres" else f'tgt."{table}"'

    def where(self) -> str:
        from connectors.database import endpoint

        return f"{endpoint(self.kind, self.dsn_template)} table {self.schema + '.' if self.schema else ''}{self.table}"

    # connection ---------------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection with the subscriber's database attached as ``tgt`` (the caller closes it): what a
        delivery writes through, and what a reachability check opens; :class:`TargetUnavailable` if it cannot."""
        import duckdb

        from core.duck import connect, literal
        from core.logsafe import redact

        extension, attach_type = self.EXTENSIONS[self.kind]
        con = connect(extensions=(extension,), threads=2)
        dsn = resolve(self.dsn_template, self.environ, f"{self.kind} target's dsn")
        try:
            con.execute(f"ATTACH {literal(dsn)} AS tgt (TYPE {attach_type})")
        except duckdb.Error as exc:
            con.close()
            raise TargetUnavailable(f"cannot open the subscriber's database {self.where()}: "
                                    f"{redact(str(exc)).splitlines()[0]}") from exc
        return con

    def _execute(self, con: duckdb.DuckDBPyConnection, sql: str) -> None:
        """A statement in the target's own SQL, in the connection's current transaction."""
        from core.duck import literal

        con.execute(f"CALL {self.kind}_execute('tgt', {literal(sql)})")

    def _columns(self, con: duckdb.DuckDBPyConnection, table: str) -> list[str] | None:
        con.execute("CALL pg_clear_cache()" if self.kind == "postgres" else "CALL mysql_clear_cache()")
        rows = con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'tgt' AND table_name = ? "
                           "AND (? IS NULL OR schema_name = ?) ORDER BY column_index",
                           [table, self.schema if self.kind == "postgres" else None,
                            self.schema if self.kind == "postgres" else None]).fetchall()
        return [r[0] for r in rows] or None

    def _ensure_ledger(self, con: duckdb.DuckDBPyConnection) -> None:
        stamp = "DATETIME(6)" if self.kind == "mysql" else "TIMESTAMP"
        if self.kind == "postgres" and self.schema:
            self._execute(con, f"CREATE SCHEMA IF NOT EXISTS {self._q(self.schema)}")
        self._execute(con, f"CREATE TABLE IF NOT EXISTS {self._native(LEDGER_TABLE)} (subscription_id VARCHAR(64) "
                           "NOT NULL PRIMARY KEY, dataset VARCHAR(255), delivery_id VARCHAR(128), snapshot_id BIGINT, "
                           f"load_id VARCHAR(128), policy VARCHAR(64), row_count BIGINT, delivered_at {stamp})")

    # the interface ------------------------------------------------------------------------------------
    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The connection a delivery's mark and write share (opening one costs ~0.5 s: the extension, the
        server's handshake); dropped after a failure, so that a retry opens a new one."""
        if self._con is None:
            self._con = self.connect()
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def mark(self, sub: Subscription) -> Mark | None:
        import duckdb

        con = self._connection()
        try:
            if self._columns(con, LEDGER_TABLE) is None:
                return None
            row = con.execute(f"SELECT delivery_id, snapshot_id, load_id, policy, row_count, delivered_at::VARCHAR "
                              f"FROM {self._duck(LEDGER_TABLE)} WHERE subscription_id = ?",
                              [sub.subscription_id]).fetchone()
        except duckdb.Error as exc:
            self.close()
            raise self._failure(exc, "reading its delivery mark") from exc
        return Mark(*row) if row else None

    def write(self, sub: Subscription, change: Change, mark: Mark) -> None:
        import duckdb

        con = self._connection()
        try:
            self._ensure_ledger(con)
            wanted = [n for n, _ in change.columns]
            have = self._columns(con, self.table)
            if have is not None and have != wanted and change.kind == "changes":
                raise SubscriptionError(f"the table {self.where()} has columns {have}, not the delivered {wanted}: "
                                        "it was altered; drop it and the next delivery recreates it whole")
            con.register("delivery_rows", change.rows)
            if change.kind == "changes":
                self._stage(con, sub, change)
            con.execute("BEGIN TRANSACTION")
            if have is not None and have != wanted:  # the policy's columns changed: the table is made anew
                self._execute(con, f"DROP TABLE {self._native(self.table)}")
                have = None
            if have is None:
                self._create(con, change)
            elif change.kind == "snapshot":
                self._execute(con, f"DELETE FROM {self._native(self.table)}")
            if change.kind == "changes":
                self._delete_keys(con, sub, change)
            cols = ", ".join(f'"{n}"' for n in wanted)
            if change.rows.num_rows:
                con.execute(f"INSERT INTO {self._duck(self.table)} ({cols}) SELECT {cols} FROM delivery_rows")
            self._execute(con, f"DELETE FROM {self._native(LEDGER_TABLE)} WHERE subscription_id = "
                               f"{self._literal(sub.subscription_id)}")
            self._execute(con, f"INSERT INTO {self._native(LEDGER_TABLE)} VALUES ("
                               + ", ".join(self._literal(v) for v in (
                                   sub.subscription_id, sub.dataset, mark.delivery_id, mark.snapshot_id,
                                   mark.load_id, mark.policy, mark.rows, mark.delivered_at)) + ")")
            con.execute("COMMIT")
            if change.kind == "changes":
                self._execute(con, f"DROP TABLE IF EXISTS {self._native(self._stage_name(sub))}")
        except duckdb.Error as exc:
            raise self._failure(exc, "writing the delivery") from exc
        finally:  # the transaction is over (committed, or rolled back with the connection)
            self.close()

    def _create(self, con: duckdb.DuckDBPyConnection, change: Change) -> None:
        """The table as the view's columns are typed (DuckDB maps its types to the target's), and an index
        on the dataset's key (a changes delivery deletes by it)."""
        if self.kind == "postgres":
            self._execute(con, f"CREATE SCHEMA IF NOT EXISTS {self._q(self.schema)}")
        con.execute(f"CREATE TABLE {self._duck(self.table)} ("
                    + ", ".join(f'"{n}" {_portable(t)}' for n, t in change.columns) + ")")
        key = [k for k in change.key if k in dict(change.columns)]
        if not key:
            return
        types = dict(change.columns)
        parts = ", ".join(self._q(k) + ("(191)" if self.kind == "mysql" and types[k] == "VARCHAR" else "")
                          for k in key)
        self._execute(con, f"CREATE INDEX {self._q(self.table[:40] + '_onesource_key')} "
                           f"ON {self._native(self.table)} ({parts})")

    def _stage_name(self, sub: Subscription) -> str:
        return f"onesource_stage_{sub.subscription_id}"

    def _stage(self, con: duckdb.DuckDBPyConnection, sub: Subscription, change: Change) -> None:
        """The staging table for the keys a changes delivery removes, made empty before the transaction
        (MySQL commits at any CREATE TABLE) and dropped after it; one a killed run left is made anew."""
        stage = self._stage_name(sub)
        types = dict(change.columns)
        self._execute(con, f"DROP TABLE IF EXISTS {self._native(stage)}")
        con.execute("CALL pg_clear_cache()" if self.kind == "postgres" else "CALL mysql_clear_cache()")
        con.execute(f"CREATE TABLE {self._duck(stage)} ("
                    + ", ".join(f'"{k}" {_portable(types[k])}' for k in change.key) + ")")

    def _delete_keys(self, con: duckdb.DuckDBPyConnection, sub: Subscription, change: Change) -> None:
        """Remove the rows of the keys gone or changed: the keys go to the staging table through the
        scanner's bulk insert (PostgreSQL's binary COPY), then one DELETE joins them in the target (a list of
        literals cost ~0.4 s per 1,000 keys on PostgreSQL; the join, one index lookup per key)."""
        keys = change.stale_keys()
        if not keys.num_rows:
            return
        stage = self._stage_name(sub)
        con.register("delivery_keys", keys)
        names = ", ".join(f'"{k}"' for k in change.key)
        con.execute(f"INSERT INTO {self._duck(stage)} ({names}) SELECT {names} FROM delivery_keys")
        match = " AND ".join(f"t.{self._q(k)} = s.{self._q(k)}" for k in change.key)
        if self.kind == "postgres":
            self._execute(con, f"DELETE FROM {self._native(self.table)} t USING {self._native(stage)} s WHERE {match}")
        else:
            self._execute(con, f"DELETE t FROM {self._native(self.table)} t JOIN {self._native(stage)} s ON {match}")

    def _literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int):
            return str(value)
        text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
        text = text.replace("'", "''")
        if self.kind == "mysql":  # MySQL reads backslashes in a string as escapes (unless NO_BACKSLASH_ESCAPES)
            text = text.replace("\\", "\\\\")
        return f"'{text}'"

    def _failure(self, exc: Exception, doing: str) -> Exception:
        from connectors.database import connection_lost
        from core.logsafe import redact

        message = f"{doing} at {self.where()} failed: {redact(str(exc)).splitlines()[0]}"
        return TargetUnavailable(message) if connection_lost(exc) else SubscriptionError(message)


def _portable(duck_type: str) -> str:
    """A column type both scanners create: DuckDB's own names, but for types a target has no match for."""
    upper = duck_type.upper()
    if upper in ("HUGEINT", "UHUGEINT", "UBIGINT"):
        return "DECIMAL(38, 0)"
    if upper.startswith(("STRUCT", "MAP", "UNION")) or upper.endswith("]"):
        return "VARCHAR"
    return duck_type


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

class FilesTarget:
    """A CSV or XLSX file per delivery in a drop folder: ``<dataset>-<snapshot>-<snapshot|changes>.<format>``."""

    FORMATS = ("csv", "xlsx")

    def __init__(self, settings: dict, home: Settings | None = None):
        self.home = home
        self.folder = Path(str(settings.get("folder") or ""))
        if not str(settings.get("folder") or "") or not self.folder.is_absolute():
            raise SubscriptionError("a files target needs folder: an absolute path of the drop folder")
        self.format = str(settings.get("format") or "csv").lower()
        if self.format not in self.FORMATS:
            raise SubscriptionError(f"a files target's format is one of {', '.join(self.FORMATS)}, not {self.format!r}")

    def where(self) -> str:
        return f"{self.folder} ({self.format})"

    def _manifest(self, sub: Subscription) -> Path:
        return self.folder / f".onesource-{sub.subscription_id}.json"

    def mark(self, sub: Subscription) -> Mark | None:
        try:
            data = json.loads(self._manifest(sub).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SubscriptionError(f"the drop folder's manifest {self._manifest(sub)} cannot be read ({exc}); "
                                    "remove it and the next delivery sends the whole view") from exc
        return Mark(**{k: data[k] for k in Mark.__dataclass_fields__ if k in data})

    def file_name(self, sub: Subscription, change: Change, mark: Mark) -> str:
        return f"{sub.dataset}-{mark.snapshot_id}-{change.kind}.{self.format}"

    def _in_home(self) -> Path | None:
        """OneSource's home when the drop folder lies in it or holds it: the subscriber's office, reading its
        folder, would read the lake's files and other subscribers' webhook deliveries waiting there."""
        if self.home is None:
            return None
        home, folder = Path(os.path.realpath(self.home.home)), Path(os.path.realpath(self.folder))
        return home if folder.is_relative_to(home) or home.is_relative_to(folder) else None

    def write(self, sub: Subscription, change: Change, mark: Mark) -> None:
        home = self._in_home()
        if home is not None:
            raise SubscriptionError(f"the drop folder {self.folder} is in OneSource's home {home} (or holds it), where "
                                    "the lake and other subscribers' deliveries are: the subscriber would read them "
                                    "there; give the subscription a folder outside it (cancel it and subscribe again)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            final = self.folder / self.file_name(sub, change, mark)
            temp = self.folder / f".{final.name}.{os.getpid()}.tmp"
            write_table(change.with_change_column(), temp, self.format)
            os.replace(temp, final)  # the subscriber's tools see a whole file or none
            _write_json(self._manifest(sub), {**asdict(mark), "file": final.name})
        except OSError as exc:
            raise SubscriptionError(f"writing to the drop folder {self.folder} failed: {exc}") from exc


def write_table(table: pa.Table, path: Path, fmt: str) -> None:
    """``table`` as CSV (UTF-8, a header row) or XLSX (one sheet), through DuckDB."""
    from core.duck import connect, literal

    con = connect(extensions=("excel",) if fmt == "xlsx" else (), threads=2)
    try:
        con.register("delivery_rows", table)
        options = "FORMAT xlsx, HEADER true" if fmt == "xlsx" else "FORMAT csv, HEADER true"
        con.execute(f"COPY (SELECT * FROM delivery_rows) TO {literal(str(path))} ({options})")
    finally:
        con.close()


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(temp, path)


# ---------------------------------------------------------------------------------------------
# Webhook
# ---------------------------------------------------------------------------------------------

class WebhookTarget:
    """A POST to the subscriber's URL; the rows are fetched with the signed link it carries."""

    def __init__(self, settings: dict, environ: Mapping[str, str] | None = None, home_settings: Settings | None = None):
        self.url = str(settings.get("url") or "")
        if not self.url.startswith(("http://", "https://")):
            raise SubscriptionError("a webhook target needs url: the subscriber's http(s) address to POST to")
        self.api = str(settings.get("api_url") or "").rstrip("/")
        if not self.api.startswith(("http://", "https://")):
            raise SubscriptionError("a webhook target needs api_url: this platform's HTTP API address, which the "
                                    "signed link points to (e.g. http://onesource.city.gov:8000)")
        self.secret_template = str(settings.get("secret") or "")
        self.hours = float(settings.get("link_hours") or 24)
        self.environ = os.environ if environ is None else environ
        self.settings = home_settings

    def where(self) -> str:
        from urllib.parse import urlsplit

        url = urlsplit(self.url)
        return f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"

    def _state(self, sub: Subscription) -> Path:
        assert self.settings is not None
        return self.settings.home / "subscriptions" / f"{sub.subscription_id}.webhook.json"

    def _expire(self, sub: Subscription, keep: Path) -> None:
        """Remove this subscription's earlier deliveries whose links have expired: rows wait in the home no
        longer than a link may fetch them."""
        import time

        limit = time.time() - self.hours * 3600
        for old in keep.parent.glob(f"{sub.subscription_id}-*.csv"):
            if old != keep and old.stat().st_mtime < limit:
                old.unlink(missing_ok=True)
                policy_of(old).unlink(missing_ok=True)

    def mark(self, sub: Subscription) -> Mark | None:
        try:
            data = json.loads(self._state(sub).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return Mark(**{k: data[k] for k in Mark.__dataclass_fields__ if k in data})

    def write(self, sub: Subscription, change: Change, mark: Mark) -> None:
        import httpx

        from sharing.subscriptions.links import outbox_path, signed_link

        assert self.settings is not None
        path = outbox_path(self.settings, mark.delivery_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{path.name}.tmp")
        write_table(change.with_change_column(), temp, "csv")
        os.chmod(temp, 0o600)
        # the policy the rows were cut under: the link serves them only while the subscriber's policy is the same
        # (sharing.subscriptions.links), so a grant narrowed or a user moved to another street stops it at once
        policy_of(path).write_text(str(mark.policy))
        os.replace(temp, path)
        self._expire(sub, path)
        link, expires = signed_link(self.settings, self.api, mark.delivery_id, dt.timedelta(hours=self.hours))
        body = json.dumps({"subscription_id": sub.subscription_id, "dataset": sub.dataset,
                           "delivery_id": mark.delivery_id, "snapshot_id": mark.snapshot_id, "load_id": mark.load_id,
                           "kind": change.kind, "rows": change.row_count, "deleted": change.deleted_count,
                           "link": link, "expires_at": expires.isoformat() + "Z"}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-OneSource-Delivery": mark.delivery_id}
        if self.secret_template:
            secret = resolve(self.secret_template, self.environ, "webhook secret").encode()
            headers["X-OneSource-Signature"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        try:
            answer = httpx.post(self.url, content=body, headers=headers, timeout=15.0)
        except httpx.HTTPError as exc:
            raise TargetUnavailable(f"the webhook {self.where()} did not answer: {type(exc).__name__}: {exc}") from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            raise TargetUnavailable(f"the webhook {self.where()} answered {answer.status_code}")
        if answer.status_code >= 300:
            raise SubscriptionError(f"the webhook {self.where()} refused the delivery: {answer.status_code} "
                                    f"{answer.text[:200]}")
        self._state(sub).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(self._state(sub), asdict(mark))


def policy_of(outbox: Path) -> Path:
    """The file beside a webhook delivery's rows holding the policy fingerprint they were cut under."""
    return outbox.with_suffix(".policy")


def target_for(kind: str, settings: dict, environ: Mapping[str, str] | None = None,
               home: Settings | None = None) -> DatabaseTarget | FilesTarget | WebhookTarget:
    """The target of ``kind`` with its settings checked (a missing table, folder or URL is refused)."""
    if kind in DatabaseTarget.EXTENSIONS:
        return DatabaseTarget(kind, settings, environ)
    if kind == "files":
        return FilesTarget(settings, home)
    if kind == "webhook":
        return WebhookTarget(settings, environ, home)
    raise SubscriptionError(f"no target kind {kind!r}")
