"""Shared fixtures. Tests run offline; anything that loads the embedded real models is marked slow unless quick."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a clean skip where the checkout has no shared folder beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside this checkout")
    return SHARED_DATA


# ------------------------------------------------------------------------------------------------ tiny models
# Builders of the tiny models the tests use, in one place. Each test module names what differs (sizes, seeds,
# vocabularies, special tokens) as arguments; test modules import the builders with ``from conftest import ...``.
SMOL = "embedded:smollm2-135m"
ASCII_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def build_tiny_llama(vocab_size: int, *, seed: int = 0, hidden: int = 32, heads: int = 4, max_positions: int = 1024,
                     tie: bool = False, causal: bool = True, **config):
    """A 2-layer Llama (intermediate 64, 2 KV heads) with random weights drawn after ``torch.manual_seed(seed)``, in
    eval mode; ``config`` adds LlamaConfig fields (special token ids)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=tie, **config)
    return (LlamaForCausalLM if causal else LlamaModel)(config).eval()


def build_bpe_tokenizer(texts: list[str], *, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in memory on ``texts``, with ``<pad>``, ``<s>``, ``</s>`` (ids 0, 1, 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")



def write_tiny_hotpot(path: Path, n: int = 4) -> Path:
    """A HotpotQA-format training file of ``n`` questions, three paragraphs each, two supporting facts."""
    records = []
    for i in range(n):
        context = [[f"Topic {i}", [f"Topic {i} is a thing.", f" It was made in {1900 + i}.", " Nothing else."]],
                   [f"Other {i}", [f"Other {i} is unrelated.", " It rains there."]],
                   [f"Third {i}", [f"Third {i} mentions topic {i}."]]]
        records.append({"id": f"q{i}", "question": f"When was topic {i} made?", "answer": str(1900 + i),
                        "context": context, "supporting_facts": [[f"Topic {i}", 1], [f"Third {i}", 0]]})
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path

def write_tiny_bert(folder: Path, *, chars: str = ASCII_CHARS, max_positions: int = 512, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a character-level WordPiece vocabulary over ``chars`` (lower-cased), saved with
    its tokenizer in ``folder``; ``seed`` picks its weights."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=max_positions)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


def tiny_refrag_encoder(minilm_tok, seed: int = 0):
    """A 2-layer, 32-wide BERT reading with the MiniLM tokenizer; ``seed`` picks its weights."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=minilm_tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))


def build_tiny_refrag(minilm_tok, *, k: int = 4, seed: int = 0):
    """A REFRAG model (eval mode) over :func:`tiny_refrag_encoder` for a 32-wide decoder."""
    from ragzip.plugins.refrag import RefragModel, RefragModelConfig

    bert = tiny_refrag_encoder(minilm_tok, seed)
    config = RefragModelConfig(encoder="tiny-bert", encoder_hidden=32, decoder="tiny-llama", decoder_hidden=32, k=k,
                               projector_hidden=16, policy_hidden=8, encoder_max_length=32)
    return RefragModel(config, encoder=bert, encoder_tokenizer=minilm_tok).eval()


@pytest.fixture(scope="session")
def smol_tok():
    """The SmolLM2 tokenizer (embedded), or a clean skip where the embedded model package is missing."""
    from ragzip import ModelNotFoundError
    from ragzip.models import load_tokenizer

    try:
        return load_tokenizer(SMOL)
    except ModelNotFoundError as err:  # pragma: no cover - the embedded model package is part of the dev setup
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def minilm_tok():
    """The MiniLM tokenizer (embedded)."""
    from transformers import AutoTokenizer

    from ragzip.models import resolve

    return AutoTokenizer.from_pretrained(resolve("embedded:minilm"))


@pytest.fixture(scope="session")
def tiny_lm(smol_tok):
    """A 2-layer, 32-wide Llama (tied embeddings, seed 0, frozen) over the SmolLM2 tokenizer."""
    return build_tiny_llama(len(smol_tok), tie=True).requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_llama_generator(smol_tok):
    """ragzip's generator over a 2-layer, 32-wide Llama built from a config (random weights) with the SmolLM2
    tokenizer: real tokenization, prompts and decoding mechanics in milliseconds."""
    from ragzip.generation import GeneratorConfig, HFGenerator

    model = build_tiny_llama(len(smol_tok), max_positions=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return HFGenerator(GeneratorConfig(max_new_tokens=3), model=model, tokenizer=smol_tok)


@pytest.fixture()
def words():
    from ragzip.tokens import WhitespaceTokenCounter

    return WhitespaceTokenCounter()
