"""Grants and what each department may see: deny by default.

* ``unconditional`` datasets: every department reads every column (sensitive ones masked);
* ``conditional`` datasets: only with an active grant (its columns, its row filter, until it expires);
* ``not_shared`` datasets: nobody but the owner;
* the owner always reads its own datasets in full;
* a grant may be scoped to the **jurisdiction** (``scope='jurisdiction'``): each user of the department then
  reads only the rows whose division code (the dataset's ``division_column``) lies under the division code of
  the user's organisation (a district's 430104, a street's 430104001). The filter is made here, never written
  by hand, and combines with the grant's own row filter (both hold). Deny by default: a user of an organisation
  the registry does not list, or a dataset without a division column, gets no row through such a grant; a user
  with no organisation (and a query naming no user: the CLI's operator) is the city's and reads every row.
  The owner's own users of a district or street likewise read only their jurisdiction's rows of the owner's
  datasets that declare a division column; unconditional datasets stay whole for everyone;
* a grant may also allow **matching** a masked column (``match_value(resident_id, '...')`` in SQL): equality
  against values the department supplies, within a daily quota per column (sharing.match).

A row filter is a governed expression (sharing.policy.normalise_row_filter): validated when it is
granted, stored in its normal form, and validated again when it is read, so a filter written before
the rules existed (or edited in the lake) makes the grant unusable with the reason, never runs raw.

Grants live in the lake (``ops.grants``), so a revocation or an expiry takes effect on the next query.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import duckdb

from core.citytime import utc_now
from lakehouse import ledger
from lakehouse.lake import Lake, retrying
from schemas.model import Dataset, Registry
from sharing.exceptions import QueryRefused

MASKED_LEVEL = 3
"""Elements at this sensitivity level or above are masked for every department but the owner."""
DEFAULT_MATCH_QUOTA = 1000
"""Distinct values a day a department may match against one masked column, unless the grant says."""
SCOPES: dict[str, str] = {
    "all": "every row the grant's row filter admits, to every user of the department",
    "jurisdiction": "each user reads only the rows under its organisation's division code (the dataset's "
                    "division_column); a user with no organisation is the city's",
}
"""What rows a grant gives, by the requester's organisation (``ops.grants.scope``)."""
NOTHING = "false"
"""The row filter of a jurisdiction grant for a requester under which no row can lie: no row at all."""


@dataclass(frozen=True)
class Grant:
    grant_id: str
    department: str
    dataset: str
    columns: tuple[str, ...] | None
    row_filter: str | None
    expires_at: dt.datetime | None
    match: dict[str, int] = field(default_factory=dict)
    """column -> how many distinct values a day the department may match against it."""
    scope: str = "all"
    """``all`` or ``jurisdiction`` (:data:`SCOPES`)."""


@dataclass(frozen=True)
class Access:
    """What one department may read of one dataset."""

    dataset: str
    columns: tuple[str, ...]
    row_filters: tuple[str, ...] = ()
    """OR-ed together; empty means every row."""
    masked: dict[str, str] = field(default_factory=dict)
    """column -> masking rule (see sharing.policy.MASKS)."""
    match: dict[str, int] = field(default_factory=dict)
    """masked column -> daily quota of distinct values the department may match against it."""
    problem: str | None = None
    """Set when a grant cannot be applied as stored (an invalid row filter): queries are refused with it."""
    column_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """column -> the row filters under which it may be read, OR-ed, where narrower than ``row_filters``: with
    several grants, each column is readable only on the rows of a grant that gives it (grant A's columns on
    A's rows, B's on B's), never the union of one's columns with the other's rows."""


