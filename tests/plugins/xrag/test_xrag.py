"""xrag: projector, artifacts (ours and the published format), the compressor through the soft-token protocol,
bad input with pinned messages, and the training mechanics. Tiny models built from configs; no downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ragzip import InputError, ModelNotFoundError, Passage, SoftTokenError, SoftTokenStore, build_compressor
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.plugins.xrag import ProjectorConfig, XRAGCompressor, XRAGConfig, XRAGProjector
from ragzip.plugins.xrag.modeling import ARTIFACTS, LastTokenEncoder, SentenceTransformerEncoder
from ragzip.softstore import PLACEHOLDER_RE

GEN = "embedded:smollm2-135m"
EMB = "hash:16"
D_EMB, D_GEN = 16, 32


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tokenizer(smol_tok):
    return smol_tok  # tiny_lm (conftest): the 2-layer, 32-wide Llama over this tokenizer


@pytest.fixture()
def generator(tiny_lm, tokenizer):
    return HFGenerator(GeneratorConfig(model=GEN, max_new_tokens=3), store=SoftTokenStore(), model=tiny_lm,
                       tokenizer=tokenizer)


def projector_config(**overrides) -> ProjectorConfig:
    values = {"embedder": EMB, "embedder_dim": D_EMB, "generator": GEN, "generator_hidden": D_GEN}
    values.update(overrides)
    return ProjectorConfig(**values)


@pytest.fixture()
def projector():
    torch.manual_seed(1)
    return XRAGProjector(projector_config()).eval()


@pytest.fixture()
def artifact(tmp_path, projector) -> Path:
    return projector.save_pretrained(tmp_path / "projector")


def make_xrag(generator, artifact, **config) -> XRAGCompressor:
    xrag = build_compressor({"type": "xrag", "artifact": str(artifact), **config})
    assert isinstance(xrag, XRAGCompressor)
    xrag.bind(generator)
    return xrag


def indexed(texts: list[str], **metadata) -> list[Passage]:
    """Passages as a FAISS index returns them: with the embedder's vector and its name."""
    from ragzip.embed import Embedder

    vectors = Embedder(EMB).encode(texts)
    return [Passage(t, id=f"p{i}", metadata={"embedder": EMB, **metadata}, embedding=v)
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))]


class NoEncoder:
    """An encoder that must not be called (the passages carry usable embeddings)."""

    name, dim = EMB, D_EMB

    def encode(self, texts):
        raise AssertionError(f"re-encoded {texts!r}")


TEXTS = ["Paris is the capital of France.", "The Rhine flows through Basel.", "Tesla was born in Smiljan."]


# --------------------------------------------------------------------------------------------------------- projector
def test_projector_maps_embedder_width_to_generator_width(projector):
    out = projector(torch.randn(5, D_EMB))
    assert out.shape == (5, D_GEN)
    assert isinstance(projector.projector.act, nn.GELU)
    assert projector.num_parameters == D_EMB * D_GEN + D_GEN + D_GEN * D_GEN + D_GEN


def test_default_config_is_minilm_to_smollm2():
    config = ProjectorConfig()
    model = XRAGProjector(config)
    assert model(torch.zeros(2, 384)).shape == (2, 576)
    assert (config.embedder, config.generator, config.intermediate_size) == ("embedded:minilm", GEN, 576)


def test_save_and_load_round_trip(tmp_path, projector):
    folder = projector.save_pretrained(tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    raw = json.loads((folder / "config.json").read_text())
    assert raw["type"] == "xrag" and raw["embedder"] == EMB and raw["generator"] == GEN and raw["ragzip_version"]
    loaded = XRAGProjector.from_pretrained(folder)
    assert loaded.config == projector.config
    x = torch.randn(3, D_EMB)
    assert torch.equal(loaded(x), projector(x))


def test_unknown_key_in_saved_config_is_a_warning(tmp_path, projector, caplog):
    folder = projector.save_pretrained(tmp_path / "a")
    raw = json.loads((folder / "config.json").read_text())
    raw["from_the_future"] = 1
    (folder / "config.json").write_text(json.dumps(raw))
    loaded = XRAGProjector.from_pretrained(folder)
    assert loaded.config.embedder == EMB
    assert "from_the_future" in caplog.text


def test_missing_artifact_folder_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match=re.escape(
            f"xrag artifact {missing!r} does not exist. Use 'default', a folder written by `ragzip train xrag "
            "--out DIR`, or a Hugging Face id such as 'Hannibal046/xrag-7b'.")):
        XRAGProjector.from_pretrained(missing)


