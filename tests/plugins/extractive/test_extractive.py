"""The extractive compressor: windowing, the crossencoder scorer, artifacts, selection and bad input.

Mechanics run on a tiny BERT built from a config (character-level WordPiece vocab); selection logic runs on a
fake scorer with fixed scores. The shipped artifact is tested in test_extractive_artifact.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import write_tiny_bert, write_tiny_hotpot  # noqa: E402

from ragzip import ConfigError, InputError, ModelNotFoundError, Passage, build_compressor  # noqa: E402
from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig  # noqa: E402
from ragzip.plugins.extractive.modeling import (  # noqa: E402
    CrossEncoderScorer,
    ScoreItem,
    encode_items,
    plan_windows,
)
from ragzip.tokens import WhitespaceTokenCounter  # noqa: E402


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_artifact(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crossencoder artifact over the tiny BERT, with a non-trivial (random) head."""
    scorer = CrossEncoderScorer.from_base(str(tiny_bert), trained_layers=1, head_hidden=16, window=64, seed=1)
    with torch.no_grad():
        for p in scorer.model.trained_parameters().values():
            p.add_(torch.randn_like(p) * 0.02)
    return scorer.save_pretrained(tmp_path_factory.mktemp("artifact"), threshold=0.5)


@pytest.fixture()
def scorer(tiny_artifact: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer.from_pretrained(tiny_artifact, device="cpu")


class FakeScorer:
    """Scores a sentence by a lookup table (default 0.0): selection logic without a model."""

    def __init__(self, table: dict[str, float], default_threshold: float | None = 0.5) -> None:
        self.table = table
        self.default_threshold = default_threshold
        self.calls: list[list[ScoreItem]] = []

    def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        self.calls.append(list(items))
        return [[self.table.get(s, 0.0) for s in it.sentences] for it in items]


def fake(table: dict[str, float], **cfg: object) -> ExtractiveCompressor:
    config = ExtractiveConfig(tokenizer="whitespace", **cfg)  # type: ignore[arg-type]
    return ExtractiveCompressor(config, scorer=FakeScorer(table), token_counter=WhitespaceTokenCounter())


# ---------------------------------------------------------------------------------------------------------- config
def test_registered_and_built_from_a_dict() -> None:
    c = build_compressor({"type": "extractive", "tokenizer": "whitespace", "threshold": 0.3, "neighbors": 1})
    assert isinstance(c, ExtractiveCompressor)
    assert (c.config.threshold, c.config.neighbors, c.config.backbone) == (0.3, 1, "crossencoder")


@pytest.mark.parametrize("cfg,message", [
    ({"backbone": "bert"}, "compressor[extractive].backbone = 'bert' is not allowed; choose one of "
                           "'crossencoder', 'exit', 'recomp'."),
    ({"threshold": 1.5}, "compressor[extractive].threshold = 1.5 is out of range; it must lie in [0.0, 1.0]."),
    ({"top_k": 0}, "compressor[extractive].top_k = 0 is out of range; it must lie in [1, inf]."),
    ({"window": 10}, "compressor[extractive].window = 10 is out of range; it must lie in [64, inf]."),
    ({"backbone": "recomp"}, "compressor[extractive]: backbone 'recomp' ranks sentences by a dot product, not a "
                             "probability, so it needs `top_k` (RECOMP keeps 2 sentences for HotpotQA) or "
                             "`max_tokens`, e.g. `{type: extractive, backbone: recomp, top_k: 2}`."),
])
def test_bad_config_says_how_to_fix(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_compressor({"type": "extractive", **cfg})


def test_unknown_key_names_the_close_match() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown key 'treshold' in compressor[extractive]. "
                                                    "Did you mean 'threshold'?")):
        build_compressor({"type": "extractive", "treshold": 0.5})


def test_model_spec_defaults_per_backbone() -> None:
    assert ExtractiveConfig().model_spec == "default"
    assert ExtractiveConfig(backbone="exit").model_spec == "doubleyyh/exit-gemma-2b"
    assert ExtractiveConfig(backbone="recomp", top_k=2).model_spec == "fangyuan/hotpotqa_extractive_compressor"


# --------------------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("lengths,capacity", [
    ([10, 10, 10], 100), ([30] * 20, 100), ([5, 200, 5, 5], 100), ([1] * 300, 64), ([90, 90, 90], 100),
    ([150], 100), ([99, 1, 99, 1], 100),
])
def test_plan_windows_scores_each_sentence_once_within_capacity(lengths: list[int], capacity: int) -> None:
    windows = plan_windows(lengths, capacity)
    scored = [k for first, stop, _ in windows for k in range(first, stop)]
    assert scored == list(range(len(lengths)))
    for first, stop, left in windows:
        core = sum(lengths[first:stop])
        assert left <= sum(lengths[:first])
        assert left + core <= capacity or stop - first == 1  # only a lone over-long sentence exceeds it