def add_grant(lake: Lake, registry: Registry, department: str, dataset: str, *, columns: list[str] | None = None,
              row_filter: str | None = None, expires_at: dt.datetime | None = None, granted_by: str = "owner",
              purpose: str | None = None, match: list[str] | None = None,
              match_quota: int = DEFAULT_MATCH_QUOTA, scope: str = "all") -> str:
    """Grant ``department`` access; the row filter is validated and stored normalised, ``match`` names the
    masked columns it may match values against (``match_quota`` distinct values a day each), ``scope``
    ``jurisdiction`` gives each user only the rows under its organisation (:data:`SCOPES`)."""
    ds = registry.dataset(dataset)
    registry.department(department)
    checked_scope(scope, ds)
    if ds.share_type == "not_shared":
        raise QueryRefused(f"{dataset} is not_shared ({ds.legal_basis}); it cannot be granted")
    unknown = sorted(set(columns or ()) - {c.name for c in ds.columns})
    if unknown:
        raise QueryRefused(f"{dataset} has no column(s) {', '.join(unknown)}")
    row_filter = checked_row_filter(row_filter, ds) if row_filter and row_filter.strip() else None
    masks = _masks(ds, registry)
    for column in match or ():
        if column not in masks:
            raise QueryRefused(f"{dataset}.{column} is not a masked column: match is for masked elements "
                               f"(masked here: {', '.join(sorted(masks)) or 'none'})")
        if columns and column not in columns:
            raise QueryRefused(f"{dataset}.{column} can only be matched when it is among the granted columns")
    if match and match_quota < 1:
        raise QueryRefused("the match quota is a number of values a day, at least 1")
    grant_id = uuid.uuid4().hex[:12]

    def write() -> None:
        with lake.transaction() as con:
            ledger.append(con, "grants", {
                "grant_id": grant_id, "department": department, "dataset": dataset, "columns": columns,
                "row_filter": row_filter, "expires_at": expires_at, "granted_by": granted_by, "granted_at": utc_now(),
                "revoked_at": None, "purpose": purpose, "scope": scope})
            ledger.append(con, "grant_matches", *(ledger.GrantMatchRow(grant_id=grant_id, column_name=column,
                                                                       daily_quota=match_quota) for column in match or ()))
            lake.commit_message(f"grant {dataset} to {department}", {"grant_id": grant_id})

    retrying(write, lake.settings.commit_retries, "recording a grant")
    return grant_id


def checked_scope(scope: str, ds: Dataset) -> None:
    """``scope`` is one of :data:`SCOPES`, and a jurisdiction scope is on a dataset that says where its rows are."""
    if scope not in SCOPES:
        raise QueryRefused(f"no grant scope {scope!r}: one of {', '.join(SCOPES)} ("
                           + "; ".join(f"{k}: {v}" for k, v in SCOPES.items()) + ")")
    if scope == "jurisdiction" and not ds.division_column:
        raise QueryRefused(f"{ds.name} declares no division_column, so its rows cannot be placed in a jurisdiction; "
                           f"its owner ({ds.owner}) adds 'division_column: <the column of division codes>' to the "
                           "dataset's registry file first")


def jurisdiction(registry: Registry, organisation: str | None) -> str | None:
    """The significant digits of the requester's jurisdiction: None for the whole city (no organisation, or
    the city itself), :data:`NOTHING` for an organisation the registry does not list (deny by default)."""
    if organisation is None:
        return None
    org = next((o for o in registry.organisations if o.code == organisation), None)
    if org is None or org.level is None:
        return NOTHING
    return None if org.level == "city" else org.prefix


def jurisdiction_filter(ds: Dataset, prefix: str | None) -> str | None:
    """The row filter a jurisdiction grant adds for a requester of ``prefix`` (:func:`jurisdiction`), in its
    normal form: rows whose division code is a well-formed code (6, 9 or 12 digits) starting with the prefix,
    so that a malformed code (430104001 with a digit too many) is nobody's but the city's. None: every row."""
    if prefix is None:
        return None
    if prefix == NOTHING or not ds.division_column or not prefix.isdigit() or len(prefix) > 12:
        return NOTHING
    from sqlglot import exp

    rest = f"\\d{{{6 - len(prefix)}}}(\\d{{3}}){{0,2}}" if len(prefix) < 6 else f"(\\d{{3}}){{0,{(12 - len(prefix)) // 3}}}"
    return exp.func("regexp_matches", exp.column(ds.division_column, quoted=True),
                    exp.Literal.string(f"^{prefix}{rest}$")).sql(dialect="duckdb")


