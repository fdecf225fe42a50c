"""``ragzip train abstractive``: train the summarizer's LoRA adapter on HotpotQA oracle summaries.

Targets (RECOMP's selective augmentation, with oracle summaries in place of GPT-3.5 ones):

- **with gold passages**: the question's 3-5 passages are its gold paragraphs (both, or one with probability
  ``--one-gold-frac``) plus distractors, shuffled; the target is the supporting-fact sentences of the gold paragraphs
  present, in input order (a paragraph's sentences prefixed with its title when they do not name it);
- **distractors only** (``--empty-frac``, ~30%): 3-5 distractor paragraphs; the target is empty (the end token
  alone): "nothing here helps".

Each passage is ``"{title}: {body}"`` (as ``ragzip.data`` builds them) cut to ``--max-passage-tokens`` at a sentence
end, so sequences stay ~300-700 tokens; supporting sentences cut away leave the target. Loss is on the target only,
the first target token (summarize or stay empty) weighted by ``--first-token-weight``.

A teacher LM can write the targets instead (``--teacher MODEL``): it is asked for a short query-focused summary of
the same passages; as RECOMP keeps only teacher summaries that help, a teacher summary is kept when it contains the
gold answer and the oracle target is used otherwise. Distractor-only examples keep the empty target.

After training, ``empty_threshold`` is calibrated on held-out training questions (never the dev set): the value that
makes the most distractor-only inputs empty while at most ``--max-gold-empty`` of the inputs with gold passages are.

The loop, schedule, time budget, checkpoints and log are :mod:`ragzip.training`'s (a stopped run continues from its
newest checkpoint with ``--resume``).

Example:
    ragzip train abstractive --out /tmp/abs --data ../shared/data/hotpotqa_train.jsonl --steps 150 --seed 0
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from ragzip.compressor import build_compressor
from ragzip.data import (
    Paragraph,
    PassageSets,
    Question,
    gold_or_anchor,
    load_questions,
    make_passage,
    passage_sets,
    passage_text,
    split_holdout,
)
from ragzip.errors import ConfigError, InputError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.metrics import has_answer
from ragzip.plugins.abstractive.compressor import _titled
from ragzip.plugins.abstractive.modeling import LoRAConfig, Summarizer, cut_to_tokens
from ragzip.training import (
    Budget,
    ModelCard,
    Trainer,
    TrainingArguments,
    configure_logging,
    open_log,
    prepare,
    resolve_device,
    resume_point,
)

logger = logging.getLogger("ragzip.abstractive.train")

DEFAULT_DATA = "../shared/data/hotpotqa_train.jsonl"
KINDS = ("gold", "empty")


@dataclass(frozen=True)
class Example:
    """One training example: the question, the passages in prompt order, the target summary ("" = empty)."""

    question: str
    docs: tuple[str, ...]
    target: str
    kind: str  # "gold" (some gold passage present) or "empty" (distractors only)
    n_gold: int
    answer: str = ""
    source: str = "oracle"


# ------------------------------------------------------------------------------------------------------------- data
def read_hotpotqa(path: str | Path) -> list[dict[str, Any]]:
    """HotpotQA-style records with at least one supporting fact and one distractor paragraph."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training data {str(path)!r} does not exist; pass --data with a HotpotQA-style JSONL "
                         f"(e.g. {DEFAULT_DATA}).")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            rec = json.loads(line)
            titles = {sf[0] for sf in rec.get("supporting_facts") or ()}
            context = rec.get("context") or []
            if titles and any(t in titles for t, _ in context) and any(t not in titles for t, _ in context):
                records.append(rec)
    if not records:
        raise InputError(f"{str(path)!r} holds no HotpotQA-style record with supporting_facts and distractors.")
    return records


def _oracle_piece(title: str, sentences: list[str]) -> str:
    body = " ".join(s.strip() for s in sentences if s.strip())
    return body if title.lower() in body.lower() else f"{title}: {body}"


