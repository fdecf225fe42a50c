"""xRAG's trainable part, the projector, and the passage encoders whose vectors it reads.

Only the projector trains (a 2-layer MLP with GELU, ``mlp2x_gelu`` in xRAG); the embedder and the generator stay frozen
and are named in the artifact, never copied. Two artifact formats load through :meth:`XRAGProjector.from_pretrained`:

- ragzip's own folder: ``config.json`` (``"type": "xrag"``, :class:`ProjectorConfig`) + ``model.safetensors``;
- a published xRAG checkpoint (``Hannibal046/xrag-7b``): an ``XMistralForCausalLM`` whose ``config.json`` has
  ``retriever_hidden_size`` and whose weights hold ``projector.projector.{0,2}.{weight,bias}`` beside the LLM. Only the
  projector tensors are read; the LLM in the same checkpoint is the generator.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ragzip import __version__
from ragzip._lazy import require
from ragzip.artifacts import (
    INTEGRITY,
    base_identity,
    check_base,
    check_shapes,
    read_config,
    save_artifact,
    verify_weights,
)
from ragzip.config_utils import from_dict
from ragzip.embed import Embedder
from ragzip.errors import ConfigError, InputError, ModelNotFoundError
from ragzip.models import EMBEDDED, hub_error, infer_device, resolve
from ragzip.plugins.xrag.config import ProjectorConfig

logger = logging.getLogger(__name__)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ARTIFACT_TYPE = "xrag"
ARTIFACT_FIX = ("Use the artifact folder as it was saved (config.json and model.safetensors together, unedited), with "
                "the embedder and generator its config.json names, or train a new projector with `ragzip train xrag "
                "--out DIR`.")

# Published checkpoints: their config.json does not name the retriever, so the facts come from the xRAG paper/code.
PUBLISHED: dict[str, dict[str, Any]] = {
    "Hannibal046/xrag-7b": {"embedder": "Salesforce/SFR-Embedding-Mistral", "pooling": "last-token",
                            "normalize": False, "embedder_max_length": 180},
    "Hannibal046/xrag-moe": {"embedder": "Salesforce/SFR-Embedding-Mistral", "pooling": "last-token",
                             "normalize": False, "embedder_max_length": 180},
}
# Key prefix of the projector inside an XMistralForCausalLM state dict -> our module's names.
_PUBLISHED_KEYS = {"projector.projector.0.": "fc1.", "projector.projector.2.": "fc2."}


def same_model(a: str | None, b: str | None) -> bool:
    """True when two model specs name the same model (an ``embedded:`` name equals the HF id it ships)."""
    if a is None or b is None:
        return False
    return a == b or EMBEDDED.get(a) == b or EMBEDDED.get(b) == a


class Projector(nn.Module):
    """Linear -> GELU -> Linear: an embedder vector ``(.., d_in)`` to a generator input embedding ``(.., d_out)``."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embedder_dim, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.generator_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (.., d_in) -> (.., d_out)


