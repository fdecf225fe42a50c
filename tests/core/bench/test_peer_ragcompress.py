"""The ragcompress peer adapter (core/bench/peer_ragcompress.py).

Skips cleanly when ragcompress is not installed. Fast tests use the hash embedder, a whitespace token counter and a
tiny Llama with a word-level fast tokenizer; the tests on the real embedded models are marked slow.
"""

from __future__ import annotations

import re
from copy import deepcopy

import pytest

pytest.importorskip("ragcompress")

from ragzip.bench.peer_ragcompress import (  # noqa: E402
    RagCompressCompressor,
    RagCompressConfig,
    attention_scorer,
    eager_last_attention,
    missing_dependency,
)
from ragzip.errors import ConfigError, MissingDependencyError, ModelNotFoundError  # noqa: E402
from ragzip.types import Passage  # noqa: E402

PASSAGES = [
    Passage("Paris: Paris is the capital of France. It is on the Seine. Tourists like it.", id="paris", score=0.9),
    Passage("Rome: Rome is the capital of Italy. It has the Colosseum.", id="rome", score=0.8),
    Passage("Berlin: Berlin is the capital of Germany. It has a famous wall.", id="berlin", score=0.7),
]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def embedder():
    from ragzip.embed import Embedder

    return Embedder("hash:256")


def peer_with(embedder, counter, **options):
    return RagCompressCompressor(RagCompressConfig(**options), embedder=embedder, token_counter=counter)


def test_missing_dependency_names_the_extra(monkeypatch):
    import ragzip.bench.peer_ragcompress as mod

    assert missing_dependency() is None
    monkeypatch.setattr(mod, "MODULES", ("ragcompress", "no_such_module_xyz"))
    assert missing_dependency() == "not installed: no_such_module_xyz; install with `pip install 'ragzip[peers]'`"
    with pytest.raises(MissingDependencyError, match=re.escape("peer 'ragcompress' cannot run: not installed: "
                                                               "no_such_module_xyz; install with")):
        RagCompressCompressor(RagCompressConfig(), embedder=object())


def test_embedding_scorer_budget_provenance_and_inputs(embedder, words):
    peer = peer_with(embedder, words, budget=12)
    before = [(p.id, p.text, p.score, dict(p.metadata)) for p in PASSAGES]
    ctx = peer.compress(QUESTION, PASSAGES)
    assert [(p.id, p.text, p.score, dict(p.metadata)) for p in PASSAGES] == before  # inputs untouched
    assert ctx.method == "ragcompress" and ctx.extra["scorer"] == "embedding"
    assert [r.passage.id for r in ctx.results] == ["paris", "rome", "berlin"]
    paris = ctx.results[0]
    assert paris.units[0].kept and paris.units[0].text == "Paris: Paris is the capital of France."
    assert [u.text for u in paris.units] == ["Paris: Paris is the capital of France.", "It is on the Seine.",
                                             "Tourists like it."]
    for r in ctx.results:
        assert r.text == " ".join(u.text for u in r.units if u.kept)  # the passage's paragraph is its kept sentences
        for u in r.units:  # every unit is a verbatim span of its passage
            assert r.passage.text[u.start:u.end] == u.text
        if not r.text:
            assert r.decision == "dropped"
            assert r.reason == "none of its sentences made ragcompress's budget of 12 tokens"
    kept_words = sum(words.count(u.text) for r in ctx.results for u in r.units if u.kept)
    assert 0 < kept_words <= 12  # the budget caps kept sentences, in the counter's tokens
    assert ctx.tokens_after == sum(words.count(r.text) for r in ctx.results)
    assert ctx.tokens_before == sum(words.count(p.text) for p in PASSAGES)
    # The context is exactly ragcompress's own output for the same chunks.
    from ragcompress import Chunk

    direct = peer.rc.compress(QUESTION, [Chunk(p.id, str(i), p.text) for i, p in enumerate(PASSAGES)])
    assert ctx.text == direct.text


