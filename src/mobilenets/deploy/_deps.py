"""Optional dependencies of the deployment tools, imported on first use with an actionable error."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# the extra that provides each optional top-level module; anything else comes with ``export``
EXTRAS = {
    "openvino": "openvino",
    **{module: "mobile" for module in ("executorch", "litert_torch", "ai_edge_litert", "coremltools")},
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top, "export")
        hint = f"pip install 'mobilenets[{extra}]'"
        try:
            installed = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):  # find_spec raises for a module blocked in sys.modules
            installed = False
        if installed:  # present but too old (or broken): the submodule we need is missing
            raise ImportError(
                f"{module} could not be imported ({exc}); install a version that has it: {hint} --upgrade"
            ) from None
        raise ImportError(f"{top} is not installed ({exc}); install the {extra} extra: {hint}") from None
