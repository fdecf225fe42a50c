"""Concurrent async ``compress`` calls coalesced into one ``compress_batch`` (framework-free; the adapters use it).

Example:
    >>> import asyncio
    >>> from ragzip import build_compressor
    >>> batcher = AsyncBatcher(build_compressor({"type": "truncate", "max_tokens": 2, "tokenizer": "whitespace"}))
    >>> async def ask():
    ...     return await asyncio.gather(batcher.compress("Who?", ["a b c"]), batcher.compress("What?", ["d e f"]))
    >>> [ctx.text for ctx in asyncio.run(ask())]
    ['a b', 'd e']
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ragzip.errors import CancelledBatchError, ConfigError, PluginError, check_batch_output
from ragzip.types import CompressedContext, Passage

if TYPE_CHECKING:
    from ragzip.compressor import Compressor

__all__ = ["AsyncBatcher"]

# One waiting call: its query, its passages and the future its caller awaits.
_Request = tuple[str, list[Any], "asyncio.Future[CompressedContext]"]


class AsyncBatcher:
    """Coalesces concurrent async ``compress`` calls on one event loop into a single ``compress_batch``.

    A call queues its request and schedules a flush for the next turn of the loop, so every request made in the same
    turn (``asyncio.gather`` over many questions, concurrent requests in a server) is compressed together in one
    worker thread; compressors with a model batch the work across questions. The loop is never blocked. When a batch
    fails (one bad query), each request is retried alone so that only its own caller sees the error.

    Every caller gets a result or an exception, whatever happens to the batch: a cancelled flush task, a plugin that
    returns the wrong number of results, or any other failure reaches each waiting caller instead of leaving it
    waiting forever. At most ``max_concurrent`` batches of one compressor run at once (per event loop); later ones
    wait for a slot, so a burst of requests cannot start unbounded worker threads and model copies.

    Args:
        compressor: The compressor (or chain) to run.
        max_batch: Most requests in one ``compress_batch``; a full queue is flushed at once.
        max_concurrent: Most batches of this batcher running at once on one event loop.
    """

    def __init__(self, compressor: Compressor, *, max_batch: int = 32, max_concurrent: int = 2) -> None:
        if max_batch < 1 or max_concurrent < 1:
            raise ConfigError(f"AsyncBatcher needs max_batch >= 1 and max_concurrent >= 1, got {max_batch!r} and "
                              f"{max_concurrent!r}.")
        self.compressor = compressor
        self.max_batch = max_batch
        self.max_concurrent = max_concurrent
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Request]] = weakref.WeakKeyDictionary()
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task[None]] = set()

    async def compress(self, query: str, passages: Sequence[Passage | str]) -> CompressedContext:
        """Compress ``passages`` for ``query`` together with the other calls made in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CompressedContext] = loop.create_future()
        queue = self._queues.setdefault(loop, [])
        queue.append((query, list(passages), future))
        if len(queue) == 1:
            loop.call_soon(self._flush, loop)
        elif len(queue) >= self.max_batch:
            self._flush(loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._queues.pop(loop, [])
        if batch:
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)  # keep a reference until done (the loop holds tasks weakly)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(_settle, batch))

    async def _run(self, batch: list[_Request]) -> None:
        queries = [q for q, _, _ in batch]
        passages = [p for _, p, _ in batch]
        slots = self._slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(self.max_concurrent))
        async with slots:
            try:
                outs: list[Any] = await asyncio.to_thread(self._batch, queries, passages)
            except Exception as err:  # noqa: BLE001 - isolate the failing request(s) below
                if len(batch) == 1 or isinstance(err, PluginError):  # a broken plugin: every caller sees it
                    outs = [err] * len(batch)
                else:
                    outs = await asyncio.to_thread(self._one_by_one, queries, passages)
        for (_, _, future), out in zip(batch, outs, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(out, BaseException):
                future.set_exception(out)
            else:
                future.set_result(out)

    def _batch(self, queries: list[str], passages: list[list[Any]]) -> list[Any]:
        return check_batch_output(type(self.compressor).__name__,
                                  self.compressor.compress_batch(queries, passages), len(queries))

    def _one_by_one(self, queries: list[str], passages: list[list[Any]]) -> list[Any]:
        outs: list[Any] = []
        for q, p in zip(queries, passages, strict=True):
            try:
                outs.append(self.compressor.compress(q, p))
            except Exception as err:  # noqa: BLE001 - handed to that request's caller
                outs.append(err)
        return outs


def _settle(batch: list[_Request], task: asyncio.Task[None]) -> None:
    """When the flush task ends, give every caller still waiting the task's exception (or a cancellation error)."""
    if task.cancelled():
        error: BaseException = CancelledBatchError(
            "the batched compression task was cancelled before it finished (is the event loop shutting down?); "
            "retry the call.")
    else:
        error = task.exception() or CancelledBatchError("the batched compression task ended without a result for "
                                                        "this call; this is a bug in ragzip, please report it.")
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)
