"""The YAML file that configures a whole pipeline: ``retriever:``, ``compressor:`` and ``generator:``.

Example ``ragzip.yaml``::

    retriever:
      embedder: embedded:minilm
      top_k: 5
      index_path: ./index
    compressor:            # one block, or a list = a chain run in order
      type: extractive
      threshold: 0.5
    generator:
      model: embedded:smollm2-135m
      max_new_tokens: 32

Unknown keys are errors that name the key and the close match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ragzip.compressor import get_compressor_class
from ragzip.config_utils import brief, from_dict, to_dict, unknown_key_message
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig
from ragzip.retrieval import RetrieverConfig

SECTIONS = ("retriever", "compressor", "generator")


@dataclass
class RagzipConfig:
    """A parsed ragzip YAML: retriever, compressor chain (validated dicts, ``type`` first) and generator."""

    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    compressor: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "none"}])
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, in the shape of the YAML it was read from (``retriever``, ``compressor``, ...)."""
        return {"retriever": to_dict(self.retriever), "compressor": list(self.compressor),
                "generator": to_dict(self.generator)}


def validate_compressor_block(block: Any) -> list[dict[str, Any]]:
    """Check a ``compressor:`` block (a mapping or a list of mappings) without loading any model."""
    blocks = block if isinstance(block, list) else [block]
    if not blocks:
        raise ConfigError("compressor: is an empty list; give at least one block, e.g. `- type: none`.")
    out = []
    for i, item in enumerate(blocks):
        where = f"compressor[{i}]" if isinstance(block, list) else "compressor"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a mapping with a `type:` key, got {brief(item)}.")
        data = dict(item)
        if "type" not in data:
            raise ConfigError(f"{where} has no `type:` key. Add one, e.g. `type: extractive`.")
        klass = get_compressor_class(str(data["type"]))
        from_dict(klass.config_class, {k: v for k, v in data.items() if k != "type"}, where=f"{where}[{klass.name}]")
        out.append(data)
    return out


def parse_config(data: Any, *, source: str | None = None) -> RagzipConfig:
    """Build a :class:`RagzipConfig` from the parsed YAML mapping."""
    where = source or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping with keys {', '.join(SECTIONS)}; got "
                          f"{type(data).__name__}.")
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(unknown_key_message(str(key), list(SECTIONS), where))
    return RagzipConfig(
        retriever=from_dict(RetrieverConfig, data.get("retriever"), where="retriever"),
        compressor=validate_compressor_block(data.get("compressor", {"type": "none"})),
        generator=from_dict(GeneratorConfig, data.get("generator"), where="generator"),
        source=source,
    )


MAX_CONFIG_VALUES = 100_000
"""Most values a ragzip YAML may hold once its aliases are expanded (real configs hold a few dozen)."""


def _check_expansion(data: Any, where: str) -> None:
    """Refuse a YAML whose aliases expand to more than :data:`MAX_CONFIG_VALUES` values (a "billion laughs" bomb).

    YAML aliases share one object, so the parsed data is small; anything that walks it (validation, an error message
    that shows a value) would expand it. The expanded size is counted per shared object (memoised by id), without
    expanding anything.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (list, dict)) or (id(node) in sizes and not done):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if not done:
            sizes[id(node)] = 0  # in progress: a cycle counts as nothing more
            stack.append((node, True))
            stack.extend((c, False) for c in children)
            continue
        total = 1 + sum(sizes.get(id(c), 0) if isinstance(c, (list, dict)) else 1 for c in children)
        sizes[id(node)] = total
        if total > MAX_CONFIG_VALUES:
            raise ConfigError(f"config file {where!r} expands to more than {MAX_CONFIG_VALUES:,} values through "
                              "YAML aliases (&anchor / *alias); a ragzip config holds a few dozen. Remove the "
                              "aliases that repeat large blocks.")


def load_config(path: str | Path) -> RagzipConfig:
    """Read and validate a ragzip YAML file.

    Raises:
        ConfigError: the file is missing, is not valid YAML (the message gives line and column), or has an unknown
            or ill-typed key (the message names it and suggests the close match).

    Example:
        >>> cfg = load_config("examples/ragzip.yaml")  # doctest: +SKIP
        >>> cfg.compressor[0]["type"]  # doctest: +SKIP
        'extractive'
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found. Pass the path of a ragzip YAML "
                          "(see examples/ragzip.yaml).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start}). Save it as UTF-8.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}: {problem}. Check the indentation "
                          "and quoting there.") from None
    _check_expansion(data, str(path))
    config = parse_config(data, source=str(path))
    _resolve_relative_paths(config, path.parent)
    return config


def _resolve_relative_paths(config: RagzipConfig, base: Path) -> None:
    """Relative ``corpus``/``index_path`` in a YAML file are relative to that file, not to the working directory."""
    for name in ("corpus", "index_path"):
        value = getattr(config.retriever, name)
        if value and not Path(value).expanduser().is_absolute():
            setattr(config.retriever, name, str(base / value))