class XRAGProjector(nn.Module):
    """A trained xRAG projector and the config that says which embedder and generator it joins.

    Example:
        >>> cfg = ProjectorConfig(embedder="hash:8", embedder_dim=8, generator="toy", generator_hidden=4)
        >>> XRAGProjector(cfg)(torch.zeros(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.projector = Projector(config)
        self.bases: dict[str, dict[str, Any]] = {}  # fingerprints of the embedder and generator (ragzip.artifacts)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Project ``(n, embedder_dim)`` passage embeddings to ``(n, generator_hidden)`` soft tokens."""
        return self.projector(embeddings)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------------- persistence
    def record_bases(self, *, encoder: PassageEncoder | None = None, generator: Any = None) -> None:
        """Remember the fingerprints of the embedder and the generator this projector is trained on; every
        :meth:`save_pretrained` writes them, and loading checks them (:mod:`ragzip.artifacts`).

        ``encoder`` is the passage encoder that made the training vectors, ``generator`` an ``HFGenerator`` (anything
        with ``model`` and ``tokenizer``).
        """
        if encoder is not None:
            self.bases["embedder"] = encoder_identity(encoder)
        if generator is not None:
            self.bases["generator"] = generator_identity(self.config.generator, generator.model, generator.tokenizer)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (the projector only) into ``folder``.

        ``config.json`` records the file's SHA-256 and the embedder's and generator's identities: names and the
        settings below, plus fingerprints of their embeddings and tokenizers where :meth:`record_bases` (or loading)
        gave them.
        """
        self.config.ragzip_version = __version__
        payload = {"type": ARTIFACT_TYPE, **asdict(self.config)}
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.projector.state_dict().items()}
        return save_artifact(folder, payload, state, bases=self.integrity_bases(), metadata={"type": ARTIFACT_TYPE})

    def integrity_bases(self) -> dict[str, dict[str, Any]]:
        """What ``config.json`` records of the embedder and the generator: the names and settings of the config,
        with the fingerprints :meth:`record_bases` (or loading) gave."""
        bases = {}
        for role, identity in artifact_bases(self.config).items():
            known = self.bases.get(role, {})
            bases[role] = {**identity, **{k: known[k] for k in ("embeddings", "tokenizer") if known.get(k)}}
        return bases

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike[str] = "default", *, embedder: str | None = None) -> XRAGProjector:
        """Load a frozen projector (eval mode): ``default`` (shipped), a folder, or a published xRAG checkpoint.

        Args:
            spec: ``"default"``, a folder written by :meth:`save_pretrained` or ``ragzip train xrag``, or an
                ``XMistralForCausalLM`` checkpoint such as ``Hannibal046/xrag-7b`` (local folder or hub id).
            embedder: For a published checkpoint not in :data:`PUBLISHED`: the embedder it was trained with.

        Raises:
            ModelNotFoundError: the folder or hub id cannot be found or read.
            ConfigError: the folder is not an xRAG projector.
        """
        folder = _artifact_folder(str(spec))
        if folder is not None:
            config_path = folder / CONFIG_NAME
            if not config_path.is_file():
                raise ModelNotFoundError(f"xrag artifact {str(spec)!r} has no {CONFIG_NAME} in {folder}. Point "
                                         "`artifact` at a folder written by `ragzip train xrag --out DIR`.")
            raw = read_config(folder, where=f"xrag artifact {str(spec)!r}", fix=ARTIFACT_FIX)
            if "retriever_hidden_size" in raw:
                return _load_published(str(spec), raw, lambda name: _local_file(folder, name), embedder)
            return _load_ragzip(folder, raw, str(spec))
        return _load_published_from_hub(str(spec), embedder)


def _artifact_folder(spec: str) -> Path | None:
    """The local folder of an artifact spec, or None when ``spec`` looks like a hub id."""
    if spec == "default" or (spec and "/" not in spec and (ARTIFACTS / spec).is_dir()):
        return ARTIFACTS / spec
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelNotFoundError(f"xrag artifact {spec!r} does not exist. Use 'default', a folder written by "
                                 "`ragzip train xrag --out DIR`, or a Hugging Face id such as 'Hannibal046/xrag-7b'.")
    return None


def _local_file(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_file() else None


def _load_ragzip(folder: Path, raw: dict[str, Any], spec: str) -> XRAGProjector:
    kind = raw.pop("type", ARTIFACT_TYPE)
    if kind != ARTIFACT_TYPE:
        raise ConfigError(f"artifact {spec!r} is a {kind!r} artifact, not an xrag projector. Use a folder written by "
                          "`ragzip train xrag`.")
    fields = {k: v for k, v in raw.items() if k != INTEGRITY}
    config = from_dict(ProjectorConfig, fields, where=f"xrag artifact {spec!r} config.json", strict=False)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotFoundError(f"xrag artifact {spec!r} has no {WEIGHTS_NAME} in {folder}; re-run "
                                 "`ragzip train xrag --out DIR` or copy the whole folder.")
    where = f"xrag artifact {spec!r}"
    verify_weights(folder, raw, where=where, fix=ARTIFACT_FIX)
    model = XRAGProjector(config)
    state = load_file(str(weights))
    expected = {k: tuple(v.shape) for k, v in model.projector.state_dict().items()}
    check_shapes(state, expected, where=f"{where} (embedder_dim={config.embedder_dim}, intermediate_size="
                                        f"{config.intermediate_size}, generator_hidden={config.generator_hidden})",
                 fix=ARTIFACT_FIX)
    for role, identity in artifact_bases(config).items():  # settings edited in config.json since it was saved
        check_base(raw, role, identity, where=where, fix=_settings_fix(raw, role))
    model.projector.load_state_dict(state)
    model.bases = {role: dict(identity) for role, identity in ((raw.get(INTEGRITY) or {}).get("bases") or {}).items()}
    return model.eval().requires_grad_(False)  # loaded for inference; train a fresh XRAGProjector


def artifact_bases(config: ProjectorConfig) -> dict[str, dict[str, Any]]:
    """The embedder's and generator's identities as the projector's config describes them (no fingerprints)."""
    return {"embedder": base_identity(config.embedder, **embedder_dims(config)),
            "generator": base_identity(config.generator, hidden=config.generator_hidden)}


