"""REFRAG's decoder LoRA: zero-init identity, artifact round trip, the generator reading through the adapted decoder
only for this artifact's soft tokens, frozen artifacts unchanged, and the trainer (QA share, held-out checks, resume)
on tiny models and a tiny synthetic data folder."""

from __future__ import annotations

import gzip
import json
import re

import pytest
import torch
from conftest import build_tiny_llama, build_tiny_refrag, write_tiny_bert

from ragzip.artifacts import ArtifactError
from ragzip.errors import ConfigError, SoftTokenError
from ragzip.plugins.refrag import RefragCompressor, RefragConfig, RefragModel
from ragzip.plugins.refrag.lora import DecoderLoRA, LoRALinear
from ragzip.plugins.refrag.train import assemble_batch
from ragzip.softstore import SoftTokenStore
from ragzip.training.lm import Target, Tokens, padded_nll, sequence_nll

PASSAGES = [
    "The Eiffel Tower was completed in 1889 and designed by the engineering firm of Gustave Eiffel in Paris.",
    "Marie Curie conducted pioneering research on radioactivity; she was the first woman to win a Nobel Prize.",
]
QUESTION = "Who designed the Eiffel Tower?"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(scope="module")
def decoder(smol_tok):
    return build_tiny_llama(len(smol_tok), tie=True).requires_grad_(False)


def make_generator(decoder, smol_tok, store=None):
    from ragzip.generation import GeneratorConfig, HFGenerator

    return HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=2), store=store or SoftTokenStore(),
                       model=decoder, tokenizer=smol_tok)


def lora_model(minilm_tok, decoder, *, seed: int = 0, rank: int = 4) -> RefragModel:
    """A tiny REFRAG model with a trained-looking (non-zero) decoder LoRA."""
    model = build_tiny_refrag(minilm_tok)
    model.add_decoder_lora(decoder, rank=rank, alpha=8.0, targets=TARGETS)
    torch.manual_seed(seed)
    with torch.no_grad():
        for pair in model.decoder_lora.parameters():
            pair.add_(torch.randn_like(pair) * 0.5)
    return model


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 900, 42, 7, 1200, 3]])


# ------------------------------------------------------------------------------------------------------ the LoRA
@pytest.mark.parametrize("merge", [False, True])
def test_zero_init_lora_leaves_outputs_identical(decoder, merge):
    lora = DecoderLoRA.for_decoder(decoder, rank=8, alpha=16.0, targets=TARGETS)
    assert all(torch.equal(p.B, torch.zeros_like(p.B)) for _, _, p in lora.pairs())
    adapted = lora.adapted(decoder, merge=merge)
    assert torch.equal(logits_of(adapted, IDS), logits_of(decoder, IDS))
    assert type(adapted.model.layers[0].self_attn.q_proj) is (torch.nn.Linear if merge else LoRALinear)
    # Everything but the adapted maps is the decoder's own tensors; the decoder itself is untouched.
    assert adapted.model.embed_tokens.weight is decoder.model.embed_tokens.weight
    assert adapted.model.layers[1].mlp.up_proj.weight is decoder.model.layers[1].mlp.up_proj.weight
    assert type(decoder.model.layers[0].self_attn.q_proj) is torch.nn.Linear


def test_trained_lora_changes_outputs_and_merging_keeps_them(decoder, minilm_tok):
    before = logits_of(decoder, IDS)
    lora = lora_model(minilm_tok, decoder).decoder_lora
    unmerged, merged = logits_of(lora.adapted(decoder, merge=False), IDS), logits_of(lora.adapted(decoder, merge=True),
                                                                                    IDS)
    assert not torch.allclose(unmerged, before, atol=1e-3)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.equal(logits_of(decoder, IDS), before)  # the base decoder is never modified


def test_lora_gradients_reach_only_the_adapter(decoder):
    lora = DecoderLoRA.for_decoder(decoder, rank=2, alpha=4.0, targets=("q_proj", "v_proj"))
    adapted = lora.adapted(decoder, merge=False)
    adapted(input_ids=IDS).logits.sum().backward()
    assert all(p.grad is not None for p in lora.parameters())
    assert decoder.model.layers[0].self_attn.q_proj.weight.grad is None
    assert lora.n_parameters() == 2 * (2 * 32 + 32 * 2 + 2 * 32 + 16 * 2)  # 2 layers x (q: 32->32, v: 32->16)


