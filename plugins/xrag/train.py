"""Train (``ragzip train xrag``) and evaluate (``ragzip evaluate xrag``, or ``ragzip train xrag eval``) the xRAG
projector on CPU.

Only the projector trains; the embedder (MiniLM) and the generator (SmolLM2-135M) stay frozen. Three stages:

0. **Warm start** (ours, no LLM passes): regress the projector onto the IDF-weighted mean of the generator's input
   embeddings of the passage's tokens, rescaled to the mean token norm. Seconds of CPU; gives stages 1-2 a start in
   the "topic of the passage" region instead of random vectors.
1. **Paraphrase pretraining** (xRAG stage 1): from one soft token, reconstruct the passage (its first
   ``--recon-tokens`` tokens) under several instruction templates; NLL through the frozen LLM.
2. **Context-aware instruction tuning** (xRAG stage 2): QA with 1 to 3 passages per question (one soft token each, in
   exactly the prompt the generator builds at inference), NLL on the answer plus ``--kl-weight`` x KL to the same frozen
   LLM reading the evidence as text (self-distillation). By default the teacher reads the evidence sentences (SQuAD: the
   sentence holding the answer; HotpotQA: the supporting facts) rather than whole passages: 5x cheaper on CPU and a
   cleaner target (``--teacher-context passage`` reads the passages).

Data (``--data``, default the three *train* files in ``--data-dir``): HotpotQA train (2 gold paragraphs + 0-1
distractor, the supporting facts as evidence), QED-NQ train (the passage + 0-2 other questions' passages, the answer
sentences as evidence), SQuAD train (the paragraph + 0-2 other paragraphs of its article, the answer sentence as
evidence; unanswerable questions skipped), an equal share each; ``--val-examples`` questions per source are held out
for the validation curve (held-out answer NLL and KL against training samples seen, beside the frozen LLM reading
nothing, the evidence or the passages as text). Dev files are never trained on.

The loop, schedule (warm-up then cosine to 10%), time budgets, checkpoints (``--out/stage1/``, ``--out/stage2/``),
the log (``train_log.jsonl``, one row per logged step or evaluation, each with its ``stage``), ``loss.png`` and
``MODEL_CARD.md`` are :mod:`ragzip.training`'s; a stopped run continues from its newest checkpoint with ``--resume``.
The frozen LLM's loss is :func:`ragzip.training.lm.sequence_nll`, which reads each prompt through the generator's own
splice and runs the prompt prefix a batch shares (system prompt, chat markers) once: gradients only flow from the
first soft token on, so this changes no number and saves 10-25% of a step (batch 8, one thread).

Example:
    ragzip train xrag --out runs/xrag --stage1-steps 400 --stage2-steps 700 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ragzip.compressor import build_compressor
from ragzip.data import passage_text, read_jsonl
from ragzip.embed import Embedder
from ragzip.errors import InputError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.metrics import f1_score, score
from ragzip.plugins.xrag.config import ProjectorConfig, check_context_template
from ragzip.plugins.xrag.modeling import XRAGProjector, load_encoder
from ragzip.training import (
    Budget,
    ModelCard,
    Trainer,
    TrainingArguments,
    TrainState,
    WarmupCosine,
    checkpoints,
    configure_logging,
    open_log,
    plot_losses,
    prepare,
    restore_random,
    resume_point,
    saved_state,
)
from ragzip.training.lm import PrefixCache, SequenceNLL, Target, sequence_nll
from ragzip.types import Passage

logger = logging.getLogger("ragzip.xrag.train")

PARAPHRASE_TEMPLATES = (
    "Background: {soft} means the same as",
    "Background: {soft}\nCan you put the above background in other words?",
    "{soft}\nPlease provide a reinterpretation of the preceding background text.",
    "These two expressions are equivalent in essence:\n(1) {soft}\n(2)",
    "Background: {soft}\nWhat does the background text say? Write it out.",
    "Write out the text that this token stands for: {soft}",
)
DEFAULT_TRAIN_FILES = ("hotpotqa_train.jsonl", "qed_nq_train.jsonl.gz", "squad_train_partial.jsonl.gz")
STAGES = ("stage1", "stage2")  # the stages that checkpoint, in order (stage 0 takes seconds and reruns)
_SOFT = "<<xrag-train-soft>>"  # where a soft token goes in a training prompt
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# -------------------------------------------------------------------------------------------------------- arguments
def _default_data_dir() -> str:
    return os.environ.get("RAGZIP_DATA", str(Path.cwd().parent / "shared" / "data"))


def _cli_off(default: Any) -> Any:
    """A common option xRAG sets per stage instead (``--stage1-lr``, ...): not on its command line."""
    return field(default=default, metadata={"cli": False})


@dataclass
class XRAGArguments(TrainingArguments):
    """``ragzip train xrag``: the common options, then the data, the models and each stage's steps, time and rate."""

    prog: ClassVar[str] = "ragzip train xrag"
    description: ClassVar[str] = ("Train the xRAG projector (stage 0 warm start, stage 1 paraphrase, stage 2 QA + "
                                  "self-distillation) on CPU; `ragzip evaluate xrag --artifact DIR` measures it.")

    out: str = field(default="", metadata={
        "required": True, "help": "Folder for the projector, the log, the loss curve, the card and the checkpoints."})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads; 1 on a shared, oversubscribed machine (2 threads measured 20x slower there: "
                "OpenMP barriers wait on descheduled threads)."})
    warmup: float = field(default=0.05, metadata={
        "help": "Share of each stage with linear learning-rate warm-up (from 1% of the stage on), then cosine decay "
                "to 10% of the stage's rate."})
    log_every: int = field(default=5, metadata={"help": "Log the loss (console and train_log.jsonl) every N steps."})
    checkpoint_every: int = field(default=25, metadata={
        "help": "Save a checkpoint every N steps of stages 1 and 2 (and at each stage's end); 0: only at the end."})
    steps: int = _cli_off(0)
    lr: float = _cli_off(1e-3)
    max_minutes: float = _cli_off(60.0)
    schedule: Literal["cosine", "linear"] = _cli_off("cosine")

    data: list[str] | None = field(default=None, metadata={
        "help": "Train files (HotpotQA, QED-NQ, SQuAD JSONL, .gz ok); default: hotpotqa_train.jsonl, "
                "qed_nq_train.jsonl.gz and squad_train_partial.jsonl.gz in --data-dir."})
    data_dir: str = field(default_factory=_default_data_dir, metadata={
        "help": "Where the default train files are ($RAGZIP_DATA or ../shared/data)."})
    val_examples: int = field(default=24, metadata={
        "help": "Questions per source held out of training for the validation curve."})
    eval_every: int = field(default=50, metadata={"help": "Stage-2 steps between validation points."})
    embedder: str = field(default="embedded:minilm", metadata={"help": "The frozen passage embedder."})
    generator: str = field(default="embedded:smollm2-135m", metadata={"help": "The frozen generator that reads."})
    context_template: str = field(default="{soft}", metadata={"help": "Per-passage text around the soft token."})
    batch_size: int = field(default=8, metadata={"help": "Examples per step (stages 1 and 2)."})
    stage0_steps: int = field(default=1500, metadata={"help": "Stage-0 steps (64 passages each)."})
    stage0_lr: float = field(default=2e-3, metadata={"help": "Stage-0 peak learning rate."})
    stage1_steps: int = field(default=60, metadata={"help": "Stage-1 steps."})
    stage1_minutes: float = field(default=15.0, metadata={"help": "Wall-clock cap of stage 1."})
    stage1_lr: float = field(default=1e-3, metadata={"help": "Stage-1 peak learning rate."})
    recon_tokens: int = field(default=32, metadata={"help": "Passage tokens reconstructed in stage 1."})
    stage2_steps: int = field(default=120, metadata={"help": "Stage-2 steps."})
    stage2_minutes: float = field(default=25.0, metadata={"help": "Wall-clock cap of stage 2."})
    stage2_lr: float = field(default=5e-4, metadata={"help": "Stage-2 peak learning rate."})
    kl_weight: float = field(default=2.0, metadata={"help": "Self-distillation weight (xRAG: 2.0)."})
    teacher_context: Literal["evidence", "passage"] = field(default="evidence", metadata={
        "help": "What the self-distillation teacher reads as text: the evidence sentences or the passages."})
    max_passages: int = field(default=3, metadata={"help": "Passages per stage-2 example: 1 to this."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "recon_tokens", "max_passages"):
            self._check(name, getattr(self, name) >= 1, "must be >= 1")
        for name in ("stage0_steps", "stage1_steps", "stage2_steps", "val_examples", "eval_every"):
            self._check(name, getattr(self, name) >= 0, "must be >= 0")
        for name in ("stage0_lr", "stage1_lr", "stage2_lr", "stage1_minutes", "stage2_minutes"):
            self._check(name, getattr(self, name) > 0, "must be > 0")
        self._check("kl_weight", self.kl_weight >= 0, "must be >= 0 (0: no self-distillation)")
        check_context_template("ragzip train xrag", self.context_template)

    def train_files(self) -> list[str]:
        """``--data``, or the default train files in ``--data-dir``."""
        return list(self.data) if self.data else [str(Path(self.data_dir) / name) for name in DEFAULT_TRAIN_FILES]


# ------------------------------------------------------------------------------------------------------------- data
def squad_split(rows: list[dict[str, Any]], heldout_articles: int) -> tuple[list[dict], list[dict], list[str]]:
    """Split SQuAD by article: the first ``heldout_articles`` titles in file order are held out (evaluation)."""
    titles: list[str] = []
    for row in rows:
        if row["title"] not in titles:
            titles.append(row["title"])
    held = set(titles[:heldout_articles])
    return ([r for r in rows if r["title"] not in held], [r for r in rows if r["title"] in held],
            titles[:heldout_articles])


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_RE.split(text.strip()) if s]


