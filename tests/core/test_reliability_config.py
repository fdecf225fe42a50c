"""Error messages stay small whatever the input (YAML alias bombs), and NaN/inf never pass a float config field
(``threshold: .nan`` would make extractive keep nothing and disable the abstractive gate)."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import typing

import pytest

from ragzip import ConfigError
from ragzip.compressor import get_compressor_class, registered_compressors
from ragzip.config import load_config, validate_compressor_block
from ragzip.config_utils import brief, check_range, from_dict
from ragzip.errors import MAX_MESSAGE_CHARS, InputError
from ragzip.generation import GeneratorConfig
from ragzip.retrieval import RetrieverConfig

# ~300 bytes: 7 levels of 10 aliases, 10 million strings once expanded.
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
generator: {stop: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]}
"""
SMALL_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
generator: {stop: [*d,*d,*d,*d]}
"""


def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(path)!r} expands to more than 100,000 values "
                                                    "through YAML aliases")) as err:
        load_config(path)
    assert time.perf_counter() - start < 2.0 and len(str(err.value)) < 400


def test_values_repeated_in_errors_are_bounded(tmp_path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_BOMB.replace("a: &a", "x: &a").replace("\nb:", "\ny:").replace("\nc:", "\nz:")
                    .replace("\nd:", "\nw:"))
    with pytest.raises(ConfigError) as err:  # 40k strings: under the expansion limit, still a huge value
        load_config(path)
    assert len(str(err.value)) < 600
    huge = [list(range(1000))] * 1000
    with pytest.raises(ConfigError) as err:
        from_dict(RetrieverConfig, {"top_k": huge}, where="retriever")
    assert len(str(err.value)) < 400 and str(err.value).startswith("retriever.top_k = [[0, 1, 2, 3, 4, 5, ...]")
    with pytest.raises(ConfigError) as err:
        GeneratorConfig(stop=[huge])
    assert len(str(err.value)) < 400
    with pytest.raises(ConfigError) as err:
        validate_compressor_block([huge])
    assert len(str(err.value)) < 400


def test_every_ragzip_error_message_is_capped() -> None:
    err = InputError("x" * 1_000_000)
    assert len(str(err)) < MAX_MESSAGE_CHARS + 100 and "characters cut" in str(err)
    assert brief("y" * 10_000).endswith("...'") or len(brief("y" * 10_000)) <= 200


def _float_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if hint is float or float in typing.get_args(hint):
            out.append(f.name)
    return out


CONFIG_CLASSES = [("retriever", RetrieverConfig), ("generator", GeneratorConfig)] + [
    (f"compressor[{name}]", get_compressor_class(name).config_class) for name in registered_compressors()]
FLOAT_FIELDS = [(where, cls, name) for where, cls in CONFIG_CLASSES for name in _float_fields(cls)]


def test_there_are_float_fields_to_check() -> None:
    names = {(where, name) for where, _, name in FLOAT_FIELDS}
    assert ("compressor[extractive]", "threshold") in names and ("compressor[abstractive]", "gate_threshold") in names


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("where", "cls", "name"), FLOAT_FIELDS, ids=[f"{w}.{n}" for w, _, n in FLOAT_FIELDS])
def test_nan_and_inf_are_rejected_in_every_float_field(where, cls, name, bad) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{where}.{name} = {bad!r} must be a finite number")):
        from_dict(cls, {name: bad}, where=where)


def test_yaml_nan_threshold_is_rejected(tmp_path) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text("compressor:\n  type: extractive\n  threshold: .nan\n")
    with pytest.raises(ConfigError, match=re.escape("compressor[extractive].threshold = nan must be a finite number")):
        load_config(path)


def test_check_range_rejects_nan_built_in_python() -> None:
    with pytest.raises(ConfigError, match=re.escape("x.threshold = nan must be a finite number")):
        check_range("x", "threshold", math.nan, 0.0, 1.0)
