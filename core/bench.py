"""``ragzip bench``: every method on the same questions, the same retrieval and the same generator, in one process.

The output is the benchmark contract of DESIGN §6: a JSON summary (``data``, ``n``, ``retrieval{mode, top_k,
recall_at_k}``, ``generator``, ``methods{name: {acc, em, f1, context_tokens, compression_ratio, compress_s, ttft_s,
total_s, peak_rss_mb, n}}``, plus extra keys such as ``skipped``), and beside it, with the same stem: a per-question
JSONL (``.jsonl``), a Markdown table (``.md``) and a plot (``.png``).

Methods (``--methods``, comma-separated; each label is also its key in the JSON):

- ``no_context``: the question alone. ``none``: the full retrieved context.
- ``truncate:N``: the first N context tokens. Plain ``truncate`` takes the budget from the *reference method*: the
  mean tokens read by the first ragzip compressor in the list other than none/no_context/truncate (when none ran, the
  first peer that ran), rounded to an integer, so both compare at equal budget.
- ragzip's compressors under their ``type:`` name (``extractive``, ``abstractive``, ``xrag``, ``refrag``); a plugin
  that is not in this build is reported under ``skipped``.
- peers (:mod:`ragzip.peers`): ``lc_embeddings_filter``, ``li_sentence_optimizer``, ``longllmlingua``. Plain
  ``longllmlingua`` gets ``target_token`` = the same equal budget as plain ``truncate`` (its own ``rate`` when there is
  no reference). A peer whose package is missing is reported under ``skipped`` with the install command.
- names defined in ``--config`` (``methods: {label: {type: ..., ...}}``).

Variants: ``name:key=value,key=value`` sets config fields (values read as YAML scalars: ``extractive:threshold=0.3``,
``lc_embeddings_filter:k=3``). Short forms ``name:<alias><number>``: the alias is a config field of that name
(``refrag:k8`` -> ``k=8``, ``refrag:p0.25``) or one of :data:`ALIASES` (``extractive:t0.3`` -> ``threshold=0.3``,
``longllmlingua:r0.3`` -> ``rate=0.3``, ``li_sentence_optimizer:p0.3``, ``lc_embeddings_filter:t0.5``);
``truncate:256`` -> ``max_tokens=256``. Keys are checked against the method's config before any model loads.

How it measures (all means per question):

- **Questions**: the first ``--limit`` after a shuffle seeded with ``--seed`` (:func:`ragzip.data.select`).
- **Retrieval** ``faiss``: one exact FAISS index over every distinct passage of the data file (not only the selected
  questions'), top-K per question; ``recall_at_k`` = mean fraction of each question's gold passages retrieved
  (HotpotQA: both supporting paragraphs), over questions that name gold passages. ``given``: each question's own
  passages (HotpotQA distractor setting: all 10 paragraphs), ``top_k`` is then ``null``.
- **Compression**: after one untimed warm-up call per method on the first question (model loading and first-call
  costs are not charged to a question), one question at a time with ``--batch-size 1`` (the latency a user sees), or
  the ``--batch-size`` questions of a batch together (``compress_batch``: a model-based compressor scores them in one
  pass; each question is charged the batch's time divided by its size). ``compress_s`` is the compressor's own
  timing, including its token counting.
- **Generation**: greedy, one question at a time by default (``--batch-size 1``), so ``ttft_s`` is the real time to the
  first token of that question; with a larger batch all prompts of a batch share its prefill and TTFT is the batch's.
  ``ttft_s`` and ``total_s`` are end to end: ``compress_s`` + the generator's prefill-to-first-token (``gen_ttft_s``)
  and + the generator's whole decode (``gen_s``), respectively.
- **Tokens**: ``context_tokens`` = tokens the generator reads (soft tokens count one each), counted with the generator's
  tokenizer for every method; ``compression_ratio`` = total uncompressed context tokens / total tokens read over all
  questions (ratio of sums; ``null`` when a method reads nothing, as ``no_context``).
- **Memory**: ``peak_rss_mb`` = the highest resident set size of the bench process, sampled every 20 ms while the
  method is built, warmed up and run. It includes what every method shares (generator, embedder, Python); the
  method's own footprint is roughly ``rss_delta_mb`` (peak minus the RSS when the method started). Each method's
  models are released before the next method starts.
- **Scores**: :func:`ragzip.metrics.score` (``acc`` = a gold answer occurs in the normalised output on word
  boundaries; EM and F1 with SQuAD normalisation, max over golds).

Example:
    >>> parse_method("extractive:t0.3").options
    {'threshold': 0.3}
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import gc
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragzip.errors import ConfigError, InputError, MissingDependencyError, ModelNotFoundError, RagzipError

logger = logging.getLogger(__name__)

NO_CONTEXT = "no_context"
BASELINES = ("no_context", "none", "truncate")
DEFAULT_METHODS = "no_context,none,truncate,extractive,lc_embeddings_filter,li_sentence_optimizer,longllmlingua"
ALIASES: dict[str, dict[str, str]] = {
    "truncate": {"": "max_tokens", "n": "max_tokens"},
    "extractive": {"t": "threshold"},
    "abstractive": {"n": "max_summary_tokens"},
    "lc_embeddings_filter": {"t": "similarity_threshold"},
    "li_sentence_optimizer": {"p": "percentile_cutoff", "t": "threshold_cutoff"},
    "longllmlingua": {"r": "rate", "n": "target_token"},
    "ragcompress": {"": "budget", "n": "budget", "k": "top_k"},
}
# Options that only change which scored units are kept: a sweep over one of them re-selects from one scoring pass.
SELECTION_KNOBS = frozenset({"threshold", "relative", "max_tokens", "top_k", "neighbors", "selective"})
CONTRACT_KEYS = ("acc", "em", "f1", "context_tokens", "compression_ratio", "compress_s", "ttft_s", "total_s",
                 "peak_rss_mb", "n")


# ---------------------------------------------------------------------------------------------------- method specs
@dataclass(frozen=True)
class MethodSpec:
    """One ``--methods`` entry.

    Attributes:
        label: The text as written (the key in the results).
        name: The base method: ``no_context``, ``none``, ``truncate``, a peer, a ragzip compressor type, or a label
            from ``--config``.
        kind: ``"no_context"``, ``"ragzip"`` (a registered compressor or a config method), ``"peer"`` or
            ``"absent"`` (a ragzip plugin that is not in this build: reported as skipped).
        options: Config overrides from the variant.
        config: The full compressor config (a dict with ``type``, or a list for a chain) for ragzip methods.
        budgeted: True for plain ``truncate`` and plain ``longllmlingua``: their budget comes from the reference
            method.
        family: The operating curve this setting is a point of: ``name:key=*`` (plus the other options) for a
            sweep ``name:key=a/b/c``, else the label itself.
        knob: The swept option (``None`` outside a sweep).
    """

    label: str
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    config: Any = None
    budgeted: bool = False
    family: str = ""
    knob: str | None = None


def _plugin_names() -> tuple[list[str], list[str]]:
    """(registered compressor types, ragzip plugin folders that are not registered in this build)."""
    from ragzip.compressor import registered_compressors
    from ragzip.plugins import PLUGINS

    registered = [n for n in registered_compressors() if n != "chain"]
    return registered, [p for p in PLUGINS if p not in registered and p != "baseline"]


def valid_method_names(custom: Mapping[str, Any] | None = None) -> list[str]:
    """Every method name ``--methods`` accepts (before ``:variant``)."""
    from ragzip.peers import PEERS

    registered, absent = _plugin_names()
    names = list(BASELINES) + [n for n in registered if n not in BASELINES] + list(PEERS) + absent
    return list(dict.fromkeys([*names, *(custom or {})]))


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _config_fields(name: str) -> list[str]:
    from ragzip.compressor import get_compressor_class
    from ragzip.config_utils import field_names
    from ragzip.peers import PEER_CLASSES

    klass = PEER_CLASSES[name] if name in PEER_CLASSES else get_compressor_class(name)
    return field_names(klass.config_class)


def _parse_variant(name: str, variant: str, label: str) -> dict[str, Any]:
    if not variant:
        return {}
    if "=" in variant:
        options: dict[str, Any] = {}
        for part in variant.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"method {label!r}: variant part {part!r} is not key=value. Write "
                                  f"`{name}:key=value,key=value`, e.g. `extractive:threshold=0.3`.")
            options[key.strip()] = _scalar(value.strip())
        return options
    match = re.fullmatch(r"([A-Za-z_]*)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", variant)
    value = _scalar(match.group(2)) if match else None
    if match is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"method {label!r}: variant {variant!r} is neither key=value pairs nor <alias><number>. "
                          f"Write e.g. `{name}:key=value` or `extractive:t0.3`, `truncate:256`, `refrag:k8`.")
    letters = match.group(1)
    fields = _config_fields(name)
    key = letters if letters in fields else ALIASES.get(name, {}).get(letters)
    if key is None:
        known = sorted({*ALIASES.get(name, {}), *(f for f in fields if len(f) <= 2)} - {""})
        hint = f" Short aliases of {name}: {', '.join(known)}." if known else ""
        raise ConfigError(f"method {label!r}: {letters!r} is not a short alias or a config field of {name!r}.{hint} "
                          f"Or write `{name}:key=value` with one of: {', '.join(fields)}.")
    return {key: value}


def parse_method(text: str, custom: Mapping[str, Any] | None = None) -> MethodSpec:
    """Parse one ``--methods`` entry; options are validated against the method's config (no model is loaded).

    Raises:
        ConfigError: unknown method (the message lists the valid ones and the close match) or a bad variant.
    """
    from ragzip.config_utils import from_dict
    from ragzip.peers import PEER_CLASSES, PEERS

    label = text.strip()
    if not label:
        raise ConfigError("empty method name in --methods; separate names with single commas, e.g. "
                          "`--methods none,truncate,extractive`.")
    custom = custom or {}
    if label in custom:
        return MethodSpec(label, label, "ragzip", config=custom[label])
    name, _, variant = label.partition(":")
    registered, absent = _plugin_names()
    if name == NO_CONTEXT:
        if variant:
            raise ConfigError(f"method {label!r}: no_context takes no variant.")
        return MethodSpec(label, name, NO_CONTEXT)
    if name in absent:
        return MethodSpec(label, name, "absent")
    if name in PEERS:
        options = _parse_variant(name, variant, label)
        from_dict(PEER_CLASSES[name].config_class, options, where=f"method {label!r}")
        budgeted = name == "longllmlingua" and not {"rate", "target_token"} & set(options)
        return MethodSpec(label, name, "peer", options, budgeted=budgeted)
    if name in registered:
        options = _parse_variant(name, variant, label)
        from ragzip.compressor import get_compressor_class

        from_dict(get_compressor_class(name).config_class, options, where=f"method {label!r}")
        budgeted = name == "truncate" and "max_tokens" not in options
        return MethodSpec(label, name, "ragzip", options, config={"type": name, **options}, budgeted=budgeted)
    valid = valid_method_names(custom)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown method {name!r} in --methods.{hint} Valid methods: {', '.join(valid)} "
                      "(with optional :variant, e.g. truncate:256, extractive:t0.3, lc_embeddings_filter:k=3).")


def expand_sweep(item: str) -> list[tuple[str, str, str | None]]:
    """``name:key=a/b/c`` (or ``name:<alias>a/b/c``, ``truncate:64/128``) -> one ``(label, family, knob)`` per value.

    Only numeric values sweep; an entry without ``/`` is returned as itself (family = label, knob None).

    Example:
        >>> [x[0] for x in expand_sweep("truncate:64/128")]
        ['truncate:64', 'truncate:128']
    """
    name, colon, variant = item.strip().partition(":")
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    parts = variant.split(",") if "=" in variant else [variant]
    for i, part in enumerate(parts):
        key, eq, value = part.rpartition("=") if "=" in part else ("", "", part)
        match = re.fullmatch(rf"([A-Za-z_]*)((?:{number})(?:/(?:{number}))+)", value.strip())
        if not colon or match is None:
            continue
        letters, values = match.group(1), match.group(2).split("/")
        knob = key.strip() + eq if eq else letters
        out = []
        for v in values:
            new = parts[:i] + [f"{key}{eq}{letters}{v}"] + parts[i + 1:]
            out.append((f"{name}:{','.join(new)}", f"{name}:{','.join(parts[:i] + [f'{knob}*'] + parts[i + 1:])}",
                        knob.rstrip("=") or "value"))
        return out
    return [(item.strip(), item.strip(), None)]


def parse_methods(text: str | Sequence[str], custom: Mapping[str, Any] | None = None) -> list[MethodSpec]:
    """Parse a comma-separated ``--methods`` value (or a list of entries); duplicates are an error.

    An entry ``name:key=a/b/c`` is a sweep: one setting per value, reported together as an operating curve.
    """
    items = _split_methods(text) if isinstance(text, str) else list(text)
    specs = []
    for item in items:
        group = [(parse_method(label, custom), family) for label, family, _ in expand_sweep(item)]
        knob = None
        if len(group) > 1:  # the option whose value changes along the sweep
            knob = next((k for k in group[0][0].options if len({repr(g.options.get(k)) for g, _ in group}) > 1),
                        None)
        specs.extend(replace(spec, family=family, knob=knob) for spec, family in group)
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise ConfigError(f"method {spec.label!r} is listed twice in --methods; list each once.")
        seen.add(spec.label)
    if not specs:
        raise ConfigError("--methods is empty; name at least one method, e.g. `--methods none,truncate`.")
    return specs


def _split_methods(text: str) -> list[str]:
    """Split at commas that start a new method (``lc_embeddings_filter:k=3,similarity_threshold=0.2,none``)."""
    parts: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if parts and "=" in piece and ":" not in piece and ":" in parts[-1] and "=" in parts[-1]:
            parts[-1] += "," + piece  # another key=value of the previous method's variant
        else:
            parts.append(piece)
    return parts


# ---------------------------------------------------------------------------------------------------- measurement
def _rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, not current (kB on Linux)


class RSSSampler:
    """Samples the process RSS every ``interval`` seconds in a daemon thread; ``peak_mb`` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ragzip-bench-rss")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    for module in ("torch", "transformers", "faiss", "llmlingua", "langchain_classic", "llama_index.core"):
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, "__version__", None):
            info[module.split(".")[0]] = mod.__version__
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return info