def squad_evidence(paragraph: str, answers: Sequence[str]) -> str:
    """The sentence(s) of ``paragraph`` that contain an answer string (the first two sentences when none does)."""
    sentences = split_sentences(paragraph)
    hits = [s for s in sentences if any(a and a in s for a in answers)]
    return " ".join(hits[:2] or sentences[:2])


def hotpot_paragraphs(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(title, "".join(sentences).strip()) for title, sentences in row["context"]]


def squad_title(row: dict[str, Any]) -> str:
    return str(row["title"]).replace("_", " ")  # SQuAD titles are URL slugs, as ragzip.data reads them


def hotpot_evidence(row: dict[str, Any]) -> str:
    by_title = {title: sentences for title, sentences in row["context"]}
    facts = []
    for title, index in row["supporting_facts"]:
        sentences = by_title.get(title, [])
        if 0 <= index < len(sentences):
            facts.append(sentences[index].strip())
    return " ".join(facts)


@dataclass
class QAExample:
    question: str
    answer: str
    passages: list[int]  # indices into the passage pool, in prompt order
    evidence: str  # what the teacher reads


@dataclass
class Corpus:
    """Passage texts (deduplicated) with titles; embeddings filled in by :func:`encode_pool`."""

    texts: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    embeddings: np.ndarray | None = None

    def add(self, text: str, title: str = "") -> int:
        if text not in self.index:
            self.index[text] = len(self.texts)
            self.texts.append(text)
            self.titles.append(title)
        return self.index[text]


@dataclass
class QARecord:
    """One training question read from a train file: its gold passages, same-source distractors, the evidence."""

    question: str
    answer: str
    gold: list[tuple[str, str]]  # (title, body)
    distractors: list[tuple[str, str]]
    evidence: str  # what the self-distillation teacher reads
    source: str


