"""Evidence metrics (what survives compression) and the bench's evidence mode: hand-computed values, paired
bootstrap intervals, operating curves read at budgets, sweeps that score once, SQuAD's same-article distractors."""

from __future__ import annotations

import json

import pytest

from ragzip.bench import expand_sweep, parse_methods, run_bench
from ragzip.data import load_qa, parse_record, same_article_distractors
from ragzip.evidence import (
    answer_in_context,
    curve_at,
    evidence,
    excludes_zero,
    interpolate_per_question,
    paired_bootstrap,
    supporting_facts_kept,
)

HOTPOT = {"id": "h1", "question": "Where was the builder of the tower born?", "answer": "Lyon",
          "context": [["Tower", ["The Tower was built by Jean Roux.", " It is tall."]],
                      ["Jean Roux", ["Jean Roux was born in Lyon.", " He died in 1900."]],
                      ["Other", ["Nothing here.", " Still nothing."]]],
          "supporting_facts": [["Tower", 0], ["Jean Roux", 0], ["Missing", 3]]}


# ------------------------------------------------------------------------------------------------------ per question
def test_dropping_one_of_two_supporting_facts():
    ex = parse_record(HOTPOT, where="t")
    assert ex.supporting == ("The Tower was built by Jean Roux.", "Jean Roux was born in Lyon.")  # bad fact skipped
    kept = "Tower: The Tower was built by Jean Roux."
    assert supporting_facts_kept(kept, ex.supporting) == (0.5, 0.0)
    assert evidence(kept, ex.answers, ex.supporting) == {"ans_in_ctx": 0.0, "sf_recall": 0.5, "sf_all": 0.0}
    both = kept + "\n\nJean Roux: Jean Roux was born in Lyon."
    assert evidence(both, ex.answers, ex.supporting) == {"ans_in_ctx": 1.0, "sf_recall": 1.0, "sf_all": 1.0}


def test_answer_in_context_normalises_and_skips_yes_no():
    assert answer_in_context("It opened in THE city of Paris!", ["city of paris"]) == 1.0
    assert answer_in_context("Parisian food", ["Paris"]) == 0.0  # word boundaries, as acc matches
    assert answer_in_context("yes, no and maybe", ["yes"]) is None
    assert answer_in_context("anything", ["No"]) is None
    assert supporting_facts_kept("text", []) == (None, None)


# ------------------------------------------------------------------------------------------------------- intervals
def test_bootstrap_on_identical_methods_is_zero():
    a = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    assert paired_bootstrap(a, list(a)) == [0.0, 0.0]
    assert not excludes_zero([0.0, 0.0])


def test_bootstrap_separates_a_clear_difference_and_skips_undefined_pairs():
    a = [1.0] * 60 + [0.0] * 40
    b = [0.0] * 100
    low, high = paired_bootstrap(a, b)
    assert 0.45 < low < 0.6 < high < 0.75
    assert excludes_zero([low, high])
    assert paired_bootstrap([1.0, None, 0.0], [0.0, 1.0, None]) is None  # one usable pair
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 0.0])


# ---------------------------------------------------------------------------------------------------------- curves
def test_curve_read_at_a_budget():
    pts = [{"label": "k1", "tokens": 100.0, "m": 0.2}, {"label": "k3", "tokens": 300.0, "m": 0.6},
           {"label": "k2", "tokens": 200.0, "m": 0.5}]
    assert curve_at(pts, 150, "m") == {"value": pytest.approx(0.35), "between": ["k1", "k2"], "weight": 0.5}
    assert curve_at(pts, 200, "m") == {"value": 0.5, "between": ["k2"], "weight": 1.0}
    assert curve_at(pts, 64, "m") is None and curve_at(pts, 330, "m") is None  # no extrapolation
    # a budgeted setting reads slightly under its budget: read there (at or below the budget)
    assert curve_at(pts, 310, "m") == {"value": 0.6, "between": ["k3"], "weight": 1.0}
    assert interpolate_per_question([0.0, 1.0, None], [1.0, 1.0, 0.0], 0.25) == [0.25, 1.0, None]


