"""OneSource subscriptions (数据回流): delivers each publish to its subscribers; built from the registry.

Thin on purpose: wiring only (see onesource/subscriptions_dag.py). The words "airflow" and "dag" must stay in
this file: Airflow's safe-mode discovery skips files that lack them.
"""

from core.config import Settings
from onesource.subscriptions_dag import build_dag

_settings = Settings.from_env()
globals().update(build_dag(_settings.registry_dir, _settings.cache_dir))
