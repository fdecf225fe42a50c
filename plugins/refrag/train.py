"""``ragzip train refrag``: train REFRAG's encoder top layer, projector, expansion policy and (optionally) a decoder
LoRA on CPU-sized budgets.

Stages:

1. **Reconstruction.** The decoder (frozen, its LoRA too) reads the projected chunk vectors of a window of L chunks and
   must reproduce the window's tokens. Curriculum: L grows geometrically (1 -> 2 -> 4 -> 8 chunks) as the stage's
   budget is spent; REFRAG reports that training without it does not converge.
2. **Continual pretraining + QA.** Each example is, with probability ``--qa-share``, a **QA example**: the generator's
   own chat prompt (exactly what it builds at inference) over a train question's passages, compressed chunk by chunk,
   half the examples with a random 0-50% of the chunks expanded as raw tokens (what the policy does at inference), and
   the loss is the gold answer's NLL; otherwise a **next-paragraph example**: the decoder reads a compressed paragraph
   (its last L chunks, L growing 1 -> 16, half the examples with 0-50% of the chunks expanded) and predicts the next
   paragraph (SQuAD train articles) or the rest of the paragraph (HotpotQA, NQ and SQuAD train paragraphs). QA
   examples follow the same curriculum: the gold passages alone first, distractors added as the budget is spent.
   With ``--decoder-lora R`` (default 8) a rank-R LoRA on the decoder's attention maps trains here too, so the decoder
   learns to read the chunk vectors instead of only the encoder learning to write them; ``--decoder-lora 0`` keeps the
   decoder frozen (the recipe of the artifacts before it).
3. **Expansion policy.** REINFORCE with a group baseline (GRPO-style): for a train question over its passages, the
   policy samples G expansion sets of size round(p * L) (Plackett-Luce, Gumbel top-m); reward = -(mean NLL of the gold
   answer) through the decoder that will read them at inference (with its LoRA when there is one), in the generator's
   own prompt.

Each stage is one :class:`ragzip.training.Trainer` run: a wall-clock budget (``--stageN-minutes``) or a step cap,
whichever comes first, and the curriculum and learning-rate schedule follow the fraction of the budget spent, so a run
adapts to a loaded machine. Held-out checks (answer NLL at p = 0 and p = 0.25 on questions held out of the train
files) run every ``--val-every`` stage-2 steps and do not count against the budgets, nor does checkpointing. A stage
checkpoints into ``OUT/stageN/checkpoint-<step>`` every ``--checkpoint-minutes``, at each held-out check and at its
end; the stages log into one ``OUT/train_log.jsonl``; ``--resume`` continues a killed run from its newest checkpoint
(same command plus ``--resume``). The device is cuda when a GPU is present, else cpu (``--device``).

Data (``--data``, the folder): *train* files only. HotpotQA train (the last 100 records held out: they are what
``python -m ragzip.plugins.refrag.evaluate`` measures), QED-NQ train and SQuAD train (the article ``Genocide`` held out
whole for the next-paragraph check); ``--val-per-source`` questions of each source held out for the QA check
(:func:`ragzip.data.split_holdout`). No dev file is read.

Example:
    ragzip train refrag --out runs/refrag-k16 --k 16 --stage1-minutes 10 --stage2-minutes 20 --stage3-minutes 10
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from ragzip.data import QED, Paragraph, five_passages, load_questions, passage_text, read_jsonl, split_holdout
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.models import load_causal_lm
from ragzip.plugins.refrag.config import RefragModelConfig, check_k, check_p
from ragzip.plugins.refrag.kernels import assemble_embeddings
from ragzip.plugins.refrag.lora import DEFAULT_TARGETS
from ragzip.plugins.refrag.modeling import (
    Chunk,
    RefragModel,
    _load_base_encoder,
    budget,
    chunk_passage,
    plackett_luce_sample,
    policy_scalars,
)
from ragzip.training import (
    Budget,
    ModelCard,
    Trainer,
    TrainingArguments,
    TrainLog,
    TrainState,
    WarmupCosine,
    configure_logging,
    open_log,
    plot_losses,
    prepare,
    resolve_device,
    restore_random,
    resume_point,
    saved_state,
)
from ragzip.training.lm import IGNORE, SequenceNLL, padded_nll

logger = logging.getLogger("ragzip.refrag.train")

SENTINEL = "\u0000CONTEXT\u0000"
HELD_OUT_HOTPOT = 100  # the last HotpotQA train records: evaluate.py's held-out questions, never trained on
SQUAD_EVAL_EVERY = 6  # evaluate.py: every 6th SQuAD dev article (sorted by title) is its next-paragraph test set
HELD_OUT_ARTICLE = "Genocide"  # SQuAD train article held out whole: the trainer's next-paragraph check
HOTPOT_TRAIN, QED_TRAIN, SQUAD_TRAIN = "hotpotqa_train.jsonl", "qed_nq_train.jsonl.gz", "squad_train_partial.jsonl.gz"
SQUAD_DEV = "squad_dev.jsonl"
RECIPE_STATE = "recipe_state.json"  # in each checkpoint: the counters and the stage-3 sampler state
VAL_P = 0.25
STAGES = ("stage1", "stage2", "stage3")
STAGE_TITLES = {"stage1": "stage 1: reconstruction NLL", "stage2": "stage 2: next paragraph + QA",
                "stage3": "stage 3: policy (reward = -answer NLL)"}
DESCRIPTION = __doc__.split("\n\n")[0]


# ------------------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class QAItem:
    """A question, its gold answer and its passages in context order (``gold``: which passages hold the evidence)."""

    question: str
    answer: str
    passages: tuple[str, ...]
    source: str = "hotpotqa"
    gold: tuple[bool, ...] = ()


@dataclass
class Corpus:
    """Training/evaluation text: (context, continuation, separator) pairs, plain paragraphs and QA items.

    ``val_qa`` is held out of the train files for the trainer's QA check; ``eval_qa`` (the last 100 HotpotQA train
    records) and, with ``dev_eval``, ``eval_pairs`` (held-out SQuAD dev articles) are what ``evaluate.py`` measures.
    """

    train_paragraphs: list[str]
    train_pairs: list[tuple[str, str, str]]
    eval_pairs: list[tuple[str, str, str]]
    train_qa: list[QAItem]
    eval_qa: list[QAItem]
    eval_titles: list[str]
    eval_pair_titles: list[str]
    val_qa: list[QAItem] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _article_pairs(rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """SQuAD rows -> {title: its distinct paragraphs in file order}."""
    articles: dict[str, list[str]] = {}
    for row in rows:
        paragraphs = articles.setdefault(row.get("title") or "untitled", [])
        if row["context"] not in paragraphs:
            paragraphs.append(row["context"])
    return articles


def _pairs(paragraphs: Sequence[str]) -> list[tuple[str, str, str]]:
    return [(a, b, "\n\n") for a, b in zip(paragraphs, paragraphs[1:])]


def _hotpot_eval_items(records: Sequence[dict[str, Any]], max_qa_passages: int = 4) -> list[QAItem]:
    """evaluate.py's held-out questions (the last records), built exactly as before the QA stage existed."""
    items = []
    for r in records:
        gold = {t for t, _ in r.get("supporting_facts", [])}
        paras = [(t, "".join(s).strip()) for t, s in r["context"]]
        chosen = [p for t, p in paras if t in gold] + [p for t, p in paras if t not in gold]
        chosen = [p for p in chosen if p][:max_qa_passages]
        order = [p for _, p in paras if p in chosen]  # keep the record's order (gold not always first)
        items.append(QAItem(r["question"], r["answer"], tuple(order)))
    return items