def read_qa_records(path: Path) -> list[QARecord]:
    """QA pairs from a HotpotQA, QED (NQ train) or SQuAD train file, by record shape (as ragzip.data reads them).

    SQuAD 2.0 unanswerable questions are skipped (stage 2 teaches answering); a QED or SQuAD question's distractors
    are filled by :func:`build_data` (other QED passages; other paragraphs of the same SQuAD article).
    """
    if not path.is_file():
        raise InputError(f"--data {str(path)!r}: no such file. Pass HotpotQA, QED or SQuAD *train* JSONL (.gz ok), "
                         "e.g. ../shared/data/hotpotqa_train.jsonl.")
    rows = read_jsonl(path)
    if not rows:
        raise InputError(f"no records in {path}; expected HotpotQA, QED or SQuAD-style JSONL.")
    out: list[QARecord] = []
    if "supporting_facts" in rows[0]:
        for row in rows:
            gold_titles = {t for t, _ in row["supporting_facts"]}
            paras = hotpot_paragraphs(row)
            evidence = hotpot_evidence(row)
            if evidence and row.get("answer"):
                out.append(QARecord(row["question"], row["answer"], [p for p in paras if p[0] in gold_titles],
                                    [p for p in paras if p[0] not in gold_titles], evidence, "hotpotqa"))
    elif "sentence_starts" in rows[0]:
        for row in rows:
            text, starts = row["context"], list(row["sentence_starts"]) or [0]
            bounds = list(zip(starts, [*starts[1:], len(text)], strict=True))
            evidence = " ".join(text[a:b].strip() for k, (a, b) in enumerate(bounds)
                                if k in set(row.get("answer_sentence_idx", [])))
            if row.get("answers") and evidence:
                out.append(QARecord(row["question"], row["answers"][0], [(row.get("title", ""), text)], [],
                                    evidence, "qed"))
    elif "answer_starts" in rows[0] or "is_impossible" in rows[0]:
        by_article: dict[str, list[str]] = {}
        for row in rows:
            contexts = by_article.setdefault(squad_title(row), [])
            if row["context"] not in contexts:
                contexts.append(row["context"])
        for row in rows:
            if row.get("is_impossible") or not row.get("answers"):
                continue
            title = squad_title(row)
            answers = [a.lower() for a in row["answers"]]
            others = [(title, c) for c in by_article[title]
                      if c != row["context"] and not any(a in c.lower() for a in answers)]
            out.append(QARecord(row["question"], row["answers"][0], [(title, row["context"])], others,
                                squad_evidence(row["context"], row["answers"]), "squad"))
    else:
        raise InputError(f"{path}: unknown record shape (keys {sorted(rows[0])[:8]}); expected HotpotQA "
                         "(supporting_facts), QED (sentence_starts) or SQuAD (answer_starts).")
    return out


def build_data(paths: Sequence[Path], *, seed: int, n_paraphrase: int, n_qa: int, n_val: int,
               max_passages: int) -> dict[str, Any]:
    """Stage-1 passages, stage-2 QA examples and held-out validation examples, all from *train* files.

    Every source gets an equal share of the ``n_qa`` examples; ``n_val`` questions per source are held out (never
    trained on) for the validation curve. SQuAD/QED examples read their own passage plus 0-2 distractors (same-article
    paragraphs for SQuAD, other questions' passages for QED), HotpotQA its two gold paragraphs plus 0-1 distractor.
    """
    rng = random.Random(seed)
    corpus = Corpus()
    by_source: dict[str, list[QARecord]] = {}
    for path in paths:
        for rec in read_qa_records(Path(path)):
            by_source.setdefault(rec.source, []).append(rec)
    qed_pool = [r.gold[0] for r in by_source.get("qed", [])]

    def example(rec: QARecord) -> QAExample:
        chosen = list(rec.gold)
        if rec.source == "hotpotqa":
            if rec.distractors and len(chosen) < max_passages and rng.random() < 0.4:
                chosen.append(rng.choice(rec.distractors))
        else:
            k = min(rng.choices((1, 2, 3), weights=(0.5, 0.3, 0.2))[0], max_passages)
            pool = rec.distractors if rec.source == "squad" else [p for p in rng.sample(qed_pool, 4) if p != rec.gold[0]]
            chosen += rng.sample(pool, min(k - 1, len(pool)))
        chosen = chosen[:max_passages]
        rng.shuffle(chosen)
        return QAExample(rec.question, rec.answer, [corpus.add(passage_text(t, b), t) for t, b in chosen],
                         rec.evidence)

    shuffled = {}
    for source in sorted(by_source):  # the split depends on the seed only, not on how many examples are built
        shuffled[source] = list(by_source[source])
        rng.shuffle(shuffled[source])
    val = [example(r) for source in sorted(shuffled) for r in shuffled[source][:n_val]]
    share = math.ceil(n_qa / max(1, len(by_source)))
    qa = [example(r) for source in sorted(shuffled) for r in shuffled[source][n_val:n_val + share]]
    rng.shuffle(qa)
    val_ids = {p for ex in val for p in ex.passages}
    pool = sorted({p for ex in qa for p in ex.passages if len(corpus.texts[p].split()) >= 20} - val_ids)
    rng.shuffle(pool)
    heldout = sorted(p for p in val_ids if len(corpus.texts[p].split()) >= 20)
    rng.shuffle(heldout)
    return {"corpus": corpus, "paraphrase": pool[:n_paraphrase], "qa": qa, "val": val, "heldout": heldout[:64],
            "sources": {s: len(v) for s, v in by_source.items()}}


def encode_pool(corpus: Corpus, embedder: str, cache: Path | None) -> None:
    """MiniLM (or ``embedder``) vectors of every passage, cached on disk by the hash of the texts."""
    digest = hashlib.sha256(("\x00".join(corpus.texts) + embedder).encode("utf-8")).hexdigest()[:16]
    path = cache / f"embeddings-{digest}.npy" if cache is not None else None
    if path is not None and path.is_file():
        corpus.embeddings = np.load(path)
        return
    start = time.perf_counter()
    corpus.embeddings = Embedder(embedder).encode(corpus.texts)
    logger.info("encoded %d passages with %s in %.0f s", len(corpus.texts), embedder, time.perf_counter() - start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, corpus.embeddings)


