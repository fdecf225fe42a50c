"""The ``--methods`` language of ``ragzip bench`` (``ragzip demo --methods`` reads it too): names, variants, sweeps.

Nothing here names a compressor: the names, short aliases and budgets come from what each compressor declared when
it registered (:class:`ragzip.compressor.CompressorInfo`) and from the peers' declarations
(:data:`ragzip.bench.peers.PEER_DECLARATIONS`).

Example:
    >>> parse_method("extractive:t0.3").options
    {'threshold': 0.3}
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from ragzip.bench.peers import PEER_CLASSES, PEER_DECLARATIONS, PEERS
from ragzip.compressor import CompressorInfo, compressor_info, get_compressor_class, registered_compressors
from ragzip.config_utils import field_names, from_dict
from ragzip.errors import ConfigError
from ragzip.plugins import PLUGINS

NO_CONTEXT = "no_context"  # the question alone: the bench's own row, not a compressor


@dataclass(frozen=True)
class MethodSpec:
    """One ``--methods`` entry.

    Attributes:
        label: The text as written (the key in the results).
        name: The base method: ``no_context``, ``none``, ``truncate``, a peer, a ragzip compressor type, or a label
            from ``--config``.
        kind: ``"no_context"``, ``"ragzip"`` (a registered compressor or a config method), ``"peer"`` or
            ``"absent"`` (a ragzip plugin that is not in this build: reported as skipped).
        options: Config overrides from the variant.
        config: The full compressor config (a dict with ``type``, or a list for a chain) for ragzip methods.
        budgeted: True for a plain method that declares ``equal_budget`` (``truncate``, ``longllmlingua``): its
            budget comes from the reference method.
        family: The operating curve this setting is a point of: ``name:key=*`` (plus the other options) for a
            sweep ``name:key=a/b/c``, else the label itself.
        knob: The swept option (``None`` outside a sweep).
    """

    label: str
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    config: Any = None
    budgeted: bool = False
    family: str = ""
    knob: str | None = None


def _plugin_names() -> tuple[list[str], list[str]]:
    """(registered compressor types, ragzip plugin folders that registered nothing in this build)."""
    registered = registered_compressors()
    modules = {get_compressor_class(n).__module__ for n in registered}
    present = {p for p in PLUGINS for m in modules if f"{m}.".startswith(f"ragzip.plugins.{p}.")}
    return registered, [p for p in PLUGINS if p not in present]


def declaration(name: str) -> CompressorInfo:
    """What method ``name`` declared (a peer's, or a registered compressor's); the defaults for anything else."""
    if name in PEERS:
        return PEER_DECLARATIONS.get(name, CompressorInfo())
    registered, _ = _plugin_names()
    return compressor_info(name) if name in registered else CompressorInfo()


def _methods() -> list[str]:
    """The registered compressors (the baselines first, each group sorted), then the peers."""
    registered, _ = _plugin_names()
    baselines = [n for n in registered if declaration(n).baseline]
    return [*baselines, *(n for n in registered if n not in baselines), *PEERS]


def valid_method_names(custom: Mapping[str, Any] | None = None) -> list[str]:
    """Every method name ``--methods`` accepts (before ``:variant``)."""
    _, absent = _plugin_names()
    return list(dict.fromkeys([NO_CONTEXT, *_methods(), *absent, *(custom or {})]))


def default_methods() -> str:
    """``ragzip bench``'s default ``--methods``: no_context, then every method that declares ``bench_default``."""
    return ",".join([NO_CONTEXT, *(n for n in _methods() if declaration(n).bench_default)])


def method_aliases() -> dict[str, dict[str, str]]:
    """``{method: {alias: config field}}`` of every method that declares short aliases."""
    return {n: dict(declaration(n).aliases) for n in _methods() if declaration(n).aliases}


def method_label(name: str, options: Mapping[str, Any] | None = None) -> str:
    """The ``--methods`` entry that means ``name`` with config ``options`` (what :func:`parse_method` reads back).

    Example:
        >>> method_label("truncate", {"max_tokens": 96})
        'truncate:96'
    """
    if not options:
        return name
    bare = declaration(name).aliases.get("")
    if len(options) == 1 and bare in options:
        return f"{name}:{_text(options[bare])}"
    return f"{name}:" + ",".join(f"{k}={_text(v)}" for k, v in options.items())


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _config_fields(name: str) -> list[str]:
    klass = PEER_CLASSES[name] if name in PEER_CLASSES else get_compressor_class(name)
    return field_names(klass.config_class)


def _parse_variant(name: str, variant: str, label: str) -> dict[str, Any]:
    if not variant:
        return {}
    if "=" in variant:
        options: dict[str, Any] = {}
        for part in variant.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"method {label!r}: variant part {part!r} is not key=value. Write "
                                  f"`{name}:key=value,key=value`, e.g. `extractive:threshold=0.3`.")
            options[key.strip()] = _scalar(value.strip())
        return options
    match = re.fullmatch(r"([A-Za-z_]*)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", variant)
    value = _scalar(match.group(2)) if match else None
    if match is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"method {label!r}: variant {variant!r} is neither key=value pairs nor <alias><number>. "
                          f"Write e.g. `{name}:key=value` or `extractive:t0.3`, `truncate:256`, `refrag:k8`.")
    letters = match.group(1)
    fields = _config_fields(name)
    aliases = declaration(name).aliases
    key = letters if letters in fields else aliases.get(letters)
    if key is None:
        known = sorted({*aliases, *(f for f in fields if len(f) <= 2)} - {""})
        hint = f" Short aliases of {name}: {', '.join(known)}." if known else ""
        raise ConfigError(f"method {label!r}: {letters!r} is not a short alias or a config field of {name!r}.{hint} "
                          f"Or write `{name}:key=value` with one of: {', '.join(fields)}.")
    return {key: value}


