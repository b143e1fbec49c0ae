"""The registry: departments, data elements, code lists and datasets ("one source, many uses").

>>> from schemas import load_registry
>>> registry = load_registry(settings.registry_dir)   # raises RegistryError listing file:line issues
"""

from schemas.exceptions import Issue, RegistryError, UnknownNameError
from schemas.loader import check_registry, load_registry
from schemas.model import Column, ConnectorSpec, Dataset, Department, Element, Registry

__all__ = [
    "Column",
    "ConnectorSpec",
    "Dataset",
    "Department",
    "Element",
    "Issue",
    "Registry",
    "RegistryError",
    "UnknownNameError",
    "check_registry",
    "load_registry",
]
