"""Published checkpoints through the extractive interface: EXIT (causal-LM Yes/No) and RECOMP (dual encoder).

The real checkpoints need the Hugging Face hub; here both code paths run on tiny models built from a config.
"""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import build_tiny_llama, write_tiny_bert  # noqa: E402

from ragzip import MissingDependencyError, build_compressor  # noqa: E402
from ragzip.plugins.extractive.modeling import EXIT_PROMPT, ExitScorer, RecompScorer, ScoreItem  # noqa: E402

WORDS = ("query full context sentence is this useful in answering the answer only yes no model user Yes No "
         "who wrote hamlet shakespeare it rained a play by paris river seine flows through city far away "
         "filler word").split() + [f"n{i}" for i in range(40)]


def write_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer that knows the EXIT prompt's words, BOS first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS) | set(string.punctuation) | set(string.digits)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    build_tiny_llama(len(vocab), pad_token_id=0, bos_token_id=2, eos_token_id=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


# ============================================================================================================= EXIT
@pytest.fixture(scope="module")
def exit_scorer(tiny_llama: Path) -> ExitScorer:
    return ExitScorer.from_pretrained(str(tiny_llama), device="cpu", window=1024, batch_size=4)


def _p_yes(scorer: ExitScorer, ids: list[int]) -> float:
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[0, -1]
    pair = torch.stack([logits[scorer.yes_id], logits[scorer.no_id]])
    return float(torch.softmax(pair, dim=0)[0])


def test_exit_prompt_is_the_published_one(exit_scorer: ExitScorer) -> None:
    ids = exit_scorer.prompt_ids("who wrote hamlet ?", "Hamlet", ["a play by shakespeare .", "it rained ."], 0)
    text = EXIT_PROMPT.format(query="who wrote hamlet ?", context="Hamlet\na play by shakespeare . it rained .",
                              sentence="a play by shakespeare .")
    assert ids == exit_scorer.tokenizer(text)["input_ids"]
    assert ids[0] == exit_scorer.tokenizer.bos_token_id


def test_exit_scores_are_the_yes_no_softmax_and_padding_free(exit_scorer: ExitScorer) -> None:
    items = [ScoreItem("who wrote hamlet ?", "", ["a play by shakespeare .", "it rained .", "filler " * 30]),
             ScoreItem("river paris ?", "Paris", ["the seine flows through the city ."])]
    scores = exit_scorer.score(items)
    assert [len(s) for s in scores] == [3, 1]
    for item, row in zip(items, scores, strict=True):
        for k, p in enumerate(row):
            expected = _p_yes(exit_scorer, exit_scorer.prompt_ids(item.query, item.title, item.sentences, k))
            assert p == pytest.approx(expected, abs=1e-5)  # batched, right-padded == alone
            assert 0.0 < p < 1.0
    assert exit_scorer.default_threshold == 0.5


def test_exit_cuts_the_document_around_the_sentence_never_the_query_or_suffix(tiny_llama: Path) -> None:
    scorer = ExitScorer.from_pretrained(str(tiny_llama), device="cpu", window=90)
    sentences = [f"filler word n{i} ." for i in range(40)]
    sentences[20] = "the seine flows through paris ."
    query = "who wrote hamlet ?"
    ids = scorer.prompt_ids(query, "", sentences, 20)
    tok = scorer.tokenizer
    assert len(ids) <= 90
    full = tok(EXIT_PROMPT.format(query=query, context=" ".join(sentences), sentence=sentences[20]))["input_ids"]
    assert len(full) > 90
    prefix = tok(EXIT_PROMPT.split("{context}")[0].format(query=query))["input_ids"]
    suffix = tok(EXIT_PROMPT.split("{context}")[1].format(sentence=sentences[20]), add_special_tokens=False)
    assert ids[: len(prefix)] == prefix  # BOS, turn marker and the whole query
    assert ids[-len(suffix["input_ids"]):] == suffix["input_ids"]  # the sentence and the answer suffix
    decoded = tok.decode(ids)
    assert decoded.count("seine") == 2  # in the kept context and as the sentence
    assert "n19 " in decoded and "n21 " in decoded  # neighbours on both sides
    assert "n0 " not in decoded and "n39 " not in decoded  # far ends cut


def test_exit_query_longer_than_the_window_cuts_the_sentence_last(tiny_llama: Path) -> None:
    scorer = ExitScorer.from_pretrained(str(tiny_llama), device="cpu", window=64)
    ids = scorer.prompt_ids("who wrote hamlet ?", "", ["filler " * 200], 0)
    assert len(ids) <= 64
    assert scorer.score([ScoreItem("who wrote hamlet ?", "", ["filler " * 200])])[0][0] > 0


def test_exit_backbone_through_the_compressor(tiny_llama: Path) -> None:
    c = build_compressor({"type": "extractive", "backbone": "exit", "model": str(tiny_llama), "device": "cpu",
                          "tokenizer": "whitespace"})
    out = c.compress("who wrote hamlet ?", ["A play by shakespeare. It rained."])
    assert out.extra["threshold"] == 0.5
    assert all(u.score is not None and 0 < u.score < 1 for u in out.results[0].units)


def test_exit_lora_adapter_without_peft_says_how_to_install(tmp_path: Path) -> None:
    try:
        import peft  # noqa: F401

        pytest.skip("peft is installed; the missing-dependency message cannot be triggered")
    except ImportError:
        pass
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "google/gemma-2b-it"}))
    message = f"{str(tmp_path)!r} is a LoRA adapter; loading it needs `peft`: `pip install peft`."
    with pytest.raises(MissingDependencyError, match=re.escape(message)):
        ExitScorer.from_pretrained(str(tmp_path), device="cpu")


def test_exit_lora_adapter_loads_through_peft(tiny_llama: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path)
    scorer = ExitScorer.from_pretrained(str(tmp_path), base_model=str(tiny_llama), device="cpu")
    assert 0 < scorer.score([ScoreItem("who ?", "", ["it rained ."])])[0][0] < 1


# =========================================================================================================== RECOMP
def test_recomp_scores_are_mean_pooled_dot_products(tiny_bert: Path) -> None:
    scorer = RecompScorer.from_pretrained(str(tiny_bert), device="cpu", batch_size=2)
    items = [ScoreItem("who wrote it?", "ignored title", ["shakespeare wrote it.", "rain.", "a longer one here."])]
    scores = scorer.score(items)[0]
    tok, model = scorer.tokenizer, scorer.model

    def embed(text: str) -> torch.Tensor:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            return model(**enc).last_hidden_state[0].mean(0)

    q = embed("who wrote it?")
    assert scores == pytest.approx([float(embed(s) @ q) for s in items[0].sentences], abs=1e-4)
    assert scorer.default_threshold is None


def test_recomp_backbone_keeps_the_top_k(tiny_bert: Path) -> None:
    c = build_compressor({"type": "extractive", "backbone": "recomp", "model": str(tiny_bert), "top_k": 1,
                          "device": "cpu", "tokenizer": "whitespace"})
    out = c.compress("who wrote it?", ["First one. Second one. Third one."])
    units = out.results[0].units
    assert sum(u.kept for u in units) == 1
    best = max(units, key=lambda u: u.score if u.score is not None else -math.inf)
    assert best.kept and out.text == best.text