def test_lora_targets_that_match_nothing_are_a_config_error(decoder):
    with pytest.raises(ConfigError, match=re.escape("decoder LoRA targets ['qkv'] match {'qkv': 0} linear layers of "
                                                    "LlamaForCausalLM; each target must name one linear map per "
                                                    "layer.")):
        DecoderLoRA.for_decoder(decoder, rank=2, alpha=4.0, targets=("qkv",))


# ------------------------------------------------------------------------------------------------------ artifacts
def test_artifact_with_lora_roundtrips_and_reads_through_it(decoder, minilm_tok, tmp_path):
    from conftest import tiny_refrag_encoder
    from safetensors.torch import load_file

    model = lora_model(minilm_tok, decoder)
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["decoder_lora_rank"] == 4 and data["decoder_lora_layers"] == 2 and data["decoder_lora_alpha"] == 8.0
    assert data["decoder_lora_targets"] == {"q_proj": [32, 32], "k_proj": [32, 16], "v_proj": [32, 16],
                                            "o_proj": [32, 32]}
    assert data["decoder_lora_base"] and data["integrity"]["weights_sha256"]
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert {"decoder_lora.layers.0.q_proj.A", "decoder_lora.layers.1.o_proj.B"} <= names
    assert len([n for n in names if n.startswith("decoder_lora.")]) == 2 * 4 * 2

    loaded = RefragModel.from_pretrained(tmp_path, encoder=tiny_refrag_encoder(minilm_tok, 0),
                                         encoder_tokenizer=minilm_tok)
    for name, tensor in model.lora_state_dict().items():
        assert torch.equal(loaded.lora_state_dict()[name], tensor), name
    assert loaded.lora_fingerprint() == model.lora_fingerprint()
    read = logits_of(loaded.reader(decoder), IDS)
    assert torch.allclose(read, logits_of(model.reader(decoder), IDS), atol=1e-6)
    assert not torch.allclose(read, logits_of(decoder, IDS), atol=1e-3)  # differs from the frozen decoder


def test_artifact_without_lora_loads_exactly_as_before(decoder, minilm_tok, tmp_path):
    from conftest import tiny_refrag_encoder

    model = build_tiny_refrag(minilm_tok)
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["decoder_lora_rank"] == 0
    for key in [k for k in data if k.startswith("decoder_lora")]:  # a config.json with no decoder_lora keys at all
        del data[key]
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = RefragModel.from_pretrained(tmp_path, encoder=tiny_refrag_encoder(minilm_tok, 0),
                                         encoder_tokenizer=minilm_tok)
    assert loaded.decoder_lora is None and loaded.config.decoder_lora_rank == 0
    assert not any(n.startswith("decoder_lora") for n in loaded.trained_state_dict())
    assert loaded.reader(decoder) is decoder and loaded.lora_fingerprint() == ""


def test_lora_on_another_decoder_is_refused(minilm_tok, smol_tok, decoder):
    model = lora_model(minilm_tok, decoder)
    other = build_tiny_llama(len(smol_tok), tie=True, seed=3).requires_grad_(False)
    with pytest.raises(ArtifactError, match=re.escape("refrag: the decoder LoRA is a delta on other weights than this "
                                                      "decoder's (its q_proj, k_proj, v_proj, o_proj weights hash to")):
        model.reader(other)


# ----------------------------------------------------------------------------------------------- the generator
def test_bound_compressor_generates_through_the_adapted_decoder_only_for_its_tokens(decoder, minilm_tok, smol_tok):
    gen = make_generator(decoder, smol_tok)
    plain_prompt = gen.format_prompt(QUESTION, "\n\n".join(PASSAGES))
    plain_before = gen.logits(plain_prompt)
    model = lora_model(minilm_tok, decoder)
    refrag = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=model)
    refrag.bind(gen)
    assert gen.model is decoder  # the generator keeps its own model...
    (space, reader), = gen.readers.items()  # ...and gains a reader for this artifact's soft tokens
    assert space == f"tiny-llama|d=32+refrag-lora:{model.lora_fingerprint()}" == refrag.space
    assert reader is refrag.reader and reader is not decoder

    ctx = refrag.compress(QUESTION, PASSAGES)
    prompt = gen.answer_prompt(QUESTION, ctx)
    assert gen.reader_for(prompt) is reader
    embeds = gen.embed_prompt(prompt)[None]
    with torch.no_grad():
        through_lora, frozen = reader(inputs_embeds=embeds).logits[0], decoder(inputs_embeds=embeds).logits[0]
    assert torch.equal(gen.logits(prompt), through_lora) and not torch.allclose(through_lora, frozen, atol=1e-3)
    assert isinstance(gen.answer(QUESTION, ctx).text, str)

    # Every other prompt (text compressors, no context) is read by the unchanged model, bit for bit.
    assert gen.reader_for(plain_prompt) is decoder and torch.equal(gen.logits(plain_prompt), plain_before)
    # A second compressor of the same artifact reuses the reader; the merged copy is made once.
    again = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=model)
    again.bind(gen)
    assert len(gen.readers) == 1 and again.reader is reader


