"""One ``register_compressor`` call puts a compressor everywhere the app looks: the YAML config, ``ragzip demo``,
``ragzip train``, ``ragzip evaluate``, ``ragzip bench``'s method language (aliases, the equal budget, sweeps) and the
option docs.

The compressor lives in a package written into ``tmp_path``; nothing else is edited, and the registry is cleaned up.
"""

from __future__ import annotations

import importlib
import json
import re
import sys

import pytest

from ragzip.compressor import (
    CompressorInfo,
    build_compressor,
    compressor_info,
    evaluators,
    register_compressor,
    registered_compressors,
    trainers,
    unregister_compressor,
)
from ragzip.errors import ConfigError

TOY = '''
from dataclasses import dataclass, field

from ragzip.compressor import Compressor, CompressorConfig, register_compressor
from ragzip.types import PassageResult


@dataclass
class ToyConfig(CompressorConfig):
    max_words: int = field(default=50, metadata={"help": "Keep the first N words of every passage."})


class ToyCompressor(Compressor):
    name = "toyzip"
    config_class = ToyConfig

    def _compress(self, query, passages):
        results = []
        for p in passages:
            text = " ".join(p.text.split()[: self.config.max_words])
            results.append(PassageResult(p, text, "kept" if text == p.text else "compressed", reason="first words",
                                         tokens_before=self.token_counter.count(p.text),
                                         tokens_after=self.token_counter.count(text)))
        return self.context(query, results)


register_compressor(ToyCompressor, demo={"max_words": 5}, budget="max_words", equal_budget=True,
                    aliases={"w": "max_words"})
'''
TRAINER = '''
def main(argv):
    print("toyzip trainer", argv)
    return 0
'''
EVALUATOR = TRAINER.replace("trainer", "evaluator")


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    package = tmp_path / "toyzip_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(TOY, encoding="utf-8")
    (package / "train.py").write_text(TRAINER, encoding="utf-8")
    (package / "evaluate.py").write_text(EVALUATOR, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toyzip_plugin")
    yield "toyzip"
    unregister_compressor("toyzip")
    for name in [m for m in sys.modules if m.partition(".")[0] == "toyzip_plugin"]:
        del sys.modules[name]
    assert "toyzip" not in registered_compressors()


def test_a_yaml_config_builds_it(toy, tmp_path):
    from ragzip.config import load_config

    path = tmp_path / "ragzip.yaml"
    path.write_text("compressor:\n  type: toyzip\n  max_words: 2\n  tokenizer: whitespace\n", encoding="utf-8")
    compressor = build_compressor(load_config(path).compressor)
    assert compressor.compress("q?", ["one two three"]).text == "one two"
    path.write_text("compressor: {type: toyzip, max_word: 2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("unknown key 'max_word' in compressor[toyzip]. Did you mean "
                                                    "'max_words'? Valid keys: max_passage_chars, max_words, tokenizer.")):
        load_config(path)


def test_the_demo_and_the_trainer_list_it(toy, capsys):
    from ragzip import cli

    assert ("toyzip:max_words=5", {"type": "toyzip", "max_words": 5}) in cli._demo_methods()
    assert cli._demo_config("toyzip:w3") == {"type": "toyzip", "max_words": 3}  # `ragzip demo --methods toyzip:w3`
    assert trainers()["toyzip"] == "toyzip_plugin.train"
    assert cli.main(["train", "toyzip", "--steps", "1"]) == 0
    assert capsys.readouterr().out.strip() == "toyzip trainer ['--steps', '1']"


def test_ragzip_evaluate_dispatches_to_its_evaluate_module(toy, capsys):
    from ragzip import cli

    assert evaluators()["toyzip"] == "toyzip_plugin.evaluate"
    assert cli.main(["evaluate", "toyzip", "--artifact", "DIR", "--help"]) == 0  # --help too is the plugin's
    assert capsys.readouterr().out.strip() == "toyzip evaluator ['--artifact', 'DIR', '--help']"
    assert cli.main(["evaluate", "truncate"]) == 2
    assert capsys.readouterr().err.strip() == ("ragzip evaluate: no evaluation for 'truncate' yet. Types with one "
                                               "here: extractive, abstractive, xrag, refrag, toyzip.")


