"""``onesource subscriptions add | list | cancel | deliver | deliveries`` (数据回流).

Imports stay light at parse time (every ``onesource`` command builds the whole parser): the lake, the engine
and the targets are imported inside the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subscriptions", help="数据回流: deliver a department's view of a dataset on every publish "
                                             "to its own PostgreSQL/MySQL table, CSV/XLSX drop folder or webhook")
    actions = p.add_subparsers(dest="subscriptions_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="subscribe a department's user to a dataset (under a grant, or an open "
                                         "dataset)")
    add.add_argument("dataset")
    add.add_argument("--department", required=True, help="the subscribing department")
    add.add_argument("--user", required=True, help="its user whose policy view is delivered")
    add.add_argument("--target", required=True, choices=["postgres", "mysql", "files", "webhook"])
    add.add_argument("--mode", default="snapshot", choices=["snapshot", "changes"],
                     help="snapshot: the whole view replaces the target's; changes: only the rows changed since the "
                          "target's last delivery (needs the dataset's key)")
    add.add_argument("--dsn", help="postgres/mysql: the connection string; a password as ${VARIABLE}, never in clear")
    add.add_argument("--table", help="postgres/mysql: [schema.]table to deliver into (created when missing)")
    add.add_argument("--folder", help="files: the drop folder (absolute path)")
    add.add_argument("--format", default="csv", choices=["csv", "xlsx"], help="files: the files' format")
    add.add_argument("--url", help="webhook: the subscriber's URL to POST each delivery to")
    add.add_argument("--api-url", help="webhook: this platform's HTTP API address (the signed link points there)")
    add.add_argument("--secret", help="webhook: ${VARIABLE} naming the secret the POST is signed with (HMAC-SHA256)")
    add.add_argument("--link-hours", type=float, default=24, help="webhook: how long the signed link works")
    add.add_argument("--by", default=None, help="who subscribes (recorded; default $USER)")
    add.set_defaults(subscriptions_fn=_add)

    ls = actions.add_parser("list", help="subscriptions and their last delivery")
    ls.add_argument("--all", action="store_true", help="cancelled ones too")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(subscriptions_fn=_list)

    cancel = actions.add_parser("cancel", help="stop a subscription (what its target holds stays)")
    cancel.add_argument("subscription_id")
    cancel.add_argument("--by", default=None)
    cancel.set_defaults(subscriptions_fn=_cancel)

    deliver = actions.add_parser("deliver", help="deliver what is new now (what the subscriptions DAG runs on "
                                                 "every publish)")
    deliver.add_argument("subscription_id", nargs="?", help="one subscription (default: every active one)")
    deliver.add_argument("--dataset", action="append", help="only subscriptions of this dataset (repeatable)")
    deliver.add_argument("--json", action="store_true")
    deliver.set_defaults(subscriptions_fn=_deliver)

    ledger = actions.add_parser("deliveries", help="the delivery ledger: every delivery tried (delivered, refused "
                                                    "or failed) and why")
    ledger.add_argument("subscription_id", nargs="?")
    ledger.add_argument("--json", action="store_true")
    ledger.set_defaults(subscriptions_fn=_deliveries)
    p.set_defaults(fn=cmd_subscriptions)


def cmd_subscriptions(args: argparse.Namespace, settings: Settings) -> int:
    return args.subscriptions_fn(args, settings)


def _by(args: argparse.Namespace) -> str:
    import getpass

    return args.by or getpass.getuser()


def _target(args: argparse.Namespace) -> dict:
    if args.target in ("postgres", "mysql"):
        return {"dsn": args.dsn or "", "table": args.table or ""}
    if args.target == "files":
        return {"folder": args.folder or "", "format": args.format}
    out = {"url": args.url or "", "api_url": args.api_url or "", "link_hours": args.link_hours}
    if args.secret:
        out["secret"] = args.secret
    return out


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from lakehouse import Lake
    from schemas import load_registry
    from sharing.subscriptions import store

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake) as lake:
        sub = store.add(lake, registry, department=args.department, user=args.user, dataset=args.dataset,
                        target_kind=args.target, target=_target(args), mode=args.mode, by=_by(args))
    print(f"subscribed {sub.department}/{sub.user} to {sub.dataset} ({sub.mode} into {sub.target_kind}): "
          f"subscription {sub.subscription_id}; `onesource subscriptions deliver {sub.subscription_id}` delivers now, "
          "the subscriptions DAG on every publish")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from core.output import cell, print_json, print_table
    from lakehouse import Lake
    from sharing.subscriptions import store

    with Lake(settings.lake, read_only=True) as lake:
        subs = store.subscriptions(lake, active=not args.all)
        last = {}
        for d in store.deliveries(lake):
            last[d.subscription_id] = d
    records = [{"subscription_id": s.subscription_id, "department": s.department, "user": s.user,
                "dataset": s.dataset, "target": s.target_kind, "where": _where(s), "mode": s.mode,
                "created_at": s.created_at, "cancelled_at": s.cancelled_at,
                "last_status": last[s.subscription_id].status if s.subscription_id in last else None,
                "last_at": last[s.subscription_id].finished_at if s.subscription_id in last else None}
               for s in subs]
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no subscriptions yet: onesource subscriptions add DATASET --department D --user U --target ...")
        return 0
    from rich.console import Console

    print_table(Console(), list(records[0]), ([cell(v) for v in r.values()] for r in records),
                title=f"{len(records)} subscription(s)", whole=("subscription_id",))
    return 0


def _where(sub) -> str:
    from sharing.subscriptions.targets import target_for

    try:
        return target_for(sub.target_kind, sub.target, {}).where()
    except Exception:  # noqa: BLE001 - a listing shows what it can
        return ""


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    from lakehouse import Lake
    from sharing.subscriptions import store

    with Lake(settings.lake) as lake:
        store.cancel(lake, args.subscription_id, by=_by(args))
    print(f"cancelled subscription {args.subscription_id}: no further deliveries")
    return 0


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from core.output import print_json
    from lakehouse import Lake
    from schemas import load_registry
    from sharing.subscriptions import store
    from sharing.subscriptions.deliver import deliver, deliver_all

    registry = load_registry(settings.registry_dir, settings.cache_dir)
    if args.subscription_id:
        with Lake(settings.lake, read_only=True) as lake:
            sub = store.subscription(lake, args.subscription_id)
        outcomes = [deliver(settings, registry, sub)]
    else:
        outcomes = deliver_all(settings, registry, datasets=set(args.dataset) if args.dataset else None)
    if args.json:
        print_json([asdict(o) for o in outcomes])
    else:
        for o in outcomes:
            what = f"{o.kind} {o.rows} row(s)" + (f", {o.deleted} removed" if o.deleted else "") if o.kind else ""
            print(f"{o.subscription_id}: {o.status}" + (f" {what}" if what else "")
                  + (f" ({o.message})" if o.message else ""))
        if not outcomes:
            print("no active subscriptions")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"{len(failed)} deliver(ies) failed; the ledger says why (onesource subscriptions deliveries)",
              file=sys.stderr)
    return 1 if failed else 0


def _deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from core.output import cell, print_json, print_table
    from lakehouse import Lake
    from sharing.subscriptions import store

    with Lake(settings.lake, read_only=True) as lake:
        rows = [asdict(d) for d in store.deliveries(lake, args.subscription_id)]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no deliveries yet")
        return 0
    from rich.console import Console

    print_table(Console(), list(rows[0]), ([cell(v) for v in r.values()] for r in rows),
                title=f"{len(rows)} deliver(ies)", whole=("delivery_id",))
    return 0