def test_shipped_artifact_loads_and_is_small():
    folder = ARTIFACTS / "default"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("no shipped artifact in this checkout")
    model = XRAGProjector.from_pretrained("default")
    cfg = model.config
    assert (cfg.embedder, cfg.embedder_dim, cfg.generator, cfg.generator_hidden) == ("embedded:minilm", 384, GEN, 576)
    assert (folder / "model.safetensors").stat().st_size < 3_000_000
    assert (folder / "MODEL_CARD.md").is_file()
    x = torch.nn.functional.normalize(torch.randn(4, 384), dim=-1)
    out = model(x)
    assert torch.isfinite(out).all() and out.shape == (4, 576)
    assert 0.5 < float(out.norm(dim=-1).mean()) < 50  # the scale of SmolLM2 token embeddings (~3.2), not garbage


# -------------------------------------------------------------------------------------------------------- compressor
def test_registered_as_a_soft_compressor():
    xrag = build_compressor({"type": "xrag"})
    assert isinstance(xrag, XRAGCompressor) and xrag.soft and xrag.name == "xrag"


def test_placeholder_resolves_to_exactly_the_projected_embedding(generator, artifact, projector):
    xrag = make_xrag(generator, artifact)
    xrag._encoder = NoEncoder()
    passages = indexed(TEXTS[:2])
    ctx = xrag.compress("Where is Basel?", passages)
    assert [r.decision for r in ctx.results] == ["soft", "soft"]
    assert [r.tokens_after for r in ctx.results] == [1, 1]
    assert all(r.tokens_before > 3 for r in ctx.results)
    assert ctx.compression_ratio == ctx.tokens_before / 2
    for r in ctx.results:
        assert PLACEHOLDER_RE.fullmatch(r.text) and r.soft[0].placeholder == r.text and r.soft[0].n_vectors == 1
        assert r.provenance()["embedding"] == "index"
    prompt = generator.format_prompt("Where is Basel?", ctx.text)
    embeds = generator.embed_prompt(prompt)  # (T, d)
    expected = projector(torch.from_numpy(np.stack([p.embedding for p in passages])))  # (2, d)
    table = generator.input_embeddings().weight
    hits = [i for i in range(embeds.shape[0]) if any(torch.allclose(embeds[i], e) for e in expected)]
    assert len(hits) == 2
    assert torch.equal(embeds[hits[0]], expected[0].detach()) and torch.equal(embeds[hits[1]], expected[1].detach())
    # Everything else is plain token embeddings: the prompt minus the placeholders, tokenized around them.
    before, _, after = prompt.partition(ctx.results[0].text)
    ids = generator.tokenizer(before, add_special_tokens=False)["input_ids"]
    assert hits[0] == len(ids) and torch.equal(embeds[: len(ids)], table[ids])
    assert generator.answer("Where is Basel?", ctx).prompt_positions == embeds.shape[0]


def test_context_template_wraps_each_soft_token(generator, artifact):
    xrag = make_xrag(generator, artifact, context_template="Background ({title}): {soft}")
    ctx = xrag.compress("q?", indexed(TEXTS[:1], title="Paris"))
    text = ctx.results[0].text
    assert text.startswith("Background (Paris): <<ragzip:soft:") and PLACEHOLDER_RE.search(text)
    assert ctx.results[0].tokens_after == 1 + generator.token_counter.count("Background (Paris): ")


