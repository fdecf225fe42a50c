"""The chunk-embedding cache: REFRAG's chunk vectors, computed at index time and stored beside the FAISS index.

A cache lives in ``<index>/refrag-<encoder>-k<k>/``: ``meta.json`` (encoder, its fingerprint, k, the decoder tokenizer,
the dimension, the count) plus ``keys.npy`` and ``vectors.npy``. Each chunk is keyed by the SHA-256 of its decoder
token ids, so any passage whose chunks were seen at index time pays only for the decoder at query time. The vectors
are the encoder's pooled outputs (before the projector), which is why the fingerprint of the trained encoder layers is
recorded: a cache written by another encoder, another k, another decoder tokenizer or another artifact is refused
with an error that says how to rebuild it, never mixed with this model's vectors.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragzip import __version__
from ragzip.config_utils import from_dict
from ragzip.errors import ConfigError, IndexCorruptError
from ragzip.fsutil import atomic_folder, sha256_file
from ragzip.plugins.refrag.config import RefragConfig
from ragzip.types import Passage

if TYPE_CHECKING:
    from ragzip.plugins.refrag.compressor import RefragCompressor

logger = logging.getLogger(__name__)

FORMAT = "ragzip-refrag-chunk-cache"
FORMAT_VERSION = 2  # 2: sha256 and size of keys.npy and vectors.npy in meta.json (1 had none; still read, with a warning)
META_FILE = "meta.json"
KEYS_FILE = "keys.npy"
VECTORS_FILE = "vectors.npy"


class CacheMismatchError(ConfigError):
    """A chunk-embedding cache was built for another encoder, k, decoder tokenizer or artifact."""


class CacheCorruptError(IndexCorruptError):
    """A chunk-embedding cache's files are unreadable, truncated or altered (its checksums do not match)."""


REBUILD = ("Rebuild it with `ragzip index --refrag` (or `build_refrag_cache(retriever, index_path, config)`), or set "
           "`cache: ''` to encode chunks on the fly.")