# ---------------------------------------------------------------------------------------------------------- config
def load_bench_config(path: str | Path | None) -> dict[str, Any]:
    """Read a bench YAML: ``methods`` (label -> compressor config or chain), ``generator`` (GeneratorConfig fields),
    ``embedder`` (spec); a pipeline YAML's ``compressor:`` becomes method ``config`` and its ``retriever.embedder`` /
    ``retriever.top_k`` are used as defaults.

    Raises:
        ConfigError: missing file, invalid YAML or an unknown top-level key (named, with the close match).
    """
    if path is None:
        return {}
    import yaml

    from ragzip.config_utils import unknown_key_message

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench config {str(path)!r} not found; pass a YAML with `methods:`, `generator:` and/or "
                          "`embedder:` (see benchmarks/README.md).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"bench config {str(path)!r} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"bench config {str(path)!r} must be a mapping, got {type(data).__name__}.")
    allowed = ["methods", "generator", "embedder", "retriever", "compressor"]
    for key in data:
        if key not in allowed:
            raise ConfigError(unknown_key_message(str(key), allowed, f"bench config {path.name}"))
    out: dict[str, Any] = {"methods": {}}
    methods = data.get("methods") or {}
    if not isinstance(methods, Mapping):
        raise ConfigError(f"{path.name}: `methods` must map a label to a compressor config, e.g. "
                          "`methods: {strict: {type: extractive, threshold: 0.7}}`.")
    if "compressor" in data:
        methods = {"config": data["compressor"], **methods}
    from ragzip.config import validate_compressor_block

    for label, block in methods.items():
        try:
            validate_compressor_block(block)
        except ConfigError as err:
            raise ConfigError(f"{path.name}: method {label!r}: {err}") from None
        out["methods"][str(label)] = block
    retriever = data.get("retriever") or {}
    if "embedder" in data or "embedder" in retriever:
        out["embedder"] = data.get("embedder", retriever.get("embedder"))
    if "top_k" in retriever:
        out["top_k"] = retriever["top_k"]
    if "generator" in data:
        out["generator"] = dict(data["generator"] or {})
    return out


