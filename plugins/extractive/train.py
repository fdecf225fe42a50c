"""Train, calibrate and evaluate the extractive sentence classifier.

Train (``ragzip train extractive`` calls :func:`main`)::

    ragzip train extractive --data ../shared/data/hotpotqa_train.jsonl --out runs/extractive
    python -m ragzip.plugins.extractive.train --data ../shared/data/hotpotqa_train.jsonl --out runs/extractive

Evaluate an artifact on other data (sentence-level P/R/F1 against supporting facts, kept tokens, speed)::

    python -m ragzip.plugins.extractive.train --eval-only --data ../shared/data/hotpotqa_dev.jsonl --model runs/extractive

The recipe follows EXIT on HotpotQA: supporting-fact sentences are positives, the other sentences of the supporting
paragraphs are hard negatives and the sentences of distractor paragraphs are random negatives. Because one encoder
pass scores a whole paragraph, a training example is a paragraph with one label per sentence (binary cross-entropy,
positives weighted). Each epoch sees every gold paragraph and a fresh random sample of distractors. Some training
questions are held out (verbatim records only) to pick the best checkpoint and calibrate the default threshold: the
highest threshold whose held-out supporting-fact recall reaches ``--target-recall``.

The loop, schedule, time budget, checkpoints and log are :mod:`ragzip.training`'s; a stopped run continues from its
newest checkpoint, with the same draws, when the same command is run again with ``--resume``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from safetensors import safe_open

from ragzip._lazy import require
from ragzip.data import (  # the multi-source readers live in ragzip.data; re-exported for older imports
    HOTPOTQA,
    Paragraph,
    Question,
    five_passages,
    load_hotpotqa,
    load_questions,
    split_holdout,
)
from ragzip.errors import ConfigError
from ragzip.fsutil import sha256_file
from ragzip.models import load_sentence_transformer
from ragzip.plugins.extractive.compressor import ExtractiveCompressor
from ragzip.plugins.extractive.config import ExtractiveConfig
from ragzip.plugins.extractive.modeling import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CrossEncoderScorer,
    ScoreItem,
    artifact_folder,
    batches_by_length,
    collate,
    pooling,
)
from ragzip.plugins.extractive.set_gate import fit_set_gate
from ragzip.relevance import GATE_FILE
from ragzip.tokens import load_token_counter
from ragzip.training import (
    Budget,
    CardSection,
    ModelCard,
    Trainer,
    TrainingArguments,
    configure_logging,
    open_log,
    prepare,
    resolve_device,
)
from ragzip.types import Passage

logger = logging.getLogger("ragzip.train.extractive")


# ======================================================================================================== arguments
@dataclass
class ExtractiveArguments(TrainingArguments):
    """``ragzip train extractive``'s options: the common training ones and the classifier's."""

    prog: ClassVar[str] = "ragzip train extractive"
    description: ClassVar[str] = ("Train (or with --eval-only, evaluate) the extractive sentence classifier on "
                                  "HotpotQA-style JSONL.")

    out: str | None = field(default=None, metadata={
        "help": "Output folder for the artifact, checkpoints and logs (training)."})
    steps: int = field(default=0, metadata={"help": "Total optimizer steps (0: --epochs worth)."})
    schedule: Literal["cosine", "linear"] = field(default="linear", metadata={
        "help": "Learning rate after the warm-up: linear decay to 0 over the steps, or cosine decay to 10% of "
                "the peak over the larger of the step and time shares used."})
    checkpoint_every: int = field(default=0, metadata={
        "aliases": ["--eval-every"],
        "help": "Evaluate on the held-out questions and checkpoint every N steps (0: each epoch)."})

    data: list[str] = field(default_factory=list, metadata={
        "required": True,
        "help": "Training JSONL files (.gz ok): HotpotQA (supporting_facts), QED/NQ (sentence_starts, "
                "answer_sentence_idx) and SQuAD v1.1/v2.0 (answer_starts, is_impossible), detected per file. With "
                "--eval-only: one HotpotQA-style file."})
    per_source: int = field(default=0, metadata={
        "help": "At most this many questions of each source per epoch, a fresh sample each epoch (0: all); balances "
                "a large source against a small one."})
    eval_only: bool = field(default=False, metadata={"help": "Evaluate --model on --data; train nothing."})
    card_evidence: list[str] | None = field(default=None, metadata={
        "metavar": "RESULT_JSON",
        "help": "Write the dev evidence of --model (the `extractive` rows and curves of these `ragzip bench "
                "--no-generate` results, beside the best peer's) into its config.json and model card; train "
                "nothing."})
    recalibrate: bool = field(default=False, metadata={
        "help": "Re-run the held-out calibration of --model (threshold, relative rule, per-source MAP) on the "
                "held-out split of --data (same --holdout and --seed as training) and write it into its config.json "
                "and model card; train nothing."})
    fit_set_gate: bool = field(default=False, metadata={
        "help": "Fit the set-level relevance gate of --model on the held-out split of --data (same --holdout and "
                "--seed as training) and save it beside the model (set_gate.json); train nothing. See "
                "ragzip.plugins.extractive.set_gate."})
    dev: list[str] = field(default_factory=list, metadata={
        "metavar": "DEV_JSONL",
        "help": "With --fit-set-gate: also measure the fitted gate (never refit) on sets from these dev files "
                "(HotpotQA, SQuAD, NQ)."})
    dev_limit: int = field(default=500, metadata={"help": "With --dev: questions per dev file."})
    max_gold_gated: float = field(default=0.05, metadata={
        "help": "With --fit-set-gate: the threshold gates at most this share of held-out sets that hold evidence "
                "(out of fold)."})
    gate_l2: float = field(default=1.0, metadata={"help": "With --fit-set-gate: L2 penalty."})
    gate_out: str | None = field(default=None, metadata={
        "help": "With --fit-set-gate: write the gate here instead of beside the model."})
    gate_report: str | None = field(default=None, metadata={
        "help": "With --fit-set-gate: also write the measurements to this JSON file."})
    model: str = field(default="default", metadata={
        "help": "Artifact to evaluate (--eval-only): folder or `default`."})
    update_card: bool = field(default=False, metadata={
        "help": "With --eval-only: write the metrics into the model's config.json and MODEL_CARD.md."})
    json: str | None = field(default=None, metadata={"help": "With --eval-only: also write the metrics to this file."})
    threshold: float | None = field(default=None, metadata={
        "help": "With --eval-only: threshold (default: the model's)."})
    timing_questions: int = field(default=100, metadata={"help": "Questions timed through the compressor."})
    tokenizer: str = field(default="embedded:smollm2-135m", metadata={
        "help": "Generator tokenizer for token shares."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N records."})
    base_model: str = field(default="embedded:minilm", metadata={"help": "Encoder to fine-tune."})
    init: str | None = field(default=None, metadata={"help": "Start from this artifact instead of the base model."})
    sample_seed: int | None = field(default=None, metadata={
        "help": "Seed of the per-epoch samples, distractors, cross-question negatives, title dropout and batch order "
                "(default: --seed). The held-out split follows --seed (with the same --data, --holdout and --limit), "
                "so a run continued with --init and the same --seed keeps its held-out questions while another "
                "--sample-seed draws other training samples."})
    trained_layers: int | None = field(default=None, metadata={
        "help": "Top encoder layers to fine-tune and store (default 2; with --init, the artifact's). With --init, "
                "more than the artifact's widens it: the extra lower layers start from the base encoder's weights."})
    head_hidden: int = field(default=256, metadata={"help": "Hidden size of the sentence head."})
    head_type: Literal["interaction", "concat"] = field(default="interaction", metadata={
        "help": "interaction: [s; cls; q*s; |q-s|] + sentence position; concat: [s; cls]."})
    window: int = field(default=256, metadata={"help": "Encoder window in tokens."})
    epochs: int = field(default=2, metadata={
        "help": "Epochs (each with a fresh sample of distractors) when --steps is 0."})
    batch_size: int = field(default=16, metadata={"help": "Passage windows per optimizer step."})
    head_lr: float = field(default=1e-3, metadata={"help": "Learning rate of the sentence head (--lr: the layers')."})
    pos_weight: float = field(default=3.0, metadata={"help": "Loss weight of a positive sentence."})
    distractors: int = field(default=4, metadata={
        "help": "Distractor paragraphs per question per epoch (-1: all)."})
    foreign: int = field(default=1, metadata={
        "help": "Cross-question negatives per question per epoch: a paragraph of another question, paired with this "
                "question, every sentence labelled 0 (teaches off-topic = useless)."})
    bridge: int = field(default=0, metadata={
        "help": "Second-hop examples per multi-hop (HotpotQA) question per epoch: the query + one supporting "
                "sentence of one gold paragraph (the evidence a reader found first), paired with the other gold "
                "paragraph (its own labels) and with a distractor (all 0). Experimental: the one run with it (2 more "
                "epochs from the shipped classifier, benchmarks/results/candidates/v5) tied the shipped classifier on "
                "dev, and its effect is not separated from the extra training; the compressor scores one hop (a "
                "second scoring hop selected worse, benchmarks/results/second_hop_heldout_train.json)."})
    title_dropout: float = field(default=0.3, metadata={"help": "Probability of training a passage without its title."})
    holdout: int = field(default=100, metadata={
        "help": "Training questions held out per source for checkpoint choice and calibration."})
    target_recall: float = field(default=0.88, metadata={
        "help": "Calibrate the default threshold to this held-out supporting-fact recall."})
    cache_file: str | None = field(default=None, metadata={
        "help": "Save (or reuse) the frozen layers' outputs here (several hundred MB)."})
    save_dtype: Literal["float16", "float32"] = field(default="float16", metadata={
        "help": "Dtype of the final artifact's weights (float16 halves the file; scores change by <1e-3)."})


def build_parser() -> argparse.ArgumentParser:
    """The ``ragzip train extractive`` parser (generated from :class:`ExtractiveArguments`)."""
    return ExtractiveArguments.parser()


# ========================================================================================================= training
# The layers below the trained ones are frozen, so their output for a paragraph never changes: it is computed once
# (float16, in memory) and each training step runs only the trained top layers and the head. This makes training
# several times cheaper on a CPU; a check at start-up proves the split path gives the full model's logits.
@dataclass
class Cached:
    """One training window: the frozen layers' output, its sentence spans and labels."""

    hidden: Any  # (T, d) float16
    spans: list[tuple[int, int]]
    labels: list[int]
    sentences: list[int]  # positions of the scored sentences in their paragraph
    query_span: tuple[int, int]


