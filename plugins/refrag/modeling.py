"""REFRAG's trained parts: chunking, the chunk encoder, the projector and the expansion policy.

REFRAG (Lin et al., arXiv 2509.01092) cuts the context into k-token chunks, encodes each chunk to one vector with a
small encoder, projects it into the decoder's token-embedding space and lets a light policy pick which chunks the
decoder reads as raw tokens instead. There is no official code or checkpoint; this is ragzip's re-implementation:

- chunks are cut in the *decoder's* tokens (:func:`chunk_passage`); the encoder reads each chunk's text;
- encoder: a BERT-like model (MiniLM by default), mean-pooled over the chunk; only its top layers are trained;
- projector: LayerNorm -> Linear -> GELU -> Linear into the decoder's embedding width;
- policy: an MLP over [chunk vector, query vector, their product, cosine, positions] giving one logit per chunk; the
  top ``round(p * L)`` chunks are expanded, and training samples from the Plackett-Luce distribution of the logits;
- optionally a decoder LoRA (:mod:`ragzip.plugins.refrag.lora`), so that the decoder learns to read the chunk vectors;
  artifacts without one are read by the frozen decoder.

Only trained parameters are saved (:meth:`RefragModel.save_pretrained`); the base encoder is loaded from its spec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ragzip import __version__
from ragzip._lazy import require
from ragzip.artifacts import (
    INTEGRITY,
    ArtifactError,
    base_identity,
    check_base,
    check_shapes,
    read_config,
    save_artifact,
    verify_weights,
)
from ragzip.config_utils import from_dict, to_dict
from ragzip.errors import ConfigError, InputError, ModelNotFoundError
from ragzip.models import hub_error, resolve
from ragzip.plugins.refrag.config import RefragModelConfig
from ragzip.plugins.refrag.lora import DecoderLoRA, adapter_fingerprint

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARTIFACT_FIX = ("Use the artifact folder as it was saved (config.json and model.safetensors together, unedited), with "
                "the encoder and decoder its config.json names, or train a new one with `ragzip train refrag --out "
                "DIR`.")


# ------------------------------------------------------------------------------------------------------- chunking
@dataclass(frozen=True)
class Chunk:
    """One chunk of a passage: ``ids`` are its decoder tokens, ``text`` the exact slice of the passage they cover.

    The texts of a passage's chunks concatenate to the passage text; a chunk's text starts right after the previous
    chunk's last token, so leading spaces belong to the chunk that follows them.
    """

    index: int
    token_start: int
    ids: tuple[int, ...]
    char_start: int
    char_end: int
    text: str

    @property
    def key(self) -> str:
        """Content key: SHA-256 of the chunk's token ids (what the chunk-embedding cache is keyed by)."""
        return chunk_key(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def chunk_key(ids: Sequence[int]) -> str:
    data = b"".join(int(i).to_bytes(4, "little", signed=False) for i in ids)
    return hashlib.sha256(data).hexdigest()[:32]


def chunk_passage(text: str, tokenizer: Any, k: int) -> list[Chunk]:
    """Cut ``text`` into chunks of ``k`` decoder tokens; the last chunk keeps the remainder (a partial chunk).

    A text shorter than ``k`` tokens is one partial chunk; an empty text has none.

    Example:
        >>> chunks = chunk_passage("Paris is the capital of France.", tokenizer, k=4)  # doctest: +SKIP
        >>> "".join(c.text for c in chunks)  # doctest: +SKIP
        'Paris is the capital of France.'
    """
    if k < 1:
        raise ConfigError(f"k = {k!r} must be a positive number of tokens per chunk.")
    if not text:
        return []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ConfigError(f"the decoder tokenizer {type(tokenizer).__name__} gives no character offsets; REFRAG "
                          "needs a fast (Rust) tokenizer to cut passages into chunks.") from None
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    chunks: list[Chunk] = []
    char_start = 0
    for n, start in enumerate(range(0, len(ids), k)):
        end = min(start + k, len(ids))
        char_end = len(text) if end == len(ids) else max(int(offsets[end - 1][1]), char_start)
        chunks.append(Chunk(n, start, tuple(ids[start:end]), char_start, char_end, text[char_start:char_end]))
        char_start = char_end
    return chunks


def roundtrip_exact(tokenizer: Any, text: str, ids: Sequence[int]) -> bool:
    """True when tokenizing ``text`` alone gives exactly ``ids`` (then an expanded run can travel as text)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) == list(ids)


# --------------------------------------------------------------------------------------------------------- modules
class Projector(nn.Module):
    """Maps encoder chunk vectors into the decoder's input-embedding space: LayerNorm -> Linear -> GELU -> Linear."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(c))))  # (..., d_out)


N_SCALAR_FEATURES = 4  # cosine(chunk, query), position in the context, passage rank, chunk fill (len / k)


class ExpansionPolicy(nn.Module):
    """Scores chunks for expansion: an MLP over [c, q, c * q, cos(c, q), positions] -> one logit per chunk."""

    def __init__(self, d_enc: int, d_hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * d_enc + N_SCALAR_FEATURES, d_hidden), nn.GELU(),
                                 nn.Linear(d_hidden, d_hidden), nn.GELU(), nn.Linear(d_hidden, 1))

    def forward(self, c: torch.Tensor, q: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        c = nn.functional.normalize(c, dim=-1)  # (L, d_enc)
        q = nn.functional.normalize(q, dim=-1).expand_as(c)  # (L, d_enc)
        cos = (c * q).sum(-1, keepdim=True)  # (L, 1)
        feats = torch.cat([c, q, c * q, cos, scalars], dim=-1)  # (L, 3 d_enc + 4)
        return self.net(feats).squeeze(-1)  # (L,)


def policy_scalars(positions: Sequence[tuple[int, int, int, int]], k: int) -> torch.Tensor:
    """Scalar features per chunk from ``(chunk index in context, n chunks, passage rank, chunk length)``.

    Returns ``(L, 3)``: the relative position in the context, the passage's rank squashed into [0, 1) and how full
    the chunk is (the policy adds the chunk-query cosine as the fourth).
    """
    rows = [[i / max(n, 1), 1.0 - 1.0 / (1.0 + rank), length / k] for i, n, rank, length in positions]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 3)


