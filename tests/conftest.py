"""Shared fixtures. Tests run offline; anything that loads the embedded real models is marked slow unless quick."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def tiny_llama_generator():
    """ragzip's generator over a 2-layer, 32-wide Llama built from a config (random weights) with the SmolLM2
    tokenizer: real tokenization, prompts and decoding mechanics in milliseconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.models import load_tokenizer

    tok = load_tokenizer("embedded:smollm2-135m")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                                         pad_token_id=2)).eval()
    return HFGenerator(GeneratorConfig(max_new_tokens=3), model=model, tokenizer=tok)


@pytest.fixture()
def words():
    from ragzip.tokens import WhitespaceTokenCounter

    return WhitespaceTokenCounter()