def make_example(record: dict[str, Any], kind: str, rng: random.Random, *, n_passages: int, one_gold: bool,
                 cut: Any) -> Example:
    """Build one example from a HotpotQA record; ``cut(text) -> text`` shortens a passage to the token budget."""
    support: dict[str, list[int]] = {}
    for title, index in record["supporting_facts"]:
        support.setdefault(title, []).append(int(index))
    paragraphs = {title: sentences for title, sentences in record["context"]}
    gold = [t for t in paragraphs if t in support]
    distractors = [t for t in paragraphs if t not in support]
    if kind == "gold":
        chosen_gold = rng.sample(gold, 1) if one_gold or len(gold) == 1 else list(gold)
    else:
        chosen_gold = []
    fill = rng.sample(distractors, min(len(distractors), max(n_passages - len(chosen_gold), 1)))
    titles = chosen_gold + fill
    rng.shuffle(titles)
    docs, pieces = [], []
    for title in titles:
        sentences = paragraphs[title]
        text = cut(passage_text(title, "".join(sentences)))
        docs.append(text)
        if title in support:
            kept = [sentences[i] for i in sorted(set(support[title]))
                    if i < len(sentences) and sentences[i].strip() and sentences[i].strip() in text]
            if kept:
                pieces.append(_oracle_piece(title, kept))
    target = " ".join(pieces)
    return Example(record["question"], tuple(docs), target, "gold" if target else "empty",
                   sum(t in support for t in titles), str(record.get("answer", "")))


def build_examples(records: Sequence[dict[str, Any]], n: int, rng: random.Random, *, empty_frac: float,
                   one_gold_frac: float, min_passages: int, max_passages: int, cut: Any,
                   paired: bool = True) -> list[Example]:
    """``n`` examples, cycling through the shuffled records (each record once per pass).

    With ``paired``, every distractor-only example directly follows a with-gold example of the *same question*
    (so both land in one optimizer step): the question alone then cannot tell "summarize" from "empty", only
    the passages can. A share ``empty_frac`` of all examples is distractor-only either way.
    """
    order = list(range(len(records)))
    out: list[Example] = []
    pair_prob = empty_frac / (1 - empty_frac)  # pairs hold 2 examples, one of them empty
    while len(out) < n:
        rng.shuffle(order)
        for i in order:
            if len(out) >= n:
                break
            if paired:
                kinds = ["gold", "empty"] if rng.random() < pair_prob else ["gold"]
            else:
                kinds = ["empty" if rng.random() < empty_frac else "gold"]
            for kind in kinds[: n - len(out)]:
                out.append(make_example(records[i], kind, rng, n_passages=rng.randint(min_passages, max_passages),
                                        one_gold=rng.random() < one_gold_frac, cut=cut))
    return out


TEACHER_PROMPT = ("Write a short summary (at most 3 sentences) of only the facts in the documents that help answer "
                  "the question. Copy names, dates and numbers exactly.\n\nQuestion: {question}\n\nDocuments:\n"
                  "{documents}\n\nSummary:")


def teacher_targets(examples: list[Example], teacher: str, *, max_new_tokens: int = 96) -> tuple[list[Example], dict]:
    """Replace oracle targets by a teacher LM's summaries where the teacher's summary contains the gold answer."""
    gen = HFGenerator(GeneratorConfig(model=teacher, max_new_tokens=max_new_tokens, stop=("\n\n",),
                                      system_prompt="You write faithful, query-focused summaries."))
    todo = [i for i, ex in enumerate(examples) if ex.kind == "gold"]
    prompts = [gen._render([{"role": "user", "content": TEACHER_PROMPT.format(
        question=examples[i].question, documents="\n".join(examples[i].docs))}]) for i in todo]
    outputs = gen.generate(prompts) if prompts else []
    out, kept = list(examples), 0
    for i, g in zip(todo, outputs, strict=True):
        ex = examples[i]
        if g.text.strip() and has_answer(g.text, [ex.answer]):
            out[i] = Example(ex.question, ex.docs, g.text.strip(), ex.kind, ex.n_gold, ex.answer, source="teacher")
            kept += 1
    return out, {"teacher": teacher, "asked": len(todo), "kept": kept}


# ----------------------------------------------------------------------------------------------- extract-then-fuse
def _labelled_passage(paragraph: Any) -> tuple[Any, list[tuple[int, int]]]:
    """A Passage built as ``ragzip.data`` builds them, and the character span of each labelled sentence in it."""
    body = " ".join(paragraph.sentences)
    passage = make_passage(paragraph.title, body, "train")
    offset = len(passage.text) - len(body)
    spans, at = [], offset
    for sentence in paragraph.sentences:
        spans.append((at, at + len(sentence)))
        at += len(sentence) + 1
    return passage, spans


