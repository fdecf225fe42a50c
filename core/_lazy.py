"""The one helper that imports a dependency lazily, with an error that says which extra to install.

ragzip imports at module top level, except for two kinds of dependency, which go through :func:`require` where they
are used: the optional ones (the frameworks, the peers' packages, matplotlib, peft, ...) and the required ones that
are slow to import (transformers, sentence-transformers, faiss, huggingface_hub) in the modules that ``import ragzip``
or the ``ragzip`` command load.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ragzip.errors import MissingDependencyError

# Which pip extra provides each optional top-level module.
EXTRAS: dict[str, str] = {
    "llama_index": "llamaindex",
    "nltk": "llamaindex",
    "langchain_core": "langchain",
    "langchain_classic": "langchain",
    "langchain_community": "langchain",
    "llmlingua": "peers",
    "tiktoken": "peers",
    "ragcompress": "peers",
    "matplotlib": "dev",
    "triton": "gpu",
}
# The pip name of a top-level module, where the two differ.
PIP_NAMES: dict[str, str] = {
    "faiss": "faiss-cpu",
    "huggingface_hub": "huggingface-hub",
    "sentence_transformers": "sentence-transformers",
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
        how = f"pip install 'ragzip[{extra}]'" if extra else f"pip install {PIP_NAMES.get(top, top)}"
        kind = "the optional dependency" if extra else "the dependency"
        raise MissingDependencyError(
            f"{feature or module} needs {kind} {module!r}, which is not installed; install with `{how}`."
        ) from err