def test_frozen_artifact_binds_without_a_reader(decoder, minilm_tok, smol_tok):
    gen = make_generator(decoder, smol_tok)
    refrag = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=build_tiny_refrag(minilm_tok))
    refrag.bind(gen)
    assert not gen.readers and refrag.space == gen.space and refrag.reader is decoder
    ctx = refrag.compress(QUESTION, PASSAGES)
    prompt = gen.answer_prompt(QUESTION, ctx)
    with torch.no_grad():
        assert torch.equal(gen.logits(prompt), decoder(inputs_embeds=gen.embed_prompt(prompt)[None]).logits[0])


def test_a_generator_without_the_reader_refuses_lora_soft_tokens(decoder, minilm_tok, smol_tok):
    gen = make_generator(decoder, smol_tok)
    refrag = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=lora_model(minilm_tok, decoder))
    refrag.bind(gen)
    ctx = refrag.compress(QUESTION, PASSAGES[:1])
    other = make_generator(decoder, smol_tok, store=gen.store)  # same model and store, never bound
    with pytest.raises(SoftTokenError, match=re.escape("soft tokens were made for the embedding space "
                                                       f"'{refrag.space}'")):
        other.embed_prompt(other.answer_prompt(QUESTION, ctx))


def test_a_prompt_mixing_reader_and_plain_soft_tokens_is_refused(decoder, minilm_tok, smol_tok):
    gen = make_generator(decoder, smol_tok)
    lora = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=lora_model(minilm_tok, decoder))
    lora.bind(gen)
    frozen = RefragCompressor(RefragConfig(k=4, p=0.0, policy="none"), model=build_tiny_refrag(minilm_tok))
    frozen.bind(gen)
    text = lora.compress(QUESTION, PASSAGES[:1]).text + "\n\n" + frozen.compress(QUESTION, PASSAGES[1:]).text
    with pytest.raises(SoftTokenError, match=re.escape("can only be read by their own adapted decoder")):
        gen.reader_for(gen.format_prompt(QUESTION, text))


# --------------------------------------------------------------------------------------------------- the trainer
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon "
         "phi chi psi omega river mountain city castle harbour forest valley bridge tower garden").split()


def sentence(i: int, n: int = 9) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n)).capitalize() + "."


def write_tiny_data(folder):
    """HotpotQA, QED and SQuAD train files in their real shapes, a few records each (no dev file)."""
    folder.mkdir(parents=True, exist_ok=True)
    hotpot = []
    for i in range(16):
        ctx = [[f"Title {i} {j}", [" " + sentence(i * 5 + j + s) for s in range(3)]] for j in range(3)]
        hotpot.append({"id": f"h{i}", "question": f"What is {WORDS[i]} near?", "answer": WORDS[i + 1],
                       "context": ctx, "supporting_facts": [[f"Title {i} 0", 0], [f"Title {i} 1", 1]]})
    (folder / "hotpotqa_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hotpot))
    qed = []
    for i in range(10):
        a, b = sentence(100 + i), sentence(200 + i)
        qed.append({"id": f"q{i}", "question": f"where is the {WORDS[i]}", "answers": [WORDS[i + 2]],
                    "answer_starts": [0], "context": f"{a} {b}", "title": f"Page {i}", "sentence_starts": [0, len(a) + 1],
                    "answer_sentence_idx": [0], "answer_type": "single"})
    squad = []
    for title in ("Alpha_article", "Beta_article", "Genocide"):
        for p in range(4):
            context = " ".join(sentence(300 + 13 * p + s + len(title)) for s in range(3))
            answer = context.split()[1]
            for qn in range(2):
                squad.append({"id": f"s-{title}-{p}-{qn}", "question": f"What about {WORDS[p + qn]} in {title}?",
                              "answers": [answer], "answer_starts": [context.index(answer)], "context": context,
                              "title": title, "squad_version": "1.1", "is_impossible": False})
    for name, rows in (("qed_nq_train.jsonl.gz", qed), ("squad_train_partial.jsonl.gz", squad)):
        with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, smol_tok):
    root = tmp_path_factory.mktemp("refrag-train")
    llama = build_tiny_llama(len(smol_tok), tie=True, bos_token_id=1, eos_token_id=2)
    llama.save_pretrained(root / "tiny-llama")
    smol_tok.save_pretrained(root / "tiny-llama")
    write_tiny_bert(root / "tiny-bert", max_positions=128)
    return root, write_tiny_data(root / "data")