def _run_layers(encoder: Any, hidden: Any, attention_mask: Any, layers: Sequence[Any]) -> Any:
    masking_utils = require("transformers.masking_utils")  # lazy: slow to import, `ragzip train --help` loads this
    mask = masking_utils.create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def _split_layers(scorer: CrossEncoderScorer) -> tuple[list[Any], list[Any]]:
    layers = list(scorer.model.encoder.encoder.layer)
    first = len(layers) - scorer.config.trained_layers
    return layers[:first], layers[first:]


def cache_bottom(scorer: CrossEncoderScorer, paragraphs: Sequence[Paragraph], title_dropout: float,
                 rng: random.Random, batch_size: int = 32) -> list[list[Cached]]:
    """Windows of every paragraph through the embeddings and frozen layers, grouped per paragraph."""
    items = [ScoreItem(p.query, "" if rng.random() < title_dropout else p.title, p.sentences) for p in paragraphs]
    windows = scorer.windows(items)
    encoder = scorer.model.encoder
    bottom, _ = _split_layers(scorer)
    out: list[list[Cached]] = [[] for _ in paragraphs]
    encoder.eval()
    with torch.inference_mode():
        for idx in batches_by_length(windows, batch_size):
            group = [windows[i] for i in idx]
            batch = {k: v.to(scorer.device) for k, v in collate(group, scorer.tokenizer.pad_token_id or 0).items()}
            hidden = encoder.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
            hidden = _run_layers(encoder, hidden, batch["attention_mask"], bottom)  # (B, T, d)
            for w, h in zip(group, hidden, strict=True):
                labels = [paragraphs[w.item].labels[k] for k in w.sentences]
                # kept in host memory (float16) whatever the device: the cache can be large, and saved to a file
                out[w.item].append(Cached(h[: len(w.input_ids)].to(torch.float16).cpu().clone(), w.spans, labels,
                                          w.sentences, w.query_span))
    return out


def _load_cache(path: str | None, key: dict[str, Any]) -> list[list[Cached]] | None:
    """Frozen-layer outputs saved by an earlier run with the same data, seed and model split (else None)."""
    if not path or not Path(path).is_file():
        return None
    saved = torch.load(path, weights_only=False)
    if saved.get("key") != key:
        logger.info("ignoring %s: written for other data or settings", path)
        return None
    logger.info("reusing the frozen-layer cache %s", path)
    return saved["cache"]


def _save_cache(path: str | None, key: dict[str, Any], cache: list[list[Cached]]) -> None:
    if path:
        torch.save({"key": key, "cache": cache}, path)


def _top_logits(scorer: CrossEncoderScorer, group: Sequence[Cached]) -> Any:
    """Logits (B, S) from cached frozen-layer outputs through the trained layers and the head."""
    _, top = _split_layers(scorer)
    device = scorer.device
    length = max(c.hidden.shape[0] for c in group)
    hidden = torch.zeros((len(group), length, group[0].hidden.shape[1]), device=device)  # (B, T, d)
    mask = torch.zeros((len(group), length), dtype=torch.long, device=device)
    for b, c in enumerate(group):
        hidden[b, : c.hidden.shape[0]] = c.hidden.to(device).float()
        mask[b, : c.hidden.shape[0]] = 1
    pool, query_pool, positions = (t.to(device) for t in pooling(group, length))
    hidden = _run_layers(scorer.model.encoder, hidden, mask, top)  # (B, T, d)
    return scorer.model.score_hidden(hidden, pool, query_pool, positions)


def check_split_path(scorer: CrossEncoderScorer, paragraphs: Sequence[Paragraph]) -> float:
    """Max |logit difference| between the cached split path and the full model (both in eval mode)."""
    cached = [c for group in cache_bottom(scorer, paragraphs, 0.0, random.Random(0)) for c in group]
    windows = scorer.windows([ScoreItem(p.query, p.title, p.sentences) for p in paragraphs])
    scorer.model.eval()
    with torch.inference_mode():
        full = scorer.logits(windows)
        split = _top_logits(scorer, cached)
    n = min(full.shape[1], split.shape[1])
    return float((full[:, :n] - split[:, :n]).abs().max())


