"""Provenance that tells the truth: unit spans in the passage text, every chain stage's decisions and units, decisions
that say kept whole / cut / dropped, and the "not in my documents" switch (no models: toy compressors)."""

from __future__ import annotations

import json
import re

import pytest

from ragzip import ChainCompressor, Compressor, CompressorConfig, Passage, PassageResult, Unit, build_compressor
from ragzip.errors import ConfigError
from ragzip.text import split_sentences
from ragzip.tokens import WhitespaceTokenCounter
from ragzip.types import CompressedContext, locate_units

DOC = ("# Eiffel Tower\n\nThe Eiffel Tower was built for the 1889 World's Fair. It is in Paris. "
       "Gustave Eiffel's company designed it. Tourists climb it every day.")


class KeywordCompressor(Compressor):
    """Extractive-style toy: keeps the sentences that share a word with the query, joined like `extractive` joins
    them (a space between kept runs), units without spans (the base fills them)."""

    name = "test-keyword"

    def __init__(self, *, with_spans: bool = False) -> None:
        super().__init__(CompressorConfig(tokenizer="whitespace"), token_counter=WhitespaceTokenCounter())
        self.with_spans = with_spans

    def _compress(self, query, passages):
        words = {w.lower().strip("?.,'") for w in query.split() if len(w) > 3}
        results = []
        for p in passages:
            sentences = split_sentences(p.text)
            keep = [any(w.lower().strip("?.,'") in words for w in s.text.split()) for s in sentences]
            units = tuple(Unit(k, s.text, 1.0 if k_ else 0.0, k_, *((s.start, s.end) if self.with_spans else ()))
                          for k, (s, k_) in enumerate(zip(sentences, keep)))
            text = _join(p.text, [s for s, k_ in zip(sentences, keep) if k_])
            n = len(p.text.split())
            if not text:
                results.append(PassageResult(p, "", "dropped", reason="no shared word", units=units, tokens_before=n))
            else:
                decision = "kept" if text == p.text else "compressed"
                results.append(PassageResult(p, text, decision, units=units, tokens_before=n,
                                             tokens_after=len(text.split()), extra={"best_score": 1.0}))
        return self.context(query, results)


def _join(text, sentences):
    """Kept sentences with the original characters between adjacent ones, else a space or the line break(s)."""
    out, prev = "", None
    for s in sentences:
        if prev is not None:
            gap = text[prev.end:s.start]
            out += gap if not gap.strip() else "\n\n" if "\n\n" in gap else "\n" if "\n" in gap else " "
        out += s.text
        prev = s
    return out


def truncate(n: int) -> Compressor:
    return build_compressor({"type": "truncate", "max_tokens": n}, token_counter=WhitespaceTokenCounter())


QUERY = "When was the Eiffel Tower built for the World's Fair in Paris?"


# ------------------------------------------------------------------------------------------------------- spans
def test_units_carry_their_span_in_the_passage_text():
    out = KeywordCompressor().compress(QUERY, [Passage(DOC, id="eiffel")])
    r = out.results[0]
    assert r.decision == "compressed" and len(r.units) == 5
    for u in r.units:
        assert u.start is not None and DOC[u.start:u.end] == u.text
    assert [u.text for u in r.kept_units] == ["# Eiffel Tower", "The Eiffel Tower was built for the 1889 World's Fair.",
                                              "It is in Paris."]


def test_locate_units_keeps_given_spans_and_leaves_non_verbatim_units_unplaced():
    units = [Unit(0, "b c", 1.0, True, start=2, end=5), Unit(1, "not there", 0.0, False), Unit(2, "d", 0.0, False)]
    placed = locate_units("a b c d", units)
    assert [(u.start, u.end) for u in placed] == [(2, 5), (None, None), (6, 7)]


def test_provenance_record_has_unit_text_spans_and_kind():
    unit = Unit(0, "It is in Paris.", 0.91234, True, start=55, end=70, kind="sentence")
    record = PassageResult(Passage(DOC, id="e"), "It is in Paris.", "compressed", units=(unit,)).provenance()
    assert record["units"] == [{"index": 0, "text": "It is in Paris.", "score": 0.9123, "kept": True, "start": 55,
                                "end": 70, "kind": "sentence"}]
    json.dumps(record)