def train_argv(root, data, out, *extra):
    return ["--out", str(out), "--data", str(data), "--encoder", str(root / "tiny-bert"), "--decoder",
            str(root / "tiny-llama"), "--k", "4", "--threads", "1", "--positions-per-step", "48",
            "--max-recon-chunks", "2", "--max-cpt-chunks", "4", "--cpt-target-tokens", "4", "--eval-examples", "2",
            "--val-per-source", "1", "--val-questions", "3", "--policy-batch", "2", "--group", "2",
            "--decoder-lora", "2", "--lora-targets", "q_proj,v_proj", "--qa-share", "0.5", "--lr-lora", "1e-2",
            "--stage1-steps", "2", "--stage3-steps", "2", "--log-every", "1", *extra]


def test_load_corpus_reads_train_files_and_holds_out(tiny_setup):
    from ragzip.plugins.refrag.train import load_corpus

    _, data = tiny_setup
    corpus = load_corpus(data, val_per_source=1)
    assert {it.source for it in corpus.train_qa} == {"hotpotqa", "qed", "squad"}
    assert len(corpus.val_qa) == 3 and len(corpus.eval_qa) == 4  # 1 per source; a quarter of the 16 HotpotQA records
    val_questions = {it.question for it in corpus.val_qa}
    assert not val_questions & {it.question for it in corpus.train_qa}
    assert corpus.eval_titles == ["Genocide"] and corpus.eval_pairs  # the held-out SQuAD train article
    assert not any("Genocide" in it.question for it in corpus.train_qa)
    assert all(p.startswith(("Title", "Page", "Alpha article", "Beta article")) for it in corpus.train_qa
               for p in it.passages)  # "title: body", as ragzip.data gives passages at inference
    with pytest.raises(FileNotFoundError, match=re.escape("squad_dev.jsonl")):
        load_corpus(data, dev_eval=True)  # only evaluate.py reads the dev file


def test_trainer_batch_scores_as_the_shared_lm_loss(decoder, smol_tok):
    """The trainer's fused batch (``assemble_batch``) through ``padded_nll`` gives what ``sequence_nll`` gives for the
    same tokens, chunk vectors and targets, gradients included."""
    table = decoder.get_input_embeddings().weight  # (V, d)
    torch.manual_seed(0)
    soft = torch.randn(3, table.shape[1], requires_grad=True)  # (3, d): three chunk vectors

    def ids(text):
        return list(smol_tok(text, add_special_tokens=False)["input_ids"])

    before, after, answer, rest = ids("Context:"), ids("\nWho designed it?\n"), ids(" Eiffel"), ids(" in Paris, 1889")
    segments = [[("tokens", before), ("soft", soft[:2]), ("tokens", after), ("target", answer)],
                [("soft", soft[2:]), ("target", rest)]]
    pieces = [[Tokens(before), soft[:2], Tokens(after), Target(answer)], [soft[2:], Target(rest)]]
    fused = padded_nll(decoder, *assemble_batch(table, segments, smol_tok.pad_token_id))
    shared = sequence_nll(make_generator(decoder, smol_tok), pieces)
    assert fused.targets.tolist() == answer + rest and fused.rows.tolist() == [0] * len(answer) + [1] * len(rest)
    assert torch.allclose(fused.per_sequence, shared.per_sequence, atol=1e-6)
    assert torch.allclose(fused.mean, shared.mean, atol=1e-6)
    grads = [torch.autograd.grad(out.mean, soft)[0] for out in (fused, shared)]
    assert grads[0].abs().sum() > 0 and torch.allclose(*grads, atol=1e-6)


