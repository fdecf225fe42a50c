"""The compressor contract, the registry of compressor types, and chains of compressors.

:class:`Compressor` is the contract and :class:`SoftCompressor` the base of those that write soft tokens. The registry
maps YAML ``type:`` to classes, with what each declares for the app: ``ragzip train``, ``evaluate``, ``demo``,
``index`` and ``bench`` ask it, never a list of their own.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ragzip.config_utils import check_range, field_names, from_dict, to_dict, unknown_key_message
from ragzip.errors import ConfigError, InputError, SoftTokenError, check_batch_output
from ragzip.models import infer_device
from ragzip.quiet import quiet_dependencies
from ragzip.softstore import SoftTokenStore, default_store
from ragzip.tokens import TokenCounter, load_token_counter
from ragzip.types import (
    CompressedContext,
    Passage,
    PassageResult,
    SoftSegment,
    StageResult,
    Unit,
    check_passages,
    check_query,
    locate_units,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass
class CompressorConfig:
    """Options every compressor has. Plugins subclass this with their own fields."""

    tokenizer: str = field(
        default="embedded:smollm2-135m",
        metadata={"help": "Tokenizer that counts context tokens: the generator's (a pipeline sets it to its generator's)."},
    )
    max_passage_chars: int = field(
        default=200_000,
        metadata={"help": "Longest passage accepted, in characters; longer ones are an error (chunk them at indexing)."},
    )

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "max_passage_chars", self.max_passage_chars, 1)


class Compressor(ABC):
    """Base class: ``compress(query, passages) -> CompressedContext``.

    The base validates input, reports empty and duplicate passages (never drops them silently), enforces
    ``max_passage_chars``, counts tokens and times the call. Subclasses implement :meth:`_compress` over the live
    passages and may override :meth:`_compress_batch` when batching across questions helps.

    Args:
        config: The options, an instance of the class's ``config_class``; its defaults when ``None``.
        token_counter: Counts context tokens; by default loaded from ``config.tokenizer`` on first use, and replaced
            by the generator's when the compressor is bound.
        store: The soft-token store the output's placeholders refer to; the process-wide default when ``None``.

    Raises:
        ConfigError: ``config`` is not an instance of ``config_class``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[CompressorConfig]] = CompressorConfig
    soft: ClassVar[bool] = False  # True for compressors that emit soft tokens (only ragzip's generator reads them)

    def __init__(
        self,
        config: CompressorConfig | None = None,
        *,
        token_counter: TokenCounter | None = None,
        store: SoftTokenStore | None = None,
    ) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                              f"{type(self.config).__name__}.")
        self._token_counter = token_counter
        self.store = store if store is not None else default_store()

    @property
    def token_counter(self) -> TokenCounter:
        """The counter of context tokens: the one given or bound, else loaded from ``config.tokenizer`` on first use."""
        if self._token_counter is None:
            self._token_counter = load_token_counter(self.config.tokenizer)
        return self._token_counter

    @token_counter.setter
    def token_counter(self, counter: TokenCounter) -> None:
        self._token_counter = counter

    def bind(self, generator: Any) -> None:
        """Attach to the generator that will read the output: count its tokens, share its soft-token store.

        Soft compressors override this to also check that their trained parts fit the generator's embedding space.
        """
        self.token_counter = generator.token_counter
        self.store = generator.store

    def compress(self, query: str, passages: Sequence[Passage | str]) -> CompressedContext:
        """Compress ``passages`` for ``query``.

        Args:
            query: The user's question (not empty).
            passages: Retrieved passages (``Passage`` or ``str``), in retrieval order.

        Returns:
            One :class:`PassageResult` per input passage, in input order, with the decision taken for each.
        """
        return self.compress_batch([query], [passages])[0]

    def compress_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[Passage | str]]
    ) -> list[CompressedContext]:
        """Compress several questions at once; compressors with a model batch the work across them."""
        if len(queries) != len(passages):
            raise InputError(f"compress_batch got {len(queries)} queries but {len(passages)} passage lists; "
                             "pass one list of passages per query.")
        start = time.perf_counter()
        checked = [(check_query(q), check_passages(p)) for q, p in zip(queries, passages)]
        live: list[list[Passage]] = []
        held: list[dict[int, PassageResult]] = []
        for _, items in checked:
            keep, fixed = self._triage(items)
            live.append(keep)
            held.append(fixed)
        with quiet_dependencies():  # a model loaded on first use prints no progress bars
            raw = check_batch_output(type(self).__name__, self._compress_batch([q for q, _ in checked], live),
                                     len(checked))
            outputs = [_with_spans(out) for out in raw]
        elapsed = (time.perf_counter() - start) / max(len(queries), 1)
        return [
            self._merge(query, items, fixed, out, elapsed)
            for (query, items), fixed, out in zip(checked, held, outputs, strict=True)
        ]

    def _triage(self, items: list[Passage]) -> tuple[list[Passage], dict[int, PassageResult]]:
        """Split passages into the ones to compress and the ones decided here (empty, duplicate)."""
        keep: list[Passage] = []
        fixed: dict[int, PassageResult] = {}
        first: dict[str, int] = {}
        for i, p in enumerate(items):
            if len(p.text) > self.config.max_passage_chars:
                raise InputError(
                    f"passage {p.id!r} has {len(p.text):,} characters, over max_passage_chars="
                    f"{self.config.max_passage_chars:,}. Chunk long documents when indexing "
                    "(`ragzip index` does), or raise `max_passage_chars` in the compressor config."
                )
            if not p.text.strip():
                fixed[i] = PassageResult(p, "", "empty", reason="passage text is empty or whitespace")
            elif p.id in first:
                fixed[i] = PassageResult(p, "", "duplicate", reason=f"same id and text as passage #{first[p.id]}",
                                         tokens_before=0)
            else:
                first[p.id] = i
                keep.append(p)
        return keep, fixed

    def _merge(self, query: str, items: list[Passage], fixed: dict[int, PassageResult],
               out: CompressedContext, elapsed: float) -> CompressedContext:
        if not fixed:
            return _with_time(out, elapsed)
        produced = iter(out.results)
        results = [fixed[i] if i in fixed else next(produced) for i in range(len(items))]
        return _with_time(
            CompressedContext(query, tuple(results), out.method, summary=out.summary, summary_tokens=out.summary_tokens,
                              reason=out.reason, extra=out.extra),
            elapsed,
        )

    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        return [self._compress(q, p) for q, p in zip(queries, passages)]

    @abstractmethod
    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        """Compress validated, non-empty, de-duplicated passages; return one result per passage, in order."""

    def context(self, query: str, results: Sequence[PassageResult], **kwargs: Any) -> CompressedContext:
        """Build this compressor's :class:`CompressedContext` (a helper for subclasses)."""
        return CompressedContext(query, tuple(results), self.name, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _with_spans(ctx: CompressedContext) -> CompressedContext:
    """Give every unit its span in its passage when the compressor did not (units that are verbatim substrings)."""
    if all(u.start is not None for r in ctx.results for u in r.units):
        return ctx
    results = tuple(replace(r, units=locate_units(r.passage.text, r.units)) if r.units else r for r in ctx.results)
    return CompressedContext(ctx.query, results, ctx.method, compress_s=ctx.compress_s, summary=ctx.summary,
                             summary_tokens=ctx.summary_tokens, reason=ctx.reason, extra=ctx.extra)


def _with_time(ctx: CompressedContext, seconds: float) -> CompressedContext:
    return CompressedContext(ctx.query, ctx.results, ctx.method, compress_s=seconds, summary=ctx.summary,
                             summary_tokens=ctx.summary_tokens, reason=ctx.reason, extra=ctx.extra)


# ------------------------------------------------------------------------------------------------ soft compressors
class SoftCompressor(Compressor):
    """Base class of the compressors whose trained parts write soft tokens (``xrag``, ``refrag``).

    Soft tokens are vectors written into a generator's input embeddings; only ragzip's generator reads them. The base
    owns what every such compressor does around its model:

    - :meth:`bind` checks that the trained parts fit the generator (a mismatch is a
      :class:`~ragzip.SoftTokenError`), shares its token counter and :class:`~ragzip.SoftTokenStore`, and moves the
      trained parts to :attr:`device`;
    - :attr:`space` names the embedding space the soft tokens are written for, :attr:`device` where the trained
      parts run;
    - :meth:`emit` puts vectors into the store and returns one :class:`~ragzip.types.SoftSegment` per entry (handle,
      placeholder, number of vectors); the placeholders go into the result's text, the segments into its ``soft``.
      Everything one ``compress_batch`` call emitted is released if the call fails, so nothing stays pinned behind it.

    A subclass implements :meth:`_compress` (or :meth:`_compress_batch`) and the hooks :meth:`_trained_space`,
    :meth:`_space_mismatch` and :meth:`_to_device` (and :meth:`_check_generator_model` when its artifact records the
    generator's fingerprints). A composite that emits soft tokens only through a stage (``route``, a chain ending in
    ``xrag``) sets ``soft`` and binds its stages instead; it has no trained parts of its own to check.

    Example:
        >>> class OneVector(SoftCompressor):  # doctest: +SKIP
        ...     name = "one_vector"
        ...     def _trained_space(self): return "my-model|d=4"
        ...     def _space_mismatch(self, generator, width): return None if width == 4 else f"needs d=4, not {width}"
        ...     def _to_device(self, device): pass
        ...     def _compress(self, query, passages):
        ...         segments = self.emit([torch.zeros(1, 4) for _ in passages])
        ...         return self.context(query, [PassageResult(p, s.placeholder, "soft", reason="one vector",
        ...                                                   soft=(s,), tokens_after=1)
        ...                                     for p, s in zip(passages, segments)])
    """

    soft: ClassVar[bool] = True
    unbound_device: ClassVar[str | None] = None
    """Where the trained parts run before binding when the config names no device (``None``: inferred)."""

    def __init__(
        self,
        config: CompressorConfig | None = None,
        *,
        token_counter: TokenCounter | None = None,
        store: SoftTokenStore | None = None,
    ) -> None:
        super().__init__(config, token_counter=token_counter, store=store)
        self.generator: Any = None  # the generator bound (None until :meth:`bind`)
        self._emitting = threading.local()  # the SoftRequest of the compress_batch call running in this thread

    # ------------------------------------------------------------------------------------------------- binding
    @property
    def device(self) -> str:
        """Where the trained parts run.

        The config's ``device``, else the bound generator's, else :attr:`unbound_device` (inferred when that is
        ``None``: a GPU when present).
        """
        configured = getattr(self.config, "device", None)
        if configured:
            return str(configured)
        if self.generator is not None:
            return str(self.generator.device)
        return infer_device(self.unbound_device)

    @property
    def space(self) -> str:
        """The embedding space the soft tokens are written for (a :class:`~ragzip.softstore.SoftEntry`'s ``space``).

        The bound generator's (``HFGenerator.space``), else the one the trained parts were made for.
        """
        if self.generator is not None:
            return str(self.generator.space)
        return self._trained_space()

    def bind(self, generator: Any) -> None:
        """Write for ``generator``.

        Checks that the trained parts fit its embedding space, then counts its tokens, shares its soft-token store and
        runs the trained parts on its device (unless the config names one).

        Args:
            generator: The generator that will read the soft tokens (an ``HFGenerator``).

        Raises:
            SoftTokenError: the trained parts write into another embedding space (:meth:`_space_mismatch`).
            ArtifactError: the generator's embeddings or tokenizer are not the ones the artifact recorded.
        """
        name = getattr(getattr(generator, "config", None), "model", None)
        with quiet_dependencies():  # reading the width loads the generator's model on first use: no progress bars
            width = int(generator.hidden_size)
        previous, self.generator = self.generator, generator  # trained parts loaded by the checks go to its device
        try:
            problem = self._space_mismatch(name, width)
            if problem is not None:
                raise SoftTokenError(problem)
            model = getattr(generator, "model", None)
            if model is not None and hasattr(model, "get_input_embeddings"):
                self._check_generator_model(model, getattr(generator, "tokenizer", None), name)
        except BaseException:
            self.generator = previous  # a refused generator leaves the compressor as it was
            raise
        super().bind(generator)
        self._to_device(self.device)

    @abstractmethod
    def _trained_space(self) -> str:
        """The embedding space the trained parts were made for (``"<generator>|d=<width>"``): :attr:`space` unbound."""

    @abstractmethod
    def _space_mismatch(self, generator: str | None, width: int) -> str | None:
        """Why the trained parts cannot write for this generator, or ``None`` when they can.

        ``generator`` is the generator's model name and ``width`` its input embeddings' width; the message becomes the
        :class:`~ragzip.SoftTokenError` :meth:`bind` raises, so it says the fix.
        """

    def _check_generator_model(self, model: Any, tokenizer: Any, generator: str | None) -> None:
        """Raise :class:`~ragzip.artifacts.ArtifactError` when the generator is not the one the artifact recorded.

        Compares ``model``'s embeddings and ``tokenizer`` with the artifact's fingerprints; by default nothing is
        checked.
        """

    @abstractmethod
    def _to_device(self, device: str) -> None:
        """Move the trained parts to ``device`` (called when bound)."""

    # ---------------------------------------------------------------------------------------------- soft tokens
    def compress_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[Passage | str]]
    ) -> list[CompressedContext]:
        """Compress several questions at once, as :meth:`Compressor.compress_batch`.

        Everything the call emitted into the soft-token store is released if it fails.
        """
        previous = getattr(self._emitting, "request", None)
        with self.store.request() as request:  # a failed call releases what it emitted
            self._emitting.request = request
            try:
                return super().compress_batch(queries, passages)
            finally:
                self._emitting.request = previous

    def emit(self, vectors: Sequence[torch.Tensor], *, pad: tuple[bool, bool] = (False, False)) -> list[SoftSegment]:
        """Put each ``(n, d)`` tensor into the store as one entry in :attr:`space`: all of them or none.

        Each entry is pinned until the generator reads it (or its owner releases it); the returned segments carry the
        handle, the placeholder to write into the text and the number of vectors it stands for.

        Args:
            vectors: One tensor per placeholder, ``(n, d)`` (``n`` positions) or ``(d,)``.
            pad: One separating space written before / after each placeholder, which the generator does not read
                (:class:`~ragzip.softstore.SoftEntry`).

        Raises:
            SoftTokenError: bad vectors, or the store cannot hold them.
        """
        request = getattr(self._emitting, "request", None)
        return (request or self.store).put_segments(vectors, space=self.space, pad=pad)


