"""The ``xrag`` compressor: each passage becomes one soft token, its retriever embedding mapped by a trained projector.

The vectors go into the generator's :class:`~ragzip.SoftTokenStore`; the passage text becomes the placeholder the store
issued (inside ``context_template``), so the result travels through LlamaIndex and LangChain as text and only ragzip's
generator reads it as vectors (DESIGN.md §2).

Passage embeddings are reused from the FAISS index when they come from the projector's embedder (``metadata["embedder"]``
when the index recorded it, else trusted on matching width and norm); otherwise the passage is re-encoded with that
embedder (``reencode: true``) or refused.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from ragzip.artifacts import ArtifactError
from ragzip.compressor import SoftCompressor
from ragzip.errors import ConfigError, InputError, ModelNotFoundError, SoftTokenError
from ragzip.models import lazy_lock
from ragzip.plugins.xrag.config import WHERE, XRAGConfig
from ragzip.plugins.xrag.modeling import (
    PassageEncoder,
    XRAGProjector,
    check_encoder,
    check_generator,
    load_encoder,
    same_model,
)
from ragzip.types import CompressedContext, Passage, PassageResult

logger = logging.getLogger(__name__)

EMBEDDER_KEY = "embedder"  # Passage.metadata key naming the embedder that made Passage.embedding
NORM_TOLERANCE = 1e-3


class XRAGCompressor(SoftCompressor):
    """One soft token per passage (xRAG, arXiv 2405.13792), for ragzip's local generator.

    Args:
        config: An :class:`XRAGConfig`.
        token_counter: Counts ``tokens_before`` (the generator's, once bound).
        store: Where the soft tokens go (the generator's, once bound).
        projector: An already loaded :class:`XRAGProjector` (instead of ``config.artifact``).
        encoder: An already loaded passage encoder (instead of the artifact's embedder).

    Example:
        >>> from ragzip.generation import HFGenerator
        >>> generator = HFGenerator()  # doctest: +SKIP
        >>> xrag = XRAGCompressor()
        >>> xrag.bind(generator)  # doctest: +SKIP
        >>> ctx = xrag.compress("Who wrote Hamlet?", ["Hamlet is a tragedy by William Shakespeare."])  # doctest: +SKIP
        >>> generator.answer("Who wrote Hamlet?", ctx).text  # doctest: +SKIP
    """

    name = "xrag"
    config_class = XRAGConfig
    unbound_device = "cpu"  # unbound, the small projector and embedder run on the CPU

    def __init__(
        self,
        config: XRAGConfig | None = None,
        *,
        token_counter: Any = None,
        store: Any = None,
        projector: XRAGProjector | None = None,
        encoder: PassageEncoder | None = None,
    ) -> None:
        super().__init__(config, token_counter=token_counter, store=store)
        self.config: XRAGConfig
        self._projector = projector
        self._encoder = encoder
        self._encoder_checked = False
        if projector is not None:
            self._check_embedder_name(projector)

    # ---------------------------------------------------------------------------------------------- lazy members
    @property
    def projector(self) -> XRAGProjector:
        """The trained projector (loaded from ``config.artifact`` on first use)."""
        if self._projector is None:
            with lazy_lock(self):  # two threads on a cold compressor load it once
                if self._projector is None:
                    projector = XRAGProjector.from_pretrained(self.config.artifact, embedder=self.config.embedder)
                    self._check_embedder_name(projector)
                    self._projector = projector.to(self.device)
        return self._projector

    @property
    def embedder_name(self) -> str:
        """The embedder whose vectors the projector reads."""
        return self.config.embedder or self.projector.config.embedder

    @property
    def encoder(self) -> PassageEncoder:
        """The passage encoder used to (re-)encode passages, loaded and checked on first use.

        It is checked against what the projector was trained on: width, pooling, normalisation, and the model the
        artifact recorded.
        """
        if not self._encoder_checked:
            with lazy_lock(self):
                if not self._encoder_checked:
                    projector = self.projector
                    encoder = self._encoder or load_encoder(projector.config, self.embedder_name,
                                                            device=self.device)
                    check_encoder(encoder, projector.config, projector.bases,
                                  where=f"{WHERE} (artifact {self.config.artifact!r})")
                    self._encoder, self._encoder_checked = encoder, True
        assert self._encoder is not None
        return self._encoder

    def _check_embedder_name(self, projector: XRAGProjector) -> None:
        trained = projector.config.embedder
        if self.config.embedder is not None and not same_model(self.config.embedder, trained):
            raise ConfigError(
                f"{WHERE}.embedder = {self.config.embedder!r} does not belong with the projector in artifact "
                f"{self.config.artifact!r}, which was trained on {trained!r} ({projector.config.embedder_dim}-d). "
                f"Set `embedder: {trained}` (or leave it empty), or train a projector for {self.config.embedder!r} "
                f"with `ragzip train xrag --embedder {self.config.embedder} --out DIR` and set `artifact: DIR`."
            )

    # ----------------------------------------------------------------------------------------------- binding
    def _trained_space(self) -> str:
        cfg = self.projector.config
        return f"{cfg.generator}|d={cfg.generator_hidden}"

    def _space_mismatch(self, generator: str | None, width: int) -> str | None:
        cfg = self.projector.config
        if width == cfg.generator_hidden and same_model(generator, cfg.generator):
            return None
        return (f"the xrag projector in artifact {self.config.artifact!r} was trained for generator {cfg.generator!r} "
                f"(hidden size {cfg.generator_hidden}), but it is bound to {generator!r} (hidden size {width}). "
                f"Use generator model {cfg.generator!r}, or train a projector for {generator!r} with "
                f"`ragzip train xrag --generator {generator} --out DIR` and set `artifact: DIR`.")

    def _check_generator_model(self, model: Any, tokenizer: Any, generator: str | None) -> None:
        check_generator(self.projector, str(generator), model, tokenizer,
                        where=f"{WHERE} (artifact {self.config.artifact!r})")

    def _to_device(self, device: str) -> None:
        self._projector = self.projector.to(device)

    # ---------------------------------------------------------------------------------------------- compression
    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]

    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        for query_passages in passages:
            if len(query_passages) > self.config.max_passages:
                raise InputError(
                    f"xrag got {len(query_passages)} passages for one question, more than max_passages="
                    f"{self.config.max_passages}. Retrieve fewer (top_k) or raise `max_passages` in the xrag config "
                    "(the shipped projector was trained on 1-3 passages per question)."
                )
        flat = [p for query_passages in passages for p in query_passages]
        if not flat:
            return [self.context(q, []) for q in queries]
        embeddings, sources = self._embeddings(flat)
        with torch.no_grad():  # not inference_mode: stored vectors must stay ordinary tensors
            weight = next(self.projector.parameters())
            soft = self.projector(torch.from_numpy(embeddings).to(weight.device, weight.dtype))  # (n, d_gen)
        if not torch.isfinite(soft).all():
            raise SoftTokenError("the xrag projector produced NaN or inf soft tokens; the artifact is corrupt. "
                                 "Re-train it with `ragzip train xrag` or use `artifact: default`.")
        counts = self.token_counter.count_many([p.text for p in flat])
        results: list[PassageResult] = []
        # All of the batch's soft tokens or none: pinned until the generator reads them (or the owner releases them).
        segments = self.emit([soft[i:i + 1] for i in range(len(flat))])
        for i, (passage, segment) in enumerate(zip(flat, segments, strict=True)):
            title = str(passage.metadata.get("title", ""))
            text = self.config.context_template.format(soft=segment.placeholder, title=title)
            around = self.config.context_template.format(soft="", title=title)
            results.append(PassageResult(
                passage, text, "soft", reason="one soft token from the passage's retriever embedding",
                tokens_before=counts[i], tokens_after=1 + self.token_counter.count(around), soft=(segment,),
                extra={"embedding": sources[i], "soft_norm": round(float(soft[i].norm()), 4)},
            ))
        out, start = [], 0
        for query, query_passages in zip(queries, passages, strict=True):
            out.append(self.context(query, results[start:start + len(query_passages)]))
            start += len(query_passages)
        return out

    def _embeddings(self, passages: list[Passage]) -> tuple[np.ndarray, list[str]]:
        """``(n, embedder_dim)`` vectors: reused from the index where they fit, re-encoded where they do not."""
        cfg = self.projector.config
        rows: list[np.ndarray | None] = []
        sources: list[str] = []
        todo: list[int] = []
        for i, passage in enumerate(passages):
            vector, why = self._reusable(passage)
            rows.append(vector)
            if vector is None:
                if not self.config.reencode:
                    raise InputError(
                        f"passage {passage.id!r} {why}, and {WHERE}.reencode is false. Pass passages from an index "
                        f"built with {self.embedder_name!r}, or set `reencode: true` to embed them here."
                    )
                todo.append(i)
                sources.append("encoded")
            else:
                sources.append("index")
        if todo:
            logger.debug("xrag: encoding %d of %d passages with %s", len(todo), len(passages), self.embedder_name)
            try:
                encoder = self.encoder
            except ArtifactError:  # loaded, but not the embedder the projector was trained on: its own message
                raise
            except ModelNotFoundError as err:
                first = passages[todo[0]]
                raise ModelNotFoundError(
                    f"passage {first.id!r} needs embedding with {self.embedder_name!r} (its own embedding is missing "
                    f"or from another embedder), but that embedder cannot be loaded: {err} Install it, or pass "
                    f"passages that carry embeddings from an index built with {self.embedder_name!r}."
                ) from None
            encoded = np.asarray(encoder.encode([passages[i].text for i in todo]), dtype=np.float32)
            for row, i in enumerate(todo):
                rows[i] = encoded[row]
        matrix = np.stack([r for r in rows if r is not None]).astype(np.float32)  # (n, d_emb)
        assert matrix.shape == (len(passages), cfg.embedder_dim), matrix.shape
        return matrix, sources

    def _reusable(self, passage: Passage) -> tuple[np.ndarray | None, str]:
        """The passage's own embedding when the projector can read it, else ``(None, why not)``."""
        vector = passage.embedding
        if vector is None:
            return None, "has no embedding"
        cfg = self.projector.config
        source = passage.metadata.get(EMBEDDER_KEY)
        if not np.isfinite(vector).all():
            raise InputError(f"passage {passage.id!r} has an embedding with NaN or inf values; the index that "
                             "produced it is corrupt. Rebuild the index, or drop the embedding to re-encode the text.")
        if source is None and vector.shape[0] != cfg.embedder_dim:
            return None, f"has a {vector.shape[0]}-d embedding, not the {cfg.embedder_dim}-d one of {self.embedder_name!r}"
        if source is None:
            # A vector of the right width from another embedder (e.g. a `hash:384` index, or a framework's node
            # embedding) would feed the projector garbage with no error: only vectors whose embedder is named (ragzip's
            # FAISS index names it on every hit) are reused.
            return None, (f"has an embedding of unknown origin (no {EMBEDDER_KEY!r} in its metadata naming the "
                          "embedder that made it)")
        if not same_model(str(source), self.embedder_name):
            return None, f"was embedded by {str(source)[:100]!r}, not {self.embedder_name!r}"
        if vector.shape[0] != cfg.embedder_dim:
            if source is not None:
                raise InputError(
                    f"passage {passage.id!r} says its embedding comes from {source!r} but it has {vector.shape[0]} "
                    f"dimensions, not {cfg.embedder_dim}. The index is inconsistent: rebuild it with "
                    f"{self.embedder_name!r}."
                )
            return None, f"has a {vector.shape[0]}-d embedding, not the {cfg.embedder_dim}-d one of {self.embedder_name!r}"
        norm = float(np.linalg.norm(vector))
        unit = math.isclose(norm, 1.0, abs_tol=NORM_TOLERANCE)
        if cfg.normalize and not unit:
            if source is None:
                return None, f"has an embedding of norm {norm:.3f}, not the unit vectors of {self.embedder_name!r}"
            vector = vector / max(norm, 1e-12)
        if not cfg.normalize and unit:  # an L2-normalised index (ragzip's FAISS) cannot feed a raw-vector projector
            return None, f"has a unit-norm embedding, but the projector reads raw {self.embedder_name!r} vectors"
        return np.asarray(vector, dtype=np.float32), ""