def test_passages_without_embeddings_are_encoded_with_the_projector_embedder(generator, artifact, projector):
    from ragzip.embed import Embedder

    xrag = make_xrag(generator, artifact)
    ctx = xrag.compress("q?", TEXTS)
    assert [r.provenance()["embedding"] for r in ctx.results] == ["encoded"] * 3
    entry = generator.store.resolve(ctx.results[2].soft[0].handle)
    expected = projector(torch.from_numpy(Embedder(EMB).encode(TEXTS[2:])))
    assert torch.allclose(entry.vectors, expected, atol=1e-6)


def test_embedding_from_another_embedder_is_reencoded(generator, artifact):
    xrag = make_xrag(generator, artifact)
    other = Passage(TEXTS[0], metadata={"embedder": "embedded:minilm"}, embedding=np.ones(384, dtype=np.float32))
    wrong_width = Passage(TEXTS[1], embedding=np.ones(8, dtype=np.float32) / np.sqrt(8))
    ctx = xrag.compress("q?", [other, wrong_width])
    assert [r.provenance()["embedding"] for r in ctx.results] == ["encoded", "encoded"]


def test_batch_keeps_each_question_its_own_passages(generator, artifact):
    xrag = make_xrag(generator, artifact)
    out = xrag.compress_batch(["a?", "b?"], [indexed(TEXTS[:1]), indexed(TEXTS)])
    assert [len(c.results) for c in out] == [1, 3]
    assert out[1].results[2].passage.text == TEXTS[2] and out[0].query == "a?"


def test_compress_works_unbound_in_the_artifact_generator_space(artifact):
    xrag = build_compressor({"type": "xrag", "artifact": str(artifact), "tokenizer": "whitespace"})
    ctx = xrag.compress("q?", TEXTS[:1])
    entry = xrag.store.resolve(ctx.results[0].soft[0].handle)
    assert entry.space == f"{GEN}|d={D_GEN}" and entry.vectors.shape == (1, D_GEN)


# --------------------------------------------------------------------------------------------------------- bad input
def test_no_embedding_and_no_embedder_is_a_clear_error(tmp_path, generator):
    folder = XRAGProjector(projector_config(embedder="embedded:nope")).save_pretrained(tmp_path / "p")
    xrag = make_xrag(generator, folder)
    with pytest.raises(ModelNotFoundError, match=re.escape(
            "passage 'p0' needs embedding with 'embedded:nope' (its own embedding is missing or from another "
            "embedder), but that embedder cannot be loaded: unknown embedded model 'embedded:nope'")):
        xrag.compress("q?", [Passage(TEXTS[0], id="p0")])


def test_missing_embedding_without_reencode_is_an_error(generator, artifact):
    xrag = make_xrag(generator, artifact, reencode=False)
    with pytest.raises(InputError, match=re.escape(
            "passage 'p0' has no embedding, and compressor[xrag].reencode is false. Pass passages from an index "
            "built with 'hash:16', or set `reencode: true` to embed them here.")):
        xrag.compress("q?", [Passage(TEXTS[0], id="p0")])


def test_wrong_dimension_without_reencode_is_an_error(generator, artifact):
    xrag = make_xrag(generator, artifact, reencode=False)
    with pytest.raises(InputError, match=re.escape(
            "passage 'p0' has a 8-d embedding, not the 16-d one of 'hash:16', and compressor[xrag].reencode is "
            "false.")):
        xrag.compress("q?", [Passage(TEXTS[0], id="p0", embedding=np.ones(8) / np.sqrt(8))])


def test_wrong_dimension_from_the_right_embedder_is_an_inconsistent_index(generator, artifact):
    xrag = make_xrag(generator, artifact)
    bad = Passage(TEXTS[0], id="p0", metadata={"embedder": EMB}, embedding=np.ones(8) / np.sqrt(8))
    with pytest.raises(InputError, match=re.escape(
            "passage 'p0' says its embedding comes from 'hash:16' but it has 8 dimensions, not 16. The index is "
            "inconsistent: rebuild it with 'hash:16'.")):
        xrag.compress("q?", [bad])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_embedding_is_an_error(generator, artifact, value):
    xrag = make_xrag(generator, artifact)
    vector = np.ones(D_EMB, dtype=np.float32)
    vector[3] = value
    with pytest.raises(InputError, match=re.escape(
            "passage 'p0' has an embedding with NaN or inf values; the index that produced it is corrupt. Rebuild "
            "the index, or drop the embedding to re-encode the text.")):
        xrag.compress("q?", [Passage(TEXTS[0], id="p0", embedding=vector)])