def _answers(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Question id -> the first gold answer string (unanswerable and answerless questions left out)."""
    out = {}
    for r in rows:
        if r.get("is_impossible"):
            continue
        answer = r.get("answer")
        if answer is None:
            answer = next((a for a in r.get("answers") or [] if isinstance(a, str) and a.strip()), None)
        if isinstance(answer, str) and answer.strip():
            out[str(r["id"])] = answer.strip()
    return out


def _qa_items(questions: Sequence[Any], answers: dict[str, str], *, seed: int,
              qed_pool: Sequence[Any] = ()) -> list[QAItem]:
    """ragzip.data questions -> QA items over their five passages (``five_passages``), each passage ``"title: body"``
    as ragzip.data gives it to every compressor at inference. A train QED question has only its own passage: it gets
    up to four other QED passages of ``qed_pool`` as distractors, placed around it at random (seeded)."""
    items = []
    for q in questions:
        answer = answers.get(q.id)
        if answer is None:
            continue
        paragraphs = five_passages(q)
        if q.source == QED and len(paragraphs) == 1 and len(qed_pool) > 1:
            rng = random.Random(f"{seed}:{q.id}")
            others = [o.paragraphs[0] for o in rng.sample(list(qed_pool), min(5, len(qed_pool))) if o.id != q.id][:4]
            paragraphs = [*paragraphs, *(Paragraph(q.query, o.title, o.sentences, [0] * len(o.sentences))
                                         for o in others)]
            rng.shuffle(paragraphs)
        texts = tuple(passage_text(p.title, " ".join(p.sentences)) for p in paragraphs)
        items.append(QAItem(q.query, answer, texts, q.source, tuple(p.gold or p.anchor for p in paragraphs)))
    return items


def load_corpus(data_dir: str | Path, *, dev_eval: bool = False, val_per_source: int = 8, seed: int = 0
                ) -> Corpus:
    """Read the train files of ``data_dir`` (HotpotQA, QED-NQ, SQuAD train) into training and held-out sets.

    ``dev_eval`` (``evaluate.py`` only, never training) reads ``squad_dev.jsonl`` for the held-out SQuAD dev articles
    the earlier artifacts were measured on; otherwise ``eval_pairs`` is the held-out SQuAD train article.
    """
    data_dir = Path(data_dir)
    paths = {name: data_dir / name for name in (HOTPOT_TRAIN, QED_TRAIN, SQUAD_TRAIN)}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"training data {str(path)!r} not found; pass --data DIR (the folder with "
                                    f"{HOTPOT_TRAIN}, {QED_TRAIN} and {SQUAD_TRAIN}).")
    hotpot = read_jsonl(paths[HOTPOT_TRAIN])
    qed = read_jsonl(paths[QED_TRAIN])
    squad = read_jsonl(paths[SQUAD_TRAIN])
    n_held = min(HELD_OUT_HOTPOT, len(hotpot) // 4)  # 100 of the 804 records; a quarter of a small test file
    held_hotpot = hotpot[len(hotpot) - n_held:]
    eval_qa = _hotpot_eval_items(held_hotpot)
    held_ids = {str(r["id"]) for r in held_hotpot}
    held_title = HELD_OUT_ARTICLE.replace("_", " ")

    questions = [q for q in load_questions(list(paths.values()))
                 if q.id not in held_ids and not (q.paragraphs and q.paragraphs[0].title == held_title)]
    answers = {**_answers(hotpot), **_answers(qed), **_answers(squad)}
    questions = [q for q in questions if q.id in answers]
    train_qs, val_qs = split_holdout(questions, val_per_source, seed)
    qed_pool = [q for q in train_qs if q.source == "qed"]
    val_qa = _qa_items(val_qs, answers, seed=seed)
    # SQuAD questions share paragraphs: a train question over a held-out question's gold passage is left out too.
    val_gold = {t for it in val_qa for t, g in zip(it.passages, it.gold) if g}
    train_qa = [it for it in _qa_items(train_qs, answers, seed=seed, qed_pool=qed_pool)
                if not val_gold.intersection(it.passages)]

    # Paragraphs of held-out questions (every passage they show) never appear in training text.
    held = {_norm("".join(s)) for r in held_hotpot for _, s in r["context"]}
    held |= {_norm(" ".join(p.sentences)) for q in val_qs for p in five_passages(q)}

    articles = _article_pairs(squad)
    train_pairs = [pair for title, paras in sorted(articles.items()) if title != HELD_OUT_ARTICLE
                   for pair in _pairs(paras) if _norm(pair[0]) not in held and _norm(pair[1]) not in held]
    seen: set[str] = set()
    train_paragraphs: list[str] = []
    candidates = ([p for title, paras in sorted(articles.items()) if title != HELD_OUT_ARTICLE for p in paras]
                  + ["".join(s).strip() for r in hotpot[:len(hotpot) - n_held] for _, s in r["context"]]
                  + [r["context"].strip() for r in qed])
    for p in candidates:
        if p and p not in seen and _norm(p) not in held:
            seen.add(p)
            train_paragraphs.append(p)

    if dev_eval:
        dev = _article_pairs(read_jsonl(data_dir / SQUAD_DEV))
        titles = sorted(dev)
        eval_titles = [t for i, t in enumerate(titles) if i % SQUAD_EVAL_EVERY == SQUAD_EVAL_EVERY - 1]
    else:
        dev, eval_titles = {HELD_OUT_ARTICLE: articles.get(HELD_OUT_ARTICLE, [])}, [HELD_OUT_ARTICLE]
    eval_pairs, eval_pair_titles = [], []
    for title in eval_titles:
        pairs = _pairs(dev[title])
        eval_pairs.extend(pairs)
        eval_pair_titles.extend([title.replace("_", " ")] * len(pairs))
    counts = {"train_paragraphs": len(train_paragraphs), "train_pairs": len(train_pairs),
              "eval_pairs": len(eval_pairs), "eval_qa": len(eval_qa), "val_qa": len(val_qa),
              "train_qa": {s: sum(it.source == s for it in train_qa) for s in sorted({it.source for it in train_qa})}}
    return Corpus(train_paragraphs, train_pairs, eval_pairs, train_qa, eval_qa, eval_titles, eval_pair_titles,
                  val_qa, counts)


# --------------------------------------------------------------------------------------------------- batch building
Segment = tuple[str, Any]  # ("soft", Tensor (n, d)) | ("tokens", list[int]) | ("target", list[int])


def assemble_batch(weight: torch.Tensor, seqs: Sequence[Sequence[Segment]], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs_embeds (B, T, d), attention_mask (B, T), labels (B, T))`` from segment lists, the batch
    :func:`ragzip.training.lm.padded_nll` scores.

    ``soft`` segments are chunk vectors (gradients flow into them), ``tokens`` are read and not scored, ``target``
    tokens are read and scored (labels).
    """
    rows_ids, rows_soft, rows_labels = [], [], []
    softs: list[torch.Tensor] = []
    n_soft = 0
    for seq in seqs:
        ids, sidx, labels = [], [], []
        for kind, value in seq:
            if kind == "soft":
                n = int(value.shape[0])
                softs.append(value)
                ids += [pad_id] * n
                sidx += list(range(n_soft, n_soft + n))
                labels += [IGNORE] * n
                n_soft += n
            else:
                ids += list(value)
                sidx += [-1] * len(value)
                labels += list(value) if kind == "target" else [IGNORE] * len(value)
        rows_ids.append(ids)
        rows_soft.append(sidx)
        rows_labels.append(labels)
    width = max(len(r) for r in rows_ids)
    pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])  # noqa: E731
    token_ids, soft_index, labels = pad(rows_ids, pad_id), pad(rows_soft, -1), pad(rows_labels, IGNORE)
    mask = pad([[1] * len(r) for r in rows_ids], 0)
    soft = torch.cat(softs, dim=0) if softs else weight.new_zeros(0, weight.shape[1])  # (S, d)
    embeds = assemble_embeddings(weight, token_ids.to(weight.device), soft.to(weight.device),
                                 soft_index.to(weight.device))  # (B, T, d)
    return embeds, mask.to(weight.device), labels.to(weight.device)