def plackett_luce_sample(logits: torch.Tensor, m: int, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``m`` distinct indices without replacement (Gumbel top-m) and their Plackett-Luce log-probability.

    Returns ``(indices (m,), log_prob ())``; the log-probability is differentiable in ``logits``.
    """
    if m == 0:
        return torch.zeros(0, dtype=torch.long), logits.sum() * 0.0
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1 - 1e-9).to(logits.device)
    gumbel = -torch.log(-torch.log(u))
    order = torch.argsort(logits.detach() + gumbel, descending=True)[:m]  # (m,)
    log_prob = logits.new_zeros(())
    remaining = torch.ones_like(logits, dtype=torch.bool)
    for idx in order:
        log_prob = log_prob + logits[idx] - torch.logsumexp(logits[remaining], dim=0)
        remaining = remaining.clone()
        remaining[idx] = False
    return order, log_prob


def budget(p: float, n_chunks: int) -> int:
    """How many of ``n_chunks`` chunks an expansion budget ``p`` expands (rounded to the nearest, half up)."""
    return min(n_chunks, int(math.floor(p * n_chunks + 0.5)))


# ---------------------------------------------------------------------------------------------------- the model
def _load_base_encoder(spec: str) -> tuple[Any, Any]:
    transformers = require("transformers")  # lazy: slow to import, and the CLI imports this module
    path = resolve(spec)
    try:
        return (transformers.AutoModel.from_pretrained(path, dtype=torch.float32),
                transformers.AutoTokenizer.from_pretrained(path))
    except OSError as err:
        raise hub_error(spec, err) from None


class RefragModel(nn.Module):
    """Chunk encoder + projector + expansion policy (+ an optional decoder LoRA).

    Args:
        config: Shapes and base model names (an artifact's ``config.json``).
        encoder: A loaded BERT-like ``AutoModel`` (tests pass tiny ones); loaded from ``config.encoder`` otherwise.
        encoder_tokenizer: Its tokenizer.

    Example:
        >>> model = RefragModel.from_pretrained("default")  # doctest: +SKIP
        >>> model.project(model.encode(["Paris is the capital"])).shape  # doctest: +SKIP
        torch.Size([1, 576])
    """

    def __init__(self, config: RefragModelConfig, encoder: Any = None, encoder_tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        if encoder is None:
            encoder, encoder_tokenizer = _load_base_encoder(config.encoder)
        if encoder_tokenizer is None:
            raise ConfigError("RefragModel got an encoder without its tokenizer; pass `encoder_tokenizer=`.")
        hidden = int(encoder.config.hidden_size)
        if hidden != config.encoder_hidden:
            raise ConfigError(f"the encoder {config.encoder!r} has hidden size {hidden}, but the artifact expects "
                              f"{config.encoder_hidden}; use the encoder it was trained with.")
        self.encoder = encoder
        self.encoder_tokenizer = encoder_tokenizer
        self.projector = Projector(config.encoder_hidden, config.projector_hidden, config.decoder_hidden)
        self.policy = ExpansionPolicy(config.encoder_hidden, config.policy_hidden)
        self.decoder_lora: DecoderLoRA | None = None
        if config.decoder_lora_rank:
            self.decoder_lora = DecoderLoRA(config.decoder_lora_rank, config.decoder_lora_alpha,
                                            config.decoder_lora_targets, config.decoder_lora_layers)
        self.freeze_base()
        # Identities of the base models (ragzip.artifacts): the encoder's taken now, from its weights as loaded; the
        # decoder's from the artifact, or from record_decoder() in training.
        self.bases: dict[str, dict[str, Any]] = {"encoder": self.encoder_identity()}

    # ---------------------------------------------------------------------------------------------- parameters
    def trained_layers(self) -> list[nn.Module]:
        layers = list(self.encoder.encoder.layer)
        n = self.config.encoder_trained_layers
        return layers[len(layers) - n:] if n else []

    def freeze_base(self) -> None:
        """Freeze the encoder except its top ``encoder_trained_layers`` layers."""
        self.encoder.requires_grad_(False)
        for layer in self.trained_layers():
            layer.requires_grad_(True)

    def add_decoder_lora(self, decoder: Any, *, rank: int, alpha: float, targets: Sequence[str]) -> DecoderLoRA:
        """Give the model a fresh (zero-delta) LoRA for ``decoder`` and record its shape and base in the config."""
        lora = DecoderLoRA.for_decoder(decoder, rank=rank, alpha=alpha, targets=targets).to(self.device)
        self.decoder_lora = lora
        self.config.decoder_lora_rank, self.config.decoder_lora_alpha = lora.rank, lora.alpha
        self.config.decoder_lora_targets = {t: list(s) for t, s in lora.shapes.items()}
        self.config.decoder_lora_layers = len(lora.layers)
        self.config.decoder_lora_base = lora.base_fingerprint(decoder)
        return lora

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoder LoRA's tensors (``decoder_lora.layers.<i>.<target>.{A,B}``); empty without one."""
        if self.decoder_lora is None:
            return {}
        return {f"decoder_lora.{n}": t.detach().cpu().contiguous() for n, t in self.decoder_lora.state_dict().items()}

    def lora_fingerprint(self) -> str:
        """Short hash of the LoRA weights ('' without one): names the embedding space of the adapted decoder."""
        return adapter_fingerprint(self.lora_state_dict()) if self.decoder_lora is not None else ""

    def reader(self, decoder: Any, *, merge: bool = True, where: str = "refrag") -> Any:
        """The decoder that reads this model's soft tokens: ``decoder`` itself when there is no LoRA; otherwise a copy
        of it reading through the LoRA (merged into the weights unless ``merge=False``), ``decoder`` left untouched.

        Raises:
            ArtifactError: the decoder's adapted weights are not the ones the LoRA was trained on.
        """
        if self.decoder_lora is None:
            return decoder
        want = self.config.decoder_lora_base
        have = self.decoder_lora.base_fingerprint(decoder) if want else ""
        if want and have != want:
            raise ArtifactError(f"{where}: the decoder LoRA is a delta on other weights than this decoder's (its "
                                f"{', '.join(self.decoder_lora.targets)} weights hash to {have}, the artifact was "
                                f"trained on {want}). Use the decoder it was trained with ({self.config.decoder!r}), "
                                "or train an artifact for this one with `ragzip train refrag`.")
        return self.decoder_lora.adapted(decoder, merge=merge)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the encoder's top layers, the projector, the policy and the decoder LoRA."""
        n_layers = len(self.encoder.encoder.layer)
        top = {f"encoder.layer.{i}." for i in range(n_layers - self.config.encoder_trained_layers, n_layers)}
        state = {f"encoder.{name}": t for name, t in self.encoder.state_dict().items()
                 if any(name.startswith(prefix) for prefix in top)}
        state.update({f"projector.{n}": t for n, t in self.projector.state_dict().items()})
        state.update({f"policy.{n}": t for n, t in self.policy.state_dict().items()})
        state = {n: t.detach().cpu().contiguous() for n, t in state.items()}
        state.update(self.lora_state_dict())
        return state

    def load_trained_state_dict(self, state: dict[str, torch.Tensor], *, where: str) -> None:
        expected = self.trained_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ConfigError(f"{where} does not match its config.json: missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]}. Re-train it with `ragzip train refrag`.")
        enc = {n[len("encoder."):]: t for n, t in state.items() if n.startswith("encoder.")}
        self.encoder.load_state_dict(enc, strict=False)
        self.projector.load_state_dict({n[len("projector."):]: t for n, t in state.items()
                                        if n.startswith("projector.")})
        self.policy.load_state_dict({n[len("policy."):]: t for n, t in state.items() if n.startswith("policy.")})
        if self.decoder_lora is not None:
            prefix = "decoder_lora."
            self.decoder_lora.load_state_dict({n[len(prefix):]: t for n, t in state.items() if n.startswith(prefix)})

    def encoder_fingerprint(self) -> str:
        """Identifies what produces chunk vectors (encoder name, pooling, trained layers): the cache records it."""
        h = hashlib.sha256()
        h.update(json.dumps([self.config.encoder, self.config.pooling, self.config.encoder_max_length]).encode())
        for name, tensor in sorted(self.trained_state_dict().items()):
            if name.startswith("encoder."):
                h.update(name.encode())
                h.update(tensor.numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    # -------------------------------------------------------------------------------------------------- forward
    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """Mean-pooled encoder vectors of ``texts``: ``(n, encoder_hidden)``; differentiable in the trained layers."""
        if isinstance(texts, str):
            raise InputError("RefragModel.encode takes a list of texts; wrap one text in a list.")
        out = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            enc = self.encoder_tokenizer(batch, padding=True, truncation=True,
                                         max_length=self.config.encoder_max_length, return_tensors="pt")
            enc = {name: t.to(self.device) for name, t in enc.items()}
            states = self.encoder(**enc).last_hidden_state  # (b, t, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # (b, t, 1)
            out.append((states * mask).sum(1) / mask.sum(1).clamp(min=1.0))  # (b, H)
        if not out:
            return torch.zeros(0, self.config.encoder_hidden, device=self.device)
        return torch.cat(out, dim=0)  # (n, H)

    def project(self, c: torch.Tensor) -> torch.Tensor:
        """Encoder vectors ``(n, H)`` -> decoder input embeddings ``(n, decoder_hidden)``."""
        return self.projector(c)

    def policy_logits(self, c: torch.Tensor, q: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """One expansion logit per chunk ``(L,)`` from chunk vectors ``(L, H)``, the query vector ``(H,)`` and
        :func:`policy_scalars` ``(L, 3)``."""
        return self.policy(c, q[None], scalars.to(c.device))

    # --------------------------------------------------------------------------------------------- base models
    def encoder_identity(self, *, embeddings: bool = True) -> dict[str, Any]:
        """The base encoder's identity (:func:`ragzip.artifacts.base_identity`): name, widths, pooling, and
        fingerprints of its input embeddings (frozen in training) and tokenizer."""
        shape = self.encoder.config
        return base_identity(self.config.encoder, model=self.encoder if embeddings else None,
                             tokenizer=self.encoder_tokenizer, hidden=int(shape.hidden_size),
                             layers=int(shape.num_hidden_layers), trained_layers=self.config.encoder_trained_layers,
                             pooling=self.config.pooling, max_length=self.config.encoder_max_length)

    def decoder_dims(self) -> dict[str, Any]:
        """What the artifact depends on of its decoder: the input-embedding width and the chunk size in its tokens."""
        return {"hidden": self.config.decoder_hidden, "k": self.config.k}

    def record_decoder(self, decoder: Any, tokenizer: Any = None) -> None:
        """Remember the decoder's fingerprints (its input embeddings and tokenizer): :meth:`save_pretrained` writes
        them, and :meth:`check_decoder` compares the decoder a compressor is bound to."""
        self.bases["decoder"] = base_identity(self.config.decoder, model=decoder, tokenizer=tokenizer,
                                              **self.decoder_dims())

    def check_decoder(self, decoder: Any, tokenizer: Any = None, *, name: str | None = None,
                      where: str = "refrag") -> None:
        """Raise :class:`~ragzip.artifacts.ArtifactError` when ``decoder`` (a transformers causal LM, float32 as
        ragzip loads it) is not the one the artifact was trained with: another hidden size, input embeddings or
        tokenizer. Nothing is checked when the artifact recorded no decoder fingerprints."""
        weight = decoder.get_input_embeddings().weight
        identity = base_identity(name or self.config.decoder,
                                 model=decoder if weight.dtype == torch.float32 else None, tokenizer=tokenizer,
                                 hidden=int(weight.shape[1]))
        check_base({INTEGRITY: {"bases": self.bases}}, "decoder", identity, where=where,
                   fix=f"Use the decoder the artifact was trained with ({self.config.decoder!r}), or train one for "
                       f"this decoder with `ragzip train refrag --decoder {name or 'MODEL'} --out DIR`.")

    # --------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (trained parameters only) into ``folder``.

        ``config.json`` records the file's SHA-256 and the identities of the encoder and the decoder (with the
        decoder's fingerprints when :meth:`record_decoder` or loading gave them), checked when it loads.
        """
        self.config.ragzip_version = __version__
        data = {"type": "refrag", **to_dict(self.config)}
        return save_artifact(folder, data, self.trained_state_dict(), bases=self.integrity_bases())

    def integrity_bases(self) -> dict[str, dict[str, Any]]:
        """What ``config.json`` records of the encoder and the decoder (:mod:`ragzip.artifacts`)."""
        as_loaded = self.encoder.get_input_embeddings().weight.dtype == torch.float32
        encoder = self.encoder_identity(embeddings=as_loaded)
        if not as_loaded and self.bases.get("encoder", {}).get("embeddings"):
            encoder["embeddings"] = self.bases["encoder"]["embeddings"]  # cast after loading: the as-loaded hash
        known = self.bases.get("decoder", {})
        decoder = {**base_identity(self.config.decoder, **self.decoder_dims()),
                   **{k: known[k] for k in ("embeddings", "tokenizer") if known.get(k)}}
        return {"encoder": encoder, "decoder": decoder}

    @classmethod
    def from_pretrained(cls, artifact: str | Path = "default", *, encoder: Any = None,
                        encoder_tokenizer: Any = None) -> RefragModel:
        """Load a trained artifact: ``'default'`` (shipped) or a folder written by :meth:`save_pretrained`.

        The weights are checked against the SHA-256 in ``config.json`` and the model's shapes, and the encoder
        against the identity recorded at save (:mod:`ragzip.artifacts`).
        """
        folder = artifact_path(artifact)
        where = f"REFRAG artifact {str(folder)!r}"
        data = read_config(folder, where=where, fix=ARTIFACT_FIX)
        kind = data.pop("type", "refrag")
        if kind != "refrag":
            raise ConfigError(f"{str(folder)!r} holds a {kind!r} artifact, not a refrag one.")
        fields = {k: v for k, v in data.items() if k != INTEGRITY}
        config = from_dict(RefragModelConfig, fields, where=f"{folder / CONFIG_FILE}", strict=False)
        verify_weights(folder, data, where=where, fix=ARTIFACT_FIX)
        model = cls(config, encoder=encoder, encoder_tokenizer=encoder_tokenizer)
        state = load_file(str(folder / WEIGHTS_FILE))
        expected = {n: tuple(t.shape) for n, t in model.trained_state_dict().items()}
        check_shapes(state, expected, where=f"{where} (encoder_trained_layers={config.encoder_trained_layers}, "
                                            f"projector_hidden={config.projector_hidden}, policy_hidden="
                                            f"{config.policy_hidden}, decoder_hidden={config.decoder_hidden}"
                                            + (f", decoder_lora_rank={config.decoder_lora_rank}"
                                               if config.decoder_lora_rank else "") + ")",
                     fix=ARTIFACT_FIX)
        check_base(data, "encoder", model.bases["encoder"], where=where, fix=ARTIFACT_FIX)
        check_base(data, "decoder", base_identity(config.decoder, **model.decoder_dims()), where=where,
                   fix=ARTIFACT_FIX)
        model.load_trained_state_dict(state, where=str(folder / WEIGHTS_FILE))
        recorded = (data.get(INTEGRITY) or {}).get("bases") or {}
        if recorded.get("decoder"):
            model.bases["decoder"] = dict(recorded["decoder"])
        model.eval()
        return model


def artifact_path(artifact: str | Path) -> Path:
    """The folder of an artifact spec: ``'default'`` is the shipped one; anything else is a local folder."""
    folder = ARTIFACTS / "default" if str(artifact) == "default" else Path(artifact).expanduser()
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        if str(artifact) == "default":
            raise ModelNotFoundError(f"the shipped REFRAG artifact is missing from {str(folder)!r} (config.json + "
                                     "model.safetensors). Reinstall ragzip, or train one with `ragzip train refrag "
                                     "--out DIR` and set `artifact: DIR`.")
        raise ModelNotFoundError(f"REFRAG artifact {str(artifact)!r} not found: the folder needs config.json and "
                                 "model.safetensors, as written by `ragzip train refrag --out DIR`.")
    return folder