def _batch_loss(logits: Any, labels: Sequence[Sequence[int]], pos_weight: float) -> Any:
    target = torch.zeros_like(logits)
    mask = torch.zeros_like(logits)
    for b, row in enumerate(labels):
        target[b, : len(row)] = torch.tensor(row, dtype=logits.dtype)
        mask[b, : len(row)] = 1.0
    weight = mask * (1.0 + (pos_weight - 1.0) * target)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / mask.sum().clamp(min=1.0)


def _shuffled_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within pools of 50 batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s: s + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def train(args: ExtractiveArguments) -> int:
    prepare(args)
    sample_seed = args.seed if args.sample_seed is None else args.sample_seed
    rng = random.Random(sample_seed)  # prepare's own rng is Random(--seed): the same draws without --sample-seed
    # what the --init artifact was trained by, read before anything can replace it (the card chains the runs)
    init_training = _init_training(args.init) if args.init else None
    device = resolve_device(args.device)
    out = Path(args.out)
    log = open_log(args)
    load_start = os.getloadavg()[0]
    questions = load_questions(args.data, args.limit)
    train_qs, held_qs = split_holdout(questions, args.holdout, args.seed)
    counts = {s: sum(q.source == s for q in questions) for s in sorted({q.source for q in questions})}
    logger.info("%d questions %s: %d train, %d held out", len(questions), counts, len(train_qs), len(held_qs))
    if args.init:
        scorer = CrossEncoderScorer.from_pretrained(args.init, device=device)
        _widen(scorer, args.trained_layers)
        scorer.model.freeze_base()
    else:
        layers = 2 if args.trained_layers is None else args.trained_layers
        scorer = CrossEncoderScorer.from_base(args.base_model, trained_layers=layers,
                                              head_hidden=args.head_hidden, head_type=args.head_type,
                                              window=args.window, seed=args.seed, device=device)
    model = scorer.model
    trained = model.trained_parameters()
    n_params = sum(p.numel() for p in trained.values())
    logger.info("training %s parameters (%d tensors): top %d encoder layers + head", f"{n_params:,}", len(trained),
                scorer.config.trained_layers)
    diff = check_split_path(scorer, [p for q in held_qs[:2] for p in q.paragraphs])
    if diff > 0.05:
        raise SystemExit(f"the cached training path disagrees with the model by {diff:.3g}; the transformers "
                         "BERT internals changed. Train without caching is not implemented: pin transformers.")
    logger.info("cached path matches the full model (max logit diff %.2g)", diff)

    # Each epoch: every gold paragraph and `distractors` fresh random distractors per question. The epochs' samples
    # are drawn up front so that only the paragraphs actually used are cached.
    n_epochs = args.epochs if not args.steps else max(1, args.epochs)
    epoch_sets: list[list[int]] = []
    train_paragraphs = [p for q in train_qs for p in q.paragraphs]
    groups: list[tuple[list[int], list[int]]] = []
    pos = 0
    for q in train_qs:
        idx = list(range(pos, pos + len(q.paragraphs)))
        groups.append(([i for i in idx if train_paragraphs[i].gold or train_paragraphs[i].anchor],
                       [i for i in idx if not (train_paragraphs[i].gold or train_paragraphs[i].anchor)]))
        pos += len(q.paragraphs)
    n_own = len(train_paragraphs)
    n_bridge = 0
    by_source: dict[str, list[int]] = {}
    for k, q in enumerate(train_qs):
        by_source.setdefault(q.source, []).append(k)
    for _ in range(n_epochs):
        # Balance the sources: at most --per-source questions of each, a fresh sample every epoch.
        picked = sorted(k for ks in by_source.values()
                        for k in (rng.sample(ks, args.per_source) if 0 < args.per_source < len(ks) else ks))
        chosen = []
        for k in picked:
            q, (gold, others) = train_qs[k], groups[k]
            n_d = len(others) if args.distractors < 0 else min(args.distractors, len(others))
            chosen.extend(gold + rng.sample(others, n_d))
            for _ in range(args.bridge if q.source == HOTPOTQA else 0):
                extra = _bridge_examples(q, [train_paragraphs[i] for i in gold],
                                         [train_paragraphs[i] for i in others], rng)
                train_paragraphs.extend(extra)
                n_bridge += len(extra)
                chosen.extend(range(len(train_paragraphs) - len(extra), len(train_paragraphs)))
            for _ in range(args.foreign):  # cross-question negative: another question's paragraph, all labels 0
                other = train_qs[rng.randrange(len(train_qs))]
                if other is q or not other.paragraphs:
                    continue
                para = rng.choice(other.paragraphs)
                train_paragraphs.append(Paragraph(q.query, para.title, para.sentences, [0] * len(para.sentences)))
                chosen.append(len(train_paragraphs) - 1)
        epoch_sets.append(chosen)
    logger.info("%d own paragraphs, %d cross-question negatives, %d second-hop examples", n_own,
                len(train_paragraphs) - n_own - n_bridge, n_bridge)
    used = sorted({i for chosen in epoch_sets for i in chosen})
    t0 = time.perf_counter()
    key = {"data": _sha256(args.data), "limit": args.limit, "holdout": args.holdout, "seed": args.seed,
           "sample_seed": sample_seed,
           "base": args.base_model, "init": args.init, "layers": scorer.config.trained_layers,
           "window": scorer.window, "title_dropout": args.title_dropout, "foreign": args.foreign,
           "bridge": args.bridge, "used": used}
    cached = _load_cache(args.cache_file, key)
    if cached is None:
        cached = cache_bottom(scorer, [train_paragraphs[i] for i in used], args.title_dropout, rng)
        _save_cache(args.cache_file, key, cached)
    cache = dict(zip(used, cached, strict=True))
    cache_s = time.perf_counter() - t0
    logger.info("cached the frozen layers for %d paragraphs in %.0f s", len(used), cache_s)

    def epoch_windows(epoch: int) -> list[Cached]:
        return [c for i in epoch_sets[(epoch - 1) % len(epoch_sets)] for c in cache[i]]

    def batches(epoch: int) -> list[list[Cached]]:
        windows = epoch_windows(epoch)
        return [[windows[i] for i in batch]
                for batch in _shuffled_batches([w.hidden.shape[0] for w in windows], args.batch_size, rng)]

    def loss(group: list[Cached]) -> Any:
        return _batch_loss(_top_logits(scorer, group), [c.labels for c in group], args.pos_weight)

    def evaluate(step: int) -> dict[str, Any]:
        """Score the held-out questions; the checkpoint with the highest mean (over sources) per-question average
        precision is the best: the ranking is what a token budget selects by."""
        stats = calibrate(scorer, held_qs, args.target_recall)
        logger.info("step %d held-out: MAP %s (mean %.3f), AP %.3f, threshold %.2f -> recall %.3f precision %.3f, "
                    "kept %.1f%% of tokens; relative %.2f -> %s", step, stats["map"], stats["mean_map"],
                    stats["average_precision"], stats["threshold"], stats["at_threshold"]["recall"],
                    stats["at_threshold"]["precision"], 100 * stats["at_threshold"]["kept_token_share"],
                    stats["relative"], stats["at_relative"])
        return {"holdout": stats, "holdout_map": stats["mean_map"]}

    head = [p for k, p in trained.items() if k.startswith("head.")]
    body = [p for k, p in trained.items() if not k.startswith("head.")]
    per_epoch = math.ceil(len(epoch_windows(1)) / args.batch_size)
    total = args.steps or per_epoch * args.epochs
    budget = Budget(args.max_minutes * 60, spent=cache_s)  # caching the frozen layers' outputs counts
    trainer = Trainer(args, model, [{"params": body, "lr": args.lr}, {"params": head, "lr": args.head_lr}],
                      total_steps=total, log=log, weight_decay=0.01, budget=budget,
                      checkpoint_every=args.checkpoint_every or per_epoch, checkpoint_at_end=True,
                      evaluate=evaluate, metric="holdout_map",
                      save=lambda folder, m: scorer.save_pretrained(folder, threshold=m["holdout"]["threshold"]),
                      smoothing=0.02, rng=rng, plot_title="extractive classifier (cached top layers)",
                      plot_ylabel="weighted BCE (moving average)", log_to=logger)
    logger.info("%d steps (~%d per epoch), batch %d windows", total, per_epoch, args.batch_size)
    state = trainer.fit(batches, loss)
    logger.info("training took %.0f s; best checkpoint: step %s", state.train_seconds, state.best_step)

    final = CrossEncoderScorer.from_pretrained(trainer.best_checkpoint, device=device)
    calibration = calibrate(final, held_qs, args.target_recall)
    logger.info("calibrated threshold %.2f on %d held-out questions: %s", calibration["threshold"], len(held_qs),
                calibration["at_threshold"])
    training = {
        "data": ", ".join(Path(d).name for d in args.data),
        "data_sha256_16": _sha256(args.data),
        "questions_per_source": counts,
        "per_source_per_epoch": args.per_source,
        "sample_seed": sample_seed,
        **({"init": args.init, "init_training": init_training} if args.init else {}),
        "questions": len(questions),
        "train_questions": len(train_qs),
        "holdout_questions": len(held_qs),
        "holdout_per_source": args.holdout,
        **trainer.summary(),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "schedule": args.schedule,
        "warmup": args.warmup,
        "pos_weight": args.pos_weight,
        "distractors_per_question": args.distractors,
        "foreign_per_question": args.foreign,
        "bridge_per_question": args.bridge,
        "title_dropout": args.title_dropout,
        "load_average": round(load_start, 1),
    }
    metrics = {"holdout_calibration": calibration}
    final.save_pretrained(out, weights_dtype=args.save_dtype, threshold=calibration["threshold"],
                          relative=calibration["relative"], training=training,
                          metrics=metrics)
    write_model_card(out)
    log.record(done=True, **training, threshold=calibration["threshold"])
    trainer.plot()
    logger.info("wrote %s (%s)", out, _size(out / WEIGHTS_NAME))
    return 0


