"""``ragzip train refrag``: train REFRAG's encoder top layer, projector and expansion policy on CPU-sized budgets.

Stages (the decoder stays frozen throughout; no LoRA, so the artifact holds only the small trained parts):

1. **Reconstruction.** The decoder reads the projected chunk vectors of a window of L chunks and must reproduce the
   window's tokens. Curriculum: L grows geometrically (1 -> 2 -> 4 -> 8 chunks) as the stage's budget is spent;
   REFRAG reports that training without it does not converge.
2. **Continual pretraining by next-paragraph prediction.** The decoder reads a compressed paragraph (its last L
   chunks, L growing 1 -> 16, half the examples with a random 0-50% of the chunks expanded as raw tokens) and
   predicts the next paragraph (SQuAD articles) or the rest of the paragraph (HotpotQA).
3. **Expansion policy.** REINFORCE with a group baseline (GRPO-style): for a HotpotQA train question over its gold and
   distractor paragraphs, the policy samples G expansion sets of size round(p * L) (Plackett-Luce, Gumbel top-m);
   reward = -(mean NLL of the gold answer) through the frozen decoder in the generator's own prompt format.

Each stage runs for a wall-clock budget (``--stageN-minutes``) or a step cap, whichever comes first, and the
curriculum and learning-rate schedule follow the fraction of the budget spent, so a run adapts to a loaded machine.
Data: ``../shared/data`` SQuAD paragraphs and HotpotQA *train* paragraphs/questions; a fixed set of SQuAD articles and
the last 100 HotpotQA train records are held out for evaluation (``hotpotqa_dev`` is never read).

Example:
    ragzip train refrag --out runs/refrag-k16 --k 16 --stage1-minutes 10 --stage2-minutes 14 --stage3-minutes 12
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ragzip.data import read_jsonl
from ragzip.plugins.refrag.config import RefragModelConfig, check_k
from ragzip.plugins.refrag.kernels import assemble_embeddings
from ragzip.plugins.refrag.modeling import (
    Chunk,
    RefragModel,
    budget,
    chunk_passage,
    plackett_luce_sample,
    policy_scalars,
)

logger = logging.getLogger("ragzip.refrag.train")

SENTINEL = "\u0000CONTEXT\u0000"
HELD_OUT_HOTPOT = 100
SQUAD_EVAL_EVERY = 6  # every 6th SQuAD article (sorted by title) is held out


# ------------------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class QAItem:
    question: str
    answer: str
    passages: tuple[str, ...]


@dataclass
class Corpus:
    """Training/evaluation text: (context, continuation, separator) pairs, plain paragraphs and QA items."""

    train_paragraphs: list[str]
    train_pairs: list[tuple[str, str, str]]
    eval_pairs: list[tuple[str, str, str]]
    train_qa: list[QAItem]
    eval_qa: list[QAItem]
    eval_titles: list[str]
    eval_pair_titles: list[str]


def load_corpus(data_dir: str | Path, *, max_qa_passages: int = 4) -> Corpus:
    """Read SQuAD dev paragraphs (grouped into articles) and HotpotQA train records from ``data_dir``."""
    data_dir = Path(data_dir)
    squad, hotpot = data_dir / "squad_dev.jsonl", data_dir / "hotpotqa_train.jsonl"
    for path in (squad, hotpot):
        if not path.is_file():
            raise FileNotFoundError(f"training data {str(path)!r} not found; pass --data DIR (the folder with "
                                    "squad_dev.jsonl and hotpotqa_train.jsonl).")
    articles: dict[str, list[str]] = {}
    for row in read_jsonl(squad):
        paragraphs = articles.setdefault(row.get("title") or "untitled", [])
        if not paragraphs or paragraphs[-1] != row["context"]:
            if row["context"] not in paragraphs:
                paragraphs.append(row["context"])
    titles = sorted(articles)
    eval_titles = [t for i, t in enumerate(titles) if i % SQUAD_EVAL_EVERY == SQUAD_EVAL_EVERY - 1]
    train_pairs, eval_pairs, train_paragraphs, eval_pair_titles = [], [], [], []
    for title in titles:
        paragraphs = articles[title]
        pairs = [(a, b, "\n\n") for a, b in zip(paragraphs, paragraphs[1:])]
        if title in eval_titles:
            eval_pairs.extend(pairs)
            eval_pair_titles.extend([title.replace("_", " ")] * len(pairs))
        else:
            train_pairs.extend(pairs)
            train_paragraphs.extend(paragraphs)

    records = read_jsonl(hotpot)
    held = records[-HELD_OUT_HOTPOT:]
    held_texts = {"".join(s) for r in held for _, s in r["context"]}
    seen: set[str] = set()
    train_qa, eval_qa = [], []
    for i, r in enumerate(records):
        gold = {t for t, _ in r.get("supporting_facts", [])}
        paras = [(t, "".join(s).strip()) for t, s in r["context"]]
        chosen = [p for t, p in paras if t in gold] + [p for t, p in paras if t not in gold]
        chosen = [p for p in chosen if p][:max_qa_passages]
        order = [p for _, p in paras if p in chosen]  # keep the record's order (gold not always first)
        item = QAItem(r["question"], r["answer"], tuple(order))
        (eval_qa if i >= len(records) - HELD_OUT_HOTPOT else train_qa).append(item)
        if i < len(records) - HELD_OUT_HOTPOT:
            for _, p in paras:
                if p and p not in seen and p not in held_texts:
                    seen.add(p)
                    train_paragraphs.append(p)
    return Corpus(train_paragraphs, train_pairs, eval_pairs, train_qa, eval_qa, eval_titles, eval_pair_titles)


# --------------------------------------------------------------------------------------------------- batch building
Segment = tuple[str, Any]  # ("soft", Tensor (n, d)) | ("tokens", list[int]) | ("target", list[int])


def assemble_batch(weight: torch.Tensor, seqs: Sequence[Sequence[Segment]], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs_embeds (B, T, d), attention_mask (B, T), labels (B, T))`` from segment lists.

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
                labels += [-100] * n
                n_soft += n
            else:
                ids += list(value)
                sidx += [-1] * len(value)
                labels += list(value) if kind == "target" else [-100] * len(value)
        rows_ids.append(ids)
        rows_soft.append(sidx)
        rows_labels.append(labels)
    width = max(len(r) for r in rows_ids)
    pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])  # noqa: E731
    token_ids, soft_index, labels = pad(rows_ids, pad_id), pad(rows_soft, -1), pad(rows_labels, -100)
    mask = pad([[1] * len(r) for r in rows_ids], 0)
    soft = torch.cat(softs, dim=0) if softs else weight.new_zeros(0, weight.shape[1])  # (S, d)
    embeds = assemble_embeddings(weight, token_ids.to(weight.device), soft.to(weight.device),
                                 soft_index.to(weight.device))  # (B, T, d)
    return embeds, mask.to(weight.device), labels.to(weight.device)


def lm_nll(decoder: Any, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token NLL of the labelled positions: ``(mean over all labelled tokens, per-sequence mean (B,))``.

    The LM head runs only where a label is scored (it is ~20% of SmolLM2's compute at every position).
    """
    hidden = decoder.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (B, T, d)
    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    scored = targets != -100  # (B, T-1)
    logits = decoder.lm_head(hidden[:, :-1][scored]).float()  # (N, V)
    nll = torch.nn.functional.cross_entropy(logits, targets[scored], reduction="none")  # (N,)
    rows = scored.nonzero()[:, 0]  # (N,)
    per_seq = torch.zeros(len(labels), device=nll.device).index_add(0, rows, nll)  # (B,)
    counts = torch.zeros(len(labels), device=nll.device).index_add(0, rows, torch.ones_like(nll))
    return nll.mean(), per_seq / counts.clamp(min=1)


