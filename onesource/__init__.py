"""OneSource: cross-department data sharing, one source and many uses.

The platform's stages live in their own top-level packages (``connectors``, ``schemas``,
``quality``, ``lakehouse``, ``sharing``, ``metrics``); this package holds what ties them
together: settings, the root error type, the demo city and the CLI.
"""

__version__ = "0.1.0"