def embedder_dims(config: ProjectorConfig) -> dict[str, Any]:
    """What the projector needs of its embedder's vectors: width, pooling, normalisation and passage length."""
    return {"dim": config.embedder_dim, "pooling": config.pooling, "normalize": config.normalize,
            "max_length": config.embedder_max_length}


def _settings_fix(raw: Mapping[str, Any], role: str) -> str:
    recorded = ((raw.get(INTEGRITY) or {}).get("bases") or {}).get(role, {}).get("dims", {})
    names = {"dim": "embedder_dim", "max_length": "embedder_max_length", "hidden": "generator_hidden"}
    values = ", ".join(f"{names.get(k, k)}: {json.dumps(v)}" for k, v in recorded.items())
    return (f"config.json was edited after training: set back {values} (the values recorded under "
            f"integrity.bases.{role}.dims), or train a new projector with `ragzip train xrag --out DIR`.")


def _published_config(spec: str, raw: dict[str, Any], embedder: str | None) -> ProjectorConfig:
    known = PUBLISHED.get(spec, {})
    if embedder is None and not known:
        raise ConfigError(f"{spec!r} is an xRAG checkpoint whose retriever ragzip does not know. Name it in the "
                          "compressor config, e.g. `embedder: Salesforce/SFR-Embedding-Mistral` (the xRAG default).")
    projector_type = raw.get("projector_type", "mlp2x_gelu")
    if projector_type != "mlp2x_gelu":
        raise ConfigError(f"{spec!r} has projector_type {projector_type!r}; ragzip reads 'mlp2x_gelu' only.")
    return ProjectorConfig(
        embedder=embedder or known["embedder"],
        embedder_dim=int(raw["retriever_hidden_size"]),
        pooling=known.get("pooling", "last-token"),
        normalize=known.get("normalize", False),
        embedder_max_length=known.get("embedder_max_length", 180),
        generator=spec,
        generator_hidden=int(raw["hidden_size"]),
        intermediate_size=int(raw["hidden_size"]),
        training={"source": f"published xRAG checkpoint {spec}"},
    )


def _projector_state(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Read only the projector tensors from checkpoint shards (safetensors or PyTorch .bin), renamed for Projector."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    for prefix, ours in _PUBLISHED_KEYS.items():
                        if key.startswith(prefix):
                            state[ours + key[len(prefix):]] = handle.get_tensor(key).to(torch.float32)
        else:
            shard = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            for key, value in shard.items():
                for prefix, ours in _PUBLISHED_KEYS.items():
                    if key.startswith(prefix):
                        state[ours + key[len(prefix):]] = value.to(torch.float32)
    return state


def _weight_files(spec: str, fetch: Any) -> list[Path]:
    """The shard files that hold ``projector.*``, found through the index when the checkpoint is sharded."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = fetch(index_name)
        if index is not None:
            weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({f for k, f in weight_map.items() if k.startswith("projector.")})
            if not shards:
                break
            return [Path(p) for p in (fetch(s) for s in shards) if p is not None]
        path = fetch(single)
        if path is not None:
            return [Path(path)]
    raise ConfigError(f"{spec!r} holds no projector weights (no 'projector.*' tensors). It is not an xRAG "
                      "checkpoint; use 'default' or a folder written by `ragzip train xrag`.")


def _load_published(spec: str, raw: dict[str, Any], fetch: Any, embedder: str | None) -> XRAGProjector:
    config = _published_config(spec, raw, embedder)
    state = _projector_state(_weight_files(spec, fetch))
    model = XRAGProjector(config)
    missing, unexpected = model.projector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{spec!r}: the projector tensors do not form an mlp2x_gelu projector (missing "
                          f"{sorted(missing)}, unexpected {sorted(unexpected)}).")
    logger.info("loaded the published xRAG projector of %s (%s -> %s)", spec, config.embedder, spec)
    return model.eval().requires_grad_(False)  # loaded for inference; train a fresh XRAGProjector


def _load_published_from_hub(spec: str, embedder: str | None) -> XRAGProjector:
    hub = require("huggingface_hub")  # lazy: slow to import, and the CLI imports this module
    errors = require("huggingface_hub.errors")

    def fetch(name: str) -> Path | None:
        try:
            return Path(hub.hf_hub_download(spec, name))
        except errors.LocalEntryNotFoundError:  # offline and not cached: the hub is unreachable, not the file missing
            raise
        except errors.EntryNotFoundError:  # the repository has no such file
            return None

    try:
        config_path = fetch(CONFIG_NAME)
        if config_path is None:
            raise ModelNotFoundError(f"{spec!r} has no {CONFIG_NAME}; it is not an xRAG checkpoint.")
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        if "retriever_hidden_size" not in raw:
            raise ConfigError(f"{spec!r} is not an xRAG checkpoint (its config.json has no retriever_hidden_size). "
                              "Use 'default', a folder written by `ragzip train xrag`, or 'Hannibal046/xrag-7b'.")
        return _load_published(spec, raw, fetch, embedder)
    except (ConfigError, ModelNotFoundError):
        raise
    except Exception as err:  # network, auth, missing repo: one clear error
        raise hub_error(spec, err) from None


# ------------------------------------------------------------------------------------------------- passage encoders
class PassageEncoder(Protocol):
    """What the compressor needs from an embedder: its ``name``, ``dim`` and ``encode(texts) -> (n, dim)``.

    ragzip's encoders also say how they pool and whether they normalise (``pooling``, ``normalize``), so a projector
    trained on other vectors is refused (:func:`check_encoder`).
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """Passage vectors from :class:`ragzip.embed.Embedder` (L2-normalised), the embedder of ragzip's FAISS index."""

    pooling = "sentence-transformers"
    normalize = True

    def __init__(self, spec: str, *, device: str | None = None, model: Any = None) -> None:
        self.embedder = Embedder(spec, device=device, model=model)
        self.name = spec
        self.dim = self.embedder.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(texts))


