"""HFGenerator: prompts, soft-token splicing, the greedy KV-cache decode loop, stop strings and config checks.

Mechanics run on tiny random Llama models built from a config (fast, offline) over the embedded SmolLM2 tokenizer
and over a tiny word-level tokenizer that adds BOS; tests marked ``slow`` load the real SmolLM2-135M.
"""

from __future__ import annotations

import re

import pytest
import torch

from ragzip.config_utils import from_dict
from ragzip.errors import ConfigError, InputError, ModelNotFoundError, SoftTokenError
from ragzip.generation import Generation, GeneratorConfig, HFGenerator, _cut_at_stop
from ragzip.softstore import SoftTokenStore, placeholder
from ragzip.tokens import HFTokenCounter
from ragzip.types import CompressedContext, Passage, PassageResult

# A transformers upgrade that deprecates an argument we pass (e.g. `past_key_values`, removed in 5.40, after which the
# KV cache would be ignored silently) must fail these tests, not pass with a warning.
pytestmark = [pytest.mark.filterwarnings("error::FutureWarning"), pytest.mark.filterwarnings("error::DeprecationWarning")]

SMOL = "embedded:smollm2-135m"


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def smol_tokenizer():
    from ragzip.models import load_tokenizer

    try:
        return load_tokenizer(SMOL)
    except ModelNotFoundError as err:
        pytest.skip(f"embedded SmolLM2 tokenizer unavailable: {err}")