def test_whole_passage_is_kept_and_counter_is_read_at_call_time(embedder, words):
    peer = peer_with(embedder, words, budget=100)
    ctx = peer.compress(QUESTION, PASSAGES)
    assert [r.decision for r in ctx.results] == ["kept", "kept", "kept"]
    assert ctx.results[0].extra == {"sentences_kept": 3, "sentences": 3}

    class Chars:  # a counter that makes every sentence too long for the budget
        def count(self, text):
            return len(text) * 10

        def count_many(self, texts):
            return [self.count(t) for t in texts]

    peer.token_counter = Chars()  # what bind() does with the generator's counter
    ctx = peer.compress(QUESTION, PASSAGES)
    assert [r.decision for r in ctx.results] == ["dropped"] * 3
    assert ctx.text == "" and ctx.reason.startswith("ragcompress kept nothing (none of its sentences made")


def test_top_k_and_adaptive_budgets(embedder, words):
    ctx = peer_with(embedder, words, budget=None, top_k=1).compress(QUESTION, PASSAGES)
    assert sum(u.kept for r in ctx.results for u in r.units) == 1
    assert ctx.results[0].decision == "compressed"
    adaptive = peer_with(embedder, words, budget_mode="adaptive", budget=20, min_tokens=5)
    ctx = adaptive.compress(QUESTION, PASSAGES)
    kept = sum(words.count(u.text) for r in ctx.results for u in r.units if u.kept)
    assert 5 <= kept <= 20
    dropped = [r for r in ctx.results if r.decision == "dropped"]
    assert all(r.reason == "none of its sentences made ragcompress's adaptive budget (elbow 0.25, 5-20 tokens)"
               for r in dropped)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scorer": "bm25"}, "ragcompress scorer = 'bm25' must be one of 'embedding', 'attention', 'cross_encoder'"),
        ({"budget_mode": "elbow"}, "ragcompress budget_mode = 'elbow' must be 'fixed' or 'adaptive'."),
        ({"budget": None}, "ragcompress budget_mode 'fixed' needs `budget` or `top_k`; e.g. budget=256."),
        ({"budget_mode": "adaptive", "budget": None}, "ragcompress budget_mode 'adaptive' needs `budget`"),
        ({"budget_mode": "adaptive", "budget": 32}, "ragcompress min_tokens = 64 must be <= budget = 32."),
        ({"redundancy_lambda": 2.0}, "ragcompress redundancy_lambda = 2.0 must be in [0, 1], e.g. 0.5."),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RagCompressConfig(**options)


def test_cross_encoder_needs_a_local_model(embedder, words):
    with pytest.raises(ModelNotFoundError, match=re.escape("model path '/no/such/reranker' does not exist")):
        peer_with(embedder, words, scorer="cross_encoder", cross_encoder="/no/such/reranker")


# ------------------------------------------------------------------------------------------------ attention scorer
def tiny_llama_and_tokenizer(attn: str = "sdpa"):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    words = sorted({w for p in PASSAGES for w in re.findall(r"\w+|[^\w\s]", p.text + " " + QUESTION)})
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attn)
    return LlamaModel(config).eval(), tokenizer


def test_eager_last_attention_switches_only_the_last_layer_and_restores():
    model, _ = tiny_llama_and_tokenizer("sdpa")
    shared = model.config
    with eager_last_attention(model):
        assert model.layers[-1].self_attn.config._attn_implementation == "eager"
        assert model.config._attn_implementation == "eager"  # builds the explicit causal mask the eager layer needs
        assert model.layers[0].self_attn.config._attn_implementation == "sdpa"
    assert model.layers[-1].self_attn.config is shared and model.config is shared
    assert shared._attn_implementation == "sdpa"