def cache_dirname(encoder: str, k: int) -> str:
    """``refrag-<encoder slug>-k<k>``: the cache folder's name inside an index folder."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", encoder).strip("-").lower() or "encoder"
    return f"refrag-{slug}-k{k}"


@dataclass(frozen=True)
class CacheSpec:
    """What a cache must have been built with to be usable by a compressor."""

    encoder: str
    fingerprint: str
    k: int
    tokenizer: str
    dim: int

    def as_meta(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "encoder_fingerprint": self.fingerprint, "k": self.k,
                "tokenizer": self.tokenizer, "dim": self.dim}


class ChunkCache:
    """A loaded chunk-embedding cache: ``key -> vector``.

    Use :meth:`open` to load and validate one; :func:`build_refrag_cache` to write one.
    """

    def __init__(self, path: Path, keys: np.ndarray, vectors: np.ndarray, meta: Mapping[str, Any]) -> None:
        self.path = path
        self.meta = dict(meta)
        self.vectors = vectors
        self._row = {bytes(key).decode("ascii"): i for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._row)

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.path)!r}, {len(self)} chunks, k={self.meta.get('k')})"

    def lookup(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each key, or ``None`` where the chunk was not cached."""
        rows = [self._row.get(key) for key in keys]
        return [None if r is None else self.vectors[r] for r in rows]

    @staticmethod
    def locate(path: str | Path, spec: CacheSpec) -> Path:
        """The cache folder ``path`` names: the folder itself, or ``<index>/refrag-<encoder>-k<k>/`` inside an index.

        Raises:
            CacheMismatchError: ``path`` is an index folder without a cache for this encoder and k.
            ConfigError: ``path`` does not exist.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"REFRAG chunk cache {str(path)!r} does not exist. Build it with `ragzip index --refrag` "
                              "(or `build_refrag_cache(retriever, index_path)`), or set `cache: ''` to encode chunks "
                              "on the fly.")
        if (folder / META_FILE).is_file() and (_is_cache_meta(folder / META_FILE) or (folder / KEYS_FILE).is_file()):
            return folder  # a cache folder (a damaged meta.json is reported by open, not taken for an index)
        wanted = folder / cache_dirname(spec.encoder, spec.k)
        if (wanted / META_FILE).is_file():
            return wanted
        others = sorted(p.name for p in folder.glob("refrag-*") if (p / META_FILE).is_file())
        found = f" (it has {', '.join(others)})" if others else ""
        raise CacheMismatchError(
            f"{str(folder)!r} has no REFRAG chunk cache for encoder={spec.encoder!r}, k={spec.k}{found}. Build one "
            f"with `build_refrag_cache(retriever, {str(folder)!r}, {{'k': {spec.k}}})` (or `ragzip index --refrag`), "
            "or set `cache: ''` to encode chunks on the fly."
        )

    @classmethod
    def open(cls, path: str | Path, spec: CacheSpec) -> ChunkCache:
        """Load the cache at ``path`` (see :meth:`locate`) and check it was built with ``spec``.

        Raises:
            CacheMismatchError: it was built with another encoder, k, decoder tokenizer, artifact or dimension.
        """
        folder = cls.locate(path, spec)
        where = f"REFRAG chunk cache {str(folder)!r}"
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise CacheCorruptError(f"{where}: {META_FILE} is unreadable ({type(err).__name__}: {str(err)[:200]}). "
                                    f"{REBUILD}") from None
        check_meta(meta, spec, folder)
        files = meta.get("files")
        if isinstance(files, dict):
            for name in (KEYS_FILE, VECTORS_FILE):
                want = files.get(name) or {}
                fpath = folder / name
                if not fpath.is_file():
                    raise CacheCorruptError(f"{where}: {name} is missing. {REBUILD}")
                digest = sha256_file(fpath)
                if digest != want.get("sha256"):
                    raise CacheCorruptError(
                        f"{where}: {name} is corrupted: its sha256 {digest[:16]}... ({fpath.stat().st_size} bytes) does "
                        f"not match {META_FILE} ({str(want.get('sha256'))[:16]}..., {want.get('bytes')} bytes); it "
                        f"was truncated or overwritten. {REBUILD}")
        else:
            logger.warning("%s has no checksums (written by an earlier ragzip): its files cannot be verified. %s",
                           where, REBUILD)
        try:
            keys = np.load(folder / KEYS_FILE, allow_pickle=False)
            vectors = np.load(folder / VECTORS_FILE, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            raise CacheCorruptError(f"{where}: its arrays are unreadable ({type(err).__name__}: {str(err)[:200]}). "
                                    f"{REBUILD}") from None
        if len(keys) != len(vectors) or vectors.ndim != 2 or vectors.shape[1] != spec.dim \
                or len(keys) != meta.get("count", len(keys)):
            raise CacheCorruptError(f"{where} is inconsistent ({len(keys)} keys, vectors {tuple(vectors.shape)}, "
                                    f"{META_FILE} count {meta.get('count')}). {REBUILD}")
        return cls(folder, keys, vectors, meta)


def _is_cache_meta(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(data, dict) and data.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def check_meta(meta: Mapping[str, Any], spec: CacheSpec, folder: Path) -> None:
    """Refuse a cache whose build settings differ from ``spec``; the error names each difference and the fix."""
    if meta.get("format") != FORMAT or meta.get("format_version") not in (1, FORMAT_VERSION):
        raise CacheMismatchError(f"{str(folder)!r} is not a REFRAG chunk cache of format version {FORMAT_VERSION}; "
                                 "rebuild it with `ragzip index --refrag`.")
    labels = {"encoder": "encoder", "k": "k", "tokenizer": "decoder tokenizer",
              "encoder_fingerprint": "encoder weights (artifact)", "dim": "dim"}
    diffs = [f"{label} {meta.get(key)!r} (this compressor: {spec.as_meta()[key]!r})"
             for key, label in labels.items() if meta.get(key) != spec.as_meta()[key]]
    if diffs:
        raise CacheMismatchError(
            f"REFRAG chunk cache {str(folder)!r} was built with another setup: {'; '.join(diffs)}. Its vectors cannot "
            "be mixed with this compressor's. Rebuild it for this configuration (`ragzip index --refrag`, or "
            "`build_refrag_cache(retriever, index_path, config)`), point `cache` at a matching one, or set `cache: ''`."
        )


def build_refrag_cache(
    retriever: Any,
    index_path: str | Path,
    config: RefragConfig | Mapping[str, Any] | None = None,
    *,
    compressor: RefragCompressor | None = None,
    generator: Any = None,
) -> Path:
    """Encode every chunk of an index's passages and store the vectors beside the index (``ragzip index --refrag``).

    Args:
        retriever: A :class:`~ragzip.retrieval.FaissRetriever` (its ``passages``), or any iterable of passages/texts.
        index_path: The index folder; the cache goes into ``<index_path>/refrag-<encoder>-k<k>/``.
        config: The ``refrag`` compressor config (a :class:`RefragConfig` or a dict without ``type``); the defaults
            when ``None``. Its ``k``, artifact and generator decide the chunks and vectors.
        compressor: An already built compressor to use instead of ``config``.
        generator: The generator the compressor will be bound to (its tokenizer cuts the chunks).

    Returns:
        The cache folder. An existing cache there built with another artifact is rebuilt (a warning says so).

    Example:
        >>> retriever.save("index")  # doctest: +SKIP
        >>> build_refrag_cache(retriever, "index", {"k": 16})  # doctest: +SKIP
        PosixPath('index/refrag-embedded-minilm-k16')
    """
    from ragzip.plugins.refrag.compressor import RefragCompressor  # local: that module imports this one (circle)

    if compressor is None:
        if config is None or isinstance(config, RefragConfig):
            cfg = config or RefragConfig()
        else:
            data = {key: value for key, value in dict(config).items() if key != "type"}
            cfg = from_dict(RefragConfig, data, where="compressor[refrag]")
        compressor = RefragCompressor(cfg)
    if generator is not None:
        compressor.bind(generator)
    passages = getattr(retriever, "passages", retriever)
    texts = [p.text if isinstance(p, Passage) else str(p) for p in passages]
    spec = compressor.cache_spec()
    target = Path(index_path).expanduser() / cache_dirname(spec.encoder, spec.k)
    if (target / META_FILE).is_file():
        try:
            old = json.loads((target / META_FILE).read_text(encoding="utf-8"))
            check_meta(old, spec, target)
        except (CacheMismatchError, ValueError, AttributeError) as err:
            logger.warning("rebuilding %s: %s", target, str(err)[:300])

    start = time.perf_counter()
    keys: list[str] = []
    chunk_texts: list[str] = []
    seen: set[str] = set()
    for text in texts:
        for chunk in compressor.chunk(text):
            if chunk.key not in seen:
                seen.add(chunk.key)
                keys.append(chunk.key)
                chunk_texts.append(chunk.text)
    vectors = compressor.encode_texts(chunk_texts)  # (n, H)
    write_cache(target, keys, vectors, {**spec.as_meta(), "artifact": compressor.config.artifact,
                                        "passages": len(texts), "build_s": round(time.perf_counter() - start, 3)})
    logger.info("REFRAG chunk cache: %d chunks of %d passages in %s (%.1f s)", len(keys), len(texts), target,
                time.perf_counter() - start)
    return target


def write_cache(target: Path, keys: Sequence[str], vectors: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write a cache folder atomically (temporary folder, then rename over any old one)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), -1)  # (n, H)
    with atomic_folder(target) as tmp:
        np.save(tmp / KEYS_FILE, np.array(list(keys), dtype="S32"), allow_pickle=False)
        np.save(tmp / VECTORS_FILE, vectors, allow_pickle=False)
        files = {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                 for name in (KEYS_FILE, VECTORS_FILE)}
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "count": len(keys),
                "ragzip_version": __version__, "files": files}
        (tmp / META_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
