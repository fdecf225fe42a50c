"""Passage and query embeddings: one :class:`Embedder` over a sentence-transformers model, vectors L2-normalised.

The same embedder must embed the passages of an index and the queries that search it; a saved index records the
embedder's ``name`` (its spec string) and ``dim``, and loading checks both.

Two kinds of spec:

- a model spec that :func:`ragzip.models.resolve` understands (``embedded:minilm``, a Hugging Face id, a local
  sentence-transformers folder), loaded with :func:`ragzip.models.load_sentence_transformer`;
- ``hash:<dim>`` (e.g. ``hash:256``): :class:`HashEmbeddingModel`, deterministic feature hashing of lower-cased words.
  It needs no model and no network and is meant for tests and smoke runs; it matches words, not meaning.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragzip.errors import ConfigError, InputError
from ragzip.models import infer_device, load_sentence_transformer

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
HASH_PREFIX = "hash:"


class HashEmbeddingModel:
    """A tiny deterministic stand-in for a sentence-transformers model: hashed bag of words (signed feature hashing).

    Each lower-cased word adds +-1 at a position chosen by its BLAKE2b hash, so texts that share words get a positive
    cosine similarity. Same text, same vector, in every process. Not a semantic model: use it for tests and plumbing.

    Args:
        dim: The vectors' width, at least 2.

    Raises:
        ConfigError: ``dim`` is not an integer >= 2.

    Example:
        >>> model = HashEmbeddingModel(dim=16)
        >>> model.encode(["a b", "a b"]).shape
        (2, 16)
    """

    def __init__(self, dim: int = 256) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"hash embedder dim = {dim!r} must be an integer >= 2, e.g. `hash:256`.")
        self.dim = dim
        self.max_seq_length: int | None = None

    def get_embedding_dimension(self) -> int:
        """The vectors' width, ``dim`` (the sentence-transformers method of that name)."""
        return self.dim

    def encode(self, sentences: Sequence[str], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """Embed ``sentences`` as ``(len(sentences), dim)`` float32 rows, not normalised.

        ``batch_size`` and other keywords are accepted for sentence-transformers compatibility and ignored.
        """
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for row, text in enumerate(sentences):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        return out


def _model_dim(model: Any) -> int:
    """The output dimension of a sentence-transformers-like model (asks it, else embeds one probe text)."""
    for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        getter = getattr(model, attr, None)
        if callable(getter):
            dim = getter()
            if dim:
                return int(dim)
    return int(np.asarray(model.encode(["dimension probe"])).shape[-1])


def _hash_spec_dim(spec: str) -> int:
    tail = spec[len(HASH_PREFIX):] or "256"
    if not tail.isdigit():
        raise ConfigError(f"embedder {spec!r} is not a valid hash spec; write `hash:<dim>` with an integer dim, "
                          "e.g. `hash:256`.")
    return int(tail)


class Embedder:
    """Embeds passages and queries into L2-normalised float32 vectors (inner product = cosine similarity).

    Args:
        spec: The model: ``embedded:minilm`` (default), a Hugging Face id, a local sentence-transformers folder, or
            ``hash:<dim>`` for the model-free hashing stand-in. Recorded as :attr:`name` in saved indexes.
        device: ``cpu``, ``cuda``, ... ; inferred when ``None`` (a GPU when torch sees one).
        batch_size: Texts per forward pass.
        model: An already loaded model to use instead of loading ``spec`` (tests inject fakes here). It needs
            ``encode(texts, batch_size=..., **kwargs) -> array (n, dim)`` and, ideally, ``get_embedding_dimension()``.

    Example:
        >>> embedder = Embedder("hash:64")
        >>> embedder.encode(["Paris is in France.", "Rome is in Italy."]).shape
        (2, 64)
    """

    def __init__(
        self,
        spec: str = "embedded:minilm",
        *,
        device: str | None = None,
        batch_size: int = 64,
        model: Any = None,
    ) -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"embedder = {spec!r} must be a model spec such as 'embedded:minilm', a Hugging Face id, "
                              "a local folder, or 'hash:256'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"embedder batch_size = {batch_size!r} must be a positive integer, e.g. 64.")
        self.name = spec
        self.batch_size = batch_size
        if model is None:
            if spec.startswith(HASH_PREFIX):
                model = HashEmbeddingModel(_hash_spec_dim(spec))
                self.device = "cpu"
            else:
                self.device = infer_device(device)
                model = load_sentence_transformer(spec, self.device)
        else:
            self.device = device or "cpu"
        self.model = model
        self.dim = _model_dim(model)
        self.max_seq_length: int | None = getattr(model, "max_seq_length", None)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim})"

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: The texts (a list; a single string is an error, use :meth:`encode_query`).
            batch_size: Overrides the embedder's batch size for this call.

        Returns:
            ``(len(texts), dim)`` float32, each row of unit L2 norm (an all-zero row stays zero).
        """
        if isinstance(texts, (str, bytes)):
            raise InputError("Embedder.encode takes a list of texts, not one string. Wrap it (`[text]`) or use "
                             "`encode_query(text)`.")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text #{i} to embed must be a str, got {type(text).__name__}.")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size or self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=False, show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)  # (n, dim)
        if vectors.shape[1] != self.dim:
            raise InputError(f"embedder {self.name!r} returned vectors of dim {vectors.shape[1]}, expected {self.dim}.")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
        return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query: a ``(dim,)`` float32 unit vector."""
        if not isinstance(text, str):
            raise InputError(f"query must be a str, got {type(text).__name__}.")
        return self.encode([text])[0]
