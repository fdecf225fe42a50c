"""The summarizer: a Hugging Face causal or seq2seq LM, an optional LoRA adapter, the prompt, greedy decoding.

LoRA is implemented here in a few lines (no ``peft`` dependency): each targeted ``nn.Linear`` is wrapped by
:class:`LoRALinear`, which adds ``B @ A`` (rank ``r``, scaled by ``alpha / r``) to the frozen base projection. Only
``lora_A``/``lora_B`` train and only they are saved (:meth:`Summarizer.save_adapter`).

The adapter never touches a model that someone else holds: :func:`ragzip.models.load_causal_lm` shares one frozen
model per process (the generator may be reading it), so :meth:`Summarizer.load` wraps a private copy.

Prompt format (RECOMP): ``Question: {question}\\n Document: {doc1}\\n{doc2}...\\n Summary: `` given to the LM raw
(no chat template, the default) or as the user turn of its chat template (``chat_template: true`` in the adapter).
The causal LM continues the prompt; the seq2seq LM reads it in its encoder. The target is the summary followed by the
tokenizer's end token; an end token first means an empty summary ("nothing here helps").
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ragzip import __version__
from ragzip._lazy import require
from ragzip.artifacts import INTEGRITY, base_identity, check_base, read_config, save_artifact, verify_weights
from ragzip.config_utils import check_choice, check_range, from_dict
from ragzip.errors import ConfigError, InputError, ModelNotFoundError
from ragzip.models import load_causal_lm, load_seq2seq_lm
from ragzip.text import split_sentences as _split

from .config import BACKBONES, RECOMP_TEMPLATE, check_template

logger = logging.getLogger(__name__)

ADAPTER_TYPE = "abstractive"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Llama/SmolLM2/Qwen/Mistral names first, then T5's (q, k, v, o, wi, wo) and GPT-2's (c_attn, c_proj are Conv1D).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "q", "k", "v", "o",
                   "wi", "wo", "wi_0", "wi_1")
ADAPTER_FIX = ("Load the adapter on the model it was trained for (`base_model` in its config.json), use the folder as "
               "it was saved (config.json and model.safetensors together, unedited), or train a new adapter with "
               "`ragzip train abstractive --out DIR`.")
ENDS_SENTENCE = re.compile(r"[.!?。！？][\"'”’)\]」』]*\s*$")


# ------------------------------------------------------------------------------------------------------------ LoRA
@dataclass
class LoRAConfig:
    """Shape of a LoRA adapter."""

    rank: int = field(default=8, metadata={"help": "Rank r of the update B @ A."})
    alpha: float = field(default=16.0, metadata={"help": "Scale: the update is multiplied by alpha / rank."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter's input while training."})
    target_modules: tuple[str, ...] = field(
        default=DEFAULT_TARGETS,
        metadata={"help": "nn.Linear attribute names to adapt (e.g. q_proj, v_proj); names absent from a model are "
                          "skipped, but at least one must match."},
    )
    first_layer: int = field(
        default=0,
        metadata={"help": "Adapt only blocks whose index (the first number in the module path, e.g. layers.12) is "
                          ">= this; blocks below run forward-only in training, which saves their backward pass."},
    )

    def __post_init__(self) -> None:
        check_range("lora", "rank", self.rank, 1)
        check_range("lora", "alpha", self.alpha, 0.0)
        check_range("lora", "dropout", self.dropout, 0.0, 0.9)
        check_range("lora", "first_layer", self.first_layer, 0)
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ConfigError("lora.target_modules is empty; name the projections to adapt, e.g. ['q_proj', 'v_proj'].")


class LoRALinear(nn.Module):
    """``base(x) + dropout(x) @ A^T @ B^T * alpha / r`` with ``base`` frozen; B starts at zero (identity at init)."""

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        self.base = base
        self.rank = config.rank
        self.scaling = config.alpha / config.rank
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(config.rank, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, config.rank, dtype=weight.dtype,
                                               device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT) initialise A

    @property
    def weight(self) -> torch.Tensor:  # some models read their projections' weight (T5 casts to wo.weight.dtype)
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., r) -> (..., out)
        return self.base(x) + (self.dropout(x) @ self.lora_A.T) @ self.lora_B.T * self.scaling


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every ``nn.Linear`` whose attribute name is in ``config.target_modules``; return the wrapped paths.

    Raises:
        ConfigError: when no module matches (the message lists the Linear names the model has).
    """
    wrapped: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, LoRALinear):
            continue
        index = re.search(r"\.(\d+)(\.|$)", f".{parent_name}")
        if config.first_layer and (index is None or int(index.group(1)) < config.first_layer):
            continue
        for child_name, child in list(parent.named_children()):
            if child_name in config.target_modules and type(child) is nn.Linear:
                setattr(parent, child_name, LoRALinear(child, config))
                wrapped.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    if not wrapped:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m) is nn.Linear})
        raise ConfigError(f"lora.target_modules={list(config.target_modules)!r} (first_layer={config.first_layer}) "
                          f"matches no nn.Linear of {type(model).__name__}; its Linear layers are named: "
                          f"{', '.join(names) or 'none'}.")
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` with one ``nn.Linear`` holding ``W + B @ A * alpha / r`` (for inference:
    one matmul per projection instead of three); returns how many were merged. The base weights are not changed in
    place (a merged layer owns a new tensor), so a model that shares them keeps its own."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, LoRALinear):
                continue
            base = child.base
            linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                               device=base.weight.device, dtype=base.weight.dtype)
            with torch.no_grad():
                delta = (child.lora_B.float() @ child.lora_A.float()) * child.scaling  # (out, in)
                linear.weight.copy_((base.weight.float() + delta).to(base.weight.dtype))
                if base.bias is not None:
                    linear.bias.copy_(base.bias)
            linear.requires_grad_(False)
            setattr(parent, name, linear)
            merged += 1
    return merged


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (``...lora_A`` / ``...lora_B``), detached, on CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if k.endswith((".lora_A", ".lora_B"))}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, where: str = "adapter") -> None:
    """Copy adapter weights into a model that :func:`add_lora` wrapped the same way; keys and shapes must match."""
    own = {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"{where} does not fit this model: {len(missing)} adapter weights missing "
                          f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}). "
                          "Was it trained for another base model or other lora.target_modules?")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ConfigError(f"{where}: {key} has shape {tuple(value.shape)}, the model expects "
                              f"{tuple(own[key].shape)}; the adapter was trained with another rank or base model.")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


# ---------------------------------------------------------------------------------------------------- adapter card
@dataclass
class AdapterConfig:
    """``config.json`` of a saved adapter: what it was trained on and how to prompt it."""

    type: str = ADAPTER_TYPE
    ragzip_version: str = ""
    base_model: str = "embedded:smollm2-135m"
    backbone: str = "causal"
    lora: dict[str, Any] = field(default_factory=lambda: asdict(LoRAConfig()))
    prompt_template: str = RECOMP_TEMPLATE
    chat_template: bool = False
    empty_threshold: float | None = None
    summary_prefix: str = ""
    max_passage_tokens: int = 0
    input: str = "passages"  # what it was trained to read: "passages" or "extracted" (extract-then-fuse)
    extract_tokens: int = 0  # with input "extracted": the extractive step's token budget in training
    dtype: str = "float32"
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type != ADAPTER_TYPE:
            raise ConfigError(f"adapter config has type {self.type!r}, expected {ADAPTER_TYPE!r}: this folder holds "
                              "another plugin's artifact.")
        check_choice("adapter", "backbone", self.backbone, BACKBONES)
        check_template(self.prompt_template, "adapter.prompt_template")
        check_choice("adapter", "dtype", self.dtype, ("float32", "float16", "bfloat16"))

    def lora_config(self) -> LoRAConfig:
        return from_dict(LoRAConfig, self.lora, where="adapter.lora", strict=False)


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    """Read ``config.json`` of an adapter folder; unknown keys (from a newer ragzip) are logged and ignored."""
    return _read_adapter(folder)[0]


def _read_adapter(folder: str | Path) -> tuple[AdapterConfig, dict[str, Any]]:
    """The typed card of an adapter folder and its raw ``config.json`` (which holds the integrity record)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ModelNotFoundError(f"no adapter at {str(folder)!r}: {CONFIG_NAME} is missing. Pass a folder written by "
                                 "`ragzip train abstractive --out DIR`, or adapter: none for the plain model.")
    data = read_config(folder, where=f"adapter {str(folder)!r}", fix=ADAPTER_FIX)
    fields = {k: v for k, v in data.items() if k != INTEGRITY}
    return from_dict(AdapterConfig, fields, where=str(path), strict=False), data


def summarizer_identity(name: str, model: nn.Module, tokenizer: Any) -> dict[str, Any]:
    """The summarizer LM's identity an adapter records (:func:`ragzip.artifacts.base_identity`): name, hidden size,
    fingerprints of its input embeddings (when float32, as ragzip loads them) and of its tokenizer."""
    weight = model.get_input_embeddings().weight
    return base_identity(name, model=model if weight.dtype == torch.float32 else None, tokenizer=tokenizer,
                         hidden=int(weight.shape[1]))


# ------------------------------------------------------------------------------------------------------- text cuts
def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (:func:`ragzip.text.split_sentences`: abbreviations, quotes, CJK end marks)."""
    return [s.text.strip() for s in _split(text) if s.text.strip()]


def cut_to_tokens(text: str, max_tokens: int, tokenizer: Any) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_tokens`` tokens, at the last sentence end when that keeps half; ``(text, cut)``."""
    if max_tokens <= 0:
        return text, False
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text, False
    prefix = text[: offsets[max_tokens - 1][1]]
    ends = [s.end for s in _split(prefix)[:-1]] + ([len(prefix)] if ENDS_SENTENCE.search(prefix) else [])
    if ends and ends[-1] >= len(prefix) // 2:
        prefix = prefix[: ends[-1]]
    return prefix.rstrip(), True


# ------------------------------------------------------------------------------------------------------ summarizer
@dataclass(frozen=True)
class SummaryOutput:
    """One decoded summary: the text, the end-marker probability at step one and why decoding stopped."""

    text: str
    raw: str
    n_tokens: int
    p_end: float
    stopped: str  # "empty" (end marker first), "eos" (end marker after text), "length" (hit max_new_tokens),
    #               or "gated" (the compressor's relevance gate decided before decoding)


class _FirstStepGate:
    """Logits processor: at the first generated position, records P(end) and applies the empty-summary threshold.

    With a threshold, a row whose P(end) reaches it is forced to end (empty summary) and every other row is barred
    from ending at once; without one, decoding is plain greedy (empty iff the end marker is the top token).
    """

    def __init__(self, end_ids: list[int], threshold: float | None) -> None:
        self.end_ids = end_ids
        self.threshold = threshold
        self.start: int | None = None
        self.p_end: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        if input_ids.shape[1] != self.start:
            return scores
        probs = scores.float().softmax(-1)  # (B, V)
        self.p_end = probs[:, self.end_ids].sum(-1)  # (B,)
        if self.threshold is None:
            return scores
        scores = scores.clone()
        stop = self.p_end >= self.threshold  # (B,)
        if stop.any():
            forced = torch.full_like(scores[0], float("-inf"))
            forced[self.end_ids[0]] = 0.0
            scores[stop] = forced
        if (~stop).any():
            rows = (~stop).nonzero().squeeze(-1)
            scores[rows[:, None], torch.tensor(self.end_ids, device=scores.device)[None, :]] = float("-inf")
        return scores


class Summarizer:
    """A causal or seq2seq LM that writes query-focused summaries, with an optional LoRA adapter.

    Example:
        >>> s = Summarizer.load("embedded:smollm2-135m", adapter="auto")  # doctest: +SKIP
        >>> out = s.summarize(["Who wrote Hamlet?"], [["Hamlet: a tragedy by William Shakespeare."]])  # doctest: +SKIP
        >>> out[0].text  # doctest: +SKIP
        'Hamlet: a tragedy by William Shakespeare.'
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, backbone: str = "causal",
                 prompt_template: str = RECOMP_TEMPLATE, chat_template: bool = False,
                 adapter: AdapterConfig | None = None, base_model: str = "", summary_prefix: str = "") -> None:
        check_choice("summarizer", "backbone", backbone, BACKBONES)
        check_template(prompt_template, "summarizer.prompt_template")
        self.model = model
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.prompt_template = prompt_template
        self.chat_template = chat_template
        self.adapter = adapter
        self.base_model = base_model
        self.summary_prefix = summary_prefix
        self.merged = False  # the adapter folded into the weights (inference only): nothing left to train or save
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.end_ids = self._end_ids()

    # ------------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, model: str, *, backbone: str = "causal", adapter: str | Path | None = None,
             device: str = "cpu", private: bool = False, merge: bool = False) -> Summarizer:
        """Load the summarizer ``model`` (embedded name, HF id or folder), and the adapter folder when given.

        ``private`` copies a shared (cached) causal LM even without an adapter, for training a new one. ``merge``
        folds the adapter into the projections' weights (inference only: the adapter can no longer be trained or
        saved).
        """
        card = read_adapter_config(adapter) if adapter else None
        if card is not None and card.backbone != backbone:
            raise ConfigError(f"adapter {str(adapter)!r} was trained for backbone {card.backbone!r}, but the "
                              f"compressor says backbone: {backbone!r}. Set backbone: {card.backbone}.")
        if backbone == "causal":
            lm, tokenizer = load_causal_lm(model, device)
            if card is not None or private:
                lm = copy.deepcopy(lm)  # the cached model may be the generator's: never adapt it in place
        else:
            lm, tokenizer = load_seq2seq_lm(model, device)
        summarizer = cls(lm, tokenizer, backbone=backbone,
                         prompt_template=card.prompt_template if card else RECOMP_TEMPLATE,
                         chat_template=card.chat_template if card else False, adapter=card, base_model=model,
                         summary_prefix=card.summary_prefix if card else "")
        if card is not None:
            summarizer.load_adapter(Path(adapter))  # type: ignore[arg-type]
            if merge:
                merge_lora(summarizer.model)
                summarizer.merged = True
        return summarizer

    def add_adapter(self, lora: LoRAConfig) -> list[str]:
        """Wrap the model's projections with fresh LoRA layers (training); only they require grad."""
        if self.merged:
            raise InputError("this summarizer's adapter is merged into its weights (loaded with merge=True, for "
                             "inference); load it with Summarizer.load(..., merge=False) to add a new one.")
        self.model.requires_grad_(False)
        wrapped = add_lora(self.model, lora)
        self.adapter = AdapterConfig(base_model=self.base_model, backbone=self.backbone, lora=asdict(lora),
                                     prompt_template=self.prompt_template, chat_template=self.chat_template,
                                     summary_prefix=self.summary_prefix)
        logger.info("LoRA r=%d on %d projections (%s, ...): %d trainable parameters", lora.rank, len(wrapped),
                    wrapped[0], sum(p.numel() for p in self.trainable_parameters()))
        return wrapped

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if n.endswith((".lora_A", ".lora_B"))]

    def load_adapter(self, folder: Path) -> None:
        """Wrap the model with the adapter in ``folder``, after checking its weights file against the SHA-256 in
        ``config.json`` and this model against the base-model identity recorded there (:mod:`ragzip.artifacts`)."""
        card, raw = _read_adapter(folder)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelNotFoundError(f"adapter {str(folder)!r} has {CONFIG_NAME} but no {WEIGHTS_NAME}; "
                                     "re-run `ragzip train abstractive --out DIR` or restore the file.")
        where = f"adapter {str(folder)!r}"
        verify_weights(folder, raw, where=where, fix=ADAPTER_FIX)
        check_base(raw, "summarizer", summarizer_identity(self.base_model or card.base_model, self.model,
                                                          self.tokenizer), where=where, fix=ADAPTER_FIX)
        add_lora(self.model, card.lora_config())
        load_lora_state_dict(self.model, load_file(str(weights)), where=f"adapter {str(folder)!r}")
        self.model.eval()
        self.adapter = card
        self.prompt_template, self.chat_template = card.prompt_template, card.chat_template
        self.summary_prefix = card.summary_prefix

    def save_adapter(self, folder: str | Path, **card: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` holding only the LoRA weights (``dtype`` from the card).

        ``config.json`` records the file's SHA-256 and the summarizer model's identity, checked when it loads.
        """
        if self.merged:
            raise InputError("this summarizer's adapter is merged into its weights (loaded with merge=True, for "
                             "inference); load it with Summarizer.load(..., merge=False) to train or save it.")
        if self.adapter is None:
            raise InputError("this summarizer has no adapter to save; call add_adapter() (training) first.")
        for key, value in card.items():
            setattr(self.adapter, key, value)
        self.adapter.ragzip_version = __version__
        self.adapter.__post_init__()
        dtype = getattr(torch, self.adapter.dtype)
        state = {k: v.to(dtype) for k, v in lora_state_dict(self.model).items()}
        identity = summarizer_identity(self.adapter.base_model or self.base_model, self.model, self.tokenizer)
        return save_artifact(folder, asdict(self.adapter), state, bases={"summarizer": identity},
                             metadata={"type": ADAPTER_TYPE})

    # ------------------------------------------------------------------------------------------------- prompts
    def _end_ids(self) -> list[int]:
        ids: list[int] = []
        for value in (getattr(self.tokenizer, "eos_token_id", None),
                      getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, int) and v not in ids:
                    ids.append(v)
        if not ids:
            raise ConfigError(f"the summarizer's tokenizer ({type(self.tokenizer).__name__}) has no end token "
                              "(eos_token); set one, it marks the end of a summary and an empty summary.")
        return ids

    def prompt(self, question: str, documents: Sequence[str]) -> str:
        """The prompt text: RECOMP's template with the documents joined by newlines (chat-wrapped if so trained)."""
        text = self.prompt_template.format(question=question, documents="\n".join(documents))
        if self.chat_template and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    def encode_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=not self.chat_template)["input_ids"])

    def encode_target(self, target: str) -> list[int]:
        """Target ids: ``summary_prefix``, the summary (no special tokens), the end token; ``""``: the end token alone.

        A fixed prefix turns the first decoded token into a two-way choice (prefix or end token), so P(end) at step
        one is a clean "nothing helps" probability rather than one competing with every possible first word.
        """
        if not target.strip():
            return [self.end_ids[0]]
        text = f"{self.summary_prefix} {target}" if self.summary_prefix else target
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.end_ids[0]]

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------------ decoding
    def summarize(self, questions: Sequence[str], documents: Sequence[Sequence[str]], *, max_new_tokens: int = 128,
                  empty_threshold: float | None = None) -> list[SummaryOutput]:
        """Summarize ``documents[i]`` for ``questions[i]`` (one batch); ``text == ""`` means "nothing helps"."""
        prompts = [self.encode_prompt(self.prompt(q, list(d))) for q, d in zip(questions, documents, strict=True)]
        return self.generate(prompts, max_new_tokens=max_new_tokens, empty_threshold=empty_threshold)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[list[int]], *, max_new_tokens: int,
                 empty_threshold: float | None = None) -> list[SummaryOutput]:
        """Greedy-decode each prompt (token ids), stopping at the end token or ``max_new_tokens``; one batch."""
        if not prompts:
            return []
        gate = _FirstStepGate(self.end_ids, empty_threshold)
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for row, p in enumerate(prompts):
            if self.backbone == "causal":  # left padding: every row's last prompt token sits at the end
                ids[row, width - len(p):], mask[row, width - len(p):] = torch.tensor(p), 1
            else:
                ids[row, :len(p)], mask[row, :len(p)] = torch.tensor(p), 1
        transformers = require("transformers")  # lazy: slow to import, and the CLI imports this module
        config = transformers.GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=self.end_ids, pad_token_id=pad,
            decoder_start_token_id=getattr(self.model.config, "decoder_start_token_id", None))
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, logits_processor=transformers.LogitsProcessorList([gate]))
        self.model.train(was_training)
        new = out[:, width:] if self.backbone == "causal" else out[:, 1:]  # (B, n_new): drop prompt / start token
        p_end = gate.p_end.tolist() if gate.p_end is not None else [0.0] * len(prompts)
        results = []
        for row in range(len(prompts)):
            tokens = new[row].tolist()
            ended = next((i for i, t in enumerate(tokens) if t in self.end_ids), None)
            body = tokens if ended is None else tokens[:ended]
            raw = self.tokenizer.decode(body, skip_special_tokens=True)
            text = raw.strip()
            if self.summary_prefix and text.startswith(self.summary_prefix):
                text = text[len(self.summary_prefix):].strip()
            stopped = "length" if ended is None else ("eos" if text else "empty")
            results.append(SummaryOutput(text, raw, len(body), float(p_end[row]), stopped))
        return results

    # ------------------------------------------------------------------------------------------------ training
    def loss(self, batch: Sequence[tuple[list[int], list[int]]], *, first_token_weight: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy over target tokens of ``(prompt_ids, target_ids)`` pairs (prompt tokens not scored).

        ``first_token_weight`` scales the loss at each target's first token: the "summarize or stay empty" decision.
        """
        device = self.device
        rows = []
        for prompt, target in batch:
            if self.backbone == "causal":
                inputs = prompt + target
                labels = [-100] * len(prompt) + target
                rows.append((inputs, labels, len(prompt)))
            else:
                rows.append((prompt, target, 0))
        if self.backbone == "causal":
            width = max(len(r[0]) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, (inp, lab, _) in enumerate(rows):  # right padding: positions stay 0..len-1
                ids[i, :len(inp)], mask[i, :len(inp)], labels[i, :len(lab)] = (torch.tensor(inp), 1,
                                                                              torch.tensor(lab))
            # Logits only where targets are predicted: the LM head is ~20% of a small model's compute per position.
            keep = width - min(r[2] for r in rows) + 1
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                logits_to_keep=keep).logits  # (B, keep, V): positions width-keep .. width-1
            logits, labels = logits[:, :-1], labels[:, width - keep + 1:].to(device)  # predict token t+1 at t
            first = torch.zeros_like(labels, dtype=torch.bool)
            for i, (_, _, n_prompt) in enumerate(rows):
                first[i, n_prompt - 1 - (width - keep)] = True
        else:
            width = max(len(r[0]) for r in rows)
            twidth = max(len(r[1]) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T_enc)
            mask = torch.zeros_like(ids)
            labels = torch.full((len(rows), twidth), -100, dtype=torch.long)  # (B, T_dec)
            for i, (inp, lab, _) in enumerate(rows):
                ids[i, :len(inp)], mask[i, :len(inp)], labels[i, :len(lab)] = (torch.tensor(inp), 1,
                                                                              torch.tensor(lab))
            labels = labels.to(device)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels).logits
            first = torch.zeros_like(labels, dtype=torch.bool)
            first[:, 0] = True
        per_token = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                                ignore_index=-100, reduction="none").view(labels.shape)  # (B, T)
        weights = (labels != -100).float() * torch.where(first, first_token_weight, 1.0)  # (B, T)
        return (per_token * weights).sum() / weights.sum().clamp(min=1.0)