# ------------------------------------------------------------------------------------------------------ chains
def test_chain_keeps_every_stages_units_and_maps_spans_to_the_original_text():
    chain = ChainCompressor([KeywordCompressor(), truncate(15)])
    out = chain.compress(QUERY, [Passage(DOC, id="eiffel"), Passage("Bananas are yellow.", id="fruit")])
    eiffel, fruit = out.results
    assert out.method == "test-keyword+truncate"
    assert [s.method for s in eiffel.stages] == ["test-keyword", "truncate"]
    assert [s.decision for s in eiffel.stages] == ["compressed", "compressed"]
    first = eiffel.stages[0]
    assert [u.score for u in first.units] == [1.0, 1.0, 1.0, 0.0, 0.0]  # the scores survive the chain
    for u in first.units:
        assert DOC[u.start:u.end] == u.text
    # The generator reads 15 words: the heading, the first sentence and "It is" -- two units are read whole.
    assert eiffel.text == "# Eiffel Tower The Eiffel Tower was built for the 1889 World's Fair. It is"
    assert [u.kept for u in eiffel.units] == [True, True, False, False, False]
    assert [u.kept for u in first.units] == [True, True, True, False, False]  # what the first stage kept
    assert fruit.decision == "dropped" and [s.decision for s in fruit.stages] == ["dropped"]
    assert fruit.stages[0].units[0].text == "Bananas are yellow."


def test_chain_decision_is_the_fate_over_all_stages_not_the_last_stage_label():
    # truncate(100) passes the cut text on whole: it says "kept", but the passage was cut.
    chain = ChainCompressor([KeywordCompressor(), truncate(100)])
    r = chain.compress(QUERY, [Passage(DOC, id="eiffel")]).results[0]
    assert [s.decision for s in r.stages] == ["compressed", "kept"]
    assert r.decision == "compressed" and r.tokens_before == len(DOC.split()) and r.tokens_after < r.tokens_before
    assert r.reason.startswith("cut by an earlier stage")
    whole = ChainCompressor([truncate(100), truncate(100)]).compress(QUERY, [Passage(DOC, id="e")]).results[0]
    assert whole.decision == "kept"


def test_chain_of_two_extractive_stages_maps_second_stage_spans_through_the_first():
    second = KeywordCompressor()
    chain = ChainCompressor([KeywordCompressor(with_spans=True), second])
    r = chain.compress("Which company designed the tower? Gustave", [Passage(DOC, id="e")]).results[0]
    assert len(r.stages) == 2
    inner = r.stages[1].units
    assert inner and all(u.start is not None and DOC[u.start:u.end] == u.text for u in inner)
    assert [s.decision for s in r.stages] == ["compressed", "kept"] and r.decision == "compressed"
    assert [u.text for u in r.units if u.kept] == ["# Eiffel Tower", "The Eiffel Tower was built for the 1889 World's Fair.",
                                                   "Gustave Eiffel's company designed it."]


def test_chain_provenance_record_lists_each_stage_with_units():
    chain = ChainCompressor([KeywordCompressor(), truncate(15)])
    record = chain.compress(QUERY, [Passage(DOC, id="e")]).results[0].provenance()
    assert [s["method"] for s in record["stages"]] == ["test-keyword", "truncate"]
    assert record["stages"][0]["units"][1]["text"] == "The Eiffel Tower was built for the 1889 World's Fair."
    assert "units" not in record["stages"][1]
    json.dumps(record)


def test_a_summary_in_the_middle_of_a_chain_is_a_clear_error():
    from adapter_helpers import SummaryCompressor

    chain = ChainCompressor([SummaryCompressor("a summary"), truncate(3)])
    with pytest.raises(ConfigError, match=re.escape("Put the summarizing compressor (abstractive) last")):
        chain.compress(QUERY, [Passage(DOC, id="e")])


