"""The abstractive compressor: prompt, LoRA round trip, selective augmentation, checks, long input, seq2seq, training.

Mechanics run on tiny models built from configs with a byte-level BPE tokenizer trained in the test (no downloads);
compressor logic runs on a scripted summarizer whose outputs the test chooses. One slow test loads the shipped adapter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import build_bpe_tokenizer, build_tiny_llama

from ragzip import Passage, build_compressor
from ragzip.errors import ConfigError, InputError
from ragzip.plugins.abstractive import AbstractiveCompressor, AbstractiveConfig
from ragzip.plugins.abstractive.compressor import EMPTY_REASON, content_words, support
from ragzip.plugins.abstractive.modeling import (
    LoRAConfig,
    LoRALinear,
    Summarizer,
    SummaryOutput,
    cut_to_tokens,
    split_sentences,
)
from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig

CORPUS = [
    "Question: Document: Summary: the of and a in is was by for to",
    "Uri Geller is an Israeli illusionist and self-proclaimed psychic born in 1946.",
    "The Antiques Ghost Show was presented by Nina Sebastiane in 2003.",
    "Derek Acorah was a British psychic best known for the show Most Haunted.",
    "Paris is the capital of France. The Eiffel Tower was completed in 1889.",
    "Der Eiffelturm steht in Paris und wurde 1889 eröffnet.",
    "埃菲尔铁塔位于巴黎。它于1889年建成。",
    "برج إيفل في باريس",
]


@pytest.fixture(scope="session")
def tokenizer():
    return build_bpe_tokenizer(CORPUS * 4, vocab_size=400)


@pytest.fixture(scope="session")
def causal_dir(tmp_path_factory, tokenizer):
    model = build_tiny_llama(len(tokenizer), tie=True, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory, tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


class ScriptedSummarizer(Summarizer):
    """A real (tiny) summarizer whose decoded outputs are scripted: one entry per generate() prompt, in call order."""

    def __init__(self, base: Summarizer, outputs: list[str]) -> None:
        super().__init__(base.model, base.tokenizer, backbone=base.backbone)
        self.outputs = list(outputs)
        self.prompts: list[str] = []

    def generate(self, prompts, *, max_new_tokens, empty_threshold=None):
        results = []
        for ids in prompts:
            self.prompts.append(self.tokenizer.decode(ids))
            text = self.outputs.pop(0)
            n = self.count(text)
            stopped = "empty" if not text else ("length" if n >= max_new_tokens else "eos")
            results.append(SummaryOutput(text, text, n, 0.9 if not text else 0.1, stopped))
        return results


@pytest.fixture()
def scripted(causal_dir, words):
    def make(outputs: list[str], **cfg) -> tuple[AbstractiveCompressor, ScriptedSummarizer]:
        fake = ScriptedSummarizer(Summarizer.load(causal_dir), outputs)
        gate = cfg.pop("gate", None)
        cfg.setdefault("relevance_gate", "extractive" if gate is not None else "none")
        config = AbstractiveConfig(model=causal_dir, adapter="none", tokenizer="whitespace", **cfg)
        return AbstractiveCompressor(config, token_counter=words, summarizer=fake, gate=gate), fake
    return make


PASSAGES = [
    Passage("Uri Geller: Uri Geller is an Israeli illusionist and self-proclaimed psychic born in 1946.", id="a"),
    Passage("Derek Acorah: Derek Acorah was a British psychic best known for the show Most Haunted.", id="b"),
    Passage("Paris: Paris is the capital of France. The Eiffel Tower was completed in 1889.", id="c"),
]
QUERY = "Which psychic is best known for Most Haunted?"


# ---------------------------------------------------------------------------------------------------------- prompt
def test_prompt_is_recomp_format(causal_dir):
    s = Summarizer.load(causal_dir)
    assert s.prompt("Who?", ["d1", "d2"]) == "Question: Who?\n Document: d1\nd2\n Summary: "


def test_target_is_summary_then_end_token_and_empty_is_end_alone(causal_dir):
    s = Summarizer.load(causal_dir)
    assert s.encode_target("") == [s.end_ids[0]]
    ids = s.encode_target("Paris")
    assert ids[-1] == s.end_ids[0] and len(ids) > 1


def test_summary_prefix_starts_targets_and_is_stripped_from_outputs(causal_dir):
    s = Summarizer.load(causal_dir, private=True)
    s.summary_prefix = "Relevant:"
    assert s.encode_target("") == [s.end_ids[0]]  # empty stays the end token alone
    assert s.tokenizer.decode(s.encode_target("Paris")[:-1]) == "Relevant: Paris"
    s.model.requires_grad_(False)
    forced = s.tokenizer("Relevant: Paris", add_special_tokens=False)["input_ids"]

    class Script:  # a logits processor that makes the tiny model say "Relevant: Paris" then </s>
        def __init__(self):
            self.start = None

        def __call__(self, input_ids, scores):
            self.start = self.start or input_ids.shape[1]
            step = input_ids.shape[1] - self.start
            target = forced[step] if step < len(forced) else s.end_ids[0]
            out = torch.full_like(scores, float("-inf"))
            out[:, target] = 0.0
            return out

    from transformers import LogitsProcessorList

    original = s.model.generate
    s.model.generate = lambda **kw: original(**{**kw, "logits_processor": LogitsProcessorList(
        [*kw["logits_processor"], Script()])})
    out = s.summarize([QUERY], [[PASSAGES[1].text]], max_new_tokens=16)[0]
    assert out.text == "Paris" and out.stopped == "eos" and out.raw.startswith("Relevant:")


def test_registered_and_built_from_yaml_dict():
    c = build_compressor({"type": "abstractive", "max_summary_tokens": 64, "on_empty": "keep_original"})
    assert isinstance(c, AbstractiveCompressor) and c.config.max_summary_tokens == 64


@pytest.mark.parametrize(("cfg", "message"), [
    ({"on_empty": "skip"},
     "compressor[abstractive].on_empty = 'skip' is not allowed; choose one of 'no_context', 'keep_original'."),
    ({"backbone": "encoder"},
     "compressor[abstractive].backbone = 'encoder' is not allowed; choose one of 'causal', 'seq2seq'."),
    ({"prompt_template": "Q: {question}"},
     "compressor[abstractive].prompt_template must contain {documents}, got 'Q: {question}'; "
     "e.g. 'Question: {question}\\n Document: {documents}\\n Summary: '."),
    ({"max_summary_tokens": 0},
     "compressor[abstractive].max_summary_tokens = 0 is out of range; it must lie in [1, inf]."),
    ({"empty_threshold": 1.5},
     "compressor[abstractive].empty_threshold = 1.5 is out of range; it must lie in [0.0, 1.0]."),
    ({"relevance_gate": "bm25"},
     "compressor[abstractive].relevance_gate = 'bm25' is not allowed; choose one of 'auto', 'set', 'extractive', "
     "'none'."),
    ({"gate_threshold": -0.1},
     "compressor[abstractive].gate_threshold = -0.1 is out of range; it must lie in [0.0, 1.0]."),
])
def test_bad_config_errors_say_how_to_fix(cfg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_compressor({"type": "abstractive", **cfg})


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'max_summary_tokens'?")):
        build_compressor({"type": "abstractive", "max_summary_token": 10})


# ------------------------------------------------------------------------------------------------------------ LoRA
def test_lora_starts_as_identity_and_round_trips_only_adapter_weights(causal_dir, tmp_path):
    from safetensors.torch import load_file

    from ragzip.models import load_causal_lm

    s = Summarizer.load(causal_dir, private=True)
    ids = torch.tensor([s.encode_prompt(s.prompt(QUERY, [p.text for p in PASSAGES]))])
    before = s.model(input_ids=ids).logits
    wrapped = s.add_adapter(LoRAConfig(rank=4, target_modules=("q_proj", "v_proj")))
    assert len(wrapped) == 4  # 2 layers x (q, v)
    assert torch.allclose(s.model(input_ids=ids).logits, before)  # B = 0: the adapter starts as the identity
    for p in s.trainable_parameters():
        torch.nn.init.normal_(p, std=0.5)
    s.model.eval()
    adapted = s.model(input_ids=ids).logits
    assert not torch.allclose(adapted, before)
    folder = s.save_adapter(tmp_path / "adapter", dtype="float32", empty_threshold=0.7)

    state = load_file(str(folder / "model.safetensors"))
    assert state and all(k.endswith((".lora_A", ".lora_B")) for k in state)
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in s.trainable_parameters())
    card = json.loads((folder / "config.json").read_text())
    assert card["type"] == "abstractive" and card["base_model"] == causal_dir and card["empty_threshold"] == 0.7

    loaded = Summarizer.load(causal_dir, adapter=folder)
    assert torch.allclose(loaded.model(input_ids=ids).logits, adapted, atol=1e-6)
    assert loaded.adapter.empty_threshold == 0.7
    shared, _ = load_causal_lm(causal_dir)  # the per-process cached model (a generator may read it) is untouched
    assert not any(isinstance(m, LoRALinear) for m in shared.modules())
    assert torch.allclose(shared(input_ids=ids).logits, before)

    merged = Summarizer.load(causal_dir, adapter=folder, merge=True)  # inference: the adapter folded into W
    assert not any(isinstance(m, LoRALinear) for m in merged.model.modules())
    assert torch.allclose(merged.model(input_ids=ids).logits, adapted, atol=1e-5)
    assert torch.allclose(shared(input_ids=ids).logits, before)  # merging wrote new tensors, not the shared ones
    with pytest.raises(InputError, match="merged into its weights"):
        merged.save_adapter(tmp_path / "again")


def test_adapter_for_another_model_is_a_clear_error(causal_dir, tmp_path):
    s = Summarizer.load(causal_dir, private=True)
    s.add_adapter(LoRAConfig(rank=2, target_modules=("q_proj",)))
    folder = s.save_adapter(tmp_path / "a")
    card = json.loads((folder / "config.json").read_text())
    card["lora"]["rank"] = 3
    (folder / "config.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match=re.escape("the adapter was trained with another rank or base model")):
        Summarizer.load(causal_dir, adapter=folder)


def test_lora_targets_that_match_nothing_list_the_real_names(causal_dir):
    s = Summarizer.load(causal_dir, private=True)
    with pytest.raises(ConfigError, match=re.escape("its Linear layers are named: down_proj, gate_proj, k_proj")):
        s.add_adapter(LoRAConfig(target_modules=("query",)))


def test_unknown_key_in_saved_adapter_is_a_warning(causal_dir, tmp_path, caplog):
    s = Summarizer.load(causal_dir, private=True)
    s.add_adapter(LoRAConfig(rank=2, target_modules=("q_proj",)))
    folder = s.save_adapter(tmp_path / "a")
    card = json.loads((folder / "config.json").read_text())
    card["from_the_future"] = 1
    (folder / "config.json").write_text(json.dumps(card))
    assert Summarizer.load(causal_dir, adapter=folder).adapter is not None
    assert "from_the_future" in caplog.text


# --------------------------------------------------------------------------------------------- real tiny decoding
def test_threshold_zero_gives_empty_summary_and_no_context(causal_dir, words):
    config = AbstractiveConfig(model=causal_dir, adapter="none", tokenizer="whitespace",
                               relevance_gate="none", empty_threshold=0.0)
    ctx = AbstractiveCompressor(config, token_counter=words).compress(QUERY, PASSAGES)
    assert ctx.summary == "" and ctx.text == "" and ctx.tokens_after == 0
    assert ctx.extra["empty"] is True and ctx.reason.startswith(EMPTY_REASON)
    assert [r.decision for r in ctx.results] == ["dropped"] * 3
    assert all(r.reason == EMPTY_REASON for r in ctx.results)


def test_threshold_one_never_empty_and_length_limit_flags_truncated(causal_dir, words):
    config = AbstractiveConfig(model=causal_dir, adapter="none", tokenizer="whitespace",
                               relevance_gate="none", empty_threshold=1.0, max_summary_tokens=7)
    c = AbstractiveCompressor(config, token_counter=words)
    ctx = c.compress(QUERY, PASSAGES)
    # the end token is barred at step one; this random tiny model never says </s>: it runs to the limit, flagged
    assert ctx.extra["stopped"] == "length" and ctx.extra["truncated"] and ctx.extra["summary_raw_tokens"] == 7
    assert c.stats()["questions"] == 1 and c.stats()["truncated_rate"] == 1.0


def test_batch_equals_single_with_real_decoding(causal_dir, words):
    config = AbstractiveConfig(model=causal_dir, adapter="none", tokenizer="whitespace",
                               relevance_gate="none", empty_threshold=1.0,
                               max_summary_tokens=6, batch_size=3)
    c = AbstractiveCompressor(config, token_counter=words)
    queries = [QUERY, "Where is the Eiffel Tower?", "Who is Uri Geller?"]
    lists = [PASSAGES, PASSAGES[2:], PASSAGES[:1]]
    batch = c.compress_batch(queries, lists)
    single = [c.compress(q, p) for q, p in zip(queries, lists, strict=True)]
    assert [b.text for b in batch] == [s.text for s in single]


def test_seq2seq_backbone_with_a_tiny_t5(t5_dir, words):
    config = AbstractiveConfig(model=t5_dir, backbone="seq2seq", adapter="none", tokenizer="whitespace",
                               relevance_gate="none", max_summary_tokens=5, empty_threshold=1.0)
    c = AbstractiveCompressor(config, token_counter=words)
    ctx = c.compress(QUERY, PASSAGES)
    assert c.summarizer.backbone == "seq2seq" and ctx.extra["stopped"] != "empty"
    assert 0 < ctx.extra["summary_raw_tokens"] <= 5
    empty = AbstractiveCompressor(AbstractiveConfig(model=t5_dir, backbone="seq2seq", adapter="none",
                                                    tokenizer="whitespace", relevance_gate="none",
                                                    empty_threshold=0.0),
                                  token_counter=words).compress(QUERY, PASSAGES)
    assert empty.summary == "" and empty.extra["empty"]


def test_seq2seq_lora_trains(t5_dir):
    s = Summarizer.load(t5_dir, backbone="seq2seq")
    wrapped = s.add_adapter(LoRAConfig(rank=2))
    assert any(w.endswith(".q") for w in wrapped) and any(w.endswith(".wi") for w in wrapped)
    pair = (s.encode_prompt(s.prompt(QUERY, [PASSAGES[1].text])), s.encode_target("Derek Acorah."))
    s.model.train()
    s.loss([pair], first_token_weight=2.0).backward()
    assert all(p.grad is not None for p in s.trainable_parameters())
    assert any(p.grad.abs().sum() > 0 for p in s.trainable_parameters())


def test_causal_loss_scores_only_the_target(causal_dir):
    s = Summarizer.load(causal_dir, private=True)
    s.add_adapter(LoRAConfig(rank=2, dropout=0.0, target_modules=("q_proj",)))
    s.model.eval()
    prompt = s.encode_prompt(s.prompt(QUERY, [PASSAGES[1].text]))
    target = s.encode_target("Derek Acorah.")
    loss = s.loss([(prompt, target)])
    logits = s.model(input_ids=torch.tensor([prompt + target])).logits[0]
    by_hand = torch.nn.functional.cross_entropy(logits[len(prompt) - 1:-1], torch.tensor(target))
    assert torch.allclose(loss, by_hand, atol=1e-5)
    other_prompt = s.loss([(prompt[:-3] + prompt[-3:], target)])
    assert torch.allclose(loss, other_prompt)


# ------------------------------------------------------------------------------------------- compressor behaviour
def test_summary_is_the_context_and_passages_are_attributed(scripted):
    c, fake = scripted(["Derek Acorah was a British psychic best known for the show Most Haunted."])
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.text == "Derek Acorah was a British psychic best known for the show Most Haunted."
    assert ctx.summary_tokens == len(ctx.text.split())
    assert ctx.tokens_before == sum(len(p.text.split()) for p in PASSAGES)
    assert [r.decision for r in ctx.results] == ["summarized"] * 3
    assert [r.extra["attributed"] for r in ctx.results] == [False, True, False]
    assert fake.prompts[0].startswith(f"Question: {QUERY}\n Document: Uri Geller:")


def test_empty_summary_keep_original(scripted):
    c, _ = scripted([""], on_empty="keep_original")
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.summary is None and ctx.text == "\n\n".join(p.text for p in PASSAGES)
    assert [r.decision for r in ctx.results] == ["kept"] * 3 and ctx.extra["empty"]
    assert c.stats()["empty_rate"] == 1.0


@pytest.mark.parametrize(("output", "why"), [
    (f"Question: {QUERY} Document: Uri Geller", "contains the prompt marker 'Question:'"),
    (f"I think {QUERY.lower()} is the question.", "repeats the question verbatim"),
])
def test_echoed_prompt_is_detected_and_falls_back_to_truncation(scripted, output, why):
    c, _ = scripted([output], max_summary_tokens=16)
    ctx = c.compress(QUERY, PASSAGES)  # 14, 15 and 14 words
    assert ctx.extra["echo"] and ctx.extra["echo_reason"] == why
    assert ctx.summary is None and ctx.tokens_after == 16
    assert [r.decision for r in ctx.results] == ["kept", "compressed", "dropped"]
    assert ctx.reason == f"the summarizer's output {why}"
    assert c.stats()["echo"] == 1


def test_copying_all_documents_is_an_echo(scripted):
    long = [Passage(" ".join(f"w{i}x{j}" for j in range(40)) + ".", id=f"p{i}") for i in range(3)]
    c, _ = scripted([" ".join(p.text for p in long)], on_echo="no_context")
    ctx = c.compress("What is w1x3 about here?", long)
    assert ctx.extra["echo"] and ctx.text == "" and ctx.extra["empty"]


def test_length_limit_cuts_unfinished_sentence_and_flags_truncated(scripted):
    text = "Derek Acorah was a psychic. He hosted Most Haunted. He was born in"
    c, _ = scripted([text], max_summary_tokens=len(text.split()) // 2)
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.extra["truncated"] and ctx.text == "Derek Acorah was a psychic. He hosted Most Haunted."


def test_repeated_sentences_are_removed(scripted):
    c, _ = scripted(["Derek Acorah hosted Most Haunted. Derek Acorah hosted Most Haunted. Derek Acorah hosted "
                     "Most Haunted."])
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.text == "Derek Acorah hosted Most Haunted." and ctx.extra["repeats_removed"] == 2


def test_faithfulness_drops_unsupported_sentences_and_counts(scripted):
    c, _ = scripted(["Derek Acorah was best known for Most Haunted. He later won three Olympic gold medals in rowing.",
                     "Derek Acorah was a British psychic."], faithfulness_check=True)
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.text == "Derek Acorah was best known for Most Haunted."
    assert ctx.extra["faithfulness"]["dropped"] == 1 and ctx.extra["faithfulness"]["sentences"] == 2
    c.compress(QUERY, PASSAGES)
    stats = c.stats()
    assert stats["faithfulness_fired"] == 1 and stats["faithfulness_fire_rate"] == 0.5
    assert stats["sentences_dropped"] == 1 and stats["sentences_checked"] == 3


def test_faithfulness_removing_everything_means_no_context(scripted):
    c, _ = scripted(["Zorblax invented quantum pancakes on Neptune."], faithfulness_check=True)
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.text == "" and ctx.extra["empty"]
    assert ctx.reason.startswith("the faithfulness check removed every summary sentence")


def test_support_rule():
    assert support("Paris is the capital of France.", [p.text for p in PASSAGES]) == (1.0, 2)
    score, where = support("Paris hosted the 1900 Olympics.", [p.text for p in PASSAGES])
    assert where == 2 and score == pytest.approx(1 / 4)  # paris found; hosted, 1900, olympics not
    assert content_words("埃菲尔铁塔") == {"埃", "菲", "尔", "铁", "塔"}


# ---------------------------------------------------------------------------------------------------- long input
def test_map_reduce_on_long_input(scripted):
    many = [Passage(f"Topic {i}: " + " ".join(["psychic Derek Acorah known for Most Haunted"] * 6) + ".", id=f"p{i}")
            for i in range(6)]
    c, fake = scripted(["Derek Acorah hosted Most Haunted.", "", "He was a British psychic."],
                       max_input_tokens=300, max_summary_tokens=40)
    ctx = c.compress(QUERY, many)
    assert ctx.extra["map_reduce"] and ctx.extra["groups"] == 3 and ctx.extra["summarizer_calls"] == 3
    assert ctx.text == "Derek Acorah hosted Most Haunted. He was a British psychic."  # partials joined: they fit
    for prompt in fake.prompts:
        assert len(c.summarizer.encode_prompt(prompt)) <= 300


def test_map_reduce_summarizes_partials_that_do_not_fit(scripted):
    many = [Passage(f"Topic {i}: " + " ".join(["psychic Derek Acorah known for Most Haunted"] * 6) + ".", id=f"p{i}")
            for i in range(4)]
    partial = "Derek Acorah was a British psychic known for the show Most Haunted."
    c, fake = scripted([partial, partial, "Derek Acorah: psychic of Most Haunted."],
                       max_input_tokens=300, max_summary_tokens=20)
    ctx = c.compress(QUERY, many)
    assert ctx.extra["reduce_rounds"] == 1 and ctx.extra["summarizer_calls"] == 3
    assert ctx.text == "Derek Acorah: psychic of Most Haunted."
    assert partial in fake.prompts[-1]


def test_map_reduce_all_partials_empty_is_empty(scripted):
    many = [Passage(f"Topic {i}: " + " ".join(["unrelated words about gardening tools"] * 8) + ".", id=f"p{i}")
            for i in range(4)]
    c, fake = scripted([""] * 8, max_input_tokens=300)
    ctx = c.compress(QUERY, many)
    assert ctx.extra["map_reduce"] and ctx.text == "" and ctx.extra["empty"]
    assert ctx.extra["summarizer_calls"] == ctx.extra["groups"] == len(fake.prompts) > 1


def test_truncate_mode_fits_the_window(scripted):
    many = [Passage(f"Topic {i}: " + " ".join(["psychic Derek Acorah known for Most Haunted."] * 8), id=f"p{i}")
            for i in range(5)]
    c, fake = scripted(["Derek Acorah hosted Most Haunted."], max_input_tokens=200, long_input="truncate")
    ctx = c.compress(QUERY, many)
    assert not ctx.extra["map_reduce"] and ctx.extra["passages_cut"] == 5
    assert len(fake.prompts) == 1 and len(c.summarizer.encode_prompt(fake.prompts[0])) <= 200
    assert ctx.text == "Derek Acorah hosted Most Haunted."


def test_single_passage_longer_than_window_is_cut(scripted):
    huge = Passage(" ".join(["Derek Acorah hosted Most Haunted."] * 200), id="huge")
    c, fake = scripted(["Derek Acorah hosted Most Haunted."], max_input_tokens=128, max_passage_tokens=0)
    ctx = c.compress(QUERY, [huge])
    assert ctx.results[0].extra["cut"] and len(c.summarizer.encode_prompt(fake.prompts[0])) <= 128


def test_cut_to_tokens_prefers_sentence_end(tokenizer):
    text = "The Eiffel Tower in Paris, the capital of France, was completed in 1889. It is tall."
    cut, was_cut = cut_to_tokens(text, len(tokenizer(text)["input_ids"]) - 2, tokenizer)
    assert was_cut and cut == "The Eiffel Tower in Paris, the capital of France, was completed in 1889."
    short, _ = cut_to_tokens(text, 3, tokenizer)  # no sentence end in the first half: a plain token cut
    assert text.startswith(short) and 0 < len(short) < 20
    assert cut_to_tokens(text, 10_000, tokenizer) == (text, False)


def test_split_sentences_keeps_quotes_and_cjk():
    expected = ['He said "hi."', "Then left!", "你好。", "世界！"]
    assert split_sentences('He said "hi." Then left! 你好。世界！') == expected


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("text", [
    "埃菲尔铁塔位于巴黎。它于1889年建成。",
    "Der Eiffelturm steht in Paris und wurde 1889 eröffnet.",
    "برج إيفل في باريس",
    "emoji 🚀🚀 and control \x00 chars \u200b here",
])
def test_non_english_passages_do_not_crash(causal_dir, words, text):
    config = AbstractiveConfig(model=causal_dir, adapter="none", tokenizer="whitespace",
                               relevance_gate="none", max_summary_tokens=4,
                               faithfulness_check=True, empty_threshold=1.0)
    ctx = AbstractiveCompressor(config, token_counter=words).compress("埃菲尔铁塔在哪里？", [text, "Paris."])
    assert len(ctx.results) == 2 and isinstance(ctx.text, str)


class KeywordScorer:
    """Sentence scorer for the gate tests: P(useful) = 0.9 when the sentence holds the keyword, else 0.05."""

    default_threshold = 0.5

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.calls = 0

    def score(self, items):
        self.calls += 1
        return [[0.9 if self.keyword in s else 0.05 for s in it.sentences] for it in items]


def _gate(keyword: str) -> ExtractiveCompressor:
    return ExtractiveCompressor(ExtractiveConfig(), scorer=KeywordScorer(keyword))


def test_gate_below_threshold_is_empty_without_calling_the_summarizer(scripted):
    c, fake = scripted([], gate=_gate("Haunted"), gate_threshold=0.4)
    ctx = c.compress("Who painted the Mona Lisa?", PASSAGES[:1] + PASSAGES[2:])
    assert fake.prompts == [] and ctx.text == "" and ctx.summary == ""
    assert ctx.extra["gated"] and ctx.extra["empty"] and ctx.extra["gate_score"] == 0.05
    assert ctx.extra["p_end"] is None and ctx.extra["stopped"] == "gated"
    assert [r.decision for r in ctx.results] == ["dropped", "dropped"]
    assert all("relevance gate found no sentence with P(useful) >= 0.4 (best 0.050)" in r.reason for r in ctx.results)
    assert c.stats()["gated_rate"] == 1.0 and c.stats()["empty_rate"] == 1.0


def test_gate_above_threshold_summarizes_and_reports_the_score(scripted):
    c, fake = scripted(["Derek Acorah is best known for Most Haunted."], gate=_gate("Haunted"))
    ctx = c.compress(QUERY, PASSAGES)
    assert len(fake.prompts) == 1 and ctx.text == "Derek Acorah is best known for Most Haunted."
    assert not ctx.extra["gated"] and ctx.extra["gate_score"] == 0.9


def test_gate_in_a_batch_scores_once_and_summarizes_only_the_passing_questions(scripted):
    gate = _gate("Haunted")
    c, fake = scripted(["Acorah, Most Haunted."], gate=gate, on_empty="keep_original")
    out = c.compress_batch(["Who painted it?", QUERY, "Where is it?"], [PASSAGES[2:], PASSAGES, PASSAGES[:1]])
    assert gate.scorer.calls == 1 and len(fake.prompts) == 1 and QUERY in fake.prompts[0]
    assert [o.extra["gated"] for o in out] == [True, False, True]
    # on_empty=keep_original also applies to a gated question: its passages pass through, marked kept
    assert out[0].text == PASSAGES[2].text and out[0].results[0].decision == "kept"
    assert out[1].text == "Acorah, Most Haunted."


def test_gate_scores_are_the_best_sentence_and_need_a_gate(scripted):
    c, _ = scripted([], gate=_gate("Haunted"))
    assert c.gate_scores([QUERY, "Where?"], [PASSAGES, PASSAGES[2:]]) == [0.9, 0.05]
    off, _ = scripted([])
    with pytest.raises(ConfigError, match="set relevance_gate: extractive"):
        off.gate_scores([QUERY], [PASSAGES])


def test_gate_none_or_zero_threshold_never_loads_a_gate(scripted):
    c, _ = scripted(["x."])
    assert c.gate is None and c.compress(QUERY, PASSAGES).extra["gate_score"] is None
    c0, _ = scripted(["x."], gate=_gate("nothing"), gate_threshold=0.0)
    assert c0.gate is None and not c0.compress(QUERY, PASSAGES).extra["gated"]


def test_empty_and_duplicate_passages_are_reported(scripted):
    c, _ = scripted(["Derek Acorah hosted Most Haunted."])
    ctx = c.compress(QUERY, [PASSAGES[1], Passage("   ", id="blank"), PASSAGES[1]])
    assert [r.decision for r in ctx.results] == ["summarized", "empty", "duplicate"]


def test_no_passages_gives_empty_context(scripted):
    c, fake = scripted([])
    ctx = c.compress(QUERY, [])
    assert ctx.results == () and ctx.text == "" and fake.prompts == []


def test_window_too_small_for_the_question_is_a_config_error(scripted):
    c, _ = scripted([], max_input_tokens=64)
    with pytest.raises(ConfigError, match=re.escape("compressor[abstractive].max_input_tokens=64 leaves")):
        c.compress(" ".join(["very long question"] * 40) + "?", PASSAGES)


# -------------------------------------------------------------------------------------------------------- training
def _hotpot_record(i: int) -> dict:
    return {"question": f"Which psychic {i} hosted Most Haunted?", "answer": "Derek Acorah",
            "context": [["Derek Acorah", ["Derek Acorah was a psychic.", " He hosted Most Haunted."]],
                        ["Uri Geller", ["Uri Geller is an illusionist."]],
                        ["Paris", ["Paris is the capital of France."]],
                        ["Nina", ["Nina presented a show."]]],
            "supporting_facts": [["Derek Acorah", 1], ["Uri Geller", 0]]}


def test_training_examples_oracle_and_empty_targets(tokenizer):
    import random

    from ragzip.plugins.abstractive.train import make_example

    rng = random.Random(0)
    gold = make_example(_hotpot_record(0), "gold", rng, n_passages=3, one_gold=False, cut=lambda t: t)
    assert gold.kind == "gold" and gold.n_gold == 2 and len(gold.docs) == 3
    pieces = {"Derek Acorah: He hosted Most Haunted.", "Uri Geller is an illusionist."}
    assert set(gold.target.split("  ")) <= pieces or all(p in gold.target for p in pieces)
    order = [d.split(":")[0] for d in gold.docs if d.split(":")[0] in ("Derek Acorah", "Uri Geller")]
    assert gold.target.index(order[0].split()[0]) < gold.target.index(order[1].split()[0])  # in passage order
    empty = make_example(_hotpot_record(0), "empty", rng, n_passages=3, one_gold=False, cut=lambda t: t)
    assert empty.target == "" and empty.kind == "empty" and empty.n_gold == 0
    assert all(not d.startswith(("Derek Acorah", "Uri Geller")) for d in empty.docs)


def test_paired_examples_put_the_empty_twin_right_after_its_question():
    import random

    from ragzip.plugins.abstractive.train import build_examples

    records = [_hotpot_record(i) for i in range(40)]
    ex = build_examples(records, 60, random.Random(0), empty_frac=0.3, one_gold_frac=0.0, min_passages=3,
                        max_passages=3, cut=lambda t: t)
    assert len(ex) == 60 and 0.15 < sum(e.kind == "empty" for e in ex) / 60 < 0.45
    for i, e in enumerate(ex):
        if e.kind == "empty":
            assert ex[i - 1].kind == "gold" and ex[i - 1].question == e.question


def test_calibration_picks_threshold_under_gold_constraint():
    from ragzip.plugins.abstractive.train import calibrate

    cal = calibrate([0.01, 0.02, 0.05, 0.3], [0.2, 0.4, 0.6, 0.9], max_gold_empty=0.0)
    assert cal["threshold"] > 0.3 and cal["gold_empty"] == 0.0 and cal["distractor_empty"] == 0.75


def test_train_main_end_to_end_on_a_tiny_model(causal_dir, tmp_path):
    from ragzip.plugins.abstractive.train import main

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(_hotpot_record(i)) for i in range(8)) + "\n")
    out = tmp_path / "adapter"
    rc = main(["--out", str(out), "--data", str(data), "--model", causal_dir, "--steps", "3", "--accum", "2",
               "--holdout", "2", "--checkpoint-every", "2", "--log-every", "1", "--targets", "q_proj,v_proj",
               "--dtype", "float32"])
    assert rc == 0
    card = json.loads((out / "config.json").read_text())
    assert card["train"]["steps"] == 3 and card["train"]["data"] == "train.jsonl"
    assert 0.0 <= card["empty_threshold"] <= 1.0 and card["max_passage_tokens"] == 128
    assert card["summary_prefix"] == "Relevant:" and card["train"]["paired"]
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2" / "model.safetensors").is_file()
    assert (out / "loss.png").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    c = AbstractiveCompressor(AbstractiveConfig(model=causal_dir, adapter=str(out), tokenizer="whitespace",
                                                relevance_gate="none", max_summary_tokens=4))
    ctx = c.compress(QUERY, PASSAGES)
    assert ctx.extra["p_end"] >= 0.0
    assert c._passage_tokens() == 128 and c._threshold() == card["empty_threshold"]  # defaults from the adapter


def test_train_bad_data_path_is_clear(tmp_path):
    from ragzip.errors import InputError
    from ragzip.plugins.abstractive.train import read_hotpotqa

    with pytest.raises(InputError, match=re.escape("training data 'nope.jsonl' does not exist")):
        read_hotpotqa("nope.jsonl")


# ------------------------------------------------------------------------------------------------- shipped adapter
SHIPPED = Path(__file__).resolve().parents[3] / "plugins" / "abstractive" / "artifacts" / "default"


def test_shipped_adapter_is_small_and_names_its_base_model():
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("no shipped adapter in this checkout")
    card = json.loads((SHIPPED / "config.json").read_text())
    assert card["type"] == "abstractive" and card["base_model"] == "embedded:smollm2-135m"
    assert (SHIPPED / "model.safetensors").stat().st_size < 8 * 2**20
    assert (SHIPPED / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_shipped_adapter_summarizes_gold_and_stays_empty_on_unrelated():
    c = AbstractiveCompressor(AbstractiveConfig())
    assert c.adapter_path() == SHIPPED
    gold = c.compress("Which psychic is best known for the show Most Haunted?", [
        "Derek Acorah: Derek Acorah was a British spiritualist medium and television presenter, best known for his "
        "work on the paranormal reality television series Most Haunted.",
        "Paris: Paris is the capital and most populous city of France."])
    assert gold.text and "Acorah" in gold.text
    unrelated = ["Gardening: Gardening is the practice of growing and cultivating plants as part of horticulture.",
                 "Rowing: Rowing is the propelling of a boat by means of oars."]
    off = c.compress("Which psychic is best known for the show Most Haunted?", unrelated)
    # The shipped extractive gate stops it before the summarizer; without the gate the summarizer's own P(end) is
    # higher on the unrelated passages than on the gold ones.
    assert not gold.extra["gated"] and gold.extra["gate_score"] >= c.gate_threshold
    assert off.extra["gated"] and off.extra["empty"] and off.text == "" and off.extra["p_end"] is None
    ungated = AbstractiveCompressor(AbstractiveConfig(relevance_gate="none"), summarizer=c.summarizer)
    assert ungated.compress("Which psychic is best known for the show Most Haunted?", unrelated).extra["p_end"] > \
        gold.extra["p_end"]


# ------------------------------------------------------------------------------------------------- extract-then-fuse
def _titled_passages():
    from ragzip.data import make_passage

    return [make_passage("Derek Acorah", "Derek Acorah was a British medium. He was best known for the show Most "
                                         "Haunted.", "t"),
            make_passage("Paris", "Paris is the capital of France. The Eiffel Tower was completed in 1889.", "t")]


def test_extract_then_fuse_reads_only_the_kept_sentences_under_their_titles(scripted):
    c, fake = scripted(["Derek Acorah was best known for Most Haunted."], gate=_gate("Haunted"), input="extracted",
                       extract_tokens=10)
    ctx = c.compress(QUERY, _titled_passages())
    # the summarizer read one kept sentence, titled; nothing of the Paris passage
    assert fake.prompts == [f"Question: {QUERY}\n Document: Derek Acorah: He was best known for the show Most "
                            "Haunted.\n Summary: "]
    assert ctx.extra["input"] == "extracted" and ctx.extra["extract_tokens"] == 10
    assert ctx.extra["extracted_tokens"] == 9 and ctx.extra["gate"] == "extractive"
    assert [r.decision for r in ctx.results] == ["summarized", "dropped"]
    assert ctx.results[1].reason.startswith("not kept by the extractive step (max_tokens=10")
    # provenance: the summary sentence comes from passage 0, sentence (unit) 1
    assert ctx.extra["sources"] == [{"sentence": "Derek Acorah was best known for Most Haunted.", "passage": 0,
                                     "id": ctx.results[0].passage.id, "units": [1], "support": 1.0}]
    assert ctx.results[0].extra["summary_sentences"] == [0] and ctx.results[0].extra["attributed"]
    assert [u.kept for u in ctx.results[0].units] == [False, True]


def test_extract_then_fuse_scores_once_for_gate_and_extraction(scripted):
    gate = _gate("Haunted")
    c, fake = scripted(["Most Haunted."], gate=gate, input="extracted", extract_tokens=10)
    out = c.compress_batch([QUERY, "Who painted it?"], [_titled_passages(), _titled_passages()[1:]])
    assert gate.scorer.calls == 1 and len(fake.prompts) == 1
    assert [o.extra["gated"] for o in out] == [False, True]


def _write_gate(folder, threshold=0.5):
    from ragzip.relevance import FEATURES, LogisticSetGate

    return LogisticSetGate(weights=[3.0] + [0.0] * (len(FEATURES) - 1), bias=0.0, threshold=threshold).save(
        folder / "set_gate.json")


def test_set_gate_decides_from_the_whole_set(scripted, tmp_path):
    _write_gate(tmp_path)
    c, fake = scripted(["Derek Acorah hosted Most Haunted."], gate=_gate("Haunted"), relevance_gate="set",
                       gate_model=str(tmp_path))
    hit = c.compress(QUERY, PASSAGES)
    miss = c.compress("Who painted the Mona Lisa?", PASSAGES[:1] + PASSAGES[2:])
    assert hit.extra["gate"] == "set" and not hit.extra["gated"] and hit.extra["gate_score"] > 0.99
    assert miss.extra["gated"] and miss.extra["gate_score"] < 0.01 and len(fake.prompts) == 1
    assert "set relevance gate gave P(the passages hold the evidence) = 0.000, below 0.5" in miss.results[0].reason
    assert c.gate_threshold == 0.5
    auto, _ = scripted([], gate=_gate("Haunted"), relevance_gate="auto", gate_model=str(tmp_path))
    assert auto.gate_kind == "set"
    (tmp_path / "set_gate.json").unlink()
    assert scripted([], gate=_gate("Haunted"), relevance_gate="auto", gate_model=str(tmp_path))[0].gate_kind == \
        "extractive"
    with pytest.raises(Exception, match="refit it with `ragzip train extractive --fit-set-gate --model FOLDER --data"):
        scripted([], gate=_gate("Haunted"), relevance_gate="set", gate_model=str(tmp_path))[0].compress(QUERY, PASSAGES)


def _question(i):
    from ragzip.data import Paragraph, Question

    q = f"Which psychic {i} hosted Most Haunted?"
    return Question(str(i), q, [
        Paragraph(q, "Derek Acorah", ["Derek Acorah was a psychic.", "He hosted Most Haunted."], [0, 1]),
        Paragraph(q, "Uri Geller", ["Uri Geller is an illusionist."], [0]),
        Paragraph(q, "Paris", ["Paris is the capital of France."], [0]),
        Paragraph(q, "Nina", ["Nina presented a show."], [0]),
        Paragraph(q, "Rome", ["Rome is in Italy."], [0]),
        Paragraph(q, "Oslo", ["Oslo is in Norway."], [0]),
    ])


def test_extracted_examples_target_only_the_kept_evidence(words):
    import random

    from ragzip.plugins.abstractive.train import choose_sets, extracted_examples

    extractor = ExtractiveCompressor(ExtractiveConfig(max_tokens=8), scorer=KeywordScorer("Haunted"),
                                     token_counter=words)
    sets = choose_sets([_question(i) for i in range(6)], random.Random(0), empty_frac=0.5)
    assert [k for _, _, k in sets] == ["gold", "empty"] * 6  # empty_frac 0.5: every gold set has its empty twin
    examples = extracted_examples(sets, extractor)
    gold, empty = examples[0], examples[1]
    assert gold.target == "Derek Acorah: He hosted Most Haunted." and gold.kind == "gold"
    assert "Derek Acorah: He hosted Most Haunted." in gold.docs
    assert empty.target == "" and empty.kind == "empty" and all("Haunted" not in d for d in empty.docs)
    assert sum(len(d.split()) for d in gold.docs) <= 8 + len(gold.docs) * 2  # the budget (plus the titles)


def test_train_main_extract_then_fuse_end_to_end(causal_dir, tmp_path):
    from ragzip.plugins.abstractive.train import main

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(_hotpot_record(i)) for i in range(10)) + "\n")
    out = tmp_path / "adapter"
    rc = main(["--out", str(out), "--data", str(data), "--model", causal_dir, "--input", "extracted",
               "--extract-tokens", "32", "--steps", "2", "--accum", "2", "--holdout", "2", "--checkpoint-every", "0",
               "--log-every", "1", "--targets", "q_proj,v_proj", "--dtype", "float32"])
    assert rc == 0
    card = json.loads((out / "config.json").read_text())
    assert card["input"] == "extracted" and card["extract_tokens"] == 32 and card["max_passage_tokens"] == 0
    assert card["train"]["input"] == "extracted" and card["train"]["data_stats"]["holdout_records"] == 2
    assert "extract-then-fuse" in (out / "MODEL_CARD.md").read_text()
    c = AbstractiveCompressor(AbstractiveConfig(model=causal_dir, adapter=str(out), tokenizer="whitespace",
                                                relevance_gate="none", max_summary_tokens=4))
    assert c.input_kind == "extracted" and c.extract_tokens() == 32


def test_explicit_gate_threshold_keeps_the_best_sentence_rule_under_auto(scripted, tmp_path):
    """A gate_threshold written for the best-sentence rule keeps meaning that under relevance_gate: auto."""
    _write_gate(tmp_path)
    c, _ = scripted([], gate=_gate("Haunted"), relevance_gate="auto", gate_model=str(tmp_path), gate_threshold=0.65)
    assert c.gate_kind == "extractive" and c.gate_threshold == 0.65


def test_auto_falls_back_when_the_set_gate_belongs_to_another_classifier(scripted, tmp_path, caplog):
    import json as _json

    from ragzip.relevance import FEATURES, LogisticSetGate

    LogisticSetGate(weights=[1.0] * len(FEATURES), bias=0.0, threshold=0.5,
                    training={"classifier_weights_sha256": "0" * 64}).save(tmp_path / "set_gate.json")
    (tmp_path / "model.safetensors").write_bytes(b"not the weights it was fitted on")
    (tmp_path / "config.json").write_text(_json.dumps({}))
    c, _ = scripted([], gate=_gate("Haunted"), relevance_gate="auto", gate_model=str(tmp_path))
    assert c.gate_kind == "extractive" and c.gate_kind == "extractive"
    assert caplog.text.count("fitted on another classifier's scores") == 1  # decided once, not on every batch


def test_a_user_gate_lends_its_model_not_its_selection_rules(scripted):
    gate = ExtractiveCompressor(ExtractiveConfig(top_k=1, threshold=0.99, selective=True),
                                scorer=KeywordScorer("Haunted"))
    c, fake = scripted(["Most Haunted."], gate=gate, input="extracted", extract_tokens=30)
    c.compress(QUERY, _titled_passages())
    doc = fake.prompts[0].split("Document: ")[1]
    assert "He was best known" in doc and "Paris" in doc  # the budget alone selected, past top_k and the threshold