def checked_row_filter(text: str, ds: Dataset) -> str:
    """``text`` as a governed row filter (sharing.policy.normalise_row_filter) that DuckDB can also apply to
    the dataset's columns as typed: refused now, with the reason, rather than failing every later query."""
    from sharing.policy import normalise_row_filter

    normal = normalise_row_filter(text, ds)
    reason = unbindable(normal, ds)
    if reason:
        raise QueryRefused(f"the row filter {text!r} cannot be applied to {ds.name}: {reason}; write it for "
                           f"the columns of {ds.name} as they are typed ({_typed(ds)})")
    return normal


def unbindable(normal: str, ds: Dataset) -> str | None:
    """Why DuckDB cannot apply a normalised row filter to ``ds``'s columns (a comparison of mismatched types,
    a literal that does not convert, a function that does not take the column, not a condition), else None.
    Costs an in-memory DuckDB (some 50 ms): paid when a filter is granted, or when a query through one fails."""
    columns = ", ".join(f"CAST(NULL AS {c.duck_type}) AS \"{c.name}\"" for c in ds.columns)
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        kind = con.execute(f"SELECT typeof(({normal})) FROM (SELECT {columns})").fetchone()[0]
        con.execute(f"SELECT count(*) FROM (SELECT {columns}) WHERE ({normal})").fetchall()
    except duckdb.Error as exc:
        return str(exc).split("\n")[0]
    finally:
        con.close()
    return None if kind in ("BOOLEAN", '"NULL"', "NULL") else f"it is a {kind} value, not a condition (true or false)"


def _typed(ds: Dataset) -> str:
    return ", ".join(f"{c.name} {c.duck_type}" for c in ds.columns)


def revoke_grant(lake: Lake, grant_id: str) -> None:
    """Revoke an active grant; an unknown or already revoked ``grant_id`` is refused with the reason."""
    if not grant_id:
        raise QueryRefused("name the grant to revoke: --grant-id ID (`onesource grants list` shows them)")
    found = lake.con.execute(f"SELECT revoked_at FROM {ledger.ref('grants')} WHERE grant_id = ?", [grant_id]).fetchall()
    if not found:
        raise QueryRefused(f"no grant {grant_id!r}; `onesource grants list` shows every grant and its id")
    if found[0][0] is not None:
        raise QueryRefused(f"grant {grant_id} was already revoked at {found[0][0]:%Y-%m-%d %H:%M} (UTC)")

    def write() -> None:
        with lake.transaction() as con:
            ledger.revoke_grant(con, grant_id, utc_now())
            lake.commit_message(f"revoke grant {grant_id}", {"grant_id": grant_id})

    retrying(write, lake.settings.commit_retries, "revoking a grant")


def active_grants(lake: Lake, department: str, at: dt.datetime | None = None) -> list[Grant]:
    # the tables are read straight away: asking the catalog whether they exist first cost a query of its own
    # (a DuckLake information_schema lookup: a third of a CLI query's grant lookup)
    at = at or utc_now()
    try:
        rows = lake.con.execute(
            f"SELECT grant_id, department, dataset, columns, row_filter, expires_at, coalesce(scope, 'all') "
            f"FROM {ledger.ref('grants')} WHERE department = ? AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?)", [department, at]).fetchall()
    except duckdb.BinderException:  # a lake not written since grant scopes came: every grant is for all rows
        rows = [(*r, "all") for r in lake.con.execute(
            f"SELECT grant_id, department, dataset, columns, row_filter, expires_at FROM {ledger.ref('grants')} "
            "WHERE department = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
            [department, at]).fetchall()]
    except duckdb.CatalogException:  # a lake nothing was written to yet: no grants table, no grant
        return []
    matches: dict[str, dict[str, int]] = {}
    if rows:
        try:
            found = lake.con.execute(f"SELECT grant_id, column_name, daily_quota FROM {ledger.ref('grant_matches')} "
                                     "WHERE list_contains(?, grant_id)", [[r[0] for r in rows]]).fetchall()
        except duckdb.CatalogException:  # a lake from before match grants
            found = []
        for grant_id, column, quota in found:
            matches.setdefault(grant_id, {})[column] = quota
    return [Grant(g, d, ds, tuple(c) if c is not None else None, f, e, matches.get(g, {}), s)
            for g, d, ds, c, f, e, s in rows]


