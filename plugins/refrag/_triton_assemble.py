"""The Triton kernel behind :func:`ragzip.plugins.refrag.kernels.assemble_embeddings` (imported only on CUDA)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _assemble_kernel(weight_ptr, ids_ptr, soft_ptr, sidx_ptr, out_ptr, d, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)  # one (b, t) position
    block = tl.program_id(1)  # one slice of the embedding width
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    in_range = cols < d
    s = tl.load(sidx_ptr + row)
    tok = tl.load(ids_ptr + row)
    is_soft = s >= 0
    # Both loads are masked so only the chosen source is read; int64 offsets keep large vocabularies safe.
    soft_vals = tl.load(soft_ptr + s.to(tl.int64) * d + cols, mask=in_range & is_soft, other=0.0)
    tok_vals = tl.load(weight_ptr + tok.to(tl.int64) * d + cols, mask=in_range & (s < 0), other=0.0)
    tl.store(out_ptr + row.to(tl.int64) * d + cols, tl.where(is_soft, soft_vals, tok_vals), mask=in_range)


def assemble(weight: torch.Tensor, token_ids: torch.Tensor, soft_vectors: torch.Tensor,
             soft_index: torch.Tensor) -> torch.Tensor:
    """``(B, T, d)`` mixed embeddings on the GPU (no autograd: inference only)."""
    batch, length = token_ids.shape
    d = weight.shape[1]
    weight = weight.contiguous()
    ids = token_ids.to(device=weight.device, dtype=torch.int64).contiguous().view(-1)  # (B*T,)
    sidx = soft_index.to(device=weight.device, dtype=torch.int64).contiguous().view(-1)  # (B*T,)
    soft = soft_vectors.to(weight.device).contiguous()
    if soft.shape[0] == 0:  # the kernel never reads it, but needs a valid pointer
        soft = weight.new_zeros(1, d)
    out = torch.empty(batch * length, d, device=weight.device, dtype=weight.dtype)  # (B*T, d)
    if out.numel():
        block = min(1024, triton.next_power_of_2(d))
        _assemble_kernel[(batch * length, triton.cdiv(d, block))](weight, ids, soft, sidx, out, d, BLOCK_D=block)
    return out.view(batch, length, d)  # (B, T, d)
