r"""The token NLL of target segments under a frozen causal LM that reads text, token ids and soft vectors.

Trainers of soft-token compressors score what the generator would write after reading a prompt in which some
positions are soft vectors (xRAG's projector, REFRAG's encoder and projector). :func:`sequence_nll` builds each
sequence through the generator's own splice, :meth:`ragzip.generation.HFGenerator.embed_pieces`, so training reads
exactly what inference reads (xRAG), and :func:`padded_nll` scores a batch already assembled (REFRAG's fused
kernel, tested equal to the splice); both run the LM head only at the scored positions (on a small model the head is
a large share of the compute at every position).

A sequence is a list of pieces, in order:

- ``str``: text read, tokenized as ``embed_pieces`` tokenizes it (each piece on its own, or the whole text at once
  when the prompt holds text only, as the generator reads a prompt without soft tokens);
- a tensor ``(n, d)``: ``n`` soft vectors read (gradients flow into them);
- :class:`Tokens`: token ids read as they are;
- :class:`Target`: text or token ids scored, and read after that (teacher forcing).

The pieces before the first target are the prompt, embedded by ``embed_pieces``; the tokenizer's special tokens go
around the prompt when ``add_special_tokens`` says so, as the generator puts them around a prompt it reads. Soft
vectors belong to the prompt.

:func:`padded_nll` is the same loss over a batch already right-padded (``inputs_embeds``, ``attention_mask`` and
labels with ``-100`` where nothing is scored). A :class:`PrefixCache` runs the plain tokens every sequence of a batch
starts with (system prompt, chat markers) once and reuses their keys and values; the cached prefix carries no
gradient, so it is used only when the model has no trainable parameter, and it changes no number beyond float
rounding.

Example:
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from ragzip.generation import GeneratorConfig, HFGenerator
    >>> from ragzip.models import load_tokenizer
    >>> tok = load_tokenizer("embedded:smollm2-135m")
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
    ...                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    >>> generator = HFGenerator(GeneratorConfig(), model=model.eval(), tokenizer=tok)
    >>> soft = torch.randn(2, 32, requires_grad=True)
    >>> out = sequence_nll(generator, [["Context: ", soft, "\nQuestion: where?\n", Target("Basel")],
    ...                                ["Question: where?\n", Target(" in Basel")]])
    >>> out.per_sequence.shape, out.logits.shape[0] == len(out.targets)
    (torch.Size([2]), True)
    >>> out.mean.backward()
    >>> soft.grad is not None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ragzip._lazy import require
from ragzip.generation import kv_cache_kwargs

IGNORE = -100
"""The label of a position that is not scored."""


@dataclass(frozen=True)
class Tokens:
    """Token ids read as they are (not re-tokenized)."""

    ids: Sequence[int]


@dataclass(frozen=True)
class Target:
    """What is scored: text (tokenized without special tokens) or token ids; read after being scored."""

    tokens: str | Sequence[int]


Piece = str | torch.Tensor | Tokens | Target  # what a sequence is made of


@dataclass
class SequenceNLL:
    """The NLL of a batch's targets.

    Attributes:
        mean: Mean token NLL over every scored token of the batch (a scalar with gradients).
        per_sequence: ``(B,)`` mean token NLL of each sequence's scored tokens (0 for a sequence without any).
        logits: ``(N, V)`` logits at the scored tokens, sequence by sequence, in order (float32).
        targets: ``(N,)`` the scored token ids.
        rows: ``(N,)`` the sequence of each scored token.
    """

    mean: torch.Tensor
    per_sequence: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor


class PrefixCache:
    """Keys and values of token prefixes, by their ids, computed once without gradients (at most ``size`` kept).

    Give one to :func:`sequence_nll` when the batches of a frozen model share a plain-token prefix (the system
    prompt and chat markers before the first soft vector).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: dict[tuple[Any, tuple[int, ...]], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, base: Any, ids: tuple[int, ...], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The per-layer ``(keys, values)`` of ``ids`` read by ``base`` (the model without its LM head)."""
        key = (id(base), ids)
        if key not in self._entries:
            if len(self._entries) > self.size:
                self._entries.clear()
            cache = require("transformers").DynamicCache(config=base.config)
            with torch.no_grad():
                base(input_ids=torch.tensor([ids], device=device), **kv_cache_kwargs(base, cache), use_cache=True)
            self._entries[key] = [(layer.keys, layer.values) for layer in cache.layers]
        return self._entries[key]


@dataclass
class _Row:
    """One sequence: its input embeddings, labels, and the ids of the plain tokens it starts with."""

    embeds: torch.Tensor  # (T, d)
    labels: list[int]
    lead: list[int]


def _ids(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _target_ids(tokenizer: Any, piece: Target) -> list[int]:
    return _ids(tokenizer, piece.tokens) if isinstance(piece.tokens, str) else [int(t) for t in piece.tokens]


def _assemble(generator: Any, pieces: Sequence[Piece], add_special_tokens: bool) -> _Row:
    tok = generator.tokenizer
    table = generator.input_embeddings()
    device = table.weight.device
    cut = next((i for i, p in enumerate(pieces) if isinstance(p, Target)), len(pieces))
    prompt, tail = pieces[:cut], pieces[cut:]
    parts: list[torch.Tensor] = []
    lead: list[int] = []
    if prompt:
        parts.append(generator.embed_pieces(
            [table(torch.tensor(list(p.ids), dtype=torch.long, device=device)) if isinstance(p, Tokens) else p
             for p in prompt], add_special_tokens=add_special_tokens))  # (Tp, d)
        if all(isinstance(p, str) for p in prompt):  # the generator reads a text-only prompt as one text
            lead = _ids(tok, "".join(prompt), add_special_tokens)  # type: ignore[arg-type]
        else:
            prefix, suffix = generator.special_affixes() if add_special_tokens else ([], [])
            lead = list(prefix)
            for p in prompt:
                if isinstance(p, torch.Tensor):
                    break
                lead += _ids(tok, p) if isinstance(p, str) else list(p.ids)  # type: ignore[union-attr]
            else:
                lead += list(suffix)
    labels = [IGNORE] * (parts[0].shape[0] if parts else 0)
    tail_ids: list[int] = []
    for p in tail:
        if isinstance(p, torch.Tensor):
            raise ValueError("soft vectors go before the first Target of a sequence (they belong to the prompt); "
                             "put them earlier, or score the text after them in a sequence of its own.")
        ids = _target_ids(tok, p) if isinstance(p, Target) else _ids(tok, p) if isinstance(p, str) else list(p.ids)
        tail_ids += ids
        labels += ids if isinstance(p, Target) else [IGNORE] * len(ids)
    if tail_ids:
        parts.append(table(torch.tensor(tail_ids, dtype=torch.long, device=device)))  # (Tt, d)
    if len(lead) == len(labels) - len(tail_ids):  # the whole prompt is plain tokens: so is what follows it
        lead += tail_ids
    return _Row(torch.cat(parts, dim=0), labels, lead)


def _common_prefix(rows: Sequence[_Row]) -> int:
    """Plain tokens every row starts with, ending 1+ position before any row's first scored token."""
    firsts = [next((i for i, t in enumerate(r.labels) if t != IGNORE), len(r.labels)) for r in rows]
    limit = min(min(firsts) - 1, *(len(r.lead) for r in rows))
    first = rows[0].lead
    n = 0
    while n < limit and all(r.lead[n] == first[n] for r in rows):
        n += 1
    return n


def sequence_nll(generator: Any, sequences: Sequence[Sequence[Piece]], *,
                 add_special_tokens: bool | Sequence[bool] = False, model: Any = None,
                 prefixes: PrefixCache | None = None) -> SequenceNLL:
    """The token NLL of each sequence's :class:`Target` pieces under the generator's LM (or ``model``).

    Args:
        generator: The :class:`~ragzip.generation.HFGenerator` whose tokenizer and splice build the inputs.
        sequences: Lists of pieces (text, soft vectors ``(n, d)``, :class:`Tokens`, :class:`Target`).
        add_special_tokens: Put the tokenizer's special tokens around the prompt (the pieces before the first target),
            for every sequence or per sequence (``generator.adds_special_tokens(prompt_text)`` gives the generator's
            rule).
        model: The causal LM that reads (default ``generator.model``), e.g. a decoder with an adapter.
        prefixes: Reuse the keys and values of the plain-token prefix the batch shares (a frozen model only).

    Returns:
        The batch's :class:`SequenceNLL`.
    """
    flags = [add_special_tokens] * len(sequences) if isinstance(add_special_tokens, bool) else list(add_special_tokens)
    if len(flags) != len(sequences):
        raise ValueError(f"add_special_tokens has {len(flags)} flags for {len(sequences)} sequences; give one per "
                         "sequence, or one bool for all.")
    model = generator.model if model is None else model
    rows = [_assemble(generator, pieces, flag) for pieces, flag in zip(sequences, flags, strict=True)]
    base = getattr(model, model.base_model_prefix)
    past = None
    skip = _common_prefix(rows) if prefixes is not None and rows else 0
    if skip and not any(p.requires_grad for p in model.parameters()):
        past = prefixes.get(base, tuple(rows[0].lead[:skip]), rows[0].embeds.device)  # type: ignore[union-attr]
    else:
        skip = 0
    width = max(r.embeds.shape[0] - skip for r in rows)
    embeds = torch.stack([F.pad(r.embeds[skip:], (0, 0, 0, width - r.embeds.shape[0] + skip)) for r in rows])
    labels = torch.tensor([r.labels[skip:] + [IGNORE] * (width - len(r.labels) + skip) for r in rows],
                          device=embeds.device)  # (B, T)
    mask = torch.tensor([[1] * (len(r.labels) - skip) + [0] * (width - len(r.labels) + skip) for r in rows],
                        device=embeds.device)  # (B, T)
    return padded_nll(model, embeds, mask, labels, past=past)


def padded_nll(model: Any, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, *,
               past: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> SequenceNLL:
    """The token NLL at the labelled positions of a right-padded batch.

    Args:
        model: A causal LM (``base_model_prefix`` names its body, ``get_output_embeddings()`` its head).
        embeds: ``(B, T, d)`` input embeddings, right-padded.
        mask: ``(B, T)`` attention mask (1 = read).
        labels: ``(B, T)`` the token id scored at each position, :data:`IGNORE` elsewhere; position ``t`` is
            predicted by the hidden state at ``t - 1``, so position 0 is never scored.
        past: Per-layer ``(keys, values)`` ``(1, heads, P, head_dim)`` of a prefix every row continues.

    Returns:
        The batch's :class:`SequenceNLL`.
    """
    base = getattr(model, model.base_model_prefix)
    batch, width = mask.shape
    cache, offset = None, 0
    if past:
        cache = require("transformers").DynamicCache(config=model.config)
        for layer, (k, v) in enumerate(past):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        offset = past[0][0].shape[2]
        mask = torch.cat([mask.new_ones(batch, offset), mask], dim=1)  # (B, P + T)
    positions = (offset + torch.arange(width, device=embeds.device)).expand(batch, width)  # (B, T)
    hidden = base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kv_cache_kwargs(base, cache),
                  use_cache=cache is not None).last_hidden_state  # (B, T, d)
    rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)  # (N,), (N,): position cols + 1 is scored
    logits = model.get_output_embeddings()(hidden[rows, cols]).float()  # (N, V)
    targets = labels[rows, cols + 1]  # (N,)
    per_token = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    total = torch.zeros(batch, device=per_token.device, dtype=per_token.dtype).index_add(0, rows, per_token)
    counts = torch.zeros(batch, device=per_token.device, dtype=per_token.dtype).index_add(
        0, rows, torch.ones_like(per_token))
    if not len(targets):  # nothing scored: a zero loss (still in the graph), not the NaN of an empty mean
        return SequenceNLL(hidden.sum() * 0.0, total, logits, targets, rows)
    return SequenceNLL(F.cross_entropy(logits, targets), total / counts.clamp(min=1), logits, targets, rows)


__all__ = ["IGNORE", "Piece", "PrefixCache", "SequenceNLL", "Target", "Tokens", "padded_nll", "sequence_nll"]