# ----------------------------------------------------------------------------------------------------------- bench
@dataclass
class _Run:
    """Everything one method produced."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]


def _compressor_for(spec: MethodSpec, options: dict[str, Any], *, embedder: Any, generator: Any) -> Any:
    """Build (and bind to the generator) the compressor of ``spec``."""
    if spec.kind == "peer":
        from ragzip.peers import build_peer

        compressor = build_peer(spec.name, options, embedder=embedder, token_counter=generator.token_counter)
    else:
        from ragzip.compressor import build_compressor

        config = spec.config
        if isinstance(config, Mapping):
            config = {**config, **options}
        compressor = build_compressor(config)
    if hasattr(compressor, "bind"):
        compressor.bind(generator)
    else:  # pragma: no cover - older cores
        compressor.token_counter = generator.token_counter
    return compressor


def _no_context(question: str, passages: Sequence[Any], counter: Any) -> Any:
    from ragzip.types import CompressedContext, PassageResult

    counts = counter.count_many([p.text for p in passages])
    return CompressedContext(question, tuple(
        PassageResult(p, "", "dropped", reason="no_context: the question alone", tokens_before=n)
        for p, n in zip(passages, counts, strict=False)), NO_CONTEXT)


def _records(spec: MethodSpec, examples: Sequence[Any], contexts: Sequence[Any], generations: Sequence[Any] | None,
             recalls: Sequence[float | None]) -> list[dict[str, Any]]:
    """One record per question: what the generator read (``context_text``, placeholders as they are), the evidence
    metrics and, when the reader ran, its answer and scores."""
    from ragzip.evidence import evidence
    from ragzip.metrics import score

    out = []
    gens: Sequence[Any] = generations if generations is not None else [None] * len(examples)
    for ex, ctx, gen, rec in zip(examples, contexts, gens, recalls, strict=True):
        text = ctx.text
        record: dict[str, Any] = {
            "id": ex.id, "method": spec.label, "question": ex.question, "golds": list(ex.answers),
            **evidence(text, ex.answers, getattr(ex, "supporting", ())),
            "tokens_before": ctx.tokens_before, "tokens_after": ctx.tokens_after,
            "compress_s": round(ctx.compress_s, 5),
        }
        if gen is not None:
            record.update({
                "prediction": gen.text, "raw_prediction": gen.raw_text, **score(gen.text, ex.answers),
                "gen_ttft_s": round(gen.ttft_s, 5), "gen_s": round(gen.total_s, 5),
                "ttft_s": round(ctx.compress_s + gen.ttft_s, 5), "total_s": round(ctx.compress_s + gen.total_s, 5),
                "prompt_positions": gen.prompt_positions, "new_tokens": gen.new_tokens,
                "finish_reason": getattr(gen, "finish_reason", ""),
            })
        record.update({
            "recall": rec, "gold_passages": list(ex.gold_ids), "context_text": text,
            "passages": [_slim(r.provenance(), r.passage.metadata.get("title")) for r in ctx.results],
            **({"reason": ctx.reason} if ctx.reason else {}),
        })
        out.append(record)
    return out


def _slim(provenance: dict[str, Any], title: Any) -> dict[str, Any]:
    """A passage's provenance for the per-question JSONL: units without their text (``start``/``end`` locate them;
    ``context_text`` holds what the generator read), so a thousand-question sweep stays a manageable file."""
    units = [{k: v for k, v in u.items() if k != "text"} if isinstance(u, dict) else u
             for u in provenance.get("units") or []]
    return {**provenance, "units": units, "title": title} if units else {**provenance, "title": title}


def _summarise(records: Sequence[dict[str, Any]], rss: RSSSampler, extra: dict[str, Any]) -> dict[str, Any]:
    from ragzip.evidence import EVIDENCE_KEYS, mean_defined

    before = sum(r["tokens_before"] for r in records)
    after = sum(r["tokens_after"] for r in records)
    evidence: dict[str, Any] = {}
    for key in EVIDENCE_KEYS:
        evidence[key] = mean_defined([r[key] for r in records])
        evidence[f"{key}_n"] = sum(r[key] is not None for r in records)
    if records and "acc" not in records[0]:  # --no-generate: evidence and compression cost only
        return {
            **evidence, "context_tokens": _mean([r["tokens_after"] for r in records]),
            "compression_ratio": (before / after) if after else (None if before else 1.0),
            "compress_s": _mean([r["compress_s"] for r in records]), "peak_rss_mb": round(rss.peak_mb, 1),
            "n": len(records), "tokens_before": _mean([r["tokens_before"] for r in records]),
            "empty_context": _mean([float(r["tokens_after"] == 0) for r in records]),
            "rss_delta_mb": round(rss.peak_mb - rss.start_mb, 1), **extra,
        }
    summary: dict[str, Any] = {
        "acc": _mean([r["acc"] for r in records]),
        "em": _mean([r["em"] for r in records]),
        "f1": _mean([r["f1"] for r in records]),
        "context_tokens": _mean([r["tokens_after"] for r in records]),
        "compression_ratio": (before / after) if after else (None if before else 1.0),
        "compress_s": _mean([r["compress_s"] for r in records]),
        "ttft_s": _mean([r["ttft_s"] for r in records if r["ttft_s"] is not None]),
        "total_s": _mean([r["total_s"] for r in records if r["total_s"] is not None]),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "n": len(records),
        "tokens_before": _mean([r["tokens_before"] for r in records]),
        "gen_ttft_s": _mean([r["gen_ttft_s"] for r in records if r["gen_ttft_s"] is not None]),
        "ttft_n": sum(r["ttft_s"] is not None for r in records),
        "gen_s": _mean([r["gen_s"] for r in records]),
        "new_tokens": _mean([r["new_tokens"] for r in records]),
        "empty_context": _mean([float(r["tokens_after"] == 0) for r in records]),
        "rss_delta_mb": round(rss.peak_mb - rss.start_mb, 1),
        **evidence,
    }
    summary.update(extra)
    return summary


def _run_method(spec: MethodSpec, options: dict[str, Any], examples: Sequence[Any], passages: Sequence[list[Any]],
                recalls: Sequence[float | None], *, generator: Any, embedder: Any, batch_size: int, warmup: bool,
                progress: bool, seed: int, ttft_questions: int = 0, generate: bool = True,
                shared: dict[str, Any] | None = None) -> _Run:
    """Compress (and, with ``generate``, answer) every question with one method.

    ``shared`` maps a sweep's family to the compressor its first setting built: a compressor that can re-select
    without re-scoring (it has ``memoize_scores``) is reused for the family's other settings with only the swept
    option changed, so a sweep scores each sentence once.
    """
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    questions = [ex.question for ex in examples]
    reused_from = None
    with RSSSampler() as rss:
        compressor = None
        if spec.kind != NO_CONTEXT:
            reusable = spec.knob in SELECTION_KNOBS  # a knob that changes the model or its inputs needs a fresh one
            base = (shared or {}).get(spec.family) if reusable else None
            if base is not None:
                compressor = _variant(base, options)
                reused_from = getattr(base, "_bench_label", None)
            else:
                compressor = _compressor_for(spec, options, embedder=embedder, generator=generator)
                if reusable and shared is not None and hasattr(compressor, "memoize_scores"):
                    compressor.memoize_scores()
                    compressor._bench_label = spec.label
                    shared[spec.family] = compressor
            if warmup and questions and base is None:
                compressor.compress(questions[0], passages[0])
        contexts: list[Any] = []
        generations: list[Any] = []
        bar = tqdm(total=len(questions), desc=spec.label, file=sys.stderr, disable=not progress, leave=True,
                   dynamic_ncols=True)
        ttft: dict[int, float] = {}
        loop_start = time.perf_counter()
        try:
            step = max(batch_size, 1)
            for lo in range(0, len(questions), step):
                chunk = list(range(lo, min(lo + step, len(questions))))
                # A batch of questions is compressed together (a model-based compressor scores them in one batch).
                if compressor is None:
                    contexts.extend(_no_context(questions[i], passages[i], generator.token_counter) for i in chunk)
                elif len(chunk) == 1:
                    contexts.append(compressor.compress(questions[chunk[0]], passages[chunk[0]]))
                else:
                    contexts.extend(compressor.compress_batch([questions[i] for i in chunk],
                                                              [passages[i] for i in chunk]))
                if not generate:
                    bar.update(len(chunk))
                    continue
                ctxs = [contexts[i] if compressor is not None else None for i in chunk]
                if batch_size <= 1:
                    generations.append(generator.answer(questions[chunk[0]], ctxs[0]))
                    bar.update(1)
                    continue
                for i, ctx in zip(chunk, ctxs, strict=True):
                    if i < ttft_questions:  # exact TTFT of this question alone (a batch's prefill is shared)
                        ttft[i] = generator.generate([generator.answer_prompt(questions[i], ctx)],
                                                     max_new_tokens=1, release=False)[0].ttft_s
                generations.extend(generator.answer_batch([questions[i] for i in chunk], ctxs))
                bar.update(len(chunk))
        finally:
            bar.close()
        loop_s = time.perf_counter() - loop_start
        config = None
        if compressor is not None:
            try:
                from ragzip.compressor import config_dict

                config = config_dict(compressor)
            except Exception:  # noqa: BLE001 - the config is informative only
                config = None
        del compressor
        gc.collect()
    records = _records(spec, examples, contexts, generations if generate else None, recalls)
    wall = round(loop_s / max(len(records), 1), 5)
    extra: dict[str, Any] = {"kind": spec.kind, "wall_per_question_s": wall, "family": spec.family}
    if spec.knob:
        extra["knob"] = spec.knob
    if reused_from:
        extra["scores_from"] = reused_from  # selection only: the sentences were scored by that setting
    if generate and batch_size > 1:
        # A batch shares its prefill and decoding: no question has a TTFT or a total time of its own. TTFT is kept
        # where it was measured alone; the time per question is the method's wall time over the questions.
        for i, r in enumerate(records):
            r["batch_ttft_s"], r["batch_total_s"] = r["gen_ttft_s"], r["total_s"]
            r["gen_ttft_s"] = round(ttft[i], 5) if i in ttft else None
            r["ttft_s"] = round(r["compress_s"] + ttft[i], 5) if i in ttft else None
            r["total_s"] = None
        extra["total_s"] = wall
        extra["batch_latency_s"] = _mean([r["batch_total_s"] for r in records])
    if config is not None:
        extra["config"] = _jsonable(config)
    return _Run(_summarise(records, rss, extra), records)


def _variant(compressor: Any, options: Mapping[str, Any]) -> Any:
    """A shallow copy of ``compressor`` (sharing its models and score memo) with config ``options`` changed."""
    import copy
    import dataclasses

    clone = copy.copy(compressor)
    clone.config = dataclasses.replace(compressor.config, **options)
    return clone


class MemoEmbedder:
    """An embedder that remembers every text it encoded: the settings of one sweep embed each text once (one memo
    per sweep, so no other method's timing benefits from it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._docs: dict[str, Any] = {}
        self._queries: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self._docs))
        if missing:
            for t, v in zip(missing, self.inner.encode(missing, **kwargs), strict=True):
                self._docs[t] = v
        if not texts:
            return self.inner.encode([], **kwargs)
        return np.stack([self._docs[t] for t in texts])

    def encode_query(self, text: str) -> Any:
        if text not in self._queries:
            self._queries[text] = self.inner.encode_query(text)
        return self._queries[text]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _faiss_retriever(passages: Sequence[Any], embedder: Any, top_k: int, cache: str | Path | None,
                    label: str) -> tuple[Any, bool]:
    """Build the FAISS index of ``passages``, or load it from ``cache`` when an identical one was saved there.

    The cache key is the SHA-256 of the embedder name and every passage id (a content hash), in order, so a changed
    data file or embedder never reuses a stale index. Returns the retriever and whether it came from the cache.
    """
    import hashlib

    from ragzip.retrieval import FaissRetriever

    if cache is None:
        return FaissRetriever.build(passages, embedder, top_k=top_k), False
    digest = hashlib.sha256("\n".join([str(getattr(embedder, "name", "")), *(p.id for p in passages)]).encode())
    folder = Path(cache).expanduser() / f"{label}-{digest.hexdigest()[:16]}"
    from ragzip.retrieval import is_saved_index

    if is_saved_index(folder):
        try:
            return FaissRetriever.load(folder, embedder=embedder, top_k=top_k), True
        except RagzipError as err:
            logger.warning("index cache %s is unusable (%s); rebuilding it", folder, err)
    retriever = FaissRetriever.build(passages, embedder, top_k=top_k)
    try:
        retriever.save(folder)
    except (OSError, RagzipError) as err:
        logger.warning("could not cache the index in %s: %s", folder, err)
    return retriever, False