# --------------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class IndexCache:
    """Something a compressor precomputes over an index's passages, built by ``ragzip index --<type>``.

    Attributes:
        builder: ``"module:function"``, called as ``function(retriever, index_folder, options, generator=...)``; it
            returns the folder it wrote.
        help: The help of the ``--<type>`` flag.
        options: Config fields also set at index time, as ``--<type>-<field>`` (type, default and help are the
            config's).
    """

    builder: str
    help: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A ``ragzip <name>`` subcommand a plugin adds: ``module`` has ``add_arguments(parser)`` and ``run(args)``."""

    module: str
    help: str


@dataclass(frozen=True)
class CompressorInfo:
    """What the app (``ragzip train``, ``evaluate``, ``demo``, ``index``, ``bench``) needs to know of a compressor.

    Declared when it is registered: ``register_compressor(MyCompressor, budget="max_tokens")``.

    Attributes:
        trainer: The module whose ``main(argv)`` trains it (``ragzip train <type>``); ``True`` (default): the
            ``train`` module beside the compressor's module, when there is one; ``False``: not trainable.
        evaluator: The module whose ``main(argv)`` measures a trained artifact (``ragzip evaluate <type>``); ``True``
            (default): the ``evaluate`` module beside the compressor's module, when there is one; ``False``: none.
        demo: The options ``ragzip demo`` runs it with (``{}``: its defaults); ``None`` leaves it out of the demo.
        budget: The config field that caps the tokens it keeps (``max_tokens``), if one does.
        budget_rate: The config field that caps them as a share of the input instead (a ``rate``), if one does.
        equal_budget: Run plain (neither ``budget`` nor ``budget_rate`` set), the bench gives it the run's equal
            budget in ``budget``: the tokens the first compressor under test read.
        baseline: A reference row (pass-through, truncation), not a compressor under test: listed first by the
            bench, never the one whose tokens set the equal budget.
        bench_default: Part of ``ragzip bench``'s default ``--methods``.
        aliases: Short names in the bench's method language: ``{"t": "threshold"}`` reads ``name:t0.3`` as
            ``threshold=0.3``; the alias ``""`` takes a bare number (``name:256``).
        index_cache: What ``ragzip index --<type>`` builds beside an index, if anything.
        commands: ``ragzip`` subcommands the plugin adds, by name.
    """

    trainer: str | bool = True
    evaluator: str | bool = True
    demo: Mapping[str, Any] | None = field(default_factory=dict)
    budget: str | None = None
    budget_rate: str | None = None
    equal_budget: bool = False
    baseline: bool = False
    bench_default: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)
    index_cache: IndexCache | None = None
    commands: Mapping[str, Command] = field(default_factory=dict)

    def check(self, config_class: type[CompressorConfig], where: str) -> None:
        """Raise ``ValueError`` when a field this declaration names is not a field of ``config_class``."""
        valid = field_names(config_class)
        named = [("budget", self.budget), ("budget_rate", self.budget_rate)]
        named += [(f"aliases[{alias!r}]", target) for alias, target in self.aliases.items()]
        named += [(f"demo[{key!r}]", key) for key in self.demo or {}]
        named += [("index_cache.options", key) for key in (self.index_cache.options if self.index_cache else ())]
        for what, name in named:
            if name is not None and name not in valid:
                raise ValueError(f"{where}: {what} names {name!r}, which is not a field of "
                                 f"{config_class.__name__}; use one of: {', '.join(valid)}.")
        if self.equal_budget and self.budget is None:
            raise ValueError(f"{where}: equal_budget needs `budget`, the config field the equal budget goes into.")


_REGISTRY: dict[str, type[Compressor]] = {}
_INFO: dict[str, CompressorInfo] = {}
_DECLARATION_KEYS = tuple(f.name for f in fields(CompressorInfo))


def register_compressor(compressor_class: type[Compressor], info: CompressorInfo | None = None,
                        **declaration: Any) -> type[Compressor]:
    """Register a compressor class under its ``name`` (the YAML ``type:``), with what the app needs to know of it.

    Usable as a decorator. Registering the same class again replaces its declaration when one is given.

    Args:
        compressor_class: The :class:`Compressor` subclass; its ``name`` must be set.
        info: Its :class:`CompressorInfo`; or give the fields as keywords instead.
        **declaration: The fields of a :class:`CompressorInfo` (``budget="max_tokens", aliases={...}``), when ``info``
            is not given.

    Returns:
        ``compressor_class`` itself, so that it can decorate the class.

    Raises:
        ValueError: ``name`` is empty or already taken by another class, or the declaration names a config field
            ``compressor_class.config_class`` lacks.
        TypeError: a keyword is not a :class:`CompressorInfo` field, or both ``info`` and keywords were given.

    Example:
        >>> register_compressor(MyCompressor, budget="max_words", aliases={"w": "max_words"})  # doctest: +SKIP
    """
    name = compressor_class.name
    if not name:
        raise ValueError(f"{compressor_class.__name__}.name must be set to its YAML type name.")
    if name in _REGISTRY and _REGISTRY[name] is not compressor_class:
        raise ValueError(f"a compressor named {name!r} is already registered ({_REGISTRY[name].__name__}).")
    for key in declaration:
        if key not in _DECLARATION_KEYS:
            raise TypeError(unknown_key_message(key, list(_DECLARATION_KEYS), f"register_compressor({name!r})"))
    if info is not None and declaration:
        raise TypeError(f"register_compressor({name!r}): give a CompressorInfo or keywords, not both.")
    if info is None and (declaration or name not in _INFO):
        info = CompressorInfo(**declaration)
    if info is not None:
        info.check(compressor_class.config_class, f"register_compressor({name!r})")
        _INFO[name] = info
    _REGISTRY[name] = compressor_class
    return compressor_class


def unregister_compressor(name: str) -> None:
    """Remove type ``name`` from the registry (a test's clean-up); unknown names are ignored."""
    _REGISTRY.pop(name, None)
    _INFO.pop(name, None)


def registered_compressors() -> list[str]:
    """The ``type:`` names that :func:`build_compressor` accepts."""
    import ragzip.plugins  # noqa: F401  (registers the built-in plugins; local: the plugins import this module)

    return sorted(_REGISTRY)


def get_compressor_class(name: str) -> type[Compressor]:
    """The class registered under the ``type:`` name ``name``.

    Raises:
        ConfigError: no compressor is registered under ``name``; the message lists the registered types and suggests
            the closest.
    """
    names = registered_compressors()
    if name not in _REGISTRY:
        raise ConfigError(unknown_key_message(name, names, "compressor.type").replace("unknown key", "unknown type"))
    return _REGISTRY[name]


def compressor_info(name: str) -> CompressorInfo:
    """What type ``name`` declared at registration (:class:`CompressorInfo`)."""
    get_compressor_class(name)
    return _INFO[name]


def compressor_infos() -> dict[str, CompressorInfo]:
    """Every registered type's :class:`CompressorInfo`, in the order they were registered."""
    registered_compressors()
    return dict(_INFO)


def trainers() -> dict[str, str]:
    """``{type: trainer module}`` of the trainable compressors, in the order they were registered."""
    return _entry_points("trainer", "train")


def evaluators() -> dict[str, str]:
    """``{type: evaluation module}`` of the compressors that declare one, in the order they were registered."""
    return _entry_points("evaluator", "evaluate")


def _entry_points(declaration: str, sibling: str) -> dict[str, str]:
    """``{type: module}`` for one ``main(argv)`` declaration (``trainer``, ``evaluator``) of every compressor."""
    out = {}
    for name, info in compressor_infos().items():
        module = _declared_module(_REGISTRY[name], getattr(info, declaration), sibling)
        if module is not None:
            out[name] = module
    return out


def _declared_module(compressor_class: type[Compressor], declared: str | bool, sibling: str) -> str | None:
    """The module a ``trainer``/``evaluator`` declaration names, or ``None``.

    A string names the module itself; ``True`` means the ``sibling`` module beside the compressor's module, when there
    is one.
    """
    if isinstance(declared, str):
        return declared
    if not declared:
        return None
    module = sys.modules.get(compressor_class.__module__)
    package = getattr(module, "__package__", None) or compressor_class.__module__.rpartition(".")[0]
    if not package:
        return None
    try:
        found = importlib.util.find_spec(f"{package}.{sibling}") is not None
    except (ImportError, ValueError):
        found = False
    return f"{package}.{sibling}" if found else None


def demo_configs() -> list[dict[str, Any]]:
    """The configs ``ragzip demo`` runs, one per compressor that declares one, in the order they were registered."""
    return [{"type": name, **info.demo} for name, info in compressor_infos().items() if info.demo is not None]


def build_compressor(
    cfg: Mapping[str, Any] | CompressorConfig | Sequence[Mapping[str, Any]] | Compressor,
    *,
    token_counter: TokenCounter | None = None,
    store: SoftTokenStore | None = None,
) -> Compressor:
    """Build a compressor from a config dict (``{"type": "extractive", ...}``), a typed config, or a list (a chain).

    Example:
        >>> c = build_compressor({"type": "truncate", "max_tokens": 3, "tokenizer": "whitespace"})
        >>> c.compress("q?", ["one two three four"]).text
        'one two three'
    """
    if isinstance(cfg, Compressor):
        return cfg
    if isinstance(cfg, CompressorConfig):
        for klass in _REGISTRY.values():
            if type(cfg) is klass.config_class:
                return klass(cfg, token_counter=token_counter, store=store)
        registered_compressors()
        for klass in _REGISTRY.values():
            if type(cfg) is klass.config_class:
                return klass(cfg, token_counter=token_counter, store=store)
        raise ConfigError(f"no registered compressor takes a {type(cfg).__name__}.")
    if isinstance(cfg, Sequence) and not isinstance(cfg, (str, bytes)):
        if not cfg:
            raise ConfigError("compressor list is empty; give at least one `type:` block, e.g. `- type: none`.")
        stages = [build_compressor(c, token_counter=token_counter, store=store) for c in cfg]
        return stages[0] if len(stages) == 1 else ChainCompressor(stages)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"compressor config must be a mapping with a `type:` key or a list of them, got {cfg!r}.")
    data = dict(cfg)
    if "type" not in data:
        raise ConfigError(f"compressor config has no `type:` key; add one of: {', '.join(registered_compressors())}.")
    klass = get_compressor_class(str(data.pop("type")))
    config = from_dict(klass.config_class, data, where=f"compressor[{klass.name}]")
    return klass(config, token_counter=token_counter, store=store)


