"""Artifact integrity (``ragzip.artifacts``) wired into every plugin's save/load pair.

Each plugin's artifact is saved over tiny models built from configs, then damaged the ways a real one gets damaged: a
width edited in ``config.json``, the weights file edited, a different base model of the same width under the same
name, xRAG's ``normalize``/``pooling`` flipped. Each must be an error that names what is wrong (never a raw torch
error, never a silent load), and an artifact without an integrity record still loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import build_bpe_tokenizer, build_tiny_llama, tiny_refrag_encoder, write_tiny_bert

from ragzip.artifacts import INTEGRITY, ArtifactError, verify_weights
from ragzip.errors import ConfigError

GEN = "embedded:smollm2-135m"


def edit_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (folder / "config.json").write_text(json.dumps(data, indent=2))


def flip_last_byte(folder: Path) -> None:
    """Edit the weights file in place: the last byte of the tensor data (the file stays valid safetensors)."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def edited_weights_message(folder: Path) -> str:
    return f"{folder / 'model.safetensors'} is not the file this artifact was saved with"


# ========================================================================================================= extractive
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,?!'"  # the tiny BERT's characters (max 128 positions)


@pytest.fixture()
def extractive_artifact(tmp_path: Path) -> tuple[Path, Path]:
    """``(artifact folder, base encoder folder)``: a crossencoder artifact over a tiny BERT."""
    from ragzip.plugins.extractive.modeling import CrossEncoderScorer

    base = write_tiny_bert(tmp_path / "base", chars=CHARS, max_positions=128, seed=0)
    scorer = CrossEncoderScorer.from_base(str(base), trained_layers=1, head_hidden=16, window=64, seed=1)
    return scorer.save_pretrained(tmp_path / "artifact"), base


def load_extractive(folder: Path):
    from ragzip.plugins.extractive.modeling import CrossEncoderScorer

    return CrossEncoderScorer.from_pretrained(folder, device="cpu")


def test_extractive_records_the_weights_and_the_encoder(extractive_artifact):
    folder, base = extractive_artifact
    record = json.loads((folder / "config.json").read_text())[INTEGRITY]
    assert record["weights_bytes"] == (folder / "model.safetensors").stat().st_size
    encoder = record["bases"]["encoder"]
    assert encoder["name"] == str(base) and encoder["dims"] == {"hidden": 32, "layers": 2, "trained_layers": 1}
    assert len(encoder["embeddings"]) == len(encoder["tokenizer"]) == 16
    load_extractive(folder)


def test_extractive_width_edited_in_config_names_the_tensor(extractive_artifact):
    folder, _ = extractive_artifact
    edit_config(folder, head_hidden=24)
    with pytest.raises(ArtifactError, match=re.escape(
            f"extractive artifact {str(folder)!r} (trained_layers=1, head_hidden=24, head_type='interaction'): the "
            "weights do not match config.json: head.out.weight is [1, 16] in the weights but [1, 24] in the model "
            "config.json describes")):
        load_extractive(folder)


def test_extractive_edited_weights_are_refused(extractive_artifact):
    folder, _ = extractive_artifact
    flip_last_byte(folder)
    with pytest.raises(ArtifactError, match=re.escape(edited_weights_message(folder))):
        load_extractive(folder)


def test_extractive_another_encoder_of_the_same_width_is_refused(extractive_artifact):
    folder, base = extractive_artifact
    write_tiny_bert(base, chars=CHARS, max_positions=128, seed=7)  # the same name and width, other weights
    with pytest.raises(ArtifactError, match=re.escape(
            f"extractive artifact {str(folder)!r}: the encoder {str(base)!r} does not match the one this artifact "
            f"was trained with ({str(base)!r}): its input embeddings differ")):
        load_extractive(folder)


def test_extractive_artifact_without_a_record_still_loads(extractive_artifact):
    folder, _ = extractive_artifact
    from ragzip.plugins.extractive.modeling import ScoreItem

    item = [ScoreItem("who?", "t", ["paris is big.", "it rained."])]
    before = load_extractive(folder).score(item)
    edit_config(folder, **{INTEGRITY: None})
    assert load_extractive(folder).score(item) == before


# =============================================================================================================== xrag
D_EMB, D_GEN = 16, 32


def xrag_config(**overrides):
    from ragzip.plugins.xrag import ProjectorConfig

    return ProjectorConfig(**{"embedder": "hash:16", "embedder_dim": D_EMB, "generator": GEN,
                              "generator_hidden": D_GEN, **overrides})


