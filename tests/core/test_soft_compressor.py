"""SoftCompressor, the base of xrag and refrag: binding (the fit check, store, space, device) and emitting soft tokens.

A toy subclass on a stand-in generator: no model, so the base's own behaviour is what is tested.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ragzip.compressor import CompressorConfig, SoftCompressor
from ragzip.errors import SoftTokenError
from ragzip.softstore import SoftTokenStore, split_prompt
from ragzip.tokens import load_token_counter
from ragzip.types import PassageResult

D = 4


class ToySoft(SoftCompressor):
    name = "toy_soft"

    def __init__(self, *, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(CompressorConfig(tokenizer="whitespace"), **kwargs)
        self.fail = fail
        self.moved_to: str | None = None

    def _trained_space(self) -> str:
        return f"toy-model|d={D}"

    def _space_mismatch(self, generator: str | None, width: int) -> str | None:
        return None if width == D else f"toy vectors are {D} wide but generator {generator!r} reads {width}."

    def _to_device(self, device: str) -> None:
        self.moved_to = device

    def _compress(self, query, passages):
        segments = self.emit([torch.ones(2, D) for _ in passages], pad=(False, True))
        if self.fail:
            raise RuntimeError("failed after emitting")
        return self.context(query, [PassageResult(p, s.placeholder, "soft", reason="toy", soft=(s,), tokens_after=2)
                                    for p, s in zip(passages, segments, strict=True)])


def generator(width: int = D) -> Any:
    return SimpleNamespace(config=SimpleNamespace(model="toy-model"), hidden_size=width, space=f"toy-model|d={width}",
                           device=torch.device("cpu"), store=SoftTokenStore(), model=None,
                           token_counter=load_token_counter("whitespace"))


def test_emit_returns_segments_whose_handles_resolve_in_the_space() -> None:
    toy = ToySoft(store=SoftTokenStore())
    ctx = toy.compress("q?", ["one passage", "another one"])
    assert toy.soft and ctx.results[0].decision == "soft"
    for result in ctx.results:
        (segment,) = result.soft
        assert segment.placeholder == f"<<ragzip:soft:{segment.handle}>>" == result.text and segment.n_vectors == 2
        entry = toy.store.resolve(segment.handle)
        assert entry is not None and entry.space == "toy-model|d=4" and entry.pad == (False, True)
        assert entry.vectors.shape == (2, D)
    assert toy.store.pinned == 2  # until the generator reads them


def test_bind_shares_the_generators_store_space_and_device() -> None:
    gen = generator()
    toy = ToySoft(store=SoftTokenStore())
    toy.bind(gen)
    assert (toy.generator, toy.store, toy.token_counter) == (gen, gen.store, gen.token_counter)
    assert (toy.space, toy.device, toy.moved_to) == ("toy-model|d=4", "cpu", "cpu")
    ctx = toy.compress("q?", ["a passage"])
    assert [type(p).__name__ for p in split_prompt(ctx.text, gen.store)] == ["SoftEntry"]


def test_bind_refuses_a_generator_of_another_width_and_binds_nothing() -> None:
    toy = ToySoft(store=SoftTokenStore())
    before = toy.store
    with pytest.raises(SoftTokenError, match=re.escape("toy vectors are 4 wide but generator 'toy-model' reads 8.")):
        toy.bind(generator(width=8))
    assert toy.generator is None and toy.store is before and toy.moved_to is None


def test_a_failed_call_releases_what_it_emitted() -> None:
    toy = ToySoft(store=SoftTokenStore(), fail=True)
    with pytest.raises(RuntimeError, match="failed after emitting"):
        toy.compress_batch(["q1?", "q2?"], [["a", "b"], ["c"]])
    assert len(toy.store) == 0 and toy.store.pinned == 0


def test_the_shipped_soft_compressors_derive_from_it() -> None:
    from ragzip.compressor import get_compressor_class

    assert [n for n in ("xrag", "refrag", "route") if issubclass(get_compressor_class(n), SoftCompressor)] == [
        "xrag", "refrag"]  # route emits through its xrag stage
    assert all(get_compressor_class(n).soft for n in ("xrag", "refrag", "route"))