def test_sweep_syntax():
    assert [x[0] for x in expand_sweep("extractive:max_tokens=64/128,threshold=0")] == [
        "extractive:max_tokens=64,threshold=0", "extractive:max_tokens=128,threshold=0"]
    specs = parse_methods("none,truncate:64/128,lc_embeddings_filter:k=1/2")
    assert [(s.label, s.family, s.knob) for s in specs] == [
        ("none", "none", None), ("truncate:64", "truncate:*", "max_tokens"), ("truncate:128", "truncate:*", "max_tokens"),
        ("lc_embeddings_filter:k=1", "lc_embeddings_filter:k=*", "k"),
        ("lc_embeddings_filter:k=2", "lc_embeddings_filter:k=*", "k")]


# ------------------------------------------------------------------------------------------------------- the bench
SQUAD = [{"id": f"s{i}", "question": f"What is fact {i}?", "answers": [f"value{i}"], "title": "Art_A",
          "context": f"Fact {i} is value{i}. Filler sentence number {i}."} for i in range(4)]
SQUAD += [{"id": "b0", "question": "Other?", "answers": ["x"], "title": "Art_B", "context": "Unrelated text x."}]


def test_same_article_distractors_are_seeded_per_question(tmp_path):
    path = tmp_path / "squad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SQUAD))
    examples = load_qa(path)
    sets = same_article_distractors(examples, examples, 2, seed=0)
    for ex, ps in zip(examples, sets, strict=True):
        assert ex.passages[0] in ps
        assert {p.metadata["title"] for p in ps} == {ex.passages[0].metadata["title"]}
    assert len(sets[0]) == 3 and len(sets[4]) == 1  # Art_B has no other paragraph
    assert same_article_distractors(examples[:1], examples, 2, seed=0) == sets[:1]


@pytest.fixture(scope="module")
def generator(tiny_llama_generator):
    return tiny_llama_generator


def test_no_generate_bench_records_evidence_curves_and_intervals(tmp_path, generator):
    from ragzip.embed import Embedder

    path = tmp_path / "hotpot.jsonl"
    path.write_text(json.dumps(HOTPOT) + "\n" + json.dumps({**HOTPOT, "id": "h2"}) + "\n")
    out = tmp_path / "res.json"
    result = run_bench(path, "none,no_context,truncate:8/16/1000", limit=None, setting="given", generator=generator,
                       embedder=Embedder("hash:64"), out=out, progress=False, generate=False,
                       reference="truncate:1000", budgets=(12,))
    m = result["methods"]
    assert m["none"]["ans_in_ctx"] == 1.0 and m["none"]["sf_all"] == 1.0 and m["none"]["sf_recall"] == 1.0
    assert m["no_context"]["ans_in_ctx"] == 0.0 and m["no_context"]["sf_recall"] == 0.0
    assert "acc" not in m["none"]  # no reader ran
    assert m["truncate:1000"]["diff_ci"]["sf_all"] == [0.0, 0.0]  # same text as none
    assert m["none"]["diff_ci_ref_vs"] == "truncate:1000"
    fam = result["curves"]["families"]["truncate:*"]
    assert [p["label"] for p in fam["points"]] == ["truncate:8", "truncate:16", "truncate:1000"]
    assert fam["at"]["12"]["sf_recall"]["between"] == ["truncate:8", "truncate:16"]
    record = json.loads(out.with_suffix(".jsonl").read_text().splitlines()[0])
    assert record["context_text"].startswith("Tower: The Tower") and record["sf_all"] == 1.0
    md = out.with_suffix(".md").read_text()
    assert "## Evidence kept" in md and "## At equal budgets" in md and "## End to end" not in md
    from ragzip.bench import rerender

    again = rerender(out)  # the report recomputed from the files gives the same intervals and curves
    assert again["curves"] == json.loads(json.dumps(result["curves"]))
    assert again["methods"]["truncate:1000"]["diff_ci"] == m["truncate:1000"]["diff_ci"]