def xrag_generator(smol_tok, seed: int):
    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.softstore import SoftTokenStore

    return HFGenerator(GeneratorConfig(model=GEN, max_new_tokens=2), store=SoftTokenStore(),
                       model=build_tiny_llama(len(smol_tok), seed=seed, hidden=D_GEN, tie=True), tokenizer=smol_tok)


def xrag_artifact(folder: Path, config=None, **bases) -> Path:
    from ragzip.plugins.xrag import XRAGProjector

    torch.manual_seed(1)
    projector = XRAGProjector(config or xrag_config())
    if bases:
        projector.record_bases(**bases)
    return projector.save_pretrained(folder)


def load_xrag(folder: Path):
    from ragzip.plugins.xrag import XRAGProjector

    return XRAGProjector.from_pretrained(str(folder))


def test_xrag_width_edited_in_config_names_the_tensor(tmp_path):
    folder = xrag_artifact(tmp_path / "p")
    edit_config(folder, embedder_dim=24)
    with pytest.raises(ArtifactError, match=re.escape(
            f"xrag artifact {str(folder)!r} (embedder_dim=24, intermediate_size=32, generator_hidden=32): the weights "
            "do not match config.json: fc1.weight is [32, 16] in the weights but [32, 24] in the model config.json "
            "describes")):
        load_xrag(folder)


def test_xrag_edited_weights_are_refused(tmp_path):
    folder = xrag_artifact(tmp_path / "p")
    flip_last_byte(folder)
    with pytest.raises(ArtifactError, match=re.escape(edited_weights_message(folder))):
        load_xrag(folder)


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("normalize", False, "normalize is False, the artifact was trained with True"),
    ("pooling", "last-token", "pooling is 'last-token', the artifact was trained with 'sentence-transformers'"),
])
def test_xrag_flipped_setting_in_config_is_refused(tmp_path, key, value, problem):
    folder = xrag_artifact(tmp_path / "p")
    edit_config(folder, **{key: value})
    with pytest.raises(ArtifactError, match=re.escape(
            f"xrag artifact {str(folder)!r}: the embedder 'hash:16' does not match the one this artifact was trained "
            f"with ('hash:16'): {problem}. config.json was edited after training: set back embedder_dim: 16, "
            "embedder_max_length: 256, normalize: true, pooling: \"sentence-transformers\"")):
        load_xrag(folder)


def test_xrag_flipped_normalize_without_a_record_is_refused_where_the_encoder_is_used(tmp_path):
    from ragzip.plugins.xrag import XRAGCompressor, XRAGConfig

    folder = xrag_artifact(tmp_path / "p")
    edit_config(folder, normalize=False, **{INTEGRITY: None})  # no integrity record: nothing to compare
    load_xrag(folder)
    xrag = XRAGCompressor(XRAGConfig(artifact=str(folder), tokenizer="whitespace"))
    with pytest.raises(ConfigError, match=re.escape(
            f"compressor[xrag] (artifact {str(folder)!r}): embedder 'hash:16' makes L2-normalised vectors, but the "
            "projector's config.json says normalize: false. With pooling 'sentence-transformers' ragzip's encoder is "
            "L2-normalised: restore `normalize: true` in config.json if it was edited")):
        xrag.compress("q?", ["Paris is the capital of France."])


def test_xrag_encoder_with_another_pooling_is_refused(tmp_path):
    from ragzip.plugins.xrag import XRAGCompressor, XRAGConfig
    from ragzip.plugins.xrag.modeling import SentenceTransformerEncoder

    folder = xrag_artifact(tmp_path / "p", xrag_config(pooling="last-token", normalize=False))
    xrag = XRAGCompressor(XRAGConfig(artifact=str(folder), tokenizer="whitespace"),
                          encoder=SentenceTransformerEncoder("hash:16"))
    with pytest.raises(ConfigError, match=re.escape(
            "embedder 'hash:16' makes 'sentence-transformers' vectors, but the projector was trained on pooling "
            "'last-token' (its config.json)")):
        xrag.compress("q?", ["Paris is the capital of France."])