def test_more_passages_than_max_passages_is_an_error(generator, artifact):
    xrag = make_xrag(generator, artifact, max_passages=2)
    with pytest.raises(InputError, match=re.escape(
            "xrag got 3 passages for one question, more than max_passages=2. Retrieve fewer (top_k) or raise "
            "`max_passages` in the xrag config (the shipped projector was trained on 1-3 passages per question).")):
        xrag.compress("q?", indexed(TEXTS))


@pytest.mark.parametrize("template, message", [
    ("Background:", "compressor[xrag].context_template must contain the {soft} slot exactly once, got "
                    "'Background:'. Put {soft} where the passage's soft token goes, e.g. 'Background: {soft}'."),
    ("{soft} {soft}", "compressor[xrag].context_template must contain the {soft} slot exactly once"),
    ("{soft} {url}", "compressor[xrag].context_template has unknown slot(s) {url}; allowed: {soft}, {title}."),
    ("{soft", "compressor[xrag].context_template = '{soft' is not a valid format string"),
])
def test_context_template_without_its_slot_is_a_config_error(template, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_compressor({"type": "xrag", "context_template": template})


def test_generator_prompt_template_without_context_slot_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("GeneratorConfig.prompt_template must contain the {context} slot")):
        GeneratorConfig(prompt_template="Question: {question}")


def test_max_passages_must_be_positive():
    with pytest.raises(ConfigError, match=re.escape(
            "compressor[xrag].max_passages = 0 is out of range; it must lie in [1, inf].")):
        build_compressor({"type": "xrag", "max_passages": 0})


def test_embedder_that_does_not_belong_to_the_projector_is_refused(artifact):
    with pytest.raises(ConfigError, match=re.escape(
            f"compressor[xrag].embedder = 'embedded:minilm' does not belong with the projector in artifact "
            f"{str(artifact)!r}, which was trained on 'hash:16' (16-d). Set `embedder: hash:16` (or leave it empty), "
            "or train a projector for 'embedded:minilm' with `ragzip train xrag --embedder embedded:minilm --out DIR` "
            "and set `artifact: DIR`.")):
        _ = build_compressor({"type": "xrag", "artifact": str(artifact), "embedder": "embedded:minilm"}).projector


def test_encoder_of_the_wrong_width_is_refused(tmp_path, generator):
    from ragzip.plugins.xrag.modeling import check_encoder

    encoder = SentenceTransformerEncoder("hash:8")
    with pytest.raises(ConfigError, match=re.escape(
            "embedder 'hash:8' gives 8-d vectors, but the xrag projector reads 16-d vectors from 'hash:16'.")):
        check_encoder(encoder, projector_config())


def test_bind_to_another_generator_is_refused(tmp_path, generator):
    folder = XRAGProjector(projector_config(generator_hidden=48)).save_pretrained(tmp_path / "p")
    xrag = build_compressor({"type": "xrag", "artifact": str(folder)})
    with pytest.raises(SoftTokenError, match=re.escape(
            f"the xrag projector in artifact {str(folder)!r} was trained for generator 'embedded:smollm2-135m' "
            "(hidden size 48), but it is bound to 'embedded:smollm2-135m' (hidden size 32).")):
        xrag.bind(generator)


