"""Subscriptions (数据回流): a department's user subscribes to a dataset and each publish delivers its view.

* :mod:`sharing.subscriptions.store`    ``ops.subscriptions`` and the delivery ledger ``ops.deliveries``
* :mod:`sharing.subscriptions.targets`  where a delivery goes: a table in the subscriber's PostgreSQL or
                                        MySQL/MariaDB, CSV/XLSX files in a drop folder, a webhook with a signed link
* :mod:`sharing.subscriptions.deliver`  one delivery: checks (grant, freezes, user), the governed query as the
                                        subscriber, the new snapshot or the changes since the target's last one
* :mod:`sharing.subscriptions.links`    signed, expiring links to a webhook delivery's rows over the HTTP API
* :mod:`onesource.subscriptions_dag`      the Airflow DAG that delivers whenever a dataset's Asset is updated
* :mod:`sharing.subscriptions.cli`      ``onesource subscriptions add | list | cancel | deliver``

What a subscriber receives is exactly what it would get from ``SELECT * FROM shared.<dataset>`` through the
governed engine (sharing.engine) as that department and user at the delivered snapshot: columns, masks, row
filters and jurisdiction scoping all apply, and each delivery is audited like that query (purpose
``subscription:<id>``), so deliveries count as use in the KPIs. The target holds the snapshot it was last
given in the same transaction as the rows, so a rerun or a crash never delivers twice.
"""
