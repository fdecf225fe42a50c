"""``ragzip bench``: every method on the same questions, the same retrieval and the same generator, in one process.

The output is the benchmark contract of DESIGN §6: a JSON summary (``data``, ``n``, ``retrieval{mode, top_k,
recall_at_k}``, ``generator``, ``methods{name: {acc, em, f1, context_tokens, compression_ratio, compress_s, ttft_s,
total_s, peak_rss_mb, n}}``, plus extra keys such as ``skipped``), and beside it, with the same stem: a per-question
JSONL (``.jsonl``), a Markdown table (``.md``) and a plot (``.png``).

Methods (``--methods``, comma-separated; each label is also its key in the JSON):

- ``no_context``: the question alone.
- every registered compressor under its ``type:`` name (``none``: the full retrieved context, ``truncate:N``: the first
  N context tokens, ``extractive``, ...; the baselines first); a plugin folder that registered nothing in this build is
  reported under ``skipped``.
- peers (:mod:`ragzip.bench.peers`): ``lc_embeddings_filter``, ``li_sentence_optimizer``, ``longllmlingua``,
  ``ragcompress``. A peer whose package is missing is reported under ``skipped`` with the install command.
- names defined in ``--config`` (``methods: {label: {type: ..., ...}}``).

What the bench knows of a method, it reads from the method's declaration (:class:`ragzip.compressor.CompressorInfo`,
given to ``register_compressor``; the peers' in :data:`ragzip.bench.peers.PEER_DECLARATIONS`): which are baselines, which
run by default, the short aliases, the budget field. A plain method that declares ``equal_budget`` (``truncate``,
``longllmlingua``) runs at the *equal budget*: the mean tokens read by the first compressor under test in the list
(not a baseline; when none ran, the first peer that ran), rounded to an integer, written into its ``budget`` field
(with no reference, one with a ``budget_rate`` runs at its own rate and one without is skipped).

Variants: ``name:key=value,key=value`` sets config fields (values read as YAML scalars: ``extractive:threshold=0.3``,
``lc_embeddings_filter:k=3``). Short forms ``name:<alias><number>``: the alias is a config field of that name
(``refrag:k8`` -> ``k=8``, ``refrag:p0.25``) or one the method declares (:data:`ALIASES`: ``extractive:t0.3`` ->
``threshold=0.3``, ``longllmlingua:r0.3`` -> ``rate=0.3``, ``li_sentence_optimizer:p0.3``); the alias ``""`` takes a
bare number (``truncate:256`` -> ``max_tokens=256``). Keys are checked against the method's config before any model
loads. ``name:key=a/b/c`` is a sweep: one setting per value, reported together as an operating curve.

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
  timing, including its token counting. Settings of one compressor model never score twice: a compressor that
  re-selects without re-scoring (``selection_fields`` and ``with_selection``, as ``extractive``) is built once per
  model, and every later setting of it re-selects from the same scores (``scores_from`` names the row that scored;
  its ``compress_s`` is the selection alone).
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
  models are released before the next method starts, except a model later settings re-select from (kept to the end).
- **Scores**: :func:`ragzip.metrics.score` (``acc`` = a gold answer occurs in the normalised output on word
  boundaries; EM and F1 with SQuAD normalisation, max over golds).

The package: :mod:`~ragzip.bench.methods` (the method language), :mod:`~ragzip.bench.runner` (the run),
:mod:`~ragzip.bench.measure` (memory and machine), :mod:`~ragzip.bench.report` (files, table, plot, rerender),
:mod:`~ragzip.bench.cli` (``ragzip bench``'s options) and :mod:`~ragzip.bench.peers` (the peers, with
:mod:`~ragzip.bench.peer_ragcompress`).

Example:
    >>> parse_method("extractive:t0.3").options
    {'threshold': 0.3}
"""

from __future__ import annotations

from typing import Any

from ragzip.bench.cli import _budgets as _budgets
from ragzip.bench.cli import add_arguments, run
from ragzip.bench.measure import RSSSampler
from ragzip.bench.methods import (
    MethodSpec,
    default_methods,
    expand_sweep,
    method_aliases,
    method_label,
    parse_method,
    parse_methods,
    valid_method_names,
)
from ragzip.bench.methods import _plugin_names as _plugin_names
from ragzip.bench.report import curves_against, markdown_table, output_paths, plot, read_run, rerender, write_outputs
from ragzip.bench.runner import CONTRACT_KEYS, load_bench_config, run_bench
from ragzip.bench.runner import _faiss_retriever as _faiss_retriever
from ragzip.bench.runner import _resolve_budgets as _resolve_budgets


def __getattr__(name: str) -> Any:
    """``ALIASES`` and ``DEFAULT_METHODS``, read from the registry when asked (it lists plugins loaded on first use)."""
    if name == "ALIASES":
        return method_aliases()
    if name == "DEFAULT_METHODS":
        return default_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALIASES", "CONTRACT_KEYS", "DEFAULT_METHODS", "MethodSpec", "RSSSampler", "add_arguments", "curves_against",
           "default_methods", "expand_sweep", "load_bench_config", "markdown_table", "method_aliases", "method_label",
           "output_paths", "parse_method", "parse_methods", "plot", "read_run", "rerender", "run", "run_bench",
           "valid_method_names", "write_outputs"]