def test_windows_keep_the_query_whole_and_give_context(scorer: CrossEncoderScorer) -> None:
    query = "which river flows through paris?"
    sentences = [f"sentence {i} says something about topic {i}." for i in range(30)]
    windows = encode_items(scorer.tokenizer, [ScoreItem(query, "", sentences)], window=64)
    q_ids = scorer.tokenizer(query, add_special_tokens=False)["input_ids"]
    assert len(windows) > 3
    assert sorted(k for w in windows for k in w.sentences) == list(range(30))
    for w in windows:
        assert len(w.input_ids) <= 64
        assert w.input_ids[1: 1 + len(q_ids)] == q_ids  # the query is never cut
        assert w.token_type_ids[: len(q_ids) + 2] == [0] * (len(q_ids) + 2)
        for (a, b), k in zip(w.spans, w.sentences, strict=True):
            s_ids = scorer.tokenizer(sentences[k], add_special_tokens=False)["input_ids"]
            assert w.input_ids[a:b] == s_ids  # scored sentences are whole
    middle = windows[len(windows) // 2]
    assert middle.spans[0][0] > 1 + len(q_ids) + 1  # left context before the first scored sentence
    assert middle.spans[-1][1] < len(middle.input_ids) - 1  # right context after the last one


def test_sentence_longer_than_the_window_is_scored_from_its_first_part(scorer: CrossEncoderScorer) -> None:
    long = " ".join(["ab"] * 200)  # 400 tokens
    windows = encode_items(scorer.tokenizer, [ScoreItem("q?", "", ["short one.", long, "short two."])], window=64)
    (w,) = [w for w in windows if 1 in w.sentences]
    assert w.sentences == [1]
    a, b = w.spans[0]
    assert len(w.input_ids) == 64 and b - a == 64 - 3 - 2  # the whole window but the query and specials
    assert w.input_ids[a:b] == scorer.tokenizer(long, add_special_tokens=False)["input_ids"][: b - a]


def test_title_is_unscored_context(scorer: CrossEncoderScorer) -> None:
    with_title = encode_items(scorer.tokenizer, [ScoreItem("q?", "Paris", ["it is big."])], window=64)[0]
    without = encode_items(scorer.tokenizer, [ScoreItem("q?", "", ["it is big."])], window=64)[0]
    title_ids = scorer.tokenizer("Paris:", add_special_tokens=False)["input_ids"]
    assert with_title.input_ids[4: 4 + len(title_ids)] == title_ids
    assert with_title.spans[0][0] == without.spans[0][0] + len(title_ids)


def test_query_too_long_for_the_window_is_an_input_error(scorer: CrossEncoderScorer) -> None:
    message = ("the query is 100 tokens long; the extractive classifier's window is 64 tokens and needs room for at "
               "least 32 tokens of each passage. Shorten the query, or raise `window` in the compressor config "
               "(at most 512 for the MiniLM backbone).")
    with pytest.raises(InputError, match=re.escape(message)):
        scorer.score([ScoreItem("q " * 100, "", ["a."])])


# ----------------------------------------------------------------------------------------------- crossencoder model
def test_scores_are_probabilities_for_every_sentence(scorer: CrossEncoderScorer) -> None:
    items = [ScoreItem("who?", "t", ["a b c.", "d e."]), ScoreItem("why?", "", [f"s{i}." for i in range(40)])]
    scores = scorer.score(items)
    assert [len(s) for s in scores] == [2, 40]
    assert all(0.0 <= x <= 1.0 and not math.isnan(x) for row in scores for x in row)


def test_batching_and_padding_do_not_change_scores(scorer: CrossEncoderScorer) -> None:
    target = ScoreItem("where is it?", "Place", ["it is here.", "not there.", "maybe elsewhere, far away."])
    alone = scorer.score([target])[0]
    others = [ScoreItem("other question " * 3, "", [f"long filler sentence number {i}." for i in range(9)])]
    batched = scorer.score([*others, target, *others])[1]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_context_is_the_passage_itself(scorer: CrossEncoderScorer) -> None:
    """A sentence's score depends on its own passage (its context) and on nothing else in the batch."""
    a = scorer.score([ScoreItem("q?", "", ["alpha one.", "beta two."])])[0][0]
    b = scorer.score([ScoreItem("q?", "", ["alpha one.", "gamma three, different."])])[0][0]
    assert a != pytest.approx(b, abs=1e-7)


def test_save_and_load_round_trip(scorer: CrossEncoderScorer, tmp_path: Path) -> None:
    items = [ScoreItem("who?", "T", ["one two.", "three four five."])]
    before = scorer.score(items)
    folder = scorer.save_pretrained(tmp_path / "copy", threshold=0.37)
    loaded = CrossEncoderScorer.from_pretrained(folder, device="cpu")
    assert loaded.score(items)[0] == pytest.approx(before[0], abs=1e-6)
    assert loaded.default_threshold == 0.37
    config = json.loads((folder / "config.json").read_text())
    assert config["type"] == "extractive" and config["backbone"] == "crossencoder"
    assert config["trained_layers"] == 1 and config["ragzip_version"]
    from safetensors.torch import load_file

    keys = set(load_file(str(folder / "model.safetensors")))
    assert keys and all(k.startswith(("encoder.encoder.layer.1.", "head.")) for k in keys)  # only what was trained


def test_loading_a_folder_without_config_says_what_to_pass(tmp_path: Path) -> None:
    message = (f"no config.json in {str(tmp_path)!r}: not an extractive artifact folder. Pass the folder written by "
               "`ragzip train extractive --out DIR`, or `default` for the classifier shipped with ragzip.")
    with pytest.raises(ModelNotFoundError, match=re.escape(message)):
        CrossEncoderScorer.from_pretrained(tmp_path)


def test_weights_that_do_not_match_the_config_are_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_artifact, tmp_path / "bad"))
    config = json.loads((folder / "config.json").read_text())
    config["trained_layers"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match=re.escape(
            "(trained_layers=2, head_hidden=16, head_type='interaction'): the weights do not match config.json: "
            "missing ['encoder.encoder.layer.0.")):
        CrossEncoderScorer.from_pretrained(folder)


