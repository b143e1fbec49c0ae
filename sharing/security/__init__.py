"""Emergency response (应急响应): detect misuse, contain it at once, find out exactly who saw what.

* :mod:`sharing.security.alerts`  baselines of governed use from the audit trail, and alerts when use departs
                                  from them (``ops.security_alerts``; ``onesource security scan | alerts``)
* :mod:`sharing.security.freeze`  one command to stop a user, a department or a dataset everywhere, and key
                                  rotation (``onesource security freeze | unfreeze | freezes | rotate-keys``)
* :mod:`sharing.security.replay`  who saw a record: audited queries replayed at the snapshot they read, under
                                  the policy they ran under (``onesource security who-saw``)

The runbook is docs/security.md. Each module adds its own subcommands (:func:`sharing.security.cli.add_parser`).
"""