def config_dict(compressor: Compressor) -> dict[str, Any]:
    """The YAML-ready dict of a compressor's config, ``type`` first."""
    return {"type": compressor.name, **to_dict(compressor.config)}


class ChainCompressor(Compressor):
    """Runs compressors in order; each stage reads the text the previous one kept.

    The final results refer to the original passages. Each result's ``stages`` holds every stage's own
    :class:`~ragzip.types.StageResult` (decision, reason, units with their scores), the units' spans mapped back to the
    original passage text; ``units`` are the last scoring stage's units, ``kept`` meaning the generator reads the unit
    whole after every stage. The decision is the passage's fate over the whole chain (``compressed`` when any stage cut
    it, even if a later stage passed the cut text on whole).

    Args:
        stages: The compressors, in the order they run; the chain uses the first one's soft-token store.

    Raises:
        ConfigError: a soft compressor (``xrag``, ``refrag``) is not the last stage; later stages cannot read soft
            tokens.
    """

    name = "chain"

    def __init__(self, stages: Sequence[Compressor]) -> None:
        super().__init__(CompressorConfig(), store=stages[0].store)
        if any(s.soft for s in stages[:-1]):
            raise ConfigError("a soft compressor (xrag, refrag) can only be the last stage of a chain: "
                              "later stages cannot read soft tokens.")
        self.stages = list(stages)
        self.soft = stages[-1].soft  # type: ignore[misc]

    @property
    def token_counter(self) -> TokenCounter:
        """The first stage's token counter; setting it sets every stage's."""
        return self.stages[0].token_counter

    @token_counter.setter
    def token_counter(self, counter: TokenCounter) -> None:
        for stage in self.stages:
            stage.token_counter = counter

    def bind(self, generator: Any) -> None:
        """Attach the chain and every stage to ``generator`` (its token counter, its soft-token store)."""
        super().bind(generator)
        for stage in self.stages:
            stage.bind(generator)

    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        current = passages
        history: list[list[CompressedContext]] = []
        for n, stage in enumerate(self.stages):
            outs = stage.compress_batch(queries, current) if any(current) else [
                stage.context(q, []) for q in queries]
            if n < len(self.stages) - 1 and any(o.summary for o in outs):
                raise ConfigError(f"chain stage {n} ({stage.name}) fused the passages into one summary, which later "
                                  "stages cannot map back to passages. Put the summarizing compressor (abstractive) "
                                  "last in the chain.")
            history.append(outs)
            current = [[r.passage.with_text(r.text) for r in out.results if r.text and out.summary is None]
                       for out in outs]
        return [self._combine(q, passages[i], [h[i] for h in history]) for i, q in enumerate(queries)]

    def _combine(self, query: str, originals: list[Passage], outs: list[CompressedContext]) -> CompressedContext:
        last = outs[-1]
        by_id: dict[str, list[tuple[str, PassageResult]]] = {p.id: [] for p in originals}
        for out in outs:
            for r in out.results:
                by_id.setdefault(r.passage.id, []).append((out.method, r))
        results = [_chain_result(p, by_id[p.id], len(outs)) for p in originals]
        return CompressedContext(query, tuple(results), "+".join(o.method for o in outs), summary=last.summary,
                                 summary_tokens=last.summary_tokens, reason=last.reason)

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]


