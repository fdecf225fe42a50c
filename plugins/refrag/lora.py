"""A small LoRA for REFRAG's decoder, so that it can learn to *read* soft chunk tokens (REFRAG's CPT updates the
decoder; ragzip keeps the base decoder frozen and trains a low-rank delta instead).

Each adapted ``nn.Linear`` ``W`` gets ``W x + (alpha / r) * B (A x)`` with ``A`` ``(r, in)`` drawn like PEFT's
(Kaiming-uniform) and ``B`` ``(out, r)`` zero, so an untrained adapter changes nothing. Only ``A`` and ``B`` are trained
and stored (``decoder_lora.layers.<i>.<target>.{A,B}`` in the REFRAG artifact); the decoder itself is named, never
copied.

Targets are named by the last part of a module's name (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` in Llama-style
decoders) and numbered by their order in the decoder (layer ``i`` is the ``i``-th ``*.q_proj``), so the stored names
do not depend on one architecture's module paths.

Two ways to put it on a decoder, neither touching the decoder passed in (a cached base model may be shared):

- :meth:`DecoderLoRA.adapted` with ``merge=False`` (training): a copy of the decoder whose targets are
  :class:`LoRALinear` wrappers; gradients reach ``A`` and ``B``.
- ``merge=True`` (inference): a copy whose target weights are ``W + (alpha / r) B A``: the same architecture and cost
  as the plain decoder, so time-to-first-token is unchanged.

Both copies share every other tensor with the decoder (embeddings, MLPs, norms): a merged copy of SmolLM2-135M with
q/k/v/o adapted adds the four attention matrices of each layer (106 MB in float32), not a second model.

Example:
    >>> lora = DecoderLoRA.for_decoder(decoder, rank=8, alpha=16.0, targets=("q_proj", "v_proj"))  # doctest: +SKIP
    >>> reader = lora.adapted(decoder, merge=True)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ragzip.artifacts import embedding_fingerprint
from ragzip.errors import ConfigError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(x))``: a frozen ``nn.Linear`` with a trainable low-rank delta (training form)."""

    def __init__(self, base: nn.Linear, pair: LoRAPair, scale: float) -> None:
        super().__init__()
        self.base = base
        self.pair = pair
        self.scale = scale

    @property
    def weight(self) -> torch.Tensor:  # code that reads ``module.weight`` (dtype/device probes) sees the base weight
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = nn.functional.linear(nn.functional.linear(x, self.pair.A), self.pair.B)  # (..., out) via (..., r)
        return self.base(x) + delta * self.scale


class LoRAPair(nn.Module):
    """The two factors of one adapted linear map: ``A`` ``(r, in)`` and ``B`` ``(out, r)``."""

    def __init__(self, rank: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # PEFT's choice; B = 0 makes the delta start at zero

    def delta(self) -> torch.Tensor:
        return self.B @ self.A  # (out, in)


def find_targets(decoder: nn.Module, targets: Sequence[str]) -> list[dict[str, tuple[str, nn.Linear]]]:
    """The decoder's linear maps named ``*.<target>``, per layer: ``[{target: (module name, module)}, ...]``.

    Raises:
        ConfigError: a target matches no ``nn.Linear`` or not the same number of times as the others.
    """
    found: dict[str, list[tuple[str, nn.Linear]]] = {t: [] for t in targets}
    for name, module in decoder.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in found:
            base = module.base if isinstance(module, LoRALinear) else module
            if isinstance(base, nn.Linear):
                found[last].append((name, base))
    counts = {t: len(v) for t, v in found.items()}
    if not targets or min(counts.values()) == 0 or len(set(counts.values())) != 1:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in decoder.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"decoder LoRA targets {list(targets)!r} match {counts} linear layers of "
                          f"{type(decoder).__name__}; each target must name one linear map per layer. This decoder's "
                          f"linear maps are named {linear}; pass some of them (e.g. --lora-targets q_proj,v_proj).")
    return [{t: found[t][i] for t in targets} for i in range(counts[targets[0]])]