def _retrieve(examples: Sequence[Any], all_examples: Sequence[Any], setting: str, top_k: int,
              embedder: Any, cache: str | Path | None = None, label: str = "corpus", *, distractors: int = 0,
              seed: int = 0) -> tuple[list[list[Any]], dict[str, Any]]:
    from ragzip.data import corpus, recall, same_article_distractors

    if setting == "given" and distractors:
        passages = same_article_distractors(examples, all_examples, distractors, seed)
        info: dict[str, Any] = {"mode": "given", "top_k": None, "distractors": distractors}
    elif setting == "given":
        passages = [list(ex.passages) for ex in examples]
        info = {"mode": "given", "top_k": None}
    elif setting == "faiss":
        start = time.perf_counter()
        retriever, cached = _faiss_retriever(corpus(all_examples), embedder, top_k, cache, label)
        passages = retriever.search_batch([ex.question for ex in examples], top_k)
        info = {"mode": "faiss", "top_k": top_k, "corpus_passages": len(retriever),
                "index_s": round(time.perf_counter() - start, 2), "index_cached": cached}
    else:
        raise ConfigError(f"--setting {setting!r} is not valid; choose faiss (one FAISS index over all passages of the "
                          "file) or given (each question's own passages).")
    recalls = [recall(p, ex.gold_ids) for p, ex in zip(passages, examples, strict=False)]
    scored = [r for r in recalls if r is not None]
    info["recall_at_k"] = _mean(scored) if scored else None
    info["questions_with_gold"] = len(scored)
    info["passages_per_question"] = _mean([len(p) for p in passages])
    return passages, {"recalls": recalls, **info}


