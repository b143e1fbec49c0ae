"""OneSource ingestion DAGs, generated from the registry in $ONESOURCE_HOME/registry.

Thin on purpose: wiring only (see onesource/dagfactory.py). The words "airflow" and "dag" must
stay in this file: Airflow's safe-mode discovery skips files that lack them.
"""

from core.config import Settings
from onesource.dagfactory import build_dags

_settings = Settings.from_env()
globals().update(build_dags(_settings.registry_dir, _settings.cache_dir))
