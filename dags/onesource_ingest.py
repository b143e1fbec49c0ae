"""OneSource ingestion DAGs, generated from the registry in $ONESOURCE_HOME/registry.

Thin on purpose: wiring only. See onesource/dagfactory.py.
"""

from onesource.config import Settings
from onesource.dagfactory import build_dags

globals().update(build_dags(Settings.from_env().registry_dir))
