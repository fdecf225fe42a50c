"""Dense retrieval: a FAISS inner-product index over L2-normalised passage embeddings (cosine similarity).

A saved index is a folder::

    index.faiss      the FAISS index (IndexFlatIP, exact search)
    passages.jsonl   one {"id", "text", "metadata"} per row of the index, in row order
    meta.json        embedder name and dim, count, metric, ragzip/faiss versions, sha256 and size of both files,
                     and the corpus stats (documents read, empty ones skipped, chunking)

Saving writes a temporary folder beside the target and renames it into place, so a crash never leaves a half-written
index. Loading verifies the sha256 of both files first, so a truncated or altered index is an
:class:`~ragzip.IndexCorruptError`, not a wrong answer.

Search returns copies of the stored passages with ``score`` (cosine similarity) and ``embedding`` (the indexed vector,
which xRAG reuses as its input). When torch sees a GPU and faiss was built with GPU support (``ragzip[gpu]``), the
index is searched on the GPU; otherwise on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ragzip._lazy import require
from ragzip.config_utils import check_choice, check_range, from_dict
from ragzip.corpus import Corpus, chunk_passages, load_corpus
from ragzip.embed import Embedder
from ragzip.errors import ConfigError, IndexCorruptError, InputError
from ragzip.fsutil import VersionedFolder, sha256_file
from ragzip.models import EMBEDDED, infer_device
from ragzip.types import Passage, check_query

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.jsonl"
META_FILE = "meta.json"
FORMAT = "ragzip-faiss"
FORMAT_VERSION = 1
METRIC = "inner_product"
_PROGRESS_EVERY = 4096
EMBEDDING_SOURCE_KEY = "embedder"
"""``Passage.metadata`` key of a search hit naming the embedder (spec) that made its ``embedding``."""


@dataclass
class RetrieverConfig:
    """The ``retriever:`` block of a ragzip YAML."""

    type: str = field(default="faiss", metadata={"help": "Retriever kind. Only `faiss` (exact inner-product search)."})
    embedder: str = field(
        default="embedded:minilm",
        metadata={"help": "Embedding model: `embedded:minilm`, a Hugging Face id, a local sentence-transformers folder "
                          "or `hash:<dim>` (model-free, for tests). Must be the one the index was built with."},
    )
    top_k: int = field(default=5, metadata={"help": "Passages retrieved per question (>= 1)."})
    index_path: str | None = field(
        default=None,
        metadata={"help": "Folder of a saved index. Loaded when it exists; otherwise built from `corpus` and saved there."},
    )
    corpus: str | None = field(
        default=None, metadata={"help": "JSONL file ({\"id\", \"text\", ...} a line) or folder of .txt/.md to index."}
    )
    chunk_words: int = field(default=120, metadata={"help": "Words per chunk when indexing `corpus`."})
    chunk_overlap: int = field(default=20, metadata={"help": "Words shared by consecutive chunks (< chunk_words)."})
    device: str | None = field(
        default=None, metadata={"help": "Device for the embedder and index (`cpu`, `cuda`); inferred when unset."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads FAISS may use; unset = torch's thread count (so FAISS and torch do not "
                          "oversubscribe the cores)."},
    )

    def __post_init__(self) -> None:
        where = "retriever"
        check_choice(where, "type", self.type, ("faiss",))
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ConfigError(f"{where}.embedder = {self.embedder!r} must name a model, e.g. 'embedded:minilm'.")
        for name in ("top_k", "chunk_words", "chunk_overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}.{name} = {value!r} must be an integer.")
        check_range(where, "top_k", self.top_k, 1)
        check_range(where, "chunk_words", self.chunk_words, 1)
        if not 0 <= self.chunk_overlap < self.chunk_words:
            raise ConfigError(f"{where}.chunk_overlap = {self.chunk_overlap!r} must lie in [0, chunk_words) = "
                              f"[0, {self.chunk_words}).")
        if self.num_threads is not None:
            check_range(where, "num_threads", self.num_threads, 1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RetrieverConfig:
        """Build from a YAML mapping; unknown keys are errors naming the close match."""
        return from_dict(cls, data, where="retriever")


def _faiss() -> Any:
    return require("faiss")  # lazy: slow to import, and `import ragzip` imports this module


def set_num_threads(num_threads: int | None = None) -> int:
    """Set FAISS's OpenMP thread count (process-wide) and return it.

    ``None`` uses torch's thread count when torch is loaded: both libraries run OpenMP pools, and letting each take every
    core makes them fight over shared CPUs. With ``None``, an explicit ``OMP_NUM_THREADS`` is respected.
    """
    faiss = _faiss()
    if num_threads is None:
        torch = sys.modules.get("torch")  # only when torch is in use: otherwise nothing competes for the cores
        if os.environ.get("OMP_NUM_THREADS") or torch is None:
            return int(faiss.omp_get_max_threads())
        num_threads = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    faiss.omp_set_num_threads(int(num_threads))
    return int(num_threads)


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InputError(f"top_k = {top_k!r} must be a positive integer (passages to return), e.g. 5.")
    return int(top_k)


def _same_embedder(a: str, b: str) -> bool:
    """Embedder specs name the same model (``embedded:minilm`` and its Hugging Face id count as the same)."""
    return EMBEDDED.get(a, a) == EMBEDDED.get(b, b)


def _to_device(index: Any, device: str | None) -> tuple[Any, Any]:
    """The index to search with, and the GPU resources keeping it alive (``None`` on CPU).

    The GPU is used when ``device`` is ``cuda[:n]`` (or ``None`` and torch sees a GPU) and faiss has GPU support.
    """
    faiss = _faiss()
    if device is not None and not device.startswith("cuda"):
        return index, None
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        if device is not None:
            logger.warning("device %r asked for, but this faiss has no GPU support; searching on the CPU "
                           "(install `ragzip[gpu]` for faiss-gpu)", device)
        return index, None
    device = infer_device(device)
    if not device.startswith("cuda"):
        return index, None
    try:  # pragma: no cover - needs faiss-gpu and a GPU
        resources = faiss.StandardGpuResources()
        gpu = int(device.split(":", 1)[1]) if ":" in device else 0
        return faiss.index_cpu_to_gpu(resources, gpu, index), resources
    except Exception as err:  # pragma: no cover - needs faiss-gpu and a GPU
        logger.warning("could not move the FAISS index to %s (%s); searching on the CPU", device, err)
        return index, None


class FaissRetriever:
    """Exact cosine-similarity retrieval over a FAISS ``IndexFlatIP``.

    Build one with :meth:`build` (passages), :meth:`from_corpus` (a file or folder, chunked), :meth:`load` (a saved
    index) or :meth:`from_config` (a ``retriever:`` block).

    Attributes:
        embedder_name: Spec of the embedder that built the index.
        dim: Embedding dimension.
        passages: The indexed passages, in index order (no score, no embedding).
        stats: How the index was built: corpus documents, empty ones skipped, chunking, build time.
        top_k: Default number of passages returned by :meth:`search`.

    Example:
        >>> from ragzip.embed import Embedder
        >>> retriever = FaissRetriever.build([Passage("Paris is the capital of France.", id="paris"),
        ...                                   Passage("Berlin is the capital of Germany.", id="berlin")],
        ...                                  Embedder("hash:256"))
        >>> hit = retriever.search("capital of France", top_k=1)[0]
        >>> hit.id, hit.embedding.shape
        ('paris', (256,))
    """

    def __init__(
        self,
        index: Any,
        passages: Sequence[Passage],
        embedder_name: str,
        *,
        embedder: Embedder | None = None,
        top_k: int = 5,
        device: str | None = None,
        stats: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> None:
        if index.ntotal != len(passages):
            raise IndexCorruptError(f"the FAISS index has {index.ntotal} vectors but there are {len(passages)} "
                                    "passages; rebuild the index.")
        self.embedder_name = embedder_name
        self.dim = int(index.d)
        self.embedder_info: dict[str, Any] = {"name": embedder_name, "dim": self.dim, "normalized": True}
        self.passages = list(passages)
        self.top_k = _check_top_k(top_k)
        self.stats: dict[str, Any] = dict(stats or {})
        self._row = {p.id: i for i, p in enumerate(self.passages)}
        if len(self._row) != len(self.passages):
            raise IndexCorruptError("the index holds passages with duplicate ids; rebuild it from a corpus with "
                                    "unique ids.")
        self._embedder = embedder
        self._device = device
        self._cpu_index = index
        set_num_threads(num_threads)
        self._index, self._gpu_resources = _to_device(index, device)

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"FaissRetriever({len(self)} passages, embedder={self.embedder_name!r}, dim={self.dim})"

    @property
    def embedder(self) -> Embedder:
        """The query embedder (loaded on first use when the index was loaded without one)."""
        if self._embedder is None:
            embedder = Embedder(self.embedder_name, device=self._device)
            _check_embedder(embedder, self.embedder_name, self.dim, "this index")
            self._embedder = embedder
        return self._embedder

    # --- building ---------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        embedder: Embedder,
        *,
        batch_size: int = 64,
        top_k: int = 5,
        device: str | None = None,
        stats: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> FaissRetriever:
        """Embed ``passages`` and index them.

        Args:
            passages: The passages, ids unique. Empty or whitespace-only passages are skipped with a warning and
                counted in ``stats["skipped_empty"]``. Score and embedding of the inputs are ignored.
            embedder: Embeds passages now and queries later.
            batch_size: Passages per embedding batch.
            top_k: Default for :meth:`search`.
            device: Where to search (``cuda`` moves the index to the GPU when faiss supports it).
            stats: Corpus stats to record (from :func:`~ragzip.corpus.load_corpus`).
            num_threads: FAISS threads (see :func:`set_num_threads`).

        Raises:
            InputError: no passages, an item that is not a Passage, or duplicate ids.
        """
        faiss = _faiss()
        if isinstance(passages, (str, bytes, Passage)):
            raise InputError("passages must be a list of Passage, not a single item. Wrap it: `[passage]`.")
        first: dict[str, int] = {}
        for i, p in enumerate(passages):
            if not isinstance(p, Passage):
                raise InputError(f"passage #{i} must be a ragzip.Passage, got {type(p).__name__}; wrap text as "
                                 "`Passage(text, id=...)`.")
            if p.id in first:
                raise InputError(f"duplicate passage id {p.id!r} (#{first[p.id]} and #{i}). An index needs unique "
                                 "ids: deduplicate the passages or give them distinct ids.")
            first[p.id] = i
        stats = dict(stats or {})
        skipped = [p.id for p in passages if not p.text.strip()]
        if skipped:
            logger.warning("skipped %d empty or whitespace-only passage(s): %s%s", len(skipped), skipped[:5],
                           " ..." if len(skipped) > 5 else "")
            stats["skipped_empty"] = stats.get("skipped_empty", 0) + len(skipped)
            stats["skipped_empty_ids"] = (list(stats.get("skipped_empty_ids", [])) + skipped)[:100]
        kept = [replace(p, score=None, embedding=None) for p in passages if p.text.strip()]
        if not kept:
            raise InputError("no passages to index" + (f" ({len(skipped)} given, all empty)" if skipped else "") +
                             ". Give at least one passage with text.")
        _warn_if_truncated(kept, embedder)
        set_num_threads(num_threads)
        start = time.perf_counter()
        index = faiss.IndexFlatIP(embedder.dim)
        for lo in range(0, len(kept), _PROGRESS_EVERY):  # slices only to log progress on large corpora
            index.add(embedder.encode([p.text for p in kept[lo:lo + _PROGRESS_EVERY]], batch_size=batch_size))
            if len(kept) > _PROGRESS_EVERY:
                done = min(lo + _PROGRESS_EVERY, len(kept))
                logger.info("embedded %d/%d passages (%.0f/s)", done, len(kept), done / (time.perf_counter() - start))
        stats.update(passages=len(kept), build_s=round(time.perf_counter() - start, 3))
        logger.info("indexed %d passages with %s (dim %d) in %.2f s", len(kept), embedder.name, embedder.dim,
                    stats["build_s"])
        return cls(index, kept, embedder.name, embedder=embedder, top_k=top_k, device=device, stats=stats,
                   num_threads=num_threads)

    @classmethod
    def from_corpus(
        cls,
        path: str | Path,
        embedder: Embedder,
        *,
        chunk_words: int = 120,
        chunk_overlap: int = 20,
        batch_size: int = 64,
        top_k: int = 5,
        device: str | None = None,
        num_threads: int | None = None,
    ) -> FaissRetriever:
        """Load a corpus (JSONL or folder, see :func:`~ragzip.corpus.load_corpus`), chunk it and index the chunks.

        Chunk ids are ``"<doc id>#<n>"``; each chunk's metadata holds ``doc_id``, ``title`` and ``chunk_index``.
        """
        corpus: Corpus = load_corpus(path)
        chunks = chunk_passages(corpus, chunk_words, chunk_overlap)
        stats = {**corpus.stats.as_dict(), "chunk_words": chunk_words, "chunk_overlap": chunk_overlap,
                 "chunks": len(chunks), "corpus_fingerprint": corpus_fingerprint(path)}
        return cls.build(chunks, embedder, batch_size=batch_size, top_k=top_k, device=device, stats=stats,
                         num_threads=num_threads)

    @classmethod
    def from_config(cls, cfg: RetrieverConfig, embedder: Embedder | None = None) -> FaissRetriever:
        """The retriever a ``retriever:`` block describes.

        Loads ``index_path`` when it exists and is not an empty folder (an incomplete index there is an
        :class:`~ragzip.IndexCorruptError`, never silently rebuilt over); otherwise builds from ``corpus`` (and saves
        to ``index_path`` when given). A saved index is used as it is even if ``corpus`` changed since; a warning says so
        and how to rebuild.

        Raises:
            ConfigError: neither a saved index nor a corpus, or an embedder that differs from ``cfg.embedder``.
        """
        if embedder is not None and not _same_embedder(embedder.name, cfg.embedder):
            raise ConfigError(f"retriever.embedder is {cfg.embedder!r} but the embedder passed in is {embedder.name!r}."
                              " Use one embedder for both: change retriever.embedder or pass the matching Embedder.")
        index_path = Path(cfg.index_path).expanduser() if cfg.index_path else None
        if index_path is not None and index_path.exists() and not (index_path.is_dir() and not any(index_path.iterdir())):
            retriever = cls.load(index_path, embedder=embedder, device=cfg.device, top_k=cfg.top_k,
                                 num_threads=cfg.num_threads, expect_embedder=cfg.embedder)
            if cfg.corpus:
                _warn_if_stale(retriever, index_path, cfg)
            return retriever
        if not cfg.corpus:
            if index_path is not None:
                raise ConfigError(f"retriever.index_path = {cfg.index_path!r} holds no saved index and retriever.corpus "
                                  "is not set. Set retriever.corpus to a JSONL file or folder to build it from, or "
                                  "build it first with `ragzip index --corpus FILE --out DIR`.")
            raise ConfigError("the retriever needs documents: set retriever.corpus (a JSONL file or folder of "
                              ".txt/.md) or retriever.index_path (a saved index).")
        embedder = embedder or Embedder(cfg.embedder, device=cfg.device)
        retriever = cls.from_corpus(cfg.corpus, embedder, chunk_words=cfg.chunk_words, chunk_overlap=cfg.chunk_overlap,
                                    top_k=cfg.top_k, device=cfg.device, num_threads=cfg.num_threads)
        if index_path is not None:
            retriever.save(index_path)
        return retriever

    # --- persistence ------------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the index to folder ``path`` as a new version that readers switch to atomically.

        The folder holds versions in subfolders and a ``CURRENT`` pointer file replaced atomically, so a reader
        (another process loading the index) always finds a complete index; concurrent saves are serialised by a lock
        file; what an interrupted save left is cleaned up by the next one. Anything else in the folder (a REFRAG
        chunk cache, the user's files) is kept: ragzip deletes only files it wrote.

        Raises:
            InputError: ``path`` is a file, or a non-empty folder that is not a ragzip index (by its ``.ragzip``
                marker, or the ``meta.json`` of an index saved by an earlier ragzip), or passage metadata is not
                JSON-serialisable.
        """
        from ragzip import __version__  # local: ragzip/__init__ imports this module (circle)

        target = Path(path).expanduser()
        folder = _versioned(target)

        def claim() -> None:
            if not folder.claimable(also=_legacy_index):
                raise InputError(f"cannot save the index to {str(target)!r}: it exists and is not a ragzip index "
                                 "folder. Choose a new or empty folder, or remove it.")

        claim()  # before taking the lock, so a refused folder gets no lock file
        rows = []
        for p in self.passages:
            try:
                rows.append(json.dumps({"id": p.id, "text": p.text, "metadata": _plain(p.metadata)},
                                       ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError, RecursionError) as err:
                raise InputError(f"passage {p.id!r}: metadata is not JSON-serialisable ({str(err)[:200]}). Keep "
                                 "metadata to strings, finite numbers, lists and dicts.") from None
        legacy = target.is_dir() and _legacy_index(target)
        with folder.new_version(claim=claim) as tmp:
            _faiss().write_index(self._cpu_index, str(tmp / INDEX_FILE))
            with open(tmp / PASSAGES_FILE, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(row + "\n")
            files = {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                     for name in (INDEX_FILE, PASSAGES_FILE)}
            meta = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "embedder": self.embedder_name, "dim": self.dim,
                "count": len(self), "metric": METRIC, "normalized": True, "index_type": "IndexFlatIP",
                "embedder_info": self._embedder_info(),
                "ragzip_version": __version__, "faiss_version": getattr(_faiss(), "__version__", "unknown"),
                "files": files, "stats": self.stats,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if legacy:  # the top-level files of an index saved by an earlier ragzip: the version just written replaces them
            for name in (INDEX_FILE, PASSAGES_FILE, META_FILE):
                (target / name).unlink(missing_ok=True)
        logger.info("saved %d passages to %s", len(self), target)

    def _embedder_info(self) -> dict[str, Any]:
        """What the index records of its embedder (xRAG checks it): name, dim, normalisation, package version."""
        info: dict[str, Any] = {"name": self.embedder_name, "dim": self.dim, "normalized": True}
        embedder = self._embedder
        if embedder is not None:
            for key in ("version", "fingerprint"):
                value = getattr(embedder, key, None)
                if isinstance(value, (str, int)):
                    info[key] = value
        return info

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embedder: Embedder | None = None,
        device: str | None = None,
        top_k: int = 5,
        num_threads: int | None = None,
        expect_embedder: str | None = None,
    ) -> FaissRetriever:
        """Load a saved index, verifying its files against the sha256 in ``meta.json``.

        Args:
            path: The index folder.
            embedder: The query embedder; checked against the index's embedder name and dim. When ``None`` the
                index's own embedder is loaded on first search.
            device: Where to search and embed.
            top_k: Default for :meth:`search`.
            num_threads: FAISS threads.
            expect_embedder: The embedder spec the caller's config names; a different index embedder is an error.

        Raises:
            ConfigError: ``path`` does not exist, or the embedder does not match the index.
            IndexCorruptError: ``meta.json`` missing or unreadable, a file missing, truncated or altered.
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ConfigError(f"no saved index at {str(root)!r} (not a folder). Build one first: "
                              "`ragzip index --corpus FILE --out DIR`.")
        for attempt in range(5):
            folder = index_files(root)
            try:
                return cls._load_folder(folder, root, embedder=embedder, device=device, top_k=top_k,
                                        num_threads=num_threads, expect_embedder=expect_embedder)
            except (IndexCorruptError, OSError) as err:
                # A save switched versions while we read the old one (and removed it): read the new one.
                if attempt < 4 and folder != root and index_files(root) != folder:
                    continue
                if isinstance(err, OSError):
                    raise IndexCorruptError(f"{folder} cannot be read ({type(err).__name__}: {err}). "
                                            "Rebuild it: `ragzip index --corpus FILE --out DIR`.") from None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _load_folder(cls, folder: Path, root: Path, *, embedder: Embedder | None, device: str | None, top_k: int,
                     num_threads: int | None, expect_embedder: str | None) -> FaissRetriever:
        rebuild = ("Rebuild it: `ragzip index --corpus FILE --out DIR`, or "
                   "`FaissRetriever.from_corpus(corpus, embedder).save(DIR)`.")
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise IndexCorruptError(f"{folder} has no {META_FILE}, so it is not a complete ragzip index (an interrupted "
                                    f"copy, or another tool's folder). {rebuild}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            name, dim, count, files = meta["embedder"], int(meta["dim"]), int(meta["count"]), meta["files"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise IndexCorruptError(f"{meta_path} is unreadable ({type(err).__name__}: {str(err)[:200]}). "
                                    f"{rebuild}") from None
        if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise IndexCorruptError(f"{meta_path}: format {str(meta.get('format'))[:80]!r} "
                                    f"v{str(meta.get('format_version'))[:20]} is not "
                                    f"one this ragzip reads ({FORMAT} v{FORMAT_VERSION}); upgrade ragzip or {rebuild}")
        for fname in (INDEX_FILE, PASSAGES_FILE):
            fpath, want = folder / fname, files.get(fname, {}) if isinstance(files, dict) else {}
            if not fpath.is_file():
                raise IndexCorruptError(f"{fpath} is missing. {rebuild}")
            size, digest = fpath.stat().st_size, sha256_file(fpath)
            if digest != want.get("sha256"):
                raise IndexCorruptError(f"{fpath} is corrupted: its sha256 {digest[:16]}... ({size} bytes) does not "
                                        f"match meta.json ({str(want.get('sha256'))[:16]}..., {want.get('bytes')} "
                                        f"bytes); it was truncated or modified. {rebuild}")
        if embedder is not None:
            _check_embedder(embedder, name, dim, str(root))
        if expect_embedder is not None and not _same_embedder(expect_embedder, name):
            raise ConfigError(f"the index at {root} was built with embedder {name!r}, but the config names "
                              f"{expect_embedder!r}. Set retriever.embedder: {name}, or rebuild the index with "
                              f"{expect_embedder!r} (delete {root} and set retriever.corpus).")
        try:
            index = _faiss().read_index(str(folder / INDEX_FILE))
        except RuntimeError as err:
            raise IndexCorruptError(f"{folder / INDEX_FILE} cannot be read by faiss ({str(err).splitlines()[0]}). "
                                    f"{rebuild}") from None
        passages = []
        with open(folder / PASSAGES_FILE, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                try:
                    row = json.loads(line)
                    passages.append(Passage(row["text"], id=row["id"], metadata=row.get("metadata") or {}))
                except (ValueError, KeyError, TypeError) as err:
                    raise IndexCorruptError(f"{folder / PASSAGES_FILE}, line {lineno}: unreadable ({err}). "
                                            f"{rebuild}") from None
        if not (index.ntotal == count == len(passages)) or index.d != dim:
            raise IndexCorruptError(f"{folder} is inconsistent: meta.json says {count} vectors of dim {dim}, the index "
                                    f"has {index.ntotal} of dim {index.d}, passages.jsonl has {len(passages)} rows. "
                                    f"{rebuild}")
        retriever = cls(index, passages, name, embedder=embedder, top_k=top_k, device=device,
                        stats=meta.get("stats") or {}, num_threads=num_threads)
        retriever.embedder_info = dict(meta.get("embedder_info") or {"name": name, "dim": dim,
                                                                     "normalized": bool(meta.get("normalized", True))})
        return retriever

    # --- search -----------------------------------------------------------------------------------------------------

    def search(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The ``top_k`` passages most similar to ``query``, best first.

        Returns copies of the stored passages with ``score`` (cosine similarity) and ``embedding`` (the indexed
        float32 vector); fewer than ``top_k`` when the index is smaller.

        Raises:
            InputError: empty query or ``top_k`` < 1.
        """
        return self.search_batch([query], top_k)[0]

    def search_batch(self, queries: Sequence[str], top_k: int | None = None) -> list[list[Passage]]:
        """:meth:`search` for many queries at once (one embedding batch, one FAISS search)."""
        if isinstance(queries, (str, bytes)):
            raise InputError("search_batch takes a list of queries, not one string. Wrap it (`[query]`) or use "
                             "`search(query)`.")
        k = min(_check_top_k(self.top_k if top_k is None else top_k), len(self))
        queries = [check_query(q) for q in queries]
        if not queries:
            return []
        vectors = self.embedder.encode(queries)  # (n_queries, dim)
        scores, rows = self._index.search(vectors, k)  # (n_queries, k) each
        hits = [[int(r) for r in row if r >= 0] for row in rows]
        flat = sorted({r for row in hits for r in row})
        vectors = self._cpu_index.reconstruct_batch(np.asarray(flat, dtype=np.int64)) if flat else []  # (n_hit, dim)
        stored = dict(zip(flat, vectors, strict=True))
        # Each hit carries the name of the embedder that made its vector (EMBEDDING_SOURCE_KEY), so a consumer such
        # as xRAG can refuse a vector from another embedder instead of trusting any vector of the right width.
        # Rows of -1 (fewer hits than k) can only trail a row, so zip stops at the real hits.
        return [
            [replace(self.passages[r], score=float(s), embedding=stored[r],
                     metadata={**self.passages[r].metadata, EMBEDDING_SOURCE_KEY: self.embedder_name})
             for r, s in zip(row, score_row, strict=False)]
            for row, score_row in zip(hits, scores, strict=True)
        ]

    def embedding(self, passage_id: str) -> np.ndarray:
        """The indexed vector of passage ``passage_id``, ``(dim,)`` float32.

        Raises:
            KeyError: no passage has this id (the message names it).
        """
        row = self._row.get(passage_id)
        if row is None:
            raise KeyError(f"no passage with id {passage_id!r} in this index ({len(self)} passages).")
        return np.asarray(self._cpu_index.reconstruct(row), dtype=np.float32)


def _check_embedder(embedder: Embedder, name: str, dim: int, where: str) -> None:
    if not _same_embedder(embedder.name, name) or embedder.dim != dim:
        raise ConfigError(f"{where} was built with embedder {name!r} (dim {dim}) but the query embedder is "
                          f"{embedder.name!r} (dim {embedder.dim}). Queries must be embedded by the model that embedded "
                          f"the passages: use Embedder({name!r}) (retriever.embedder: {name}), or rebuild the index "
                          f"with {embedder.name!r}.")


def _warn_if_truncated(passages: Sequence[Passage], embedder: Embedder) -> None:
    """Warn when passages are surely longer than the embedder reads (it embeds only their beginning)."""
    limit = embedder.max_seq_length
    if not limit:
        return
    # A word is at least one token, so more words than `limit` means the tail is not embedded.
    long = [p.id for p in passages if len(p.text.split()) > limit]
    if long:
        logger.warning("%d passage(s) have more than %d words, beyond what %s reads (%d tokens); only their beginning "
                       "is embedded, e.g. %s. Chunk them (load_corpus + chunk_passages, or from_corpus).",
                       len(long), limit, embedder.name, limit, long[:3])


def _versioned(root: Path) -> VersionedFolder:
    return VersionedFolder(root, kind="faiss-index", files=(INDEX_FILE, PASSAGES_FILE, META_FILE))


def _legacy_index(folder: Path) -> bool:
    """Whether ``folder`` holds an index saved by an earlier ragzip (files at the top level): by content, not name."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def index_files(path: str | Path) -> Path:
    """The folder that holds the current files of the index saved at ``path``.

    That is its current version subfolder, or ``path`` itself for an index saved by an earlier ragzip.
    """
    root = Path(path).expanduser()
    current = _versioned(root).current()
    return current if current is not None else root


def is_saved_index(path: str | Path) -> bool:
    """Whether ``path`` holds a saved ragzip index (complete or not: a damaged one fails loudly on load)."""
    root = Path(path).expanduser()
    return root.is_dir() and (_versioned(root).is_mine() or _legacy_index(root))


def _plain(value: Any, depth: int = 0) -> Any:
    """Metadata as plain JSON types; a cycle or nesting deeper than 64 levels is an error (not a RecursionError)."""
    if depth > 64:
        raise ValueError("metadata is nested more than 64 levels deep (or contains a cycle)")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def corpus_fingerprint(path: str | Path) -> str:
    """A cheap fingerprint of a corpus file or folder (names, sizes, modification times)."""
    root = Path(path).expanduser()
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for f in files:
        if f.is_file():
            st = f.stat()
            digest.update(f"{f.relative_to(root) if root.is_dir() else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _warn_if_stale(retriever: FaissRetriever, index_path: Path, cfg: RetrieverConfig) -> None:
    stats = retriever.stats
    changed = []
    if stats.get("corpus_fingerprint") and Path(cfg.corpus or "").exists() \
            and stats["corpus_fingerprint"] != corpus_fingerprint(cfg.corpus or ""):
        changed.append(f"corpus {cfg.corpus} changed")
    for key, value in (("chunk_words", cfg.chunk_words), ("chunk_overlap", cfg.chunk_overlap)):
        if key in stats and stats[key] != value:
            changed.append(f"{key} {stats[key]} -> {value}")
    if changed:
        logger.warning("using the saved index at %s although %s since it was built; delete the folder to rebuild it",
                       index_path, "; ".join(changed))
