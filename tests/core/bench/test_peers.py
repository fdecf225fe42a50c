"""Peer adapters (LangChain EmbeddingsFilter, LlamaIndex SentenceEmbeddingOptimizer, LongLLMLingua).

Each test skips cleanly when its peer's package is not installed. Models are tiny (hash embedder, a tiny Llama).
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from ragzip.bench.peers import PEERS, build_peer, missing_dependency
from ragzip.errors import ConfigError, MissingDependencyError
from ragzip.types import Passage

PASSAGES = [
    Passage("Paris: Paris is the capital of France. It is on the Seine.", id="paris", score=0.9),
    Passage("Rome: Rome is the capital of Italy. It has the Colosseum.", id="rome", score=0.8),
    Passage("Berlin: Berlin is the capital of Germany. It has a famous wall.", id="berlin", score=0.7),
]
QUESTION = "What is the capital of France?"


def needs(peer: str) -> None:
    reason = missing_dependency(peer)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def embedder():
    from ragzip.embed import Embedder

    return Embedder("hash:256")


def test_missing_dependency_reports_install_hint(monkeypatch):
    monkeypatch.setitem(PEERS, "longllmlingua", PEERS["longllmlingua"].__class__(("no_such_module_xyz",), "peers", ""))
    assert missing_dependency("longllmlingua") == ("not installed: no_such_module_xyz; install with "
                                                   "`pip install 'ragzip[peers]'`")
    with pytest.raises(MissingDependencyError, match=re.escape("peer 'longllmlingua' cannot run: not installed")):
        build_peer("longllmlingua")


def test_unknown_peer_and_option():
    with pytest.raises(ConfigError, match=re.escape("unknown peer 'nope'; peers: lc_embeddings_filter, "
                                                    "li_sentence_optimizer, longllmlingua, ragcompress.")):
        build_peer("nope")
    needs("lc_embeddings_filter")
    with pytest.raises(ConfigError, match=re.escape("unknown key 'kk' in peer[lc_embeddings_filter]. Did you mean 'k'?")):
        build_peer("lc_embeddings_filter", {"kk": 3})


def test_lc_embeddings_filter_keeps_top_k_in_input_order(embedder, words):
    needs("lc_embeddings_filter")
    peer = build_peer("lc_embeddings_filter", {"k": 2}, embedder=embedder, token_counter=words)
    before = list(PASSAGES)
    ctx = peer.compress(QUESTION, PASSAGES)
    assert PASSAGES == before  # inputs untouched
    assert ctx.method == "lc_embeddings_filter"
    assert [r.passage.id for r in ctx.results] == ["paris", "rome", "berlin"]
    decisions = [r.decision for r in ctx.results]
    assert decisions.count("kept") == 2 and decisions.count("dropped") == 1
    assert ctx.results[0].decision == "kept"  # shares "capital of France" with the question
    assert ctx.tokens_after == sum(words.count(r.text) for r in ctx.results if r.text)
    assert ctx.tokens_before == sum(words.count(p.text) for p in PASSAGES)
    dropped = next(r for r in ctx.results if r.decision == "dropped")
    assert dropped.reason == "not among the k=2 passages most similar to the query"
    assert "similarity" in ctx.results[0].extra
    assert peer.config.embedder == "hash:256"


def test_english_splitter_handles_abbreviations():
    needs("li_sentence_optimizer")
    from ragzip.bench.peers import english_sentence_splitter

    split = english_sentence_splitter()
    assert split("Dr. Smith arrived at 5 p.m. on Jan. 3. He left early.") == [
        "Dr. Smith arrived at 5 p.m. on Jan. 3.", "He left early."]


def test_li_sentence_optimizer_keeps_half_of_each_passage(embedder, words):
    needs("li_sentence_optimizer")
    peer = build_peer("li_sentence_optimizer", {}, embedder=embedder, token_counter=words)
    ctx = peer.compress(QUESTION, PASSAGES)
    assert [r.decision for r in ctx.results] == ["compressed"] * 3
    first = ctx.results[0]
    assert first.text == "Paris: Paris is the capital of France."
    assert [u.kept for u in first.units] == [True, False]
    assert PASSAGES[0].text.startswith("Paris: Paris is the capital of France. It is on the Seine.")  # not mutated
    assert ctx.tokens_after == sum(words.count(r.text) for r in ctx.results)


def test_li_sentence_optimizer_one_sentence_passage_is_kept_whole(embedder, words):
    needs("li_sentence_optimizer")
    peer = build_peer("li_sentence_optimizer", {"percentile_cutoff": 0.5}, embedder=embedder, token_counter=words)
    ctx = peer.compress(QUESTION, [Passage("Paris is the capital of France.", id="p")])
    assert ctx.results[0].decision == "kept"


# ----------------------------------------------------------------------------------------------------- LongLLMLingua
def tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def smol_tokenizer():
    from ragzip.models import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m")


def test_legacy_cache_forward_matches_full_forward():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers not installed")
    import torch

    from ragzip.bench.peers import _legacy_cache_forward

    model = tiny_llama(100)
    ids = torch.randint(3, 100, (1, 12))
    full = model(ids).logits
    _legacy_cache_forward(model)
    head = model(ids[:, :8], use_cache=True)
    legacy = head.past_key_values
    assert isinstance(legacy, list) and len(legacy[0]) == 2  # llmlingua's [(k, v), ...]
    assert legacy[0][0].shape[2] == 8  # and it can slice it, as llmlingua does
    tail = model(ids[:, 8:], past_key_values=[(k, v) for k, v in legacy], use_cache=True)
    torch.testing.assert_close(tail.logits, full[:, 8:], rtol=1e-5, atol=1e-5)


def test_longllmlingua_adapter_on_tiny_model(smol_tokenizer):
    needs("longllmlingua")
    from copy import deepcopy

    from ragzip.bench.peers import LongLLMLinguaCompressor, LongLLMLinguaConfig, prompt_compressor_from
    from ragzip.tokens import HFTokenCounter

    tok = deepcopy(smol_tokenizer)  # the adapter sets left padding on it
    counter = HFTokenCounter(smol_tokenizer)
    pc = prompt_compressor_from(tiny_llama(len(tok)), tok)
    # iterative_size=16 forces several token-pruning windows: the path that needs the KV-cache fix.
    peer = LongLLMLinguaCompressor(LongLLMLinguaConfig(target_token=30, iterative_size=16), prompt_compressor=pc,
                                   token_counter=counter)
    long = [Passage(p.text + " " + p.text, id=p.id) for p in PASSAGES]
    ctx = peer.compress(QUESTION, long)
    assert [r.passage.id for r in ctx.results] == ["paris", "rome", "berlin"]
    assert {r.decision for r in ctx.results} <= {"kept", "compressed", "summarized", "dropped"}
    assert ctx.summary is not None and ctx.text == ctx.summary
    assert ctx.tokens_after == counter.count(ctx.summary)
    assert 0 < ctx.tokens_after < ctx.tokens_before
    assert ctx.tokens_before == sum(counter.count(p.text) for p in long)
    assert pc.context_idxs == []  # the adapter clears llmlingua's per-call history
    assert pc.oai_tokenizer.count("a b") == counter.count("a b")  # tokens counted with the local tokenizer


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 1.5}, "longllmlingua rate = 1.5 must be in (0, 1], e.g. 0.5."),
        ({"reorder_context": "random"}, "longllmlingua reorder_context = 'random' must be one of"),
    ],
)
def test_longllmlingua_config_errors(options, message):
    from ragzip.bench.peers import LongLLMLinguaConfig
    from ragzip.config_utils import from_dict

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(LongLLMLinguaConfig, options, where="t")


@pytest.mark.slow
def test_longllmlingua_real_smollm2_offline(words):
    needs("longllmlingua")
    peer = build_peer("longllmlingua", {"target_token": 40}, token_counter=words)
    ctx = peer.compress(QUESTION, PASSAGES)
    assert 0 < ctx.tokens_after <= ctx.tokens_before