# ----------------------------------------------------------------------------------------------- prompts and losses
class Prompts:
    """Training sequences in exactly the prompts the generator reads at inference, scored by the frozen LLM.

    A prompt is built as text with a mark where each soft token goes; the marks become the projected vectors and the
    answer (or the passage to reconstruct) the scored target of :func:`ragzip.training.lm.sequence_nll`.
    """

    def __init__(self, generator: Any, context_template: str) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.context_template = context_template
        self.prefixes = PrefixCache()

    def pieces(self, prompt: str, vectors: torch.Tensor | None = None) -> tuple[list[Any], bool]:
        """The prompt's pieces (the j-th mark replaced by ``vectors[j]``) and whether special tokens go around it."""
        parts = prompt.split(_SOFT)
        assert vectors is not None or len(parts) == 1, "a prompt with soft marks needs their vectors"
        pieces: list[Any] = [parts[0]]
        for j, text in enumerate(parts[1:]):
            pieces += [vectors[j:j + 1], text]  # type: ignore[index]
        return [p for p in pieces if not isinstance(p, str) or p], self.generator.adds_special_tokens(prompt)

    def context_text(self, titles: Sequence[str]) -> str:
        return "\n\n".join(self.context_template.format(soft=_SOFT, title=t) for t in titles)

    def answer_ids(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"])[:24] + \
            [self.tokenizer.eos_token_id]

    def qa(self, ex: QAExample, titles: Sequence[str], vectors: torch.Tensor) -> tuple[list[Any], bool]:
        """The question over its passages, one soft token each ``(len(passages), d)``, scoring the answer."""
        pieces, adds = self.pieces(self.generator.format_prompt(ex.question, self.context_text(titles)), vectors)
        return [*pieces, Target(self.answer_ids(ex.answer))], adds

    def teacher(self, ex: QAExample, text: str) -> tuple[list[Any], bool]:
        """The question over ``text`` read as text (the self-distillation teacher), scoring the answer."""
        pieces, adds = self.pieces(self.generator.format_prompt(ex.question, text))
        return [*pieces, Target(self.answer_ids(ex.answer))], adds

    def paraphrase(self, text: str, template: str, recon_tokens: int, vector: torch.Tensor) -> tuple[list[Any], bool]:
        """An instruction around the passage's soft token ``(1, d)``, scoring the passage's first tokens."""
        messages = [{"role": "user", "content": template.format(soft=_SOFT)}]
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) \
            if getattr(self.tokenizer, "chat_template", None) else messages[0]["content"] + "\n"
        pieces, adds = self.pieces(prompt, vector)
        target = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])[:recon_tokens]
        return [*pieces, Target(target)], adds

    def nll(self, sequences: Sequence[tuple[list[Any], bool]]) -> SequenceNLL:
        """The frozen LLM's NLL of the sequences' targets."""
        return sequence_nll(self.generator, [s for s, _ in sequences], add_special_tokens=[a for _, a in sequences],
                            prefixes=self.prefixes)


def idf_targets(corpus: Corpus, generator: Any, ids: Sequence[int]) -> torch.Tensor:
    """Stage-0 targets: IDF-weighted mean input embedding of each passage's tokens, at the mean token norm."""
    table = generator.input_embeddings().weight.detach()
    token_lists = [generator.tokenizer(corpus.texts[i], add_special_tokens=False)["input_ids"] for i in ids]
    df = Counter(t for tokens in token_lists for t in set(tokens))
    n = len(token_lists)
    norm = table.norm(dim=-1).mean()
    out = torch.empty(len(ids), table.shape[1])
    for row, tokens in enumerate(token_lists):
        counts = Counter(tokens)
        keys = torch.tensor(list(counts))
        weights = torch.tensor([counts[t] * math.log((1 + n) / (1 + df[t])) for t in counts], dtype=table.dtype)
        vec = (weights[:, None] * table[keys]).sum(0)  # (d,)
        out[row] = vec / vec.norm().clamp_min(1e-6) * norm
    return out


def _soft(projector: XRAGProjector, corpus: Corpus, indices: Sequence[int]) -> torch.Tensor:
    """The projected soft token of each passage, in order ``(S, d_gen)`` (one projector pass for the batch)."""
    weight = next(projector.parameters())
    return projector(torch.from_numpy(corpus.embeddings[list(indices)]).to(weight.device))


def paraphrase_loss(projector: XRAGProjector, prompts: Prompts, corpus: Corpus, batch: list[tuple[int, int]],
                    recon_tokens: int) -> torch.Tensor:
    """Stage 1: NLL of each passage's first ``recon_tokens`` tokens from its soft token, under its template."""
    vectors = _soft(projector, corpus, [p for p, _ in batch])  # (B, d)
    return prompts.nll([prompts.paraphrase(corpus.texts[p], PARAPHRASE_TEMPLATES[t], recon_tokens, vectors[i:i + 1])
                        for i, (p, t) in enumerate(batch)]).mean


def qa_loss(projector: XRAGProjector, prompts: Prompts, corpus: Corpus, batch: list[QAExample], kl_weight: float,
            teacher_context: str) -> tuple[torch.Tensor, float, float]:
    """Stage 2: answer NLL with soft tokens + ``kl_weight`` x KL(teacher || student) per answer token; returns
    ``(loss, nll, kl)``."""
    vectors = _soft(projector, corpus, [p for ex in batch for p in ex.passages])  # (S, d)
    seqs, at = [], 0
    for ex in batch:
        seqs.append(prompts.qa(ex, [corpus.titles[p] for p in ex.passages], vectors[at:at + len(ex.passages)]))
        at += len(ex.passages)
    student = prompts.nll(seqs)
    nll = student.mean
    if kl_weight <= 0:
        return nll, float(nll.detach()), 0.0
    with torch.no_grad():
        texts = [ex.evidence if teacher_context == "evidence" else "\n\n".join(corpus.texts[p] for p in ex.passages)
                 for ex in batch]
        teacher = prompts.nll([prompts.teacher(ex, t) for ex, t in zip(batch, texts, strict=True)])
        assert torch.equal(teacher.targets, student.targets)
    kl = F.kl_div(F.log_softmax(student.logits, -1), F.log_softmax(teacher.logits, -1), log_target=True,
                  reduction="batchmean")  # KL(teacher || student) per target token
    return nll + kl_weight * kl, float(nll.detach()), float(kl.detach())


def qa_validation(projector: XRAGProjector, prompts: Prompts, corpus: Corpus, val: list[QAExample],
                  teacher_context: str, batch_size: int) -> dict[str, float]:
    """Held-out answer NLL with soft tokens and the KL to the text-reading teacher (per answer token)."""
    nll = kl = 0.0
    count = 0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            batch = val[i:i + batch_size]
            _, n, k = qa_loss(projector, prompts, corpus, batch, 1.0, teacher_context)
            nll, kl, count = nll + n * len(batch), kl + k * len(batch), count + len(batch)
    return {"nll": round(nll / max(1, count), 4), "kl": round(kl / max(1, count), 4)}


