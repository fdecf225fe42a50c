"""The ``refrag`` compressor: compress -> sense -> expand, delivered as text with soft-token placeholders."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ragzip.compressor import SoftCompressor
from ragzip.errors import ConfigError
from ragzip.models import lazy_lock, load_causal_lm, load_tokenizer
from ragzip.plugins.refrag.cache import CacheSpec, ChunkCache
from ragzip.plugins.refrag.config import RefragConfig
from ragzip.plugins.refrag.modeling import (
    Chunk,
    RefragModel,
    budget,
    chunk_passage,
    policy_scalars,
    roundtrip_exact,
)
from ragzip.types import CompressedContext, Passage, PassageResult, SoftSegment, Unit

logger = logging.getLogger(__name__)


def chunk_nll_scores(decoder: Any, chunked: Sequence[Sequence[Chunk]]) -> list[list[float]]:
    """Mean decoder NLL of each chunk's tokens, the decoder reading each passage alone.

    This is the perplexity heuristic: the chunks the decoder finds hardest to predict carry the most information, so
    they are expanded first. Returns ``scores[passage][chunk]``.
    """
    device = decoder.get_input_embeddings().weight.device
    scores: list[list[float]] = []
    with torch.inference_mode():
        for chunks in chunked:
            ids = [i for c in chunks for i in c.ids]
            if len(ids) < 2:
                scores.append([0.0] * len(chunks))
                continue
            x = torch.tensor([ids], device=device)  # (1, n)
            logits = decoder(input_ids=x).logits[0, :-1].float()  # (n-1, V)
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none").cpu()  # (n-1,)
            nll = torch.cat([nll.new_full((1,), float("nan")), nll])  # (n,): token 0 has no prediction
            row = []
            for c in chunks:
                part = nll[c.token_start:c.token_start + len(c)]
                part = part[~torch.isnan(part)]
                row.append(float(part.mean()) if len(part) else 0.0)
            scores.append(row)
    return scores


def _join(pieces: Sequence[tuple[str, bool]]) -> str:
    """A passage's pieces with one space between a placeholder and its neighbour (text or another placeholder).

    Glued to a word (``1889<<ragzip:soft:…>>``), a placeholder would be part of one long "word", which text splitters
    (LlamaIndex's split at spaces, then newlines, then characters) cut through when it outgrows a chunk, e.g. in text
    without spaces. The generator does not read these spaces (``SoftEntry.pad``).
    """
    out: list[str] = []
    for i, (text, soft) in enumerate(pieces):
        if i and (soft or pieces[i - 1][1]):
            out.append(" ")
        out.append(text)
    return "".join(out)


class RefragCompressor(SoftCompressor):
    """REFRAG (arXiv 2509.01092), re-implemented: chunks encoded to one soft token each, a fraction kept as text.

    Each passage is cut into k-token chunks of the generator's tokens, every chunk is encoded to one vector and
    projected into the generator's input-embedding space, and a policy keeps a fraction ``p`` of the question's chunks
    as raw tokens.

    Each passage comes out as text in which every run of compressed chunks is one placeholder (the store holds its
    vectors, one per chunk) and expanded chunks stay as their exact text, in the original order; one space, which the
    generator does not read, separates each placeholder from its neighbours. ``units`` holds one :class:`~ragzip.Unit`
    per chunk (its policy score; ``kept`` = expanded) and ``tokens_after`` counts a compressed chunk as one position.
    Only ragzip's generator reads the output; bind the compressor to it first.

    Args:
        config: The options; the defaults when ``None``.
        token_counter: Counts context tokens, as for :class:`~ragzip.Compressor`.
        store: The soft-token store, as for :class:`~ragzip.Compressor`.
        model: A trained REFRAG model to use instead of loading ``config.artifact`` (a warning is logged when it was
            trained on another ``k``).
        tokenizer: The generator's tokenizer, to cut chunks with before the compressor is bound.

    Example:
        >>> from ragzip.generation import HFGenerator
        >>> gen = HFGenerator()  # doctest: +SKIP
        >>> refrag = RefragCompressor(RefragConfig(k=16, p=0.25)); refrag.bind(gen)  # doctest: +SKIP
        >>> ctx = refrag.compress("Who designed it?", ["The Eiffel Tower was designed by ..."])  # doctest: +SKIP
        >>> gen.answer("Who designed it?", ctx).text  # doctest: +SKIP
    """

    name = "refrag"
    config_class = RefragConfig

    def __init__(
        self,
        config: RefragConfig | None = None,
        *,
        token_counter: Any = None,
        store: Any = None,
        model: RefragModel | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__(config, token_counter=token_counter, store=store)
        self.config: RefragConfig
        self._model = model
        self._tokenizer = tokenizer
        self._reader: Any = None  # the LoRA-adapted decoder registered with the bound generator (None: no LoRA)
        self._reader_space = ""
        self._cache: ChunkCache | None = None
        self._cache_checked = False
        if model is not None:
            self._check_k(model)

    # ------------------------------------------------------------------------------------------------ components
    @property
    def model(self) -> RefragModel:
        """The trained encoder/projector/policy, loaded from ``config.artifact`` on first use."""
        if self._model is None:
            with lazy_lock(self):  # two threads on a cold compressor load it once
                if self._model is None:
                    model = RefragModel.from_pretrained(self.config.artifact)
                    model.to(self.device)
                    self._check_k(model)
                    self._model = model
        return self._model

    def _check_k(self, model: RefragModel) -> None:
        if model.config.k != self.config.k:
            logger.warning("REFRAG artifact was trained on k=%d chunks but the compressor uses k=%d; chunk vectors "
                           "will be less faithful. Train one for this k with `ragzip train refrag --k %d`.",
                           model.config.k, self.config.k, self.config.k)

    @property
    def tokenizer(self) -> Any:
        """The generator's tokenizer: chunks are cut in the tokens the decoder reads."""
        if self._tokenizer is None:
            if self.generator is not None:
                self._tokenizer = self.generator.tokenizer
            else:
                self._tokenizer = load_tokenizer(self.config.generator)
        return self._tokenizer

    @property
    def space(self) -> str:
        """The embedding space the soft tokens are made for.

        The generator's (``HFGenerator.space``), or, for an artifact with a decoder LoRA, that space plus the
        adapter's fingerprint (read only by the adapted decoder).
        """
        return self._reader_space or super().space

    @property
    def reader(self) -> Any:
        """The decoder that reads this compressor's soft tokens.

        The bound generator's model, or for an artifact with a decoder LoRA the adapted copy registered with the
        generator (``HFGenerator.add_reader``); unbound, the decoder the config's ``generator`` names (its LoRA
        merged, when there is one).
        """
        if self._reader is not None:
            return self._reader
        return self.generator.model if self.generator is not None else self._load_decoder()

    # ----------------------------------------------------------------------------------------------- binding
    def bind(self, generator: Any) -> None:
        """Write for ``generator``.

        Cuts chunks with its tokenizer, shares its store, checks its embedding width, and registers the adapted decoder
        with it when the artifact has a decoder LoRA.

        Raises:
            SoftTokenError: the artifact projects into an embedding space of another width.
            ArtifactError: the generator's embeddings or tokenizer are not the decoder's the artifact recorded.
            ConfigError: the artifact has a decoder LoRA and the generator cannot register a reader.
        """
        super().bind(generator)
        self._tokenizer = generator.tokenizer
        model_name = getattr(getattr(generator, "config", None), "model", None)
        if model_name:
            self.config.generator = model_name
            if model_name != self.model.config.decoder:
                logger.warning("REFRAG artifact was trained for decoder %r but reads into %r (same width %d); soft "
                               "tokens may mean little to it.", self.model.config.decoder, model_name,
                               self.model.config.decoder_hidden)
        self._reader, self._reader_space = None, ""
        if self.model.decoder_lora is not None:
            self._bind_reader(generator)
        self._cache_checked = False

    def _trained_space(self) -> str:
        base = f"{self.config.generator}|d={self.model.config.decoder_hidden}"
        if self.model.decoder_lora is not None:  # unbound: named once (hashing the adapter per soft token is waste)
            self._reader_space = f"{base}+refrag-lora:{self.model.lora_fingerprint()}"
            return self._reader_space
        return base

    def _space_mismatch(self, generator: str | None, width: int) -> str | None:
        if width == self.model.config.decoder_hidden:
            return None
        return (f"the REFRAG artifact {self.config.artifact!r} projects into a {self.model.config.decoder_hidden}-wide "
                f"embedding space (decoder {self.model.config.decoder!r}), but the generator {generator!r} has "
                f"hidden size {width}. Train an artifact for this generator (`ragzip train refrag --decoder "
                f"{generator}`) or use the generator it was trained for.")

    def _check_generator_model(self, model: Any, tokenizer: Any, generator: str | None) -> None:
        self.model.check_decoder(model, tokenizer, name=str(generator or ""),
                                 where=f"the REFRAG artifact {self.config.artifact!r}")

    def _to_device(self, device: str) -> None:
        self.model.to(device)

    def _bind_reader(self, generator: Any) -> None:
        """Register the LoRA-adapted decoder with ``generator`` for this artifact's soft-token space.

        The adapted decoder is a copy of the generator's model with the LoRA merged into the adapted weights (the
        plain decoder's architecture and cost, so TTFT is unchanged), sharing every other tensor with it. The
        generator keeps reading every other prompt (text compressors, other artifacts) with its own, unchanged model;
        a compressor of the same artifact bound later reuses the copy.
        """
        add_reader = getattr(generator, "add_reader", None)
        if add_reader is None:
            raise ConfigError(f"the REFRAG artifact {self.config.artifact!r} has a decoder LoRA, so its soft tokens "
                              f"must be read by the adapted decoder, but {type(generator).__name__} cannot register "
                              "one (no add_reader). Use ragzip's HFGenerator, or an artifact trained with "
                              "`--decoder-lora 0`.")
        space = f"{generator.space}+refrag-lora:{self.model.lora_fingerprint()}"
        reader = getattr(generator, "readers", {}).get(space)
        if reader is None:
            reader = self.model.reader(generator.model, merge=True,
                                       where=f"the REFRAG artifact {self.config.artifact!r}")
            reader = add_reader(space, reader)
        self._reader, self._reader_space = reader, space

    def cache_spec(self) -> CacheSpec:
        """What a chunk-embedding cache must have been built with for this compressor."""
        model = self.model
        return CacheSpec(encoder=model.config.encoder, fingerprint=model.encoder_fingerprint(), k=self.config.k,
                         tokenizer=self.config.generator, dim=model.config.encoder_hidden)

    @property
    def cache(self) -> ChunkCache | None:
        """The chunk-embedding cache named by ``config.cache`` (validated on first use), or ``None``."""
        if not self._cache_checked:
            self._cache = ChunkCache.open(self.config.cache, self.cache_spec()) if self.config.cache else None
            self._cache_checked = True
        return self._cache

    # ----------------------------------------------------------------------------------------------- the steps
    def chunk(self, text: str) -> list[Chunk]:
        """Cut ``text`` into k-token chunks of the generator's tokens (the last one may be partial)."""
        return chunk_passage(text, self.tokenizer, self.config.k)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encoder vectors of chunk texts, ``(n, H)`` float32 (what the cache stores)."""
        with torch.inference_mode():
            return self.model.encode(list(texts), batch_size=self.config.batch_size).float().cpu().numpy()

    def chunk_vectors(self, chunks: Sequence[Chunk]) -> tuple[torch.Tensor, list[bool]]:
        """Encoder vectors of ``chunks`` ``(n, H)``: from the cache where present, encoded otherwise.

        Returns the vectors and, per chunk, whether it came from the cache.
        """
        cache = self.cache
        found = list(cache.lookup([c.key for c in chunks])) if cache is not None else [None] * len(chunks)
        cached = [v is not None for v in found]
        missing: dict[str, str] = {}
        for c, v in zip(chunks, found):
            if v is None:
                missing.setdefault(c.key, c.text)
        if missing:
            encoded = dict(zip(missing, self.encode_texts(list(missing.values()))))
            found = [encoded[c.key] if v is None else v for c, v in zip(chunks, found)]
        if not found:
            return torch.zeros(0, self.model.config.encoder_hidden), cached
        return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in found])), cached  # (n, H)

    def _perplexity_scores(self, chunked: list[list[Chunk]]) -> list[list[float]]:
        return chunk_nll_scores(self.reader, chunked)  # the decoder that will read them

    def _load_decoder(self) -> Any:
        decoder = load_causal_lm(self.config.generator, self.device)[0]
        if self.model.decoder_lora is not None:
            if self._reader is None:
                self._reader = self.model.reader(decoder, merge=True, where=f"the REFRAG artifact "
                                                                             f"{self.config.artifact!r}")
            return self._reader
        return decoder

    def _input_embeddings(self) -> torch.nn.Embedding:
        if self.generator is not None:
            return self.generator.input_embeddings()
        return self._load_decoder().get_input_embeddings()

    def _scores(self, query: str, passages: list[Passage], chunked: list[list[Chunk]], c: torch.Tensor,
                q: torch.Tensor | None) -> list[float | None]:
        """One expansion score per chunk of the question (higher = expand first); ``None`` for policy 'none'."""
        n = sum(len(chunks) for chunks in chunked)
        policy = self.config.policy
        if policy == "none":
            return [None] * n
        if policy == "random":
            rng = random.Random(f"{self.config.seed}:{query}")
            return [rng.random() for _ in range(n)]
        if policy == "perplexity":
            return [s for row in self._perplexity_scores(chunked) for s in row]
        assert q is not None
        positions = []
        index = 0
        for rank, chunks in enumerate(chunked):
            for chunk in chunks:
                positions.append((index, n, rank, len(chunk)))
                index += 1
        with torch.inference_mode():
            logits = self.model.policy_logits(c.to(self.model.device), q.to(self.model.device),
                                              policy_scalars(positions, self.config.k))
        return [float(v) for v in logits.cpu()]

    # --------------------------------------------------------------------------------------------- compression
    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        start = time.perf_counter()
        chunked = [[self.chunk(p.text) for p in items] for items in passages]
        flat = [c for per_query in chunked for chunks in per_query for c in chunks]
        vectors, cached = self.chunk_vectors(flat)  # (N, H)
        queries_vec = None
        if self.config.policy == "learned":
            with torch.inference_mode():
                queries_vec = self.model.encode(queries).cpu()  # (Q, H)
        encode_s = (time.perf_counter() - start) / max(len(queries), 1)
        outputs = []
        offset = 0
        for i, (query, items) in enumerate(zip(queries, passages)):
            n = sum(len(chunks) for chunks in chunked[i])
            out = self._compress_one(query, items, chunked[i], vectors[offset:offset + n],
                                     None if queries_vec is None else queries_vec[i])
            extra = {**out.extra, "cached_chunks": sum(cached[offset:offset + n]), "encode_s": round(encode_s, 4)}
            outputs.append(self.context(query, out.results, extra=extra))
            offset += n
        return outputs

    def _compress_one(self, query: str, passages: list[Passage], chunked: list[list[Chunk]], c: torch.Tensor,
                      q: torch.Tensor | None) -> CompressedContext:
        k, policy = self.config.k, self.config.policy
        n = len(c)
        total_tokens = sum(len(ch) for chunks in chunked for ch in chunks)
        if 0 < total_tokens < k:
            logger.warning("k=%d is larger than the whole context (%d tokens): each passage is one partial chunk. "
                           "Use a smaller k to compress short contexts.", k, total_tokens)
        scores = self._scores(query, passages, chunked, c, q)
        m = 0 if policy == "none" else budget(self.config.p, n)
        order = sorted(range(n), key=lambda j: (-(scores[j] or 0.0), j))
        expanded = set(order[:m])
        with torch.inference_mode():
            projected = self.model.project(c.to(self.model.device)).float().cpu() if n else c  # (n, d)
        results = []
        offset = 0
        for passage, chunks in zip(passages, chunked):
            flags = [offset + j in expanded for j in range(len(chunks))]
            results.append(self._passage_result(passage, chunks, flags, projected[offset:offset + len(chunks)],
                                                scores[offset:offset + len(chunks)]))
            offset += len(chunks)
        extra = {"k": k, "p": self.config.p, "policy": policy, "chunks": n, "expanded_chunks": m}
        return self.context(query, results, extra=extra)

    def _passage_result(self, passage: Passage, chunks: list[Chunk], expanded: list[bool], projected: torch.Tensor,
                        scores: list[float | None]) -> PassageResult:
        k = self.config.k
        n_tokens = sum(len(ch) for ch in chunks)
        pieces: list[tuple[str, bool]] = []  # (text, is a placeholder), in passage order
        segments: list[SoftSegment] = []
        inexact = 0
        j = 0
        while j < len(chunks):
            end = j
            while end < len(chunks) and expanded[end] == expanded[j]:
                end += 1
            run = chunks[j:end]
            # A placeholder owns the separating space after it (when a piece follows) and the one before it when
            # text precedes it: split_prompt drops exactly those, so the generator reads the unpadded passage.
            pad = (bool(pieces) and not pieces[-1][1], end < len(chunks))
            if expanded[j]:
                text = passage.text[run[0].char_start:run[-1].char_end]
                ids = [i for ch in run for i in ch.ids]
                if roundtrip_exact(self.tokenizer, text, ids):
                    pieces.append((text, False))
                else:  # re-tokenizing this text alone would change the ids: send the exact token embeddings instead
                    inexact += 1
                    with torch.inference_mode():
                        table = self._input_embeddings()
                        vecs = table(torch.tensor(ids, device=table.weight.device))  # (len, d)
                    pieces.append((self._put(vecs, segments, pad), True))
            else:
                pieces.append((self._put(projected[j:end], segments, pad), True))  # (run, d): one vector per chunk
            j = end
        n_expanded = sum(expanded)
        n_exp_tokens = sum(len(ch) for ch, e in zip(chunks, expanded) if e)
        units = tuple(Unit(ch.index, ch.text, s, e) for ch, s, e in zip(chunks, scores, expanded))
        reason = (f"{len(chunks)} chunk(s) of k={k}: {n_expanded} expanded as raw tokens, "
                  f"{len(chunks) - n_expanded} compressed to one soft token each")
        if len(chunks) == 1 and n_tokens < k:
            reason += f"; the passage has {n_tokens} tokens, fewer than k={k}, so it is one partial chunk"
        elif chunks and len(chunks[-1]) < k:
            reason += f"; the last chunk is partial ({len(chunks[-1])} of {k} tokens)"
        plain = n_expanded == len(chunks) and not segments  # every chunk expanded, all as exact text
        return PassageResult(
            passage, passage.text if plain else _join(pieces), "kept" if plain else "soft", reason=reason,
            units=units, tokens_before=n_tokens, tokens_after=(len(chunks) - n_expanded) + n_exp_tokens,
            soft=tuple(segments),
            extra={"k": k, "chunks": len(chunks), "expanded_chunks": n_expanded,
                   **({"inexact_runs_sent_as_embeddings": inexact} if inexact else {})},
        )

    def _put(self, vectors: torch.Tensor, segments: list[SoftSegment], pad: tuple[bool, bool]) -> str:
        segment = self.emit([vectors], pad=pad)[0]  # (run, d): one placeholder, one position per vector
        segments.append(segment)
        return segment.placeholder

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]
