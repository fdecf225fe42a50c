"""The local generator: a Hugging Face causal LM that reads prompts with soft-token placeholders.

:class:`HFGenerator` formats a question and its (compressed) context into a prompt, splits the prompt at live
soft-token placeholders (:func:`ragzip.softstore.split_prompt`), splices the stored vectors into ``inputs_embeds`` and
decodes greedily with its own loop over a KV cache. The loop exists for two reasons: time-to-first-token is measured
exactly (prefill + first token), and every sequence of a batch stops as soon as one of its stop strings appears, so a
small reader does not spend most of its time decoding sentences nobody reads.

Soft tokens live in an embedding *space*: the input-embedding space of one generator, named by
:attr:`HFGenerator.space`. A live placeholder whose vectors were made for another space is an error, never garbage.
"""

from __future__ import annotations

import inspect
import logging
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from ragzip import models
from ragzip._lazy import require
from ragzip.config_utils import brief, check_range
from ragzip.errors import ConfigError, InputError, SoftTokenError
from ragzip.softstore import PLACEHOLDER_RE, SoftEntry, SoftTokenStore, default_store, split_prompt
from ragzip.tokens import HFTokenCounter
from ragzip.types import CompressedContext

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

# Chosen on 30 HotpotQA (gold paragraphs) + 30 SQuAD questions with SmolLM2-135M, greedy, first line:
# this plain format scored acc 0.53 / 0.70; asking for "a short phrase" (0.43 / 0.70) or a one-shot
# "Answer: 1889" example (0.20 / 0.37, shorter but wrong answers) did worse. The answer is the first line.
DEFAULT_SYSTEM_PROMPT = "Reply with a short answer."
DEFAULT_PROMPT_TEMPLATE = "{context}\n\nQuestion: {question}"
DEFAULT_NO_CONTEXT_TEMPLATE = "Question: {question}"