def test_unknown_artifact_key_warns(tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_artifact, tmp_path / "newer"))
    config = json.loads((folder / "config.json").read_text())
    config["added_in_a_later_version"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    CrossEncoderScorer.from_pretrained(folder)
    assert "added_in_a_later_version" in caplog.text


def test_only_the_stored_parameters_train(tiny_bert: Path) -> None:
    s = CrossEncoderScorer.from_base(str(tiny_bert), trained_layers=1, head_hidden=8, window=64)
    trainable = {k for k, p in s.model.named_parameters() if p.requires_grad}
    assert trainable == set(s.model.trained_parameters())
    assert not any("embeddings" in k or "layer.0." in k for k in trainable)


# ------------------------------------------------------------------------------------------------------- selection
PASSAGES = [
    Passage("Alpha one. Alpha two. Alpha three.", id="a"),
    Passage("Beta one. Beta two.", id="b"),
    Passage("Gamma one.", id="c"),
]
SCORES = {"Alpha one.": 0.2, "Alpha two.": 0.9, "Alpha three.": 0.6, "Beta one.": 0.1, "Beta two.": 0.3,
          "Gamma one.": 0.95}


def test_threshold_keeps_order_and_reports_every_passage() -> None:
    out = fake(SCORES).compress("q?", PASSAGES)
    assert out.text == "Alpha two. Alpha three.\n\nGamma one."
    assert out.decisions() == {"a": "compressed", "b": "dropped", "c": "kept"}
    a, b, c = out.results
    assert [u.kept for u in a.units] == [False, True, True]
    assert [u.score for u in a.units] == [0.2, 0.9, 0.6]
    assert b.reason == "no sentence scored >= threshold 0.5 (best 0.3)"
    assert a.reason == "kept 2 of 3 sentences"
    assert (a.tokens_before, a.tokens_after) == (6, 4)
    assert out.tokens_before == 6 + 4 + 2 and out.tokens_after == 4 + 2
    assert c.text == "Gamma one." and c.decision == "kept"
    assert a.provenance()["units"][1] == {"index": 1, "text": "Alpha two.", "score": 0.9, "kept": True, "start": 11,
                                          "end": 21, "kind": "sentence"}


def test_top_k_keeps_the_best_across_passages() -> None:
    out = fake(SCORES, threshold=0.0, top_k=2).compress("q?", PASSAGES)
    assert out.text == "Alpha two.\n\nGamma one."
    assert out.results[1].reason == "top_k=2 filled by higher-scoring sentences (best here 0.3)"


def test_token_budget_takes_the_best_sentences_that_fit() -> None:
    out = fake(SCORES, threshold=0.0, max_tokens=5).compress("q?", PASSAGES)
    # Gamma one. (2) + Alpha two. (2) fit; Alpha three. (2) would overflow; Beta two. is too... over budget too.
    assert out.text == "Alpha two.\n\nGamma one."
    assert out.tokens_after <= 5
    assert out.results[1].reason.startswith("max_tokens=5 spent on higher-scoring sentences")


def test_neighbors_add_the_sentences_around_a_kept_one() -> None:
    out = fake({"Alpha two.": 0.9}, neighbors=1).compress("q?", PASSAGES[:1])
    assert out.results[0].decision == "kept"  # 1 +/- 1 covers the passage
    out = fake({"Alpha one.": 0.9}, neighbors=1).compress("q?", PASSAGES[:1])
    assert out.text == "Alpha one. Alpha two."


def test_gap_keeps_the_original_line_breaks() -> None:
    text = "Intro line.\n- first item\n- second item\n- third item"
    out = fake({"Intro line.": 0.9, "- third item": 0.9}).compress("q?", [text])
    assert out.text == "Intro line.\n- third item"


def test_nothing_passes_keeps_the_best_sentence_unless_selective() -> None:
    low = {"Alpha two.": 0.3, "Beta one.": 0.1}
    out = fake(low).compress("q?", PASSAGES)
    assert out.text == "Alpha two."
    assert out.reason == ("no sentence scored >= threshold 0.5 (best 0.3); kept the best-scoring sentence "
                          "(set selective: true to return no context instead)")
    assert out.results[0].reason == "kept 1 of 3 sentences (best-scoring sentence kept as fallback)"
    sel = fake(low, selective=True).compress("q?", PASSAGES)
    assert sel.text == "" and sel.tokens_after == 0
    assert sel.reason == "selective: no sentence scored >= threshold 0.5 (best 0.3); answer without context"
    assert set(sel.decisions().values()) == {"dropped"}
    # each passage reports its own best score, not the question's
    assert [r.reason for r in sel.results] == [
        f"selective: no sentence of the question scored >= threshold 0.5 (best here {best:.3g}); answer without context"
        for best in (0.3, 0.1, 0.0)]


def test_rank_only_scorer_needs_no_threshold() -> None:
    config = ExtractiveConfig(tokenizer="whitespace", backbone="recomp", top_k=1)
    c = ExtractiveCompressor(config, scorer=FakeScorer({"Beta two.": 12.0, "Alpha one.": 3.0}, None),
                             token_counter=WhitespaceTokenCounter())
    assert c.threshold is None
    assert c.compress("q?", PASSAGES).text == "Beta two."


def test_empty_duplicate_and_bytes_passages_are_reported_not_lost() -> None:
    scorer = FakeScorer(SCORES)
    c = ExtractiveCompressor(ExtractiveConfig(tokenizer="whitespace"), scorer=scorer,
                             token_counter=WhitespaceTokenCounter())
    out = c.compress("q?", [PASSAGES[2], Passage("   ", id="e"), PASSAGES[2], Passage(b"Alpha two.", id="x")])
    assert [r.decision for r in out.results] == ["kept", "empty", "duplicate", "kept"]
    assert sum(len(i.sentences) for i in scorer.calls[0]) == 2  # only live passages were scored


def test_inputs_are_not_mutated_and_titles_reach_the_scorer() -> None:
    p = Passage("Alpha one. Alpha two.", id="t", metadata={"title": "Alpha"})
    scorer = FakeScorer(SCORES)
    c = ExtractiveCompressor(ExtractiveConfig(tokenizer="whitespace"), scorer=scorer,
                             token_counter=WhitespaceTokenCounter())
    out = c.compress("q?", [p])
    assert p.text == "Alpha one. Alpha two." and dict(p.metadata) == {"title": "Alpha"}
    assert out.results[0].passage is p
    assert scorer.calls[0][0].title == "Alpha"


def test_compress_batch_scores_all_questions_in_one_call() -> None:
    scorer = FakeScorer(SCORES)
    c = ExtractiveCompressor(ExtractiveConfig(tokenizer="whitespace"), scorer=scorer,
                             token_counter=WhitespaceTokenCounter())
    outs = c.compress_batch(["q1?", "q2?"], [PASSAGES, PASSAGES[:1]])
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 4
    assert [o.text for o in outs] == ["Alpha two. Alpha three.\n\nGamma one.", "Alpha two. Alpha three."]


# ------------------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def tiny_compressor(tiny_artifact: Path) -> ExtractiveCompressor:
    return build_compressor({"type": "extractive", "model": str(tiny_artifact), "tokenizer": "whitespace",
                             "device": "cpu", "threshold": 0.0})


def test_one_sentence_passage(tiny_compressor: ExtractiveCompressor) -> None:
    out = tiny_compressor.compress("q?", ["Just one sentence here."])
    assert out.results[0].decision == "kept" and len(out.results[0].units) == 1


def test_no_boundary_for_5000_words(tiny_compressor: ExtractiveCompressor) -> None:
    text = " ".join(f"w{i % 7}" for i in range(5000))
    out = tiny_compressor.compress("what?", [text])
    units = out.results[0].units
    assert len(units) > 5 and all(len(u.text) <= 1000 for u in units)  # cut into scoreable pieces
    assert all(u.score is not None and 0.0 <= u.score <= 1.0 for u in units)


def test_sentence_longer_than_the_window(tiny_artifact: Path) -> None:
    c = build_compressor({"type": "extractive", "model": str(tiny_artifact), "tokenizer": "whitespace",
                          "device": "cpu", "threshold": 0.0, "max_sentence_chars": 5000})
    long = "Longword " + "longword " * 400 + "end."
    out = c.compress("q?", [f"Short start. {long} Short end."])
    assert [len(u.text) > 1000 for u in out.results[0].units] == [False, True, False]
    assert out.results[0].decision == "kept"  # threshold 0: all kept, the long one scored from its first part


def test_non_english_text(tiny_compressor: ExtractiveCompressor) -> None:
    out = tiny_compressor.compress("東京はどこ？", ["東京は日本の首都です。大阪は大きい。", "Привет. Как дела?"])
    assert [len(r.units) for r in out.results] == [2, 2]
    assert all(u.score is not None and not math.isnan(u.score) for r in out.results for u in r.units)


def test_code_blocks_stay_whole(tiny_compressor: ExtractiveCompressor) -> None:
    text = "Call it like this:\n```python\nresult = f(x=1.5)\nprint(result)\n```\nIt returns a float."
    out = tiny_compressor.compress("how to call f?", [text])
    assert [u.text for u in out.results[0].units] == [
        "Call it like this:", "```python\nresult = f(x=1.5)\nprint(result)\n```", "It returns a float."]
    assert out.results[0].text == text


# -------------------------------------------------------------------------------------------------------- training
def test_train_main_writes_a_loadable_artifact_with_a_card(tiny_bert: Path, tmp_path: Path) -> None:
    from ragzip.plugins.extractive.train import main

    data = write_tiny_hotpot(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    status = main(["--data", str(data), "--out", str(out), "--base-model", str(tiny_bert), "--window", "64",
                   "--trained-layers", "1", "--head-hidden", "8", "--steps", "3", "--holdout", "1", "--threads", "1"])
    assert status == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 3 and config["training"]["seed"] == 0
    assert 0.0 < config["threshold"] < 1.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "ragzip train extractive --data" in card
    assert config["training"]["foreign_per_question"] == 1 and "1 cross-question negative" in card
    assert "float16, `model.safetensors`" in card  # the final artifact is saved in half precision by default
    scorer = CrossEncoderScorer.from_pretrained(out, device="cpu")
    assert next(scorer.model.parameters()).dtype == torch.float32  # cast back on load
    assert len(scorer.score([ScoreItem("when?", "", ["a.", "b."])])[0]) == 2
    log = (out / "train_log.jsonl").read_text()
    assert '"foreign_per_question": 1' in log


def test_a_continued_run_draws_its_own_samples_and_cards_the_whole_chain(tiny_bert: Path, tmp_path: Path) -> None:
    """--init continues a run; --sample-seed draws other samples; the card says how to reproduce every run."""
    from ragzip.plugins.extractive.train import main

    data = write_tiny_hotpot(tmp_path / "train.jsonl", n=6)
    common = ["--data", str(data), "--window", "64", "--steps", "2", "--holdout", "2", "--threads", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*common, "--out", str(first), "--base-model", str(tiny_bert), "--trained-layers", "1",
                 "--head-hidden", "8"]) == 0
    assert main([*common, "--out", str(second), "--init", str(first), "--sample-seed", "7"]) == 0
    training = json.loads((second / "config.json").read_text())["training"]
    assert training["seed"] == 0 and training["sample_seed"] == 7 and training["init"] == str(first)
    assert training["init_training"]["command"].endswith(f"--out {first} --base-model {tiny_bert} --trained-layers 1 "
                                                         "--head-hidden 8")
    card = (second / "MODEL_CARD.md").read_text()
    assert f"Continued training (`--init {first}`). The runs before this one, oldest first: (1) `ragzip train " \
           "extractive --data" in card
    assert "drew its samples with seed 7 and kept the held-out split of seed 0" in card
    assert json.loads((first / "config.json").read_text())["training"]["sample_seed"] == 0

    def first_loss(out: Path) -> float:
        return json.loads((out / "train_log.jsonl").read_text().splitlines()[0])["loss"]

    same, plain = tmp_path / "same", tmp_path / "plain"
    assert main([*common, "--out", str(same), "--init", str(first), "--sample-seed", "0"]) == 0
    assert main([*common, "--out", str(plain), "--init", str(first)]) == 0
    assert first_loss(same) == first_loss(plain)  # --sample-seed equal to --seed: the same draws
    assert first_loss(second) != first_loss(plain)  # another sample seed: other windows in the first batch


def test_a_continued_run_can_widen_the_trained_layers(tiny_bert: Path, tmp_path: Path) -> None:
    """--init with more --trained-layers than the artifact stores trains (and stores) the extra lower layers too."""
    from safetensors.torch import load_file

    from ragzip.errors import ConfigError
    from ragzip.plugins.extractive.train import main

    data = write_tiny_hotpot(tmp_path / "train.jsonl", n=6)
    common = ["--data", str(data), "--window", "64", "--steps", "2", "--holdout", "2", "--threads", "1"]
    first, wide = tmp_path / "first", tmp_path / "wide"
    assert main([*common, "--out", str(first), "--base-model", str(tiny_bert), "--trained-layers", "1",
                 "--head-hidden", "8"]) == 0
    assert main([*common, "--out", str(wide), "--init", str(first), "--trained-layers", "2", "--lr", "1e-2"]) == 0
    assert json.loads((wide / "config.json").read_text())["trained_layers"] == 2
    narrow, widened = load_file(str(first / "model.safetensors")), load_file(str(wide / "model.safetensors"))
    assert not any(k.startswith("encoder.encoder.layer.0.") for k in narrow)
    base = CrossEncoderScorer.from_base(str(tiny_bert), trained_layers=2, head_hidden=8, window=64)
    key = "encoder.encoder.layer.0.attention.self.query.weight"
    start = base.model.state_dict()[key].to(torch.float16)
    assert not torch.equal(widened[key], start)  # the widened layer was trained from the base encoder's weights
    assert len(CrossEncoderScorer.from_pretrained(wide, device="cpu").score([ScoreItem("q?", "", ["a.", "b."])])[0]) == 2
    with pytest.raises(ConfigError, match=r"--trained-layers 3: the --init artifact stores 2 layer\(s\) and its "
                                          r"encoder has 2; give a number in \[2, 2\]"):
        main([*common, "--out", str(tmp_path / "too_wide"), "--init", str(wide), "--trained-layers", "3"])


def test_cross_question_negatives_pair_a_query_with_another_questions_paragraph(tiny_bert: Path, tmp_path: Path,
                                                                                 caplog) -> None:
    from ragzip.plugins.extractive.train import main

    data = write_tiny_hotpot(tmp_path / "train.jsonl", n=5)
    with caplog.at_level(logging.INFO, logger="ragzip.train.extractive"):
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--base-model", str(tiny_bert), "--window", "64",
              "--trained-layers", "1", "--head-hidden", "8", "--steps", "1", "--holdout", "1", "--threads", "1",
              "--foreign", "2", "--epochs", "2"])
    counts = next(r.getMessage() for r in caplog.records if "cross-question negatives" in r.getMessage())
    own, foreign = (int(x) for x in re.findall(r"\d+", counts)[:2])
    assert own == 4 * 3  # 4 training questions x 3 paragraphs
    assert 0 < foreign <= 4 * 2 * 2  # up to --foreign per question per epoch (a draw of the question itself is skipped)