def context_segments(chunks: Sequence[Chunk], vectors: torch.Tensor, expanded: set[int]) -> list[Segment]:
    """A compressed passage as segments: one vector per compressed chunk, raw ids for expanded ones, in order."""
    segs: list[Segment] = []
    for j, chunk in enumerate(chunks):
        if j in expanded:
            segs.append(("tokens", list(chunk.ids)))
        else:
            segs.append(("soft", vectors[j:j + 1]))
    return segs


# ------------------------------------------------------------------------------------------------------ curriculum
SCHEDULE = WarmupCosine(warmup=0.05, final=0.1, floor=0.05)  # over the share of the stage's budget spent


def curriculum(fraction: float, top: int) -> list[int]:
    """Chunk counts allowed at this point of a stage: geometric growth 1 -> 2 -> 4 -> ... -> ``top``."""
    sizes = [1]
    while sizes[-1] * 2 <= top:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != top:
        sizes.append(top)
    phases = len(sizes) + 1
    phase = min(int(fraction * phases), phases - 1)
    if phase < len(sizes):
        return sizes[max(0, phase - 1):phase + 1]
    return sizes  # last phase: the whole mix, so short inputs are not forgotten


# ------------------------------------------------------------------------------------------------------- arguments
def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass
class RefragArguments(TrainingArguments):
    """``ragzip train refrag``'s options: the common training ones and REFRAG's. Each stage has its own budget, step
    cap and learning rates, so the common ``--max-minutes``, ``--steps``, ``--lr``, ``--warmup``, ``--schedule`` and
    ``--checkpoint-every`` are not options."""

    prog: ClassVar[str] = "ragzip train refrag"
    description: ClassVar[str] = DESCRIPTION

    out: str = field(default="", metadata={
        "required": True, "help": "folder for the artifact, the stages' checkpoints, the log and the loss curves"})
    threads: int = field(default=1, metadata=_help(
        "torch CPU threads (1 on a shared machine: 2 OpenMP threads on oversubscribed cores spin-wait and ran 10-20x "
        "slower here)"))
    resume: bool = field(default=False, metadata=_help(
        "continue a killed run from its newest checkpoint in --out (the same command plus --resume); the stages it "
        "finished are not run again"))
    log_every: int = field(default=10, metadata=_help(
        "log the mean loss of the last N steps (console and train_log.jsonl) every N steps"))
    max_minutes: float = field(default=50.0, metadata={"cli": False})
    steps: int = field(default=0, metadata={"cli": False})
    lr: float = field(default=1e-3, metadata={"cli": False})
    warmup: float = field(default=SCHEDULE.warmup, metadata={"cli": False})
    schedule: Literal["cosine", "linear"] = field(default="cosine", metadata={"cli": False})
    checkpoint_every: int = field(default=0, metadata={"cli": False})

    data: str = field(default_factory=lambda: os.environ.get("RAGZIP_DATA", str(Path("..") / "shared" / "data")),
                      metadata=_help(f"folder with {HOTPOT_TRAIN}, {QED_TRAIN} and {SQUAD_TRAIN}"))
    k: int = field(default=16, metadata=_help("decoder tokens per chunk (8, 16 or 32)"))
    p: float = field(default=0.25, metadata=_help("expansion budget the policy is trained for"))
    encoder: str = field(default="embedded:minilm", metadata=_help("the chunk encoder"))
    decoder: str = field(default="embedded:smollm2-135m", metadata=_help("the decoder that reads the chunk vectors"))
    encoder_trained_layers: int = field(default=1, metadata=_help("top encoder layers to train (0-6)"))
    decoder_lora: int = field(default=8, metadata=_help(
        "rank of the LoRA trained on the decoder in stage 2; 0 keeps the decoder frozen"))
    lora_alpha: float = field(default=16.0, metadata=_help("the LoRA delta is scaled by alpha / rank"))
    lora_targets: str = field(default=",".join(DEFAULT_TARGETS), metadata=_help(
        "decoder linear maps (per layer) that get a LoRA"))
    lr_lora: float = field(default=3e-4, metadata=_help("stage 2 LoRA learning rate"))
    qa_share: float = field(default=0.5, metadata=_help(
        "share of stage-2 examples that are QA (answer NLL over compressed evidence) rather than next-paragraph "
        "prediction"))
    init: str = field(default="", metadata=_help("start from this artifact folder (e.g. a checkpoint)"))
    stages: str = field(default="1,2,3", metadata=_help("which stages to run, e.g. 3 to train only the policy"))
    positions_per_step: int = field(default=384, metadata=_help(
        "decoder positions per optimizer step (stage 2: batch x longest sequence, padding included)"))
    stage1_minutes: float = field(default=12.0, metadata=_help("stage 1 (reconstruction) time budget"))
    stage1_steps: int = field(default=100_000, metadata=_help("stage 1 step cap"))
    stage2_minutes: float = field(default=16.0, metadata=_help("stage 2 (next paragraph + QA) time budget"))
    stage2_steps: int = field(default=100_000, metadata=_help("stage 2 step cap"))
    stage3_minutes: float = field(default=12.0, metadata=_help("stage 3 (expansion policy) time budget"))
    stage3_steps: int = field(default=100_000, metadata=_help("stage 3 step cap"))
    lr1: float = field(default=1e-3, metadata=_help("stage 1 projector learning rate"))
    lr1_encoder: float = field(default=1e-4, metadata=_help("stage 1 encoder-layer learning rate"))
    lr2: float = field(default=5e-4, metadata=_help("stage 2 projector learning rate"))
    lr2_encoder: float = field(default=5e-5, metadata=_help("stage 2 encoder-layer learning rate"))
    lr3: float = field(default=3e-3, metadata=_help("stage 3 policy learning rate"))
    max_recon_chunks: int = field(default=8, metadata=_help("most chunks a stage-1 window holds"))
    max_cpt_chunks: int = field(default=16, metadata=_help("most context chunks of a next-paragraph example"))
    cpt_target_tokens: int = field(default=32, metadata=_help("tokens scored of a next-paragraph continuation"))
    cpt_expand_prob: float = field(default=0.5, metadata=_help(
        "share of stage-2 examples with a random 0-50% of their chunks expanded"))
    policy_batch: int = field(default=4, metadata=_help("questions per policy step"))
    group: int = field(default=4, metadata=_help("expansion sets sampled per question"))
    val_per_source: int = field(default=8, metadata=_help("train questions of each source held out for the QA check"))
    val_questions: int = field(default=12, metadata=_help("held-out questions each QA check reads"))
    val_every: int = field(default=25, metadata=_help(
        "QA check (and checkpoint) every N stage-2 steps (0: start/end only)"))
    checkpoint_minutes: float = field(default=5.0, metadata=_help(
        "also checkpoint this often (0: at stage ends and QA checks only)"))
    eval_examples: int = field(default=24, metadata=_help("held-out examples of the checks before and after training"))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_k("--k", self.k)
        check_p("--p", self.p)
        if not 0.0 <= self.qa_share <= 1.0:
            raise ConfigError(f"--qa-share {self.qa_share!r} must lie in [0, 1]: the share of stage-2 examples that "
                              "are QA (0: next-paragraph prediction only; 0.5: half and half).")
        if self.decoder_lora < 0:
            raise ConfigError(f"--decoder-lora {self.decoder_lora!r} must be >= 0: the LoRA rank (e.g. 8), or 0 for a "
                              "frozen decoder.")

    def stage_names(self) -> list[str]:
        """The stages ``--stages`` selects, in the order they run (``stage1``, ``stage2``, ``stage3``)."""
        chosen = {s.strip() for s in self.stages.split(",") if s.strip()}
        return [name for name in STAGES if name[-1] in chosen]


