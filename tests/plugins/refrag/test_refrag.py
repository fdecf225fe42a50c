"""REFRAG plugin: chunking, soft-token protocol, exactness, policies, cache, artifacts, kernels, bad input.

Mechanics run on tiny models built from configs (a 2-layer BERT reading with the MiniLM tokenizer, a 2-layer Llama
reading with the SmolLM2 tokenizer); tests that load the real embedded models are marked slow.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re

import pytest
import torch
from conftest import build_tiny_llama, build_tiny_refrag

from ragzip import build_compressor
from ragzip.errors import ConfigError, InputError, SoftTokenError
from ragzip.plugins.refrag import (
    CacheMismatchError,
    RefragCompressor,
    RefragConfig,
    RefragModel,
    build_refrag_cache,
    chunk_passage,
)
from ragzip.plugins.refrag.kernels import assemble_embeddings, assemble_embeddings_reference, layout_from_segments
from ragzip.plugins.refrag.modeling import budget, chunk_key, plackett_luce_sample, roundtrip_exact
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore

PASSAGES = [
    "The Eiffel Tower was completed in 1889 and designed by the engineering firm of Gustave Eiffel in Paris.",
    "Marie Curie conducted pioneering research on radioactivity; she was the first woman to win a Nobel Prize.",
    "Short one.",
]
QUESTION = "Who designed the Eiffel Tower?"


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_llama(smol_tok):
    return build_tiny_llama(len(smol_tok))


@pytest.fixture(scope="session")
def tiny_model(minilm_tok):
    return build_tiny_refrag(minilm_tok)


@pytest.fixture()
def generator(tiny_llama, smol_tok):
    from ragzip.generation import GeneratorConfig, HFGenerator

    return HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=2), store=SoftTokenStore(),
                       model=tiny_llama, tokenizer=smol_tok)


def make_compressor(model, generator, **options) -> RefragCompressor:
    options.setdefault("k", model.config.k)
    compressor = RefragCompressor(RefragConfig(**options), model=model)
    compressor.bind(generator)
    return compressor


# ------------------------------------------------------------------------------------------------------ chunking
@pytest.mark.parametrize("k", [1, 4, 8, 16, 32])
def test_chunks_cover_the_passage_exactly(smol_tok, k):
    text = PASSAGES[0] + " Ünïcode — “quotes” and 数字 too."
    chunks = chunk_passage(text, smol_tok, k)
    ids = smol_tok(text, add_special_tokens=False)["input_ids"]
    assert "".join(c.text for c in chunks) == text
    assert [i for c in chunks for i in c.ids] == list(ids)
    assert all(len(c) == k for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= k
    assert len(chunks) == math.ceil(len(ids) / k)


def test_short_and_empty_passages_chunk(smol_tok):
    assert chunk_passage("", smol_tok, 16) == []
    (only,) = chunk_passage("Short one.", smol_tok, 16)
    assert only.text == "Short one." and len(only) < 16
    assert only.key == chunk_key(only.ids) and len(only.key) == 32


def test_expanded_runs_roundtrip_on_real_text(smol_tok):
    text = PASSAGES[0] + " " + PASSAGES[1]
    for k in (8, 16, 32):
        chunks = chunk_passage(text, smol_tok, k)
        for a, b in itertools.combinations(range(len(chunks) + 1), 2):
            run = chunks[a:b]
            joined = text[run[0].char_start:run[-1].char_end]
            assert roundtrip_exact(smol_tok, joined, [i for c in run for i in c.ids])


# ----------------------------------------------------------------------------------------------------- protocol
def test_p0_compresses_every_chunk_into_one_placeholder_per_passage(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, p=0.0, policy="none")
    ctx = refrag.compress(QUESTION, PASSAGES)
    assert ctx.method == "refrag" and [r.decision for r in ctx.results] == ["soft"] * 3
    for r, text in zip(ctx.results, PASSAGES):
        n_chunks = math.ceil(r.tokens_before / 4)
        assert PLACEHOLDER_RE.fullmatch(r.text)
        assert len(r.soft) == 1 and r.soft[0].n_vectors == n_chunks == r.tokens_after
        assert [u.kept for u in r.units] == [False] * n_chunks
        assert "".join(u.text for u in r.units) == text
        entry = generator.store.resolve(r.soft[0].handle)
        assert entry.space == generator.space and tuple(entry.vectors.shape) == (n_chunks, 32)
    assert ctx.extra["chunks"] == sum(len(r.units) for r in ctx.results) and ctx.extra["expanded_chunks"] == 0
    assert ctx.compression_ratio == pytest.approx(ctx.tokens_before / ctx.tokens_after)


def test_soft_tokens_are_spliced_at_their_positions(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, p=0.0, policy="none")
    ctx = refrag.compress(QUESTION, PASSAGES[:1])
    vectors = generator.store.resolve(ctx.results[0].soft[0].handle).vectors
    before, after = generator.format_prompt(QUESTION, "\x00").split("\x00")
    embeds = generator.embed_prompt(generator.format_prompt(QUESTION, ctx.text))
    start = len(generator.tokenizer(before, add_special_tokens=False)["input_ids"])
    assert torch.equal(embeds[start:start + len(vectors)], vectors)
    assert embeds.shape[0] == start + len(vectors) + len(generator.tokenizer(after, add_special_tokens=False)
                                                         ["input_ids"])


def test_every_chunk_expanded_gives_the_plain_generators_logits(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, p=1.0, policy="random")
    ctx = refrag.compress(QUESTION, PASSAGES)
    assert [r.decision for r in ctx.results] == ["kept"] * 3 and not ctx.soft
    assert ctx.tokens_after == ctx.tokens_before
    plain = generator.format_prompt(QUESTION, "\n\n".join(PASSAGES))
    assert generator.format_prompt(QUESTION, ctx.text) == plain
    assert torch.equal(generator.logits(generator.format_prompt(QUESTION, ctx.text)), generator.logits(plain))


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_mixed_expansion_reads_exact_tokens_and_counts_positions(tiny_model, generator, p):
    from ragzip.softstore import split_prompt

    refrag = make_compressor(tiny_model, generator, p=p, policy="random")
    ctx = refrag.compress(QUESTION, PASSAGES)
    n = ctx.extra["chunks"]
    assert ctx.extra["expanded_chunks"] == budget(p, n) == sum(u.kept for r in ctx.results for u in r.units)
    for r in ctx.results:
        chunks = chunk_passage(r.passage.text, generator.tokenizer, 4)
        pieces = split_prompt(r.text, generator.store)
        # Text pieces are the expanded runs: each re-tokenizes to exactly the ids of its chunks, in order.
        text_ids = [i for piece in pieces if isinstance(piece, str)
                    for i in generator.tokenizer(piece, add_special_tokens=False)["input_ids"]]
        assert text_ids == [i for c, u in zip(chunks, r.units) if u.kept for i in c.ids]
        vectors = sum(piece.vectors.shape[0] for piece in pieces if not isinstance(piece, str))
        assert vectors == sum(not u.kept for u in r.units)
        embeds = generator.embed_pieces([p if isinstance(p, str) else p.vectors for p in pieces],
                                        add_special_tokens=False)
        assert embeds.shape[0] == r.tokens_after == vectors + len(text_ids)


def test_placeholders_stand_apart_from_their_neighbours_by_a_space_the_generator_does_not_read(tiny_model, generator):
    """A placeholder glued to a word (``1889<<ragzip:soft:…>>``) is part of one long "word" that text
    splitters cut through when they fall back to characters; the separating space must not reach the generator."""
    from ragzip.softstore import split_prompt

    refrag = make_compressor(tiny_model, generator, p=0.5, policy="random")
    ctx = refrag.compress(QUESTION, PASSAGES)
    beside_text = 0
    for r in ctx.results:
        assert "inexact_runs_sent_as_embeddings" not in r.extra
        for m in PLACEHOLDER_RE.finditer(r.text):
            assert m.start() == 0 or r.text[m.start() - 1] == " ", r.text
            assert m.end() == len(r.text) or r.text[m.end()] == " ", r.text
            beside_text += m.start() > 0 and r.text[m.start() - 2:m.start() - 1] != ">"
        # The generator reads the expanded runs exactly, without the separators.
        runs = ["".join(u.text for u in group) for kept, group in itertools.groupby(r.units, lambda u: u.kept) if kept]
        assert [p for p in split_prompt(r.text, generator.store) if isinstance(p, str)] == runs
    assert beside_text  # some placeholder follows expanded text


def test_runs_that_do_not_roundtrip_travel_as_exact_token_embeddings(tiny_model, generator):
    from ragzip.softstore import split_prompt
    from ragzip.types import Passage

    refrag = make_compressor(tiny_model, generator, k=1, p=0.5, policy="random")
    text = "A \U0001d518\U0001d518 b"  # each of these characters is 3 byte-level tokens: k=1 splits them
    chunks = refrag.chunk(text)
    expanded = [j % 2 == 0 for j in range(len(chunks))]
    projected = torch.randn(len(chunks), 32)
    result = refrag._passage_result(Passage(text), chunks, expanded, projected, [0.0] * len(chunks))
    assert result.extra["inexact_runs_sent_as_embeddings"] >= 1
    pieces = split_prompt(result.text, generator.store)
    got = generator.embed_pieces([p if isinstance(p, str) else p.vectors for p in pieces], add_special_tokens=False)
    table = generator.input_embeddings().weight
    expected = torch.stack([table[c.ids[0]] if e else projected[j] for j, (c, e) in enumerate(zip(chunks, expanded))])
    assert torch.equal(got.detach(), expected.detach())


def test_expanded_chunks_through_the_kernel_equal_the_plain_decoder(tiny_model, tiny_llama, smol_tok):
    chunks = chunk_passage(PASSAGES[0], smol_tok, 4)
    ids = [i for c in chunks for i in c.ids]
    weight = tiny_llama.get_input_embeddings().weight
    soft = tiny_model.project(tiny_model.encode([c.text for c in chunks]))  # every chunk available as a vector
    token_ids, soft_index = layout_from_segments([("tokens", ids)])
    with torch.no_grad():
        embeds = assemble_embeddings(weight, torch.tensor([token_ids]), soft, torch.tensor([soft_index]))
        assert torch.equal(tiny_llama(inputs_embeds=embeds).logits, tiny_llama(input_ids=torch.tensor([ids])).logits)


def test_answer_runs_end_to_end(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, p=0.25, policy="learned")
    ctx = refrag.compress(QUESTION, PASSAGES)
    positions = generator.embed_prompt(generator.format_prompt(QUESTION, ctx.text)).shape[0]  # before: read once
    answer = generator.answer(QUESTION, ctx)
    assert answer.prompt_positions == positions
    record = ctx.results[0].provenance()
    assert record["decision"] == "soft" and record["units"] and record["soft_tokens"] >= 1


def test_output_for_another_generator_space_is_refused(tiny_model, generator):
    from ragzip.generation import GeneratorConfig, HFGenerator

    ctx = make_compressor(tiny_model, generator, p=0.0, policy="none").compress(QUESTION, PASSAGES[:1])
    other = HFGenerator(GeneratorConfig(model="other-llama"), store=generator.store, model=generator.model,
                        tokenizer=generator.tokenizer)
    with pytest.raises(SoftTokenError, match=re.escape("soft tokens were made for the embedding space "
                                                       "'tiny-llama|d=32'")):
        other.embed_prompt(other.format_prompt(QUESTION, ctx.text))


def test_bind_refuses_a_generator_of_another_width(tiny_model, smol_tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragzip.generation import GeneratorConfig, HFGenerator

    wide = LlamaForCausalLM(LlamaConfig(vocab_size=len(smol_tok), hidden_size=48, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    gen = HFGenerator(GeneratorConfig(model="wide-llama"), model=wide, tokenizer=smol_tok)
    refrag = RefragCompressor(RefragConfig(k=4), model=tiny_model)
    with pytest.raises(SoftTokenError, match=re.escape("the REFRAG artifact 'default' projects into a 32-wide "
                                                       "embedding space (decoder 'tiny-llama'), but the generator "
                                                       "'wide-llama' has hidden size 48.")):
        refrag.bind(gen)
    assert refrag.generator is None  # a refused generator leaves the compressor unbound


# ------------------------------------------------------------------------------------------------------ policies
@pytest.mark.parametrize("policy", ["learned", "random", "perplexity"])
def test_policies_expand_exactly_the_budget(tiny_model, generator, policy):
    refrag = make_compressor(tiny_model, generator, p=0.4, policy=policy)
    ctx = refrag.compress(QUESTION, PASSAGES)
    units = [u for r in ctx.results for u in r.units]
    assert sum(u.kept for u in units) == budget(0.4, len(units))
    assert all(isinstance(u.score, float) for u in units)
    kept_scores = [u.score for u in units if u.kept]
    assert min(kept_scores) >= max(u.score for u in units if not u.kept)


def test_random_policy_is_reproducible_per_question(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, p=0.5, policy="random")
    first = [u.kept for r in refrag.compress(QUESTION, PASSAGES).results for u in r.units]
    again = [u.kept for r in refrag.compress(QUESTION, PASSAGES).results for u in r.units]
    assert first == again


def test_policy_none_ignores_p(tiny_model, generator):
    ctx = make_compressor(tiny_model, generator, p=0.9, policy="none").compress(QUESTION, PASSAGES)
    assert ctx.extra["expanded_chunks"] == 0 and all(u.score is None for r in ctx.results for u in r.units)


def test_budget_rounds_to_nearest():
    assert [budget(0.25, n) for n in (0, 1, 2, 3, 4, 5, 8)] == [0, 0, 1, 1, 1, 1, 2]
    assert budget(1.0, 7) == 7 and budget(0.0, 7) == 0


def test_plackett_luce_probabilities_sum_to_one():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5], requires_grad=True)
    total = 0.0
    for order in itertools.permutations(range(4), 2):
        p, remaining = 1.0, list(range(4))
        for idx in order:
            p *= math.exp(logits[idx].item()) / sum(math.exp(logits[j].item()) for j in remaining)
            remaining.remove(idx)
        total += p
    assert total == pytest.approx(1.0)
    idx, log_prob = plackett_luce_sample(logits, 2, torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == 2
    log_prob.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_outside_unit_interval_is_a_config_error(p):
    with pytest.raises(ConfigError, match=re.escape(
            f"compressor[refrag].p = {p!r} is out of range: p is the fraction of chunks expanded to raw tokens and "
            "must lie in [0, 1] (0 compresses every chunk, 1 expands every chunk).")):
        RefragConfig(p=p)


def test_bad_options_from_yaml_are_config_errors():
    with pytest.raises(ConfigError, match=re.escape("compressor[refrag].p = 2.0 is out of range")):
        build_compressor({"type": "refrag", "p": 2})
    with pytest.raises(ConfigError, match=re.escape("compressor[refrag].k = 0 must be a positive integer")):
        build_compressor({"type": "refrag", "k": 0})
    with pytest.raises(ConfigError, match=re.escape("compressor[refrag].policy = 'ppl' is not allowed; choose one of "
                                                    "'learned', 'random', 'perplexity', 'none'.")):
        build_compressor({"type": "refrag", "policy": "ppl"})
    with pytest.raises(ConfigError, match=re.escape("unknown key 'budget' in compressor[refrag].")):
        build_compressor({"type": "refrag", "budget": 0.2})


def test_context_shorter_than_one_chunk(tiny_model, generator):
    refrag = make_compressor(tiny_model, generator, k=16, p=0.0, policy="none")
    (result,) = refrag.compress(QUESTION, ["Short one."]).results
    assert result.decision == "soft" and result.tokens_after == 1 and len(result.units) == 1
    assert result.reason == ("1 chunk(s) of k=16: 0 expanded as raw tokens, 1 compressed to one soft token each; "
                             f"the passage has {result.tokens_before} tokens, fewer than k=16, so it is one partial "
                             "chunk")


def test_final_partial_chunk_is_kept(tiny_model, generator, smol_tok):
    text = PASSAGES[0]
    n = len(smol_tok(text, add_special_tokens=False)["input_ids"])
    assert n % 4
    (result,) = make_compressor(tiny_model, generator, p=0.0, policy="none").compress(QUESTION, [text]).results
    assert len(result.units) == math.ceil(n / 4) and result.units[-1].text
    assert result.reason.endswith(f"; the last chunk is partial ({n % 4} of 4 tokens)")


def test_k_larger_than_the_context_warns(tiny_model, generator, caplog):
    refrag = make_compressor(tiny_model, generator, k=64, p=0.0, policy="none")
    with caplog.at_level(logging.WARNING, logger="ragzip.plugins.refrag.compressor"):
        ctx = refrag.compress(QUESTION, ["Short one.", "Tiny too."])
    total = ctx.tokens_before
    assert f"k=64 is larger than the whole context ({total} tokens): each passage is one partial chunk. Use a " \
           "smaller k to compress short contexts." in caplog.text
    assert [len(r.units) for r in ctx.results] == [1, 1]


def test_k_other_than_the_artifacts_warns(tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="ragzip.plugins.refrag.compressor"):
        RefragCompressor(RefragConfig(k=8), model=tiny_model)
    assert "REFRAG artifact was trained on k=4 chunks but the compressor uses k=8" in caplog.text


def test_empty_and_duplicate_passages_are_reported(tiny_model, generator):
    from ragzip.types import Passage

    ctx = make_compressor(tiny_model, generator, p=0.0, policy="none").compress(
        QUESTION, [Passage(PASSAGES[0], id="a"), Passage("   ", id="b"), Passage(PASSAGES[0], id="a")])
    assert [r.decision for r in ctx.results] == ["soft", "empty", "duplicate"]
    with pytest.raises(InputError):
        make_compressor(tiny_model, generator).compress("  ", PASSAGES)


# ---------------------------------------------------------------------------------------------------------- cache
def test_cache_gives_the_same_vectors_and_counts_hits(tiny_model, generator, tmp_path):
    folder = build_refrag_cache(PASSAGES, tmp_path, compressor=make_compressor(tiny_model, generator))
    assert folder == tmp_path / "refrag-tiny-bert-k4"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["encoder"] == "tiny-bert" and meta["k"] == 4 and meta["tokenizer"] == "tiny-llama"
    fresh = make_compressor(tiny_model, generator, p=0.0, policy="none")
    cached = make_compressor(tiny_model, generator, p=0.0, policy="none", cache=str(tmp_path))
    a, b = fresh.compress(QUESTION, PASSAGES), cached.compress(QUESTION, PASSAGES)
    assert a.extra["cached_chunks"] == 0 and b.extra["cached_chunks"] == b.extra["chunks"]
    for ra, rb in zip(a.results, b.results):
        va = generator.store.resolve(ra.soft[0].handle).vectors
        vb = generator.store.resolve(rb.soft[0].handle).vectors
        assert torch.allclose(va, vb, atol=1e-5)
    # A passage not in the cache is encoded on the fly next to cached ones.
    c = cached.compress(QUESTION, [PASSAGES[0], "A passage the index never saw."])
    assert 0 < c.extra["cached_chunks"] < c.extra["chunks"]


def test_cache_built_with_another_k_is_refused(tiny_model, generator, tmp_path):
    build_refrag_cache(PASSAGES, tmp_path, compressor=make_compressor(tiny_model, generator))
    other_k = make_compressor(tiny_model, generator, k=8, cache=str(tmp_path))
    with pytest.raises(CacheMismatchError, match=re.escape(
            f"{str(tmp_path)!r} has no REFRAG chunk cache for encoder='tiny-bert', k=8 (it has refrag-tiny-bert-k4). "
            "Build one with")):
        other_k.compress(QUESTION, PASSAGES)
    direct = make_compressor(tiny_model, generator, k=8, cache=str(tmp_path / "refrag-tiny-bert-k4"))
    with pytest.raises(CacheMismatchError, match=re.escape("was built with another setup: k 4 (this compressor: 8). "
                                                           "Its vectors cannot be mixed with this compressor's.")):
        direct.compress(QUESTION, PASSAGES)


def test_cache_built_with_another_encoder_is_refused(tiny_model, generator, tmp_path):
    folder = build_refrag_cache(PASSAGES, tmp_path, compressor=make_compressor(tiny_model, generator))
    meta = json.loads((folder / "meta.json").read_text())
    meta["encoder"] = "embedded:minilm"
    (folder / "meta.json").write_text(json.dumps(meta))
    refrag = make_compressor(tiny_model, generator, cache=str(folder))
    with pytest.raises(CacheMismatchError, match=re.escape(
            "was built with another setup: encoder 'embedded:minilm' (this compressor: 'tiny-bert'). Its vectors "
            "cannot be mixed with this compressor's. Rebuild it for this configuration")):
        refrag.compress(QUESTION, PASSAGES)


def test_cache_from_another_artifact_is_refused_then_rebuilt(tiny_model, minilm_tok, generator, tmp_path, caplog):
    folder = build_refrag_cache(PASSAGES, tmp_path, compressor=make_compressor(tiny_model, generator))
    retrained = build_tiny_refrag(minilm_tok, seed=1)  # same names and shapes, other trained weights
    refrag = make_compressor(retrained, generator, cache=str(tmp_path))
    with pytest.raises(CacheMismatchError, match=re.escape("encoder weights (artifact)")):
        refrag.compress(QUESTION, PASSAGES)
    with caplog.at_level(logging.WARNING, logger="ragzip.plugins.refrag.cache"):
        build_refrag_cache(PASSAGES, tmp_path, compressor=make_compressor(retrained, generator))
    assert f"rebuilding {folder}" in caplog.text
    assert make_compressor(retrained, generator, cache=str(tmp_path)).compress(QUESTION, PASSAGES).extra[
        "cached_chunks"] > 0


def test_missing_cache_folder_is_a_config_error(tiny_model, generator, tmp_path):
    refrag = make_compressor(tiny_model, generator, cache=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=re.escape(f"REFRAG chunk cache {str(tmp_path / 'nope')!r} does not exist.")):
        refrag.compress(QUESTION, PASSAGES)


def test_cache_beside_a_faiss_index(tiny_model, generator, tmp_path):
    from ragzip.embed import Embedder
    from ragzip.retrieval import FaissRetriever
    from ragzip.types import Passage

    retriever = FaissRetriever.build([Passage(t, id=f"p{i}") for i, t in enumerate(PASSAGES)], Embedder("hash:64"))
    retriever.save(tmp_path / "index")
    folder = build_refrag_cache(retriever, tmp_path / "index", compressor=make_compressor(tiny_model, generator))
    assert folder.parent == tmp_path / "index"
    FaissRetriever.load(tmp_path / "index")  # the cache folder does not disturb the index
    refrag = make_compressor(tiny_model, generator, cache=str(tmp_path / "index"))
    hits = refrag.compress(QUESTION, retriever.search(QUESTION, top_k=2))
    assert hits.extra["cached_chunks"] == hits.extra["chunks"]


# ------------------------------------------------------------------------------------------------------ artifacts
def test_save_and_load_roundtrip_keeps_only_trained_parameters(tiny_model, minilm_tok, tmp_path):
    from safetensors.torch import load_file

    tiny_model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["type"] == "refrag" and data["encoder"] == "tiny-bert" and data["decoder"] == "tiny-llama"
    assert data["k"] == 4
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert names and all(n.startswith(("encoder.encoder.layer.1.", "projector.", "policy.")) for n in names)
    base = build_tiny_refrag(minilm_tok, seed=0).encoder  # the same base encoder, as loading it by name gives
    with torch.no_grad():
        for param in base.encoder.layer[-1].parameters():
            param.add_(1.0)  # the trained top layer must come from the file, not from the base
    loaded = RefragModel.from_pretrained(tmp_path, encoder=base, encoder_tokenizer=minilm_tok)
    for name, tensor in tiny_model.trained_state_dict().items():
        assert torch.equal(tensor, loaded.trained_state_dict()[name]), name
    assert loaded.encoder_fingerprint() == tiny_model.encoder_fingerprint()
    with torch.no_grad():
        texts = ["Paris is the capital", "of France."]
        assert torch.allclose(loaded.project(loaded.encode(texts)), tiny_model.project(tiny_model.encode(texts)))


def test_unknown_key_in_a_saved_artifact_is_a_warning(tiny_model, minilm_tok, tmp_path, caplog):
    tiny_model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["future_option"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        RefragModel.from_pretrained(tmp_path, encoder=build_tiny_refrag(minilm_tok).encoder,
                                    encoder_tokenizer=minilm_tok)
    assert "unknown key 'future_option'" in caplog.text


def test_missing_artifact_says_how_to_train_one(tmp_path):
    from ragzip.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match=re.escape(f"REFRAG artifact {str(tmp_path)!r} not found: the folder "
                                                           "needs config.json and model.safetensors")):
        RefragModel.from_pretrained(tmp_path)


# -------------------------------------------------------------------------------------------------------- kernels
def test_reference_kernel_places_vectors_and_tokens():
    weight = torch.randn(10, 6)
    soft = torch.randn(3, 6)
    ids, sidx = layout_from_segments([("tokens", [1, 2]), ("soft", [0, 1]), ("tokens", [9]), ("soft", [2])])
    out = assemble_embeddings(weight, torch.tensor([ids]), soft, torch.tensor([sidx]))[0]
    expected = torch.stack([weight[1], weight[2], soft[0], soft[1], weight[9], soft[2]])
    assert torch.equal(out, expected)
    soft.requires_grad_(True)
    assemble_embeddings(weight, torch.tensor([ids]), soft, torch.tensor([sidx])).sum().backward()
    assert torch.equal(soft.grad, torch.ones_like(soft))


def test_kernel_refuses_triton_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=re.escape("backend='triton' needs a CUDA GPU")):
        assemble_embeddings(torch.zeros(2, 2), torch.zeros(1, 1, dtype=torch.long), torch.zeros(0, 2),
                            torch.full((1, 1), -1), backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Triton has no CPU backend)")
@pytest.mark.parametrize("shape", [(1, 7, 576), (3, 129, 64), (2, 33, 1000)])
def test_triton_kernel_matches_the_reference(shape):
    pytest.importorskip("triton")
    batch, length, d = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(5000, d, device="cuda", generator=gen)
    soft = torch.randn(40, d, device="cuda", generator=gen)
    ids = torch.randint(0, 5000, (batch, length), device="cuda", generator=gen)
    sidx = torch.randint(-1, 40, (batch, length), device="cuda", generator=gen)
    expected = assemble_embeddings_reference(weight, ids, soft, sidx)
    assert torch.equal(assemble_embeddings(weight, ids, soft, sidx, backend="triton"), expected)
    empty = assemble_embeddings(weight, ids, soft[:0], torch.full_like(sidx, -1), backend="triton")
    assert torch.equal(empty, weight[ids])


# ---------------------------------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_real_models_every_chunk_expanded_gives_plain_logits():
    from ragzip.generation import GeneratorConfig, HFGenerator

    gen = HFGenerator(GeneratorConfig(), store=SoftTokenStore())
    refrag = RefragCompressor(RefragConfig(k=16, p=1.0, policy="random"))
    refrag.bind(gen)
    ctx = refrag.compress(QUESTION, PASSAGES)
    plain = gen.format_prompt(QUESTION, "\n\n".join(PASSAGES))
    assert torch.equal(gen.logits(gen.format_prompt(QUESTION, ctx.text)), gen.logits(plain))


@pytest.mark.slow
def test_default_artifact_compresses_and_answers():
    from ragzip.generation import GeneratorConfig, HFGenerator

    gen = HFGenerator(GeneratorConfig(max_new_tokens=8), store=SoftTokenStore())
    refrag = build_compressor({"type": "refrag", "k": 16, "p": 0.25})
    refrag.bind(gen)
    ctx = refrag.compress(QUESTION, PASSAGES)
    assert ctx.tokens_after < ctx.tokens_before
    assert isinstance(gen.answer(QUESTION, ctx).text, str)
