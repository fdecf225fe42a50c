"""ragzip's compressors, one folder each; importing this package registers them all, each with what it declares for
the app (:class:`ragzip.compressor.CompressorInfo`: trainer, demo config, budget field, bench aliases, ...).

Heavy dependencies (torch models) load lazily inside each plugin, so importing the registry is cheap.
"""

from __future__ import annotations

import importlib

PLUGINS = ("baseline", "extractive", "abstractive", "xrag", "refrag", "route")

for _name in PLUGINS:
    try:
        importlib.import_module(f"ragzip.plugins.{_name}")
    except ModuleNotFoundError as err:  # a plugin folder left out of the build (a slim build)
        if err.name != f"ragzip.plugins.{_name}":
            raise