def _masks(ds: Dataset, registry: Registry) -> dict[str, str]:
    out = {}
    for col in ds.columns:
        if not col.element:
            continue
        el = registry.element(col.element)
        if el.sensitivity >= MASKED_LEVEL:
            fmt = col.format or el.format
            out[col.name] = fmt if fmt in ("resident_id", "mobile", "phone") else ("text" if col.type == "string"
                                                                                     else "null")
    return out


def visible(registry: Registry, grants: list[Grant], department: str,
            organisation: str | None = None) -> dict[str, Access]:
    """dataset -> Access, for every dataset the department may read now; absent means refused.
    ``organisation``: the requesting user's (a division code; None: the city), which a grant scoped to the
    jurisdiction turns into a row filter of its own (:func:`jurisdiction_filter`)."""
    from sharing.policy import normalise_row_filter

    registry.department(department)
    prefix = jurisdiction(registry, organisation)
    by_dataset: dict[str, list[Grant]] = {}
    for g in grants:
        by_dataset.setdefault(g.dataset, []).append(g)
    out = {}
    for ds in registry.datasets:
        every = tuple(c.name for c in ds.columns)
        if ds.owner == department:
            # a district's or street's user of the owner reads its own department's rows of its jurisdiction
            place = jurisdiction_filter(ds, prefix) if ds.division_column else None
            out[ds.name] = Access(ds.name, every, (place,) if place else ())
        elif ds.share_type == "unconditional":
            masks = _masks(ds, registry)
            out[ds.name] = Access(ds.name, every, masked=masks,
                                  match=_match(by_dataset.get(ds.name, []), masks))
        elif ds.share_type == "conditional" and ds.name in by_dataset:
            gs = by_dataset[ds.name]
            cols = every if any(g.columns is None for g in gs) else tuple(
                c for c in every if any(c in g.columns for g in gs))
            problem, per_column = None, {}
            try:
                normal = {g.grant_id: _scoped(normalise_row_filter(g.row_filter, ds) if g.row_filter else None,
                                              jurisdiction_filter(ds, prefix) if g.scope != "all" else None)
                          for g in gs}
                filters = () if None in normal.values() else tuple(dict.fromkeys(normal.values()))
                for c in cols:
                    giving = [normal[g.grant_id] for g in gs if g.columns is None or c in g.columns]
                    own = () if None in giving else tuple(dict.fromkeys(giving))
                    if own != filters:
                        per_column[c] = own
            except QueryRefused as exc:
                bad = next((g for g in gs if g.row_filter and _invalid(g.row_filter, ds)), gs[0])
                filters, problem = (), f"grant {bad.grant_id} to {department}: its row filter cannot be " \
                    f"applied ({exc}); ask {ds.owner} to revoke it (onesource grants revoke --grant-id " \
                    f"{bad.grant_id}) and grant again with a valid filter"
            masks = {k: v for k, v in _masks(ds, registry).items() if k in cols}
            out[ds.name] = Access(ds.name, cols, filters, masks, _match(gs, masks), problem, per_column)
    return out


def _scoped(own: str | None, place: str | None) -> str | None:
    """A grant's row filter within its jurisdiction: both must hold (either alone when the other is None)."""
    if own is None or place is None:
        return own if place is None else place
    if place == NOTHING:
        return NOTHING
    return f"({own}) AND ({place})"


def _invalid(row_filter: str, ds: Dataset) -> bool:
    from sharing.policy import normalise_row_filter

    try:
        normalise_row_filter(row_filter, ds)
    except QueryRefused:
        return True
    return False


def _match(grants: list[Grant], masks: dict[str, str]) -> dict[str, int]:
    """Masked column -> the largest daily match quota any of the grants gives on it."""
    out: dict[str, int] = {}
    for g in grants:
        for column, quota in g.match.items():
            if column in masks:
                out[column] = max(out.get(column, 0), quota)
    return out