# ------------------------------------------------------------------------------------------ chain provenance
_ALIGN_MAX_CHARS = 50_000  # difflib on longer texts is too slow; their later-stage spans stay unmapped


def _chain_result(p: Passage, trail: list[tuple[str, PassageResult]], n_stages: int) -> PassageResult:
    """One original passage's result after a chain: its fate over all stages, every stage's units on its text."""
    final = trail[-1][1]
    reached_end = len(trail) == n_stages
    text = final.text if reached_end else ""
    positions: list[int] = list(range(len(p.text)))  # original offset of each character of the stage's input
    stages: list[StageResult] = []
    scored: tuple[Unit, ...] = ()
    for method, r in trail:
        units = _map_units(r.units, positions, p.text)
        stages.append(StageResult(method, r.decision, r.reason, units, r.tokens_before, r.tokens_after, r.extra))
        if units:
            scored = units
        source = r.passage.text
        positions = [positions[i] if i >= 0 else -1 for i in _align(source, r.text, r.units)] if r.text else []
    read = {i for i in positions if i >= 0} if text else set()
    scored = tuple(replace(u, kept=u.kept and _covered(u, read, p.text)) for u in scored)
    if not reached_end or not text:
        decision = final.decision if final.decision in ("dropped", "empty", "duplicate") else "dropped"
    elif final.decision in ("soft", "summarized"):
        decision = final.decision
    else:
        decision = "kept" if text == p.text else "compressed"
    reason = final.reason
    if decision == "compressed" and final.decision == "kept":  # an earlier stage cut it
        cut = next((f"{m}: {r.reason}" for m, r in trail if r.decision == "compressed"), "")
        reason = f"cut by an earlier stage ({cut})" if cut else "cut by an earlier stage"
    return PassageResult(
        p, text, decision, reason=reason, units=scored, tokens_before=trail[0][1].tokens_before,
        tokens_after=final.tokens_after if reached_end else 0, soft=final.soft if reached_end else (),
        extra=dict(final.extra), stages=tuple(stages),
    )


