"""Soft-token placeholders survive LlamaIndex's prompt splitting.

The failures ruled out: a placeholder glued to neighbouring text (``1889<<ragzip:soft:…>>``) in text without spaces
makes LlamaIndex's ``TokenTextSplitter`` fall back to characters and cut it in half (the halves reach the model as
text, their vectors stay pinned). LlamaIndex's default ``PromptHelper`` counts a placeholder as about 25 GPT tokens
(it fills one position per vector), splits contexts that fit, and overlaps the chunks it splits: the compact
synthesizer sends a placeholder twice and the second read fails with the generator's "read once" error.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("llama_index.core")

from conftest import build_tiny_refrag  # noqa: E402
from llama_index.core import get_response_synthesizer  # noqa: E402
from llama_index.core.node_parser import TokenTextSplitter  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402

from ragzip.errors import SoftTokenError  # noqa: E402
from ragzip.integrations.llamaindex import RagzipLLM, RagzipPostprocessor  # noqa: E402
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore  # noqa: E402

QUESTION = "Who designed the Eiffel Tower?"
ENGLISH = [f"Passage {i}: the Eiffel Tower was completed in 1889 and designed by the engineering firm of Gustave "
           f"Eiffel in Paris, item {i}." for i in range(36)]
NO_SPACES = "埃菲尔铁塔于1889年建成，由古斯塔夫·埃菲尔的工程公司设计，位于巴黎。" * 3
WINDOW = 800  # LlamaIndex's compact synthesizer needs several prompts for the 36 passages at this size


@pytest.fixture(scope="module")
def refrag_model(minilm_tok):
    return build_tiny_refrag(minilm_tok)


@pytest.fixture()
def generator(tiny_llama_generator):
    from ragzip.generation import GeneratorConfig, HFGenerator

    return HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=2), store=SoftTokenStore(),
                       model=tiny_llama_generator.model, tokenizer=tiny_llama_generator.tokenizer)


def soft_nodes(refrag_model, generator, texts, p=0.25):
    """REFRAG-compressed nodes through ragzip's postprocessor, and the context it made."""
    from ragzip.plugins.refrag import RefragCompressor, RefragConfig

    refrag = RefragCompressor(RefragConfig(k=4, p=p, policy="random"), model=refrag_model)
    post = RagzipPostprocessor(refrag)
    post.bind(generator)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0) for i, t in enumerate(texts)]
    out = post.postprocess_nodes(nodes, query_str=QUESTION)
    assert post.last_context is not None and post.last_context.soft
    return out, post.last_context


def record_generations(generator) -> list[tuple[str, int]]:
    """(prompt, positions read) of every generation."""
    seen: list[tuple[str, int]] = []
    inner = generator.generate

    def generate(prompts, **kw):
        out = inner(prompts, **kw)
        seen.extend((p, g.prompt_positions) for p, g in zip(prompts, out))
        return out

    generator.generate = generate
    return seen


def whole(chunks) -> list[str]:
    """Handles in ``chunks``, after checking that no piece of a placeholder is left outside a whole one."""
    chunks = list(chunks)
    for chunk in chunks:
        rest = PLACEHOLDER_RE.sub("", chunk)
        assert "<<" not in rest and ">>" not in rest and "ragzip" not in rest, chunk
    return [h for chunk in chunks for h in PLACEHOLDER_RE.findall(chunk)]


# -------------------------------------------------------------------------------------------- splitting and counting
def test_llamaindex_splitter_never_cuts_a_placeholder_in_text_without_spaces(refrag_model, generator):
    nodes, ctx = soft_nodes(refrag_model, generator, [NO_SPACES])
    chunks = TokenTextSplitter(chunk_size=64, chunk_overlap=0).split_text(nodes[0].node.text)  # LlamaIndex's default
    assert len(chunks) > 1
    assert sorted(whole(chunks)) == sorted(s.handle for s in ctx.soft)


def test_count_tokens_counts_what_the_generator_reads(refrag_model, generator):
    _, ctx = soft_nodes(refrag_model, generator, ENGLISH[:4])
    llm = RagzipLLM(generator)
    for r in ctx.results:
        assert len(llm.count_tokens(r.text)) == r.tokens_after  # a placeholder fills one position per vector


def test_prompt_helper_packs_placeholders_whole_and_once(refrag_model, generator):
    nodes, ctx = soft_nodes(refrag_model, generator, ENGLISH)
    llm = RagzipLLM(generator)
    chunks = llm.prompt_helper(chunk_size_limit=40).repack(PromptTemplate("{context_str}"), [n.node.text for n in nodes])
    assert len(chunks) > 1 and all(len(llm.count_tokens(c)) <= 40 for c in chunks)
    assert sorted(whole(chunks)) == sorted(s.handle for s in ctx.soft)  # none cut, none repeated (no overlap)


def test_a_placeholder_bigger_than_the_room_left_is_a_clear_error(refrag_model, generator):
    nodes, ctx = soft_nodes(refrag_model, generator, ENGLISH[:1], p=0.0)  # one placeholder, one vector per chunk
    (segment,) = ctx.soft
    helper = RagzipLLM(generator).prompt_helper(chunk_size_limit=3)
    with pytest.raises(SoftTokenError, match=re.escape(f"a soft-token placeholder fills {segment.n_vectors} positions, "
                                                       "more than the 3 tokens LlamaIndex has left for context")):
        helper.repack(PromptTemplate("{context_str}"), [nodes[0].node.text])


# ------------------------------------------------------------------------------------------------------ synthesizers
@pytest.mark.parametrize("mode", ["compact", "refine", "tree_summarize"])
def test_synthesizer_over_many_refrag_nodes_reads_every_placeholder_once(refrag_model, generator, mode):
    nodes, ctx = soft_nodes(refrag_model, generator, ENGLISH)
    seen = record_generations(generator)
    llm = RagzipLLM(generator, context_window=WINDOW)
    synth = get_response_synthesizer(llm=llm, response_mode=mode, prompt_helper=llm.prompt_helper())
    assert str(synth.synthesize(QUESTION, nodes))
    handles = [s.handle for s in ctx.soft]
    assert len(handles) >= 36
    read = whole(p for p, _ in seen)  # each placeholder reached the generator whole, in exactly one prompt
    assert sorted(read) == sorted(handles)
    # The store's own accounting: every vector was read and released, nothing is left pinned.
    assert all(generator.store.gone(h) == "released" for h in handles)
    assert len(generator.store) == 0 and generator.store.pinned == 0
    assert all(positions <= WINDOW for _, positions in seen)
    if mode == "compact":
        assert sum(bool(PLACEHOLDER_RE.search(p)) for p, _ in seen) > 1  # the context really was split


def test_llamaindex_default_prompt_helper_repeating_a_placeholder_is_a_clear_error(refrag_model, generator):
    nodes, _ = soft_nodes(refrag_model, generator, ENGLISH)
    # At 2048 its overlap (10% of a chunk) is wider than a placeholder (~25 GPT tokens), so it repeats some.
    synth = get_response_synthesizer(llm=RagzipLLM(generator, context_window=2048), response_mode="compact")
    with pytest.raises(SoftTokenError, match=re.escape("get_response_synthesizer(llm=llm, "
                                                       "prompt_helper=llm.prompt_helper())")):
        synth.synthesize(QUESTION, nodes)