def reference_nll(prompts: Prompts, corpus: Corpus, val: list[QAExample], context: str, batch_size: int) -> float:
    """Held-out answer NLL of the frozen LLM reading ``context``: nothing, the evidence or the passages as text."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            batch = val[i:i + batch_size]
            texts = ["" if context == "none" else ex.evidence if context == "evidence"
                     else "\n\n".join(corpus.texts[p] for p in ex.passages) for ex in batch]
            scored = prompts.nll([prompts.teacher(ex, t) for ex, t in zip(batch, texts, strict=True)])
            total += float(scored.mean) * len(batch)
    return round(total / max(1, len(val)), 4)


def _val(loss_fn: Any, items: list[Any], batch_size: int) -> float:
    with torch.no_grad():
        values = [float(loss_fn(items[i:i + batch_size])) for i in range(0, len(items), batch_size)]
    return sum(values) / max(1, len(values))


def shuffled_batches(items: Sequence[Any], batch_size: int, seed: int) -> Callable[[int], list[Any]]:
    """``batches(epoch)`` for :meth:`Trainer.fit`: each epoch the items reshuffled by one ``random.Random(seed)``,
    in full batches (a resumed run draws the same order)."""
    state: dict[str, random.Random] = {}

    def batches(epoch: int) -> list[Any]:
        if epoch == 1:
            state["rng"] = random.Random(seed)
        order = list(items)
        state["rng"].shuffle(order)
        return [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]

    return batches


# --------------------------------------------------------------------------------------------------------- training
def train(args: XRAGArguments) -> int:
    prepare(args)
    out = Path(args.out)
    started = time.perf_counter()
    files = args.train_files()
    data = build_data([Path(p) for p in files], seed=args.seed,
                      n_paraphrase=args.stage1_steps * args.batch_size + 64,
                      n_qa=args.stage2_steps * args.batch_size + 64, n_val=args.val_examples,
                      max_passages=args.max_passages)
    corpus: Corpus = data["corpus"]
    logger.info("data: %d passages, %d paraphrase, %d QA examples, %d held-out validation examples (questions per "
                "source file: %s)", len(corpus.texts), len(data["paraphrase"]), len(data["qa"]), len(data["val"]),
                data["sources"])
    encode_pool(corpus, args.embedder, out / "cache")
    generator = HFGenerator(GeneratorConfig(model=args.generator, device=args.device or None))
    prompts = Prompts(generator, args.context_template)
    config = ProjectorConfig(embedder=args.embedder, embedder_dim=int(corpus.embeddings.shape[1]),
                             generator=args.generator, generator_hidden=generator.hidden_size,
                             context_template=args.context_template)
    projector = XRAGProjector(config)
    projector.record_bases(encoder=load_encoder(config), generator=generator)  # checked when the artifact loads
    projector.to(generator.device)

    log = open_log(args, stages=STAGES)
    point = resume_point(args, STAGES)
    at = STAGES.index(point[1].parent.name) if point else -1  # the stage a --resume continues in
    if point:
        logger.info("resuming from %s", point[1])

    def schedule() -> WarmupCosine:  # warm-up from 1% of the stage on, then cosine to 10%
        return WarmupCosine(args.warmup, final=0.1, floor=0.01 / args.warmup if args.warmup else 0.0)

    def stage_trainer(stage: str, lr: float, steps: int, minutes: float, **kw: Any) -> Trainer:
        return Trainer(args, projector, [{"params": list(projector.parameters()), "lr": lr}], total_steps=steps,
                       log=log, weight_decay=0.01, schedule=schedule(), budget=Budget(minutes * 60),
                       checkpoint_at_end=True, save=lambda folder, metrics: projector.save_pretrained(folder),
                       stage=stage, resume=at == STAGES.index(stage), plot_title="xrag projector", log_to=logger,
                       **kw)

    def finished(stage: str) -> TrainState | None:
        """The final state of a stage a resumed run does not train again (its weights: the resumed checkpoint)."""
        index = STAGES.index(stage)
        if at > index:
            return saved_state(checkpoints(out / stage)[-1][1])
        if at != index:
            return None
        state = saved_state(point[1])  # type: ignore[index]
        if not state.finished:
            return None
        projector.load_state_dict(XRAGProjector.from_pretrained(point[1]).state_dict())  # type: ignore[index]
        restore_random(point[1])  # type: ignore[index]
        return state

    def recorded(stage: str, key: str) -> Any:
        return next((row[key] for row in reversed(log.rows) if row.get("stage") == stage and key in row), None)

    val_para = [(p, 0) for p in data["heldout"][:16]]

    def recon_nll() -> float:
        return _val(lambda b: paraphrase_loss(projector, prompts, corpus, b, args.recon_tokens), val_para, 8)

    # Stage 0: regression onto IDF-weighted token embeddings (no LLM pass, no checkpoint: a resumed run skips it).
    if point is None:
        pool = sorted({p for ex in data["qa"] for p in ex.passages})
        targets = idf_targets(corpus, generator, pool).to(generator.device)  # (n, d_gen)
        x = torch.from_numpy(corpus.embeddings[pool]).to(generator.device)  # (n, d_emb)

        def draws(epoch: int) -> Any:  # one epoch of stage0_steps random batches of 64 passages
            gen = torch.Generator().manual_seed(args.seed)
            return (torch.randint(0, len(pool), (64,), generator=gen).to(generator.device)
                    for _ in range(args.stage0_steps if epoch == 1 else 0))

        stage0 = Trainer(dataclasses.replace(args, log_every=max(args.log_every, args.stage0_steps // 20)),
                         projector, [{"params": list(projector.parameters()), "lr": args.stage0_lr}],
                         total_steps=args.stage0_steps, log=log, max_grad_norm=math.inf, schedule=schedule(),
                         budget=Budget(math.inf), checkpoint_every=0, stage="stage0", resume=False, log_to=logger)
        state0 = stage0.fit(draws, lambda batch: F.mse_loss(projector(x[batch]), targets[batch])
                            / targets.pow(2).mean())  # relative MSE
        log.record(stage="stage0", step=state0.step, val_recon_nll=recon_nll(), train_s=round(state0.train_seconds, 1))
    rows0 = [row for row in log.rows if row.get("stage") == "stage0" and "loss" in row]
    logger.info("stage 0: relative MSE %s -> %s", *(f"{rows0[i]['loss']:.3f}" if rows0 else "?" for i in (0, -1)))

    # Stage 1: paraphrase pretraining.
    state1 = finished("stage1")
    if state1 is None:
        rng = random.Random(args.seed)
        items = [(p, rng.randrange(len(PARAPHRASE_TEMPLATES))) for p in data["paraphrase"]]
        stage1 = stage_trainer("stage1", args.stage1_lr, args.stage1_steps, args.stage1_minutes,
                               plot_ylabel="NLL")
        state1 = stage1.fit(shuffled_batches(items, args.batch_size, args.seed),
                            lambda b: paraphrase_loss(projector, prompts, corpus, b, args.recon_tokens))
        log.record(stage="stage1", step=state1.step, val_recon_nll=recon_nll())
    before, after = recorded("stage0", "val_recon_nll"), recorded("stage1", "val_recon_nll")
    logger.info("stage 1: %d steps; held-out reconstruction NLL %s -> %s", state1.step, before, after)

    # Stage 2: QA with soft tokens + self-distillation, the held-out curve every --eval-every steps.
    references = {name: reference_nll(prompts, corpus, data["val"], name, args.batch_size)
                  for name in ("none", "evidence", "passages")}
    logger.info("held-out answer NLL of the frozen LLM reading nothing / the evidence / the passages as text: %s",
                references)
    gain = references["none"] - references["passages"]

    def validate(step: int) -> dict[str, Any]:
        metrics = qa_validation(projector, prompts, corpus, data["val"], args.teacher_context, args.batch_size)
        logger.info("stage2 held-out at %d samples: %s", step * args.batch_size, metrics)
        recovery = round((references["none"] - metrics["nll"]) / gain, 4) if gain > 0 else None
        return {"samples": step * args.batch_size, "val_nll": metrics["nll"], "val_kl": metrics["kl"],
                "recovery_vs_passages": recovery}

    state2 = finished("stage2")
    if state2 is None:
        stage2 = stage_trainer("stage2", args.stage2_lr, args.stage2_steps, args.stage2_minutes, evaluate=validate,
                               evaluate_every=args.eval_every, plot_ylabel="NLL + KL")
        if at < STAGES.index("stage2"):
            log.record(stage="stage2", step=0, **validate(0))
        state2 = stage2.fit(shuffled_batches(data["qa"], args.batch_size, args.seed + 1),
                            lambda b: _logged(qa_loss(projector, prompts, corpus, b, args.kl_weight,
                                                      args.teacher_context)))
        if recorded("stage2", "val_nll") is None or _last_val_step(log) != state2.step:
            log.record(stage="stage2", step=state2.step, **validate(state2.step))

    curve = [{"step": row["step"], "samples": row["samples"], "nll": row["val_nll"], "kl": row["val_kl"],
              "recovery_vs_passages": row["recovery_vs_passages"]}
             for row in log.rows if row.get("stage") == "stage2" and "val_nll" in row]
    states = {"stage1": state1, "stage2": state2}
    last = {stage: _last_logged(log, stage) for stage in ("stage0", "stage1", "stage2")}
    config.training = {
        "command": args.command,
        "seed": args.seed,
        "device": str(generator.device),
        "data": {"train_files": [Path(p).name for p in files], "questions_per_source": data["sources"],
                 "qa_examples_built": len(data["qa"]), "validation_examples_held_out": len(data["val"]),
                 "dev_files": "never used in training"},
        "steps": {"stage0": rows0[-1]["step"] if rows0 else 0, "stage1": state1.step, "stage2": state2.step},
        "samples_seen": {stage: s.samples for stage, s in states.items()},
        "stopped_early": {stage: s.stopped_early for stage, s in states.items() if s.stopped_early},
        "batch_size": args.batch_size, "recon_tokens": args.recon_tokens, "kl_weight": args.kl_weight,
        "teacher_context": args.teacher_context, "max_passages": args.max_passages,
        "lr": {"stage0": args.stage0_lr, "stage1": args.stage1_lr, "stage2": args.stage2_lr},
        "prompt": {"system_prompt": generator.config.system_prompt,
                   "prompt_template": generator.config.prompt_template},
        "final_loss": {"stage0_rel_mse": last["stage0"].get("loss"), "stage1_nll": last["stage1"].get("loss"),
                       "stage2_nll": last["stage2"].get("nll"), "stage2_kl": last["stage2"].get("kl")},
        "heldout_recon_nll": {"after_stage0": before, "after_stage1": after},
        "heldout_answer_nll_text_reader": references,
        "heldout_curve": curve,
        "seconds": {"stage0_s": recorded("stage0", "train_s"), "stage1_s": round(state1.train_seconds, 1),
                    "stage2_s": round(state2.train_seconds, 1), "total_s": round(time.perf_counter() - started, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    projector.save_pretrained(out)
    plot_losses(log, out / "loss.png", title="xrag projector", ylabel="loss", metric="val_nll",
                stage_titles={"stage0": "stage 0: relative MSE", "stage1": "stage 1: paraphrase NLL",
                              "stage2": "stage 2: NLL + KL (held-out NLL right)"})
    write_model_card(out, config, projector.num_parameters)
    logger.info("saved the projector to %s (%.1f min in all)", out, (time.perf_counter() - started) / 60)
    print(json.dumps(config.training, indent=2))
    return 0


def _logged(result: tuple[torch.Tensor, float, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """``qa_loss``'s ``(loss, nll, kl)`` as the trainer logs it."""
    loss, nll, kl = result
    return loss, {"nll": nll, "kl": kl}


