"""ragzip's compressors, one folder each; importing this package registers them all, each with what it declares for
the app (:class:`ragzip.compressor.CompressorInfo`: trainer, demo config, budget field, bench aliases, ...).

Heavy dependencies (torch models) load lazily inside each plugin, so importing the registry is cheap.
"""

from __future__ import annotations

import importlib
import sys

PLUGINS = ("baseline", "extractive", "abstractive", "xrag", "refrag", "route")

for _name in PLUGINS:
    try:
        importlib.import_module(f"ragzip.plugins.{_name}")
    except ModuleNotFoundError as err:  # a plugin folder that is not there yet (or was left out of a slim build)
        if err.name != f"ragzip.plugins.{_name}":
            raise


def _declare_refrag() -> None:
    """What refrag adds to the app (its index-time chunk cache, ``ragzip ttft``), while its own ``register_compressor``
    call does not declare it yet; this goes into ``plugins/refrag/__init__.py`` once that folder's rewrite lands."""
    from ragzip.compressor import Command, IndexCache, compressor_info, register_compressor

    refrag = sys.modules.get("ragzip.plugins.refrag")
    if refrag is None or compressor_info("refrag").index_cache is not None or compressor_info("refrag").commands:
        return  # not in this build, or it declares them itself
    register_compressor(
        refrag.RefragCompressor,
        index_cache=IndexCache("ragzip.plugins.refrag.cache:build_refrag_cache",
                               "also cache REFRAG chunk embeddings beside the index", options=("k",)),
        commands={"ttft": Command("ragzip.plugins.refrag.ttft", "time to first token: full context vs REFRAG")},
    )


_declare_refrag()