def kv_cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands a KV cache to ``model``'s forward (a module or a forward callable).

    transformers renamed ``past_key_values`` to ``cache`` (5.2x; the old name is deprecated and removed in 5.40, after
    which it would be swallowed by ``**kwargs`` and the cache silently ignored). Use the name the installed version's
    forward declares; the old one only where ``cache`` does not exist.
    """
    return {_cache_keyword(getattr(model, "forward", model)): cache}


def _cache_keyword(forward: Any) -> str:
    key = getattr(forward, "__func__", forward)
    try:
        return _CACHE_KEYWORDS[key]
    except (KeyError, TypeError):
        pass
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        params = {}
    name = "cache" if "cache" in params else "past_key_values"
    try:
        _CACHE_KEYWORDS[key] = name
    except TypeError:
        pass
    return name


_CACHE_KEYWORDS: dict[Any, str] = {}


def _template_fields(where: str, name: str, template: Any) -> set[str]:
    """The ``{slot}`` names of a ``str.format`` template; a malformed template is a :class:`ConfigError`."""
    if not isinstance(template, str):
        raise ConfigError(f"{where}.{name} must be a string, got {type(template).__name__}: {template!r}.")
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ConfigError(f"{where}.{name} = {template!r} is not a valid format string ({err}). "
                          "Write literal braces as '{{' and '}}'.") from None


def _check_template(where: str, name: str, template: Any, required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    fields = _template_fields(where, name, template)
    for slot in required:
        if slot not in fields:
            raise ConfigError(f"{where}.{name} must contain the {{{slot}}} slot, got {template!r}. "
                              f"Put {{{slot}}} where the {slot} goes.")
    extra = sorted(fields - set(allowed))
    if extra:
        raise ConfigError(f"{where}.{name} has unknown slot(s) {', '.join('{' + f + '}' for f in extra)}; allowed: "
                          f"{', '.join('{' + f + '}' for f in allowed)}. Write literal braces as '{{{{' and '}}}}'.")


@dataclass
class GeneratorConfig:
    r"""Options of the local generator (the YAML ``generator:`` block).

    Example:
        >>> GeneratorConfig(max_new_tokens=16).stop
        ('\n',)
    """

    model: str = field(
        default="embedded:smollm2-135m",
        metadata={"help": "Causal LM: an embedded name (embedded:smollm2-135m), a Hugging Face id or a local folder."},
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device; empty means cuda when a GPU is present, else cpu."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Most tokens generated per answer."})
    stop: tuple[str, ...] = field(
        default=("\n",),
        metadata={"help": "Stop strings: the answer ends where one appears after some non-space text "
                          "(a newline by default: decoding dominates the cost of a small reader)."},
    )
    system_prompt: str = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={"help": "System message (chat models) or preamble (plain LMs); empty for none."},
    )
    prompt_template: str = field(
        default=DEFAULT_PROMPT_TEMPLATE,
        metadata={"help": "User message when there is context; must contain {context} and {question}."},
    )
    no_context_template: str = field(
        default=DEFAULT_NO_CONTEXT_TEMPLATE,
        metadata={"help": "User message when the context is empty (selective augmentation); must contain {question}."},
    )
    no_evidence_reply: str = field(
        default="",
        metadata={"help": "Reply given without calling the model when the compressor kept nothing (no evidence in "
                          "the documents; e.g. extractive with `selective: true`), such as \"I don't know.\"; empty: "
                          "the model answers without context."},
    )
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap the prompt in the tokenizer's chat template when it has one."}
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts decoded together (left-padded)."})

    def __post_init__(self) -> None:
        where = type(self).__name__
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"{where}.model must be a model name or path, got {self.model!r}; "
                              "e.g. 'embedded:smollm2-135m'.")
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigError(f"{where}.device must be a string such as 'cpu' or 'cuda', or empty, got {self.device!r}.")
        if self.device == "":
            self.device = None
        check_range(where, "max_new_tokens", self.max_new_tokens, 1)
        check_range(where, "batch_size", self.batch_size, 1)
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ConfigError(f"{where}.stop must be a list of non-empty strings, got {brief(self.stop)}.")
        if not isinstance(self.system_prompt, str):
            raise ConfigError(f"{where}.system_prompt must be a string, got {self.system_prompt!r}.")
        _check_template(where, "prompt_template", self.prompt_template, ("context", "question"),
                        ("context", "question"))
        _check_template(where, "no_context_template", self.no_context_template, ("question",), ("question",))


@dataclass(frozen=True)
class Generation:
    """One generated answer with its cost.

    ``ttft_s`` is the wall time of the prefill plus the first token; in a batch, all prompts share the batch's
    prefill. ``total_s`` runs from the start of the prefill until this sequence stopped. ``prompt_positions`` counts
    the decoder input positions of the prompt (a soft token is one position). ``finish_reason`` is ``"stop"``
    (a stop string), ``"eos"`` or ``"length"`` (``max_new_tokens`` reached).
    """

    text: str
    raw_text: str
    prompt_positions: int
    new_tokens: int
    ttft_s: float
    total_s: float
    finish_reason: str = ""


def _cut_at_stop(raw: str, stops: Sequence[str]) -> int | None:
    """Index where the first stop string starts, counting only stops after some non-whitespace text."""
    first = len(raw) - len(raw.lstrip())
    if first == len(raw):
        return None
    hits = [i for i in (raw.find(s, first + 1) for s in stops) if i >= 0]
    return min(hits) if hits else None


class HFGenerator:
    """Greedy generation with a local Hugging Face causal LM, reading soft-token placeholders as vectors.

    Args:
        config: A :class:`GeneratorConfig` (defaults when ``None``).
        store: Where placeholders are resolved; the process-wide :func:`ragzip.default_store` when ``None``.
        model: An already loaded causal LM (tests use tiny ones); loaded lazily from ``config.model`` otherwise.
        tokenizer: Its tokenizer; loaded lazily from ``config.model`` otherwise.

    Example:
        >>> gen = HFGenerator(GeneratorConfig(max_new_tokens=8))  # doctest: +SKIP
        >>> gen.answer("Who wrote Hamlet?", "Hamlet is a tragedy by William Shakespeare.").text  # doctest: +SKIP
        'William Shakespeare'
    """

    def __init__(
        self,
        config: GeneratorConfig | None = None,
        *,
        store: SoftTokenStore | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.config = config if config is not None else GeneratorConfig()
        if not isinstance(self.config, GeneratorConfig):
            raise ConfigError(f"HFGenerator needs a GeneratorConfig, got {type(self.config).__name__}.")
        self.store = store if store is not None else default_store()
        self._model = model
        self._tokenizer = tokenizer
        self._token_counter: HFTokenCounter | None = None
        self._affixes: tuple[list[int], list[int]] | None = None
        self._readers: dict[str, Any] = {}  # soft-token space -> the decoder that reads prompts holding its tokens

    # ------------------------------------------------------------------------------------------------ lazy members
    @property
    def model(self) -> Any:
        """The causal LM (float32, eval mode), loaded on first use."""
        if self._model is None:
            with models.lazy_lock(self):  # two threads on a cold generator load the model once
                if self._model is None:
                    model, tokenizer = models.load_causal_lm(self.config.model, models.infer_device(self.config.device))
                    if self._tokenizer is None:
                        self._tokenizer = tokenizer
                    self._model = model
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use (without loading the model)."""
        if self._tokenizer is None:
            with models.lazy_lock(self):
                if self._tokenizer is None:
                    self._tokenizer = models.load_tokenizer(self.config.model)
        return self._tokenizer

    @property
    def token_counter(self) -> HFTokenCounter:
        """Counts text in this generator's tokens (what compressors should count with)."""
        if self._token_counter is None:
            self._token_counter = HFTokenCounter(self.tokenizer)
        return self._token_counter

    @property
    def device(self) -> torch.device:
        """Where the model runs (its input embeddings' device): soft vectors are moved here to be read."""
        return self.input_embeddings().weight.device

    def input_embeddings(self) -> nn.Embedding:
        """The model's input-embedding table: soft tokens must live in its space."""
        return self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        """Width of the input embeddings (the ``d`` every soft vector must have)."""
        return int(self.input_embeddings().embedding_dim)

    @property
    def space(self) -> str:
        """Names the embedding space soft vectors must live in: ``"<model>|d=<hidden_size>"``."""
        return f"{self.config.model}|d={self.hidden_size}"

    # ------------------------------------------------------------------------------------------------------ readers
    def add_reader(self, space: str, model: Any) -> Any:
        """Let ``model`` read the prompts that hold soft tokens made for ``space``.

        Every other prompt is read by :attr:`model` as before. A soft compressor whose training adapted the decoder
        (REFRAG with a decoder LoRA) registers the adapted copy here when it is bound: its soft tokens mean something
        only to that copy. ``model`` must share this generator's tokenizer and input embeddings (it is called with
        ``inputs_embeds`` built from them). Registering a space that is already registered keeps the first model.

        Args:
            space: The embedding space of the soft tokens ``model`` reads; not this generator's own :attr:`space`.
            model: The decoder that reads them.

        Returns:
            The model that reads ``space`` (the first one registered for it).

        Raises:
            ConfigError: ``space`` is this generator's own space.
        """
        if space == self.space:
            raise ConfigError(f"add_reader: {space!r} is this generator's own space; a reader needs a space of its own "
                              "(e.g. the generator's space plus the adapter's fingerprint).")
        return self._readers.setdefault(space, model)

    @property
    def readers(self) -> Mapping[str, Any]:
        """The registered readers (space -> decoder), read-only."""
        return MappingProxyType(self._readers)

    def reader_for(self, prompt: str) -> Any:
        """The decoder that reads ``prompt``: the reader registered for the space of its soft tokens, else :attr:`model`.

        Raises:
            SoftTokenError: the prompt mixes soft tokens of a reader's space with soft tokens of another space (one
                decoder reads one prompt).
        """
        if not self._readers:
            return self.model
        spaces = {entry.space for entry in (self.store.resolve(h) for h in PLACEHOLDER_RE.findall(prompt))
                  if entry is not None}
        own = spaces & set(self._readers)
        if not own:
            return self.model
        if len(spaces) > 1:
            raise SoftTokenError(f"the prompt holds soft tokens of several embedding spaces {sorted(spaces)}, and "
                                 f"those of {sorted(own)} can only be read by their own adapted decoder. Compress one "
                                 "prompt's context with one soft compressor.")
        return self._readers[own.pop()]

    # ------------------------------------------------------------------------------------------------------ prompts
    def format_prompt(self, question: str, context: str | None) -> str:
        """The full prompt text for ``question`` over ``context``; placeholders in either are kept verbatim.

        An empty or ``None`` context uses ``no_context_template`` (selective augmentation: answer without context).
        """
        if context is not None and context.strip():
            user = self.config.prompt_template.format(context=context, question=question)
        else:
            user = self.config.no_context_template.format(question=question)
        return self.render([{"role": "user", "content": user}])

    def render(self, messages: list[dict[str, str]]) -> str:
        """Chat messages -> prompt text, through the chat template when there is one and ``use_chat_template``.

        ``config.system_prompt`` is put first when the messages have no system message. Without a chat template
        the contents are joined by blank lines. Placeholders in contents are kept verbatim.
        """
        if self.config.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
        tok = self.tokenizer
        if self.config.use_chat_template and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = []
        for m in messages:
            role, content = m.get("role", "user"), m.get("content", "")
            parts.append(content if role in ("system", "user") else f"{role.capitalize()}: {content}")
        return "\n\n".join(parts) + "\n"

    def adds_special_tokens(self, prompt: str) -> bool:
        """Whether ``prompt`` gets the tokenizer's special tokens: yes unless it already starts with BOS text.

        Chat templates such as Llama 3's write BOS themselves; adding it again would double it.
        """
        bos = getattr(self.tokenizer, "bos_token", None)
        return not (bos and prompt.startswith(bos))

    def special_affixes(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer adds before and after a text when ``add_special_tokens=True`` (e.g. ``[BOS]``, ``[]``).

        Code that builds prompt token ids itself (projector training) puts these around the pieces, as
        :meth:`embed_pieces` does, when :meth:`adds_special_tokens` says so.
        """
        if self._affixes is None:
            tok = self.tokenizer
            probe = "Paris"
            with_special = list(tok(probe, add_special_tokens=True)["input_ids"])
            plain = list(tok(probe, add_special_tokens=False)["input_ids"])
            n = len(plain)
            starts = [i for i in range(len(with_special) - n + 1) if with_special[i:i + n] == plain]
            if not starts:  # the tokenizer changes the text itself when adding specials: fall back to none
                logger.warning("cannot locate the special tokens %s adds; tokenizing soft-token prompts without them",
                               type(tok).__name__)
                self._affixes = ([], [])
            else:
                self._affixes = (with_special[:starts[0]], with_special[starts[0] + n:])
        return self._affixes

    def _check_entry(self, entry: SoftEntry) -> torch.Tensor:
        vectors = entry.vectors
        if (entry.space != self.space and entry.space not in self._readers) or vectors.shape[-1] != self.hidden_size:
            raise SoftTokenError(
                f"soft tokens were made for the embedding space {entry.space!r} (d={vectors.shape[-1]}), but this "
                f"generator reads {self.space!r} (d={self.hidden_size}). Soft compressors (xrag, refrag) must be "
                "built for the generator that reads their output: give them this generator's model (its `space`), "
                "or use a text compressor."
            )
        return vectors

    def embed_pieces(self, pieces: Sequence[str | torch.Tensor], *, add_special_tokens: bool = True) -> torch.Tensor:
        """Embed a prompt given as text pieces and soft vectors ``(n, d)``, in order, into ``(T, d)``.

        Text pieces are tokenized separately (no special tokens); the tokenizer's special tokens (e.g. BOS) go
        around the whole when ``add_special_tokens``. A prompt of one text piece gives exactly the embeddings of
        ``tokenizer(text, add_special_tokens=...)``. Gradients flow into tensor pieces (for training projectors).
        """
        tok = self.tokenizer
        embeddings = self.input_embeddings()
        device, dtype = embeddings.weight.device, embeddings.weight.dtype
        if all(isinstance(p, str) for p in pieces):
            ids = list(tok("".join(pieces), add_special_tokens=add_special_tokens)["input_ids"])  # type: ignore[arg-type]
            if not ids:
                raise InputError("the prompt is empty: nothing to generate from. Pass a question.")
            return embeddings(torch.tensor(ids, dtype=torch.long, device=device))  # (T, d)
        prefix, suffix = self.special_affixes() if add_special_tokens else ([], [])
        parts: list[torch.Tensor] = []
        pending: list[int] = list(prefix)
        for piece in pieces:
            if isinstance(piece, str):
                pending.extend(tok(piece, add_special_tokens=False)["input_ids"])
                continue
            if pending:
                parts.append(embeddings(torch.tensor(pending, dtype=torch.long, device=device)))
                pending = []
            vectors = piece[None] if piece.ndim == 1 else piece
            if vectors.ndim != 2 or vectors.shape[-1] != embeddings.embedding_dim:
                raise SoftTokenError(f"soft vectors must have shape (n, {embeddings.embedding_dim}), got "
                                     f"{tuple(piece.shape)}.")
            parts.append(vectors.to(device=device, dtype=dtype))
        pending.extend(suffix)
        if pending:
            parts.append(embeddings(torch.tensor(pending, dtype=torch.long, device=device)))
        return torch.cat(parts, dim=0)  # (T, d)

    def embed_prompt(self, prompt: str, *, read: list[str] | None = None) -> torch.Tensor:
        """The ``(T, d)`` input embeddings of ``prompt``, live placeholders replaced by their stored vectors.

        Forged and unknown placeholders stay text (:func:`ragzip.softstore.split_prompt`). Without live
        placeholders this is exactly the embedding of ``tokenizer(prompt)`` (special tokens added unless the prompt
        already starts with BOS, as chat templates do). ``read`` collects the handles resolved.

        Raises:
            SoftTokenError: a live placeholder holds vectors made for another generator's embedding space, or a
                placeholder this generator's store issued has lost its vectors (freed after an earlier generation,
                or evicted): it would otherwise reach the model as plain text.
        """
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}.")
        pieces = [p if isinstance(p, str) else self._check_entry(p)
                  for p in split_prompt(prompt, self.store, strict=True, read=read)]
        return self.embed_pieces(pieces, add_special_tokens=self.adds_special_tokens(prompt))

    # --------------------------------------------------------------------------------------------------- generation
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (getattr(getattr(self.model, "generation_config", None), "eos_token_id", None),
                      getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        release: bool = True,
    ) -> list[Generation]:
        """Greedy-decode each prompt (full prompt text, e.g. from :meth:`format_prompt`), in batches.

        Args:
            prompts: Prompt texts; live placeholders are read as soft tokens.
            max_new_tokens: Overrides ``config.max_new_tokens``.
            stop: Overrides ``config.stop``; ``()`` for none. The end-of-sequence token always stops.
            release: Release the soft tokens read (their store frees them) once generation ends, so a long-running
                server's store does not fill up. ``False`` keeps them for another read (e.g. a separate TTFT
                measurement of the same prompt); the caller then releases them (``store.release(ctx)``).

        Returns:
            One :class:`Generation` per prompt, in order.
        """
        if isinstance(prompts, str):
            raise InputError("generate() takes a list of prompts; wrap a single prompt: `generate([prompt])`.")
        max_new = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}.")
        stops = tuple(self.config.stop if stop is None else ([stop] if isinstance(stop, str) else stop))
        if not prompts:
            return []
        _ = self.model  # load outside inference mode: a cached model is shared with code that trains through it
        read: list[str] = []
        try:
            return self._generate(prompts, max_new, stops, read)
        finally:
            if release and read:
                self.store.release(read)

    def _generate(self, prompts: Sequence[str], max_new: int, stops: tuple[str, ...],
                  read: list[str]) -> list[Generation]:
        with torch.inference_mode():
            embeds, readers = [], []
            for p in prompts:
                embeds.append(self.embed_prompt(p))
                readers.append(self.reader_for(p))
                # What was just read as soft tokens (live handles in the prompt), released after generation.
                read.extend(h for h in PLACEHOLDER_RE.findall(p) if self.store.resolve(h) is not None)
            limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
            for i, e in enumerate(embeds):
                if limit and e.shape[0] + max_new > limit:
                    raise InputError(
                        f"prompt #{i} has {e.shape[0]} positions; with max_new_tokens={max_new} that exceeds the "
                        f"model's {limit} positions. Compress the context harder or retrieve fewer passages (top_k)."
                    )
            # Longest first, so each batch holds prompts of similar length (less padding); results go back in order.
            # Prompts read by a registered reader (add_reader) are batched apart, with that reader.
            order = sorted(range(len(embeds)), key=lambda i: -embeds[i].shape[0])
            groups: dict[int, list[int]] = {}
            for i in order:
                groups.setdefault(id(readers[i]), []).append(i)
            out: list[Generation | None] = [None] * len(embeds)
            size = self.config.batch_size
            for group in groups.values():
                for start in range(0, len(group), size):
                    idx = group[start:start + size]
                    batch = self._generate_batch([embeds[i] for i in idx], max_new, stops, model=readers[idx[0]])
                    for i, gen in zip(idx, batch, strict=True):
                        out[i] = gen
        return [g for g in out if g is not None]

    def _generate_batch(self, embeds: list[torch.Tensor], max_new: int, stops: tuple[str, ...], *,
                        model: Any = None) -> list[Generation]:
        """Left-padded greedy decoding of one batch with a KV cache; finished rows leave the batch.

        Decodes with ``model``, by default :attr:`model`.
        """
        transformers = require("transformers")  # lazy: slow to import, and `import ragzip` imports this module
        model, tok = model if model is not None else self.model, self.tokenizer
        eos = self._eos_ids()
        lengths = [e.shape[0] for e in embeds]
        batch, width, d = len(embeds), max(lengths), embeds[0].shape[-1]
        device = embeds[0].device
        inputs = embeds[0].new_zeros(batch, width, d)  # (B, T, d), left padding
        mask = torch.zeros(batch, width, dtype=torch.long, device=device)  # (B, T)
        for row, e in enumerate(embeds):
            inputs[row, width - e.shape[0]:] = e
            mask[row, width - e.shape[0]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): real tokens count from 0 whatever the padding

        cache = transformers.DynamicCache(config=model.config)
        start = time.perf_counter()
        logits = model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, **kv_cache_kwargs(model, cache),
                       use_cache=True, logits_to_keep=1).logits  # (B, 1, V)
        next_ids = logits[:, -1].argmax(-1)  # (B,)
        if next_ids.device.type == "cuda":
            torch.cuda.synchronize(next_ids.device)  # kernels run asynchronously: wait before reading the clock
        ttft = time.perf_counter() - start

        tokens: list[list[int]] = [[] for _ in range(batch)]
        results: list[Generation | None] = [None] * batch
        active = list(range(batch))  # batch row -> original index
        last = positions[:, -1]  # (B,)
        while True:
            keep: list[int] = []
            for row, i in enumerate(active):
                token = int(next_ids[row])
                reason, cut = "", None
                if token in eos:
                    reason = "eos"
                else:
                    tokens[i].append(token)
                raw = tok.decode(tokens[i], skip_special_tokens=True)
                if not reason:
                    cut = _cut_at_stop(raw, stops) if stops else None
                    if cut is not None:
                        reason = "stop"
                    elif len(tokens[i]) >= max_new:
                        reason = "length"
                if reason:
                    text = (raw if cut is None else raw[:cut]).strip()
                    results[i] = Generation(text, raw, lengths[i], len(tokens[i]) + (reason == "eos"), ttft,
                                            time.perf_counter() - start, reason)
                else:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, next_ids, last = mask[index], next_ids[index], last[index]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)  # (b, T + steps)
            last = last + 1
            logits = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=last[:, None],
                           **kv_cache_kwargs(model, cache), use_cache=True).logits  # (b, 1, V)
            next_ids = logits[:, -1].argmax(-1)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------------------ answers
    @staticmethod
    def _context_text(context: CompressedContext | str | None) -> str | None:
        if context is None or isinstance(context, str):
            return context
        if isinstance(context, CompressedContext):
            return context.text
        raise InputError(f"context must be a CompressedContext, str or None, got {type(context).__name__}.")

    def answer(self, question: str, context: CompressedContext | str | None) -> Generation:
        """Answer ``question`` from ``context`` (compressed, plain text, or ``None``/empty for no context).

        Example:
            >>> gen.answer("Capital of France?", "Paris is the capital of France.").text  # doctest: +SKIP
            'Paris'
        """
        return self.answer_batch([question], [context])[0]

    def answer_batch(
        self, questions: Sequence[str], contexts: Sequence[CompressedContext | str | None]
    ) -> list[Generation]:
        """Answer several questions, one context each, decoded in batches of ``config.batch_size``."""
        if isinstance(questions, str):
            raise InputError("answer_batch() takes a list of questions; use answer() for one.")
        if len(questions) != len(contexts):
            raise InputError(f"answer_batch got {len(questions)} questions but {len(contexts)} contexts; "
                             "pass one context per question (None for no context).")
        for i, context in enumerate(contexts):
            self.check_soft(context, where=f"context #{i}")
        try:
            prompts = [self.answer_prompt(q, c) for q, c in zip(questions, contexts, strict=True)]
            return self.generate(prompts)
        finally:  # the contexts' soft tokens are consumed, including any not in the prompt text
            for context in contexts:
                if isinstance(context, CompressedContext) and context.soft:
                    self.store.release(context)

    def check_soft(self, context: Any, *, where: str = "the context") -> None:
        """Check that the generator can read every soft segment a compressor emitted (``context.soft``).

        Each must still be in this generator's store, and its placeholder in the text the generator reads. A context
        that is not a :class:`~ragzip.CompressedContext`, or holds no soft tokens, passes.

        Args:
            context: The compressed context about to be read.
            where: How the error message names the context.

        Raises:
            SoftTokenError: a segment's vectors were released, evicted or put into another store, or its placeholder
                is missing from the text.
        """
        if not isinstance(context, CompressedContext) or not context.soft:
            return
        text = context.text
        for seg in context.soft:
            if self.store.resolve(seg.handle) is None:
                why = self.store.gone(seg.handle)
                raise SoftTokenError(
                    f"{where} ({context.method}) holds soft tokens that this generator's store cannot resolve "
                    + (f"(their vectors were {why}). " if why else
                       "(they were put into a different SoftTokenStore). ")
                    + ("A compressed context is read once: compress again for another generation. "
                       if why == "released" else
                       "Raise the store's `max_bytes` (RAGZIP_SOFT_STORE_BYTES for the default store) and generate "
                       "soon after compressing. " if why == "evicted" else
                       "Bind the compressor to this generator (`compressor.bind(generator)`) so they share a store. "))
            if seg.placeholder not in text:
                raise SoftTokenError(f"{where} ({context.method}) lost the placeholder of soft segment "
                                     f"{seg.handle[:8]}… from its text; do not edit compressed text by hand.")

    def answer_prompt(self, question: str, context: CompressedContext | str | None) -> str:
        """The prompt :meth:`answer` sends for ``question`` and ``context`` (e.g. to time its prefill alone)."""
        return self.format_prompt(question, self._context_text(context))

    def chat(self, messages: list[dict[str, str]], **kw: Any) -> Generation:
        """Answer a chat (``[{"role": ..., "content": ...}, ...]``); contents may hold placeholders.

        The system prompt of the config is added when the messages have none. Keyword arguments
        (``max_new_tokens``, ``stop``) go to :meth:`generate`. Used by the LlamaIndex and LangChain LLM wrappers.
        """
        if not messages:
            raise InputError("chat() got no messages; pass at least one {'role': 'user', 'content': ...}.")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
                raise InputError(f"message #{i} must be a dict with string 'role' and 'content', got {m!r}.")
        return self.generate([self.render(list(messages))], **kw)[0]

    def logits(self, prompt: str) -> torch.Tensor:
        """The ``(T, vocab)`` next-token logits at every position of ``prompt`` (for tests and perplexity)."""
        _ = self.model  # load outside inference mode (see generate)
        with torch.inference_mode():
            embeds = self.embed_prompt(prompt)
            return self.reader_for(prompt)(inputs_embeds=embeds[None]).logits[0]  # (T, V)

    # Private aliases the xrag, refrag and abstractive trainers call.
    _render = render
    _adds_special_tokens = adds_special_tokens
    _special_affixes = special_affixes

    def __repr__(self) -> str:
        return f"HFGenerator({self.config!r})"