def _borrowing_sets(q: Question, pool: Sequence[Paragraph], rng: random.Random) -> PassageSets[Paragraph]:
    """``q``'s paragraphs with its distractors topped up to five from ``pool`` (at most 50 draws; never a paragraph
    it holds or one that contains its evidence sentences), relabelled all-negative and shuffled."""
    evidence = [" ".join(p.sentences[k] for k, y in enumerate(p.labels) if y).lower()
                for p in q.paragraphs if gold_or_anchor(p)]
    return passage_sets(q.paragraphs, gold_or_anchor,
                        borrow=lambda: (pool[rng.randrange(len(pool))].as_distractor(q.query) for _ in range(50)),
                        accept=lambda p: not any(a and a in " ".join(p.sentences).lower() for a in evidence),
                        key=lambda p: (p.title, tuple(p.sentences)), shuffle=rng)


def choose_sets(questions: Sequence[Any], rng: random.Random, *, empty_frac: float, paired: bool = True,
                ) -> list[tuple[Any, list[Any], str]]:
    """``(question, paragraphs, kind)`` sets of five: gold paragraphs + distractors ("gold"), or distractors only
    ("empty"; with ``paired`` right after a gold set of the same question). A question with fewer than five
    distractors of its own (NQ/QED: none) borrows other questions' paragraphs of the same source."""
    by_source: dict[str, list[Any]] = {}
    for q in questions:
        by_source.setdefault(q.source, []).extend(q.paragraphs)
    pair_prob = empty_frac / (1 - empty_frac)
    out = []
    for q in questions:
        sets = _borrowing_sets(q, by_source[q.source], rng)
        kinds = (["gold", "empty"] if rng.random() < pair_prob else ["gold"]) if paired else \
            ["empty" if rng.random() < empty_frac else "gold"]
        for kind in kinds:
            out.append((q, sets.with_gold(rng) if kind == "gold" else sets.distractors_only(rng), kind))
    return out


def extracted_examples(sets: Sequence[tuple[Any, list[Any], str]], extractor: Any, *, batch: int = 16,
                       ) -> list[Example]:
    """What the summarizer reads at inference with ``input: extracted``: the extractive step's kept sentences of each
    set (titled as the compressor titles them); the target is the kept sentences that are labelled evidence
    (supporting facts / answer sentences), per passage in input order, or empty when the step kept none."""
    out: list[Example] = []
    for start in range(0, len(sets), batch):
        chunk = sets[start:start + batch]
        built = [[_labelled_passage(p) for p in paragraphs] for _, paragraphs, _ in chunk]
        contexts = extractor.compress_batch([q.query for q, _, _ in chunk], [[p for p, _ in b] for b in built])
        for (q, paragraphs, kind), pairs, ctx in zip(chunk, built, contexts, strict=True):
            docs, pieces = [], []
            for para, (passage, spans), result in zip(paragraphs, pairs, ctx.results, strict=True):
                if not result.text.strip():
                    continue
                docs.append(_titled(passage, result.text))
                gold_spans = [span for span, label in zip(spans, para.labels, strict=True) if label]
                kept = [u.text for u in result.units if u.kept and u.start is not None
                        and any(u.start < b and a < u.end for a, b in gold_spans)]
                if kept:
                    pieces.append(_oracle_piece(para.title, kept))
            target = " ".join(pieces)
            n_gold = sum(p.gold for p in paragraphs)
            out.append(Example(q.query, tuple(docs), target, "gold" if target else "empty", n_gold,
                               source=f"extracted:{q.source}:{kind}"))
    return out