class LastTokenEncoder:
    """Passage vectors as a decoder's last-token hidden state, unnormalised: SFR-Embedding-Mistral in xRAG.

    Args:
        spec: Model spec (HF id or local folder) of an ``AutoModel`` with a tokenizer.
        max_length: Passage tokens kept (xRAG: 180).
        model, tokenizer: Already loaded objects (tests pass tiny ones).
    """

    pooling = "last-token"
    normalize = False

    def __init__(self, spec: str, *, max_length: int = 180, device: str | None = None, model: Any = None,
                 tokenizer: Any = None, batch_size: int = 8) -> None:
        transformers = require("transformers")  # lazy: slow to import, and the CLI imports this module
        self.name = spec
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = infer_device(device) if model is None else (device or "cpu")
        if model is None or tokenizer is None:
            path = resolve(spec)
            try:
                tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(path)
                model = model or transformers.AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device)
            except OSError as err:
                raise hub_error(spec, err) from None
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        if getattr(self.tokenizer, "pad_token", None) is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), max_length=self.max_length,
                                   padding=True, truncation=True, return_tensors="pt").to(self.model.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, d)
            last = batch["attention_mask"].sum(dim=1) - 1  # (B,) index of the last real token (right padding)
            if self.tokenizer.padding_side == "left":
                last = torch.full_like(last, hidden.shape[1] - 1)
            out.append(hidden[torch.arange(hidden.shape[0]), last].float().cpu().numpy())  # (B, d)
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.dim), dtype=np.float32)


def load_encoder(config: ProjectorConfig, spec: str | None = None, *, device: str | None = None) -> PassageEncoder:
    """The passage encoder an artifact reads (``spec`` overrides the name, e.g. a local copy of the same model)."""
    name = spec or config.embedder
    if config.pooling == "last-token":
        return LastTokenEncoder(name, max_length=config.embedder_max_length, device=device)
    return SentenceTransformerEncoder(name, device=device)


