"""Optional dependencies of the deployment tools, imported on first use with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_HINT = "pip install 'mobilenets[export]'"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{top} is not installed ({exc}); install the export extra: {EXTRA_HINT}") from None
