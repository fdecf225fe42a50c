"""Does this set of passages answer the question? Sentence scorers and the set-level relevance gate.

Two protocols let compressors meet without importing each other:

- :class:`SentenceScorer`: anything that gives every sentence of every passage a P(useful) (the extractive
  compressor is one); the abstractive compressor and the router score through it.
- :class:`SetGate`: from all the sentence scores of one question's passages, P(the set holds what answers it).

:class:`LogisticSetGate` is the shipped gate: a logistic regression over a few order statistics of the whole set's
scores (:func:`set_features`), not just its best sentence: a set whose second and third best sentences are also
strong, or whose strong sentences sit in one passage, is more likely to hold the evidence than one lucky sentence.
It is fitted by ``ragzip train extractive --fit-set-gate`` on held-out *training* questions and stored as a small
JSON file beside the classifier whose scores it reads.

Example:
    >>> gate = LogisticSetGate(weights=[2.0] + [0.0] * (len(FEATURES) - 1), bias=0.0, threshold=0.5)
    >>> round(gate.probability([[0.9, 0.1], [0.2]]), 3) > round(gate.probability([[0.1], [0.05]]), 3)
    True
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragzip.artifacts import CONFIG_NAME, INTEGRITY, WEIGHTS_NAME, ArtifactError, read_config
from ragzip.errors import ConfigError, ModelNotFoundError
from ragzip.fsutil import sha256_file
from ragzip.types import Passage

FEATURES = ("logit_top1", "logit_top2", "logit_top3", "logit_mean_top5", "log_count_over_half",
            "logit_best_passage_mean", "logit_second_passage_top1")
_EPS = 1e-4
GATE_FILE = "set_gate.json"
FIT_COMMAND = ("ragzip train extractive --fit-set-gate --model {model} --data TRAIN_FILES (the files and --holdout/--seed "
               "the classifier was trained with)")
logger = logging.getLogger(__name__)


@runtime_checkable
class SentenceScorer(Protocol):
    """Scores every sentence of every passage of every question: ``[question][passage][sentence]`` -> P(useful)."""

    def score_sentences(self, queries: list[str], passages: list[list[Passage]]) -> list[list[list[float]]]:
        """P(useful) of each sentence as ``[question][passage][sentence]``, ``passages[i]`` read for ``queries[i]``."""


@runtime_checkable
class SentenceSelector(SentenceScorer, Protocol):
    """A compressor that scores sentences once and keeps them by selection settings (``type: extractive``).

    Other compressors reach it through this protocol, built by the registry (``build_compressor``), never by importing
    its plugin: the abstractive compressor's gate and extractive step, the router's text path.
    """

    def memoize_scores(self) -> None:
        """Start a fresh memory of sentence scores, shared with the copies :meth:`with_selection` makes from now."""

    def with_selection(self, **options: Any) -> Any:
        """A copy (a ``Compressor``) that keeps sentences by other selection settings, e.g. ``max_tokens=64``."""

    def budget_selection(self, max_tokens: int | None) -> Any:
        """A copy that keeps the best sentences under ``max_tokens`` by score alone.

        None of this one's other selection settings apply, as when the abstractive compressor's extractive step was
        trained.
        """

    def model_folder(self) -> Path | None:
        """The folder of the scoring model (where a set gate is fitted beside it), or ``None`` for a hub id."""


@runtime_checkable
class SetGate(Protocol):
    """P(this question's passages hold what answers it), from the sentence scores of all of them."""

    threshold: float

    def probability(self, scores: Sequence[Sequence[float]]) -> float:
        """P(the set holds what answers the question), from ``scores[passage][sentence]``; compared to ``threshold``."""


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def set_features(scores: Sequence[Sequence[float]]) -> list[float]:
    """The features of one question's set: ``scores[passage][sentence]`` (non-finite scores are left out).

    In order (:data:`FEATURES`): the logits of the best, second and third sentence scores, of the mean of the top
    five, ``log(1 + number of sentences >= 0.5)``, the logit of the mean of the best passage's top-3 sentences, and
    of the best sentence of the second-best passage. An empty set gives the features of all-zero scores.
    """
    rows = [[float(x) for x in row if isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)]
            for row in scores]
    flat = sorted((x for row in rows for x in row), reverse=True)
    top = [*flat[:5], *([0.0] * max(0, 5 - len(flat)))]
    per_passage = sorted((sorted(row, reverse=True) for row in rows if row), key=lambda r: -r[0])
    best_mean = sum(per_passage[0][:3]) / len(per_passage[0][:3]) if per_passage else 0.0
    second = per_passage[1][0] if len(per_passage) > 1 else 0.0
    return [_logit(top[0]), _logit(top[1]), _logit(top[2]), _logit(sum(top) / 5),
            math.log1p(sum(x >= 0.5 for x in flat)), _logit(best_mean), _logit(second)]


