"""The async batcher never leaves a caller waiting, checks the number of results, caps the batches running at once,
and lazy model loading happens once under concurrency.

A cancelled flush task, or a plugin returning the wrong number of contexts, must not leave the callers of
``AsyncBatcher.compress`` awaiting forever; the tests below bound the wait with ``asyncio.wait_for``, so a hang fails.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from ragzip import build_compressor
from ragzip.batching import AsyncBatcher
from ragzip.errors import CancelledBatchError, PluginError, check_batch_output
from ragzip.plugins.baseline.compressor import NoneCompressor
from ragzip.tokens import WhitespaceTokenCounter


class DropsOne(NoneCompressor):
    """A broken plugin: one result short for a batch of several queries."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, token_counter=WhitespaceTokenCounter(), **kwargs)

    def _compress_batch(self, queries, passages):
        return super()._compress_batch(queries, passages)[:-1] if len(queries) > 1 else \
            super()._compress_batch(queries, passages)


class Slow(NoneCompressor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, token_counter=WhitespaceTokenCounter(), **kwargs)
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def _compress_batch(self, queries, passages):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(5)
            return super()._compress_batch(queries, passages)
        finally:
            with self.lock:
                self.running -= 1


def test_cancelled_flush_task_gives_every_caller_an_error() -> None:
    compressor = Slow()
    batcher = AsyncBatcher(compressor)

    async def main():
        calls = [asyncio.create_task(batcher.compress(f"q{i}", [f"passage {i}"])) for i in range(3)]
        while not batcher._tasks:
            await asyncio.sleep(0.01)
        for task in list(batcher._tasks):
            task.cancel()  # e.g. a server shutting down its background tasks
        compressor.release.set()  # let the worker thread finish (its result is no longer wanted)
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)

    try:
        results = asyncio.run(main())
    finally:
        compressor.release.set()
    assert all(isinstance(r, CancelledBatchError) for r in results), results
    assert "the batched compression task was cancelled before it finished" in str(results[0])


def test_plugin_returning_the_wrong_number_of_results_fails_every_async_caller() -> None:
    batcher = AsyncBatcher(DropsOne())

    async def main():
        calls = [batcher.compress(f"q{i}", [f"passage {i}"]) for i in range(3)]
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)

    results = asyncio.run(main())
    assert all(isinstance(r, PluginError) for r in results), results
    assert "DropsOne returned 2 result(s) for 3 queries from _compress_batch" in str(results[0])


def test_check_batch_output_names_the_plugin() -> None:
    with pytest.raises(PluginError, match=re.escape("X returned 1 result(s) for 2 queries from _compress_batch; "
                                                    "each query must get exactly one CompressedContext.")):
        check_batch_output("X", [object()], 2)


def test_concurrent_batches_per_compressor_are_capped() -> None:
    compressor = Slow()
    batcher = AsyncBatcher(compressor, max_batch=1, max_concurrent=2)  # every call is its own batch

    async def main():
        calls = [asyncio.create_task(batcher.compress(f"q{i}", [f"passage {i}"])) for i in range(8)]
        await asyncio.sleep(0.3)
        compressor.release.set()
        return await asyncio.wait_for(asyncio.gather(*calls), 10)

    results = asyncio.run(main())
    assert len(results) == 8 and [r.query for r in results] == [f"q{i}" for i in range(8)]
    assert compressor.peak <= 2


def test_lazy_model_loading_happens_once_under_concurrency(monkeypatch) -> None:
    import ragzip.models
    from ragzip.generation import GeneratorConfig, HFGenerator

    calls = []

    def slow_load(spec, device="cpu"):
        calls.append(spec)
        time.sleep(0.2)
        return object(), object()

    monkeypatch.setattr(ragzip.models, "load_causal_lm", slow_load)
    gen = HFGenerator(GeneratorConfig(model="some/model"))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(gen.model)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(m) for m in seen}) == 1


def test_xrag_projector_loads_once_under_concurrency(monkeypatch, tmp_path) -> None:
    import torch

    from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector
    from ragzip.plugins.xrag import compressor as xrag_compressor

    torch.manual_seed(0)
    artifact = XRAGProjector(ProjectorConfig(embedder="hash:16", embedder_dim=16, generator="embedded:smollm2-135m",
                                             generator_hidden=32)).save_pretrained(tmp_path / "p")
    real = xrag_compressor.XRAGProjector.from_pretrained
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(xrag_compressor.XRAGProjector, "from_pretrained", slow)
    xrag = build_compressor({"type": "xrag", "artifact": str(artifact)})
    threads = [threading.Thread(target=lambda: xrag.projector) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_sync_compress_batch_with_the_wrong_number_of_results_is_an_error():
    """The sync path checks the count too (a non-strict zip would truncate silently)."""
    with pytest.raises(PluginError, match=re.escape("DropsOne returned 2 result(s) for 3 queries")):
        DropsOne().compress_batch(["a", "b", "c"], [["x"], ["y"], ["z"]])
