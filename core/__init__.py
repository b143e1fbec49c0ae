"""The shared base every OneSource package stands on, and nothing else: the root error type
(:mod:`core.errors`), settings (:mod:`core.config`), DuckDB connections with extensions loaded from their
packages (:mod:`core.duck`), log safety (:mod:`core.logsafe`) and lazy package names (:mod:`core.lazy`).

It imports no other OneSource package (the layer contract in ``make lint`` holds it to that).
"""
