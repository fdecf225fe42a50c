"""Answer metrics for QA benchmarks: SQuAD normalisation, exact match, token F1 and ``acc`` (answer occurs in output).

All three take one prediction and a list of gold answers and return the best score over the golds, as the SQuAD
evaluation script and FlashRAG do.

``acc`` is the "has answer" metric xRAG and FlashRAG report for small readers that answer in sentences: 1 when a
normalised gold answer occurs in the normalised prediction. ragzip matches it on **word boundaries** (the gold's words
must appear as a contiguous run of the prediction's words, as DPR/xRAG's ``has_answer`` does over tokens), so the gold
"no" is not found inside "not" or "nobody"; FlashRAG's plain substring test would count those.

Example:
    >>> score("The answer is Paris.", ["Paris", "City of Paris"])
    {'acc': 1.0, 'em': 0.0, 'f1': 0.5}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace.

    Example:
        >>> normalize_answer("The  Eiffel Tower!")
        'eiffel tower'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: Sequence[str] | str) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    return [g for g in golds if isinstance(g, str)]


def exact_match(prediction: str, golds: Sequence[str] | str) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str] | str) -> float:
    """SQuAD token F1 between the normalised prediction and the best-matching normalised gold answer."""
    pred = normalize_answer(prediction).split()
    scores = [_f1(pred, normalize_answer(g).split()) for g in _golds(golds)]
    return max(scores, default=0.0)


def has_answer(prediction: str, golds: Sequence[str] | str) -> float:
    """``acc``: 1.0 when some normalised gold answer occurs in the normalised prediction, on word boundaries.

    Golds that normalise to nothing (e.g. "the") are ignored: they would match every prediction.
    """
    pred = f" {normalize_answer(prediction)} "
    for gold in _golds(golds):
        norm = normalize_answer(gold)
        if norm and f" {norm} " in pred:
            return 1.0
    return 0.0


def score(prediction: str, golds: Sequence[str] | str) -> dict[str, float]:
    """All answer metrics of one prediction: ``{"acc", "em", "f1"}``."""
    return {"acc": has_answer(prediction, golds), "em": exact_match(prediction, golds),
            "f1": f1_score(prediction, golds)}


__all__ = ["exact_match", "f1_score", "has_answer", "normalize_answer", "score"]