def _bridge_examples(question: Question, gold: Sequence[Paragraph], others: Sequence[Paragraph],
                     rng: random.Random) -> list[Paragraph]:
    """Second-hop examples of a multi-hop question (``--bridge``).

    One gold paragraph's supporting sentence is appended to the query ("the evidence found first"); under that query
    the other gold paragraph keeps its labels and a distractor is all negative. Nothing for a question without two
    gold paragraphs.
    """
    gold = [p for p in gold if p.gold]
    if len(gold) < 2:
        return []
    first, second = rng.sample(gold, 2)
    evidence = rng.choice([s for s, label in zip(first.sentences, first.labels, strict=True) if label])
    query = f"{question.query} {evidence}"
    out = [Paragraph(query, second.title, second.sentences, second.labels)]
    if others:
        out.append(rng.choice(others).as_distractor(query))
    return out


def _widen(scorer: CrossEncoderScorer, layers: int | None) -> None:
    """Train ``layers`` top layers of an ``--init`` artifact that stores fewer (the others are the base's)."""
    have = scorer.config.trained_layers
    n_layers = len(scorer.model.encoder.encoder.layer)
    if layers is None or layers == have:
        return
    if not have < layers <= n_layers:
        raise ConfigError(f"--trained-layers {layers}: the --init artifact stores {have} layer(s) and its encoder "
                          f"has {n_layers}; give a number in [{have}, {n_layers}] or leave it out.")
    logger.info("widening the --init artifact from %d to %d trained layers", have, layers)
    scorer.config.trained_layers = layers


def _init_training(spec: str) -> dict[str, Any]:
    """What the artifact a run continues from (``--init``) was trained by, its own ``init_training`` chain included.

    The card of a continued run then says how to reproduce the whole chain, even after that artifact is replaced.
    """
    tr = json.loads((artifact_folder(spec) / CONFIG_NAME).read_text()).get("training", {})
    keys = ("command", "steps", "batch_size", "samples_seen", "train_seconds", "sample_seed", "init", "init_training")
    return {k: tr[k] for k in keys if k in tr} or {"command": f"unknown ({spec} has no training record)"}


def _init_lines(tr: dict[str, Any]) -> list[str]:
    """The card's line on the runs this one continued from (``--init``), oldest first."""
    chain = []
    node = tr
    while node.get("init_training"):
        node = node["init_training"]
        chain.append(node)
    if not chain:
        return []
    runs = "; ".join(f"({n}) `{prior.get('command', '?')}` ({prior.get('steps', '?')} steps, "
                     f"{_samples(prior)} passage windows, {prior.get('train_seconds', '?')} s)"
                     for n, prior in enumerate(reversed(chain), start=1))
    return [f"- Continued training (`--init {tr.get('init')}`). The runs before this one, oldest first: {runs}; "
            f"then this run (Reproduce, below), which drew its samples with seed {tr.get('sample_seed')} and kept "
            f"the held-out split of seed {tr.get('seed')}. To reproduce, run them in this order, each with the "
            "folder the run before wrote as its `--init`."]