def check_encoder(encoder: PassageEncoder, config: ProjectorConfig,
                  bases: Mapping[str, Mapping[str, Any]] | None = None, *, where: str = "xrag") -> None:
    """Refuse an encoder whose vectors the projector cannot read: another width, pooling or normalisation, or (given
    the ``bases`` an artifact recorded) another model or tokenizer than the one the projector was trained on.

    Raises:
        ConfigError: the width, pooling or normalisation differs from what the projector's config says.
        ArtifactError: the encoder's embeddings or tokenizer differ from those recorded when the artifact was saved.
    """
    if int(encoder.dim) != config.embedder_dim:
        raise ConfigError(f"embedder {encoder.name!r} gives {encoder.dim}-d vectors, but the xrag projector reads "
                          f"{config.embedder_dim}-d vectors from {config.embedder!r}. Use embedder "
                          f"{config.embedder!r}, or train a projector for {encoder.name!r} with "
                          f"`ragzip train xrag --embedder {encoder.name}`.")
    pooling, normalize = getattr(encoder, "pooling", None), getattr(encoder, "normalize", None)
    if pooling is not None and pooling != config.pooling:
        raise ConfigError(f"{where}: embedder {encoder.name!r} makes {pooling!r} vectors, but the projector was "
                          f"trained on pooling {config.pooling!r} (its config.json). Use an encoder with pooling "
                          f"{config.pooling!r}, or restore `pooling` in config.json if it was edited.")
    if normalize is not None and bool(normalize) != config.normalize:
        made = "L2-normalised" if normalize else "unnormalised"
        raise ConfigError(f"{where}: embedder {encoder.name!r} makes {made} vectors, but the projector's config.json "
                          f"says normalize: {json.dumps(config.normalize)}. With pooling {config.pooling!r} ragzip's "
                          f"encoder is {made}: restore `normalize: {json.dumps(bool(normalize))}` in config.json if it "
                          "was edited, or train a projector on these vectors with `ragzip train xrag`.")
    if bases and bases.get("embedder"):
        check_base({INTEGRITY: {"bases": bases}}, "embedder", encoder_identity(encoder), where=where,
                   fix=f"Use the embedder the projector was trained with ({config.embedder!r}), or train a projector "
                       f"for {encoder.name!r} with `ragzip train xrag --embedder {encoder.name} --out DIR`.")


def _hf_parts(encoder: Any) -> tuple[Any, Any]:
    """The transformers model and tokenizer behind a passage encoder, where it has them (else None)."""
    if isinstance(encoder, LastTokenEncoder):
        return encoder.model, encoder.tokenizer
    st = getattr(getattr(encoder, "embedder", None), "model", None)
    try:
        return st[0].auto_model, st.tokenizer  # a sentence-transformers model: its first module is the transformer
    except (TypeError, IndexError, KeyError, AttributeError):
        return None, None


def _as_loaded(model: Any) -> Any:
    """``model`` when its input embeddings are float32 (as ragzip loads them), else None: a fingerprint of weights
    cast to a lower precision would not match the one recorded from the float32 weights."""
    try:
        weight = model.get_input_embeddings().weight
    except AttributeError:
        return None
    return model if weight.dtype == torch.float32 else None


def encoder_identity(encoder: PassageEncoder) -> dict[str, Any]:
    """A passage encoder's identity (:func:`ragzip.artifacts.base_identity`): name, the settings :func:`embedder_dims`
    names that it knows, and fingerprints of its embeddings and tokenizer where it has a transformers model."""
    model, tokenizer = _hf_parts(encoder)
    dims: dict[str, Any] = {"dim": int(encoder.dim)}
    for key in ("pooling", "normalize"):
        if getattr(encoder, key, None) is not None:
            dims[key] = getattr(encoder, key)
    if isinstance(encoder, LastTokenEncoder):  # the only encoder that reads embedder_max_length
        dims["max_length"] = encoder.max_length
    return base_identity(encoder.name, model=_as_loaded(model) if model is not None else None, tokenizer=tokenizer,
                         **dims)


def generator_identity(name: str, model: Any, tokenizer: Any = None) -> dict[str, Any]:
    """A generator's identity: name, hidden size, fingerprints of its input embeddings and tokenizer."""
    hidden = int(model.get_input_embeddings().embedding_dim)
    return base_identity(name, model=_as_loaded(model), tokenizer=tokenizer, hidden=hidden)


def check_generator(projector: XRAGProjector, name: str, model: Any, tokenizer: Any = None, *,
                    where: str = "xrag") -> None:
    """Raise :class:`ArtifactError` when the generator's embeddings or tokenizer differ from those the projector's
    artifact recorded (a different model under the same name and width)."""
    if not projector.bases.get("generator"):
        return
    check_base({INTEGRITY: {"bases": projector.bases}}, "generator", generator_identity(name, model, tokenizer),
               where=where, fix=f"Use the generator the projector was trained with ({projector.config.generator!r}), "
                                f"or train a projector for it with `ragzip train xrag --generator {name} --out DIR`.")


def as_embedding_matrix(vectors: Sequence[np.ndarray] | np.ndarray, dim: int) -> np.ndarray:
    """Stack vectors into a finite float32 ``(n, dim)`` matrix (an internal check; user input is checked earlier)."""
    matrix = np.asarray(np.stack(list(vectors)) if len(vectors) else np.zeros((0, dim)), dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InputError(f"passage embeddings must have shape (n, {dim}), got {matrix.shape}.")
    return matrix