def test_soft_tokens_from_another_space_are_refused_by_the_generator(tmp_path, generator, tiny_lm, tokenizer):
    folder = XRAGProjector(projector_config()).save_pretrained(tmp_path / "p")
    xrag = build_compressor({"type": "xrag", "artifact": str(folder), "tokenizer": "whitespace"})
    other = HFGenerator(GeneratorConfig(model="another-model"), store=xrag.store, model=tiny_lm, tokenizer=tokenizer)
    ctx = xrag.compress("q?", TEXTS[:1])
    with pytest.raises(SoftTokenError, match=re.escape("soft tokens were made for the embedding space")):
        other.embed_prompt(other.format_prompt("q?", ctx.text))


# ----------------------------------------------------------------------------------------------- published checkpoint
def xmistral_checkpoint(folder: Path, tokenizer, *, retriever_hidden: int = D_EMB, bin_format: bool = False) -> nn.Module:
    """A tiny XMistralForCausalLM-shaped checkpoint: Mistral weights + ``projector.projector.{0,2}``."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(2)
    config = MistralConfig(hidden_size=D_GEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512)
    config.retriever_hidden_size = retriever_hidden
    config.projector_type = "mlp2x_gelu"
    model = MistralForCausalLM(config)
    model.projector = nn.Module()
    model.projector.projector = nn.Sequential(nn.Linear(retriever_hidden, D_GEN), nn.GELU(), nn.Linear(D_GEN, D_GEN))
    folder.mkdir(parents=True, exist_ok=True)
    if bin_format:
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


@pytest.mark.parametrize("bin_format", [False, True])
def test_published_checkpoint_projector_loads(tmp_path, tokenizer, bin_format):
    model = xmistral_checkpoint(tmp_path / "xrag", tokenizer, bin_format=bin_format)
    loaded = XRAGProjector.from_pretrained(tmp_path / "xrag", embedder="tiny-sfr")
    cfg = loaded.config
    assert (cfg.embedder, cfg.embedder_dim, cfg.generator_hidden, cfg.pooling, cfg.normalize) == (
        "tiny-sfr", D_EMB, D_GEN, "last-token", False)
    x = torch.randn(2, D_EMB)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.projector.projector(x), atol=1e-6)


def test_published_checkpoint_needs_its_embedder_named(tmp_path, tokenizer):
    xmistral_checkpoint(tmp_path / "xrag", tokenizer)
    spec = str(tmp_path / "xrag")
    with pytest.raises(ConfigError, match=re.escape(
            f"{spec!r} is an xRAG checkpoint whose retriever ragzip does not know. Name it in the compressor config, "
            "e.g. `embedder: Salesforce/SFR-Embedding-Mistral` (the xRAG default).")):
        XRAGProjector.from_pretrained(spec)


def test_published_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=re.escape("could not load model 'Hannibal046/xrag-7b'")):
        XRAGProjector.from_pretrained("Hannibal046/xrag-7b")


def test_published_path_end_to_end_with_last_token_encoder(tmp_path, tokenizer):
    """xrag-7b's path in miniature: the checkpoint is both generator and projector; SFR-style last-token vectors."""
    from transformers import MistralConfig, MistralModel

    from ragzip.models import load_causal_lm

    xmistral_checkpoint(tmp_path / "xrag", tokenizer)
    spec = str(tmp_path / "xrag")
    torch.manual_seed(3)
    sfr = MistralModel(MistralConfig(hidden_size=D_EMB, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tokenizer)))
    encoder = LastTokenEncoder("tiny-sfr", max_length=180, model=sfr, tokenizer=tokenizer)
    vectors = encoder.encode(TEXTS[:2])
    ids = tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        manual = sfr(**ids).last_hidden_state[0, -1]
    assert vectors.shape == (2, D_EMB) and np.allclose(vectors[1], manual.numpy(), atol=1e-5)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # unnormalised, as xRAG feeds SFR

    model, tok = load_causal_lm(spec)  # the same folder loads as a plain MistralForCausalLM (projector ignored)
    generator = HFGenerator(GeneratorConfig(model=spec, max_new_tokens=2), store=SoftTokenStore(), model=model,
                            tokenizer=tok)
    xrag = XRAGCompressor(XRAGConfig(artifact=spec, embedder="tiny-sfr"), encoder=encoder)
    xrag.bind(generator)
    ctx = xrag.compress("q?", TEXTS[:2])
    entry = generator.store.resolve(ctx.results[1].soft[0].handle)
    with torch.no_grad():
        assert torch.allclose(entry.vectors[0], xrag.projector(torch.from_numpy(vectors[1])), atol=1e-6)
    assert generator.answer("q?", ctx).prompt_positions > 2
    # Raw vectors are reused; a unit vector (ragzip's FAISS index normalises) cannot feed a raw-vector projector.
    raw = Passage(TEXTS[0], metadata={"embedder": "tiny-sfr"}, embedding=vectors[0])
    unit = Passage(TEXTS[1], metadata={"embedder": "tiny-sfr"}, embedding=vectors[1] / np.linalg.norm(vectors[1]))
    unlabelled = Passage(TEXTS[2], embedding=vectors[0])  # same width, but whose vector? never trusted
    assert [r.provenance()["embedding"] for r in xrag.compress("q?", [raw, unit, unlabelled]).results] == [
        "index", "encoded", "encoded"]