def run_bench(
    data: str | Path,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    *,
    limit: int | None = 100,
    top_k: int = 5,
    setting: str = "faiss",
    seed: int = 0,
    generator: str | Any = "embedded:smollm2-135m",
    max_new_tokens: int | None = None,
    embedder: str | Any = "embedded:minilm",
    config: str | Path | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    batch_size: int = 1,
    warmup: bool = True,
    progress: bool = True,
    command: str | None = None,
    index_cache: str | Path | None = None,
    budget: int | None = None,
    ttft_questions: int = 20,
    generate: bool = True,
    distractors: int = 0,
    require_gold: bool = False,
    reference: str | None = None,
    budgets: Sequence[int | str] = (64, 128, 256),
    resamples: int = 1000,
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (and write the files when ``out`` is given).

    Args:
        data: HotpotQA-style or NQ/SQuAD-style JSONL.
        methods: Comma-separated ``--methods`` value or a list of entries.
        limit: Questions to run (first ``limit`` after the seeded shuffle); ``None`` for all.
        top_k: Passages retrieved per question (``faiss`` setting).
        setting: ``faiss`` or ``given``.
        seed: Shuffle and torch seed.
        generator: A model spec for :class:`~ragzip.generation.HFGenerator`, or a ready generator (tests pass tiny
            ones).
        max_new_tokens: Overrides the generator config's ``max_new_tokens`` (spec generators only).
        embedder: An embedder spec or a ready :class:`~ragzip.embed.Embedder` (retrieval and the embedding peers).
        config: A bench YAML path or an already-parsed mapping (see :func:`load_bench_config`).
        out: Where to write the JSON; ``.jsonl``, ``.md`` and ``.png`` go beside it with the same stem.
        batch_size: Questions decoded together (1: exact per-question TTFT).
        ttft_questions: With ``batch_size > 1``: the first N questions of each method are also run alone to the first
            token, and ``ttft_s`` is their mean (a batch's shared prefill is not any question's TTFT).
        warmup: Run each method once, untimed, on the first question before measuring.
        progress: Show a progress bar per method on stderr.
        command: The command line to record (the CLI passes its own).
        index_cache: Folder where the ``faiss`` index is saved and reused (keyed by the embedder and the passages'
            content ids); ``None`` builds it every time.
        budget: The equal budget (tokens) for plain ``truncate`` and ``longllmlingua``, instead of taking it from the
            reference method (to add rows to an earlier run at its budget).
        generate: Run the reader. ``False`` (``--no-generate``) measures only what survives compression (the
            evidence metrics) and the compression cost; the generator's model is then never loaded for text methods.
        distractors: ``given`` setting: add this many other passages of the same article (``metadata["title"]``,
            from the whole file) to each question's own, shuffled (SQuAD's same-topic distractor setting).
        require_gold: Keep only questions whose record names a gold passage (NQ-open: those with a ``context``).
        reference: A method label (or a sweep family) every row is also compared with (``diff_ci_ref``); the
            ``at_budget`` table compares every curve with it.
        budgets: Tokens-read budgets at which each curve is read (interpolated between its measured settings);
            ``"25%"`` = a quarter of the tokens ``none`` reads.
        resamples: Bootstrap resamples of the paired 95% intervals.

    Returns:
        The DESIGN §6 dict plus ``skipped``, ``setting``, ``seed``, ``budget``, ``command``, ``date``, ``machine``.

    Raises:
        ConfigError / InputError: bad method names or options, data or settings, before any model is loaded.
    """
    from ragzip.data import load_qa, select

    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_at_start = _load_avg()
    cfg = config if isinstance(config, Mapping) else load_bench_config(config)
    specs = parse_methods(methods, cfg.get("methods"))
    if setting not in ("faiss", "given"):
        raise ConfigError(f"setting {setting!r} is not valid; choose faiss or given.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k = {top_k!r} must be a positive integer, e.g. 5.")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ConfigError(f"budget = {budget!r} must be a non-negative integer (tokens), e.g. 300.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r} must be a positive integer (1 for exact per-question TTFT).")
    if isinstance(ttft_questions, bool) or not isinstance(ttft_questions, int) or ttft_questions < 0:
        raise ConfigError(f"ttft_questions = {ttft_questions!r} must be a non-negative integer, e.g. 20.")
    if isinstance(distractors, bool) or not isinstance(distractors, int) or distractors < 0:
        raise ConfigError(f"distractors = {distractors!r} must be a non-negative integer, e.g. 4.")
    if distractors and setting != "given":
        raise ConfigError("distractors only apply to --setting given (same-article passages added to each question's "
                          "own); with faiss, retrieval picks the passages.")
    all_examples = load_qa(data)
    pool = [ex for ex in all_examples if ex.gold_ids] if require_gold else all_examples
    if not pool:
        raise InputError(f"no question of {data} names a gold passage; drop --require-gold.")
    examples = select(pool, limit, seed)

    gen = _make_generator(generator, cfg.get("generator"), max_new_tokens, batch_size)
    emb = embedder
    needs_embedder = setting == "faiss" or any(s.kind == "peer" and s.name != "longllmlingua" for s in specs)
    if isinstance(emb, str) and needs_embedder:
        from ragzip.embed import Embedder

        emb = Embedder(cfg.get("embedder", emb))
    passages, retrieval = _retrieve(examples, all_examples, setting, top_k, emb, index_cache, Path(data).stem,
                                    distractors=distractors, seed=seed)
    recalls = retrieval.pop("recalls")
    retrieval["embedder"] = getattr(emb, "name", str(emb)) if setting == "faiss" else None
    family_embedders: dict[str, Any] = {}  # one embedding memo per sweep: its settings embed each text once

    if generate and warmup and examples:  # first-call costs of the shared generator are not charged to anyone
        gen.answer(examples[0].question, None)
    shared: dict[str, Any] = {}

    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    failed: list[str] = []
    budget: dict[str, Any] = {} if budget is None else {"reference": "--budget", "tokens": budget}
    records_all: dict[str, list[dict[str, Any]]] = {}
    order = [s for s in specs if not s.budgeted] + [s for s in specs if s.budgeted]
    from ragzip.peers import missing_dependency

    for spec in order:
        if spec.kind == "absent":
            skipped[spec.label] = (f"ragzip plugin {spec.name!r} is not in this build (ragzip.plugins.{spec.name} is "
                                   "missing or did not register)")
            continue
        if spec.kind == "peer":
            reason = missing_dependency(spec.name)
            if reason:
                skipped[spec.label] = reason
                continue
        options = dict(spec.options)
        extra: dict[str, Any] = {}
        if spec.budgeted:
            if not budget:
                budget.update(_reference_budget(specs, results))
            if budget.get("tokens") is None:
                if spec.name == "truncate":
                    skipped[spec.label] = ("no reference method ran to take the equal budget from (a ragzip "
                                           "compressor or a peer); give an explicit budget, e.g. truncate:256")
                    continue
            else:
                options["max_tokens" if spec.name == "truncate" else "target_token"] = budget["tokens"]
                extra["budget_from"] = budget["reference"]
        logger.info("running %s on %d questions", spec.label, len(examples))
        try:
            method_embedder = emb
            if spec.knob and emb is not None and not isinstance(emb, str):
                method_embedder = family_embedders.setdefault(spec.family, MemoEmbedder(emb))
            run = _run_method(spec, options, examples, passages, recalls, generator=gen, embedder=method_embedder,
                              batch_size=batch_size, warmup=warmup, progress=progress, seed=seed,
                              ttft_questions=ttft_questions if batch_size > 1 and generate else 0,
                              generate=generate, shared=shared)
        except (MissingDependencyError, ModelNotFoundError) as err:  # not installed / no trained artifact here
            logger.warning("method %s skipped: %s", spec.label, err)
            skipped[spec.label] = f"not available: {err}"
            gc.collect()
            continue
        except Exception as err:  # noqa: BLE001 - one broken method must not lose the others' results
            logger.error("method %s failed:\n%s", spec.label, traceback.format_exc())
            skipped[spec.label] = f"failed: {type(err).__name__}: {err}"
            failed.append(spec.label)
            gc.collect()
            continue
        run.summary.update(extra)
        results[spec.label] = run.summary
        records_all[spec.label] = run.records

    shared.clear()
    family_embedders.clear()
    ordered = {s.label: results[s.label] for s in specs if s.label in results}
    from ragzip.evidence import add_intervals, curves

    add_intervals(ordered, {k: records_all[k] for k in ordered}, reference=reference, resamples=resamples, seed=seed)
    result: dict[str, Any] = {
        "data": str(data),
        "n": len(examples),
        "retrieval": retrieval,
        "generator": gen.config.model if hasattr(gen, "config") else str(generator),
        "methods": ordered,
        "skipped": {s.label: skipped[s.label] for s in specs if s.label in skipped},
        "setting": setting,
        "seed": seed,
        "limit": limit,
        "budget": budget or None,
        "generator_config": _generator_config(gen),
        "timing": {"batch_size": batch_size, "warmup": warmup, "per_question": batch_size == 1,
                   "ttft_questions": len(examples) if batch_size == 1 else min(ttft_questions, len(examples))},
        "command": command,
        "date": started_at,
        "machine": {**_machine(), "load_avg_1m_start": load_at_start, "load_avg_1m_end": _load_avg()},
        "wall_s": round(time.perf_counter() - started, 1),
        "failed": failed,
        "generate": generate,
        "distractors": distractors,
        "require_gold": require_gold,
        "reference": reference,
        "curves": curves(ordered, {k: records_all[k] for k in ordered}, _resolve_budgets(budgets, ordered),
                         reference=reference, resamples=resamples, seed=seed),
    }
    result = _jsonable(result)
    if out is not None:
        write_outputs(result, [r for s in specs for r in records_all.get(s.label, [])], out)
    return result


def _reference_budget(specs: Sequence[MethodSpec], results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The equal budget: mean tokens read by the first ragzip compressor that ran (else the first peer that ran)."""
    candidates = [s for s in specs if s.kind == "ragzip" and s.name not in BASELINES and s.label in results]
    candidates += [s for s in specs if s.kind == "peer" and not s.budgeted and s.label in results]
    if not candidates:
        return {"reference": None, "tokens": None}
    ref = candidates[0]
    return {"reference": ref.label, "tokens": int(round(results[ref.label]["context_tokens"]))}