def test_attention_scorer_on_tiny_llama_matches_all_eager(words):
    from ragcompress import Chunk
    from ragcompress.utils.sentence_split import split_into_sentences

    model, tokenizer = tiny_llama_and_tokenizer("sdpa")
    eager = deepcopy(model)
    eager.config._attn_implementation = "eager"
    sentences = [s for i, p in enumerate(PASSAGES) for s in split_into_sentences(Chunk(p.id, str(i), p.text))]
    fast = [s.score for s in attention_scorer(model, tokenizer).score(QUESTION, deepcopy(sentences), sentences)]
    full = [s.score for s in attention_scorer(eager, tokenizer).score(QUESTION, deepcopy(sentences), sentences)]
    assert len(fast) == 7 and min(fast) == 0.0 and max(fast) == 1.0  # min-max normalised, as ragcompress does
    # SDPA vs eager arithmetic in the first layer: ~6e-5 after min-max scaling. Without the explicit causal mask
    # for the eager layer the scores were off by 5e-2.
    assert fast == pytest.approx(full, abs=1e-3)

    peer = RagCompressCompressor(RagCompressConfig(scorer="attention", budget=15), model=model, tokenizer=tokenizer,
                                 token_counter=words)
    ctx = peer.compress(QUESTION, PASSAGES)
    assert ctx.extra["scorer"] == "attention" and peer.embedder is None
    assert all(len(r.units) >= 2 and all(0.0 <= u.score <= 1.0 for u in r.units) for r in ctx.results)
    assert 0 < sum(words.count(u.text) for r in ctx.results for u in r.units if u.kept) <= 15


def test_attention_scorer_needs_tokenizer_with_model(words):
    model, _ = tiny_llama_and_tokenizer()
    with pytest.raises(ConfigError, match=re.escape("ragcompress: pass the model's fast `tokenizer=` together")):
        RagCompressCompressor(RagCompressConfig(scorer="attention"), model=model, token_counter=words)


# ------------------------------------------------------------------------------------------- real embedded models
@pytest.mark.slow
def test_real_embedding_scorer_offline_keeps_the_answer_sentence():
    from ragzip.tokens import load_token_counter

    counter = load_token_counter("embedded:smollm2-135m")
    peer = RagCompressCompressor(RagCompressConfig(budget=24), token_counter=counter)
    ctx = peer.compress(QUESTION, PASSAGES[1:] + PASSAGES[:1])  # the answer in the last passage
    paris = ctx.results[-1]
    assert paris.passage.id == "paris" and paris.units[0].kept  # "Paris: Paris is the capital of France."
    assert ctx.tokens_after == sum(counter.count(r.text) for r in ctx.results)
    assert 0 < ctx.tokens_after <= 24 < ctx.tokens_before


@pytest.mark.slow
def test_real_attention_scorer_offline_on_smollm2():
    from ragzip.tokens import load_token_counter

    counter = load_token_counter("embedded:smollm2-135m")
    peer = RagCompressCompressor(RagCompressConfig(scorer="attention", budget=24), token_counter=counter)
    ctx = peer.compress(QUESTION, PASSAGES[1:] + PASSAGES[:1])
    scores = [u.score for r in ctx.results for u in r.units]
    assert len(scores) == 7 and min(scores) == 0.0 and max(scores) == 1.0
    # SmolLM2 adds no BOS token: the first sentence takes the attention sink and scores 1.0 whatever it says (here
    # Rome's; the Paris answer sentence, last, is not chosen). This pins that known weakness of the attention scorer.
    assert ctx.results[0].units[0].score == 1.0 and ctx.results[0].units[0].kept
    assert 0 < ctx.tokens_after <= 24


def test_built_through_the_peer_registry(embedder, words):
    from ragzip.bench.peers import PEERS, build_peer
    from ragzip.bench.peers import missing_dependency as peer_missing

    if "ragcompress" not in PEERS:
        pytest.skip("ragcompress is not registered in ragzip.bench.peers yet")
    assert peer_missing("ragcompress") is None
    peer = build_peer("ragcompress", {"budget": 8}, embedder=embedder, token_counter=words)
    assert isinstance(peer, RagCompressCompressor) and peer.config.budget == 8 and peer.embedder is embedder
    ctx = peer.compress(QUESTION, PASSAGES)
    assert 0 < ctx.tokens_after <= 8