# ---------------------------------------------------------------------------------------------- training mechanics
def test_training_prompt_embeds_exactly_as_the_generator_reads_it(generator, projector):
    from ragzip.plugins.xrag.train import _SOFT, Prompts, QAExample
    from ragzip.training.lm import Target

    prompts = Prompts(generator, "{soft}")
    ex = QAExample("Where is Basel?", "Switzerland", [0, 1], "Basel is in Switzerland.")
    vectors = projector(torch.randn(2, D_EMB))  # (2, d)
    pieces, adds = prompts.qa(ex, ["", ""], vectors)
    assert pieces[-1] == Target(prompts.answer_ids("Switzerland"))
    assert [p is not None for p in pieces if isinstance(p, torch.Tensor)] == [True, True]
    # The generator's own path: placeholders in the store, resolved by embed_prompt.
    store_text = prompts.context_text(["", ""])
    for j in range(2):
        store_text = store_text.replace(_SOFT, generator.store.put(vectors[j], space=generator.space), 1)
    expected = generator.embed_prompt(generator.format_prompt(ex.question, store_text))  # (T, d)
    ours = generator.embed_pieces(pieces[:-1], add_special_tokens=adds)  # (T, d)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_training_loss_is_the_frozen_llm_reading_the_prompt(generator, projector):
    from ragzip.plugins.xrag.train import Prompts, QAExample

    prompts = Prompts(generator, "{soft}")
    examples = [QAExample("Where is Basel?", "Switzerland", [0], ""),
                QAExample("Who was born in Smiljan, a village?", "Nikola Tesla", [1, 2], "")]
    soft = projector(torch.randn(3, D_EMB))  # (3, d)
    seqs = [prompts.qa(examples[0], [""], soft[:1]), prompts.qa(examples[1], ["", ""], soft[1:])]
    scored = prompts.nll(seqs)
    assert len(prompts.prefixes) == 1, "the shared prefix was not cached"
    reference = []
    for pieces, adds in seqs:
        rows = generator.embed_pieces(pieces[:-1], add_special_tokens=adds)  # (T, d)
        target = pieces[-1].tokens
        full = generator.model(inputs_embeds=torch.cat([rows, generator.input_embeddings().weight[target]])[None])
        reference.append(full.logits[0, rows.shape[0] - 1:-1])  # (n_target, V)
    assert torch.allclose(scored.logits, torch.cat(reference), atol=1e-4)
    assert scored.targets.tolist() == [t for pieces, _ in seqs for t in pieces[-1].tokens]
    scored.logits.sum().backward()  # gradients reach the projector through the soft tokens
    assert projector.projector.fc1.weight.grad is not None


