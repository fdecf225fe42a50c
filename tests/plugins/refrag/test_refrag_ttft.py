"""`ragzip ttft` (plugins/refrag/ttft.py): options, context building and the result schema, on tiny models."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from ragzip.errors import ConfigError
from ragzip.plugins.refrag import ttft
from ragzip.softstore import SoftTokenStore

TEXTS = [
    "The Eiffel Tower was completed in 1889 and designed by the engineering firm of Gustave Eiffel in Paris.",
    "Marie Curie conducted pioneering research on radioactivity; she was the first woman to win a Nobel Prize.",
]


@pytest.fixture(scope="module")
def tiny(request):
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.models import load_tokenizer, resolve
    from ragzip.plugins.refrag import RefragModel, RefragModelConfig

    torch.manual_seed(0)
    tok = load_tokenizer("embedded:smollm2-135m")
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    gen = HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=1), store=SoftTokenStore(), model=llama,
                      tokenizer=tok)
    mtok = AutoTokenizer.from_pretrained(resolve("embedded:minilm"))
    bert = BertModel(BertConfig(vocab_size=mtok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64))
    model = RefragModel(RefragModelConfig(encoder="tiny-bert", encoder_hidden=32, decoder="tiny-llama",
                                          decoder_hidden=32, k=8, projector_hidden=16, policy_hidden=8),
                        encoder=bert, encoder_tokenizer=mtok).eval()
    return gen, model


def test_options_parse_lists():
    parser = argparse.ArgumentParser()
    ttft.add_arguments(parser)
    args = parser.parse_args(["--methods", "none,refrag", "--context-tokens", "1024,2048,4096", "--k", "8,16",
                              "--out", "r.json"])
    assert args.context_tokens == [1024, 2048, 4096] and args.k == [8, 16] and args.repeats == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--k", "8,x"])


def test_unknown_method_is_a_config_error():
    parser = argparse.ArgumentParser()
    ttft.add_arguments(parser)
    with pytest.raises(ConfigError, match=re.escape("--methods 'none,llmlingua': unknown method(s) ['llmlingua']; "
                                                    "choose from none, refrag.")):
        ttft.run(parser.parse_args(["--methods", "none,llmlingua"]))


def test_context_has_exactly_the_requested_tokens(tiny):
    gen, _ = tiny
    passages = ttft.make_context(TEXTS, gen.tokenizer, 100, 16)
    assert sum(gen.token_counter.count_many(passages)) == 100
    assert all(gen.token_counter.count(p) <= 16 for p in passages)


def test_benchmark_rows_follow_the_schema(tiny):
    from ragzip.plugins.refrag import RefragCompressor, RefragConfig

    gen, model = tiny

    def make(k: int, cache: str) -> RefragCompressor:
        compressor = RefragCompressor(RefragConfig(k=k, p=0.0, policy="none", cache=cache), model=model)
        compressor.bind(gen)
        return compressor

    runs = ttft.benchmark(gen, make, TEXTS, methods=["none", "refrag"], context_tokens=[64], ks=[8], repeats=1,
                          cached_modes=[False, True], passage_tokens=32, question="Who?")
    assert [(r["method"], r["k"], r["cached"]) for r in runs] == [("none", None, None), ("refrag", 8, False),
                                                                 ("refrag", 8, True)]
    for r in runs:
        assert {"method", "context_tokens", "k", "cached", "ttft_s", "ttft_cpu_s", "decoder_positions"} <= set(r)
        assert r["ttft_s"] > 0 and r["context_tokens"] == 64
    full, fresh, cached = (r["decoder_positions"] for r in runs)
    assert fresh == cached == full - 64 + 8  # 64 tokens -> 8 chunk vectors
    assert [s["k"] for s in ttft.speedups(runs)] == [8, 8]