def test_train_main_needs_out_unless_eval_only(tmp_path: Path) -> None:
    from ragzip.plugins.extractive.train import main

    with pytest.raises(SystemExit):
        main(["--data", str(write_tiny_hotpot(tmp_path / "d.jsonl"))])


# --------------------------------------------------------------------------------------------- budget and relative
def test_max_tokens_alone_fills_the_budget_across_passages() -> None:
    """No threshold applies when only a budget is set: the best sentences of all passages fill it, in order."""
    c = fake(SCORES, max_tokens=6)
    out = c.compress("q?", PASSAGES)
    assert out.extra["threshold"] is None
    # ranked: Gamma one. (2) 0.95, Alpha two. (2) 0.9, Alpha three. (2) 0.6 -> 6 tokens
    assert out.text == "Alpha two. Alpha three.\n\nGamma one."
    assert out.tokens_after == 6
    low = {k: v / 10 for k, v in SCORES.items()}  # all far below the model's threshold 0.5
    assert fake(low, max_tokens=6).compress("q?", PASSAGES).tokens_after == 6
    assert fake(low, max_tokens=6, threshold=0.5).compress("q?", PASSAGES).text == "Gamma one."  # fallback only


def test_retrieval_prior_ranks_the_best_retrieved_passage_first_under_a_budget() -> None:
    """Retrieved passages (with scores) in retrieval order: each sentence gets w / (its passage's position)."""
    a, b, c = PASSAGES
    ranked = [dataclasses.replace(p, score=s) for p, s in zip((b, a, c), (0.9, 0.5, 0.1), strict=True)]
    # w=2: b +2 (Beta one 2.1, Beta two 2.3), a +1 (Alpha two 1.9, ...), c +0.67 (Gamma one 1.62)
    out = fake(SCORES, max_tokens=6, retrieval_prior=2.0).compress("q?", ranked)
    assert out.text == "Beta one. Beta two.\n\nAlpha two."
    assert out.extra["retrieval_prior"] == 2.0
    assert [u.score for u in out.results[0].units] == [0.1, 0.3]  # units keep the classifier's own scores
    # distances (lower is better) come best-first too: the order is the ranking, whatever the scores mean
    distances = [dataclasses.replace(p, score=s) for p, s in zip((b, a, c), (0.1, 0.5, 0.9), strict=True)]
    assert fake(SCORES, max_tokens=6, retrieval_prior=2.0).compress("q?", distances).text == out.text
    plain = "Alpha two. Alpha three.\n\nGamma one."  # the classifier's scores alone
    assert fake(SCORES, max_tokens=6).compress("q?", PASSAGES).text == plain  # given passages: no ranking
    flat = [dataclasses.replace(p, score=1.0) for p in PASSAGES]  # a retriever that does not rank
    broken = [dataclasses.replace(p, score=s) for p, s in zip(PASSAGES, (0.9, math.nan, 0.1), strict=True)]
    for passages in (flat, broken):
        assert fake(SCORES, max_tokens=6, retrieval_prior=2.0).compress("q?", passages).text == plain
    assert fake(SCORES, max_tokens=6, retrieval_prior=0).compress("q?", ranked).text == (
        "Alpha two. Alpha three.\n\nGamma one.")
    assert "retrieval_prior" not in fake(SCORES).compress("q?", ranked).extra  # no budget: thresholds decide
    with pytest.raises(ConfigError, match="retrieval_prior"):
        ExtractiveConfig(retrieval_prior=-1)