def _extracted_data(args: AbstractiveArguments, rng: random.Random, n_train: int) -> tuple[Any, ...]:
    """Training and held-out examples for ``--input extracted``: the classifier's own held-out split (same
    ``--holdout``/``--seed`` as ``ragzip train extractive``) is held out here too, so calibration never sees a
    question either model trained on."""
    train_qs, held_qs = split_holdout(load_questions(args.data), args.holdout, args.seed)
    rng.shuffle(train_qs)
    if args.per_source:
        seen: dict[str, int] = {}
        capped = []
        for q in train_qs:
            if seen.get(q.source, 0) < args.per_source:
                seen[q.source] = seen.get(q.source, 0) + 1
                capped.append(q)
        train_qs = capped
    extractor = build_compressor({"type": "extractive", "model": args.extractor, "max_tokens": args.extract_tokens,
                                  "device": args.device})
    t0 = time.perf_counter()
    sets = choose_sets(train_qs, rng, empty_frac=args.empty_frac, paired=not args.unpaired)
    if not sets:
        raise InputError(f"no training questions left in {args.data} after holding out {args.holdout} per source.")
    while len(sets) < n_train:  # another pass, fresh distractors
        sets += choose_sets(train_qs, rng, empty_frac=args.empty_frac, paired=not args.unpaired)
    examples = extracted_examples(sets[:n_train], extractor)
    val = extracted_examples(choose_sets(held_qs, random.Random(args.seed + 1), empty_frac=0.5), extractor)
    logger.info("extract-then-fuse data: %d training and %d held-out examples in %.0f s", len(examples), len(val),
                time.perf_counter() - t0)
    # Calibrate on what the targets say: a gold set whose evidence the extractive step dropped has an empty target.
    val_gold = [ex for ex in val if ex.source.endswith(":gold") and ex.kind == "gold"]
    val_empty = [ex for ex in val if ex.source.endswith(":empty")]
    return examples, val_gold, val_empty, len(train_qs), held_qs


# ------------------------------------------------------------------------------------------------------- arguments
@dataclass
class AbstractiveArguments(TrainingArguments):
    """``ragzip train abstractive``'s options: the common training ones and the summarizer's."""

    prog: ClassVar[str] = "ragzip train abstractive"
    description: ClassVar[str] = "Train the abstractive compressor's LoRA adapter on HotpotQA."

    out: str = field(default="", metadata={
        "required": True, "help": "folder for the adapter, logs, checkpoints and loss curve"})
    steps: int = field(default=150, metadata={"help": "optimizer steps"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate (AdamW)"})
    warmup: float = field(default=0.1, metadata={"help": "fraction of steps with linear warm-up"})
    max_minutes: float = field(default=40.0, metadata={
        "aliases": ["--time-budget-min"], "help": "stop (and save) after this many minutes"})
    checkpoint_every: int = field(default=50, metadata={"help": "save the adapter every N steps (0 = never)"})
    keep_checkpoints: int = field(default=0, metadata={
        "help": "checkpoints kept: the newest N (plus the best held-out loss with --val-every-checkpoint); 0 keeps "
                "all"})
    log_every: int = field(default=5, metadata={"help": "log the mean loss of the last N steps every N steps"})

    data: list[str] = field(default_factory=lambda: [DEFAULT_DATA], metadata={
        "help": "training JSONL (never a dev file): one HotpotQA-style file with --input passages; with --input "
                "extracted, any of HotpotQA, QED (NQ train) and SQuAD train files (.gz ok)"})
    input: Literal["passages", "extracted"] = field(default="passages", metadata={
        "help": "what the summarizer learns to read: whole passages cut to --max-passage-tokens, or the sentences "
                "the extractive classifier keeps under --extract-tokens (extract-then-fuse)"})
    extract_tokens: int = field(default=160, metadata={
        "help": "--input extracted: the extractive step's token budget (its max_tokens)"})
    extractor: str = field(default="default", metadata={
        "help": "--input extracted: the extractive model (folder or default)"})
    per_source: int = field(default=0, metadata={
        "help": "--input extracted: at most this many training questions of each source (0: all)"})
    init_adapter: str = field(default="", metadata={
        "help": "start from this adapter folder (its LoRA shape and prompt) instead of a fresh LoRA"})
    model: str = field(default="embedded:smollm2-135m", metadata={
        "help": "base summarizer (embedded name, HF id, folder)"})
    backbone: Literal["causal", "seq2seq"] = field(default="causal", metadata={"help": "the base model's kind"})
    batch_size: int = field(default=1, metadata={"help": "examples per forward pass"})
    accum: int = field(default=4, metadata={"help": "forward passes per optimizer step"})
    rank: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (the update is scaled by alpha / rank)"})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={
        "help": "comma-separated Linear names to adapt"})
    first_layer: int = field(default=0, metadata={
        "help": "adapt only blocks >= this index; lower blocks skip the backward pass (faster on CPU)"})
    min_passages: int = field(default=3, metadata={"help": "fewest passages in an example"})
    max_passages: int = field(default=5, metadata={"help": "most passages in an example"})
    max_passage_tokens: int = field(default=128, metadata={"help": "cut each passage to this many tokens"})
    empty_frac: float = field(default=0.3, metadata={"help": "share of distractor-only (empty target) examples"})
    one_gold_frac: float = field(default=0.15, metadata={"help": "share of gold examples with one gold passage"})
    summary_prefix: str = field(default="Relevant:", metadata={
        "help": "fixed words every non-empty target starts with (stripped at inference); '' for none"})
    unpaired: bool = field(default=False, metadata={
        "help": "draw distractor-only examples independently instead of right after the same question's"})
    first_token_weight: float = field(default=3.0, metadata={
        "help": "loss weight of the first target token (the summarize-or-empty decision)"})
    holdout: int = field(default=30, metadata={"help": "training questions kept out for validation/calibration"})
    max_gold_empty: float = field(default=0.05, metadata={
        "help": "calibration: most inputs with gold passages allowed to come out empty"})
    teacher: str = field(default="", metadata={
        "help": "causal LM that writes the targets (kept when they hold the answer)"})
    budget_clock: Literal["cpu", "wall"] = field(default="cpu", metadata={
        "help": "what the budget counts: this process's CPU seconds divided by --threads (time it actually ran: a "
                "shared machine may pause or starve it) or wall-clock seconds"})
    val_every_checkpoint: bool = field(default=False, metadata={
        "help": "also compute the held-out loss at each checkpoint (costs time on a busy CPU)"})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float16", metadata={
        "help": "dtype the adapter weights are stored in"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.accum < 1 or self.batch_size < 1:
            raise ConfigError("--steps, --accum and --batch-size must be >= 1")
        if not 0 <= self.empty_frac < 1 or not 0 <= self.one_gold_frac <= 1:
            raise ConfigError("--empty-frac must lie in [0, 1) and --one-gold-frac in [0, 1]")
        if not 1 <= self.min_passages <= self.max_passages:
            raise ConfigError("need 1 <= --min-passages <= --max-passages")
        if self.input == "passages" and len(self.data) != 1:
            raise ConfigError("--input passages reads one HotpotQA-style --data file")


