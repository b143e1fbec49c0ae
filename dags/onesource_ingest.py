"""OneSource ingestion DAGs, generated from the registry in $ONESOURCE_HOME/registry.

Thin on purpose: wiring only (see onesource/dagfactory.py). The words "airflow" and "dag" must
stay in this file: Airflow's safe-mode discovery skips files that lack them.
"""

from onesource.config import Settings
from onesource.dagfactory import build_dags

globals().update(build_dags(Settings.from_env().registry_dir))