def test_relative_rule_keeps_what_scores_near_the_best() -> None:
    out = fake(SCORES, relative=0.6).compress("q?", PASSAGES)  # floor 0.57
    assert out.extra == {"threshold": None, "relative": 0.6}
    assert out.text == "Alpha two. Alpha three.\n\nGamma one."
    low = {k: v / 10 for k, v in SCORES.items()}  # the same ranking at a tenth of the scores keeps the same
    assert fake(low, relative=0.6).compress("q?", PASSAGES).text == out.text


def test_relative_and_int8_config_checks() -> None:
    with pytest.raises(ConfigError, match=re.escape("compressor[extractive].relative = 1.5 is out of range")):
        ExtractiveConfig(relative=1.5)
    with pytest.raises(ConfigError, match=re.escape("dtype 'int8' is for backbone crossencoder")):
        ExtractiveConfig(backbone="recomp", top_k=2, dtype="int8")


def test_selective_keeps_an_absolute_evidence_floor_under_a_relative_rule() -> None:
    """A relative rule always passes the best sentence, so `selective` applies the model's calibrated threshold."""
    low = {"Alpha two.": 0.3, "Beta one.": 0.1}
    out = fake(low, selective=True, relative=0.5).compress("q?", PASSAGES)
    assert out.text == "" and out.extra == {"threshold": 0.5, "relative": 0.5}
    high = fake(SCORES, selective=True, relative=0.96).compress("q?", PASSAGES)  # floors 0.5 and 0.96 x 0.95
    assert high.text == "Gamma one."