def test_a_finished_run_read_against_another_curve(tmp_path, generator):
    """curves_against: the same records, intervals against another curve (e.g. a new classifier against the old)."""
    import gzip

    from ragzip.bench import curves_against
    from ragzip.embed import Embedder

    path = tmp_path / "hotpot.jsonl"
    path.write_text("".join(json.dumps({**HOTPOT, "id": f"h{i}"}) + "\n" for i in range(3)))
    out = tmp_path / "res.json"
    result = run_bench(path, "none,truncate:8/16/1000,lc_embeddings_filter:k=1/2/3", limit=None, setting="given",
                       generator=generator, embedder=Embedder("hash:64"), out=out, progress=False, generate=False,
                       reference="lc_embeddings_filter:k=*", budgets=(16, 37))
    md = out.with_suffix(".md").read_text()
    ran = result["curves"]["families"]["truncate:*"]["at"]
    other = curves_against(out, "truncate:*")
    assert other["reference"] == "truncate:*" and other["budgets"] == [16, 37]
    for budget in ("16", "37"):  # EmbeddingsFilter minus truncate now: the run's interval, mirrored
        low, high = ran[budget]["sf_recall"]["diff_ci_ref"]
        flipped = other["families"]["lc_embeddings_filter:k=*"]["at"][budget]["sf_recall"]
        assert flipped["value"] == result["curves"]["families"]["lc_embeddings_filter:k=*"]["at"][budget]["sf_recall"][
            "value"]
        assert flipped["diff_ci_ref"] == pytest.approx([-high, -low], abs=1e-3)
        assert "diff_ci_ref" not in other["families"]["truncate:*"]["at"][budget]["sf_recall"]  # itself
    assert out.with_suffix(".md").read_text() == md  # the run's files stay as they are
    jsonl = out.with_suffix(".jsonl")
    with gzip.open(tmp_path / "res.jsonl.gz", "wt", encoding="utf-8") as packed:
        packed.write(jsonl.read_text())
    jsonl.unlink()  # a committed run keeps its records gzipped
    assert curves_against(out, "truncate:*") == other
    from ragzip.bench import rerender

    rerender(out)  # redrawn from the gzipped records, which stay the only copy
    assert not jsonl.exists() and curves_against(out, "truncate:*") == other
    with pytest.raises(ValueError, match="'ragcompress:budget=\\*' is not a curve of this run; its curves:"):
        curves_against(out, "ragcompress:budget=*")


def test_sweep_scores_each_passage_once(tmp_path, generator):
    """Three max_tokens settings of the extractive compressor share one scoring pass."""
    from ragzip.embed import Embedder
    from ragzip.plugins.extractive.compressor import ExtractiveCompressor

    calls: list[int] = []

    class CountingScorer:
        default_threshold = 0.5

        def score(self, items):
            calls.append(len(items))
            return [[0.9 if "born" in s else 0.1 for s in it.sentences] for it in items]

    original = ExtractiveCompressor.__init__

    def init(self, config=None, **kw):
        original(self, config, scorer=CountingScorer())

    path = tmp_path / "hotpot.jsonl"
    path.write_text(json.dumps(HOTPOT) + "\n")
    ExtractiveCompressor.__init__ = init
    try:
        result = run_bench(path, "extractive:max_tokens=8/16/64,threshold=0", limit=None, setting="given",
                           generator=generator, embedder=Embedder("hash:64"), progress=False, generate=False)
    finally:
        ExtractiveCompressor.__init__ = original
    assert sum(calls) == 3  # the three passages, scored once (the warm-up included)
    labels = list(result["methods"])
    assert [result["methods"][k].get("scores_from") for k in labels] == [None, labels[0], labels[0]]
    tokens = [result["methods"][k]["context_tokens"] for k in labels]
    assert tokens == sorted(tokens) and tokens[0] <= 8


def test_budgets_may_be_a_share_of_the_uncompressed_tokens():
    from ragzip.bench import _budgets, _resolve_budgets
    from ragzip.errors import ConfigError

    assert _budgets("64, 128,25%") == [64, 128, "25%"]
    assert _resolve_budgets([64, "25%"], {"none": {"context_tokens": 800.0}}) == [64, 200]
    assert _resolve_budgets([64, "25%"], {}) == [64]  # no `none` row: the share cannot be read
    with pytest.raises(ConfigError, match="neither a positive token count nor a percentage"):
        _budgets("64,0")