def test_trainer_smoke_with_qa_share_lora_and_resume(tiny_setup, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ragzip.plugins.refrag import train
    from ragzip.training import STATE_NAME

    root, data = tiny_setup

    def argv(out):
        return train_argv(root, data, out, "--stage2-steps", "4", "--val-every", "2")

    assert train.main(argv(tmp_path / "full")) == 0
    out = tmp_path / "run"
    real, calls = train.Recipe.cpt_loss, []

    def killed_at_stage2_step3(self, examples):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed after its step-2 checkpoint
        return real(self, examples)

    monkeypatch.setattr(train.Recipe, "cpt_loss", killed_at_stage2_step3)
    with pytest.raises(KeyboardInterrupt):
        train.main(argv(out))
    assert (out / "stage2" / "checkpoint-2" / STATE_NAME).is_file()
    monkeypatch.setattr(train.Recipe, "cpt_loss", real)
    assert train.main([*argv(out), "--resume"]) == 0

    full, resumed = (load_file(str(folder / "model.safetensors")) for folder in (tmp_path / "full", out))
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)  # resume is exact
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["resumed"] is True and summary["device"] in ("cpu", "cuda")
    assert summary["steps"] == {"stage1": 2, "stage2": 4, "stage3": 2}
    assert summary["decoder_lora"] == {"rank": 2, "alpha": 16.0, "targets": ["q_proj", "v_proj"], "layers": 2,
                                       "parameters": 2 * (2 * 32 + 32 * 2 + 2 * 32 + 16 * 2)}
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = {stage: [r["step"] for r in rows if r["stage"] == stage and "loss" in r] for stage in train.STAGES}
    assert steps == {"stage1": [1, 2], "stage2": [1, 2, 3, 4], "stage3": [1, 2]}  # nothing run twice or lost
    assert summary["samples_seen"]["stage2_qa"] > 0 and any("qa_loss" in r for r in rows)
    val = [r for r in rows if r["stage"] == "stage2" and "p0" in r]
    assert [r["step"] for r in val] == [0, 2, 4]  # before, every --val-every steps, after
    assert all("p0" in r and "p0.25_random" in r and "none" in r for r in val) and "full" in val[-1]
    assert "p0.25_learned" in rows[-1] and rows[-1]["stage"] == "stage3"
    assert summary["val"] == [r for r in rows if "p0" in r]

    model = RefragModel.from_pretrained(out)
    assert model.config.decoder_lora_rank == 2 and model.decoder_lora is not None
    assert any(float(p.B.detach().abs().sum()) > 0 for _, _, p in model.decoder_lora.pairs())  # stage 2 trained it
    last = {stage: sorted((out / stage).glob("checkpoint-*")) for stage in train.STAGES}
    assert {stage: [f.name for f in folders] for stage, folders in last.items()} == {
        "stage1": ["checkpoint-2"], "stage2": ["checkpoint-4"], "stage3": ["checkpoint-2"]}
    assert all((folders[0] / "model.safetensors").is_file() for folders in last.values())
    card = (out / "MODEL_CARD.md").read_text()
    assert "- Steps: stage1 2, stage2 4, stage3 2," in card and summary["command"] in card
    assert (out / "loss.png").is_file() or not _has_matplotlib()


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_trainer_frozen_decoder_mode(tiny_setup, tmp_path):
    from ragzip.plugins.refrag import train

    root, data = tiny_setup
    out = tmp_path / "frozen"
    argv = train_argv(root, data, out)
    argv[argv.index("--decoder-lora") + 1] = "0"
    assert train.main([*argv, "--stages", "2", "--stage2-steps", "1", "--val-every", "0", "--qa-share", "1"]) == 0
    data_ = json.loads((out / "config.json").read_text())
    assert data_["decoder_lora_rank"] == 0 and data_["training"]["decoder_lora"] == {"rank": 0}
    assert RefragModel.from_pretrained(out).decoder_lora is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--qa-share", "1.5"], "--qa-share 1.5 must lie in [0, 1]"),
    (["--decoder-lora", "-1"], "--decoder-lora -1 must be >= 0"),
])
def test_bad_trainer_options_say_how_to_fix_them(tmp_path, capsys, argv, message):
    from ragzip.plugins.refrag import train

    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), *argv])
    assert f"ragzip train refrag: error: {message}" in capsys.readouterr().err


def test_lora_rank_edited_in_config_names_the_tensors(decoder, minilm_tok, tmp_path):
    from conftest import tiny_refrag_encoder

    lora_model(minilm_tok, decoder).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["decoder_lora_rank"] = 2
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=re.escape("decoder_hidden=32, decoder_lora_rank=2): the weights do not "
                                                      "match config.json: decoder_lora.layers.0.k_proj.A is [4, 32] in "
                                                      "the weights but [2, 32]")):
        RefragModel.from_pretrained(tmp_path, encoder=tiny_refrag_encoder(minilm_tok, 0), encoder_tokenizer=minilm_tok)
