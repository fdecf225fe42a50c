"""The set-level relevance gate: features, fitting, calibration and persistence (core/relevance.py)."""

from __future__ import annotations

import math
import random

import pytest

from ragzip.errors import ConfigError, ModelNotFoundError
from ragzip.relevance import FEATURES, LogisticSetGate, roc_auc, set_features, threshold_for


def _logit(p):
    return math.log(p / (1 - p))


def test_features_by_hand():
    f = set_features([[0.9, 0.2, float("nan")], [0.6], []])
    assert len(f) == len(FEATURES)
    assert f[0] == pytest.approx(_logit(0.9)) and f[1] == pytest.approx(_logit(0.6))
    assert f[2] == pytest.approx(_logit(0.2))
    assert f[3] == pytest.approx(_logit((0.9 + 0.6 + 0.2) / 5))  # missing scores count as 0 in the top five
    assert f[4] == pytest.approx(math.log1p(2))  # 0.9 and 0.6 reach 0.5
    assert f[5] == pytest.approx(_logit((0.9 + 0.2) / 2)) and f[6] == pytest.approx(_logit(0.6))
    assert set_features([]) == set_features([[]])  # no scores: the features of all-zero scores


def test_fit_separates_and_calibrates():
    rng = random.Random(0)
    pos = [[[rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.9)], [rng.uniform(0, 0.5)]] for _ in range(60)]
    neg = [[[rng.uniform(0.0, 0.6), rng.uniform(0, 0.2)], [rng.uniform(0, 0.3)]] for _ in range(60)]
    gate = LogisticSetGate.fit(pos + neg, [1] * 60 + [0] * 60)
    p_pos = [gate.probability(s) for s in pos]
    p_neg = [gate.probability(s) for s in neg]
    assert roc_auc(p_pos, p_neg) > 0.9
    t = threshold_for(p_pos, 0.05)
    assert sum(p < t for p in p_pos) <= 3 and sum(p < t for p in p_neg) > 30


def test_roc_auc_and_threshold_by_hand():
    assert roc_auc([0.9, 0.8], [0.1, 0.8]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert math.isnan(roc_auc([], [0.1]))
    assert threshold_for([0.1, 0.2, 0.3, 0.4], 0.25) == 0.2  # gates only 0.1: one of four
    with pytest.raises(ConfigError):
        threshold_for([], 0.1)


def test_save_load_round_trip_and_errors(tmp_path):
    gate = LogisticSetGate(weights=[1.0] * len(FEATURES), bias=-0.5, threshold=0.3, training={"seed": 0})
    loaded = LogisticSetGate.load(gate.save(tmp_path / "g.json"))
    assert loaded == gate and loaded.probability([[0.7]]) == gate.probability([[0.7]])
    with pytest.raises(ModelNotFoundError, match="--fit-set-gate"):
        LogisticSetGate.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="refit it"):
        LogisticSetGate(weights=[1.0], bias=0.0, threshold=0.5, features=["other"])
    with pytest.raises(ConfigError, match="one class only"):
        LogisticSetGate.fit([[[0.5]], [[0.6]]], [1, 1])


def test_a_gate_fitted_on_another_classifier_is_refused(tmp_path, caplog):
    from ragzip.artifacts import ArtifactError
    from ragzip.fsutil import sha256_file
    from ragzip.relevance import load_beside

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"classifier A")
    gate = LogisticSetGate(weights=[1.0] * len(FEATURES), bias=0.0, threshold=0.3,
                           training={"classifier_weights_sha256": sha256_file(weights)})
    gate.save(tmp_path / "set_gate.json")
    assert load_beside(tmp_path) == gate
    weights.write_bytes(b"classifier B, retrained into the same folder")
    with pytest.raises(ArtifactError, match="fitted on another classifier's scores.*--fit-set-gate --model"):
        load_beside(tmp_path)
    LogisticSetGate(weights=[1.0] * len(FEATURES), bias=0.0, threshold=0.3).save(tmp_path / "set_gate.json")
    assert load_beside(tmp_path).threshold == 0.3 and "cannot be checked" in caplog.text  # no weights hash: a warning


def test_shipped_set_gate_matches_the_shipped_classifier():
    from ragzip.plugins.extractive.modeling import DEFAULT_ARTIFACT
    from ragzip.relevance import GATE_FILE, load_beside

    if not (DEFAULT_ARTIFACT / GATE_FILE).is_file():
        pytest.skip("no shipped set gate in this checkout")
    gate = load_beside(DEFAULT_ARTIFACT)
    assert gate.training["classifier_weights_sha256"] and 0 < gate.threshold < 1
    heldout = gate.training["heldout_out_of_fold"]["set_gate"]
    assert heldout["gated_with"] <= 0.05 + 1e-9  # the calibration rule it was fitted with