def test_selective_set_gate_decides_no_evidence_from_the_whole_set(tmp_path) -> None:
    """``selective_rule: set_gate``: the set-level gate beside the model decides "no evidence"; no absolute floor."""
    from ragzip.relevance import FEATURES, LogisticSetGate

    LogisticSetGate(weights=[3.0] + [0.0] * (len(FEATURES) - 1), bias=0.0, threshold=0.5).save(
        tmp_path / "set_gate.json")
    low = {"Alpha two.": 0.3, "Beta one.": 0.1}
    gated = fake(low, selective=True, selective_rule="set_gate", model=str(tmp_path), max_tokens=4)
    out = gated.compress("q?", PASSAGES)
    assert out.text == "" and set(out.decisions().values()) == {"dropped"}
    assert out.reason.startswith("selective: the set relevance gate gave P(the passages hold the evidence) = 0.0")
    assert out.extra["set_gate"] < 0.5 and all(r.units for r in out.results)
    passing = fake(SCORES, selective=True, selective_rule="set_gate", model=str(tmp_path), max_tokens=4)
    kept = passing.compress("q?", PASSAGES)
    assert kept.text == "Alpha two.\n\nGamma one." and passing.threshold is None  # the budget selects, no floor
    with pytest.raises(ConfigError, match="selective_rule"):
        ExtractiveConfig(selective_rule="best")