def card_evidence(model: str, results: Sequence[str]) -> int:
    """``--card-evidence``: copy the extractive rows and curves of bench results into the artifact's card."""
    folder = artifact_folder(model)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    evidence = {}
    for path in results:
        res = json.loads(Path(path).read_text())
        rows = {k: {m: v.get(m) for m in ("context_tokens", "ans_in_ctx", "sf_all", "sf_recall", "compress_s")}
                for k, v in res["methods"].items()}
        evidence[Path(path).stem] = {"data": Path(res["data"]).name, "n": res["n"], "retrieval": res["retrieval"],
                                     "command": res.get("command"), "rows": rows, "curves": res["curves"]["families"],
                                     "reference": res["curves"].get("reference"),
                                     "batch_size": (res.get("timing") or {}).get("batch_size"),
                                     "threads": (res.get("machine") or {}).get("torch_threads")}
    cfg.setdefault("metrics", {})["dev_evidence"] = evidence
    (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    write_model_card(folder, cfg["metrics"].get("dev"))
    return 0


def _evidence_card_lines(evidence: dict[str, Any]) -> list[str]:
    lines = ["### Dev evidence (what survives compression; `ragzip bench --no-generate`)", "",
             "Each curve read at 64 / 128 / 256 tokens read (interpolated between measured settings; `–` where the "
             "curve does not reach the budget), with the paired bootstrap 95% interval of the difference to the "
             "reference curve; `*` = the interval excludes zero.", ""]
    for ev in evidence.values():
        ref = ev.get("reference")
        lines += [f"**{ev['data']}** ({ev['n']} questions, {ev['retrieval'].get('mode')}"
                  + (f", {ev['retrieval'].get('distractors')} same-article distractors" if ev["retrieval"].get(
                      "distractors") else "") + f"; reference `{ref}`): `{ev.get('command')}`", "",
                  "| curve | metric | 64 | 128 | 256 |", "|---|---|---|---|---|"]
        for family, c in ev["curves"].items():
            if not (family.startswith("extractive") or family == ref):
                continue
            for metric in ("ans_in_ctx", "sf_all"):
                cells = []
                for b in ("64", "128", "256"):
                    cell = (c.get("at") or {}).get(b, {}).get(metric)
                    if not cell:
                        cells.append("–")
                        continue
                    ci = cell.get("diff_ci_ref")
                    mark = "*" if ci and (ci[0] > 0 or ci[1] < 0) else ""
                    cells.append(f"{cell['value']:.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]{mark}" if ci else ""))
                if any(x != "–" for x in cells):
                    lines.append(f"| `{family}` | {metric} | " + " | ".join(cells) + " |")
        default = ev["rows"].get("extractive")
        if default:
            lines += ["", f"Default rule (`extractive`): {default['context_tokens']:.1f} tokens read, ans_in_ctx "
                      f"{_num(default['ans_in_ctx'])}, sf_all {_num(default['sf_all'])}, "
                      f"{default['compress_s']:.3f} s per question to compress (batches of {ev.get('batch_size')}, "
                      f"{ev.get('threads')} torch threads)."]
        lines.append("")
    return lines


def _samples(tr: dict[str, Any]) -> str:
    """Passage windows a run saw: its recorded count, else steps x batch size."""
    if isinstance(tr.get("samples_seen"), int):
        return f"{tr['samples_seen']:,}"
    try:
        return f"{int(tr['steps']) * int(tr['batch_size']):,}"
    except (KeyError, TypeError, ValueError):
        return "?"


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def recalibrate(args: ExtractiveArguments) -> int:
    """``--recalibrate``: calibrate an artifact on the held-out training split and update its config and card."""
    torch.set_num_threads(args.threads)
    folder = artifact_folder(args.model)
    _, held_qs = split_holdout(load_questions(args.data, args.limit), args.holdout, args.seed)
    calibration = calibrate(CrossEncoderScorer.from_pretrained(folder, device="cpu"), held_qs, args.target_recall)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg.update(threshold=calibration["threshold"], relative=calibration["relative"])
    cfg.setdefault("metrics", {})["holdout_calibration"] = calibration
    (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    write_model_card(folder, cfg["metrics"].get("dev"), cfg["metrics"].get("dev_command", ""))
    logger.info("recalibrated %s on %d held-out questions: threshold %.2f, relative %.2f", folder, len(held_qs),
                calibration["threshold"], calibration["relative"])
    return 0


# ======================================================================================================= evaluation
def score_questions(scorer: CrossEncoderScorer, questions: Sequence[Question],
                    pick: Any = None) -> list[tuple[Paragraph, list[float]]]:
    """Score (query, paragraph) pairs with the given sentence segmentation; ``pick`` chooses paragraphs per question."""
    paragraphs = [p for q in questions for p in (pick(q) if pick else q.paragraphs)]
    scores = scorer.score([ScoreItem(p.query, p.title, p.sentences) for p in paragraphs])
    return list(zip(paragraphs, scores, strict=True))


def prf(pairs: Iterable[tuple[Paragraph, list[float]]], threshold: float,
        token_counts: dict[str, int] | None = None) -> dict[str, float]:
    """Micro precision/recall/F1 of ``score >= threshold`` against the labels, and the share of tokens kept."""
    tp = fp = fn = 0
    kept_tokens = all_tokens = 0
    for para, scores in pairs:
        for sentence, label, s in zip(para.sentences, para.labels, scores, strict=True):
            keep = s >= threshold
            tp += keep and label
            fp += keep and not label
            fn += (not keep) and label
            n = token_counts[sentence] if token_counts is not None else len(sentence.split())
            all_tokens += n
            kept_tokens += n if keep else 0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "kept_token_share": round(kept_tokens / all_tokens, 4) if all_tokens else 0.0}


def average_precision(pairs: Sequence[tuple[Paragraph, list[float]]]) -> float:
    flat = sorted(((s, lab) for p, sc in pairs for s, lab in zip(sc, p.labels, strict=True)), key=lambda x: -x[0])
    positives = sum(lab for _, lab in flat)
    hits, total = 0, 0.0
    for rank, (_, lab) in enumerate(flat, 1):
        if lab:
            hits += 1
            total += hits / rank
    return round(total / positives, 4) if positives else 0.0


def calibrate(scorer: CrossEncoderScorer, questions: Sequence[Question], target_recall: float) -> dict[str, Any]:
    """Calibrate the default selection rules on held-out training questions (five-passage sets: gold + first
    distractors).

    - ``threshold``: the highest absolute threshold (0.01 steps) whose pooled positive-sentence recall reaches
      ``target_recall``;
    - ``relative``: the highest ratio r (0.01 steps) such that keeping every sentence scoring >= r x the question's
      best score reaches ``target_recall`` — the query-adaptive rule (a hard question's scores are all lower);
    - ``map``: mean per-question average precision of the ranking over the question's five passages, per source
      (checkpoint choice uses the mean over sources).
    """
    pairs = score_questions(scorer, questions, five_passages)
    chosen = 0.01
    for t in [x / 100 for x in range(99, 0, -1)]:
        if prf(pairs, t)["recall"] >= target_recall:
            chosen = t
            break
    per_q: list[tuple[Question, list[tuple[Paragraph, list[float]]]]] = []
    it = iter(pairs)
    for q in questions:
        per_q.append((q, [next(it) for _ in five_passages(q)]))
    ratio, relative = 0.01, {}
    for r in [x / 100 for x in range(99, 0, -1)]:
        tp = fn = kept = total = 0
        for _, qp in per_q:
            best = max((x for _, sc in qp for x in sc), default=0.0)
            for para, sc in qp:
                for sentence, lab, x in zip(para.sentences, para.labels, sc, strict=True):
                    keep = x >= r * best
                    tp += keep and lab
                    fn += (not keep) and lab
                    n = len(sentence.split())
                    total += n
                    kept += n if keep else 0
        if tp + fn and tp / (tp + fn) >= target_recall:
            ratio, relative = r, {"recall": round(tp / (tp + fn), 4), "kept_token_share": round(kept / total, 4)}
            break
    maps: dict[str, list[float]] = {}
    for q, qp in per_q:
        ap = average_precision(qp)
        if any(lab for p, _ in qp for lab in p.labels):
            maps.setdefault(q.source, []).append(ap)
    per_source = {k: round(sum(v) / len(v), 4) for k, v in sorted(maps.items())}
    return {"threshold": chosen, "target_recall": target_recall, "questions": len(questions),
            "paragraphs": "gold + first distractors, 5 per question", "average_precision": average_precision(pairs),
            "at_threshold": prf(pairs, chosen), "at_0.5": prf(pairs, 0.5),
            "relative": ratio, "at_relative": relative,
            "map": per_source, "mean_map": round(sum(per_source.values()) / max(len(per_source), 1), 4)}