def _last_val_step(log: Any) -> int | None:
    return next((row["step"] for row in reversed(log.rows) if row.get("stage") == "stage2" and "val_nll" in row), None)


def _last_logged(log: Any, stage: str) -> dict[str, Any]:
    """The stage's last logged training row (its loss: the mean over the last ``--log-every`` steps)."""
    return next((row for row in reversed(log.rows) if row.get("stage") == stage and "loss" in row), {})


def write_model_card(out: Path, config: ProjectorConfig, parameters: int) -> Path:
    """``MODEL_CARD.md`` beside the projector, from the run's ``config.training``."""
    t = config.training
    steps, seen = t["steps"], t["samples_seen"]
    refs, curve = t["heldout_answer_nll_text_reader"], t["heldout_curve"]
    recon = {k: "?" if v is None else f"{v:.4f}" for k, v in t["heldout_recon_nll"].items()}
    sources = ", ".join(f"{name} {n:,}" for name, n in t["data"]["questions_per_source"].items())
    return ModelCard.from_training(
        t,
        title=f"xrag projector: {config.embedder} ({config.embedder_dim}) -> {config.generator} "
              f"({config.generator_hidden})",
        summary="The projector of ragzip's `type: xrag` compressor (xRAG, arXiv 2405.13792): it maps a passage's "
                "embedding to one input embedding of the generator, trained by `ragzip train xrag`. The embedder and "
                "the generator stay frozen and are not stored here.",
        what=[f"- The projector only (`model.safetensors`, {parameters:,} parameters, `{config.projector_type}`); "
              "`config.json` names the embedder and the generator and holds the training record (`training`)."],
        data=[f"- Data: {', '.join(f'`{f}`' for f in t['data']['train_files'])} (train files only; questions per "
              f"source: {sources}): {t['data']['qa_examples_built']} QA examples built, "
              f"{t['data']['validation_examples_held_out']} questions held out for the validation curve. The dev "
              "files were never used."],
        recipe=[f"- Stage 0 (warm start: regression onto IDF-weighted token embeddings): {steps['stage0']} steps x 64 "
                f"passages, lr {t['lr']['stage0']}.",
                f"- Stage 1 (paraphrase: reconstruct the passage's first {t['recon_tokens']} tokens): {steps['stage1']} "
                f"steps x {t['batch_size']}, lr {t['lr']['stage1']}.",
                f"- Stage 2 (QA, answer NLL + {t['kl_weight']} x KL to the frozen LLM reading the "
                f"{t['teacher_context']} as text): {steps['stage2']} steps x {t['batch_size']}, lr {t['lr']['stage2']}; "
                f"1 to {t['max_passages']} passages per question.",
                f"- AdamW, warm-up then cosine to 10% per stage, gradients clipped at 1 (stages 1-2); "
                f"{t['torch_threads']} CPU thread(s), {t['seconds']['total_s']} s in all."],
        results=[f"- Held-out reconstruction NLL: {recon['after_stage0']} after stage 0 -> {recon['after_stage1']} "
                 "after stage 1.",
                 f"- Held-out answer NLL with soft tokens: {curve[0]['nll'] if curve else '?'} -> "
                 f"{curve[-1]['nll'] if curve else '?'} over stage 2 (the frozen LLM reading nothing: {refs['none']}, "
                 f"the evidence: {refs['evidence']}, the passages: {refs['passages']}); curve: `loss.png`, "
                 "`config.json` `training.heldout_curve`.",
                 "- Measure end to end with `ragzip evaluate xrag --artifact DIR`."],
        steps=f"stage 0 {steps['stage0']}, stage 1 {steps['stage1']}, stage 2 {steps['stage2']}",
        samples_seen=seen["stage2"], sample_unit="stage-2 examples",
        stopped_early="; ".join(t["stopped_early"].values()),
    ).write(out)


