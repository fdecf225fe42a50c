"""YAML loading: valid files, malformed YAML, unknown keys, unknown types."""

from __future__ import annotations

import re

import pytest

from ragzip.config import load_config
from ragzip.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "ragzip.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, """
retriever: {embedder: "embedded:minilm", top_k: 3}
compressor:
  - {type: truncate, max_tokens: 50}
  - {type: none}
generator: {model: "embedded:smollm2-135m", max_new_tokens: 16}
"""))
    assert cfg.retriever.top_k == 3
    assert [c["type"] for c in cfg.compressor] == ["truncate", "none"]
    assert cfg.generator.max_new_tokens == 16
    assert cfg.to_dict()["compressor"][0] == {"type": "truncate", "max_tokens": 50}


def test_defaults_when_sections_missing(tmp_path):
    cfg = load_config(write(tmp_path, "compressor: {type: none}\n"))
    assert cfg.compressor == [{"type": "none"}]
    assert cfg.retriever.embedder == "embedded:minilm"


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "compressor:\n  type: none\n   bad: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 3, column \d+"):
        load_config(path)


def test_unknown_top_level_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("unknown key 'compresor' in " )):
        load_config(write(tmp_path, "compresor: {type: none}\n"))
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'compressor'?")):
        load_config(write(tmp_path, "compresor: {type: none}\n"))


def test_unknown_nested_keys_and_types(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("unknown key 'topk' in retriever. Did you mean 'top_k'?")):
        load_config(write(tmp_path, "retriever: {topk: 3}\n"))
    with pytest.raises(ConfigError, match=re.escape("unknown type 'extractiv' in compressor.type.")):
        load_config(write(tmp_path, "compressor: {type: extractiv}\n"))
    with pytest.raises(ConfigError, match=re.escape("unknown key 'max_token' in compressor[1][truncate]. Did you mean "
                                                    "'max_tokens'?")):
        load_config(write(tmp_path, "compressor: [{type: none}, {type: truncate, max_token: 3}]\n"))
    with pytest.raises(ConfigError, match=re.escape("compressor[0] has no `type:` key.")):
        load_config(write(tmp_path, "compressor: [{max_tokens: 3}]\n"))


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("not found. Pass the path of a ragzip YAML")):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"compressor: {type: none}  # caf\xe9\n")
    with pytest.raises(ConfigError, match=re.escape("is not UTF-8 text (byte 31). Save it as UTF-8.")):
        load_config(path)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("the top level must be a mapping")):
        load_config(write(tmp_path, "- type: none\n"))
