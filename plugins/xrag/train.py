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

The prompt prefix shared by a batch (system prompt, chat markers, "Context:") is run through the frozen LLM once and
its KV cache reused: gradients only flow from the first soft token on, so this changes no number and saves ~40%.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ragzip.data import read_jsonl
from ragzip.generation import kv_cache_kwargs
from ragzip.plugins.xrag.config import ProjectorConfig, check_context_template
from ragzip.plugins.xrag.modeling import XRAGProjector, load_encoder

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
_MARK = "<<xrag-train-soft-{}>>"
_MARK_RE = re.compile(r"<<xrag-train-soft-(\d+)>>")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


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


def passage_text(title: str, body: str) -> str:
    """``"{title}: {body}"``: the passage text ragzip's benchmark indexes, embeds and reads (ragzip.data)."""
    from ragzip.data import passage_text as standard

    return standard(title, body)


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
    from ragzip.errors import InputError

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
    from ragzip.embed import Embedder

    start = time.perf_counter()
    corpus.embeddings = Embedder(embedder).encode(corpus.texts)
    logger.info("encoded %d passages with %s in %.0f s", len(corpus.texts), embedder, time.perf_counter() - start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, corpus.embeddings)


# ------------------------------------------------------------------------------------------- sequences and the LLM
@dataclass
class TrainSequence:
    """One training sequence: token ids with soft slots (``-1 - j`` = the j-th soft vector), then target ids."""

    ids: list[int]
    soft: list[int]  # passage-pool index of each soft slot, in order
    n_target: int