# ---------------------------------------------------------------------------------------------------- evidence
def test_has_evidence_is_false_when_the_generator_would_read_nothing():
    p = Passage("x", id="x")
    assert CompressedContext("q", (PassageResult(p, "x", "kept"),), "none").has_evidence
    assert not CompressedContext("q", (PassageResult(p, "", "dropped"),), "extractive").has_evidence
    assert not CompressedContext("q", (), "none").has_evidence
    assert not CompressedContext("q", (PassageResult(p, "", "summarized"),), "abstractive", summary="").has_evidence


class FakeGenerator:
    """Stands in for HFGenerator: records what it was asked, answers "model answer"."""

    def __init__(self, reply: str = "") -> None:
        from ragzip.generation import GeneratorConfig

        self.config = GeneratorConfig(no_evidence_reply=reply)
        self.asked: list[str] = []

    def answer_batch(self, questions, contexts):
        from ragzip.generation import Generation

        self.asked.extend(questions)
        return [Generation("model answer", "model answer", 3, 2, 0.1, 0.2, "stop") for _ in questions]


def test_no_evidence_reply_answers_without_the_model_only_when_the_context_is_empty():
    from ragzip.pipeline import answer_or_decline

    p = Passage("x y", id="x")
    full = CompressedContext("q1", (PassageResult(p, "x y", "kept"),), "none")
    empty = CompressedContext("q2", (PassageResult(p, "", "dropped"),), "extractive")
    generator = FakeGenerator("I don't know.")
    out = answer_or_decline(generator, ["q1", "q2"], [full, empty])
    assert [g.text for g in out] == ["model answer", "I don't know."]
    assert out[1].finish_reason == "no_evidence" and generator.asked == ["q1"]
    off = FakeGenerator("")  # the default: the model answers without context
    assert [g.text for g in answer_or_decline(off, ["q2"], [empty])] == ["model answer"] and off.asked == ["q2"]


def _answer(question: str, reply: str = ""):
    from ragzip.pipeline import Answer, answer_or_decline

    chain = ChainCompressor([KeywordCompressor(), truncate(15)])
    passages = [Passage(DOC, id="eiffel", score=0.8), Passage("Bananas are yellow.", id="fruit", score=0.1)]
    ctx = chain.compress(question, passages)
    generation = answer_or_decline(FakeGenerator(reply), [question], [ctx])[0]
    return Answer(question, generation.text, tuple(passages), ctx, generation, 0.01)