# ------------------------------------------------------------------------------------------------------ evaluation
def evaluate(args: argparse.Namespace) -> int:
    """Reconstruction token F1 on held-out passages, QA acc/F1 (SQuAD held-out articles, HotpotQA dev), TTFT."""
    data_dir = Path(args.data_dir)
    rng = random.Random(args.seed)
    generator = HFGenerator(GeneratorConfig(model=args.generator, batch_size=args.eval_batch_size))
    xrag = build_compressor({"type": "xrag", "artifact": args.artifact, "max_passages": 10})
    xrag.bind(generator)
    none = build_compressor({"type": "none"})
    none.bind(generator)
    embedder = Embedder(xrag.embedder_name)  # type: ignore[attr-defined]
    report: dict[str, Any] = {"artifact": args.artifact, "generator": args.generator, "seed": args.seed}

    def passages_of(bodies: list[str], titles: list[str]) -> list[Passage]:
        texts = [passage_text(title, body) for title, body in zip(titles, bodies, strict=True)]
        vectors = embedder.encode(texts)
        return [Passage(t, metadata={"title": title, "embedder": embedder.name}, embedding=v)
                for t, title, v in zip(texts, titles, vectors, strict=True)]

    def run(questions: list[str], golds: list[list[str]], contexts: list[Any]) -> dict[str, float]:
        gens = generator.answer_batch(questions, contexts)
        scores = [score(g.text, gold) for g, gold in zip(gens, golds, strict=True)]
        ctx_tokens = [c.tokens_after if hasattr(c, "tokens_after") else 0 for c in contexts]
        return {"acc": round(float(np.mean([s["acc"] for s in scores])), 4),
                "f1": round(float(np.mean([s["f1"] for s in scores])), 4),
                "em": round(float(np.mean([s["em"] for s in scores])), 4),
                "context_tokens": round(float(np.mean(ctx_tokens)), 1),
                "n": len(questions), "examples": [g.text for g in gens[:3]]}

    squad = read_jsonl(data_dir / "squad_dev.jsonl")
    _, held, held_titles = squad_split(squad, args.heldout_articles)
    t0 = time.perf_counter()
    if args.recon > 0:
        paras = sorted({(squad_title(r), r["context"]) for r in held})
        rng.shuffle(paras)
        paras = paras[: args.recon]
        ps = passages_of([t for _, t in paras], [title for title, _ in paras])
        ctx = xrag.compress_batch(["Reconstruct the passage."] * len(ps), [[p] for p in ps])
        prompts = [generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": PARAPHRASE_TEMPLATES[0].format(soft=c.results[0].text)}], tokenize=False,
            add_generation_prompt=True) for c in ctx]
        gens = generator.generate(prompts, max_new_tokens=args.recon_tokens, stop=())
        refs = [generator.tokenizer.decode(generator.tokenizer(p.text, add_special_tokens=False)["input_ids"]
                                           [: args.recon_tokens]) for p in ps]
        # Teacher-forced NLL of the passage's first tokens from its own soft token vs. another passage's token.
        corpus = Corpus(texts=[p.text for p in ps], titles=[p.metadata["title"] for p in ps],
                        embeddings=np.stack([p.embedding for p in ps]))
        prompts = Prompts(generator, xrag.projector.config.context_template)  # type: ignore[attr-defined]
        items = [(i, 0) for i in range(len(ps))]
        nll = _val(lambda b: paraphrase_loss(xrag.projector, prompts, corpus, b, args.recon_tokens), items, 8)
        corpus.embeddings = np.roll(corpus.embeddings, 1, axis=0)
        nll_other = _val(lambda b: paraphrase_loss(xrag.projector, prompts, corpus, b, args.recon_tokens), items, 8)
        f1s = [f1_score(g.text, [r]) for g, r in zip(gens, refs, strict=True)]
        # Baseline: the same F1 against a *different* held-out passage (what topic-free text scores).
        shuffled = [f1_score(g.text, [refs[(i + 1) % len(refs)]]) for i, g in enumerate(gens)]
        report["reconstruction"] = {"token_f1": round(float(np.mean(f1s)), 4),
                                    "nll": round(nll, 4), "nll_with_another_passage_token": round(nll_other, 4),
                                    "token_f1_vs_other_passage": round(float(np.mean(shuffled)), 4),
                                    "n": len(ps), "recon_tokens": args.recon_tokens,
                                    "examples": [{"reference": r[:200], "output": g.text[:200]}
                                                 for r, g in list(zip(refs, gens, strict=True))[:3]]}
        logger.info("reconstruction: %s (%.0f s)", report["reconstruction"]["token_f1"], time.perf_counter() - t0)

    if args.squad > 0:
        rows = list(held)
        rng.shuffle(rows)
        rows = rows[: args.squad]
        questions = [r["question"] for r in rows]
        golds = [r["answers"] for r in rows]
        ps = passages_of([r["context"] for r in rows], [squad_title(r) for r in rows])
        res: dict[str, Any] = {"articles": held_titles}
        res["no_context"] = run(questions, golds, [None] * len(rows))
        res["full_text"] = run(questions, golds, none.compress_batch(questions, [[p] for p in ps]))
        res["xrag"] = run(questions, golds, xrag.compress_batch(questions, [[p] for p in ps]))
        report["squad_heldout_given_paragraph"] = res
        logger.info("squad: %s", {k: v for k, v in res.items() if k != "articles"})

    if args.hotpot > 0:
        rows = read_jsonl(data_dir / "hotpotqa_dev.jsonl")[: args.hotpot]
        questions = [r["question"] for r in rows]
        golds = [[r["answer"]] for r in rows]
        ranked = []
        recall = {1: 0.0, 3: 0.0}
        for r in rows:  # FAISS-equivalent exact inner-product search over the question's 10 paragraphs
            paras = hotpot_paragraphs(r)
            ps = passages_of([t for _, t in paras], [title for title, _ in paras])
            order = np.argsort(-(np.stack([p.embedding for p in ps]) @ embedder.encode_query(r["question"])))
            ranked.append([ps[i] for i in order])
            gold = {t for t, _ in r["supporting_facts"]}
            for k in recall:
                recall[k] += len(gold & {ps[i].metadata["title"] for i in order[:k]}) / len(gold) / len(rows)
        res = {"retrieval": "MiniLM exact inner product over each question's 10 distractor-setting paragraphs",
               "recall_at_k": {k: round(v, 4) for k, v in recall.items()}}
        res["no_context"] = run(questions, golds, [None] * len(rows))
        for k in (1, 3):
            top = [r[:k] for r in ranked]
            res[f"full_text_top{k}"] = run(questions, golds, none.compress_batch(questions, top))
            res[f"xrag_top{k}"] = run(questions, golds, xrag.compress_batch(questions, top))
        report["hotpotqa_dev"] = res
        logger.info("hotpotqa: %s", res)

        if args.ttft > 0:  # one prompt at a time: TTFT = prefill + first token, nothing shared across a batch
            single = HFGenerator(GeneratorConfig(model=args.generator, batch_size=1, max_new_tokens=1),
                                 store=generator.store, model=generator.model, tokenizer=generator.tokenizer)
            qs, top5 = questions[: args.ttft], [r[:5] for r in ranked[: args.ttft]]
            timing: dict[str, Any] = {}
            for name, comp in (("full_text_top5", none), ("xrag_top5", xrag)):
                single.answer_batch(qs[:2], comp.compress_batch(qs[:2], top5[:2]))  # warm-up (a context is read once)
                ctxs = comp.compress_batch(qs, top5)
                gens = single.answer_batch(qs, ctxs)
                timing[name] = {"ttft_s": round(float(np.median([g.ttft_s for g in gens])), 4),
                                "ttft_mean_s": round(float(np.mean([g.ttft_s for g in gens])), 4),
                                "prompt_positions": round(float(np.mean([g.prompt_positions for g in gens])), 1),
                                "compress_s": round(float(np.mean([c.compress_s for c in ctxs])), 4)}
            timing["speedup"] = round(timing["full_text_top5"]["ttft_s"] / timing["xrag_top5"]["ttft_s"], 2)
            report["ttft_top5"] = timing
            logger.info("ttft: %s", timing)

    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------------------------------------- CLI