class FrozenLM:
    """The frozen generator as a loss function: builds prompts exactly as :class:`HFGenerator` does, caches the
    KV of prompt prefixes shared by a batch, and computes logits only where there are targets."""

    def __init__(self, generator: Any, context_template: str) -> None:
        self.generator = generator
        self.model = generator.model
        self.tokenizer = generator.tokenizer
        self.context_template = context_template
        self.embeddings = self.model.get_input_embeddings()
        self.base = getattr(self.model, self.model.base_model_prefix)
        self.lm_head = self.model.get_output_embeddings()
        self.eos = self.tokenizer.eos_token_id
        self._prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # prompts ------------------------------------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str) -> tuple[list[int], list[int]]:
        """Token ids of a prompt with training marks; marks become ``-1 - j`` slots. Returns (ids, slot order)."""
        # The generator's own rule for special tokens around a soft-token prompt (HFGenerator.embed_prompt).
        adds = self.generator._adds_special_tokens(prompt)
        prefix, suffix = self.generator._special_affixes() if adds else ([], [])
        ids: list[int] = list(prefix)
        slots: list[int] = []
        pos = 0
        for match in _MARK_RE.finditer(prompt):
            if match.start() > pos:
                ids.extend(self.tokenizer(prompt[pos:match.start()], add_special_tokens=False)["input_ids"])
            slots.append(int(match.group(1)))
            ids.append(-len(slots))  # the j-th slot is -1 - j
            pos = match.end()
        if pos < len(prompt):
            ids.extend(self.tokenizer(prompt[pos:], add_special_tokens=False)["input_ids"])
        ids.extend(suffix)
        return ids, slots

    def context_text(self, passages: Sequence[int], titles: Sequence[str]) -> str:
        return "\n\n".join(self.context_template.format(soft=_MARK.format(p), title=t)
                           for p, t in zip(passages, titles, strict=True))

    def qa_sequence(self, ex: QAExample, titles: Sequence[str]) -> TrainSequence:
        prompt = self.generator.format_prompt(ex.question, self.context_text(ex.passages, titles))
        ids, slots = self.tokenize_prompt(prompt)
        target = self.answer_ids(ex.answer)
        return TrainSequence(ids + target, slots, len(target))

    def teacher_sequence(self, ex: QAExample, text: str) -> TrainSequence:
        ids, _ = self.tokenize_prompt(self.generator.format_prompt(ex.question, text))
        target = self.answer_ids(ex.answer)
        return TrainSequence(ids + target, [], len(target))

    def answer_ids(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"])[:24] + [self.eos]

    def paraphrase_sequence(self, passage: int, text: str, template: str, recon_tokens: int) -> TrainSequence:
        messages = [{"role": "user", "content": template.format(soft=_MARK.format(passage))}]
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) \
            if getattr(self.tokenizer, "chat_template", None) else messages[0]["content"] + "\n"
        ids, slots = self.tokenize_prompt(prompt)
        target = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])[:recon_tokens]
        return TrainSequence(ids + target, slots, len(target))

    # forward ------------------------------------------------------------------------------------------------
    def _prefix_kv(self, ids: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if ids not in self._prefixes:
            from transformers import DynamicCache

            if len(self._prefixes) > 64:
                self._prefixes.clear()
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad():
                self.base(input_ids=torch.tensor([ids], device=self.embeddings.weight.device),
                          **kv_cache_kwargs(self.base, cache), use_cache=True)
            self._prefixes[ids] = [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefixes[ids]

    def target_logits(self, seqs: list[TrainSequence], soft: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, V)`` at every target token of the batch and the target ids ``(N,)``.

        ``soft`` holds one vector per soft slot of the batch, in order of appearance ``(S, d)``.
        """
        from transformers import DynamicCache

        device = self.embeddings.weight.device
        common = 0  # longest prefix of plain tokens shared by every sequence, kept 1+ token before any target
        first = seqs[0].ids
        limit = min(min(len(s.ids) - s.n_target for s in seqs) - 1, len(first))
        while common < limit and first[common] >= 0 and all(s.ids[common] == first[common] for s in seqs):
            common += 1
        prefix = tuple(first[:common])
        rest = [s.ids[common:] for s in seqs]
        batch, width = len(seqs), max(len(r) for r in rest)
        ids = torch.zeros(batch, width, dtype=torch.long, device=device)  # (B, T) right-padded
        mask = torch.zeros(batch, width, dtype=torch.long, device=device)  # (B, T)
        soft_rows, soft_cols = [], []
        tgt_rows, tgt_cols, tgt_ids = [], [], []
        for b, (r, s) in enumerate(zip(rest, seqs, strict=True)):
            ids[b, :len(r)] = torch.tensor([max(t, 0) for t in r])
            mask[b, :len(r)] = 1
            soft_rows += [b] * sum(1 for t in r if t < 0)
            soft_cols += [i for i, t in enumerate(r) if t < 0]
            start = len(r) - s.n_target
            tgt_rows += [b] * s.n_target
            tgt_cols += list(range(start - 1, len(r) - 1))  # the hidden state before each target predicts it
            tgt_ids += r[start:]
        inputs = self.embeddings(ids)  # (B, T, d)
        if soft_rows:
            assert soft is not None and soft.shape[0] == len(soft_rows), (None if soft is None else soft.shape)
            inputs = inputs.index_put((torch.tensor(soft_rows, device=device), torch.tensor(soft_cols, device=device)),
                                      soft.to(inputs.dtype))
        cache = None
        offset = 0
        if prefix:
            cache = DynamicCache(config=self.model.config)
            for layer, (k, v) in enumerate(self._prefix_kv(prefix)):
                cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
            offset = len(prefix)
            mask = torch.cat([mask.new_ones(batch, offset), mask], dim=1)  # (B, P + T)
        positions = (offset + torch.arange(width, device=device)).expand(batch, width)  # (B, T)
        hidden = self.base(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                           **kv_cache_kwargs(self.base, cache), use_cache=cache is not None).last_hidden_state  # (B, T, d)
        picked = hidden[torch.tensor(tgt_rows, device=device), torch.tensor(tgt_cols, device=device)]  # (N, d)
        return self.lm_head(picked), torch.tensor(tgt_ids, device=device)  # (N, V), (N,)


# -------------------------------------------------------------------------------------------------------- training
def idf_targets(corpus: Corpus, lm: FrozenLM, ids: Sequence[int]) -> torch.Tensor:
    """Stage-0 targets: IDF-weighted mean input embedding of each passage's tokens, at the mean token norm."""
    table = lm.embeddings.weight.detach()
    token_lists = [lm.tokenizer(corpus.texts[i], add_special_tokens=False)["input_ids"] for i in ids]
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


def lr_at(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to 10% of the peak."""
    if progress < warmup:
        return peak * max(progress, 0.01) / warmup
    progress = min(1.0, (progress - warmup) / (1 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class Budget:
    steps: int
    seconds: float
    done_steps: int = 0  # steps taken before a resume: they count against the step budget, not the new clock
    start: float = field(default_factory=time.perf_counter)

    def progress(self, step: int) -> float:
        """How far the stage is, by steps or by wall clock, whichever runs out first (drives the LR schedule).

        After a resume the clock part covers only the remaining steps' share of the wall-clock budget.
        """
        by_steps = step / max(1, self.steps)
        left = 1.0 - self.done_steps / max(1, self.steps)
        by_clock = self.done_steps / max(1, self.steps) + left * (time.perf_counter() - self.start) / max(
            1e-9, self.seconds)
        return max(by_steps, by_clock)

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0


def run_stage0(projector: XRAGProjector, corpus: Corpus, lm: FrozenLM, ids: list[int], steps: int,
               lr: float, seed: int) -> list[float]:
    device = next(projector.parameters()).device
    targets = idf_targets(corpus, lm, ids).to(device)  # (n, d_gen)
    x = torch.from_numpy(corpus.embeddings[ids]).to(device)  # (n, d_emb)
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        batch = torch.randint(0, len(ids), (64,), generator=gen).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step / steps, lr)
        loss = F.mse_loss(projector(x[batch]), targets[batch]) / targets.pow(2).mean()  # relative MSE
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def _soft_for(projector: XRAGProjector, corpus: Corpus, seqs: list[TrainSequence]) -> torch.Tensor | None:
    indices = [p for s in seqs for p in s.soft]
    if not indices:
        return None
    weight = next(projector.parameters())
    return projector(torch.from_numpy(corpus.embeddings[indices]).to(weight.device))  # (S, d_gen)


def paraphrase_loss(projector: XRAGProjector, lm: FrozenLM, corpus: Corpus, batch: list[tuple[int, int]],
                    recon_tokens: int) -> torch.Tensor:
    seqs = [lm.paraphrase_sequence(p, corpus.texts[p], PARAPHRASE_TEMPLATES[t], recon_tokens) for p, t in batch]
    logits, target = lm.target_logits(seqs, _soft_for(projector, corpus, seqs))
    return F.cross_entropy(logits, target)


def qa_loss(projector: XRAGProjector, lm: FrozenLM, corpus: Corpus, batch: list[QAExample], kl_weight: float,
            teacher_context: str) -> tuple[torch.Tensor, float, float]:
    titles = [[corpus.titles[p] for p in ex.passages] for ex in batch]
    seqs = [lm.qa_sequence(ex, t) for ex, t in zip(batch, titles, strict=True)]
    logits, target = lm.target_logits(seqs, _soft_for(projector, corpus, seqs))
    nll = F.cross_entropy(logits, target)
    if kl_weight <= 0:
        return nll, float(nll.detach()), 0.0
    with torch.no_grad():
        texts = [ex.evidence if teacher_context == "evidence" else "\n\n".join(corpus.texts[p] for p in ex.passages)
                 for ex in batch]
        teacher = [lm.teacher_sequence(ex, t) for ex, t in zip(batch, texts, strict=True)]
        teacher_logits, teacher_target = lm.target_logits(teacher, None)
        assert torch.equal(teacher_target, target)
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1), log_target=True,
                  reduction="batchmean")  # KL(teacher || student) per target token
    return nll + kl_weight * kl, float(nll.detach()), float(kl.detach())


def train_loop(name: str, projector: XRAGProjector, batches: Any, loss_fn: Any, budget: Budget, lr: float,
               out: Path, log_every: int, checkpoint_every: int, *, batch_size: int = 8, val_fn: Any = None,
               eval_every: int = 0, start_step: int = 0, history: dict[str, Any] | None = None,
               snapshot: Any = None) -> dict[str, Any]:
    """AdamW with warm-up + cosine, clipping at 1.0; ``val_fn()`` (a dict of held-out metrics) runs every
    ``eval_every`` steps and at the end, recorded with the training samples seen so far (the card's curve).

    Checkpoints (every ``checkpoint_every`` steps) hold the projector and ``snapshot(name, step, history)``, from
    which ``--resume`` continues at ``start_step`` with the history so far (the optimizer's moments restart).
    """
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.01)
    history = history or {"loss": [], "nll": [], "kl": [], "seconds": [], "val": []}

    def validate(step: int) -> None:
        if val_fn is None:
            return
        metrics = {"step": step, "samples": step * batch_size, **val_fn()}
        history["val"].append(metrics)
        logger.info("%s held-out at %d samples: %s", name, step * batch_size,
                    {k: v for k, v in metrics.items() if k not in ("step", "samples")})

    if not history["val"]:
        validate(start_step)
    step = start_step
    for batch in batches:
        if budget.done(step):
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(budget.progress(step), lr)
        t0 = time.perf_counter()
        result = loss_fn(batch)
        loss, nll, kl = result if isinstance(result, tuple) else (result, float(result.detach()), 0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        opt.step()
        history["loss"].append(float(loss))
        history["nll"].append(nll)
        history["kl"].append(kl)
        history["seconds"].append(time.perf_counter() - t0)
        step += 1
        if step % log_every == 0 or step == 1:
            recent = history["loss"][-log_every:]
            logger.info("%s step %d/%d loss %.3f (nll %.3f kl %.3f) %.1f s/step, %.0f s elapsed", name, step,
                        budget.steps, sum(recent) / len(recent), nll, kl, history["seconds"][-1],
                        time.perf_counter() - budget.start)
        if eval_every and step % eval_every == 0:
            validate(step)
        if checkpoint_every and step % checkpoint_every == 0:
            _save_checkpoint(projector, out / "checkpoints" / f"{name}-step{step}",
                             snapshot(name, step, history) if snapshot else {"stage": name, "step": step})
    if not history["val"] or history["val"][-1]["step"] != step:
        validate(step)
    return history


def qa_validation(projector: XRAGProjector, lm: FrozenLM, corpus: Corpus, val: list[QAExample],
                  teacher_context: str, batch_size: int) -> dict[str, float]:
    """Held-out answer NLL with soft tokens and the KL to the text-reading teacher (per answer token)."""
    nll = kl = 0.0
    count = 0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            batch = val[i:i + batch_size]
            _, n, k = qa_loss(projector, lm, corpus, batch, 1.0, teacher_context)
            nll, kl, count = nll + n * len(batch), kl + k * len(batch), count + len(batch)
    return {"nll": round(nll / max(1, count), 4), "kl": round(kl / max(1, count), 4)}


def reference_nll(lm: FrozenLM, corpus: Corpus, val: list[QAExample], context: str, batch_size: int) -> float:
    """Held-out answer NLL of the frozen LLM reading ``context``: nothing, the evidence or the passages as text."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            batch = val[i:i + batch_size]
            texts = ["" if context == "none" else ex.evidence if context == "evidence"
                     else "\n\n".join(corpus.texts[p] for p in ex.passages) for ex in batch]
            logits, target = lm.target_logits([lm.teacher_sequence(ex, t) for ex, t in zip(batch, texts, strict=True)],
                                              None)
            total += float(F.cross_entropy(logits, target)) * len(batch)
    return round(total / max(1, len(val)), 4)


def _cycle(items: list[Any], batch_size: int, seed: int, skip: int = 0) -> Any:
    """Shuffled batches, epoch after epoch; ``skip`` drops the first batches (a resumed run sees the same order)."""
    rng = random.Random(seed)
    seen = 0
    while True:
        order = list(items)
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            seen += 1
            if seen > skip:
                yield order[start:start + batch_size]


def _save_checkpoint(projector: XRAGProjector, folder: Path, state: dict[str, Any]) -> None:
    projector.save_pretrained(folder)
    (folder / "history.json").write_text(json.dumps(state) + "\n", encoding="utf-8")


def _resume_point(out: Path) -> tuple[str, int, Path] | None:
    """The latest checkpoint under ``out/checkpoints`` as (stage, step, folder), or None when there is none."""
    found = []
    for folder in (out / "checkpoints").glob("stage*-step*"):
        match = re.fullmatch(r"(stage[12])-step(\d+)", folder.name)
        if match and (folder / "history.json").is_file():
            found.append((match.group(1), int(match.group(2)), folder))
    return max(found, key=lambda item: (item[0], item[1])) if found else None


def plot_curve(points: list[dict[str, Any]], references: dict[str, float], path: Path) -> None:
    """Held-out answer NLL and KL against training samples seen, with the text reader's NLLs as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not points:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    samples = [p["samples"] for p in points]
    left.plot(samples, [p["nll"] for p in points], marker="o", label="soft tokens")
    for name, style in (("none", ":"), ("passages", "--"), ("evidence", "-.")):
        if name in references:
            left.axhline(references[name], linestyle=style, color="grey", label=f"text reader: {name}")
    left.set_xlabel("stage-2 training samples seen")
    left.set_ylabel("held-out answer NLL")
    left.legend(fontsize=7)
    right.plot(samples, [p["kl"] for p in points], marker="o", color="tab:red")
    right.set_xlabel("stage-2 training samples seen")
    right.set_ylabel("held-out KL(teacher || student)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_losses(losses: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no loss plot (pip install 'ragzip[train]')")
        return
    stages = [(k, v) for k, v in losses.items() if v]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.4))
    for ax, (name, series) in zip(np.atleast_1d(axes), stages, strict=True):
        if isinstance(series, dict):
            for key in ("loss", "nll", "kl"):
                if any(series.get(key, [])):
                    ax.plot(_smooth(series[key]), label=key)
            ax.legend()
        else:
            ax.plot(_smooth(series))
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log" if name == "stage0" else "linear")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


def train(args: argparse.Namespace) -> int:
    from ragzip.generation import GeneratorConfig, HFGenerator

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_context_template("ragzip train xrag", args.context_template)
    started = time.perf_counter()
    data = build_data([Path(p) for p in args.data], seed=args.seed,
                      n_paraphrase=args.stage1_steps * args.batch_size + 64,
                      n_qa=args.stage2_steps * args.batch_size + 64, n_val=args.val_examples,
                      max_passages=args.max_passages)
    corpus: Corpus = data["corpus"]
    logger.info("data: %d passages, %d paraphrase, %d QA examples, %d held-out validation examples (questions per "
                "source file: %s)", len(corpus.texts), len(data["paraphrase"]), len(data["qa"]), len(data["val"]),
                data["sources"])
    encode_pool(corpus, args.embedder, out / "cache")
    generator = HFGenerator(GeneratorConfig(model=args.generator))
    lm = FrozenLM(generator, args.context_template)
    config = ProjectorConfig(embedder=args.embedder, embedder_dim=int(corpus.embeddings.shape[1]),
                             generator=args.generator, generator_hidden=generator.hidden_size,
                             context_template=args.context_template)
    projector = XRAGProjector(config)
    projector.record_bases(encoder=load_encoder(config), generator=generator)  # checked when the artifact loads
    projector.to(generator.device)
    losses: dict[str, Any] = {"stage0": [], "stage1": {}, "stage2": {}}
    times: dict[str, float] = {}
    resume = _resume_point(out) if args.resume else None
    if resume is not None:
        stage, step, folder = resume
        projector.load_state_dict(XRAGProjector.from_pretrained(folder).state_dict())
        previous = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        losses.update(previous.get("losses", {}))
        times.update(previous.get("times", {}))
        logger.info("resuming from %s: %s at step %d", folder, stage, step)
    else:
        stage, step = "stage0", 0

    val_para = [(p, 0) for p in data["heldout"][:16]]
    if stage == "stage0":
        t0 = time.perf_counter()
        pool = sorted({p for ex in data["qa"] for p in ex.passages})
        losses["stage0"] = run_stage0(projector, corpus, lm, pool, args.stage0_steps, args.stage0_lr, args.seed)
        times["stage0_s"] = time.perf_counter() - t0
        logger.info("stage 0: relative MSE %.3f -> %.3f in %.0f s", losses["stage0"][0], losses["stage0"][-1],
                    times["stage0_s"])
        times["val_recon_before"] = _val(lambda b: paraphrase_loss(projector, lm, corpus, b, args.recon_tokens),
                                         val_para, 8)
        stage, step = "stage1", 0

    def snapshot(name: str, at: int, history: dict[str, Any]) -> dict[str, Any]:
        return {"losses": {**losses, name: history}, "times": times, "stage": name, "step": at}

    if stage == "stage1":
        rng = random.Random(args.seed)
        stage1_items = [(p, rng.randrange(len(PARAPHRASE_TEMPLATES))) for p in data["paraphrase"]]
        t0 = time.perf_counter()
        losses["stage1"] = train_loop(
            "stage1", projector, _cycle(stage1_items, args.batch_size, args.seed, skip=step),
            lambda b: paraphrase_loss(projector, lm, corpus, b, args.recon_tokens),
            Budget(args.stage1_steps, args.stage1_minutes * 60, done_steps=step), args.stage1_lr, out, args.log_every,
            args.checkpoint_every, batch_size=args.batch_size, start_step=step, history=losses["stage1"] or None,
            snapshot=snapshot)
        times["stage1_s"] = times.get("stage1_s", 0.0) + time.perf_counter() - t0
        times["val_recon_after1"] = _val(lambda b: paraphrase_loss(projector, lm, corpus, b, args.recon_tokens),
                                         val_para, 8)
        logger.info("stage 1: %d steps; held-out reconstruction NLL %.3f -> %.3f", len(losses["stage1"]["loss"]),
                    times.get("val_recon_before", float("nan")), times["val_recon_after1"])
        _save_checkpoint(projector, out / "checkpoints" / "stage2-step0", snapshot("stage2", 0, {}))
        stage, step = "stage2", 0

    references = {name: reference_nll(lm, corpus, data["val"], name, args.batch_size)
                  for name in ("none", "evidence", "passages")}
    logger.info("held-out answer NLL of the frozen LLM reading nothing / the evidence / the passages as text: %s",
                references)
    t0 = time.perf_counter()
    losses["stage2"] = train_loop(
        "stage2", projector, _cycle(data["qa"], args.batch_size, args.seed + 1, skip=step),
        lambda b: qa_loss(projector, lm, corpus, b, args.kl_weight, args.teacher_context),
        Budget(args.stage2_steps, args.stage2_minutes * 60, done_steps=step), args.stage2_lr, out, args.log_every,
        args.checkpoint_every, batch_size=args.batch_size, start_step=step, history=losses["stage2"] or None,
        snapshot=snapshot,
        val_fn=lambda: qa_validation(projector, lm, corpus, data["val"], args.teacher_context, args.batch_size),
        eval_every=args.eval_every)
    times["stage2_s"] = times.get("stage2_s", 0.0) + time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - started
    for point in losses["stage2"]["val"]:  # share of the text reader's NLL gain over no context the soft tokens reach
        gain = references["none"] - references["passages"]
        point["recovery_vs_passages"] = round((references["none"] - point["nll"]) / gain, 4) if gain > 0 else None

    def tail(series: list[float]) -> float:
        return round(sum(series[-20:]) / max(1, len(series[-20:])), 4)

    config.training = {
        "command": "ragzip train xrag " + " ".join(args.argv),
        "seed": args.seed,
        "device": str(generator.device),
        "data": {"train_files": [Path(p).name for p in args.data], "questions_per_source": data["sources"],
                 "qa_examples_built": len(data["qa"]), "validation_examples_held_out": len(data["val"]),
                 "dev_files": "never used in training"},
        "steps": {"stage0": len(losses["stage0"]), "stage1": len(losses["stage1"].get("loss", [])),
                  "stage2": len(losses["stage2"]["loss"])},
        "samples_seen": {"stage1": len(losses["stage1"].get("loss", [])) * args.batch_size,
                         "stage2": len(losses["stage2"]["loss"]) * args.batch_size},
        "batch_size": args.batch_size, "recon_tokens": args.recon_tokens, "kl_weight": args.kl_weight,
        "teacher_context": args.teacher_context, "max_passages": args.max_passages,
        "lr": {"stage0": args.stage0_lr, "stage1": args.stage1_lr, "stage2": args.stage2_lr},
        "prompt": {"system_prompt": generator.config.system_prompt,
                   "prompt_template": generator.config.prompt_template},
        "final_loss": {"stage0_rel_mse": tail(losses["stage0"]), "stage1_nll": tail(losses["stage1"].get("loss", [])),
                       "stage2_nll": tail(losses["stage2"]["nll"]), "stage2_kl": tail(losses["stage2"]["kl"])},
        "heldout_recon_nll": {"after_stage0": times.get("val_recon_before"),
                              "after_stage1": times.get("val_recon_after1")},
        "heldout_answer_nll_text_reader": references,
        "heldout_curve": losses["stage2"]["val"],
        "seconds": {k: round(v, 1) for k, v in times.items() if k.endswith("_s")},
        "torch_threads": torch.get_num_threads(),
    }
    projector.save_pretrained(out)
    (out / "losses.json").write_text(json.dumps({"stage0": losses["stage0"], "stage1": losses["stage1"],
                                                 "stage2": losses["stage2"]}) + "\n", encoding="utf-8")
    plot_losses(losses, out / "loss_curves.png")
    plot_curve(losses["stage2"]["val"], references, out / "heldout_curve.png")
    logger.info("saved the projector to %s (%.1f min in all)", out, times["total_s"] / 60)
    print(json.dumps(config.training, indent=2))
    return 0


def _val(loss_fn: Any, items: list[Any], batch_size: int) -> float:
    with torch.no_grad():
        values = [float(loss_fn(items[i:i + batch_size])) for i in range(0, len(items), batch_size)]
    return sum(values) / max(1, len(values))


# ------------------------------------------------------------------------------------------------------ evaluation
def evaluate(args: argparse.Namespace) -> int:
    """Reconstruction token F1 on held-out passages, QA acc/F1 (SQuAD held-out articles, HotpotQA dev), TTFT."""
    from ragzip.compressor import build_compressor
    from ragzip.embed import Embedder
    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.metrics import f1_score, score
    from ragzip.types import Passage

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
        lm = FrozenLM(generator, xrag.projector.config.context_template)  # type: ignore[attr-defined]
        items = [(i, 0) for i in range(len(ps))]
        nll = _val(lambda b: paraphrase_loss(xrag.projector, lm, corpus, b, args.recon_tokens), items, 8)
        corpus.embeddings = np.roll(corpus.embeddings, 1, axis=0)
        nll_other = _val(lambda b: paraphrase_loss(xrag.projector, lm, corpus, b, args.recon_tokens), items, 8)
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
def _default_data_dir() -> str:
    return os.environ.get("RAGZIP_DATA", str(Path.cwd().parent / "shared" / "data"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragzip train xrag",
        description="Train the xRAG projector (stage 0 warm start, stage 1 paraphrase, stage 2 QA + "
                    "self-distillation) on CPU; `ragzip evaluate xrag --artifact DIR` measures it.")
    parser.add_argument("--out", required=True, help="folder for the projector, losses, plot and checkpoints")
    parser.add_argument("--data", nargs="+", default=None,
                        help="train files (HotpotQA, QED-NQ, SQuAD JSONL, .gz ok); default: hotpotqa_train.jsonl, "
                             "qed_nq_train.jsonl.gz and squad_train_partial.jsonl.gz in --data-dir")
    parser.add_argument("--data-dir", default=_default_data_dir(),
                        help="where the default train files are (default $RAGZIP_DATA or ../shared/data)")
    parser.add_argument("--val-examples", type=int, default=24,
                        help="questions per source held out of training for the validation curve")
    parser.add_argument("--eval-every", type=int, default=50, help="stage-2 steps between validation points")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--embedder", default="embedded:minilm")
    parser.add_argument("--generator", default="embedded:smollm2-135m")
    parser.add_argument("--context-template", default="{soft}", help="per-passage text around the soft token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--stage0-steps", type=int, default=1500)
    parser.add_argument("--stage0-lr", type=float, default=2e-3)
    parser.add_argument("--stage1-steps", type=int, default=60)
    parser.add_argument("--stage1-minutes", type=float, default=15.0, help="wall-clock cap of stage 1")
    parser.add_argument("--stage1-lr", type=float, default=1e-3)
    parser.add_argument("--recon-tokens", type=int, default=32, help="passage tokens reconstructed in stage 1")
    parser.add_argument("--stage2-steps", type=int, default=120)
    parser.add_argument("--stage2-minutes", type=float, default=25.0, help="wall-clock cap of stage 2")
    parser.add_argument("--stage2-lr", type=float, default=5e-4)
    parser.add_argument("--kl-weight", type=float, default=2.0, help="self-distillation weight (xRAG: 2.0)")
    parser.add_argument("--teacher-context", choices=("evidence", "passage"), default="evidence")
    parser.add_argument("--max-passages", type=int, default=3, help="passages per stage-2 example: 1 to this")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 on a shared, oversubscribed machine (2 threads measured 20x slower "
                             "there: OpenMP barriers wait on descheduled threads)")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    return parser


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
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ragzip").setLevel(logging.INFO)
    if argv[:1] == ["heldout-squad"]:
        return write_heldout_squad(argv[1:])
    if argv[:1] == ["eval"]:
        args = build_eval_parser().parse_args(argv[1:])
        torch.set_num_threads(args.threads)
        return evaluate(args)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.data is None:
        args.data = [str(Path(args.data_dir) / name) for name in DEFAULT_TRAIN_FILES]
    torch.set_num_threads(args.threads)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
