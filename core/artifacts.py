"""Trained artifacts on disk: one writer, one reader, and the checks that make a wrong artifact an error.

A ragzip artifact is a folder with ``config.json`` (what was trained, on which base models, how) and
``model.safetensors`` (only the trained tensors). :func:`save_artifact` writes both and records in
``config.json["integrity"]``:

- ``weights_sha256`` / ``weights_bytes``: the weights file as written, so a truncated, swapped or edited file is caught
  at load (:func:`verify_weights`);
- ``bases``: the identity of every base model the weights sit on, ``{role: {"name", "dims", "embeddings",
  "tokenizer"}}`` (:func:`base_identity`), so a different model under the same name and width, or a changed
  tokenizer, is caught at load (:func:`check_base`) instead of producing confident nonsense.

:func:`check_shapes` turns a state dict that does not fit the model built from ``config.json`` (an edited width, a
wrong layer count) into an error naming the tensors, before torch raises its own. An artifact whose ``config.json``
holds none of these records loads with the shape check alone.

Example:
    >>> import torch, tempfile
    >>> folder = save_artifact(tempfile.mkdtemp(), {"type": "toy"}, {"w": torch.zeros(2, 3)})
    >>> config, state = load_artifact(folder, expected={"w": (2, 3)}, where="toy artifact")
    >>> config["integrity"]["weights_bytes"] > 0, tuple(state["w"].shape)
    (True, (2, 3))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ragzip.errors import ModelNotFoundError
from ragzip.fsutil import sha256_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INTEGRITY = "integrity"
_SAMPLE_ROWS = 512  # embedding rows hashed for a fingerprint: enough to tell models apart, cheap for 50k-row vocabularies
_SPECIAL_TOKENS = ("bos_token", "eos_token", "cls_token", "sep_token", "unk_token")


class ArtifactError(ModelNotFoundError):
    """An artifact folder that cannot be used as it is: corrupted, edited, or built on other base models."""


# ------------------------------------------------------------------------------------------------ identities
def embedding_fingerprint(weight: Any) -> str:
    """A short hash of an embedding matrix: its shape and an evenly spaced sample of its rows, as float32.

    Take it from the weights as loaded (before any cast to a lower precision for inference). Only the sampled rows
    leave the device, so a GPU-resident matrix is not copied whole.
    """
    w = weight.detach()
    step = max(w.shape[0] // _SAMPLE_ROWS, 1)
    sample = w[::step][:_SAMPLE_ROWS]  # a strided view: rows 0, step, 2 * step, ...
    if sample.device.type == "cpu" and sample.dtype == torch.float32:
        data = np.ascontiguousarray(sample.numpy())  # numpy gathers the view in microseconds; torch's copy can take ms
    else:
        data = sample.to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.sha256(repr(tuple(w.shape)).encode())
    h.update(data.tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of a tokenizer's vocabulary (token -> id) and special tokens.

    The padding token is left out: ragzip and other libraries set it at run time (to the end token) on tokenizers
    that have none, which changes nothing the weights depend on.
    """
    vocab = tokenizer.get_vocab()
    size = max(vocab.values(), default=-1) + 1
    if size == len(vocab):  # ids 0..n-1, each once (every real vocabulary): the tokens in id order say it all
        tokens = [""] * size
        for token, index in vocab.items():
            tokens[index] = token
    else:
        tokens = [f"{index}\t{token}" for token, index in sorted(vocab.items(), key=lambda kv: kv[1])]
    tokens += [f"{name}={getattr(tokenizer, name, None)}" for name in _SPECIAL_TOKENS]
    return hashlib.sha256("\x00".join(tokens).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def base_identity(name: str, *, model: Any = None, tokenizer: Any = None, **dims: Any) -> dict[str, Any]:
    """What identifies a base model: its name, the widths the artifact depends on, and fingerprints.

    ``model`` is a transformers model (its input embeddings are hashed), ``tokenizer`` a transformers tokenizer;
    ``dims`` are the sizes and settings that must match (e.g. ``hidden=384``, ``normalize=True``).
    """
    identity: dict[str, Any] = {"name": name, "dims": dict(sorted(dims.items()))}
    if model is not None:
        identity["embeddings"] = embedding_fingerprint(model.get_input_embeddings().weight)
    if tokenizer is not None:
        identity["tokenizer"] = tokenizer_fingerprint(tokenizer)
    return identity


def check_base(config: Mapping[str, Any], role: str, actual: Mapping[str, Any], *, where: str, fix: str) -> None:
    """Raise :class:`ArtifactError` when the base model ``role`` loaded now is not the one the artifact recorded.

    Compares what both sides have: ``dims`` key by key, and the ``embeddings`` / ``tokenizer`` fingerprints. The name
    alone never decides (a local copy of the same model may sit under another path). Nothing is checked when the
    artifact recorded no identity for ``role`` (written before ragzip kept these records).
    """
    recorded = (config.get(INTEGRITY) or {}).get("bases", {}).get(role)
    if not recorded:
        return
    problems = []
    want_dims, have_dims = recorded.get("dims", {}), actual.get("dims", {})
    for key in sorted(set(want_dims) & set(have_dims)):
        if want_dims[key] != have_dims[key]:
            problems.append(f"{key} is {have_dims[key]!r}, the artifact was trained with {want_dims[key]!r}")
    for key, what in (("embeddings", "input embeddings differ"), ("tokenizer", "tokenizer vocabulary differs")):
        if recorded.get(key) and actual.get(key) and recorded[key] != actual[key]:
            problems.append(f"its {what} (fingerprint {actual[key]}, trained on {recorded[key]})")
    if problems:
        raise ArtifactError(
            f"{where}: the {role} {actual.get('name')!r} does not match the one this artifact was trained with "
            f"({recorded.get('name')!r}): " + "; ".join(problems) + f". {fix}"
        )


# --------------------------------------------------------------------------------------------------- save/load
def save_artifact(folder: str | Path, config: Mapping[str, Any], state: Mapping[str, Any], *,
                  bases: Mapping[str, Mapping[str, Any]] | None = None,
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.safetensors`` (``state``) and ``config.json`` (``config`` plus the integrity record).

    ``bases`` maps a role (``"encoder"``, ``"generator"``, ...) to :func:`base_identity` of the model the weights
    were trained on. Returns the folder.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", **(metadata or {})})
    data = {k: v for k, v in config.items() if k != INTEGRITY}
    data[INTEGRITY] = integrity_record(out, bases or (config.get(INTEGRITY) or {}).get("bases"))
    (out / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return out


def integrity_record(folder: Path, bases: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"weights_sha256", "weights_bytes", "bases"}`` for the weights file now in ``folder``."""
    weights = folder / WEIGHTS_NAME
    record: dict[str, Any] = {"weights_sha256": sha256_file(weights), "weights_bytes": weights.stat().st_size}
    if bases:
        record["bases"] = {role: dict(identity) for role, identity in bases.items()}
    return record


def read_config(folder: str | Path, *, where: str, fix: str) -> dict[str, Any]:
    """``config.json`` of an artifact folder, with a clear error when it is missing or not JSON."""
    file = Path(folder) / CONFIG_NAME
    if not file.is_file():
        raise ModelNotFoundError(f"{where}: no {CONFIG_NAME} in {str(folder)!r}. {fix}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{where}: {file} is not valid JSON ({err}). {fix}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: {file} holds a {type(data).__name__}, not a JSON object. {fix}")
    return data


def verify_weights(folder: str | Path, config: Mapping[str, Any], *, where: str, fix: str) -> None:
    """Raise :class:`ArtifactError` when ``model.safetensors`` is missing or is not the file ``config.json`` recorded."""
    weights = Path(folder) / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotFoundError(f"{where}: no {WEIGHTS_NAME} in {str(folder)!r}. {fix}")
    record = config.get(INTEGRITY) or {}
    want = record.get("weights_sha256")
    if not want:
        return
    size = weights.stat().st_size
    digest = sha256_file(weights)
    if digest != want:
        raise ArtifactError(
            f"{where}: {weights} is not the file this artifact was saved with: sha256 {digest[:16]}... ({size} bytes), "
            f"config.json recorded {str(want)[:16]}... ({record.get('weights_bytes')} bytes). The weights were "
            f"replaced, edited or truncated. {fix}"
        )


def check_shapes(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], *, where: str, fix: str) -> None:
    """Raise :class:`ArtifactError` naming every missing, unexpected or mis-shaped tensor."""
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    shaped = [(k, tuple(state[k].shape), tuple(expected[k])) for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(expected[k])]
    for key, have, want in shaped[:4]:
        problems.append(f"{key} is {list(have)} in the weights but {list(want)} in the model config.json describes")
    if problems:
        raise ArtifactError(f"{where}: the weights do not match config.json: " + "; ".join(problems) + f". {fix}")


def load_artifact(folder: str | Path, *, expected: Mapping[str, tuple[int, ...]] | None = None, where: str,
                  fix: str = "Re-copy the whole artifact folder, or train it again with `ragzip train`.",
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an artifact folder: its ``config.json`` and its verified weights.

    The weights are checked against the hash ``config.json`` recorded and, given ``expected``, against the shapes of
    the model built from the config.

    Args:
        folder: The artifact folder (``config.json`` and ``model.safetensors``).
        expected: Tensor name -> shape of the model built from the config (:func:`expected_shapes`), if known.
        where: How the error messages name the artifact.
        fix: What the error messages tell the user to do.

    Returns:
        ``(config, state)``: the parsed ``config.json`` and the tensors by name.

    Raises:
        ModelNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        ArtifactError: ``config.json`` is not valid JSON, the weights are not the recorded file, or tensors are
            missing, unexpected or mis-shaped.
    """
    config = read_config(folder, where=where, fix=fix)
    verify_weights(folder, config, where=where, fix=fix)
    state = load_file(str(Path(folder) / WEIGHTS_NAME))
    if expected is not None:
        check_shapes(state, expected, where=where, fix=fix)
    return config, state


def expected_shapes(module: Any, names: Any = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a module's parameters (all, or those in ``names``): the ``expected`` of :func:`load_artifact`."""
    state = module.state_dict() if hasattr(module, "state_dict") else dict(module)
    keep = set(names) if names is not None else None
    return {k: tuple(v.shape) for k, v in state.items() if keep is None or k in keep}