def test_a_few_training_steps_lower_the_loss(generator):
    from ragzip.plugins.xrag.train import Corpus, Prompts, QAExample, qa_loss

    torch.manual_seed(0)
    prompts = Prompts(generator, "{soft}")
    corpus = Corpus()
    for t in TEXTS:
        corpus.add(t)
    corpus.embeddings = np.random.default_rng(0).standard_normal((3, D_EMB)).astype(np.float32)
    projector = XRAGProjector(projector_config())
    batch = [QAExample("Where?", "Basel", [1], "The Rhine flows through Basel."),
             QAExample("Who?", "Tesla", [2, 0], "Tesla was born in Smiljan.")]
    opt = torch.optim.AdamW(projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss, nll, kl = qa_loss(projector, prompts, corpus, batch, kl_weight=2.0, teacher_context="evidence")
        assert kl >= 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


XRAG_TRAIN_DEFAULTS = {
    "data": None, "val_examples": 24, "eval_every": 50, "resume": False, "embedder": "embedded:minilm",
    "generator": "embedded:smollm2-135m", "context_template": "{soft}", "seed": 0, "batch_size": 8,
    "stage0_steps": 1500, "stage0_lr": 2e-3, "stage1_steps": 60, "stage1_minutes": 15.0, "stage1_lr": 1e-3,
    "recon_tokens": 32, "stage2_steps": 120, "stage2_minutes": 25.0, "stage2_lr": 5e-4, "kl_weight": 2.0,
    "teacher_context": "evidence", "max_passages": 3, "threads": 1, "log_every": 5, "checkpoint_every": 25}


def test_train_options_and_defaults_are_pinned(capsys):
    from ragzip.plugins.xrag.train import XRAGArguments

    args = XRAGArguments.parse(["--out", "o"])
    assert {k: getattr(args, k) for k in XRAG_TRAIN_DEFAULTS} == XRAG_TRAIN_DEFAULTS
    options = {s for a in XRAGArguments.parser()._actions for s in a.option_strings}
    assert {"--" + k.replace("_", "-") for k in XRAG_TRAIN_DEFAULTS} | {"--out", "--data-dir"} <= options
    assert not {"--steps", "--lr", "--max-minutes", "--schedule"} & options  # set per stage instead
    assert XRAGArguments.parse(args.to_argv()) == args
    assert args.train_files()[0].endswith("hotpotqa_train.jsonl")
    with pytest.raises(SystemExit):
        XRAGArguments.parse(["--out", "o", "--context-template", "no slot"])
    assert "must contain the {soft} slot exactly once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        XRAGArguments.parse([])
    assert "--out" in capsys.readouterr().err


def _write_train_files(folder: Path) -> list[Path]:
    def para(title, i):
        return f"{title} paragraph {i} has enough words to be a passage. It says that {title} answer {i} holds."

    squad = [{"id": f"s{title}{i}", "title": title, "context": para(title, i), "question": f"q {title} {i}?",
              "answers": [f"answer {i}"], "answer_starts": [para(title, i).index(f"answer {i}")]}
             for title in ("Art_A", "Art_B") for i in range(6)]
    squad.append({"id": "impossible", "title": "Art_A", "context": para("Art_A", 0), "question": "never?",
                  "answers": [], "answer_starts": [], "is_impossible": True})
    qed = []
    for i in range(6):
        text = f"Passage {i} opens here . The answer {i} is in this sentence ."
        qed.append({"id": f"n{i}", "question": f"nq {i}?", "answers": [f"answer {i}"], "context": text,
                    "title": f"N{i}", "sentence_starts": [0, text.index("The")], "answer_sentence_idx": [1]})
    hotpot = [{"id": f"h{i}", "question": f"h{i}?", "answer": "yes", "supporting_facts": [[f"T{i}", 0], [f"U{i}", 0]],
               "context": [[f"T{i}", [f"T{i} is a thing with many words in it for the test here."]],
                           [f"U{i}", [f"U{i} is another thing with many words in it for the test."]],
                           [f"V{i}", [f"V{i} is a distractor with many words in it for this test."]]]}
              for i in range(6)]
    paths = [folder / "hotpotqa_train.jsonl", folder / "qed_nq_train.jsonl", folder / "squad_train.jsonl"]
    for path, rows in zip(paths, (hotpot, qed, squad), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows))
    return paths