def test_xrag_another_embedder_of_the_same_width_is_refused(tmp_path, smol_tok):
    from ragzip.plugins.xrag import XRAGCompressor, XRAGConfig
    from ragzip.plugins.xrag.modeling import LastTokenEncoder

    def encoder(seed: int) -> LastTokenEncoder:
        return LastTokenEncoder("tiny-sfr", max_length=180, tokenizer=smol_tok,
                                model=build_tiny_llama(len(smol_tok), seed=seed, hidden=D_EMB, causal=False, tie=True))

    config = xrag_config(embedder="tiny-sfr", pooling="last-token", normalize=False, embedder_max_length=180)
    folder = xrag_artifact(tmp_path / "p", config, encoder=encoder(0))
    same = XRAGCompressor(XRAGConfig(artifact=str(folder), tokenizer="whitespace"), encoder=encoder(0))
    assert same.compress("q?", ["Paris is the capital of France."]).results
    other = XRAGCompressor(XRAGConfig(artifact=str(folder), tokenizer="whitespace"), encoder=encoder(5))
    with pytest.raises(ArtifactError, match=re.escape(
            f"compressor[xrag] (artifact {str(folder)!r}): the embedder 'tiny-sfr' does not match the one this "
            "artifact was trained with ('tiny-sfr'): its input embeddings differ")):
        other.compress("q?", ["Paris is the capital of France."])


def test_xrag_another_generator_of_the_same_width_is_refused(tmp_path, smol_tok):
    from ragzip import build_compressor

    folder = xrag_artifact(tmp_path / "p", generator=xrag_generator(smol_tok, seed=0))
    build_compressor({"type": "xrag", "artifact": str(folder)}).bind(xrag_generator(smol_tok, seed=0))
    with pytest.raises(ArtifactError, match=re.escape(
            f"compressor[xrag] (artifact {str(folder)!r}): the generator {GEN!r} does not match the one this "
            f"artifact was trained with ({GEN!r}): its input embeddings differ")):
        build_compressor({"type": "xrag", "artifact": str(folder)}).bind(xrag_generator(smol_tok, seed=4))


def test_xrag_artifact_without_a_record_still_loads(tmp_path):
    folder = xrag_artifact(tmp_path / "p")
    x = torch.randn(2, D_EMB)
    before = load_xrag(folder)(x)
    edit_config(folder, **{INTEGRITY: None})
    assert torch.equal(load_xrag(folder)(x), before)


# ============================================================================================================= refrag
def refrag_artifact(folder: Path, minilm_tok, decoder=None, smol_tok=None) -> Path:
    from ragzip.plugins.refrag import RefragModel, RefragModelConfig

    config = RefragModelConfig(encoder="tiny-bert", encoder_hidden=32, decoder="tiny-llama", decoder_hidden=32, k=4,
                               projector_hidden=16, policy_hidden=8, encoder_max_length=32)
    torch.manual_seed(0)
    model = RefragModel(config, encoder=tiny_refrag_encoder(minilm_tok, 0), encoder_tokenizer=minilm_tok)
    if decoder is not None:
        model.record_decoder(decoder, smol_tok)
    model.save_pretrained(folder)
    return folder


def load_refrag(folder: Path, minilm_tok, seed: int = 0):
    from ragzip.plugins.refrag import RefragModel

    return RefragModel.from_pretrained(folder, encoder=tiny_refrag_encoder(minilm_tok, seed),
                                       encoder_tokenizer=minilm_tok)


def test_refrag_width_edited_in_config_names_the_tensor(tmp_path, minilm_tok):
    folder = refrag_artifact(tmp_path / "r", minilm_tok)
    edit_config(folder, projector_hidden=24)
    with pytest.raises(ArtifactError, match=re.escape(
            f"REFRAG artifact {str(folder)!r} (encoder_trained_layers=1, projector_hidden=24, policy_hidden=8, "
            "decoder_hidden=32): the weights do not match config.json: projector.fc1.bias is [16] in the weights but "
            "[24] in the model config.json describes")):
        load_refrag(folder, minilm_tok)


def test_refrag_edited_weights_are_refused(tmp_path, minilm_tok):
    folder = refrag_artifact(tmp_path / "r", minilm_tok)
    flip_last_byte(folder)
    with pytest.raises(ArtifactError, match=re.escape(edited_weights_message(folder))):
        load_refrag(folder, minilm_tok)


def test_refrag_another_encoder_of_the_same_width_is_refused(tmp_path, minilm_tok):
    folder = refrag_artifact(tmp_path / "r", minilm_tok)
    load_refrag(folder, minilm_tok, seed=0)
    with pytest.raises(ArtifactError, match=re.escape(
            f"REFRAG artifact {str(folder)!r}: the encoder 'tiny-bert' does not match the one this artifact was "
            "trained with ('tiny-bert'): its input embeddings differ")):
        load_refrag(folder, minilm_tok, seed=3)