@dataclass
class LogisticSetGate:
    """``P = sigmoid(weights . standardized features + bias)``; "nothing helps" when ``P < threshold``."""

    weights: list[float]
    bias: float
    threshold: float
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.features) != list(FEATURES):
            raise ConfigError(f"set gate features {self.features} are not this ragzip's {list(FEATURES)}; refit it "
                              "with `ragzip train extractive --fit-set-gate`.")
        for name in ("weights", "mean", "scale"):
            if len(getattr(self, name)) != len(FEATURES):
                raise ConfigError(f"set gate {name} has {len(getattr(self, name))} values, expected {len(FEATURES)}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"set gate threshold must be in [0, 1], got {self.threshold}.")

    def logit(self, scores: Sequence[Sequence[float]]) -> float:
        """The gate's log-odds that the set holds the evidence, from ``scores[passage][sentence]``."""
        x = set_features(scores)
        return self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale,
                                                                       strict=True))

    def probability(self, scores: Sequence[Sequence[float]]) -> float:
        """P(the set holds what answers the question): the sigmoid of :meth:`logit`."""
        z = self.logit(scores)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    # --------------------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the gate as JSON (``{"type": "set_gate", ...}``) to ``path`` and return it; :meth:`load` reads it."""
        path = Path(path)
        path.write_text(json.dumps({"type": "set_gate", **asdict(self)}, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, fix: str = "") -> LogisticSetGate:
        """Read a gate written by :meth:`save`.

        Args:
            path: The JSON file.
            fix: What the error messages tell the user to do; by default, the command that fits a gate.

        Raises:
            ModelNotFoundError: there is no file at ``path``.
            ConfigError: the file is not a set gate, or its fields or features are not this ragzip's.
        """
        path = Path(path)
        fix = fix or f"fit one with `{FIT_COMMAND.format(model=path.parent)}`"
        if not path.is_file():
            raise ModelNotFoundError(f"no set gate at {str(path)!r}; {fix}.")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("type", None) != "set_gate":
            raise ConfigError(f"{path} is not a set gate file (no \"type\": \"set_gate\"); {fix}.")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"{path} does not hold this ragzip's set gate fields ({err}); {fix}.") from None

    # ------------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, sets: Sequence[Sequence[Sequence[float]]], labels: Sequence[int], *, l2: float = 1.0,
            threshold: float = 0.5, iterations: int = 50) -> LogisticSetGate:
        """Fit by Newton's method (L2-penalised logistic regression on standardized features)."""
        x = np.array([set_features(s) for s in sets], dtype=np.float64)
        y = np.array(labels, dtype=np.float64)
        if len(set(y.tolist())) < 2:
            raise ConfigError("a set gate needs sets with and without evidence to fit; got one class only.")
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-8] = 1.0
        z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
        w = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], l2)
        penalty[-1] = 0.0
        for _ in range(iterations):
            p = 1 / (1 + np.exp(-(z @ w)))
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(weights=[float(v) for v in w[:-1]], bias=float(w[-1]), threshold=threshold,
                   mean=[float(v) for v in mean], scale=[float(v) for v in scale])


def load_beside(folder: str | Path, *, fix: str = "") -> LogisticSetGate:
    """The set gate fitted beside a classifier artifact (``<folder>/set_gate.json``).

    The gate's features are that classifier's scores, so it is refused when the classifier's weights file is not the
    one it was fitted on; a gate that does not record them loads with a warning.

    Args:
        folder: The classifier's artifact folder.
        fix: What the error messages tell the user to do; by default, the command that refits the gate.

    Raises:
        ModelNotFoundError: the folder holds no set gate.
        ConfigError: the file is not a valid set gate.
        ArtifactError: the gate was fitted on another classifier's scores.
    """
    folder = Path(folder)
    fix = fix or f"refit it with `{FIT_COMMAND.format(model=folder)}`"
    gate = LogisticSetGate.load(folder / GATE_FILE, fix=fix)
    want = gate.training.get("classifier_weights_sha256")
    weights = folder / WEIGHTS_NAME
    if not want or not weights.is_file():
        logger.warning("%s does not record the classifier weights it was fitted on (or %s is missing): it cannot be "
                       "checked against them", folder / GATE_FILE, weights)
        return gate
    # The classifier's config.json records its weights' hash, and loading the classifier checks the file against it;
    # hash the (large) file here only for an artifact saved before those records.
    have = (read_config(folder, where="set gate", fix=fix).get(INTEGRITY) or {}).get("weights_sha256") \
        if (folder / CONFIG_NAME).is_file() else None
    have = have or sha256_file(weights)
    if want != have:
        raise ArtifactError(f"{folder / GATE_FILE} was fitted on another classifier's scores (weights sha256 "
                            f"{str(want)[:16]}..., this folder's are {have[:16]}...); {fix}.")
    return gate


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties counted half."""
    if not positives or not negatives:
        return math.nan
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def threshold_for(positive_probs: Sequence[float], max_positive_gated: float) -> float:
    """The largest threshold that gates (``P < threshold``) at most ``max_positive_gated`` of the positive sets."""
    if not positive_probs:
        raise ConfigError("no positive sets to calibrate the gate threshold on.")
    if not 0.0 <= max_positive_gated < 1.0:
        raise ConfigError(f"the share of positive sets a gate may close must lie in [0, 1), got {max_positive_gated}.")
    ordered = sorted(positive_probs)
    allowed = int(math.floor(max_positive_gated * len(ordered)))
    return ordered[allowed] if allowed < len(ordered) else ordered[-1]