class DecoderLoRA(nn.Module):
    """Low-rank adapters for ``layers`` x ``targets`` linear maps of a decoder.

    Args:
        rank: ``r``, the rank of each delta.
        alpha: The delta is scaled by ``alpha / r``.
        shapes: ``{target: (in_features, out_features)}``, e.g. ``{"q_proj": (576, 576), "v_proj": (576, 192)}``.
        layers: How many linear maps each target names (the decoder's layer count).
    """

    def __init__(self, rank: int, alpha: float, shapes: Mapping[str, Sequence[int]], layers: int) -> None:
        super().__init__()
        if rank < 1 or layers < 1 or not shapes:
            raise ConfigError(f"a decoder LoRA needs rank >= 1, layers >= 1 and targets; got rank={rank!r}, "
                              f"layers={layers!r}, targets={dict(shapes)!r}.")
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.shapes = {t: (int(s[0]), int(s[1])) for t, s in shapes.items()}
        self.layers = nn.ModuleList(
            nn.ModuleDict({t: LoRAPair(self.rank, d_in, d_out) for t, (d_in, d_out) in self.shapes.items()})
            for _ in range(layers)
        )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    @staticmethod
    def shapes_of(decoder: nn.Module, targets: Sequence[str]) -> tuple[dict[str, tuple[int, int]], int]:
        """``({target: (in, out)}, layers)`` of ``decoder``'s target linear maps."""
        per_layer = find_targets(decoder, targets)
        shapes = {t: (m.in_features, m.out_features) for t, (_, m) in per_layer[0].items()}
        return shapes, len(per_layer)

    @classmethod
    def for_decoder(cls, decoder: nn.Module, *, rank: int, alpha: float, targets: Sequence[str]) -> DecoderLoRA:
        """A fresh (zero-delta) adapter shaped for ``decoder``."""
        shapes, layers = cls.shapes_of(decoder, targets)
        return cls(rank, alpha, shapes, layers)

    def pairs(self) -> list[tuple[int, str, LoRAPair]]:
        return [(i, t, layer[t]) for i, layer in enumerate(self.layers) for t in self.targets]  # type: ignore[misc]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------ on a decoder
    def _matched(self, decoder: nn.Module) -> list[dict[str, tuple[str, nn.Linear]]]:
        per_layer = find_targets(decoder, self.targets)
        if len(per_layer) != len(self.layers):
            raise ConfigError(f"the decoder LoRA was trained for {len(self.layers)} layers, but "
                              f"{type(decoder).__name__} has {len(per_layer)}; use the decoder it was trained with.")
        for layer in per_layer:
            for t, (name, module) in layer.items():
                if (module.in_features, module.out_features) != self.shapes[t]:
                    raise ConfigError(f"the decoder LoRA expects {t} of shape (in, out) = {self.shapes[t]}, but "
                                      f"{name} is ({module.in_features}, {module.out_features}); use the decoder "
                                      "it was trained with.")
        return per_layer

    def base_fingerprint(self, decoder: nn.Module) -> str:
        """A short hash of the decoder's target weights (the adapter is a delta on exactly these)."""
        h = hashlib.sha256()
        for layer in self._matched(decoder):
            for t in self.targets:
                h.update(embedding_fingerprint(layer[t][1].weight).encode())
        return h.hexdigest()[:16]

    def adapted(self, decoder: nn.Module, *, merge: bool) -> nn.Module:
        """A copy of ``decoder`` reading through this adapter; ``decoder`` itself is left untouched.

        ``merge=False``: targets become :class:`LoRALinear` (differentiable in ``A``/``B``; training).
        ``merge=True``: target weights become ``W + scale * B A`` (no gradient; the plain decoder's cost).
        Every other tensor is shared with ``decoder``, not copied.
        """
        if any(isinstance(m, LoRALinear) for m in decoder.modules()):
            raise ConfigError("this decoder already reads through a LoRA; adapt the plain decoder instead.")
        per_layer = self._matched(decoder)
        shared = {id(t): t for t in itertools.chain(decoder.parameters(), decoder.buffers())}
        copy_ = copy.deepcopy(decoder, shared)  # new modules over the same tensors
        modules = dict(copy_.named_modules())
        for i, layer in enumerate(per_layer):
            for t, (name, _) in layer.items():
                pair: LoRAPair = self.layers[i][t]  # type: ignore[index]
                linear = modules[name]  # the copy's module: its own parameter dict, the decoder's tensors
                if merge:
                    with torch.no_grad():
                        merged = linear.weight + (pair.delta() * self.scale).to(linear.weight)  # (out, in)
                    linear.weight = nn.Parameter(merged, requires_grad=False)
                else:
                    parent_name, _, child = name.rpartition(".")
                    setattr(modules[parent_name] if parent_name else copy_, child,
                            LoRALinear(linear, pair, self.scale))
        return copy_


def adapter_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A short hash of an adapter's tensors: names the embedding space of the decoder reading through it."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]
