"""Sentence scorers behind the ``extractive`` compressor.

Three backbones share one protocol, ``score(items) -> one list of scores per item``, where an item is
``(query, title, sentences)`` for one passage:

* :class:`CrossEncoderScorer` (default): ragzip's own classifier. One encoder pass per passage scores all its sentences
  (as Provence does): the input is ``[CLS] query [SEP] title: s1 s2 ... sn [SEP]``, token states are mean-pooled over
  each sentence's span, and a small head maps ``[sentence; CLS]`` to a logit. The context is the sentence's own
  passage, never the other passages (EXIT's intent; its released code passed all documents). Passages longer than the
  window are scored in overlapping windows, so every sentence is scored exactly once with neighbours on both sides; the
  query and title are never cut. A single sentence longer than the window is scored from its first part.
  The encoder is all-MiniLM-L6-v2 whose top layers were fine-tuned; the artifact stores only those layers and the
  head (the bottom layers and embeddings load from the embedded model named in ``config.json``).
* :class:`ExitScorer`: EXIT's causal-LM Yes/No classifier (``doubleyyh/exit-gemma-2b`` LoRA on ``google/gemma-2b-it``),
  P(useful) = softmax over the first sub-tokens of "Yes" and "No" at the last prompt position. When the prompt is too
  long the document is cut around the sentence; the query, the sentence and the answer suffix are never cut (EXIT's
  code right-truncated the whole prompt, which can cut off the suffix).
* :class:`RecompScorer`: RECOMP's dual encoder, mean pooling, score = dot(query, sentence); pick with ``top_k``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from safetensors.torch import load_file
from torch.ao.quantization import quantize_dynamic

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
from ragzip.errors import ConfigError, InputError, MissingDependencyError, ModelNotFoundError
from ragzip.models import EMBEDDED, hub_error, infer_device, resolve

logger = logging.getLogger(__name__)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DEFAULT_ARTIFACT = ARTIFACTS / "default"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MIN_PASSAGE_TOKENS = 32  # the query may use the window up to this much room for the passage
ARTIFACT_FIX = ("Use the artifact folder as it was saved (config.json and model.safetensors together, unedited) on the "
                "encoder its config.json names (`base_model`), or train a new one with `ragzip train extractive --out "
                "DIR`.")

EXIT_PROMPT = (
    "<start_of_turn>user\nQuery:\n{query}\nFull context:\n{context}\nSentence:\n{sentence}\n"
    'Is this sentence useful in answering the query? Answer only "Yes" or "No".<end_of_turn>\n'
    "<start_of_turn>model\n"
)


class ScoreItem(NamedTuple):
    """One passage to score: the query, the passage title ("" if none) and its sentences."""

    query: str
    title: str
    sentences: Sequence[str]


class SentenceScorer(Protocol):
    """Scores every sentence of every item; ``default_threshold`` is None when scores are not probabilities."""

    default_threshold: float | None

    def score(self, items: Sequence[ScoreItem]) -> list[list[float]]: ...


def _dtype(name: str, device: str, *, large: bool = False) -> Any:
    if name == "auto":
        return torch.bfloat16 if (large and device.startswith("cuda")) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _quantize_int8(model: Any, device: str) -> Any:
    """int8 dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized on the fly): the
    encoder runs ~2x faster on a CPU. CPU only."""
    if not device.startswith("cpu"):
        raise ConfigError(f"dtype 'int8' (dynamic quantization) runs on a CPU only, but the device is {device!r}; "
                          "use dtype float16/bfloat16 on a GPU, or set device: cpu.")
    model.to(device="cpu", dtype=torch.float32)
    with warnings.catch_warnings():  # torch marks its quantized tensor constructors deprecated; the kernels work
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


# ====================================================================================================== crossencoder
@dataclass
class CrossEncoderConfig:
    """``config.json`` of a crossencoder artifact: the base model, what was trained, and how to run it."""

    type: str = "extractive"
    backbone: str = "crossencoder"
    ragzip_version: str = ""
    base_model: str = field(default="embedded:minilm", metadata={"help": "Encoder the artifact's layers apply to."})
    base_model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    trained_layers: int = field(default=3, metadata={"help": "How many top encoder layers the artifact replaces."})
    head_hidden: int = 256
    head_type: str = field(default="interaction", metadata={"help": "Sentence head: interaction or concat."})
    window: int = 256
    max_title_tokens: int = 32
    use_title: bool = True
    threshold: float = field(default=0.5, metadata={"help": "Default threshold, calibrated on held-out data."})
    relative: float | None = field(
        default=None,
        metadata={"help": "Query-adaptive default: keep sentences scoring >= relative x the question's best score; "
                          "calibrated on held-out data (None: use the absolute threshold)."},
    )
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


HEAD_TYPES = ("interaction", "concat")
MAX_POSITION = 16  # sentence positions 0..15 get their own embedding; later ones share the last


def _module_class() -> type:
    nn = torch.nn

    class SentenceHead(nn.Module):
        """Maps pooled sentence states to logits.

        ``interaction``: ``[s; cls; q * s; |q - s|]`` (s: the sentence's mean token state, q: the query's, cls: the
        window's first token) plus a learned embedding of the sentence's position in its passage, then an MLP.
        The product and difference give the head a query-sentence similarity from the first step, as a bi-encoder
        would have, on top of what the joint encoding learns. ``concat``: ``[s; cls]`` only, no position embedding.
        """

        def __init__(self, d_model: int, hidden: int, kind: str) -> None:
            super().__init__()
            self.kind = kind
            n_in = 4 * d_model if kind == "interaction" else 2 * d_model
            self.dropout = nn.Dropout(0.1)
            self.proj = nn.Linear(n_in, hidden)
            self.position = nn.Embedding(MAX_POSITION, hidden) if kind == "interaction" else None
            self.out = nn.Linear(hidden, 1)

        def forward(self, sentences: Any, cls: Any, query: Any, positions: Any) -> Any:
            # sentences: (B, S, d); cls, query: (B, d); positions: (B, S)
            cls = cls[:, None].expand_as(sentences)  # (B, S, d)
            if self.kind == "interaction":
                query = query[:, None].expand_as(sentences)  # (B, S, d)
                features = torch.cat([sentences, cls, query * sentences, (query - sentences).abs()], dim=-1)
            else:
                features = torch.cat([sentences, cls], dim=-1)  # (B, S, 2d)
            hidden = self.proj(self.dropout(features))  # (B, S, H)
            if self.position is not None:
                hidden = hidden + self.position(positions.clamp(max=MAX_POSITION - 1))
            return self.out(nn.functional.gelu(hidden)).squeeze(-1)  # (B, S)

    class CrossEncoderModel(nn.Module):
        """BERT encoder + sentence head: one pass per (query, passage) window, one logit per sentence span."""

        def __init__(self, encoder: Any, config: CrossEncoderConfig) -> None:
            super().__init__()
            if config.head_type not in HEAD_TYPES:
                raise ConfigError(f"head_type = {config.head_type!r} is not one of {HEAD_TYPES}; the artifact was "
                                  "written by a newer ragzip: upgrade ragzip.")
            self.config = config
            self.encoder = encoder
            self.head = SentenceHead(encoder.config.hidden_size, config.head_hidden, config.head_type)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, pool: Any, query_pool: Any,
                    positions: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state  # (B, T, d)
            return self.score_hidden(hidden, pool, query_pool, positions)

        def score_hidden(self, hidden: Any, pool: Any, query_pool: Any, positions: Any) -> Any:
            """Logits (B, S) from the encoder's last hidden states (B, T, d) and the span pooling weights."""
            sentences = torch.bmm(pool, hidden)  # (B, S, T) @ (B, T, d) -> (B, S, d)
            query = torch.bmm(query_pool[:, None], hidden)[:, 0]  # (B, 1, T) @ (B, T, d) -> (B, d)
            return self.head(sentences, hidden[:, 0], query, positions)

        def trained_parameters(self) -> dict[str, Any]:
            """The parameters an artifact stores: the top ``trained_layers`` encoder layers and the head."""
            n_layers = len(self.encoder.encoder.layer)
            first = n_layers - self.config.trained_layers
            prefixes = tuple(f"encoder.encoder.layer.{i}." for i in range(first, n_layers)) + ("head.",)
            return {k: v for k, v in self.named_parameters() if k.startswith(prefixes)}

        def freeze_base(self) -> None:
            """Train only what the artifact stores."""
            trained = self.trained_parameters()
            for name, param in self.named_parameters():
                param.requires_grad_(name in trained)

    return CrossEncoderModel


@functools.lru_cache(maxsize=1)
def _cross_encoder_class() -> type:
    return _module_class()


@dataclass
class Window:
    """One encoder input: token ids with the spans of the sentences it scores (``sentences`` index the item)."""

    item: int
    input_ids: list[int]
    token_type_ids: list[int]
    spans: list[tuple[int, int]]
    sentences: list[int]
    query_span: tuple[int, int] = (1, 1)


def plan_windows(lengths: Sequence[int], capacity: int) -> list[tuple[int, int, int]]:
    """Cut a passage's sentences into windows of at most ``capacity`` tokens.

    Returns ``(first, stop, left)`` per window: sentences ``first:stop`` are scored in it, ``left`` tokens of the
    preceding sentences come before them as context, and the rest of the window is filled with following sentences.
    Each sentence is scored in exactly one window; a quarter of the window on each side is kept for context.
    """
    n = len(lengths)
    total = sum(lengths)
    if total <= capacity:
        return [(0, n, 0)]
    reserve = capacity // 4
    before = [0] * (n + 1)
    for i, length in enumerate(lengths):
        before[i + 1] = before[i] + length
    windows = []
    i = 0
    while i < n:
        left = min(reserve, before[i])
        j, used = i, 0
        while j < n:
            right = min(reserve, total - before[j + 1])
            if left + used + lengths[j] + right > capacity:
                break
            used += lengths[j]
            j += 1
        if j == i:  # one sentence (nearly) fills the window: give it room, shrink the left context
            j = i + 1
            left = max(0, min(left, capacity - lengths[i]))
        windows.append((i, j, left))
        i = j
    return windows


def encode_items(
    tokenizer: Any,
    items: Sequence[ScoreItem],
    *,
    window: int,
    max_title_tokens: int = 32,
    use_title: bool = True,
) -> list[Window]:
    """Tokenize items into encoder windows ``[CLS] query [SEP] title: context [SEP]`` with sentence spans."""
    texts: list[str] = []
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
        return index[text]

    refs = [(ref(it.query), ref(f"{it.title}:") if (use_title and it.title.strip()) else -1,
             [ref(s) for s in it.sentences]) for it in items]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows: list[Window] = []
    for n, (q_ref, t_ref, s_refs) in enumerate(refs):
        query = ids[q_ref]
        title = ids[t_ref][:max_title_tokens] if t_ref >= 0 else []
        capacity = window - 3 - len(query) - len(title)
        if capacity < MIN_PASSAGE_TOKENS:
            raise InputError(
                f"the query is {len(query)} tokens long; the extractive classifier's window is {window} tokens and "
                f"needs room for at least {MIN_PASSAGE_TOKENS} tokens of each passage. Shorten the query, or raise "
                "`window` in the compressor config (at most 512 for the MiniLM backbone)."
            )
        sentences = [ids[r] or [tokenizer.unk_token_id] for r in s_refs]
        flat = [t for s in sentences for t in s]
        starts = [0]
        for s in sentences:
            starts.append(starts[-1] + len(s))
        head = [cls, *query, sep, *title]
        for first, stop, left in plan_windows([len(s) for s in sentences], capacity):
            core_start = starts[first]
            body = flat[core_start - left:core_start]
            spans = []
            for k in range(first, stop):
                piece = sentences[k][: capacity - len(body)]  # only a sentence longer than the window is cut
                spans.append((len(head) + len(body), len(head) + len(body) + len(piece)))
                body.extend(piece)
            body.extend(flat[starts[stop]: starts[stop] + capacity - len(body)])  # right context
            input_ids = head + body + [sep]
            types = [0] * (len(query) + 2) + [1] * (len(title) + len(body) + 1)
            windows.append(Window(n, input_ids, types, spans, list(range(first, stop)), (1, 1 + len(query))))
    return windows


def collate(windows: Sequence[Window], pad_id: int = 0) -> dict[str, Any]:
    """Pad windows into tensors; ``pool`` averages each sentence span's token states (zeros pad the rest)."""
    batch = len(windows)
    length = max(len(w.input_ids) for w in windows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, length), dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    pool, query_pool, positions = pooling(windows, length)
    for b, w in enumerate(windows):
        input_ids[b, : len(w.input_ids)] = torch.tensor(w.input_ids)
        token_type_ids[b, : len(w.token_type_ids)] = torch.tensor(w.token_type_ids)
        attention_mask[b, : len(w.input_ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, "pool": pool,
            "query_pool": query_pool, "positions": positions}


def pooling(windows: Sequence[Any], length: int) -> tuple[Any, Any, Any]:
    """Mean-pooling weights of the sentence spans (B, S, T) and query span (B, T), and sentence positions (B, S).

    ``windows`` need ``spans``, ``query_span`` and ``sentences`` (a :class:`Window` or a cached training window).
    """
    n_sent = max(len(w.spans) for w in windows)
    pool = torch.zeros((len(windows), n_sent, length), dtype=torch.float32)  # (B, S, T)
    query_pool = torch.zeros((len(windows), length), dtype=torch.float32)  # (B, T)
    positions = torch.zeros((len(windows), n_sent), dtype=torch.long)  # (B, S)
    for b, w in enumerate(windows):
        for s, (a, e) in enumerate(w.spans):
            pool[b, s, a:e] = 1.0 / (e - a)
        qa, qe = w.query_span
        query_pool[b, qa:qe] = 1.0 / max(qe - qa, 1)
        positions[b, : len(w.sentences)] = torch.tensor(w.sentences)
    return pool, query_pool, positions


def batches_by_length(windows: Sequence[Window], batch_size: int, max_padding: float = 0.15) -> list[list[int]]:
    """Indices of ``windows`` grouped into batches of similar length.

    A batch grows (in length order) while padding stays under ``max_padding`` of its real tokens: on a CPU padded
    positions are pure cost, and unpadded sequences also take the fast attention path, so uneven lengths run alone.
    """
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        length = len(windows[i].input_ids)
        if current and (len(current) >= batch_size or (len(current) + 1) * length > (1 + max_padding) * (real + length)):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += length
    if current:
        batches.append(current)
    return batches


class CrossEncoderScorer:
    """ragzip's trained sentence classifier (see the module docstring).

    Example:
        >>> scorer = CrossEncoderScorer.from_pretrained()  # doctest: +SKIP
        >>> scorer.score([ScoreItem("Who wrote Hamlet?", "Hamlet", ["Shakespeare wrote it.", "It rained."])])
        [[0.97, 0.01]]  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, window: int | None = None, batch_size: int = 16,
                 use_title: bool | None = None, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config: CrossEncoderConfig = model.config
        self.window = window or self.config.window
        self.batch_size = batch_size
        self.use_title = self.config.use_title if use_title is None else use_title
        self.device = device
        self.base_identity: dict[str, Any] | None = None  # the encoder's identity as loaded (before any cast)
        self.default_threshold: float | None = self.config.threshold
        self.default_relative: float | None = self.config.relative
        max_pos = getattr(model.encoder.config, "max_position_embeddings", 512)
        if self.window > max_pos:
            raise ConfigError(f"compressor[extractive].window = {self.window} is longer than the encoder's "
                              f"{max_pos} positions; use at most {max_pos}.")

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_base(cls, base_model: str = "embedded:minilm", *, trained_layers: int = 2, head_hidden: int = 256,
                  head_type: str = "interaction", window: int = 256, seed: int = 0,
                  **kwargs: Any) -> CrossEncoderScorer:
        """A fresh (untrained head) scorer over ``base_model``: the starting point of training."""
        transformers = require("transformers")  # lazy: slow to import, and the CLI imports this module
        path = resolve(base_model)
        try:
            encoder = transformers.AutoModel.from_pretrained(path)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        except OSError as err:
            raise hub_error(base_model, err) from None
        n_layers = encoder.config.num_hidden_layers
        if not 0 <= trained_layers <= n_layers:
            raise ConfigError(f"trained_layers = {trained_layers} must lie in [0, {n_layers}] for {base_model!r}.")
        config = CrossEncoderConfig(base_model=base_model, base_model_id=_model_id(base_model, encoder),
                                    trained_layers=trained_layers, head_hidden=head_hidden, head_type=head_type,
                                    window=window)
        torch.manual_seed(seed)
        model = _cross_encoder_class()(encoder, config)
        model.freeze_base()
        scorer = cls(model, tokenizer, **kwargs)
        scorer.base_identity = encoder_identity(config, encoder, tokenizer)
        return scorer

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, device: str | None = None,
                        dtype: str = "auto", **kwargs: Any) -> CrossEncoderScorer:
        """Load an artifact folder (``config.json`` + ``model.safetensors``) onto its base encoder.

        Args:
            path: The artifact folder; None or ``default`` loads the one shipped with ragzip.
            device: torch device; None infers it.
            dtype: ``auto``/``float32``/``bfloat16``/``float16``.
        """
        transformers = require("transformers")
        folder = artifact_folder(path)
        config, raw = _read_artifact(folder)
        where = f"extractive artifact {str(folder)!r}"
        verify_weights(folder, raw, where=where, fix=ARTIFACT_FIX)
        base = resolve(config.base_model)
        try:
            encoder = transformers.AutoModel.from_pretrained(base)
            tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        except OSError as err:
            raise hub_error(config.base_model, err) from None
        identity = encoder_identity(config, encoder, tokenizer)  # from the weights as loaded, before any cast
        model = _cross_encoder_class()(encoder, config)
        state = load_file(str(folder / WEIGHTS_NAME))
        expected = {k: tuple(v.shape) for k, v in model.trained_parameters().items()}
        check_shapes(state, expected, where=f"{where} (trained_layers={config.trained_layers}, head_hidden="
                                            f"{config.head_hidden}, head_type={config.head_type!r})", fix=ARTIFACT_FIX)
        check_base(raw, "encoder", identity, where=where, fix=ARTIFACT_FIX)
        model.load_state_dict(state, strict=False)
        device = infer_device(device or None)
        if dtype == "int8":
            model = _quantize_int8(model, device)
            device = "cpu"
        else:
            model.to(device=device, dtype=_dtype(dtype, device))
        model.eval()
        model.requires_grad_(False)
        scorer = cls(model, tokenizer, device=device, **kwargs)
        scorer.base_identity = identity
        return scorer

    def save_pretrained(self, path: str | Path, *, weights_dtype: str = "float32", **config_updates: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (only the trained layers and head).

        ``weights_dtype="float16"`` halves the file; loading casts back to the model's dtype (float32 on a CPU).
        ``config.json`` records the file's SHA-256 and the base encoder's identity (:mod:`ragzip.artifacts`), checked
        when the artifact loads.
        """
        folder = Path(path)
        for key, value in config_updates.items():
            setattr(self.config, key, value)
        self.config.ragzip_version = __version__
        if weights_dtype not in ("float32", "float16"):
            raise ConfigError(f"weights_dtype = {weights_dtype!r}: use 'float32' or 'float16'.")
        dtype = getattr(torch, weights_dtype)
        state = {k: v.detach().to("cpu", dtype).contiguous()
                 for k, v in self.model.trained_parameters().items()}
        encoder = self.model.encoder
        as_loaded = encoder.get_input_embeddings().weight.dtype == torch.float32
        identity = encoder_identity(self.config, encoder, self.tokenizer, embeddings=as_loaded)
        if not as_loaded and self.base_identity and self.base_identity.get("embeddings"):
            identity["embeddings"] = self.base_identity["embeddings"]  # cast after loading: keep the as-loaded hash
        return save_artifact(folder, asdict(self.config), state, bases={"encoder": identity})

    # ----------------------------------------------------------------------------------------------- scoring
    def windows(self, items: Sequence[ScoreItem]) -> list[Window]:
        return encode_items(self.tokenizer, items, window=self.window, max_title_tokens=self.config.max_title_tokens,
                            use_title=self.use_title)

    def logits(self, windows: Sequence[Window]) -> Any:
        """The model's logits for a batch of windows: (B, S) tensor."""
        batch = {k: v.to(self.device) for k, v in collate(windows, self.tokenizer.pad_token_id or 0).items()}
        dtype = next(self.model.parameters()).dtype
        batch["pool"], batch["query_pool"] = batch["pool"].to(dtype), batch["query_pool"].to(dtype)
        return self.model(**batch)

    def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        """P(useful) of every sentence of every item; all windows of all items are batched by length."""
        out = [[math.nan] * len(it.sentences) for it in items]
        windows = self.windows(items)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for idx in batches_by_length(windows, self.batch_size):
                    group = [windows[i] for i in idx]
                    probs = torch.sigmoid(self.logits(group).float()).cpu().tolist()
                    for w, row in zip(group, probs, strict=True):
                        for k, p in zip(w.sentences, row, strict=False):
                            out[w.item][k] = p
        finally:
            self.model.train(was_training)
        return out


def artifact_folder(spec: str | Path | None) -> Path:
    """The folder an artifact spec names: ``default`` (or None) is the classifier shipped with ragzip."""
    return DEFAULT_ARTIFACT if spec in (None, "default") else Path(str(spec)).expanduser()


def read_artifact_config(folder: Path) -> CrossEncoderConfig:
    """Read ``config.json`` of a crossencoder artifact (unknown keys warn: a newer ragzip may have written it)."""
    return _read_artifact(folder)[0]


def _read_artifact(folder: Path) -> tuple[CrossEncoderConfig, dict[str, Any]]:
    """The typed config of a crossencoder artifact and its raw ``config.json`` (which holds the integrity record)."""
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ModelNotFoundError(
            f"no {CONFIG_NAME} in {str(folder)!r}: not an extractive artifact folder. Pass the folder written by "
            "`ragzip train extractive --out DIR`, or `default` for the classifier shipped with ragzip."
        )
    data = read_config(folder, where=f"extractive artifact {str(folder)!r}", fix=ARTIFACT_FIX)
    if data.get("type", "extractive") != "extractive" or data.get("backbone", "crossencoder") != "crossencoder":
        raise ModelNotFoundError(f"{file} describes a {data.get('type')!r}/{data.get('backbone')!r} artifact, "
                                 "not an extractive crossencoder.")
    fields = {k: v for k, v in data.items() if k != INTEGRITY}
    return from_dict(CrossEncoderConfig, fields, where=str(file), strict=False), data


def encoder_identity(config: CrossEncoderConfig, encoder: Any, tokenizer: Any, *,
                     embeddings: bool = True) -> dict[str, Any]:
    """The base encoder's identity an artifact records (:func:`ragzip.artifacts.base_identity`): its name, widths,
    ``trained_layers``, and fingerprints of its input embeddings (unless ``embeddings`` is false) and vocabulary."""
    return base_identity(config.base_model, model=encoder if embeddings else None, tokenizer=tokenizer,
                         hidden=int(encoder.config.hidden_size), layers=int(encoder.config.num_hidden_layers),
                         trained_layers=config.trained_layers)


def _model_id(spec: str, model: Any) -> str:
    return EMBEDDED.get(spec, getattr(model.config, "_name_or_path", spec))


# ============================================================================================================== EXIT
class ExitScorer:
    """EXIT's causal-LM classifier: P(useful) = softmax over the "Yes"/"No" logits after the EXIT prompt.

    ``model`` is a causal LM folder/id, or a PEFT LoRA adapter (``adapter_config.json``) applied to ``base_model``.
    """

    def __init__(self, model: Any, tokenizer: Any, *, window: int = 1024, batch_size: int = 8,
                 device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.window = window
        self.batch_size = batch_size
        self.device = device
        self.default_threshold: float | None = 0.5
        self.yes_id = _first_token(tokenizer, "Yes")
        self.no_id = _first_token(tokenizer, "No")
        if self.yes_id == self.no_id:
            raise ModelNotFoundError("the tokenizer maps 'Yes' and 'No' to the same first token; it cannot be an "
                                     "EXIT classifier.")

    @classmethod
    def from_pretrained(cls, spec: str, *, base_model: str = "", device: str | None = None, dtype: str = "auto",
                        **kwargs: Any) -> ExitScorer:
        transformers = require("transformers")
        device = infer_device(device or None)
        torch_dtype = _dtype(dtype, device, large=True)
        path = resolve(spec)
        adapter = _adapter_config(path)
        try:
            if adapter is not None:
                try:
                    peft = require("peft")
                except MissingDependencyError:
                    raise MissingDependencyError(
                        f"{spec!r} is a LoRA adapter; loading it needs `peft`: `pip install peft`."
                    ) from None
                base = base_model or adapter.get("base_model_name_or_path", "")
                if not base:
                    raise ConfigError(f"{spec!r} is a LoRA adapter that names no base model; set "
                                      "`base_model` (google/gemma-2b-it for EXIT).")
                model = transformers.AutoModelForCausalLM.from_pretrained(resolve(base), dtype=torch_dtype)
                model = peft.PeftModel.from_pretrained(model, path)
                try:
                    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                except (OSError, ValueError):
                    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve(base))
            else:
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
                tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        except OSError as err:
            raise hub_error(spec, err) from None
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(model, tokenizer, device=device, **kwargs)

    def prompt_ids(self, query: str, title: str, sentences: Sequence[str], k: int) -> list[int]:
        """Token ids of the EXIT prompt for sentence ``k``, fitted into the window.

        The context is the passage itself (``title`` line + sentences). If the prompt is too long, the context is cut to
        a window around sentence ``k``; the query, the sentence and the suffix stay whole (a sentence longer than the
        window on its own is cut from its end, the one case where it must be).
        """
        head = f"{title}\n" if title.strip() else ""
        context = head + " ".join(s.strip() for s in sentences)
        sentence = sentences[k].strip()
        ids = self._encode(query, context, sentence)
        if len(ids) <= self.window:
            return ids
        fixed = len(self._encode(query, "", sentence))
        if fixed > self.window:  # no room even without context: cut the sentence itself
            room = self.window - len(self._encode(query, "", ""))
            if room < 8:
                raise InputError(f"the query is too long for the EXIT window of {self.window} tokens; shorten it "
                                 "or raise `window`.")
            sentence = self._cut(sentence, room - 4)
            return self._encode(query, "", sentence)[: self.window]
        start = len(head) + sum(len(s.strip()) + 1 for s in sentences[:k])
        budget = self.window - fixed - 4
        while True:
            cut = self._around(context, start, start + len(sentence), budget)
            ids = self._encode(query, cut, sentence)
            if len(ids) <= self.window or budget <= 0:
                return ids[-self.window:] if len(ids) > self.window else ids
            budget -= len(ids) - self.window + 2

    def _encode(self, query: str, context: str, sentence: str) -> list[int]:
        text = EXIT_PROMPT.format(query=query, context=context, sentence=sentence)
        return list(self.tokenizer(text)["input_ids"])

    def _cut(self, text: str, n_tokens: int) -> str:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        return text if len(offsets) <= n_tokens else text[: offsets[max(n_tokens, 1) - 1][1]]

    def _around(self, context: str, start: int, end: int, budget: int) -> str:
        """At most ``budget`` tokens of ``context`` centred on the characters ``start:end``."""
        if budget <= 0:
            return ""
        enc = self.tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= budget:
            return context
        inside = [i for i, (a, b) in enumerate(offsets) if b > start and a < end] or [0]
        first, last = inside[0], inside[-1] + 1
        if last - first >= budget:
            first, last = first, first + budget
        else:
            extra = budget - (last - first)
            first = max(0, first - extra // 2)
            last = min(len(offsets), first + budget)
            first = max(0, last - budget)
        return context[offsets[first][0]: offsets[last - 1][1]]

    def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        prompts = [(n, k, self.prompt_ids(it.query, it.title, it.sentences, k))
                   for n, it in enumerate(items) for k in range(len(it.sentences))]
        out = [[math.nan] * len(it.sentences) for it in items]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i][2]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                group = [prompts[i] for i in order[s: s + self.batch_size]]
                length = max(len(p[2]) for p in group)
                input_ids = torch.full((len(group), length), pad, dtype=torch.long)
                mask = torch.zeros((len(group), length), dtype=torch.long)
                for b, (_, _, ids) in enumerate(group):  # right padding: positions match the unpadded prompt
                    input_ids[b, : len(ids)] = torch.tensor(ids)
                    mask[b, : len(ids)] = 1
                last = mask.sum(1) - 1  # (B,)
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                    logits_to_keep=last.to(self.device)).logits  # (B, B, V): each row's last positions
                rows = logits[torch.arange(len(group)), torch.arange(len(group))]  # (B, V)
                pair = torch.stack([rows[:, self.yes_id], rows[:, self.no_id]], dim=-1).float()  # (B, 2)
                p_yes = torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()
                for (n, k, _), p in zip(group, p_yes, strict=True):
                    out[n][k] = p
        return out


def _first_token(tokenizer: Any, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ModelNotFoundError(f"the tokenizer encodes {word!r} to no tokens; it cannot be an EXIT classifier.")
    return int(ids[0])


def _adapter_config(path: str) -> dict[str, Any] | None:
    """The PEFT adapter config of ``path`` (a folder or a hub id), or None when it is a full model."""
    local = Path(path)
    if local.is_dir():
        file = local / "adapter_config.json"
        return json.loads(file.read_text()) if file.is_file() else None
    try:
        hub = require("huggingface_hub")  # lazy: slow to import
        return json.loads(Path(hub.hf_hub_download(path, "adapter_config.json")).read_text())
    except Exception:  # not an adapter, or the hub is unreachable: from_pretrained reports the real problem
        return None


# ============================================================================================================ RECOMP
class RecompScorer:
    """RECOMP's extractive dual encoder: mean-pooled embeddings, score = dot(query, sentence)."""

    def __init__(self, model: Any, tokenizer: Any, *, window: int = 256, batch_size: int = 32,
                 device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.window = window
        self.batch_size = batch_size
        self.device = device
        self.default_threshold: float | None = None

    @classmethod
    def from_pretrained(cls, spec: str, *, device: str | None = None, dtype: str = "auto",
                        **kwargs: Any) -> RecompScorer:
        transformers = require("transformers")
        device = infer_device(device or None)
        path = resolve(spec)
        try:
            model = transformers.AutoModel.from_pretrained(path, dtype=_dtype(dtype, device))
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        except OSError as err:
            raise hub_error(spec, err) from None
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(model, tokenizer, device=device, **kwargs)

    def embed(self, texts: Sequence[str]) -> Any:
        """Mean-pooled embeddings (N, d) of ``texts``, batched by length."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s: s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.window,
                                     return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state  # (B, T, d)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, d)
                for i, vec in zip(idx, pooled.float().cpu(), strict=True):
                    out[i] = vec
        return torch.stack(out) if out else torch.zeros((0, 1))

    def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        queries = sorted({it.query for it in items})
        sentences = [s for it in items for s in it.sentences]
        q_vecs = dict(zip(queries, self.embed(queries), strict=True))
        s_vecs = self.embed(sentences)
        out, pos = [], 0
        for it in items:
            n = len(it.sentences)
            out.append((s_vecs[pos: pos + n] @ q_vecs[it.query]).tolist() if n else [])
            pos += n
        return out


# ============================================================================================================ loader
@functools.lru_cache(maxsize=4)
def load_scorer(backbone: str, spec: str, *, base_model: str = "", device: str = "", dtype: str = "auto",
                window: int = 0, batch_size: int = 16, use_title: bool = True) -> SentenceScorer:
    """Load (and cache per process) the scorer of a backbone."""
    if backbone == "crossencoder":
        return CrossEncoderScorer.from_pretrained(spec, device=device or None, dtype=dtype, window=window or None,
                                                  batch_size=batch_size, use_title=use_title)
    if backbone == "exit":
        return ExitScorer.from_pretrained(spec, base_model=base_model, device=device or None, dtype=dtype,
                                          window=window or 1024, batch_size=batch_size)
    if backbone == "recomp":
        return RecompScorer.from_pretrained(spec, device=device or None, dtype=dtype, window=window or 256,
                                            batch_size=batch_size)
    raise ConfigError(f"unknown backbone {backbone!r}; choose crossencoder, exit or recomp.")