def test_training_data_comes_from_train_files_with_a_held_out_split(tmp_path):
    from ragzip.plugins.xrag.train import build_data

    paths = _write_train_files(tmp_path)
    data = build_data(paths, seed=0, n_paraphrase=100, n_qa=300, n_val=2, max_passages=3)
    corpus = data["corpus"]
    assert data["sources"] == {"hotpotqa": 6, "qed": 6, "squad": 12}  # the unanswerable question is skipped
    assert len(data["val"]) == 6  # two per source, never trained on
    val_questions = {ex.question for ex in data["val"]}
    assert not val_questions & {ex.question for ex in data["qa"]}
    assert len(data["qa"]) == 4 + 4 + 10
    assert all(1 <= len(ex.passages) <= 3 for ex in data["qa"])
    qed = [ex for ex in data["qa"] if ex.question.startswith("nq")]
    assert all(ex.evidence.startswith("The answer") for ex in qed)  # the answer sentence is what the teacher reads
    assert not set(data["paraphrase"]) & {p for ex in data["val"] for p in ex.passages}
    # The split does not depend on how many examples a run builds (a longer run keeps the same validation set).
    again = build_data(paths, seed=0, n_paraphrase=10, n_qa=30, n_val=2, max_passages=3)
    assert [ex.question for ex in again["val"]] == [ex.question for ex in data["val"]]
    assert all(corpus.texts[p] for ex in data["qa"] for p in ex.passages)


def test_missing_train_file_is_a_clear_error(tmp_path):
    from ragzip.plugins.xrag.train import build_data

    with pytest.raises(InputError, match="no such file"):
        build_data([tmp_path / "missing.jsonl"], seed=0, n_paraphrase=1, n_qa=1, n_val=1, max_passages=1)


# ------------------------------------------------------------------------------------------------------ frameworks
def _spliced(generator, projector, question: str, texts: list[str], context: str) -> None:
    """The generator reads ``context`` with each passage's projected embedding in place of its placeholder."""
    from ragzip.embed import Embedder

    embeds = generator.embed_prompt(generator.format_prompt(question, context))  # (T, d)
    expected = projector(torch.from_numpy(Embedder(EMB).encode(texts)))  # (n, d)
    for vector in expected:
        assert any(torch.allclose(row, vector, atol=1e-6) for row in embeds)


def test_langchain_compressor_and_llm_read_the_soft_tokens(generator, artifact, projector):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ragzip.integrations.langchain import RagzipCompressor, RagzipLLM

    llm = RagzipLLM(generator)
    compressor = RagzipCompressor(config={"type": "xrag", "artifact": str(artifact)}).bind(llm)
    docs = compressor.compress_documents([Document(page_content=t) for t in TEXTS[:2]], "Where is Basel?")
    assert len(docs) == 2 and all(PLACEHOLDER_RE.fullmatch(d.page_content) for d in docs)
    context = "\n\n".join(d.page_content for d in docs)
    _spliced(generator, projector, "Where is Basel?", TEXTS[:2], context)
    assert isinstance(llm.invoke(generator.format_prompt("Where is Basel?", context)), str)


def test_llamaindex_postprocessor_and_llm_read_the_soft_tokens(generator, artifact, projector):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragzip.integrations.llamaindex import RagzipLLM, RagzipPostprocessor

    llm = RagzipLLM(generator)
    post = RagzipPostprocessor(config={"type": "xrag", "artifact": str(artifact)}).bind(llm)
    nodes = post.postprocess_nodes([NodeWithScore(node=TextNode(text=t), score=0.5) for t in TEXTS[:2]],
                                   query_str="Where is Basel?")
    texts = [n.node.get_content() for n in nodes]
    assert len(texts) == 2 and all(PLACEHOLDER_RE.fullmatch(t) for t in texts)
    context = "\n\n".join(texts)
    _spliced(generator, projector, "Where is Basel?", TEXTS[:2], context)
    assert isinstance(llm.complete(generator.format_prompt("Where is Basel?", context)).text, str)