def build_eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragzip evaluate xrag", description="Measure an xRAG projector "
                                     "(also `ragzip train xrag eval`).")
    parser.add_argument("--artifact", default="default")
    parser.add_argument("--generator", default="embedded:smollm2-135m")
    parser.add_argument("--data-dir", default=_default_data_dir())
    parser.add_argument("--heldout-articles", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recon", type=int, default=32, help="held-out passages for reconstruction F1 (0: skip)")
    parser.add_argument("--recon-tokens", type=int, default=32)
    parser.add_argument("--squad", type=int, default=100, help="held-out SQuAD questions (0: skip)")
    parser.add_argument("--hotpot", type=int, default=50, help="HotpotQA dev questions (0: skip)")
    parser.add_argument("--ttft", type=int, default=20, help="HotpotQA questions timed one by one at top-5 (0: skip)")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help="write the JSON report here too")
    return parser


def write_heldout_squad(argv: Sequence[str]) -> int:
    """Write the SQuAD records of the held-out articles (for `ragzip bench --data` without training questions)."""
    parser = argparse.ArgumentParser(prog="ragzip train xrag heldout-squad",
                                     description="Write the SQuAD dev records that xrag training never saw.")
    parser.add_argument("--out", required=True, help="JSONL file to write (keep it outside the repository)")
    parser.add_argument("--data-dir", default=_default_data_dir())
    parser.add_argument("--heldout-articles", type=int, default=12)
    args = parser.parse_args(list(argv))
    rows = read_jsonl(Path(args.data_dir) / "squad_dev.jsonl")
    _, held, titles = squad_split(rows, args.heldout_articles)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in held:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(held)} questions of {len(titles)} held-out articles ({', '.join(titles)}) to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip train xrag [eval|heldout-squad] ...``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    logging.getLogger("ragzip").setLevel(logging.INFO)
    if argv[:1] == ["heldout-squad"]:
        return write_heldout_squad(argv[1:])
    if argv[:1] == ["eval"]:
        eval_args = build_eval_parser().parse_args(argv[1:])
        torch.set_num_threads(eval_args.threads)
        return evaluate(eval_args)
    return train(XRAGArguments.parse(argv))


if __name__ == "__main__":
    sys.exit(main())