# -------------------------------------------------------------------------------------------------------- training
def first_token_p_end(summarizer: Any, examples: Sequence[Example]) -> list[float]:
    """P(end token first) for each example's prompt: one prefill each (decides an empty summary)."""
    out = []
    with torch.inference_mode():
        for ex in examples:
            ids = summarizer.encode_prompt(summarizer.prompt(ex.question, list(ex.docs)))
            res = summarizer.generate([ids], max_new_tokens=1)
            out.append(res[0].p_end)
    return out


def calibrate(p_gold: Sequence[float], p_empty: Sequence[float], max_gold_empty: float) -> dict[str, float]:
    """The threshold that empties the most distractor-only inputs while <= ``max_gold_empty`` of gold inputs empty."""
    candidates = sorted(set(p_gold) | set(p_empty) | {0.5, 1.0})
    best = {"threshold": 1.0, "gold_empty": 0.0, "distractor_empty": 0.0}
    for t in candidates:
        gold_rate = sum(p >= t for p in p_gold) / max(len(p_gold), 1)
        empty_rate = sum(p >= t for p in p_empty) / max(len(p_empty), 1)
        if gold_rate <= max_gold_empty and empty_rate > best["distractor_empty"]:
            best = {"threshold": float(t), "gold_empty": gold_rate, "distractor_empty": empty_rate}
    greedy = {"gold_empty_greedy": sum(p >= 0.5 for p in p_gold) / max(len(p_gold), 1),
              "distractor_empty_greedy": sum(p >= 0.5 for p in p_empty) / max(len(p_empty), 1)}
    return {**best, **greedy}