def test_ask_json_has_unit_text_spans_and_stages(capsys, monkeypatch):
    from ragzip import cli
    from ragzip.pipeline import RAGPipeline

    answer = _answer(QUERY)
    monkeypatch.setattr(RAGPipeline, "from_yaml", classmethod(lambda cls, path: type("P", (), {
        "ask": lambda self, q: answer})()))
    assert cli.main(["ask", QUERY, "--config", "unused.yaml", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    eiffel = record["passages"][0]
    assert eiffel["decision"] == "compressed" and record["no_evidence"] is False
    unit = eiffel["stages"][0]["units"][1]
    assert unit["text"] == "The Eiffel Tower was built for the 1889 World's Fair." and DOC[unit["start"]:unit["end"]] == unit[
        "text"]
    assert [u["kept"] for u in eiffel["units"]] == [True, True, False, False, False]


def test_ask_table_shows_kept_sentences_with_scores(capsys, monkeypatch):
    from ragzip import cli
    from ragzip.pipeline import RAGPipeline

    answer = _answer(QUERY)
    monkeypatch.setattr(RAGPipeline, "from_yaml", classmethod(lambda cls, path: type("P", (), {
        "ask": lambda self, q: answer})()))
    assert cli.main(["ask", QUERY, "--config", "unused.yaml"]) == 0
    out = capsys.readouterr().out
    assert "eiffel: compressed" in out and "stages: test-keyword:compressed -> truncate:compressed" in out
    assert "+ 1.000  The Eiffel Tower was built for the 1889 World's Fair." in out
    assert "fruit: dropped" in out and "--all-units" in out
    assert cli.main(["ask", QUERY, "--config", "unused.yaml", "--all-units"]) == 0
    assert "  0.000  Tourists climb it every day." in capsys.readouterr().out


def test_ask_says_when_the_reply_is_the_no_evidence_reply(capsys, monkeypatch):
    from ragzip import cli
    from ragzip.pipeline import RAGPipeline

    answer = _answer("Why so?", reply="I don't know.")  # no shared word: everything is dropped
    assert not answer.context.has_evidence and answer.no_evidence
    monkeypatch.setattr(RAGPipeline, "from_yaml", classmethod(lambda cls, path: type("P", (), {
        "ask": lambda self, q: answer})()))
    assert cli.main(["ask", "Why so?", "--config", "unused.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("I don't know.\n") and "no evidence in the retrieved passages" in out


# ---------------------------------------------------------------------------------------------------- adapters
def test_llamaindex_metadata_keeps_units_spans_and_stages_through_a_chain():
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragzip.integrations.llamaindex import RagzipPostprocessor

    post = RagzipPostprocessor(ChainCompressor([KeywordCompressor(), truncate(15)]))
    node = TextNode(text=DOC, id_="eiffel")
    out = post.postprocess_nodes([NodeWithScore(node=node, score=0.8)], query_str=QUERY)
    record = out[0].node.metadata["ragzip"]
    assert [s["method"] for s in record["stages"]] == ["test-keyword", "truncate"]
    for unit in record["stages"][0]["units"]:
        assert node.text[unit["start"]:unit["end"]] == unit["text"]  # spans in the *input* node's text
    assert [u["kept"] for u in record["units"]] == [True, True, False, False, False]


def test_langchain_metadata_keeps_units_spans_and_stages_through_a_chain():
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ragzip.integrations.langchain import RagzipCompressor

    comp = RagzipCompressor(ChainCompressor([KeywordCompressor(), truncate(15)]))
    out = comp.compress_documents([Document(page_content=DOC, id="eiffel")], QUERY)
    record = out[0].metadata["ragzip"]
    assert record["decision"] == "compressed"
    assert [s["decision"] for s in record["stages"]] == ["compressed", "compressed"]
    kept = [u for u in record["stages"][0]["units"] if u["kept"]]
    assert [DOC[u["start"]:u["end"]] for u in kept] == [u["text"] for u in kept]
    json.dumps(record)


@pytest.mark.parametrize("framework", ["llamaindex", "langchain"])
def test_qa_prompt_is_the_generators_prompt_from_a_yaml_file(tmp_path, framework):
    pytest.importorskip("llama_index.core" if framework == "llamaindex" else "langchain_core")
    import importlib

    qa_prompt = importlib.import_module(f"ragzip.integrations.{framework}").qa_prompt
    path = tmp_path / "ragzip.yaml"
    path.write_text("generator:\n  system_prompt: 'Be brief {not a slot}.'\n"
                    '  prompt_template: "Docs: {context}\\nQ: {question} {{literal}}"\n')
    slots = {"context_str": "C", "query_str": "Q?"} if framework == "llamaindex" else {"context": "C", "question": "Q?"}
    messages = [m.content for m in qa_prompt(path).format_messages(**slots)]
    assert messages == ["Be brief {not a slot}.", "Docs: C\nQ: Q? {literal}"]
    default = [m.content for m in qa_prompt().format_messages(**slots)]
    assert default == ["Reply with a short answer.", "C\n\nQuestion: Q?"]


# ------------------------------------------------------------------------------------------------------- quiet
def test_quiet_logs_dependency_warnings_at_debug_and_keeps_ragzips_own(caplog):
    import logging
    import warnings

    import ragzip.types as own
    from ragzip.quiet import quiet_dependencies

    caplog.set_level(logging.DEBUG, logger="ragzip.quiet")
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        before = warnings.showwarning
        with quiet_dependencies():
            with quiet_dependencies():  # re-entrant
                warnings.warn_explicit("old argument", FutureWarning, "/x/site-packages/transformers/m.py", 1)
            warnings.warn_explicit("ragzip says", UserWarning, own.__file__, 2)
        assert warnings.showwarning is before
        warnings.warn_explicit("after", FutureWarning, "/x/site-packages/transformers/m.py", 3)
    assert shown == ["ragzip says", "after"]
    assert "FutureWarning: old argument" in caplog.text


def test_quiet_switches_off_transformers_progress_bars_and_restores_them():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    from ragzip.quiet import quiet_dependencies

    hf_logging.enable_progress_bar()
    with quiet_dependencies():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
