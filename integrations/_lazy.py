"""The one helper that imports optional framework dependencies, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ragzip.errors import MissingDependencyError

# Which pip extra provides each optional top-level module.
EXTRAS: dict[str, str] = {
    "llama_index": "llamaindex",
    "langchain_core": "langchain",
    "langchain_classic": "langchain",
    "langchain_community": "langchain",
}


def require(module: str, *, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`~ragzip.errors.MissingDependencyError` naming the pip extra to install.

    Args:
        module: Dotted module name, e.g. ``"llama_index.core"``.
        extra: The ragzip extra that installs it; looked up from the module's top-level name when ``None``.
        feature: What needs it, for the message (defaults to the module name).

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        missing = getattr(err, "name", None) or module
        # Only translate "the framework is absent"; a broken install (an ImportError inside it) must surface as is.
        if missing.split(".")[0] != top:
            raise
        extra = extra or EXTRAS.get(top)
        how = f"pip install 'ragzip[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(
            f"{feature or module} needs the optional dependency {module!r}, which is not installed; "
            f"install with `{how}`."
        ) from err