def parse_method(text: str, custom: Mapping[str, Any] | None = None) -> MethodSpec:
    """Parse one ``--methods`` entry; options are validated against the method's config (no model is loaded).

    Raises:
        ConfigError: unknown method (the message lists the valid ones and the close match) or a bad variant.
    """
    label = text.strip()
    if not label:
        raise ConfigError("empty method name in --methods; separate names with single commas, e.g. "
                          "`--methods none,truncate,extractive`.")
    custom = custom or {}
    if label in custom:
        return MethodSpec(label, label, "ragzip", config=custom[label])
    name, _, variant = label.partition(":")
    registered, absent = _plugin_names()
    if name == NO_CONTEXT:
        if variant:
            raise ConfigError(f"method {label!r}: no_context takes no variant.")
        return MethodSpec(label, name, NO_CONTEXT)
    if name in absent:
        return MethodSpec(label, name, "absent")
    if name in PEERS:
        options = _parse_variant(name, variant, label)
        from_dict(PEER_CLASSES[name].config_class, options, where=f"method {label!r}")
        return MethodSpec(label, name, "peer", options, budgeted=_budgeted(name, options))
    if name in registered:
        options = _parse_variant(name, variant, label)
        from_dict(get_compressor_class(name).config_class, options, where=f"method {label!r}")
        return MethodSpec(label, name, "ragzip", options, config={"type": name, **options},
                          budgeted=_budgeted(name, options))
    valid = valid_method_names(custom)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown method {name!r} in --methods.{hint} Valid methods: {', '.join(valid)} "
                      "(with optional :variant, e.g. truncate:256, extractive:t0.3, lc_embeddings_filter:k=3).")


def _budgeted(name: str, options: Mapping[str, Any]) -> bool:
    """Run plain (no budget of its own given), a method that declares ``equal_budget`` takes the run's."""
    info = declaration(name)
    return info.equal_budget and not {info.budget, info.budget_rate} & set(options)


def expand_sweep(item: str) -> list[tuple[str, str, str | None]]:
    """``name:key=a/b/c`` (or ``name:<alias>a/b/c``, ``truncate:64/128``) -> one ``(label, family, knob)`` per value.

    Only numeric values sweep; an entry without ``/`` is returned as itself (family = label, knob None).

    Example:
        >>> [x[0] for x in expand_sweep("truncate:64/128")]
        ['truncate:64', 'truncate:128']
    """
    name, colon, variant = item.strip().partition(":")
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    parts = variant.split(",") if "=" in variant else [variant]
    for i, part in enumerate(parts):
        key, eq, value = part.rpartition("=") if "=" in part else ("", "", part)
        match = re.fullmatch(rf"([A-Za-z_]*)((?:{number})(?:/(?:{number}))+)", value.strip())
        if not colon or match is None:
            continue
        letters, values = match.group(1), match.group(2).split("/")
        knob = key.strip() + eq if eq else letters
        out = []
        for v in values:
            new = parts[:i] + [f"{key}{eq}{letters}{v}"] + parts[i + 1:]
            out.append((f"{name}:{','.join(new)}", f"{name}:{','.join(parts[:i] + [f'{knob}*'] + parts[i + 1:])}",
                        knob.rstrip("=") or "value"))
        return out
    return [(item.strip(), item.strip(), None)]


def parse_methods(text: str | Sequence[str], custom: Mapping[str, Any] | None = None) -> list[MethodSpec]:
    """Parse a comma-separated ``--methods`` value (or a list of entries); duplicates are an error.

    An entry ``name:key=a/b/c`` is a sweep: one setting per value, reported together as an operating curve.
    """
    items = _split_methods(text) if isinstance(text, str) else list(text)
    specs: list[MethodSpec] = []
    for item in items:
        group = [(parse_method(label, custom), family) for label, family, _ in expand_sweep(item)]
        knob = None
        if len(group) > 1:  # the option whose value changes along the sweep
            knob = next((k for k in group[0][0].options if len({repr(g.options.get(k)) for g, _ in group}) > 1),
                        None)
        specs.extend(replace(spec, family=family, knob=knob) for spec, family in group)
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise ConfigError(f"method {spec.label!r} is listed twice in --methods; list each once.")
        seen.add(spec.label)
    if not specs:
        raise ConfigError("--methods is empty; name at least one method, e.g. `--methods none,truncate`.")
    return specs


def _split_methods(text: str) -> list[str]:
    """Split at commas that start a new method (``lc_embeddings_filter:k=3,similarity_threshold=0.2,none``)."""
    parts: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if parts and "=" in piece and ":" not in piece and ":" in parts[-1] and "=" in parts[-1]:
            parts[-1] += "," + piece  # another key=value of the previous method's variant
        else:
            parts.append(piece)
    return parts