def _make_generator(generator: str | Any, block: Mapping[str, Any] | None, max_new_tokens: int | None,
                    batch_size: int) -> Any:
    if not isinstance(generator, str):
        return generator
    from ragzip.config_utils import from_dict
    from ragzip.generation import GeneratorConfig, HFGenerator

    data = dict(block or {})
    data["model"] = generator if generator else data.get("model", "embedded:smollm2-135m")
    if max_new_tokens is not None:
        data["max_new_tokens"] = max_new_tokens
    data["batch_size"] = batch_size
    return HFGenerator(from_dict(GeneratorConfig, data, where="generator"))


def _generator_config(gen: Any) -> Any:
    try:
        from ragzip.config_utils import to_dict

        return to_dict(gen.config)
    except Exception:  # noqa: BLE001 - informative only
        return None


# ---------------------------------------------------------------------------------------------------------- output
def output_paths(out: str | Path) -> dict[str, Path]:
    """The four files of a run: ``RESULT.json`` and, beside it, ``RESULT.jsonl``, ``RESULT.md``, ``RESULT.png``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".json" else out
    return {"json": stem.with_suffix(".json"), "jsonl": stem.with_suffix(".jsonl"), "md": stem.with_suffix(".md"),
            "png": stem.with_suffix(".png")}


def write_outputs(result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: str | Path) -> dict[str, Path]:
    """Write the JSON summary, the per-question JSONL, the Markdown table and the plot; return their paths."""
    paths = output_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with paths["jsonl"].open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(_jsonable(record), ensure_ascii=False) + "\n")
    paths["md"].write_text(markdown_table(result, image=paths["png"].name), encoding="utf-8")
    try:
        plot(result, paths["png"])
    except ImportError as err:
        logger.warning("no plot written (%s); install matplotlib (`pip install 'ragzip[dev]'`)", err)
        paths.pop("png")
    return paths


def rerender(out: str | Path, *, resamples: int = 1000) -> dict[str, Any]:
    """Recompute the intervals and curves of a finished run from its JSON and JSONL (same budgets, reference and
    seed) and rewrite its files: for a change in how the report reads the same per-question records."""
    from ragzip.evidence import add_intervals, curves

    paths = output_paths(out)
    result = json.loads(paths["json"].read_text(encoding="utf-8"))
    records: dict[str, list[dict[str, Any]]] = {}
    with paths["jsonl"].open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rec = json.loads(line)
                records.setdefault(rec["method"], []).append(rec)
    methods = result["methods"]
    add_intervals(methods, records, reference=result.get("reference"), resamples=resamples, seed=result["seed"])
    budgets = (result.get("curves") or {}).get("budgets") or [64, 128, 256]
    result["curves"] = curves(methods, records, budgets, reference=result.get("reference"),
                              resamples=resamples, seed=result["seed"])
    write_outputs(result, [r for label in methods for r in records.get(label, [])], out)
    return result


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(interval: Any) -> str:
    """``[-0.05, 0.02]``, with ``*`` when the interval excludes zero."""
    from ragzip.evidence import excludes_zero

    if not interval:
        return "–"
    return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" + ("*" if excludes_zero(interval) else "")


def markdown_table(result: Mapping[str, Any], image: str | None = None) -> str:
    """The run as Markdown: what was run, the evidence table, the end-to-end table (when the reader ran), each
    curve's value at the budgets, skipped methods and the command."""
    r = result.get("retrieval") or {}
    gcfg = result.get("generator_config") or {}
    if r.get("mode") == "faiss":
        retrieval = (f"FAISS top-{r.get('top_k')} over {r.get('corpus_passages')} passages ({r.get('embedder')}), "
                     f"recall@{r.get('top_k')} = {_fmt(r.get('recall_at_k'))}")
    else:
        extra = f", own passage(s) + {r['distractors']} same-article passages, shuffled" if r.get("distractors") else ""
        retrieval = f"given passages ({_fmt(r.get('passages_per_question'), 1)} per question{extra})"
    generate = result.get("generate", True)
    lines = [
        f"# ragzip bench: {Path(str(result.get('data'))).name}",
        "",
        f"- **{result.get('n')} questions** (seed {result.get('seed')}), {retrieval}",
    ]
    if generate:
        lines.append(f"- generator `{result.get('generator')}`, greedy, max {gcfg.get('max_new_tokens', '?')} new "
                     f"tokens, stop {gcfg.get('stop', '?')!r}")
    else:
        lines.append(f"- no reader (`--no-generate`): what survives compression; tokens counted with "
                     f"`{result.get('generator')}`'s tokenizer")
    budget = result.get("budget")
    if budget and budget.get("tokens") is not None:
        lines.append(f"- equal budget for plain truncate / longllmlingua: {budget['tokens']} tokens "
                     f"(mean read by `{budget['reference']}`)")
    methods = result.get("methods") or {}
    ref = result.get("reference")
    lines += [
        "",
        "## Evidence kept",
        "",
        "| method | tokens read | ans_in_ctx | sf_recall | sf_all | compress s | Δ ans_in_ctx vs none | "
        f"Δ sf_all vs none |{f' Δ ans_in_ctx vs {ref} | Δ sf_all vs {ref} |' if ref else ''}",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ref else ""),
    ]
    for name, m in methods.items():
        ci, cr = m.get("diff_ci") or {}, m.get("diff_ci_ref") or {}
        row = (f"| {name} | {_fmt(m.get('context_tokens'), 1)} | {_fmt(m.get('ans_in_ctx'))} | "
               f"{_fmt(m.get('sf_recall'))} | {_fmt(m.get('sf_all'))} | {_fmt(m.get('compress_s'))} | "
               f"{_ci(ci.get('ans_in_ctx'))} | {_ci(ci.get('sf_all'))} |")
        if ref:
            row += f" {_ci(cr.get('ans_in_ctx'))} | {_ci(cr.get('sf_all'))} |"
        lines.append(row)
    if generate:
        lines += [
            "",
            "## End to end",
            "",
            "| method | acc | EM | F1 | ans_in_ctx | tokens read | ratio | compress s | TTFT s | total s | peak RSS MB "
            "| Δ acc vs none | Δ F1 vs none |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in methods.items():
            ratio = m.get("compression_ratio")
            ci = m.get("diff_ci") or {}
            lines.append(
                f"| {name} | {_fmt(m.get('acc'))} | {_fmt(m.get('em'))} | {_fmt(m.get('f1'))} | "
                f"{_fmt(m.get('ans_in_ctx'))} | {_fmt(m.get('context_tokens'), 1)} | "
                f"{'∞' if ratio is None else f'{ratio:.2f}x'} | {_fmt(m.get('compress_s'))} | {_fmt(m.get('ttft_s'))} | "
                f"{_fmt(m.get('total_s'))} | {_fmt(m.get('peak_rss_mb'), 0)} | {_ci(ci.get('acc'))} | "
                f"{_ci(ci.get('f1'))} |")
    curves_ = (result.get("curves") or {}).get("families") or {}
    budgets = (result.get("curves") or {}).get("budgets") or []
    metrics = ["ans_in_ctx", "sf_all"] + (["acc"] if generate else [])
    rows = []
    for family, c in curves_.items():
        for metric in metrics:
            cells = []
            for b in budgets:
                cell = (c.get("at") or {}).get(str(b), {}).get(metric)
                if not cell:
                    cells.append("–")
                    continue
                vs = f" {_ci(cell['diff_ci_ref'])}" if cell.get("diff_ci_ref") else ""
                cells.append(f"{cell['value']:.3f}{vs} ({' / '.join(f'`{x}`' for x in cell['between'])})")
            if any(x != "–" for x in cells):
                rows.append(f"| {family} | {metric} | " + " | ".join(cells) + " |")
    if rows:
        lines += [
            "",
            "## At equal budgets (tokens read)",
            "",
            "Each curve read at the budget, interpolated linearly between the two measured settings named in "
            "brackets (or at the highest setting when it reads at most 5% under the budget); `–` where the curve does "
            "not reach the budget (no extrapolation)."
            + (f" Interval: paired 95% bootstrap of the difference to `{(result.get('curves') or {}).get('reference')}`"
               " at the same budget." if (result.get("curves") or {}).get("reference") else ""),
            "",
            "| curve | metric | " + " | ".join(f"{b} tokens" for b in budgets) + " |",
            "|---|---|" + "---|" * len(budgets),
            *rows,
        ]
    skipped = result.get("skipped") or {}
    if skipped:
        lines += ["", "Skipped:"] + [f"- `{k}`: {v}" for k, v in skipped.items()]
    machine = result.get("machine") or {}
    lines += [
        "",
        "Means per question. `ans_in_ctx`: a normalised gold answer occurs in the text the generator reads (yes/no "
        "questions left out; for soft compressors only their expanded text counts); `sf_recall` / `sf_all`: share of "
        "the HotpotQA supporting-fact sentences kept verbatim / all of them kept. Intervals: paired bootstrap 95% "
        f"({result.get('n')} questions resampled), `*` = excludes zero. Tokens are counted with the generator's "
        "tokenizer; ratio = uncompressed / read tokens (sum over questions).",
    ]
    if generate:
        lines.append("`acc`: a gold answer occurs in the normalised output; EM/F1: SQuAD normalisation. TTFT and "
                     "total include compression. Peak RSS is the whole process (shared models included).")
    if any(m.get("scores_from") for m in methods.values()):
        lines.append("Rows of a sweep that re-select without re-scoring show the selection time only as compress s; "
                     "their scoring ran once, in the sweep's first setting.")
    timing = result.get("timing") or {}
    if generate and timing.get("batch_size", 1) > 1:
        lines.append(f"Decoded in batches of {timing['batch_size']}: `total s` is the method's wall time over the "
                     f"questions (compression, batched decoding and the TTFT probes); `TTFT s` is measured on the "
                     f"first {timing.get('ttft_questions')} questions of each method, each run alone to its first "
                     "token.")
    lines += [
        "",
        f"Command: `{result.get('command') or 'run_bench(...)'}`",
        "",
        f"Run {result.get('date')} on {machine.get('cpu_count')} CPU cores "
        f"(torch threads {machine.get('torch_threads')}, load average {machine.get('load_avg_1m_start')} at the "
        f"start, {machine.get('load_avg_1m_end')} at the end), "
        f"wall time {result.get('wall_s')} s.",
    ]
    if image:
        lines += ["", f"![Evidence kept against tokens read]({image})"]
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """The Pareto picture: each metric against tokens read, one line per method family (a point for a single
    setting); with a reader, also the time per question (compress / prefill / decode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result.get("methods") or {}
    families = (result.get("curves") or {}).get("families") or {}
    generate = result.get("generate", True)
    metrics = [m for m in ("ans_in_ctx", "sf_all", "acc")
               if any(p.get(m) is not None for c in families.values() for p in c["points"])]
    panels = len(metrics) + (1 if generate and methods else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5.2 * max(panels, 1), 4.6), squeeze=False)
    axes = list(axes[0])
    for ax, metric in zip(axes, metrics, strict=False):
        for i, (family, c) in enumerate(families.items()):
            pts = [p for p in c["points"] if p.get(metric) is not None]
            if not pts:
                continue
            xs, ys = [p["tokens"] for p in pts], [p[metric] for p in pts]
            marker = "o" if len(pts) > 1 else "s"
            ax.plot(xs, ys, marker=marker, ms=4, lw=1.4, label=family, color=f"C{i % 10}")
        for b in (result.get("curves") or {}).get("budgets") or []:
            ax.axvline(b, color="grey", lw=0.6, ls=":")
        xs_all = [p["tokens"] for c in families.values() for p in c["points"] if p["tokens"] > 0]
        if xs_all and max(xs_all) > 8 * min(xs_all):
            ax.set_xscale("log")
        ax.set_xlabel("tokens read by the generator (mean per question)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: {Path(str(result.get('data'))).name}, n={result.get('n')}", fontsize=9)
        ax.grid(alpha=0.3)
    if metrics:
        axes[0].legend(fontsize=6, loc="lower right")
    if generate and methods:
        right = axes[len(metrics)]
        names = list(methods)
        batched = (result.get("timing") or {}).get("batch_size", 1) > 1
        compress = [methods[n]["compress_s"] for n in names]
        prefill = [methods[n].get("gen_ttft_s", 0.0) or 0.0 for n in names]
        # One at a time: the generation's own time; batched: the wall time per question less compression and TTFT.
        decode = [max(((methods[n].get("total_s") or 0.0) - methods[n]["compress_s"] if batched else
                       methods[n].get("gen_s", 0.0)) - (methods[n].get("gen_ttft_s") or 0.0), 0.0) for n in names]
        ys = range(len(names))
        right.barh(ys, compress, label="compress")
        right.barh(ys, prefill, left=compress, label="prefill + first token")
        right.barh(ys, decode, left=[c + p for c, p in zip(compress, prefill, strict=True)], label="rest of decoding")
        right.set_yticks(list(ys), names, fontsize=7)
        right.invert_yaxis()
        right.set_xlabel("seconds per question")
        right.set_title("time per question" + (f" (batches of {result['timing']['batch_size']})" if batched else ""),
                        fontsize=9)
        right.legend(fontsize=7)
        right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``ragzip bench`` options to ``parser``."""
    parser.add_argument("--data", required=True, help="HotpotQA-style or NQ/SQuAD-style JSONL file.")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="Comma-separated methods, each optionally name:variant (truncate:256, extractive:t0.3, "
                             "lc_embeddings_filter:k=3). Default: %(default)s.")
    parser.add_argument("--limit", type=int, default=100,
                        help="Questions to run: the first N after a shuffle seeded with --seed (default %(default)s).")
    parser.add_argument("--top-k", type=int, default=None, help="Passages retrieved per question (default 5).")
    parser.add_argument("--out", default="bench.json",
                        help="Result JSON; .jsonl, .md and .png are written beside it (default %(default)s).")
    parser.add_argument("--setting", choices=("faiss", "given"), default="faiss",
                        help="faiss: one index over all passages of the file; given: each question's own passages.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the question shuffle and of torch.")
    parser.add_argument("--generator", default=None, help="Generator model spec (default embedded:smollm2-135m).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Most tokens per answer (default 32).")
    parser.add_argument("--embedder", default=None, help="Embedder of retrieval and the peers (default embedded:minilm).")
    parser.add_argument("--config", default=None,
                        help="YAML with `methods:` (label -> compressor config), `generator:` and `embedder:`.")
    parser.add_argument("--budget", type=int, default=None,
                        help="Equal budget in tokens for plain truncate and longllmlingua (default: the mean tokens "
                             "read by the first ragzip compressor in --methods).")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="Questions compressed and decoded together; 1 (default) measures each question's "
                             "compression and TTFT exactly.")
    parser.add_argument("--ttft-questions", type=int, default=20,
                        help="With --batch-size > 1: the first N questions of each method are also run alone to the "
                             "first token, and TTFT is their mean (default 20).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--index-cache", default=None,
                        help="Folder to save and reuse the FAISS index of the data file (default: the ragzip cache, "
                             "~/.cache/ragzip/bench-index; keyed by the embedder and the passages' content).")
    parser.add_argument("--no-index-cache", action="store_true", help="Always rebuild the FAISS index.")
    parser.add_argument("--no-warmup", action="store_true", help="Skip the untimed warm-up call of each method.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument("--no-generate", action="store_true",
                        help="Skip the reader: report only what survives compression (ans_in_ctx, sf_recall, sf_all, "
                             "tokens read) and the compression cost. Fast enough for 1,000+ questions.")
    parser.add_argument("--distractors", type=int, default=0,
                        help="With --setting given: add N other passages of the same article to each question's own, "
                             "shuffled (SQuAD's same-topic distractor setting).")
    parser.add_argument("--require-gold", action="store_true",
                        help="Only questions whose record names a gold passage (NQ-open: those with a context).")
    parser.add_argument("--reference", default=None,
                        help="A method label or sweep family every row is also compared with (paired intervals), "
                             "e.g. `lc_embeddings_filter:k=*`.")
    parser.add_argument("--budgets", default="64,128,256",
                        help="Tokens-read budgets at which every curve is read; N%% = N%% of the tokens `none` "
                             "reads (default %(default)s).")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples (default %(default)s).")