@pytest.fixture(scope="module")
def bos_tokenizer():
    """A word-level tokenizer that adds BOS and has no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<unk>", "A", "B", "C", "D", "Paris", "France", "capital", "is", "the", "of",
             "Question:", "Context:", "Answer:", "What", "?", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0, max_positions: int = 512):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_model(smol_tokenizer):
    return tiny_llama(len(smol_tokenizer))


@pytest.fixture()
def store() -> SoftTokenStore:
    return SoftTokenStore(max_bytes=1 << 20)


@pytest.fixture()
def gen(tiny_model, smol_tokenizer, store) -> HFGenerator:
    return HFGenerator(GeneratorConfig(max_new_tokens=8, stop=()), store=store, model=tiny_model,
                       tokenizer=smol_tokenizer)


def plain_embeddings(gen: HFGenerator, prompt: str, **kw) -> torch.Tensor:
    ids = gen.tokenizer(prompt, **kw)["input_ids"]
    return gen.input_embeddings()(torch.tensor(ids))


# --------------------------------------------------------------------------------------------------------- config
def test_config_defaults_and_coercion() -> None:
    cfg = GeneratorConfig(stop="###", device="")
    assert cfg.stop == ("###",) and cfg.device is None
    assert GeneratorConfig().stop == ("\n",) and GeneratorConfig().model == SMOL
    cfg = from_dict(GeneratorConfig, {"max_new_tokens": 4, "stop": ["\n", "."]}, where="generator")
    assert cfg.max_new_tokens == 4 and cfg.stop == ("\n", ".")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_template": "Question: {question}"},
         "GeneratorConfig.prompt_template must contain the {context} slot, got 'Question: {question}'. "
         "Put {context} where the context goes."),
        ({"prompt_template": "Context: {context}"},
         "GeneratorConfig.prompt_template must contain the {question} slot, got 'Context: {context}'. "
         "Put {question} where the question goes."),
        ({"no_context_template": "Answer:"},
         "GeneratorConfig.no_context_template must contain the {question} slot, got 'Answer:'. "
         "Put {question} where the question goes."),
        ({"prompt_template": "{context} {question} {answer}"},
         "GeneratorConfig.prompt_template has unknown slot(s) {answer}; allowed: {context}, {question}. "
         "Write literal braces as '{{' and '}}'."),
        ({"no_context_template": "{question} {context}"},
         "GeneratorConfig.no_context_template has unknown slot(s) {context}; allowed: {question}."),
        ({"prompt_template": "{context} {question"},
         "GeneratorConfig.prompt_template = '{context} {question' is not a valid format string"),
        ({"max_new_tokens": 0},
         "GeneratorConfig.max_new_tokens = 0 is out of range; it must lie in [1, inf]."),
        ({"batch_size": 0}, "GeneratorConfig.batch_size = 0 is out of range; it must lie in [1, inf]."),
        ({"stop": ("\n", "")}, "GeneratorConfig.stop must be a list of non-empty strings, got ('\\n', '')."),
        ({"model": " "}, "GeneratorConfig.model must be a model name or path, got ' '"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        GeneratorConfig(**kwargs)


def test_from_dict_names_unknown_key() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown key 'max_new_token' in generator. "
                                                    "Did you mean 'max_new_tokens'?")):
        from_dict(GeneratorConfig, {"max_new_token": 3}, where="generator")


# ---------------------------------------------------------------------------------------------- lazy loading, basics
def test_construction_loads_nothing() -> None:
    lazy = HFGenerator(GeneratorConfig(model="embedded:does-not-exist"))
    with pytest.raises(ModelNotFoundError, match=re.escape("unknown embedded model 'embedded:does-not-exist'")):
        _ = lazy.tokenizer


def test_lazy_model_is_loaded_outside_inference_mode(monkeypatch, smol_tokenizer) -> None:
    import ragzip.models

    calls = []

    def fake_load(spec: str, device: str = "cpu"):
        calls.append((spec, device))
        return tiny_llama(len(smol_tokenizer)), smol_tokenizer

    monkeypatch.setattr(ragzip.models, "load_causal_lm", fake_load)
    g = HFGenerator(GeneratorConfig(max_new_tokens=2, device="cpu"), tokenizer=smol_tokenizer)
    assert g.token_counter.count("hello world") == 2 and not calls  # counting tokens loads no model
    g.generate(["hello"])
    assert calls == [(SMOL, "cpu")]
    assert not any(torch.is_inference(p) for p in g.model.parameters())  # still usable for training


def test_space_hidden_size_and_token_counter(gen: HFGenerator) -> None:
    assert gen.hidden_size == 32
    assert gen.space == f"{SMOL}|d=32"
    assert isinstance(gen.token_counter, HFTokenCounter) and gen.token_counter.tokenizer is gen.tokenizer
    assert gen.input_embeddings() is gen.model.get_input_embeddings()


# -------------------------------------------------------------------------------------------------------- prompts
def test_format_prompt_uses_chat_template_system_prompt_and_keeps_placeholders(gen: HFGenerator) -> None:
    ph = placeholder("ab" * 16)
    prompt = gen.format_prompt("Who? {x}", f"ctx {ph}")
    user = gen.config.prompt_template.format(context=f"ctx {ph}", question="Who? {x}")
    assert prompt == (f"<|im_start|>system\n{gen.config.system_prompt}<|im_end|>\n"
                      f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    for empty in (None, "", "  \n"):
        no_ctx = gen.format_prompt("Who?", empty)
        assert gen.config.no_context_template.format(question="Who?") in no_ctx and "Context" not in no_ctx


def test_format_prompt_without_chat_template(tiny_model, smol_tokenizer) -> None:
    cfg = GeneratorConfig(use_chat_template=False, system_prompt="Be brief.",
                          prompt_template="C: {context}\nQ: {question}\nA:")
    g = HFGenerator(cfg, model=tiny_model, tokenizer=smol_tokenizer)
    assert g.format_prompt("q?", "c.") == "Be brief.\n\nC: c.\nQ: q?\nA:\n"


def test_embed_prompt_without_placeholders_equals_plain_tokenization(gen: HFGenerator) -> None:
    prompt = gen.format_prompt("What is the capital of France?", "Paris is the capital of France.")
    assert prompt.startswith(gen.tokenizer.bos_token)  # ChatML writes <|im_start|> itself
    assert torch.equal(gen.embed_prompt(prompt), plain_embeddings(gen, prompt))


def test_bos_tokenizer_gets_bos_once_with_and_without_placeholders(bos_tokenizer, store) -> None:
    model = tiny_llama(len(bos_tokenizer), seed=1)
    g = HFGenerator(GeneratorConfig(), store=store, model=model, tokenizer=bos_tokenizer)
    emb = g.input_embeddings()
    prompt = "Question: What is the capital of France ?"
    assert bos_tokenizer(prompt)["input_ids"][0] == bos_tokenizer.bos_token_id
    assert torch.equal(g.embed_prompt(prompt), plain_embeddings(g, prompt))
    assert torch.equal(g.embed_prompt("<s> A B"), plain_embeddings(g, "<s> A B", add_special_tokens=False))

    france = bos_tokenizer.convert_tokens_to_ids("France")
    ph = store.put(emb.weight[france].detach(), space=g.space)
    assert torch.equal(g.logits(prompt), g.logits(prompt.replace("France", ph)))
    # a placeholder first: BOS still comes before it
    ph_a = store.put(emb.weight[bos_tokenizer.convert_tokens_to_ids("A")].detach(), space=g.space)
    assert torch.equal(g.embed_prompt(f"{ph_a} B"), plain_embeddings(g, "A B"))
    assert g.special_affixes() == ([0], []) and g.adds_special_tokens("A") and not g.adds_special_tokens("<s> A")


# --------------------------------------------------------------------------------------------------- soft tokens
def test_placeholder_holding_a_tokens_embedding_gives_exactly_that_tokens_logits(gen: HFGenerator, store) -> None:
    tok, emb = gen.tokenizer, gen.input_embeddings()
    prompt = "A B C"
    ids = tok(prompt)["input_ids"]
    b_id = tok(" B", add_special_tokens=False)["input_ids"]
    assert ids == tok("A")["input_ids"] + b_id + tok(" C")["input_ids"] and len(b_id) == 1  # pieces tokenize as whole
    ph = store.put(emb.weight[b_id[0]].detach(), space=gen.space)
    with_ph = gen.logits(f"A{ph} C")
    plain = gen.logits(prompt)
    assert with_ph.shape == (3, len(tok))
    assert torch.equal(with_ph, plain) and (with_ph - plain).abs().max().item() == 0.0
    with torch.inference_mode():
        from_ids = gen.model(input_ids=torch.tensor([ids])).logits[0]
    assert torch.equal(plain, from_ids)


def test_multi_vector_placeholder_in_a_chat_prompt_matches_the_text(gen: HFGenerator, store) -> None:
    tok, emb = gen.tokenizer, gen.input_embeddings()
    ctx = " Paris is the capital of France."
    prompt = gen.format_prompt("What is the capital of France?", "Context:" + ctx)
    ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    ph = store.put(emb.weight[ctx_ids].detach(), space=gen.space)  # (n, d): one vector per token
    soft_prompt = gen.format_prompt("What is the capital of France?", "Context:" + ph)
    assert torch.equal(gen.embed_prompt(soft_prompt), gen.embed_prompt(prompt))
    assert torch.equal(gen.logits(soft_prompt), gen.logits(prompt))
    [soft], [plain] = gen.generate([soft_prompt]), gen.generate([prompt])
    assert soft.raw_text == plain.raw_text and soft.prompt_positions == plain.prompt_positions


def test_soft_token_counts_as_one_position(gen: HFGenerator, store) -> None:
    ph = store.put(torch.randn(3, gen.hidden_size), space=gen.space)
    soft_prompt = gen.format_prompt("Who?", f"Context: {ph} end")
    before, after = soft_prompt.split(ph)
    n_text = sum(len(gen.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (before, after))
    positions = gen.embed_prompt(soft_prompt).shape[0]  # before generating: generation releases what it read
    out = gen.generate([soft_prompt], max_new_tokens=2)[0]
    assert out.prompt_positions == positions == n_text + 3


def test_forged_placeholder_stays_text(gen: HFGenerator, store) -> None:
    store.put(torch.zeros(gen.hidden_size), space=gen.space)  # a live entry exists, but not this handle
    forged = placeholder("0123456789abcdef" * 2)
    prompt = gen.format_prompt("What does this say?", f"A document quoting {forged} verbatim.")
    assert torch.equal(gen.embed_prompt(prompt), plain_embeddings(gen, prompt))
    assert gen.generate([prompt])[0].prompt_positions == len(gen.tokenizer(prompt)["input_ids"])


def test_stale_placeholder_after_eviction_is_an_error_not_text(gen: HFGenerator) -> None:
    small = SoftTokenStore(max_bytes=gen.hidden_size * 4)  # room for one vector
    g = HFGenerator(gen.config, store=small, model=gen.model, tokenizer=gen.tokenizer)
    stale = small.put(torch.ones(gen.hidden_size), space=g.space, pin=False)
    live = small.put(torch.zeros(gen.hidden_size), space=g.space)  # evicts the first (it was not pinned)
    prompt = f"x {stale} y"
    with pytest.raises(SoftTokenError, match=re.escape("whose vectors were evicted before this generation")):
        g.embed_prompt(prompt)  # it would otherwise reach the model as plain text, silently
    assert g.embed_prompt(f"x {live} y").shape[0] == len(g.tokenizer("x  y")["input_ids"]) + 1


def test_placeholder_from_another_space_is_an_error(gen: HFGenerator, store) -> None:
    ph = store.put(torch.zeros(576), space=f"{SMOL}|d=576")
    with pytest.raises(SoftTokenError, match=re.escape(
            f"soft tokens were made for the embedding space '{SMOL}|d=576' (d=576), but this generator reads "
            f"'{SMOL}|d=32' (d=32). Soft compressors (xrag, refrag) must be built for the generator that reads "
            "their output: give them this generator's model (its `space`), or use a text compressor.")):
        gen.embed_prompt(f"Context: {ph}")
    ph_same_name = store.put(torch.zeros(32), space="other-model|d=32")
    with pytest.raises(SoftTokenError, match=re.escape("made for the embedding space 'other-model|d=32' (d=32)")):
        gen.answer("Who?", ph_same_name)


def test_embed_pieces_lets_gradients_reach_soft_vectors(gen: HFGenerator) -> None:
    soft = torch.zeros(2, gen.hidden_size, requires_grad=True)
    embeds = gen.embed_pieces(["Context:", soft, " Question: who?"])
    n_text = len(gen.tokenizer("Context:")["input_ids"]) + len(gen.tokenizer(" Question: who?")["input_ids"])
    assert embeds.shape == (n_text + 2, gen.hidden_size)
    gen.model(inputs_embeds=embeds[None]).logits.sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    with pytest.raises(SoftTokenError, match=re.escape("soft vectors must have shape (n, 32), got (2, 5).")):
        gen.embed_pieces(["x", torch.zeros(2, 5)])


# ------------------------------------------------------------------------------------------------------ decoding
def test_stop_cut_helper() -> None:
    assert _cut_at_stop("\nParis\nmore", ("\n",)) == 6
    assert _cut_at_stop("  \n  ", ("\n",)) is None
    assert _cut_at_stop("Paris", ("\n",)) is None
    assert _cut_at_stop("Paris. It is", ("\n", ". ")) == 5
    assert _cut_at_stop("Answer: x", ("Answer:",)) is None  # a stop needs some text before it


def test_loop_matches_hf_greedy_generate(gen: HFGenerator) -> None:
    prompt = gen.format_prompt("What is the capital of France?", "Paris is the capital of France.")
    ours = gen.generate([prompt], max_new_tokens=10)[0]
    ids = torch.tensor([gen.tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        ref = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                 do_sample=False, eos_token_id=None, pad_token_id=2)
    ref_ids = ref[0, ids.shape[1]:].tolist()
    if 2 in ref_ids:  # our loop stops at eos; compare up to it
        ref_ids = ref_ids[: ref_ids.index(2)]
    assert ours.raw_text == gen.tokenizer.decode(ref_ids, skip_special_tokens=True)
    assert ours.prompt_positions == ids.shape[1]


def test_batch_equals_one_by_one_for_prompts_of_different_lengths(gen: HFGenerator) -> None:
    prompts = [gen.format_prompt(f"Question {i}?", "word " * n) for i, n in enumerate((0, 3, 40, 11, 90))]
    g = HFGenerator(GeneratorConfig(max_new_tokens=10, stop=(), batch_size=3), store=gen.store, model=gen.model,
                    tokenizer=gen.tokenizer)
    batched = g.generate(prompts)
    single = [g.generate([p])[0] for p in prompts]
    assert [b.raw_text for b in batched] == [s.raw_text for s in single]
    assert [b.prompt_positions for b in batched] == [len(g.tokenizer(p)["input_ids"]) for p in prompts]
    assert len({b.prompt_positions for b in batched}) == len(prompts)
    assert all(b.new_tokens == s.new_tokens for b, s in zip(batched, single, strict=True))


def test_stop_strings_cut_the_answer_and_end_decoding(gen: HFGenerator) -> None:
    prompt = gen.format_prompt("Who?", "Someone.")
    full = gen.generate([prompt], max_new_tokens=12, stop=())[0]
    assert full.finish_reason == "length" and full.new_tokens == 12
    first = len(full.raw_text) - len(full.raw_text.lstrip())
    stop = full.raw_text[first + 4: first + 7]  # a piece of the output after some text
    assert stop.strip()
    cut = gen.generate([prompt], max_new_tokens=12, stop=(stop,))[0]
    at = full.raw_text.find(stop, first + 1)
    assert cut.finish_reason == "stop"
    assert cut.text == full.raw_text[:at].strip()
    assert full.raw_text.startswith(cut.raw_text) and cut.new_tokens < 12
    assert stop in cut.raw_text


def test_eos_ends_generation(smol_tokenizer) -> None:
    model = tiny_llama(len(smol_tokenizer), seed=3)
    g = HFGenerator(GeneratorConfig(max_new_tokens=8, stop=()), model=model, tokenizer=smol_tokenizer)
    prompt = g.format_prompt("Who?", None)
    ids = torch.tensor([smol_tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                             eos_token_id=None, pad_token_id=2)[0, ids.shape[1]:].tolist()
    assert ref[0] != ref[1]
    model.generation_config.eos_token_id = [ref[1]]  # the second generated token is now eos
    out = g.generate([prompt])[0]
    assert out.finish_reason == "eos" and out.new_tokens == 2
    assert out.raw_text == smol_tokenizer.decode(ref[:1], skip_special_tokens=True)
    model.generation_config.eos_token_id = [ref[0]]  # eos first: an empty answer
    out = g.generate([prompt])[0]
    assert (out.finish_reason, out.new_tokens, out.text, out.raw_text) == ("eos", 1, "", "")


def test_generation_fields_and_timing(gen: HFGenerator) -> None:
    out = gen.generate([gen.format_prompt("Who?", "ctx")], max_new_tokens=5, stop=())[0]
    assert isinstance(out, Generation) and out.new_tokens == 5 and out.finish_reason == "length"
    assert 0 < out.ttft_s <= out.total_s
    assert out.text == out.raw_text.strip()


def test_generate_input_errors(gen: HFGenerator) -> None:
    assert gen.generate([]) == []
    with pytest.raises(InputError, match=re.escape("generate() takes a list of prompts; wrap a single prompt: "
                                                   "`generate([prompt])`.")):
        gen.generate("a prompt")
    with pytest.raises(InputError, match=re.escape("max_new_tokens must be >= 1, got 0.")):
        gen.generate(["x"], max_new_tokens=0)
    with pytest.raises(InputError, match=re.escape("the prompt is empty: nothing to generate from.")):
        gen.generate([""])


def test_prompt_longer_than_the_model_is_an_error(smol_tokenizer) -> None:
    g = HFGenerator(GeneratorConfig(max_new_tokens=8), model=tiny_llama(len(smol_tokenizer), max_positions=64),
                    tokenizer=smol_tokenizer)
    prompt = g.format_prompt("Who?", "word " * 80)
    n = len(smol_tokenizer(prompt)["input_ids"])
    with pytest.raises(InputError, match=re.escape(
            f"prompt #0 has {n} positions; with max_new_tokens=8 that exceeds the model's 64 positions. "
            "Compress the context harder or retrieve fewer passages (top_k).")):
        g.generate([prompt])


# ------------------------------------------------------------------------------------------------ answer and chat
def test_answer_accepts_compressed_context_text_and_none(gen: HFGenerator) -> None:
    passage = Passage("Paris is the capital of France.", id="p1")
    ctx = CompressedContext("Capital?", (PassageResult(passage, passage.text, "kept"),), "none")
    empty = CompressedContext("Capital?", (PassageResult(passage, "", "dropped"),), "abstractive", summary="")
    q = "Capital?"
    by_ctx, by_text, by_empty, by_none = gen.answer_batch([q] * 4, [ctx, passage.text, empty, None])
    assert by_ctx == by_text.__class__(**{**by_text.__dict__, "ttft_s": by_ctx.ttft_s, "total_s": by_ctx.total_s})
    assert by_empty.raw_text == by_none.raw_text
    assert by_none.prompt_positions == len(gen.tokenizer(gen.format_prompt(q, None))["input_ids"])
    assert gen.answer(q, passage.text).raw_text == by_text.raw_text
    with pytest.raises(InputError, match=re.escape("answer_batch got 2 questions but 1 contexts; pass one context "
                                                   "per question (None for no context).")):
        gen.answer_batch(["a", "b"], [None])
    with pytest.raises(InputError, match=re.escape("context must be a CompressedContext, str or None, got int.")):
        gen.answer("a", 3)  # type: ignore[arg-type]


def test_chat_adds_system_prompt_and_reads_placeholders(gen: HFGenerator, store) -> None:
    tok, emb = gen.tokenizer, gen.input_embeddings()
    ids = tok(" Paris", add_special_tokens=False)["input_ids"]
    ph = store.put(emb.weight[ids].detach(), space=gen.space)
    soft = gen.chat([{"role": "user", "content": f"Context:{ph}\nCapital of France?"}], max_new_tokens=6)
    text = gen.chat([{"role": "user", "content": "Context: Paris\nCapital of France?"}], max_new_tokens=6)
    assert soft.raw_text == text.raw_text and soft.new_tokens == 6
    rendered = gen.render([{"role": "user", "content": "hi"}])
    assert gen.config.system_prompt in rendered
    own = gen.render([{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}])
    assert gen.config.system_prompt not in own and "Mine." in own
    with pytest.raises(InputError, match=re.escape("message #0 must be a dict with string 'role' and 'content'")):
        gen.chat([{"role": "user"}])


# ----------------------------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def real_gen() -> HFGenerator:
    return HFGenerator(GeneratorConfig(), store=SoftTokenStore())


@pytest.mark.slow
def test_real_model_answers_briefly(real_gen: HFGenerator) -> None:
    out = real_gen.answer("When was the Eiffel Tower completed?",
                          "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889.")
    assert "1889" in out.text and "\n" not in out.text.strip()  # the first line only
    assert out.new_tokens <= real_gen.config.max_new_tokens and out.prompt_positions > 20


@pytest.mark.slow
def test_real_model_placeholder_equivalence_and_batching(real_gen: HFGenerator) -> None:
    tok, emb = real_gen.tokenizer, real_gen.input_embeddings()
    ctx = " The Eiffel Tower was completed in 1889."
    ids = tok(ctx, add_special_tokens=False)["input_ids"]
    ph = real_gen.store.put(emb.weight[ids], space=real_gen.space)
    q = "When was the Eiffel Tower completed?"
    plain, soft = real_gen.format_prompt(q, "Context:" + ctx), real_gen.format_prompt(q, "Context:" + ph)
    assert torch.equal(real_gen.logits(plain), real_gen.logits(soft))
    prompts = [plain, real_gen.format_prompt("Who designed it?", "Gustave Eiffel's company designed it. " * 5),
               real_gen.format_prompt(q, None)]
    assert [g.raw_text for g in real_gen.generate(prompts)] == [real_gen.generate([p])[0].raw_text for p in prompts]