def evaluate(model: str, data: str, *, threshold: float | None, limit: int | None, timing_questions: int,
             tokenizer: str, threads: int) -> dict[str, Any]:
    """Classifier metrics on HotpotQA-style data (see ``--eval-only``)."""
    torch.set_num_threads(threads)
    questions = load_hotpotqa(data, limit)
    scorer = CrossEncoderScorer.from_pretrained(model, device="cpu")
    t = scorer.default_threshold if threshold is None else threshold
    counter = load_token_counter(tokenizer)
    sentences = sorted({s for q in questions for p in q.paragraphs for s in p.sentences})
    counts = dict(zip(sentences, counter.count_many(sentences), strict=True))
    start = time.perf_counter()
    all10 = score_questions(scorer, questions)
    score_s = time.perf_counter() - start
    gold = [(p, s) for p, s in all10 if p.gold]
    chosen = {id(p) for q in questions for p in five_passages(q)}
    top5 = [(p, s) for p, s in all10 if id(p) in chosen]
    retrieved, sf_retrieved = retrieve_five(scorer, questions, all10)
    sweep = {f"{x / 10:.1f}": prf(all10, x / 10, counts) for x in range(1, 10)}
    result: dict[str, Any] = {
        "data": Path(data).name,
        "questions": len(questions),
        "threshold": t,
        "all_paragraphs": {**prf(all10, t, counts), "average_precision": average_precision(all10)},
        "gold_paragraphs": prf(gold, t, counts),
        "five_passages": {**prf(top5, t, counts), "average_precision": average_precision(top5)},
        "retrieved_five": {**prf(retrieved, t, counts), "average_precision": average_precision(retrieved),
                           "supporting_facts_retrieved": sf_retrieved},
        "sweep_all_paragraphs": sweep,
        "scoring_s_per_paragraph": round(score_s / max(len(all10), 1), 5),
        "token_counter": tokenizer,
    }
    # Through the compressor as users call it: split the joined paragraph text, score, select, rebuild the text.
    compressor = ExtractiveCompressor(ExtractiveConfig(tokenizer=tokenizer), scorer=scorer)
    compressor.token_counter = counter
    timed = questions[:timing_questions]
    for q in timed[:3]:  # warm up
        compressor.compress(q.query, _passages(five_passages(q)))
    times, cpu, recalled, golds, before, after = [], [], 0, 0, 0, 0
    for q in timed:
        paras = five_passages(q)
        t0, c0 = time.perf_counter(), time.process_time()
        out = compressor.compress(q.query, _passages(paras))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        before += out.tokens_before
        after += out.tokens_after
        for para, res in zip(paras, out.results, strict=True):
            for sentence, label in zip(para.sentences, para.labels, strict=True):
                if label:
                    golds += 1
                    recalled += _covered(sentence, res.text)
    times.sort()
    result["compressor_five_passages"] = {
        "questions": len(timed),
        "compress_s_mean": round(sum(times) / len(times), 4),
        "compress_s_p50": round(times[len(times) // 2], 4),
        "compress_s_p90": round(times[int(0.9 * (len(times) - 1))], 4),
        "compress_cpu_s_mean": round(sum(cpu) / len(cpu), 4),
        "supporting_fact_recall": round(recalled / golds, 4) if golds else 0.0,
        "kept_token_share": round(after / before, 4) if before else 0.0,
        "threads": threads,
    }
    return result


def retrieve_five(scorer: CrossEncoderScorer, questions: Sequence[Question],
                  scored: Sequence[tuple[Paragraph, list[float]]]) -> tuple[list[tuple[Paragraph, list[float]]], float]:
    """Top-5 dense retrieval (embedded MiniLM, cosine, exact) over all paragraphs of ``questions``, as a RAG
    pipeline would retrieve, with every retrieved paragraph scored for its question.

    Returns the (paragraph, scores) pairs and the share of supporting facts that were retrieved at all.
    """
    known = {(p.query, p.title): (p, sc) for p, sc in scored}
    corpus: dict[str, list[str]] = {}
    for q in questions:
        for p in q.paragraphs:
            corpus.setdefault(p.title, p.sentences)
    titles = list(corpus)
    st = load_sentence_transformer("embedded:minilm")
    docs = st.encode([f"{t}: {' '.join(corpus[t])}" for t in titles], batch_size=32, normalize_embeddings=True)
    queries = st.encode([q.query for q in questions], batch_size=32, normalize_embeddings=True)
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :5]  # (Q, 5)
    pairs: list[tuple[Paragraph, list[float]] | None] = []
    missing: list[tuple[int, Paragraph]] = []
    total_sf = found_sf = 0
    for q, row in zip(questions, top, strict=True):
        total_sf += sum(sum(p.labels) for p in q.paragraphs)
        for j in row:
            title = titles[int(j)]
            if (q.query, title) in known:
                pairs.append(known[(q.query, title)])
                found_sf += sum(known[(q.query, title)][0].labels)
            else:  # a paragraph of another question: no supporting fact of this one
                missing.append((len(pairs), Paragraph(q.query, title, corpus[title], [0] * len(corpus[title]))))
                pairs.append(None)
    extra = scorer.score([ScoreItem(p.query, p.title, p.sentences) for _, p in missing]) if missing else []
    for (i, p), sc in zip(missing, extra, strict=True):
        pairs[i] = (p, sc)
    return [x for x in pairs if x is not None], round(found_sf / total_sf, 4) if total_sf else 0.0


def _passages(paragraphs: Sequence[Paragraph]) -> list[Any]:
    return [Passage(" ".join(p.sentences), id=f"{p.title}", metadata={"title": p.title}) for p in paragraphs]


def _covered(sentence: str, text: str) -> int:
    """1 when the kept text contains the sentence (the splitter may cut it differently: half its words suffice)."""
    if sentence in text:
        return 1
    words = sentence.split()
    present = sum(1 for w in words if w in text)
    return int(words and present / len(words) >= 0.5 and sentence[: len(sentence) // 2].strip() in text)


# ========================================================================================================= the card
def write_model_card(folder: Path, dev: dict[str, Any] | None = None, dev_command: str = "") -> None:
    """Write ``MODEL_CARD.md`` from ``config.json`` (and dev metrics when given), keeping hand-written sections."""
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    tr = cfg.get("training", {})
    cal = cfg.get("metrics", {}).get("holdout_calibration", {})
    layers = cfg.get("integrity", {}).get("bases", {}).get("encoder", {}).get("dims", {}).get("layers")
    every = layers == cfg["trained_layers"]  # all of the encoder's layers trained: only the embeddings are the base's
    what = [
        f"- Base encoder: `{cfg['base_model']}` ({cfg['base_model_id']}), loaded from the embedded package; its "
        + ("embeddings are used as they are." if every else "embeddings and bottom layers are used as they are."),
        f"- Stored here ({_weights_dtype(folder / WEIGHTS_NAME)}, `{WEIGHTS_NAME}`, {_size(folder / WEIGHTS_NAME)}): "
        + (f"all {layers} encoder layers" if every else f"the top {cfg['trained_layers']} encoder layers")
        + f", fine-tuned, and the sentence head ({cfg['head_hidden']} "
        f"hidden, `{cfg.get('head_type')}`); loading casts them to float32 on a CPU. Why whole layers and not LoRA: "
        "fine-tuning whole top layers adapts the bi-encoder to cross-encoding more than a low-rank update, stays "
        "small (only what was trained: about 3.5 MB a layer in float16), and lets training cache the frozen "
        + ("embeddings' outputs once. The 47 MB embedding matrix comes" if every else
           "bottom layers' outputs once, which makes it affordable on a 2-core CPU. The bottom layers and the 47 MB "
           "embedding matrix come")
        + " from the base model named in `config.json`.",
        f"- Window: {cfg['window']} tokens; titles up to {cfg['max_title_tokens']} tokens. Longer passages are scored "
        "in overlapping windows; a single sentence longer than the window is scored from its first part.",
        "- Default selection: " + (
            f"**relative {cfg['relative']}** — keep the sentences scoring at least {cfg['relative']} x the question's "
            f"best score (query-adaptive), calibrated on held-out *training* questions as the highest ratio whose "
            f"positive-sentence recall reaches {cal.get('target_recall', '?')}; the absolute threshold "
            f"{cfg['threshold']} (calibrated the same way) applies when set as `threshold`."
            if cfg.get("relative") is not None else
            f"threshold **{cfg['threshold']}**, calibrated on held-out *training* questions as the highest threshold "
            f"whose supporting-fact recall reaches {cal.get('target_recall', '?')}."),
    ]
    schedule = ("linear warm-up/decay" if tr.get("schedule", "linear") == "linear" else
                f"warm-up over {tr.get('warmup')} of the steps, cosine decay to 10%")
    recipe = [
        *_init_lines(tr),
        f"- Titles dropped with p={tr.get('title_dropout')}; each example is a whole passage with a label per "
        f"sentence (BCE, positive weight {tr.get('pos_weight')}).",
        f"- Optimizer: AdamW lr {tr.get('lr')} (head {tr.get('head_lr')}), {schedule}, batch {tr.get('batch_size')} "
        f"passage windows; {tr.get('threads')} CPU thread(s), {tr.get('train_seconds')} s wall time (including "
        f"caching the frozen layers' outputs; load average {tr.get('load_average', '?')} at the start).",
    ]
    results = [
        f"Held-out training questions ({cal.get('questions')}), 5 passages each (gold + first distractors), at the "
        f"absolute threshold: {_fmt(cal.get('at_threshold', {}))}; average precision {cal.get('average_precision')}."
        + (f" Relative rule {cal['relative']}: recall {cal['at_relative'].get('recall')}, "
           f"{100 * cal['at_relative'].get('kept_token_share', 0):.1f}% of words kept; per-question mean "
           f"average precision by source {cal.get('map')}." if cal.get("at_relative") else ""), ""]
    if dev:
        results += _dev_card_lines(dev, dev_command)
    if cfg.get("metrics", {}).get("dev_evidence"):
        results += _evidence_card_lines(cfg["metrics"]["dev_evidence"])
    limits = [
        ("- Trained on English Wikipedia questions (HotpotQA, Natural Questions, SQuAD); other domains and languages "
         "work mechanically (WordPiece, uncased) but are not measured." if tr.get("questions_per_source") else
         "- Trained on English Wikipedia multi-hop questions (HotpotQA) only; other domains and languages work "
         "mechanically (WordPiece, uncased) but are not measured."),
        "- Scores depend on the passage as context; a passage cut mid-way by the retriever loses context.",
        "- The classifier does not see the retrieval rank or score. Where the retriever's first passage usually holds "
        "the answer (NQ-open, FAISS top-5, above), keeping the best passages whole (EmbeddingsFilter k=1, even "
        "truncation) keeps the answer more often at 128 tokens than choosing sentences across passages.",
        ("- HotpotQA's distractors are on the question's topic; the cross-question negatives (paragraphs of other "
         "questions) are what teach the model that off-topic text is useless."
         if tr.get("foreign_per_question") else
         "- HotpotQA negatives are always on the question's topic, so a passage on an unrelated topic can still "
         "score high; train with `--foreign 1` (cross-question negatives) to teach that off-topic text is useless."),
        "- The threshold was calibrated on HotpotQA; on other data check it against the sweep above or set "
        "`max_tokens` (a budget) instead.",
        "- The threshold trades recall for compression; set `threshold`, `max_tokens` or `top_k` in the config.",
    ]
    sections = [CardSection("## Limits", limits)]
    gate = _set_gate_section(folder)
    if gate is not None:
        sections.append(gate)
    ModelCard.from_training(
        tr,
        title="ragzip extractive sentence classifier (`type: extractive`, `backbone: crossencoder`)",
        summary="A context-aware sentence classifier in the style of EXIT (arXiv 2412.12559): P(sentence is useful "
                "for the query | query, the sentence's own passage). One encoder pass per passage scores all its "
                "sentences (`[CLS] query [SEP] title: s1 s2 ... [SEP]`, token states mean-pooled per sentence), as "
                "Provence does; "
                + ("the head reads `[sentence; CLS; query*sentence; |query-sentence|]` plus an embedding of the "
                   "sentence's position in its passage." if cfg.get("head_type") == "interaction" else
                   "the head reads `[sentence; CLS]`."),
        what=what, data=_data_lines(tr), recipe=recipe, results=results, sections=sections,
        samples_seen=tr.get("samples_seen", _samples(tr)), sample_unit="passage windows",
    ).write(folder)


def _dev_card_lines(dev: dict[str, Any], dev_command: str) -> list[str]:
    a, g, f, c = dev["all_paragraphs"], dev["gold_paragraphs"], dev["five_passages"], dev["compressor_five_passages"]
    r = dev["retrieved_five"]
    return [
        f"HotpotQA **dev** (`{dev['data']}`, {dev['questions']} questions; never used for training or calibration), "
        f"threshold {dev['threshold']}, sentence level against supporting facts (kept-token share in "
        f"`{dev['token_counter']}` tokens):",
        "",
        "| paragraphs scored | precision | recall | F1 | tokens kept |",
        "|---|---:|---:|---:|---:|",
        f"| all 10 (2 gold + 8 distractors) | {a['precision']:.3f} | {a['recall']:.3f} | {a['f1']:.3f} | "
        f"{100 * a['kept_token_share']:.1f}% |",
        f"| 5 (2 gold + first 3 distractors) | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | "
        f"{100 * f['kept_token_share']:.1f}% |",
        f"| gold paragraphs only | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} | "
        f"{100 * g['kept_token_share']:.1f}% |",
        f"| top-5 retrieved (MiniLM, over all {dev['questions']}x10 paragraphs; {100 * r['supporting_facts_retrieved']:.0f}% "
        f"of supporting facts retrieved) | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
        f"{100 * r['kept_token_share']:.1f}% |",
        "",
        f"Average precision: {a['average_precision']} (all 10), {f['average_precision']} (5 passages).",
        "",
        f"Through the compressor (own sentence splitter on the joined paragraph text, 5 passages, "
        f"{c['questions']} questions, {c['threads']} threads, warm): compression "
        f"{c['compress_s_mean']:.3f} s per question on average (p50 {c['compress_s_p50']:.3f}, p90 "
        f"{c['compress_s_p90']:.3f}; {c['compress_cpu_s_mean']:.3f} CPU-seconds); supporting-fact recall {c['supporting_fact_recall']:.3f}; "
        f"{100 * c['kept_token_share']:.1f}% of the context tokens kept.",
        "",
        "Threshold sweep (all 10 paragraphs): "
        + "; ".join(f"{k}: R {v['recall']:.2f} P {v['precision']:.2f} kept {100 * v['kept_token_share']:.0f}%"
                    for k, v in dev["sweep_all_paragraphs"].items()),
        "",
        f"Measured with: `{dev_command}`",
        "",
    ]


def _set_gate_section(folder: Path) -> CardSection | None:
    """The card section on the set-level relevance gate fitted beside the classifier (``set_gate.json``), from the
    gate's own record; a hand-written section under the same heading in the existing card is kept instead."""
    path = folder / GATE_FILE
    if not path.is_file():
        return None
    gate = json.loads(path.read_text(encoding="utf-8"))
    tr = gate.get("training", {})
    oof = tr.get("heldout_out_of_fold", {})
    gated, best = oof.get("set_gate", {}), oof.get("best_sentence", {})
    dev = "; ".join(f"gated {_pct(v['set_gate'].get('gated_with'))} / {_pct(v['set_gate'].get('gated_without'))} on "
                    f"{name} ({v['set_gate'].get('n_with')})" for name, v in tr.get("dev", {}).items())
    text = (
        f"A logistic regression over {len(gate.get('features', []))} order statistics of this classifier's sentence "
        "scores for a whole set of passages (`ragzip.relevance`), P(the set holds the evidence). Used by `extractive` "
        "with `selective: true, selective_rule: set_gate` and by `abstractive` (`relevance_gate: auto`). Fitted on "
        f"this classifier's own held-out *training* split ({tr.get('holdout_per_source')} questions per source, seed "
        f"{tr.get('seed')}; {tr.get('sets')} sets: gold + distractors vs distractors only), threshold "
        f"{gate.get('threshold')} = at most {_pct(tr.get('max_gold_gated'))} of the sets holding evidence gated, out "
        "of fold; refused if this folder's weights change. Held-out out-of-fold ROC AUC "
        f"{_num(gated.get('roc_auc'))} (best sentence alone: {_num(best.get('roc_auc'))})."
        + (f" Dev, never used for fitting (sets of five, with the gold passage / distractors only): {dev}." if dev
           else "")
        + f" Reproduce: `{tr.get('command')}`.")
    heading = f"## The set-level relevance gate beside it (`{GATE_FILE}`, {max(1, round(path.stat().st_size / 1024))} KB)"
    return CardSection(heading, [text], key="## The set-level relevance gate", fallback=True)


def _pct(x: Any) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


def _data_lines(tr: dict[str, Any]) -> list[str]:
    per_source = tr.get("questions_per_source")
    if not per_source:  # a HotpotQA-only artifact
        return [
            f"- Data: `{tr.get('data')}` (sha256 {tr.get('data_sha256_16')}…), HotpotQA distractor train, "
            f"{tr.get('questions')} questions: {tr.get('train_questions')} for training, {tr.get('holdout_questions')} "
            "held out (verbatim records) for checkpoint selection and calibration. HotpotQA: Yang et al. 2018, "
            "CC BY-SA 4.0.",
            "- Recipe (EXIT's): positives = supporting-fact sentences; hard negatives = the other sentences of the "
            "supporting paragraphs; random negatives = sentences of distractor paragraphs; each epoch uses every gold "
            f"paragraph and {tr.get('distractors_per_question')} fresh random distractors per question, plus "
            f"{tr.get('foreign_per_question', 0)} cross-question negative(s).",
        ]
    held = tr.get("holdout_questions")
    return [
        f"- Data: `{tr.get('data')}` (sha256 of the files {tr.get('data_sha256_16')}…), train files only: "
        + ", ".join(f"{k} {v}" for k, v in per_source.items())
        + f" questions; {held} held out in all (the same number from each source) for checkpoint choice and "
        "calibration. HotpotQA distractor train (Yang et al. 2018, CC BY-SA 4.0); QED over Natural Questions train "
        "(Lamm et al. 2020; Kwiatkowski et al. 2019, CC BY-SA 3.0); SQuAD v1.1/v2.0 train, 14 articles (Rajpurkar "
        "et al. 2016/2018, CC BY-SA 4.0).",
        "- Positives: HotpotQA supporting facts; QED's answer sentences (`answer_sentence_idx`, every one for "
        "multi-sentence answers); the SQuAD sentences the answer span overlaps (ragzip's splitter, as at inference). "
        "Hard negatives: the other sentences of the same passage. Distractor passages, "
        f"{tr.get('distractors_per_question')} per question per epoch: HotpotQA's own, other paragraphs of the same "
        "SQuAD article that do not contain the answer. SQuAD 2.0 unanswerable questions: their own paragraph, every "
        f"sentence negative. {tr.get('foreign_per_question', 0)} cross-question negative(s) per question (another "
        "question's passage under this question, all negative). Sources balanced: at most "
        f"{tr.get('per_source_per_epoch') or 'all'} questions of each per epoch, a fresh sample each epoch."
        + (f" Second-hop examples (`--bridge {tr['bridge_per_question']}`), per HotpotQA question per epoch: the "
           "query + one supporting sentence of one gold paragraph, paired with the other gold paragraph (its own "
           "labels) and with a distractor (all negative)." if tr.get("bridge_per_question") else ""),
        "- Checkpoint choice: the highest mean (over sources) per-question average precision on the held-out "
        "questions' five-passage sets.",
    ]


def _fmt(m: dict[str, Any]) -> str:
    if not m:
        return "n/a"
    return (f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}, "
            f"{100 * m['kept_token_share']:.1f}% of words kept")


def _weights_dtype(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        return str(handle.get_slice(keys[0]).get_dtype()).lower().replace("f16", "float16").replace(
            "f32", "float32") if keys else "empty"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB" if path.exists() else "?"


def _sha256(paths: str | Path | Sequence[str | Path]) -> str:
    """First 16 hex digits of the sha256 of the file (of the files' digests, in order, for several)."""
    if isinstance(paths, (str, Path)):
        return sha256_file(paths)[:16]
    digests = [sha256_file(p) for p in paths]
    return digests[0][:16] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


# ============================================================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ragzip train extractive``; returns the exit status."""
    args = ExtractiveArguments.parse(argv)
    configure_logging()
    if args.card_evidence:
        return card_evidence(args.model, args.card_evidence)
    if args.recalibrate:
        return recalibrate(args)
    if args.fit_set_gate:
        return fit_set_gate(args)
    if args.eval_only:
        result = evaluate(args.model, args.data[0], threshold=args.threshold, limit=args.limit,
                          timing_questions=args.timing_questions, tokenizer=args.tokenizer, threads=args.threads)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        if args.update_card:
            folder = artifact_folder(args.model)
            cfg = json.loads((folder / CONFIG_NAME).read_text())
            cfg.setdefault("metrics", {})["dev"] = result
            (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
            command = "python -m ragzip.plugins.extractive.train " + " ".join(shlex.quote(a) for a in args.argv)
            write_model_card(folder, result, command)
        return 0
    if not args.out:
        build_parser().error("--out is required for training (or pass --eval-only).")
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