def _input_line(card: dict[str, Any]) -> str:
    if card.get("input") == "extracted":
        return (f"5 passages each (gold + distractors, or distractors only), of which the summarizer reads only the "
                f"sentences the extractive classifier (`{card.get('extractor')}`) keeps under "
                f"{card.get('extract_tokens')} tokens, titled (extract-then-fuse); the target keeps the kept evidence "
                "sentences and is empty when the extractive step kept none")
    return (f"{card['passages'][0]}-{card['passages'][1]} passages each, cut to {card['max_passage_tokens']} "
            "tokens")


def write_model_card(out: Path, card: dict[str, Any], lora: dict[str, Any]) -> Path:
    """``MODEL_CARD.md``: data, seed, steps, time, losses, calibration and the command that reproduces the adapter."""
    cal = card["calibration"]
    stats = card["data_stats"]
    size = (out / "model.safetensors").stat().st_size if (out / "model.safetensors").is_file() else 0
    base = card.get("base_model", "embedded:smollm2-135m")
    pairing = ("each distractor-only set right after a with-gold set of the same question" if card.get("paired") else
               "distractor-only sets drawn independently")
    return ModelCard.from_training(
        card,
        title=f"abstractive adapter: LoRA for {base}",
        summary='RECOMP-style query-focused summarizer with selective augmentation (an empty summary means "nothing '
                'helps"), trained by `ragzip train abstractive`.',
        what=[f"- Only the LoRA weights are stored (`model.safetensors`, {size / 2**20:.2f} MiB, "
              f"{card.get('dtype', 'float16')}); `config.json` names the base model, `{base}`.",
              f"- LoRA: rank {lora['rank']}, alpha {lora['alpha']}, dropout {lora['dropout']}, on "
              f"{', '.join(lora['target_modules'])} of blocks >= {lora['first_layer']}."],
        data=[f"- Data: `{card['data']}` (train files only): {stats['train_records']} questions for training, "
              f"{stats['holdout_records']} held out for validation and calibration. The dev sets were never used.",
              f"- Examples: {stats['examples']} built ({stats['empty_examples']} with an empty target, {pairing}), "
              f"{_input_line(card)}; mean sequence {stats['mean_tokens']} tokens, mean target "
              f"{stats['mean_target_tokens']} tokens. Targets are oracle summaries (the evidence sentences: supporting "
              f"facts / answer sentences), prefixed with `{card.get('summary_prefix', '')}`."],
        recipe=[f"- Optimizer: AdamW lr {card['lr']} (warm-up over {card.get('warmup', 0.1)} of the run, cosine to "
                f"10%), batch {card['batch_size']} x {card['accum']} accumulation, first-token loss weight "
                f"{card['first_token_weight']}.",
                f"- Time: {card['threads']} CPU thread(s); training {card['train_s']:.0f} s wall "
                f"({card['train_clock_s']:.0f} s on the budget's {card['budget_clock']} clock), {card['total_s']:.0f} s "
                "wall in all."],
        results=[f"- Loss (target cross-entropy, first token weighted): train {card['loss_first']} (first logged) -> "
                 f"{card['loss_last']} (last logged); held-out {card['val_loss_start']:.4f} -> "
                 f"{card['val_loss_end']:.4f}. Curve: `loss.png` in the training folder.",
                 f"- Calibration on the held-out questions: `empty_threshold` = {cal['threshold']:.4f} (summary empty "
                 f"when P(end token first) reaches it): empty for {cal['gold_empty']:.0%} of inputs with the gold "
                 f"passages and {cal['distractor_empty']:.0%} of distractor-only inputs (plain greedy: "
                 f"{cal['gold_empty_greedy']:.0%} / {cal['distractor_empty_greedy']:.0%})."],
        samples_seen=card.get("samples_seen", card["steps"] * card["batch_size"] * card["accum"]),
        stopped_early="stopped by the time budget" if card["stopped_early"] else "",
    ).write(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip train abstractive``; returns the exit status."""
    args = AbstractiveArguments.parse(argv)
    configure_logging()
    logger.setLevel(logging.INFO)
    rng = prepare(args)
    out = Path(args.out)
    budget = Budget(args.max_minutes * 60, clock=args.budget_clock, threads=args.threads)
    t0 = time.perf_counter()
    log = open_log(args)
    resuming = resume_point(args) is not None

    device = resolve_device(args.device)
    if args.init_adapter:
        summarizer = Summarizer.load(args.model, backbone=args.backbone, adapter=args.init_adapter, device=device)
        for param in summarizer.trainable_parameters():
            param.requires_grad_(True)
        lora = summarizer.adapter.lora_config()
        summarizer.adapter.input = args.input
    else:
        summarizer = Summarizer.load(args.model, backbone=args.backbone, device=device, private=True)
        lora = LoRAConfig(rank=args.rank, alpha=args.alpha, dropout=args.dropout, first_layer=args.first_layer,
                          target_modules=tuple(t.strip() for t in args.targets.split(",") if t.strip()))
        summarizer.summary_prefix = args.summary_prefix.strip()
        summarizer.add_adapter(lora)

    def cut(text: str) -> str:
        return cut_to_tokens(text, args.max_passage_tokens, summarizer.tokenizer)[0]

    n_train = args.steps * args.accum * args.batch_size
    if args.input == "extracted":
        examples, val_gold, val_empty, n_records, held = _extracted_data(args, rng, n_train)
    else:
        records = read_hotpotqa(args.data[0])
        rng.shuffle(records)
        held, train_records = records[: args.holdout], records[args.holdout:]
        n_records = len(train_records)
        examples = build_examples(train_records, n_train, rng, empty_frac=args.empty_frac,
                                  one_gold_frac=args.one_gold_frac, min_passages=args.min_passages,
                                  max_passages=args.max_passages, cut=cut, paired=not args.unpaired)
        val_rng = random.Random(args.seed + 1)
        val_gold = [make_example(r, "gold", val_rng, n_passages=val_rng.randint(args.min_passages, args.max_passages),
                                 one_gold=False, cut=cut) for r in held]
        val_empty = [make_example(r, "empty", val_rng,
                                  n_passages=val_rng.randint(args.min_passages, args.max_passages),
                                  one_gold=False, cut=cut) for r in held]
    teacher_info: dict[str, Any] = {}
    if args.teacher:
        examples, teacher_info = teacher_targets(examples, args.teacher)
        logger.info("teacher %s: kept %d of %d summaries", args.teacher, teacher_info["kept"], teacher_info["asked"])

    def encode(ex: Example) -> tuple[list[int], list[int]]:
        return (summarizer.encode_prompt(summarizer.prompt(ex.question, list(ex.docs))),
                summarizer.encode_target(ex.target))

    encoded = [encode(ex) for ex in examples]
    lengths = [len(a) + len(b) for a, b in encoded]
    data_stats = {"train_records": n_records, "holdout_records": len(held), "examples": len(examples),
                  "empty_examples": sum(ex.kind == "empty" for ex in examples),
                  "mean_tokens": round(sum(lengths) / len(lengths), 1), "max_tokens": max(lengths),
                  "mean_target_tokens": round(sum(len(b) for _, b in encoded) / len(encoded), 1)}
    logger.info("data: %s", data_stats)
    with open(out / "examples_preview.jsonl", "w", encoding="utf-8") as handle:
        for ex in examples[:5]:
            handle.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")

    val_small = [encode(ex) for ex in (val_gold[:6] + val_empty[:2])]

    def val_loss() -> float:
        summarizer.model.eval()
        with torch.inference_mode():
            losses = [float(summarizer.loss([pair], first_token_weight=args.first_token_weight)) for pair in val_small]
        summarizer.model.train()
        return sum(losses) / len(losses)

    def timed_val_loss() -> tuple[float, float]:
        """The held-out loss and the seconds one held-out prefill takes (the first, warm-up call not counted)."""
        summarizer.model.eval()
        times = []
        losses = []
        with torch.inference_mode():
            for pair in val_small:
                start = time.perf_counter()
                losses.append(float(summarizer.loss([pair], first_token_weight=args.first_token_weight)))
                times.append(time.perf_counter() - start)
        summarizer.model.train()
        return sum(losses) / len(losses), sum(times[1:]) / max(len(times) - 1, 1)

    loss0, per_prefill = timed_val_loss()
    if not resuming:  # a resumed run keeps the first run's step-0 row
        log.record(step=0, val_loss=loss0, elapsed_s=round(time.perf_counter() - t0, 1))
    logger.info("step 0 held-out loss %.4f (setup %.0f s)", loss0, time.perf_counter() - t0)
    # Leave time for the final held-out loss and the calibration prefills (timed on the step-0 held-out loss).
    reserve_s = 1.3 * per_prefill * (2 * len(held) + len(val_small))
    budget.seconds = max(args.max_minutes * 60 - budget.elapsed() - reserve_s, 60.0)
    logger.info("training budget %.0f s (%.0f s kept for validation and calibration)", budget.seconds, reserve_s)
    trainer = Trainer(
        args, summarizer.model, [{"params": summarizer.trainable_parameters(), "lr": args.lr}], log=log,
        budget=budget, accumulate=args.accum, rng=rng,
        evaluate=(lambda step: {"val_loss": round(val_loss(), 4)}) if args.val_every_checkpoint else None,
        metric="val_loss" if args.val_every_checkpoint else None, greater_is_better=False,
        save=lambda folder, metrics: summarizer.save_adapter(folder, dtype=args.dtype),
        plot_title="abstractive LoRA on HotpotQA oracle summaries", plot_ylabel="target cross-entropy", log_to=logger)
    t_train = time.perf_counter()
    state = trainer.fit(
        lambda epoch: [encoded[i: i + args.batch_size] for i in range(0, len(encoded), args.batch_size)],
        lambda batch: summarizer.loss(batch, first_token_weight=args.first_token_weight))
    train_s = time.perf_counter() - t_train
    step = state.step
    summarizer.model.eval()
    log.record(step=step, val_loss=round(val_loss(), 4), elapsed_s=round(time.perf_counter() - t0, 1))

    t_cal = time.perf_counter()
    cal = calibrate(first_token_p_end(summarizer, val_gold), first_token_p_end(summarizer, val_empty),
                    args.max_gold_empty)
    logger.info("calibration on %d held-out questions: %s (%.0f s)", len(held), cal, time.perf_counter() - t_cal)
    losses = log.series("loss")
    summary = trainer.summary()
    train_card = {
        "data": ", ".join(Path(d).name for d in args.data), "input": args.input,
        **({"extract_tokens": args.extract_tokens, "extractor": args.extractor} if args.input == "extracted" else {}),
        **({"init_adapter": args.init_adapter} if args.init_adapter else {}), "seed": args.seed, "steps": step,
        "steps_planned": args.steps, "stopped_early": bool(state.stopped_early), "batch_size": args.batch_size,
        "accum": args.accum, "lr": args.lr, "warmup": args.warmup,
        "lora": {"rank": lora.rank, "alpha": lora.alpha, "first_layer": lora.first_layer,
                 "targets": ",".join(lora.target_modules)},
        "first_token_weight": args.first_token_weight, "empty_frac": args.empty_frac,
        "summary_prefix": summarizer.summary_prefix, "paired": not args.unpaired,
        "one_gold_frac": args.one_gold_frac, "passages": [args.min_passages, args.max_passages],
        "max_passage_tokens": args.max_passage_tokens, "threads": args.threads, "train_s": round(train_s, 1),
        "budget_clock": args.budget_clock, "train_clock_s": round(state.train_seconds, 1),
        "cpu_s": round(time.process_time(), 1), "total_s": round(time.perf_counter() - t0, 1),
        "samples_seen": summary["samples_seen"], "device": summary["device"],
        **({"resumed_from": summary["resumed_from"]} if "resumed_from" in summary else {}),
        "loss_first": round(losses[0][1], 4) if losses else None,
        "loss_last": round(losses[-1][1], 4) if losses else None,
        "val_loss_start": log.rows[0]["val_loss"], "val_loss_end": log.rows[-1]["val_loss"], "calibration": cal,
        "data_stats": data_stats, **({"teacher": teacher_info} if teacher_info else {}),
        "command": args.command,
    }
    summarizer.save_adapter(out, dtype=args.dtype, empty_threshold=round(cal["threshold"], 4),
                            max_passage_tokens=args.max_passage_tokens if args.input == "passages" else 0,
                            input=args.input, extract_tokens=args.extract_tokens if args.input == "extracted" else 0,
                            base_model=args.model, train=train_card)
    write_model_card(out, {**train_card, "base_model": args.model, "dtype": args.dtype}, asdict(lora))
    trainer.plot()
    logger.info("saved adapter to %s (%.0f s in all)", out, time.perf_counter() - t0)
    print(json.dumps(train_card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