def _map_units(units: Sequence[Unit], positions: list[int], original: str) -> tuple[Unit, ...]:
    """Units whose spans point into a stage's input text, re-pointed into the original passage text."""
    out = []
    for u in units:
        start = end = None
        if u.start is not None and u.end is not None and 0 <= u.start < u.end <= len(positions):
            a, b = positions[u.start], positions[u.end - 1]
            if a >= 0 and b >= 0 and original[a:b + 1] == u.text:
                start, end = a, b + 1
        out.append(replace(u, start=start, end=end))
    return tuple(out)


def _covered(u: Unit, read: set[int], original: str) -> bool:
    if u.start is None or u.end is None:
        return False
    return all(i in read for i in range(u.start, u.end) if not original[i].isspace())


def _align(source: str, out: str, units: Sequence[Unit]) -> list[int]:
    """For each character of ``out`` (a stage's output), its offset in ``source`` (the stage's input), or -1."""
    if out == source or source.startswith(out):
        return list(range(len(out)))
    mapped = [-1] * len(out)
    cursor = 0
    kept = [u for u in units if u.kept and u.start is not None and u.end is not None]
    for u in kept:  # extractive output: the kept sentences, in order, joined by spaces or line breaks
        at = out.find(u.text, cursor)
        if at < 0:
            break
        mapped[at:at + len(u.text)] = range(u.start, u.end)  # type: ignore[arg-type]
        cursor = at + len(u.text)
    else:
        if kept:
            return mapped
    if max(len(source), len(out)) > _ALIGN_MAX_CHARS:
        return [-1] * len(out)
    mapped = [-1] * len(out)
    for a, b, size in difflib.SequenceMatcher(None, source, out, autojunk=False).get_matching_blocks():
        mapped[b:b + size] = range(a, a + size)
    return mapped
