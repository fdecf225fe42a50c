"""ragzip.training.lm: the frozen LM's NLL of target segments, read through the generator's splice, on the tiny Llama
(conftest): text reads as the model's own cross-entropy, soft vectors equal to token embeddings read as those tokens,
a right-padded batch scores each sequence as alone, and the shared-prefix cache changes no number."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from conftest import build_tiny_llama  # noqa: E402

from ragzip.generation import GeneratorConfig, HFGenerator  # noqa: E402
from ragzip.training.lm import IGNORE, PrefixCache, Target, Tokens, padded_nll, sequence_nll  # noqa: E402

PROMPT = "Context: Basel lies on the Rhine.\nQuestion: where is Basel?\n"
ANSWER = " Switzerland, on the Rhine"


@pytest.fixture()
def generator(tiny_lm, smol_tok):
    """The tiny frozen Llama behind ragzip's generator (SmolLM2 tokenizer)."""
    return HFGenerator(GeneratorConfig(max_new_tokens=3), model=tiny_lm, tokenizer=smol_tok)


def _ids(tok, text: str, special: bool = False) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


def _reference(model, ids: list[int], n_target: int) -> torch.Tensor:
    """The model's own token cross-entropy of the last ``n_target`` ids."""
    logits = model(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
    return F.cross_entropy(logits[len(ids) - n_target - 1:-1], torch.tensor(ids[len(ids) - n_target:]))


@pytest.mark.parametrize("special", [False, True])
def test_text_nll_is_the_models_own_cross_entropy(generator, special: bool) -> None:
    tok = generator.tokenizer
    ids = _ids(tok, PROMPT, special) + _ids(tok, ANSWER)
    expected = _reference(generator.model, ids, len(_ids(tok, ANSWER)))
    out = sequence_nll(generator, [[PROMPT, Target(ANSWER)]], add_special_tokens=special)
    assert torch.allclose(out.mean, expected, atol=1e-6)
    assert torch.allclose(out.per_sequence, expected[None], atol=1e-6)
    assert out.targets.tolist() == _ids(tok, ANSWER) and out.rows.tolist() == [0] * len(_ids(tok, ANSWER))
    # Target ids score as the same text does.
    assert torch.equal(sequence_nll(generator, [[PROMPT, Target(_ids(tok, ANSWER))]],
                                    add_special_tokens=special).mean, out.mean)


def test_soft_vectors_equal_to_token_embeddings_read_as_those_tokens(generator) -> None:
    tok = generator.tokenizer
    table = generator.input_embeddings().weight
    middle = _ids(tok, " Basel lies on the Rhine.")
    soft = table[middle].detach().clone().requires_grad_(True)  # (n, d): what a projector would write
    ids = _ids(tok, "Context:") + middle + _ids(tok, "\nQuestion: where is Basel?\n") + _ids(tok, ANSWER)
    expected = _reference(generator.model, ids, len(_ids(tok, ANSWER)))
    for middle_piece in (soft, Tokens(middle)):
        out = sequence_nll(generator, [["Context:", middle_piece, "\nQuestion: where is Basel?\n", Target(ANSWER)]])
        assert torch.allclose(out.mean, expected, atol=1e-6)
        if isinstance(middle_piece, torch.Tensor):
            out.mean.backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0  # gradients reach the soft vectors


def test_a_padded_batch_scores_each_sequence_as_alone(generator) -> None:
    d = generator.hidden_size
    torch.manual_seed(0)
    seqs = [[PROMPT, Target(ANSWER)],
            ["Context:", torch.randn(2, d), "\nQuestion: who?\n", Target(" Tesla")],
            [torch.randn(1, d), Target(" a long passage to reconstruct from one vector")]]
    batch = sequence_nll(generator, seqs)
    alone = [sequence_nll(generator, [s]) for s in seqs]
    assert torch.allclose(batch.per_sequence, torch.stack([a.mean for a in alone]), atol=1e-5)
    counts = torch.tensor([len(a.targets) for a in alone], dtype=torch.float32)
    assert torch.allclose(batch.mean, (batch.per_sequence * counts).sum() / counts.sum(), atol=1e-5)
    assert batch.logits.shape == (int(counts.sum()), generator.model.config.vocab_size)


def test_the_shared_prefix_cache_changes_no_number(generator, smol_tok) -> None:
    d = generator.hidden_size
    torch.manual_seed(0)
    soft = torch.randn(3, d, requires_grad=True)
    head = "System: answer briefly.\nUser: "
    seqs = [[head, soft[:1], "\nwhere?\n", Target(" Basel")], [head, soft[1:], "\nwho?\n", Target(" Nikola Tesla")]]
    cache = PrefixCache()
    cached = sequence_nll(generator, seqs, prefixes=cache)
    assert len(cache) == 1  # the common head ran once
    plain = sequence_nll(generator, seqs)
    assert torch.allclose(cached.logits, plain.logits, atol=1e-5)
    assert torch.allclose(cached.per_sequence, plain.per_sequence, atol=1e-6)
    cached.mean.backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    # A model that trains keeps its gradients: no cached prefix.
    trainable = build_tiny_llama(len(smol_tok), tie=True)
    other = PrefixCache()
    sequence_nll(generator, seqs, model=trainable, prefixes=other)
    assert len(other) == 0


def test_padded_nll_takes_a_right_padded_batch(generator) -> None:
    tok = generator.tokenizer
    table = generator.input_embeddings().weight
    rows = [_ids(tok, PROMPT) + _ids(tok, ANSWER), _ids(tok, "Question: who?\n") + _ids(tok, " Tesla")]
    n_target = [len(_ids(tok, ANSWER)), len(_ids(tok, " Tesla"))]
    width = max(map(len, rows))
    embeds = torch.stack([F.pad(table[r], (0, 0, 0, width - len(r))) for r in rows])  # (B, T, d)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = torch.tensor([[IGNORE] * (len(r) - n) + r[len(r) - n:] + [IGNORE] * (width - len(r))
                           for r, n in zip(rows, n_target, strict=True)])
    out = padded_nll(generator.model, embeds, mask, labels)
    expected = torch.stack([_reference(generator.model, r, n) for r, n in zip(rows, n_target, strict=True)])
    assert torch.allclose(out.per_sequence, expected, atol=1e-5)


def test_bad_sequences_say_how_to_fix_them(generator) -> None:
    d = generator.hidden_size
    with pytest.raises(ValueError, match=re.escape("soft vectors go before the first Target of a sequence")):
        sequence_nll(generator, [["Q:", Target(" a"), torch.zeros(1, d), Target(" b")]])
    with pytest.raises(ValueError, match=re.escape("add_special_tokens has 1 flags for 2 sequences")):
        sequence_nll(generator, [["Q:", Target(" a")], ["Q:", Target(" b")]], add_special_tokens=[True])
