"""Evidence metrics: what survives compression, measured without a reader.

The end-to-end table with a small reader cannot separate compressors (one question of 100 is 0.01 acc, the standard
error about 0.04). What a compressor is for — keeping the evidence while cutting tokens — can be measured on the
context itself, as FlashRAG ("gold answer string present"), OpenProvence (evidence recall swept over thresholds) and
EXIT (HotpotQA supporting facts) do. These measures need no generation, so they run on thousands of questions.

Per question:

- ``ans_in_ctx``: 1 when a normalised gold answer occurs, on word boundaries, in the normalised text the generator
  reads (:func:`ragzip.metrics.has_answer`, the same test as ``acc``). ``None`` for yes/no answers (HotpotQA
  comparison questions: "yes" is not a span of the context). For soft compressors only the text the generator reads
  counts — expanded chunks, never what a soft token may carry.
- ``sf_recall``: the share of the question's supporting-fact sentences (HotpotQA) that occur verbatim (after stripping
  surrounding whitespace) in that text; ``sf_all``: 1 when all of them do. ``None`` when the data names none.

Across questions: :func:`paired_bootstrap` gives the 95% interval of the mean difference between two methods on the
same questions; :func:`curve_at` reads a method's operating curve (metric against tokens read) at a budget.

Example:
    >>> evidence("Paris: Paris is the capital of France.", ["paris"], ["Paris is the capital of France."])
    {'ans_in_ctx': 1.0, 'sf_recall': 1.0, 'sf_all': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragzip.metrics import has_answer, normalize_answer

EVIDENCE_KEYS = ("ans_in_ctx", "sf_recall", "sf_all")
YES_NO = frozenset({"yes", "no"})


def answer_in_context(text: str, answers: Sequence[str]) -> float | None:
    """1.0 / 0.0 when a gold answer occurs in ``text`` (as ``acc`` matches); ``None`` for yes/no questions."""
    normalised = {normalize_answer(a) for a in answers}
    if normalised and normalised <= YES_NO:
        return None
    return has_answer(text, answers)


def supporting_facts_kept(text: str, sentences: Sequence[str]) -> tuple[float | None, float | None]:
    """(``sf_recall``, ``sf_all``) of the supporting-fact ``sentences`` in ``text``; (None, None) when there are none.

    Example:
        >>> supporting_facts_kept("A. B.", ["A.", "C."])
        (0.5, 0.0)
    """
    wanted = [s.strip() for s in sentences if s.strip()]
    if not wanted:
        return None, None
    kept = sum(s in text for s in wanted)
    return kept / len(wanted), float(kept == len(wanted))


def evidence(text: str, answers: Sequence[str], supporting: Sequence[str] = ()) -> dict[str, float | None]:
    """The three evidence metrics of one question's context (see the module docstring)."""
    sf_recall, sf_all = supporting_facts_kept(text, supporting)
    return {"ans_in_ctx": answer_in_context(text, answers), "sf_recall": sf_recall, "sf_all": sf_all}


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean over the values that are not ``None`` (``None`` when there are none)."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def paired_bootstrap(a: Sequence[float | None], b: Sequence[float | None], *, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile interval of ``mean(a) - mean(b)`` over questions resampled with replacement, pairs kept together.

    Questions where either value is ``None`` are left out. Identical inputs give ``[0.0, 0.0]``; fewer than two
    usable pairs give ``None``.

    Example:
        >>> paired_bootstrap([1, 0, 1], [1, 0, 1])
        [0.0, 0.0]
    """
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs equal lengths, got {len(a)} and {len(b)}.")
    diffs = np.array([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None], dtype=float)
    diffs = diffs[np.isfinite(diffs)]  # a NaN would make the interval NaN (and the JSON invalid)
    n = len(diffs)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(resamples, n))].mean(axis=1)  # (resamples,)
    tail = 100 * (1.0 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def excludes_zero(interval: Sequence[float] | None) -> bool:
    """True when the interval lies strictly on one side of zero."""
    return bool(interval) and (interval[0] > 0 or interval[1] < 0)


# ----------------------------------------------------------------------------------------------------------- curves
def curve_at(points: Sequence[Mapping[str, Any]], budget: float, metric: str,
             slack: float = 0.05) -> dict[str, Any] | None:
    """A method's ``metric`` at ``budget`` tokens read, interpolated between the two measured settings around it.

    ``points`` holds ``{"label", "tokens", metric}`` per setting; the value is linear between the two settings that
    bracket the budget. Returns ``{"value", "between": [label_low, label_high], "weight"}`` (``weight`` of the higher
    point), or ``None`` when the budget is outside the measured range or the metric is undefined. A point read exactly
    at the budget is returned alone, and so is the highest point when it reads less than the budget by at most ``slack``
    (a budgeted setting spends slightly under its budget: ``max_tokens=256`` reads ~252): a curve that grows with tokens
    is then read at or below the budget, never above it (no extrapolation).
    """
    usable = sorted((p for p in points if p.get(metric) is not None), key=lambda p: p["tokens"])
    if not usable:
        return None
    for p in usable:
        if abs(p["tokens"] - budget) < 1e-9:
            return {"value": p[metric], "between": [p["label"]], "weight": 1.0}
    for lo, hi in zip(usable, usable[1:], strict=False):
        if lo["tokens"] < budget < hi["tokens"]:
            w = (budget - lo["tokens"]) / (hi["tokens"] - lo["tokens"])
            return {"value": (1 - w) * lo[metric] + w * hi[metric], "between": [lo["label"], hi["label"]],
                    "weight": w}
    top = usable[-1]
    if top["tokens"] < budget <= top["tokens"] * (1 + slack):
        return {"value": top[metric], "between": [top["label"]], "weight": 1.0}
    return None


def interpolate_per_question(low: Sequence[float | None], high: Sequence[float | None],
                             weight: float) -> list[float | None]:
    """Per-question values on the straight line between two settings (for paired intervals at a budget)."""
    return [None if x is None or y is None else (1 - weight) * x + weight * y
            for x, y in zip(low, high, strict=True)]


# ------------------------------------------------------------------------------------------------- bench summaries
CI_METRICS = ("acc", "f1", "ans_in_ctx", "sf_recall", "sf_all")
CURVE_METRICS = ("ans_in_ctx", "sf_all", "sf_recall", "acc", "f1")


def _aligned(records: Mapping[str, Sequence[Mapping[str, Any]]], a: str, b: str,
             metric: str) -> tuple[list[float | None], list[float | None]]:
    """Per-question values of ``metric`` for methods ``a`` and ``b`` on the questions both ran (by id)."""
    rb = {r["id"]: r.get(metric) for r in records[b]}
    pairs = [(r.get(metric), rb[r["id"]]) for r in records[a] if r["id"] in rb]
    return [x for x, _ in pairs], [y for _, y in pairs]


def add_intervals(methods: dict[str, dict[str, Any]], records: Mapping[str, Sequence[Mapping[str, Any]]], *,
                  reference: str | None = None, resamples: int = 1000, seed: int = 0) -> None:
    """Add paired bootstrap intervals to each method's summary in ``methods``, in place.

    ``diff_ci`` compares with ``none`` and ``diff_ci_ref`` with ``reference``, each as ``{metric: [low, high]}``: the
    paired bootstrap 95% interval of the mean difference (this method minus the other) on the same questions, for
    every metric the records carry; ``diff_ci_vs`` and ``diff_ci_ref_vs`` name the other method.
    """
    for label in methods:
        for key, other in (("diff_ci", "none"), ("diff_ci_ref", reference)):
            if other is None or other not in records:
                continue
            cis = {}
            for metric in CI_METRICS:
                if not records[label] or metric not in records[label][0]:
                    continue
                a, b = _aligned(records, label, other, metric)
                cis[metric] = paired_bootstrap(a, b, resamples=resamples, seed=seed)
            methods[label][key] = cis
            methods[label][f"{key}_vs"] = other


def curves(methods: Mapping[str, Mapping[str, Any]], records: Mapping[str, Sequence[Mapping[str, Any]]],
           budgets: Sequence[int], *, reference: str | None = None, resamples: int = 1000,
           seed: int = 0) -> dict[str, Any]:
    """Each method family's operating curve and its value at each budget.

    A curve has one point per setting (mean tokens read and the metrics). The value at a budget is interpolated
    between the two settings around it (:func:`curve_at`), with the paired 95% interval of its difference to the
    reference family at the same budget (both interpolated per question the same way).
    """
    families: dict[str, list[str]] = {}
    for label, m in methods.items():
        families.setdefault(str(m.get("family") or label), []).append(label)
    ref_family = None
    if reference in methods:
        ref_family = str(methods[reference].get("family") or reference)
    elif reference in families:
        ref_family = reference

    def points(labels: list[str]) -> list[dict[str, Any]]:
        return [{"label": lab, "tokens": methods[lab]["context_tokens"],
                 **{k: methods[lab].get(k) for k in CURVE_METRICS if k in methods[lab]}} for lab in labels]

    def per_question(labels: list[str], at: Mapping[str, Any], metric: str) -> dict[str, float | None]:
        rows = [{r["id"]: r.get(metric) for r in records[lab]} for lab in at["between"]]
        if len(rows) == 1:
            return rows[0]
        ids = [i for i in rows[0] if i in rows[1]]
        mixed = interpolate_per_question([rows[0][i] for i in ids], [rows[1][i] for i in ids], at["weight"])
        return dict(zip(ids, mixed, strict=True))

    out: dict[str, Any] = {}
    for family, labels in families.items():
        pts = points(labels)
        at_budget: dict[str, Any] = {}
        for budget in budgets:
            row: dict[str, Any] = {}
            for metric in CURVE_METRICS:
                at = curve_at(pts, budget, metric)
                if at is None:
                    continue
                cell: dict[str, Any] = {"value": round(at["value"], 4), "between": at["between"]}
                if ref_family and family != ref_family:
                    ref_at = curve_at(points(families[ref_family]), budget, metric)
                    if ref_at is not None:
                        mine, theirs = per_question(labels, at, metric), per_question(families[ref_family], ref_at,
                                                                                      metric)
                        ids = [i for i in mine if i in theirs]
                        cell["diff_ci_ref"] = paired_bootstrap([mine[i] for i in ids], [theirs[i] for i in ids],
                                                               resamples=resamples, seed=seed)
                row[metric] = cell
            if row:
                at_budget[str(budget)] = row
        out[family] = {"points": sorted(pts, key=lambda p: p["tokens"]), "at": at_budget,
                       "knob": methods[labels[0]].get("knob")}
    return {"budgets": list(budgets), "reference": ref_family, "families": out}


__all__ = ["CI_METRICS", "CURVE_METRICS", "EVIDENCE_KEYS", "add_intervals", "answer_in_context", "curves", "curve_at", "evidence", "excludes_zero", "interpolate_per_question",
           "mean_defined", "paired_bootstrap", "supporting_facts_kept"]