def test_selective_set_gate_of_a_model_that_is_not_a_folder_says_so(tmp_path) -> None:
    gated = fake(SCORES, selective=True, selective_rule="set_gate", model=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="is not a folder, so it has no set gate.*selective_rule: threshold"):
        gated.compress("q?", PASSAGES)


def test_selective_rule_set_gate_needs_selective() -> None:
    with pytest.raises(ConfigError, match="set selective: true"):
        ExtractiveConfig(selective_rule="set_gate")


def test_bridge_examples_pair_the_first_evidence_with_the_other_gold_paragraph() -> None:
    import random

    from ragzip.data import Paragraph, Question
    from ragzip.plugins.extractive.train import _bridge_examples

    q = "Where was the director of Film X born?"
    gold = [Paragraph(q, "Film X", ["Film X was directed by Ann Lee.", "It won."], [1, 0]),
            Paragraph(q, "Ann Lee", ["Ann Lee was born in Oslo.", "She sings."], [1, 0])]
    other = [Paragraph(q, "Oslo", ["Oslo is a city."], [0])]
    question = Question("1", q, gold + other)
    seen = set()
    for seed in range(8):
        second, distractor = _bridge_examples(question, gold, other, random.Random(seed))
        first = next(p for p in gold if p.title != second.title)
        assert second.query == f"{q} {first.sentences[0]}" and second.labels == [1, 0]
        assert distractor.query == second.query and distractor.title == "Oslo" and distractor.labels == [0]
        seen.add(second.title)
    assert seen == {"Film X", "Ann Lee"}  # either gold paragraph can be the first hop
    assert _bridge_examples(question, gold[:1], other, random.Random(0)) == []  # one gold paragraph: no second hop