def test_ragzip_evaluate_help_lists_the_types_that_declare_one(toy, capsys):
    from ragzip import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--help"])
    assert exit_.value.code == 0
    listed = re.search(r"one of: (\w+(?:, \w+)*)", " ".join(capsys.readouterr().out.split()))
    assert listed is not None
    assert listed.group(1).split(", ") == list(evaluators()) == ["extractive", "abstractive", "xrag", "refrag",
                                                                 "toyzip"]


def test_the_bench_parses_its_aliases_budget_and_sweeps(toy):
    from ragzip import bench

    plain, short, *sweep = bench.parse_methods("toyzip,toyzip:w3,toyzip:max_words=8/16")
    assert (plain.kind, plain.options, plain.budgeted) == ("ragzip", {}, True)  # takes the run's equal budget
    assert (short.options, short.budgeted, short.config) == ({"max_words": 3}, False, {"type": "toyzip",
                                                                                        "max_words": 3})
    assert [(s.options, s.family, s.knob) for s in sweep] == [
        ({"max_words": 8}, "toyzip:max_words=*", "max_words"), ({"max_words": 16}, "toyzip:max_words=*", "max_words")]
    assert bench.ALIASES["toyzip"] == {"w": "max_words"} and "toyzip" in bench.valid_method_names()
    assert "toyzip" not in bench.DEFAULT_METHODS.split(",")  # it did not declare bench_default
    with pytest.raises(ConfigError, match=re.escape("'x' is not a short alias or a config field of 'toyzip'. "
                                                    "Short aliases of toyzip: w.")):
        bench.parse_method("toyzip:x3")


def test_a_bench_run_gives_plain_toyzip_the_equal_budget(toy, tmp_path, tiny_llama_generator):
    from ragzip.bench import run_bench
    from ragzip.embed import Embedder

    record = {"id": "h1", "question": "Where was Jean Roux born?", "answer": "Lyon",
              "context": [["Jean Roux", ["Jean Roux was born in Lyon in the year 1850.", " He died in 1900."]],
                          ["Other", ["Nothing here at all.", " Still nothing."]]],
              "supporting_facts": [["Jean Roux", 0]]}
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = run_bench(path, "toyzip:w3,toyzip", limit=None, setting="given", generator=tiny_llama_generator,
                       embedder=Embedder("hash:64"), progress=False, generate=False)
    reference = result["methods"]["toyzip:w3"]
    assert result["budget"] == {"reference": "toyzip:w3", "tokens": round(reference["context_tokens"])}
    assert result["methods"]["toyzip"]["config"]["max_words"] == round(reference["context_tokens"])


def test_the_option_docs_have_its_table(toy):
    from ragzip.docs import all_tables

    assert "| `max_words` | `50` | Keep the first N words of every passage. |" in all_tables()["toyzip"]


# -------------------------------------------------------------------------------------------- the declaration itself
def test_declarations_name_real_config_fields():
    from ragzip.plugins.baseline import TruncateCompressor

    info = compressor_info("truncate")
    with pytest.raises(ValueError, match=re.escape("register_compressor('truncate'): budget names 'max_tokns', which "
                                                   "is not a field of TruncateConfig; use one of: tokenizer, "
                                                   "max_passage_chars, max_tokens.")):
        register_compressor(TruncateCompressor, budget="max_tokns")
    with pytest.raises(TypeError, match=re.escape("unknown key 'alias' in register_compressor('truncate'). Did you "
                                                  "mean 'aliases'?")):
        register_compressor(TruncateCompressor, alias={"n": "max_tokens"})
    assert compressor_info("truncate") is info  # a refused declaration leaves the registered one


def test_plain_registration_keeps_the_defaults():
    info = CompressorInfo()
    assert (info.trainer, info.evaluator, info.demo, info.budget, info.aliases, info.bench_default) == (
        True, True, {}, None, {}, False)
    assert "baseline" not in trainers() and "truncate" not in trainers()  # no train module beside them
    assert "truncate" not in evaluators() and "route" not in evaluators()  # no evaluate module beside them
    assert "route" not in trainers()  # declared trainer=False
