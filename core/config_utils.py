"""Typed dataclass configs built from plain dicts, with errors that name the bad key and suggest the close match."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ragzip.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 120, 120, 40


def brief(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without building the full repr first.

    Error messages repeat user values, and a YAML alias bomb (a few hundred bytes that expand to millions of items)
    must not turn one error into megabytes.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def field_names(cls: type) -> list[str]:
    """The names of the fields of dataclass ``cls`` that its constructor takes, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    """The error text for an unknown key: it names ``key`` and ``where``, suggests the close match and lists ``valid``.

    Example:
        >>> unknown_key_message("max_token", ["max_tokens", "tokenizer"], "compressor")
        "unknown key 'max_token' in compressor. Did you mean 'max_tokens'? Valid keys: max_tokens, tokenizer."
    """
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}."


def _coerce(value: Any, annotation: Any, name: str, where: str) -> Any:
    """Light type checks for YAML scalars: ints for floats are fine, strings for numbers are not."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation.split("|")[0].strip(), Any)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{name} = {value!r} must be a finite number (NaN and infinity pass no range "
                              "check and would silently disable it).")
        for arg in args:
            try:
                return _coerce(value, arg, name, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}.{name} = {brief(value)} has the wrong type; expected {annotation}.")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{name} = {brief(value)} must be true or false.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}.{name} = {brief(value)} must be an integer.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{name} = {brief(value)} must be a number.")
        if not math.isfinite(value):
            raise ConfigError(f"{where}.{name} = {value!r} must be a finite number (NaN and infinity pass no range "
                              "check and would silently disable it).")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{name} = {brief(value)} must be a string.")
        return value
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value) if origin is tuple else list(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str, strict: bool = True) -> T:
    """Build dataclass ``cls`` from ``data``.

    Unknown keys raise :class:`ConfigError` naming the key, the close match and the valid keys (``strict``), or are
    logged and ignored (``strict=False``, used when reading saved artifacts written by a newer ragzip).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}: {brief(data)}.")
    valid = field_names(cls)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            message = unknown_key_message(str(key), valid, where)
            if strict:
                raise ConfigError(message)
            logger.warning("ignoring %s", message)
            continue
        kwargs[key] = _coerce(value, hints.get(key, Any), key, where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {str(err)[:1000]}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The fields of dataclass instance ``config`` as a plain dict (tuples as lists): the inverse of ``from_dict``."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def check_range(where: str, name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (NaN and infinities are always out of range)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}.{name} = {value!r} must be a finite number (NaN and infinity pass no range "
                          "check and would silently disable it).")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{where}.{name} = {value!r} is out of range; it must lie in {bounds}.")


def check_choice(where: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise :class:`ConfigError` naming ``where.name`` and the allowed values unless ``value`` is in ``choices``."""
    if value not in choices:
        raise ConfigError(f"{where}.{name} = {brief(value)} is not allowed; choose one of {', '.join(map(repr, choices))}.")
