"""Assembling REFRAG's mixed decoder input: token embeddings gathered by id, chunk vectors placed at their positions.

:func:`assemble_embeddings` builds ``inputs_embeds (B, T, d)`` from a token-id grid and a soft-index grid:
position ``(b, t)`` reads ``soft_vectors[soft_index[b, t]]`` when ``soft_index[b, t] >= 0`` and the embedding row
``weight[token_ids[b, t]]`` otherwise. On CUDA it runs one Triton kernel (a single pass over the output instead of
gather + scatter + where); everywhere else, and whenever gradients are needed, it runs the torch reference.
Triton is imported lazily and only when ``torch.cuda.is_available()``: it has no CPU backend.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from ragzip._lazy import require

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")


def assemble_embeddings_reference(weight: torch.Tensor, token_ids: torch.Tensor, soft_vectors: torch.Tensor,
                                  soft_index: torch.Tensor) -> torch.Tensor:
    """The torch reference: differentiable in ``weight`` and ``soft_vectors``.

    Args:
        weight: The decoder's input-embedding table ``(V, d)``.
        token_ids: ``(B, T)`` token ids; ignored where ``soft_index >= 0`` (any valid id, e.g. the pad id).
        soft_vectors: ``(S, d)`` chunk vectors (``S`` may be 0).
        soft_index: ``(B, T)`` row of ``soft_vectors`` for soft positions, ``-1`` for token positions.

    Returns:
        ``(B, T, d)`` input embeddings.
    """
    out = torch.nn.functional.embedding(token_ids, weight)  # (B, T, d)
    if soft_vectors.shape[0] == 0:
        return out
    is_soft = (soft_index >= 0).unsqueeze(-1)  # (B, T, 1)
    soft = soft_vectors.to(out.dtype)[soft_index.clamp(min=0)]  # (B, T, d)
    return torch.where(is_soft, soft, out)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when a CUDA GPU is present and triton imports (checked once per process)."""
    if not torch.cuda.is_available():
        return False
    try:
        require("triton")
    except ImportError:
        return False
    return True


def assemble_embeddings(weight: torch.Tensor, token_ids: torch.Tensor, soft_vectors: torch.Tensor,
                        soft_index: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Mixed input embeddings ``(B, T, d)``; see :func:`assemble_embeddings_reference` for the arguments.

    ``backend="auto"`` uses the Triton kernel for CUDA tensors when no gradient is needed, the torch reference
    otherwise; ``"triton"`` insists on the kernel (an error without a GPU), ``"torch"`` on the reference.

    Example:
        >>> w = torch.arange(12.0).reshape(4, 3)
        >>> assemble_embeddings(w, torch.tensor([[1, 0, 2]]), torch.full((1, 3), -1.0),
        ...                     torch.tensor([[-1, 0, -1]])).tolist()
        [[[3.0, 4.0, 5.0], [-1.0, -1.0, -1.0], [6.0, 7.0, 8.0]]]
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r} is not one of {BACKENDS}.")
    if token_ids.shape != soft_index.shape:
        raise ValueError(f"token_ids {tuple(token_ids.shape)} and soft_index {tuple(soft_index.shape)} must have the "
                         "same shape.")
    needs_grad = torch.is_grad_enabled() and (weight.requires_grad or soft_vectors.requires_grad)
    use_triton = backend == "triton" or (
        backend == "auto" and weight.is_cuda and not needs_grad and triton_available())
    if not use_triton:
        return assemble_embeddings_reference(weight, token_ids, soft_vectors, soft_index)
    if not triton_available():
        raise RuntimeError("backend='triton' needs a CUDA GPU and `pip install triton` (ragzip[gpu]); use "
                           "backend='torch' or 'auto' on this machine.")
    triton_assemble = require("ragzip.plugins.refrag._triton_assemble")  # imports triton, an optional dependency
    return triton_assemble.assemble(weight, token_ids, soft_vectors.to(weight.dtype), soft_index)


def layout_from_segments(segments: list[tuple[str, Any]], pad_id: int = 0) -> tuple[list[int], list[int]]:
    """Flatten ``[("tokens", ids), ("soft", rows)]`` segments into parallel ``token_ids`` / ``soft_index`` lists."""
    token_ids: list[int] = []
    soft_index: list[int] = []
    for kind, values in segments:
        if kind == "tokens":
            token_ids.extend(int(v) for v in values)
            soft_index.extend([-1] * len(values))
        elif kind == "soft":
            token_ids.extend([pad_id] * len(values))
            soft_index.extend(int(v) for v in values)
        else:
            raise ValueError(f"segment kind {kind!r} must be 'tokens' or 'soft'.")
    return token_ids, soft_index