def test_refrag_another_decoder_of_the_same_width_is_refused(tmp_path, minilm_tok, smol_tok):
    folder = refrag_artifact(tmp_path / "r", minilm_tok, build_tiny_llama(len(smol_tok), seed=0, tie=True), smol_tok)
    model = load_refrag(folder, minilm_tok)
    model.check_decoder(build_tiny_llama(len(smol_tok), seed=0, tie=True), smol_tok)
    with pytest.raises(ArtifactError, match=re.escape(
            "refrag: the decoder 'tiny-llama' does not match the one this artifact was trained with ('tiny-llama'): "
            "its input embeddings differ")):
        model.check_decoder(build_tiny_llama(len(smol_tok), seed=2, tie=True), smol_tok)


def test_refrag_artifact_without_a_record_still_loads(tmp_path, minilm_tok):
    folder = refrag_artifact(tmp_path / "r", minilm_tok)
    before = load_refrag(folder, minilm_tok).trained_state_dict()
    edit_config(folder, **{INTEGRITY: None})
    after = load_refrag(folder, minilm_tok).trained_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ======================================================================================================== abstractive
CORPUS = ["Question: Document: Summary: the of and a in is was by for to",
          "Paris is the capital of France. The Eiffel Tower was completed in 1889."]


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer(CORPUS * 4)


def write_summarizer(folder: Path, tokenizer, *, seed: int) -> str:
    build_tiny_llama(len(tokenizer), seed=seed, tie=True).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture()
def adapter(tmp_path, bpe_tokenizer) -> tuple[Path, str]:
    """``(adapter folder, base model folder)``: a LoRA adapter with non-zero weights over a tiny Llama."""
    from ragzip.plugins.abstractive.modeling import LoRAConfig, Summarizer

    base = write_summarizer(tmp_path / "base", bpe_tokenizer, seed=0)
    s = Summarizer.load(base, private=True)
    s.add_adapter(LoRAConfig(rank=2, target_modules=("q_proj",)))
    for p in s.trainable_parameters():
        torch.nn.init.normal_(p, std=0.5)
    return s.save_adapter(tmp_path / "adapter"), base


def load_adapter(folder: Path, base: str):
    from ragzip.plugins.abstractive.modeling import Summarizer

    return Summarizer.load(base, adapter=folder)


def test_abstractive_rank_edited_in_config_names_the_tensor(adapter):
    folder, base = adapter
    card = json.loads((folder / "config.json").read_text())
    edit_config(folder, lora={**card["lora"], "rank": 3})
    with pytest.raises(ConfigError, match=re.escape(
            f"adapter {str(folder)!r}: model.layers.0.self_attn.q_proj.lora_A has shape (2, 32), the model expects "
            "(3, 32)")):
        load_adapter(folder, base)


def test_abstractive_edited_weights_are_refused(adapter):
    folder, base = adapter
    flip_last_byte(folder)
    with pytest.raises(ArtifactError, match=re.escape(edited_weights_message(folder))):
        load_adapter(folder, base)


def test_abstractive_another_base_of_the_same_width_is_refused(adapter, bpe_tokenizer, tmp_path):
    folder, base = adapter
    other = write_summarizer(tmp_path / "other", bpe_tokenizer, seed=6)
    load_adapter(folder, base)
    with pytest.raises(ArtifactError, match=re.escape(
            f"adapter {str(folder)!r}: the summarizer {other!r} does not match the one this artifact was trained with "
            f"({base!r}): its input embeddings differ")):
        load_adapter(folder, other)


def test_abstractive_adapter_without_a_record_still_loads(adapter):
    folder, base = adapter
    ids = torch.tensor([[5, 6, 7]])
    before = load_adapter(folder, base).model(input_ids=ids).logits
    edit_config(folder, **{INTEGRITY: None})
    assert torch.allclose(load_adapter(folder, base).model(input_ids=ids).logits, before)


# ============================================================================================================ shipped
@pytest.mark.parametrize("plugin", ["extractive", "abstractive", "xrag", "refrag"])
def test_shipped_artifacts_carry_an_integrity_record(plugin):
    folder = Path(__file__).resolve().parents[2] / "plugins" / plugin / "artifacts" / "default"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("no shipped artifact in this checkout")
    config = json.loads((folder / "config.json").read_text())
    assert config[INTEGRITY]["weights_sha256"] and config[INTEGRITY]["bases"]
    for identity in config[INTEGRITY]["bases"].values():
        assert identity["embeddings"] and identity["tokenizer"] and identity["dims"]
    verify_weights(folder, config, where=plugin, fix="")