def context_segments(chunks: Sequence[Chunk], vectors: torch.Tensor, expanded: set[int]) -> list[Segment]:
    """A compressed passage as segments: one vector per compressed chunk, raw ids for expanded ones, in order."""
    segs: list[Segment] = []
    for j, chunk in enumerate(chunks):
        if j in expanded:
            segs.append(("tokens", list(chunk.ids)))
        else:
            segs.append(("soft", vectors[j:j + 1]))
    return segs


# ------------------------------------------------------------------------------------------------------ schedules
def lr_factor(fraction: float, warmup: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 10%, over the fraction of the stage's budget spent."""
    if fraction < warmup:
        return max(fraction / warmup, 0.05)
    progress = min((fraction - warmup) / (1 - warmup), 1.0)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


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


class Budget:
    """A stage's wall-clock and step budget; ``fraction`` drives the schedules."""

    def __init__(self, minutes: float, max_steps: int) -> None:
        self.seconds = minutes * 60.0
        self.max_steps = max_steps
        self.start = time.perf_counter()
        self.steps = 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def fraction(self) -> float:
        return min(max(self.elapsed / self.seconds, self.steps / max(self.max_steps, 1)), 1.0)

    def done(self) -> bool:
        return self.elapsed >= self.seconds or self.steps >= self.max_steps


# --------------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Holds the frozen decoder, the REFRAG model and the tokenized data; runs the three stages."""

    def __init__(self, args: argparse.Namespace, corpus: Corpus, model: RefragModel, decoder: Any, tokenizer: Any
                 ) -> None:
        self.args = args
        self.corpus = corpus
        self.model = model
        self.decoder = decoder
        self.tok = tokenizer
        self.k = args.k
        self.rng = random.Random(args.seed)
        self.weight = decoder.get_input_embeddings().weight  # (V, d), frozen
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.sep_ids = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
        self.log: dict[str, list[dict[str, float]]] = {"stage1": [], "stage2": [], "stage3": []}
        self.out = Path(args.out)
        self._chunk_cache: dict[str, list[Chunk]] = {}
        self._prompt_parts: Callable[[str], tuple[list[int], list[int]]] | None = None

    def chunks(self, text: str) -> list[Chunk]:
        cached = self._chunk_cache.get(text)
        if cached is None:
            cached = chunk_passage(text, self.tok, self.k)
            if len(self._chunk_cache) < 200_000:
                self._chunk_cache[text] = cached
        return cached

    def trainable(self, *, policy: bool) -> list[torch.nn.Parameter]:
        if policy:
            return list(self.model.policy.parameters())
        params = list(self.model.projector.parameters())
        for layer in self.model.trained_layers():
            params += list(layer.parameters())
        return params

    def _optimizer(self, lr_proj: float, lr_enc: float) -> torch.optim.Optimizer:
        groups = [{"params": list(self.model.projector.parameters()), "lr": lr_proj, "base_lr": lr_proj}]
        enc = [p for layer in self.model.trained_layers() for p in layer.parameters()]
        if enc:
            groups.append({"params": enc, "lr": lr_enc, "base_lr": lr_enc})
        return torch.optim.AdamW(groups, weight_decay=0.01)

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, b: Budget, params: Any) -> float:
        """One optimizer step on the stage's schedule (gradients clipped to norm 1); returns the gradient norm."""
        self._set_lr(opt, lr_factor(b.fraction))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        b.steps += 1
        return float(norm)

    @staticmethod
    def _set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _record(self, stage: str, budget_: Budget, **values: float) -> None:
        row = {"step": budget_.steps, "elapsed_s": round(budget_.elapsed, 1), **{k: round(v, 5) for k, v in
                                                                                  values.items()}}
        self.log[stage].append(row)
        if budget_.steps % self.args.log_every == 0 or budget_.steps <= 3:
            logger.info("%s %s", stage, json.dumps(row))

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

    def stage1(self) -> None:
        args = self.args
        opt = self._optimizer(args.lr1, args.lr1_encoder)
        b = Budget(args.stage1_minutes, args.stage1_steps)
        self.model.train()
        while not b.done():
            sizes = curriculum(b.fraction, args.max_recon_chunks)
            windows, positions = [], 0
            while positions < args.positions_per_step or not windows:
                window, n_tokens = self.recon_example(sizes)
                windows.append(window)
                positions += n_tokens + len(window)
            texts = [c.text for w in windows for c in w]
            vectors = self.model.project(self.model.encode(texts))  # (sum L, d)
            seqs, offset = [], 0
            for w in windows:
                seqs.append([("soft", vectors[offset:offset + len(w)]), ("target", [i for c in w for i in c.ids])])
                offset += len(w)
            embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
            loss, _ = lm_nll(self.decoder, embeds, mask, labels)
            norm = self._step(opt, loss, b, self.trainable(policy=False))
            self._record("stage1", b, loss=loss.item(), max_chunks=float(max(len(w) for w in windows)),
                         batch=float(len(windows)), grad_norm=norm)
        self.save_checkpoint("stage1")

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
        """A (context, continuation, separator) pair: SQuAD next paragraph, or a HotpotQA paragraph's tail."""
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

    def stage2(self) -> None:
        args = self.args
        opt = self._optimizer(args.lr2, args.lr2_encoder)
        b = Budget(args.stage2_minutes, args.stage2_steps)
        self.model.train()
        while not b.done():
            sizes = curriculum(b.fraction, args.max_cpt_chunks)
            examples, positions = [], 0
            while positions < args.positions_per_step or not examples:
                context, continuation, sep, n = self.cpt_example(sizes)
                chunks = self.chunks(context)[-n:]
                expanded: set[int] = set()
                if self.rng.random() < args.cpt_expand_prob and len(chunks) > 1:
                    m = int(self.rng.random() * 0.5 * len(chunks))
                    expanded = set(self.rng.sample(range(len(chunks)), m))
                examples.append((context, continuation, sep, n, chunks, expanded))
                positions += len(chunks) + sum(len(chunks[j]) - 1 for j in expanded) + args.cpt_target_tokens
            texts = [c.text for *_, chunks, _ in examples for c in chunks]
            vectors = self.model.project(self.model.encode(texts))  # (sum L, d)
            seqs, offset = [], 0
            for context, continuation, sep, n, chunks, expanded in examples:
                seqs.append(self.cpt_sequence(context, continuation, sep, n, vectors[offset:offset + len(chunks)],
                                              expanded, args.cpt_target_tokens))
                offset += len(chunks)
            embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
            loss, _ = lm_nll(self.decoder, embeds, mask, labels)
            norm = self._step(opt, loss, b, self.trainable(policy=False))
            self._record("stage2", b, loss=loss.item(), max_chunks=float(max(len(e[4]) for e in examples)),
                         batch=float(len(examples)), grad_norm=norm)
        self.save_checkpoint("stage2")

    # ------------------------------------------------------------------------------------------ stage 3
    def prompt_parts(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids of the generator's prompt before and after the context (system prompt, template, question)."""
        from ragzip.generation import GeneratorConfig, HFGenerator

        if self._prompt_parts is None:
            gen = HFGenerator(GeneratorConfig(model=self.args.decoder), model=self.decoder, tokenizer=self.tok)

            def parts(q: str) -> tuple[list[int], list[int]]:
                prompt = gen.format_prompt(q, SENTINEL)
                before, after = prompt.split(SENTINEL)
                prefix, suffix = gen._special_affixes() if gen._adds_special_tokens(prompt) else ([], [])
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
        answer = list(self.tok(item.answer, add_special_tokens=False)["input_ids"])
        return [*segs, ("tokens", after), ("target", answer)]

    def answer_nll(self, item: QAItem, inputs: dict[str, Any], selections: Sequence[set[int] | None]) -> torch.Tensor:
        """Mean answer-token NLL for each expansion set (``None`` = full context), one batched decoder pass."""
        with torch.no_grad():
            seqs = [self.qa_sequence(item, inputs, s) for s in selections]
            embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
            _, per_seq = lm_nll(self.decoder, embeds, mask, labels)
        return per_seq.cpu()  # (G,)

    def stage3(self) -> None:
        args = self.args
        opt = torch.optim.AdamW(self.model.policy.parameters(), lr=args.lr3, weight_decay=0.0)
        for group in opt.param_groups:
            group["base_lr"] = args.lr3
        b = Budget(args.stage3_minutes, args.stage3_steps)
        self.model.eval()
        self.model.policy.train()
        sampler = torch.Generator().manual_seed(args.seed)
        items = [it for it in self.corpus.train_qa if it.passages and it.answer.strip()]
        while not b.done():
            losses, rewards, gaps = [], [], []
            for _ in range(args.policy_batch):
                item = self.rng.choice(items)
                inputs = self.qa_inputs(item)
                n = len(inputs["c"])
                m = budget(args.p, n)
                if m == 0 or m == n:
                    continue
                logits = self.model.policy_logits(inputs["c"], inputs["q"], inputs["scalars"])  # (L,)
                samples = [plackett_luce_sample(logits, m, sampler) for _ in range(args.group)]
                nll = self.answer_nll(item, inputs, [set(idx.tolist()) for idx, _ in samples])  # (G,)
                reward = -nll
                adv = (reward - reward.mean()) / (reward.std() + 1e-4)  # group baseline (GRPO-style)
                log_probs = torch.stack([lp for _, lp in samples])  # (G,)
                losses.append(-(adv.detach() * log_probs).mean())
                rewards.append(float(reward.mean()))
                gaps.append(float(reward.max() - reward.min()))
            if not losses:
                continue
            loss = torch.stack(losses).mean()
            self._step(opt, loss, b, self.model.policy.parameters())
            self._record("stage3", b, loss=loss.item(), reward=sum(rewards) / len(rewards),
                         reward_spread=sum(gaps) / len(gaps))
        self.save_checkpoint("stage3")

    # ------------------------------------------------------------------------------------------ evaluation
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
            embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
            loss, _ = lm_nll(self.decoder, embeds, mask, labels)
        return float(loss)

    def eval_cpt(self, n: int = 24, max_chunks: int = 16) -> dict[str, float]:
        """Held-out next-paragraph NLL: REFRAG p=0 against the full raw context and against no context."""
        pairs = self.corpus.eval_pairs[:n]
        out = {}
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
                embeds, mask, labels = assemble_batch(self.weight, seqs, self.pad_id)
                loss, _ = lm_nll(self.decoder, embeds, mask, labels)
                out[name] = float(loss)
        return out

    # ------------------------------------------------------------------------------------------ saving
    def save_checkpoint(self, stage: str) -> None:
        folder = self.out / "checkpoints" / stage
        self.model.save_pretrained(folder)
        (self.out / "training_log.json").write_text(json.dumps(self.log, indent=1) + "\n", encoding="utf-8")
        logger.info("saved checkpoint %s", folder)


def plot_losses(log: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Loss curves of the three stages as one PNG (needs matplotlib; skipped with a warning without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no loss-curve PNG (pip install 'ragzip[train]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    titles = {"stage1": "stage 1: reconstruction NLL", "stage2": "stage 2: next-paragraph NLL",
              "stage3": "stage 3: policy reward (-answer NLL)"}
    for ax, (stage, title) in zip(axes, titles.items()):
        rows = log.get(stage, [])
        key = "reward" if stage == "stage3" else "loss"
        if rows:
            xs = [r["step"] for r in rows]
            ys = [r[key] for r in rows]
            ax.plot(xs, ys, alpha=0.35, label=key)
            window = max(1, len(ys) // 20)
            smooth = [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1])
                      for i in range(len(ys))]
            ax.plot(xs, smooth, label=f"moving mean ({window})")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragzip train refrag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the artifact, checkpoints, logs and loss curves")
    parser.add_argument("--data", default=os.environ.get("RAGZIP_DATA", str(Path("..") / "shared" / "data")),
                        help="folder with squad_dev.jsonl and hotpotqa_train.jsonl")
    parser.add_argument("--k", type=int, default=16, help="decoder tokens per chunk (8, 16 or 32)")
    parser.add_argument("--p", type=float, default=0.25, help="expansion budget the policy is trained for")
    parser.add_argument("--encoder", default="embedded:minilm")
    parser.add_argument("--decoder", default="embedded:smollm2-135m")
    parser.add_argument("--encoder-trained-layers", type=int, default=1, help="top encoder layers to train (0-6)")
    parser.add_argument("--init", default="", help="start from this artifact folder (e.g. a checkpoint)")
    parser.add_argument("--stages", default="1,2,3", help="which stages to run, e.g. 3 to train only the policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 on a shared machine: 2 OpenMP threads on oversubscribed cores "
                             "spin-wait and ran 10-20x slower here)")
    parser.add_argument("--positions-per-step", type=int, default=384, help="decoder positions per optimizer step")
    parser.add_argument("--stage1-minutes", type=float, default=12.0)
    parser.add_argument("--stage1-steps", type=int, default=100_000)
    parser.add_argument("--stage2-minutes", type=float, default=16.0)
    parser.add_argument("--stage2-steps", type=int, default=100_000)
    parser.add_argument("--stage3-minutes", type=float, default=12.0)
    parser.add_argument("--stage3-steps", type=int, default=100_000)
    parser.add_argument("--lr1", type=float, default=1e-3, help="stage 1 projector learning rate")
    parser.add_argument("--lr1-encoder", type=float, default=1e-4, help="stage 1 encoder-layer learning rate")
    parser.add_argument("--lr2", type=float, default=5e-4)
    parser.add_argument("--lr2-encoder", type=float, default=5e-5)
    parser.add_argument("--lr3", type=float, default=3e-3)
    parser.add_argument("--max-recon-chunks", type=int, default=8)
    parser.add_argument("--max-cpt-chunks", type=int, default=16)
    parser.add_argument("--cpt-target-tokens", type=int, default=32)
    parser.add_argument("--cpt-expand-prob", type=float, default=0.5)
    parser.add_argument("--policy-batch", type=int, default=4, help="questions per policy step")
    parser.add_argument("--group", type=int, default=4, help="expansion sets sampled per question")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-examples", type=int, default=24)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip train refrag``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    check_k("--k", args.k)
    from ragzip.plugins.refrag.config import check_p

    check_p("--p", args.p)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)

    from ragzip.models import load_causal_lm

    t0 = time.perf_counter()
    decoder, tokenizer = load_causal_lm(args.decoder)
    decoder.requires_grad_(False)
    corpus = load_corpus(args.data)
    logger.info("data: %d training paragraphs, %d/%d next-paragraph pairs (train/eval), %d/%d QA (train/eval); "
                "held-out SQuAD articles: %s", len(corpus.train_paragraphs), len(corpus.train_pairs),
                len(corpus.eval_pairs), len(corpus.train_qa), len(corpus.eval_qa), ", ".join(corpus.eval_titles))
    if args.init:
        model = RefragModel.from_pretrained(args.init)
        model.config.k = args.k
    else:
        config = RefragModelConfig(encoder=args.encoder, decoder=args.decoder, k=args.k,
                                   decoder_hidden=int(decoder.get_input_embeddings().embedding_dim),
                                   encoder_trained_layers=args.encoder_trained_layers)
        model = RefragModel(config)
    model.freeze_base()
    model.record_decoder(decoder, tokenizer)  # its fingerprints go into config.json, checked when bound
    trainer = Trainer(args, corpus, model, decoder, tokenizer)
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    timings: dict[str, float] = {}
    evals: dict[str, Any] = {"before": {"recon": trainer.eval_recon(args.eval_examples)}}
    logger.info("eval before training: %s", evals["before"])
    for stage in ("1", "2", "3"):
        if stage in stages:
            start = time.perf_counter()
            getattr(trainer, f"stage{stage}")()
            timings[f"stage{stage}_s"] = round(time.perf_counter() - start, 1)
            logger.info("stage %s done in %.1f s", stage, timings[f"stage{stage}_s"])
    evals["after"] = {"recon": trainer.eval_recon(args.eval_examples), **trainer.eval_cpt(args.eval_examples)}
    logger.info("eval after training: %s", evals["after"])
    model.config.training = {
        "command": "ragzip train refrag " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed, "steps": {s: len(v) for s, v in trainer.log.items()}, "timings": timings,
        "wall_s": round(time.perf_counter() - t0, 1), "data": "SQuAD v1.1 dev paragraphs (30 of 36 articles), "
        "HotpotQA distractor train paragraphs and questions (first 704 records)", "eval": evals,
        "final_losses": {s: v[-1] for s, v in trainer.log.items() if v},
    }
    model.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(trainer.log, indent=1) + "\n", encoding="utf-8")
    (out / "training_summary.json").write_text(json.dumps(model.config.training, indent=2) + "\n", encoding="utf-8")
    plot_losses(trainer.log, out / "loss_curves.png")
    logger.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