def _budgets(text: str) -> list[int | str]:
    """``64,128,25%`` -> ``[64, 128, "25%"]`` (a percentage is of the tokens ``none`` reads)."""
    values: list[int | str] = []
    for part in (x.strip() for x in str(text).split(",") if x.strip()):
        if re.fullmatch(r"\d+(\.\d+)?%", part) and 0 < float(part[:-1]) <= 100:
            values.append(part)
        elif part.isdigit() and int(part) > 0:
            values.append(int(part))
        else:
            raise ConfigError(f"--budgets {text!r}: {part!r} is neither a positive token count nor a percentage of "
                              "the uncompressed tokens; write e.g. 64,128,256,25%.")
    return values


def _resolve_budgets(budgets: Sequence[int | str], methods: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """Token budgets, with ``N%`` read as N% of the tokens ``none`` reads (dropped when ``none`` did not run)."""
    out: list[int] = []
    for b in budgets:
        if isinstance(b, str) and b.endswith("%"):
            if "none" in methods:
                out.append(max(1, int(round(float(b[:-1]) / 100 * methods["none"]["context_tokens"]))))
            else:
                logger.warning("budget %s skipped: it is a share of `none`'s tokens and `none` did not run", b)
        else:
            out.append(int(b))
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    """Run ``ragzip bench`` from parsed arguments; print the Markdown table. Exit code 1 when a method failed."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = load_bench_config(args.config)
    generator = args.generator or (cfg.get("generator") or {}).get("model") or "embedded:smollm2-135m"
    top_k = args.top_k if args.top_k is not None else int(cfg.get("top_k", 5))
    command = "ragzip bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "bench" else " ".join(shlex.quote(a) for a in sys.argv)
    index_cache = None
    if not args.no_index_cache:
        from ragzip.models import cache_dir

        index_cache = args.index_cache or cache_dir() / "bench-index"
    try:
        result = run_bench(
            args.data, args.methods, limit=args.limit, top_k=top_k, setting=args.setting, seed=args.seed,
            generator=generator, max_new_tokens=args.max_new_tokens, embedder=args.embedder or
            cfg.get("embedder", "embedded:minilm"), config=cfg, out=args.out, batch_size=args.batch_size,
            warmup=not args.no_warmup, progress=not args.quiet, command=command, index_cache=index_cache,
            budget=args.budget, ttft_questions=args.ttft_questions, generate=not args.no_generate,
            distractors=args.distractors, require_gold=args.require_gold, reference=args.reference,
            budgets=_budgets(args.budgets), resamples=args.resamples)
    except (ConfigError, InputError) as err:
        print(f"ragzip bench: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(result))
    paths = output_paths(args.out)
    print("wrote " + ", ".join(str(p) for k, p in paths.items() if p.exists()), file=sys.stderr)
    return 1 if result.get("failed") else 0


__all__ = ["ALIASES", "CONTRACT_KEYS", "DEFAULT_METHODS", "MethodSpec", "RSSSampler", "add_arguments",
           "load_bench_config", "markdown_table", "output_paths", "parse_method", "parse_methods", "plot", "run",
           "run_bench", "valid_method_names", "write_outputs"]