# -------------------------------------------------------------------------------------------------------- recipe
class Recipe:
    """REFRAG's training recipe over the decoder (read through the LoRA when the model has one), the REFRAG model and
    the tokenized data: the stages' example assembly and losses, the held-out checks and the counters a checkpoint
    keeps."""

    def __init__(self, args: RefragArguments, corpus: Corpus, model: RefragModel, decoder: Any, tokenizer: Any,
                 rng: random.Random | None = None) -> None:
        self.args = args
        self.corpus = corpus
        self.model = model
        self.decoder = decoder
        self.tok = tokenizer
        self.k = args.k
        self.rng = rng if rng is not None else random.Random(args.seed)
        self.sampler = torch.Generator().manual_seed(args.seed)  # stage 3's Plackett-Luce draws
        self.weight = decoder.get_input_embeddings().weight  # (V, d), frozen
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.sep_ids = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
        self.samples = {"stage1": 0, "stage2": 0, "stage2_qa": 0, "stage3": 0}
        self.steps: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.evals: dict[str, Any] = {}
        self._chunk_cache: dict[str, list[Chunk]] = {}
        self._prompt_parts: Callable[[str], tuple[list[int], list[int]]] | None = None
        self._answer_ids: dict[str, list[int]] = {}
        by_source: dict[str, list[QAItem]] = {}
        for item in corpus.train_qa:
            if item.passages and item.answer.strip():
                by_source.setdefault(item.source, []).append(item)
        self.qa_by_source = dict(sorted(by_source.items()))
        self.policy_items = [it for it in corpus.train_qa if it.passages and it.answer.strip()]

    def chunks(self, text: str) -> list[Chunk]:
        cached = self._chunk_cache.get(text)
        if cached is None:
            cached = chunk_passage(text, self.tok, self.k)
            if len(self._chunk_cache) < 200_000:
                self._chunk_cache[text] = cached
        return cached

    def nll(self, seqs: Sequence[Sequence[Segment]]) -> SequenceNLL:
        """The decoder's token NLL of the ``target`` segments of ``seqs``, one batched pass (:func:`assemble_batch`
        builds the inputs, :func:`ragzip.training.lm.padded_nll` scores them)."""
        embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
        return padded_nll(self.decoder, embeds, mask, labels)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.decoder_lora.parameters()) if self.model.decoder_lora is not None else []

    def param_groups(self, lr_proj: float, lr_enc: float, lr_lora: float | None = None) -> list[dict[str, Any]]:
        """AdamW groups: the projector, the trained encoder layers and (with ``lr_lora``) the LoRA, undecayed."""
        groups: list[dict[str, Any]] = [{"params": list(self.model.projector.parameters()), "lr": lr_proj}]
        enc = [p for layer in self.model.trained_layers() for p in layer.parameters()]
        if enc:
            groups.append({"params": enc, "lr": lr_enc})
        if lr_lora is not None and self.lora_parameters():
            groups.append({"params": self.lora_parameters(), "lr": lr_lora, "weight_decay": 0.0})
        return groups

    def lora_trainable(self, flag: bool) -> None:
        """The LoRA trains in stage 2 only: stage 1 writes into the decoder as it is, stage 3 rewards a fixed reader."""
        if self.model.decoder_lora is not None:
            self.model.decoder_lora.requires_grad_(flag)

    # ------------------------------------------------------------------------------------------ stage 1
    def recon_example(self, sizes: list[int]) -> tuple[list[Chunk], int]:
        while True:
            text = self.rng.choice(self.corpus.train_paragraphs)
            chunks = self.chunks(text)
            if chunks:
                break
        n = self.rng.choice(sizes)
        start = self.rng.randrange(max(len(chunks) - n, 0) + 1)
        window = chunks[start:start + n]
        return window, sum(len(c) for c in window)

    def recon_batch(self, progress: Callable[[], float]) -> list[list[Chunk]]:
        """Windows of L chunks (L from the curriculum) until the step holds ``--positions-per-step`` positions."""
        sizes = curriculum(progress(), self.args.max_recon_chunks)
        windows: list[list[Chunk]] = []
        positions = 0
        while positions < self.args.positions_per_step or not windows:
            window, n_tokens = self.recon_example(sizes)
            windows.append(window)
            positions += n_tokens + len(window)
        return windows

    def recon_loss(self, windows: list[list[Chunk]]) -> tuple[torch.Tensor, dict[str, float]]:
        """The decoder reads each window's projected chunk vectors and reproduces its tokens: their mean NLL."""
        vectors = self.model.project(self.model.encode([c.text for w in windows for c in w]))  # (sum L, d)
        seqs, offset = [], 0
        for w in windows:
            seqs.append([("soft", vectors[offset:offset + len(w)]), ("target", [i for c in w for i in c.ids])])
            offset += len(w)
        loss = self.nll(seqs).mean
        self.samples["stage1"] += len(windows)
        return loss, {"max_chunks": float(max(len(w) for w in windows)), "batch": float(len(windows))}

    # ------------------------------------------------------------------------------------------ stage 2
    def cpt_sequence(self, context: str, continuation: str, sep: str, n_chunks: int | None, vectors: torch.Tensor,
                     expanded: set[int], max_target: int) -> list[Segment]:
        """[compressed context (last n_chunks chunks)] + separator + continuation (scored)."""
        chunks = self.chunks(context)
        if n_chunks is not None:
            chunks = chunks[-n_chunks:]
        target = list(self.tok(continuation, add_special_tokens=False)["input_ids"])[:max_target]
        sep_ids = list(self.tok(sep, add_special_tokens=False)["input_ids"]) if sep else []
        return [*context_segments(chunks, vectors, expanded), ("tokens", sep_ids), ("target", target)]

    def cpt_example(self, sizes: list[int]) -> tuple[str, str, str, int]:
        """A (context, continuation, separator) pair: a SQuAD next paragraph, or a train paragraph's tail."""
        if self.rng.random() < 0.6 and self.corpus.train_pairs:
            context, continuation, sep = self.rng.choice(self.corpus.train_pairs)
        else:
            while True:
                text = self.rng.choice(self.corpus.train_paragraphs)
                chunks = self.chunks(text)
                if len(chunks) >= 3:
                    break
            cut = self.rng.randrange(1, len(chunks) - 1)
            context, continuation, sep = text[:chunks[cut].char_start], text[chunks[cut].char_start:], ""
        return context, continuation, sep, self.rng.choice(sizes)

    def _random_expansion(self, n: int) -> set[int]:
        """Half the time nothing, else a random 0-50% of ``n`` chunks (what the policy's budget p does)."""
        if self.rng.random() < self.args.cpt_expand_prob and n > 1:
            return set(self.rng.sample(range(n), int(self.rng.random() * 0.5 * n)))
        return set()

    def qa_example(self, fraction: float) -> tuple[QAItem, list[list[Chunk]], set[int]]:
        """A train question (source drawn uniformly, then the question): its gold passages plus a number of its
        distractors that grows with the stage (0 at the start, all by the end), chunked, and a random expansion."""
        items = self.rng.choice(list(self.qa_by_source.values()))
        item = self.rng.choice(items)
        gold = item.gold or (True,) * len(item.passages)
        n_distractors = sum(not g for g in gold)
        keep = self.rng.randint(0, math.ceil(fraction * n_distractors))
        passages, seen = [], 0
        for text, g in zip(item.passages, gold):
            if not g:
                seen += 1
                if seen > keep:
                    continue
            passages.append(text)
        view = QAItem(item.question, item.answer, tuple(passages), item.source)
        chunked = [self.chunks(p) for p in view.passages]
        return view, chunked, self._random_expansion(sum(len(c) for c in chunked))

    def answer_ids(self, answer: str) -> list[int]:
        ids = self._answer_ids.get(answer)
        if ids is None:
            ids = self._answer_ids[answer] = list(self.tok(answer, add_special_tokens=False)["input_ids"])
        return ids

    def cpt_batch(self, progress: Callable[[], float]) -> list[tuple[str, Any, list[Chunk], set[int]]]:
        """QA examples (share ``--qa-share``) and next-paragraph examples until batch x longest sequence reaches
        ``--positions-per-step``: ``(kind, data, chunks read, expanded chunk indices)``."""
        args = self.args
        sizes = curriculum(progress(), args.max_cpt_chunks)
        examples: list[tuple[str, Any, list[Chunk], set[int]]] = []
        longest = 0  # the batch is padded to its longest sequence: batch x longest is what the decoder runs
        while len(examples) * longest < args.positions_per_step or not examples:
            if self.qa_by_source and self.rng.random() < args.qa_share:
                item, chunked, expanded = self.qa_example(progress())
                flat = [c for chunks in chunked for c in chunks]
                before, after = self.prompt_parts(item.question)
                examples.append(("qa", (item, chunked), flat, expanded))
                length = (len(before) + len(after) + len(self.answer_ids(item.answer))
                          + len(self.sep_ids) * (len(chunked) - 1))
            else:
                context, continuation, sep, n = self.cpt_example(sizes)
                flat = self.chunks(context)[-n:]
                expanded = self._random_expansion(len(flat))
                examples.append(("cpt", (context, continuation, sep, n), flat, expanded))
                length = args.cpt_target_tokens + 2
            longest = max(longest, length + len(flat) + sum(len(flat[j]) - 1 for j in expanded))
        return examples

    def cpt_loss(self, examples: list[tuple[str, Any, list[Chunk], set[int]]]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over the examples of each one's target NLL (the answer, or the continuation)."""
        vectors = self.model.project(self.model.encode([c.text for *_, flat, _ in examples for c in flat]))
        seqs, offset = [], 0
        for kind, data, flat, expanded in examples:
            e = vectors[offset:offset + len(flat)]  # (len(flat), d)
            if kind == "qa":
                item, chunked = data
                seqs.append(self.qa_sequence(item, {"chunked": chunked, "e": e}, expanded))
            else:
                context, continuation, sep, n = data
                seqs.append(self.cpt_sequence(context, continuation, sep, n, e, expanded,
                                              self.args.cpt_target_tokens))
            offset += len(flat)
        per_seq = self.nll(seqs).per_sequence  # (B,)
        loss = per_seq.mean()  # every example weighs the same, however long its target
        is_qa = torch.tensor([kind == "qa" for kind, *_ in examples], device=per_seq.device)
        n_qa = int(is_qa.sum())
        self.samples["stage2"] += len(examples)
        self.samples["stage2_qa"] += n_qa
        values = {"max_chunks": float(max(len(e[2]) for e in examples)), "batch": float(len(examples)),
                  "qa": float(n_qa)}
        if n_qa:
            values["qa_loss"] = float(per_seq[is_qa].mean().detach())
        if n_qa < len(examples):
            values["cpt_loss"] = float(per_seq[~is_qa].mean().detach())
        return loss, values

    # ------------------------------------------------------------------------------------------ stage 3
    def prompt_parts(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids of the generator's prompt before and after the context (system prompt, template, question)."""
        if self._prompt_parts is None:
            gen = HFGenerator(GeneratorConfig(model=self.args.decoder), model=self.decoder, tokenizer=self.tok)

            def parts(q: str) -> tuple[list[int], list[int]]:
                prompt = gen.format_prompt(q, SENTINEL)
                before, after = prompt.split(SENTINEL)
                prefix, suffix = gen.special_affixes() if gen.adds_special_tokens(prompt) else ([], [])
                return (list(prefix) + list(self.tok(before, add_special_tokens=False)["input_ids"]),
                        list(self.tok(after, add_special_tokens=False)["input_ids"]) + list(suffix))

            self._prompt_parts = parts
        return self._prompt_parts(question)

    def qa_inputs(self, item: QAItem) -> dict[str, Any]:
        """Chunks, encoder vectors, projected vectors and policy features of one QA item (no gradients)."""
        chunked = [self.chunks(p) for p in item.passages]
        flat = [c for chunks in chunked for c in chunks]
        with torch.no_grad():
            c = self.model.encode([ch.text for ch in flat])  # (L, H)
            q = self.model.encode([item.question])[0]  # (H,)
            e = self.model.project(c)  # (L, d)
        positions, index = [], 0
        for rank, chunks in enumerate(chunked):
            for ch in chunks:
                positions.append((index, len(flat), rank, len(ch)))
                index += 1
        return {"chunked": chunked, "c": c, "q": q, "e": e, "scalars": policy_scalars(positions, self.k)}

    def qa_sequence(self, item: QAItem, inputs: dict[str, Any], expanded: set[int] | None) -> list[Segment]:
        """The generator's prompt with the REFRAG context (``expanded=None``: the full raw context) + the answer."""
        before, after = self.prompt_parts(item.question)
        segs: list[Segment] = [("tokens", before)]
        offset = 0
        for rank, chunks in enumerate(inputs["chunked"]):
            if rank:
                segs.append(("tokens", self.sep_ids))
            if expanded is None:
                segs.append(("tokens", [i for ch in chunks for i in ch.ids]))
            else:
                local = {j - offset for j in expanded if offset <= j < offset + len(chunks)}
                segs.extend(context_segments(chunks, inputs["e"][offset:offset + len(chunks)], local))
            offset += len(chunks)
        return [*segs, ("tokens", after), ("target", self.answer_ids(item.answer))]

    def answer_nll(self, item: QAItem, inputs: dict[str, Any], selections: Sequence[set[int] | None]) -> torch.Tensor:
        """Mean answer-token NLL for each expansion set (``None`` = full context), one batched decoder pass."""
        with torch.no_grad():
            seqs = [self.qa_sequence(item, inputs, s) for s in selections]
            per_seq = self.nll(seqs).per_sequence
        return per_seq.cpu()  # (G,)

    def policy_batch(self, progress: Callable[[], float]) -> list[QAItem]:
        """``--policy-batch`` train questions drawn; those whose budget round(p * L) expands none or all of their L
        chunks are left out (nothing to choose)."""
        items = []
        for _ in range(self.args.policy_batch):
            item = self.rng.choice(self.policy_items)
            n = sum(len(self.chunks(p)) for p in item.passages)
            if 0 < budget(self.args.p, n) < n:
                items.append(item)
        return items

    def policy_loss(self, items: list[QAItem]) -> tuple[torch.Tensor, dict[str, float]]:
        """REINFORCE with a group baseline: ``--group`` expansion sets sampled per question, reward = -(mean answer
        NLL) through the reader, advantages normalised within the group."""
        losses, rewards, gaps = [], [], []
        for item in items:
            inputs = self.qa_inputs(item)
            m = budget(self.args.p, len(inputs["c"]))
            logits = self.model.policy_logits(inputs["c"], inputs["q"], inputs["scalars"])  # (L,)
            samples = [plackett_luce_sample(logits, m, self.sampler) for _ in range(self.args.group)]
            reward = -self.answer_nll(item, inputs, [set(idx.tolist()) for idx, _ in samples])  # (G,)
            adv = ((reward - reward.mean()) / (reward.std() + 1e-4)).to(logits.device)  # group baseline (GRPO)
            log_probs = torch.stack([lp for _, lp in samples])  # (G,)
            losses.append(-(adv * log_probs).mean())
            rewards.append(float(reward.mean()))
            gaps.append(float(reward.max() - reward.min()))
            self.samples["stage3"] += 1
        return torch.stack(losses).mean(), {"reward": sum(rewards) / len(rewards),
                                            "reward_spread": sum(gaps) / len(gaps)}

    # ------------------------------------------------------------------------------------------ evaluation
    def val_items(self) -> list[QAItem]:
        """Up to ``--val-questions`` held-out questions, taken from the sources in turn."""
        by_source: dict[str, list[QAItem]] = {}
        for item in self.corpus.val_qa:
            by_source.setdefault(item.source, []).append(item)
        queues = [list(v) for _, v in sorted(by_source.items())]
        out: list[QAItem] = []
        while len(out) < self.args.val_questions and any(queues):
            for queue in queues:
                if queue and len(out) < self.args.val_questions:
                    out.append(queue.pop(0))
        return out

    def validate(self, *, reference: bool = False, learned: bool = False) -> dict[str, Any]:
        """Held-out answer NLL (nats per answer token): every chunk compressed (``p0``), a fixed random 25% of the
        chunks expanded (``p0.25_random``) and no context (``none``, cheap); ``reference`` adds the full text (the
        costliest pass: it runs at the end of stage 2 only), ``learned`` the policy's 25%. With the samples seen so
        far, for the curves of the model card."""
        items = self.val_items()
        if not items:
            return {}
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, list[float]] = {}
        by_source: dict[str, list[float]] = {}
        for index, item in enumerate(items):
            inputs = self.qa_inputs(item)
            n = len(inputs["c"])
            m = budget(VAL_P, n)
            rng = random.Random(f"{self.args.seed}:val:{index}")
            selections: dict[str, set[int] | None] = {"p0": set(), f"p{VAL_P}_random": set(rng.sample(range(n), m))}
            if learned:
                with torch.no_grad():
                    logits = self.model.policy_logits(inputs["c"], inputs["q"], inputs["scalars"])
                selections[f"p{VAL_P}_learned"] = set(torch.argsort(logits, descending=True)[:m].tolist())
            values = dict(zip(selections, self.answer_nll(item, inputs, list(selections.values())).tolist()))
            values["none"] = float(self.answer_nll(item, {"chunked": [], "e": inputs["e"][:0]}, [set()])[0])
            if reference:  # alone: batched with the others, the full text would pad them all to its length
                values["full"] = float(self.answer_nll(item, inputs, [None])[0])
            for name, value in values.items():
                sums.setdefault(name, []).append(value)
            by_source.setdefault(item.source, []).append(values["p0"])
        row: dict[str, Any] = {"stage2_samples": self.samples["stage2"], "stage2_qa_samples": self.samples["stage2_qa"],
                               "questions": len(items), **{n: round(sum(v) / len(v), 4) for n, v in sums.items()},
                               "p0_by_source": {s: round(sum(v) / len(v), 4) for s, v in sorted(by_source.items())},
                               "seconds": round(time.perf_counter() - start, 1)}
        logger.info("held-out answer NLL %s", json.dumps(row))
        if was_training:
            self.model.train()
        return row

    def eval_recon(self, n: int = 24, chunks: int = 4) -> float:
        rng = random.Random(1234)
        texts = [p for title_pairs in [self.corpus.eval_pairs] for p, _, _ in title_pairs][: n * 3]
        windows = []
        for text in texts:
            ch = self.chunks(text)
            if len(ch) >= chunks:
                start = rng.randrange(len(ch) - chunks + 1)
                windows.append(ch[start:start + chunks])
            if len(windows) >= n:
                break
        if not windows:
            return float("nan")
        with torch.no_grad():
            vectors = self.model.project(self.model.encode([c.text for w in windows for c in w]))
            seqs, offset = [], 0
            for w in windows:
                seqs.append([("soft", vectors[offset:offset + len(w)]), ("target", [i for c in w for i in c.ids])])
                offset += len(w)
            loss = self.nll(seqs).mean
        return float(loss)

    def eval_cpt(self, n: int = 24, max_chunks: int = 16) -> dict[str, float]:
        """Held-out next-paragraph NLL: REFRAG p=0 against the full raw context and against no context."""
        pairs = self.corpus.eval_pairs[:n]
        out: dict[str, float] = {}
        if not pairs:
            return out
        with torch.no_grad():
            texts = [c.text for ctx, _, _ in pairs for c in self.chunks(ctx)[-max_chunks:]]
            vectors = self.model.project(self.model.encode(texts))
            for name in ("refrag_p0", "full", "none"):
                seqs, offset = [], 0
                for ctx, cont, sep in pairs:
                    chunks = self.chunks(ctx)[-max_chunks:]
                    if name == "refrag_p0":
                        seqs.append(self.cpt_sequence(ctx, cont, sep, max_chunks,
                                                      vectors[offset:offset + len(chunks)], set(), 64))
                    elif name == "full":
                        seqs.append(self.cpt_sequence(ctx, cont, sep, max_chunks, vectors[:0], set(range(len(chunks))),
                                                      64))
                    else:
                        target = list(self.tok(cont, add_special_tokens=False)["input_ids"])[:64]
                        seqs.append([("tokens", list(self.tok(sep, add_special_tokens=False)["input_ids"]) or
                                      [self.pad_id]), ("target", target)])
                    offset += len(chunks)
                out[name] = float(self.nll(seqs).mean)
        return out

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self, folder: Path) -> None:
        """A checkpoint: the model as an artifact (loadable as it is) and the counters and stage-3 sampler state a
        ``--resume`` restores (:meth:`restore`)."""
        self.model.save_pretrained(folder)
        state = {"samples": self.samples, "steps": self.steps, "timings": self.timings, "evals": self.evals,
                 "sampler": self.sampler.get_state().tolist()}
        (folder / RECIPE_STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")

    def restore(self, folder: Path) -> None:
        state = json.loads((folder / RECIPE_STATE).read_text(encoding="utf-8"))
        self.samples.update(state["samples"])
        self.steps.update(state["steps"])
        self.timings.update(state["timings"])
        self.evals.update(state["evals"])
        self.sampler.set_state(torch.tensor(state["sampler"], dtype=torch.uint8))


# --------------------------------------------------------------------------------------------------------- stages
def run_stage(recipe: Recipe, name: str, log: TrainLog, *, resume: bool) -> TrainState:
    """One stage on :class:`ragzip.training.Trainer`, with its own optimizer, step cap and time budget (held-out
    checks and checkpoints do not count against it); ``resume`` continues it from its newest checkpoint."""
    args, model = recipe.args, recipe.model
    trained: Any = model
    if name == "stage1":
        groups, decay = recipe.param_groups(args.lr1, args.lr1_encoder), 0.01
        build, loss = recipe.recon_batch, recipe.recon_loss
    elif name == "stage2":
        groups, decay = recipe.param_groups(args.lr2, args.lr2_encoder, args.lr_lora), 0.01
        build, loss = recipe.cpt_batch, recipe.cpt_loss
    else:
        groups, decay = [{"params": list(model.policy.parameters()), "lr": args.lr3}], 0.0
        build, loss, trained = recipe.policy_batch, recipe.policy_loss, model.policy

    def evaluate(step: int) -> dict[str, Any]:
        finished = trainer.state.finished
        if name == "stage2" and (finished or (args.val_every and step % args.val_every == 0)):
            return recipe.validate(reference=finished)
        return recipe.validate(learned=True) if name == "stage3" and finished else {}

    def save(folder: Path, metrics: dict[str, Any]) -> None:
        recipe.steps[name] = trainer.state.step
        recipe.save(folder)

    n = name[-1]
    trainer = Trainer(args, trained, groups, total_steps=getattr(args, f"stage{n}_steps"), log=log,
                      weight_decay=decay, schedule=SCHEDULE, budget=Budget(getattr(args, f"stage{n}_minutes") * 60),
                      checkpoint_every=args.val_every if name == "stage2" else 0,
                      checkpoint_minutes=args.checkpoint_minutes, checkpoint_at_end=True, evaluate=evaluate, save=save,
                      rng=recipe.rng, stage=name, resume=resume, budget_excludes_checkpoints=True,
                      plot_title="REFRAG", log_to=logger)
    recipe.lora_trainable(name == "stage2")
    if name == "stage3":
        model.eval()  # the policy alone trains
    else:
        model.train()
    if name == "stage2" and not resume:
        row = recipe.validate()
        if row:
            log.record(stage=name, step=0, **row)

    def progress() -> float:
        return min(trainer.budget.progress(trainer.state.step, trainer.total_steps), 1.0)

    def batches(epoch: int) -> Iterator[Any]:
        while True:
            batch = build(progress)
            if batch:
                yield batch

    state = trainer.fit(batches, loss)
    recipe.steps[name] = state.step
    return state


# ------------------------------------------------------------------------------------------------------------ CLI
def _describe_lora(model: RefragModel) -> dict[str, Any]:
    lora = model.decoder_lora
    if lora is None:
        return {"rank": 0}
    return {"rank": lora.rank, "alpha": lora.alpha, "targets": list(lora.targets), "layers": len(lora.layers),
            "parameters": lora.n_parameters()}


def _build_model(args: RefragArguments, base_decoder: Any) -> RefragModel:
    """A fresh REFRAG model (or ``--init``'s) with the decoder LoRA ``--decoder-lora`` asks for."""
    if args.init:
        model = RefragModel.from_pretrained(args.init)
        model.config.k = args.k
    else:
        encoder, encoder_tokenizer = _load_base_encoder(args.encoder)
        config = RefragModelConfig(encoder=args.encoder, decoder=args.decoder, k=args.k,
                                   encoder_hidden=int(encoder.config.hidden_size),
                                   decoder_hidden=int(base_decoder.get_input_embeddings().embedding_dim),
                                   encoder_trained_layers=args.encoder_trained_layers)
        model = RefragModel(config, encoder=encoder, encoder_tokenizer=encoder_tokenizer)
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    if model.decoder_lora is None and args.decoder_lora:
        model.add_decoder_lora(base_decoder, rank=args.decoder_lora, alpha=args.lora_alpha, targets=targets)
    elif model.decoder_lora is not None and model.decoder_lora.rank != args.decoder_lora:
        raise ConfigError(f"--init {args.init!r} has a rank-{model.decoder_lora.rank} decoder LoRA but "
                          f"--decoder-lora is {args.decoder_lora}; pass --decoder-lora {model.decoder_lora.rank} "
                          "to keep training it.")
    return model


ANSWER_NLL = ("p0", f"p{VAL_P}_random", f"p{VAL_P}_learned", "none", "full")  # the held-out check's variants
DATA_LINE = ("train files only: SQuAD train paragraphs (13 of its 14 articles; Genocide held out) for next-paragraph "
             "pairs; HotpotQA train (all but the last 100 records), QED-NQ train and SQuAD train questions for QA and "
             "the policy, {per_source} per source held out (ragzip.data.split_holdout); paragraphs of all three for "
             "continuation and reconstruction")


def write_model_card(out: Path, model: RefragModel) -> Path:
    """``MODEL_CARD.md`` beside the artifact, from the training record in ``model.config.training``."""
    cfg, training = model.config, model.config.training
    steps, samples, ev = training["steps"], training["samples_seen"], training["eval"]
    lora = training["decoder_lora"]
    last_val = training["val"][-1] if training["val"] else {}
    return ModelCard.from_training(
        training,
        title=f"REFRAG artifact ({cfg.encoder} -> {cfg.decoder}, k = {cfg.k})",
        summary="Trained by `ragzip train refrag`, ragzip's re-implementation of REFRAG (Lin et al., "
                "arXiv 2509.01092); compare its numbers only with other runs of this trainer.",
        what=[f"- `model.safetensors`: only what was trained: the encoder's top {cfg.encoder_trained_layers} "
              "layer(s), the projector, the expansion policy"
              + (f" and a rank-{lora['rank']} decoder LoRA on {', '.join(lora['targets'])}" if lora["rank"] else "")
              + "; `config.json` names the base encoder and decoder and holds the training record.",
              "- Beside it: `train_log.jsonl` and `loss.png` (the three stages' losses, the held-out answer NLL), "
              "`training_summary.json` (the training record), the stages' last checkpoints (`stage1/` ...)."],
        data=[f"- Data: {training['data']}.", f"- Counts: {json.dumps(training['data_counts'])}."],
        recipe=[f"- {name}: {steps.get(name, 0)} steps, {samples.get(name, 0)} examples"
                + (f" ({samples['stage2_qa']} QA)" if name == "stage2" else "")
                + (f", {training['timings'][name + '_s']} s" if name + "_s" in training["timings"] else "") + "."
                for name in STAGES if name in steps],
        results=[f"- Held-out reconstruction NLL: {ev['before']['recon']:.4f} before training, "
                 f"{ev['after']['recon']:.4f} after.",
                 "- Held-out next-paragraph NLL after training: "
                 + ", ".join(f"{name} {ev['after'][name]:.4f}" for name in ("refrag_p0", "full", "none")
                             if name in ev["after"]) + ".",
                 *([f"- Held-out answer NLL ({last_val['questions']} questions, {last_val['stage']} step "
                    f"{last_val['step']}): " + ", ".join(f"{k} {last_val[k]}" for k in last_val if k in ANSWER_NLL)
                    + "."] if last_val else [])],
        steps=", ".join(f"{name} {n}" for name, n in steps.items()),
        samples_seen=sum(v for k, v in samples.items() if k in STAGES),
    ).write(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip train refrag``; returns the exit status."""
    args = RefragArguments.parse(argv)
    configure_logging()
    logger.setLevel(logging.INFO)
    rng = prepare(args)
    out = Path(args.out)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        return _train(args, rng, out)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _train(args: RefragArguments, rng: random.Random, out: Path) -> int:
    t0 = time.perf_counter()
    device = resolve_device(args.device)
    base_decoder, tokenizer = load_causal_lm(args.decoder, device)
    corpus = load_corpus(args.data, val_per_source=args.val_per_source, seed=args.seed)
    logger.info("data (train files only): %s", json.dumps(corpus.counts))
    stages = args.stage_names()
    point = resume_point(args, stages)
    log = open_log(args, stages=stages)
    if point is not None:
        model = RefragModel.from_pretrained(point[1])
    else:
        if args.resume:
            logger.warning("--resume: no checkpoint in %s yet; starting from the beginning", out)
        model = _build_model(args, base_decoder)
    model.to(device)
    model.freeze_base()
    model.record_decoder(base_decoder, tokenizer)  # its fingerprints go into config.json, checked when bound
    decoder = model.reader(base_decoder, merge=False, where="--init")  # the base itself when there is no LoRA
    recipe = Recipe(args, corpus, model, decoder, tokenizer, rng)
    done: list[str] = []
    if point is not None:
        recipe.restore(point[1])
        current = point[1].parent.name
        done = stages[:stages.index(current)] + ([current] if saved_state(point[1]).finished else [])
        if current in done:
            restore_random(point[1], rng)  # the next stage draws what it drew in the uninterrupted run
        logger.info("resuming from %s (done: %s)", point[1], done)
    if "before" not in recipe.evals:
        recipe.evals["before"] = {"recon": recipe.eval_recon(args.eval_examples)}
        logger.info("eval before training: %s", recipe.evals["before"])
    for name in stages:
        if name in done:
            continue
        start = time.perf_counter()
        run_stage(recipe, name, log, resume=point is not None and point[1].parent.name == name)
        recipe.timings[f"{name}_s"] = round(recipe.timings.get(f"{name}_s", 0.0) + time.perf_counter() - start, 1)
        logger.info("%s done in %.1f s", name, recipe.timings[f"{name}_s"])
    recipe.evals["after"] = {"recon": recipe.eval_recon(args.eval_examples), **recipe.eval_cpt(args.eval_examples)}
    logger.info("eval after training: %s", recipe.evals["after"])
    stage_rows = [row for row in log.rows if "loss" in row]
    model.config.training = {
        "command": args.command, "seed": args.seed, "device": str(device), "threads": args.threads,
        "steps": dict(recipe.steps), "timings": recipe.timings, "samples_seen": recipe.samples,
        "wall_s": round(time.perf_counter() - t0, 1), "resumed": point is not None,
        "decoder_lora": _describe_lora(model), "qa_share": args.qa_share,
        "data": DATA_LINE.format(per_source=args.val_per_source), "data_counts": corpus.counts,
        "eval": recipe.evals, "val": [row for row in log.rows if "p0" in row],
        "final_losses": {row["stage"]: row for row in stage_rows},
    }
    model.save_pretrained(out)
    (out / "training_summary.json").write_text(json.dumps(model.config.training, indent=2) + "\n", encoding="utf-8")
    plot_losses(log, out / "loss.png", ylabel="loss (stage 3: policy gradient)", metric="p0",
                series=("cpt_loss", "qa_loss", "reward"), stage_titles=STAGE_TITLES)
    write_model_card(out, model)
    logger.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