def test_with_selection_shares_one_scoring_pass() -> None:
    """Other selection settings re-select from the same scores (the bench's settings of one model score once)."""
    c = fake(SCORES)
    alone = c.with_selection(max_tokens=2)  # no memory asked for: the copy scores for itself and keeps nothing
    alone.compress("q?", PASSAGES)
    alone.compress("q?", PASSAGES)
    assert len(c.scorer.calls) == 2 and getattr(c, "_score_memo", None) is None
    c.scorer.calls.clear()
    c.memoize_scores()
    budgets = [c.with_selection(max_tokens=n, threshold=0.0) for n in (2, 4)]
    outs = [b.compress("q?", PASSAGES) for b in [c, *budgets]]
    assert len(c.scorer.calls) == 1  # scored by the first call, read from the memory by the others
    assert [b.config.max_tokens for b in budgets] == [2, 4] and c.config.max_tokens is None
    assert outs[1].tokens_after <= 2 < outs[2].tokens_after <= 4
    message = ("with_selection: window would change the scores, not only the selection; pass only max_tokens, "
               "neighbors, relative, retrieval_prior, selective, selective_rule, threshold, top_k, or build another "
               "compressor.")
    with pytest.raises(ConfigError, match=re.escape(message)):
        c.with_selection(window=128)


def test_budget_selection_keeps_the_best_sentences_by_score_alone() -> None:
    """The abstractive step's selection: the user's threshold, top_k, neighbours and selective mode do not apply."""
    c = fake(SCORES, threshold=0.99, top_k=1, neighbors=1, selective=True, retrieval_prior=0.5)
    plain = c.budget_selection(4)
    assert plain.compress("q?", PASSAGES).text == "Alpha two.\n\nGamma one."  # the two best, 4 words
    assert c.config.threshold == 0.99 and c.config.top_k == 1  # the original keeps its settings
    default_rule = c.budget_selection(None).compress("q?", PASSAGES)  # no budget: the default threshold, not 0.99
    assert default_rule.text == "Alpha two. Alpha three.\n\nGamma one."
