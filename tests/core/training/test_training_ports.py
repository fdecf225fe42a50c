"""The extractive, abstractive and REFRAG trainers on ragzip.training: their options and defaults are pinned (recorded commands
keep their meaning), the extractive card keeps its hand-written set-gate section, and a crashed plugin run resumes to
the same weights."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import write_tiny_bert, write_tiny_hotpot  # noqa: E402

from ragzip.plugins.abstractive.train import AbstractiveArguments  # noqa: E402
from ragzip.plugins.extractive.train import ExtractiveArguments  # noqa: E402
from ragzip.plugins.refrag.train import RefragArguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_EXTRACTIVE = ROOT / "plugins" / "extractive" / "artifacts" / "default"

# Per trainer: a minimal command line, the options that are aliases (--eval-every of --checkpoint-every,
# --time-budget-min of --max-minutes) and the pinned defaults, which model cards' recorded commands rely on.
PINNED = {
    ExtractiveArguments: (["--data", "d.jsonl"], {"eval_every": "checkpoint_every"}, {
        "per_source": 0, "out": None, "eval_only": False, "card_evidence": None, "recalibrate": False,
        "fit_set_gate": False, "dev": [], "dev_limit": 500, "max_gold_gated": 0.05, "gate_l2": 1.0,
        "gate_out": None, "gate_report": None, "device": "", "model": "default", "update_card": False, "json": None,
        "threshold": None, "timing_questions": 100, "tokenizer": "embedded:smollm2-135m", "limit": None,
        "base_model": "embedded:minilm", "init": None, "trained_layers": None, "head_hidden": 256,
        "head_type": "interaction", "window": 256, "epochs": 2, "steps": 0, "batch_size": 16, "lr": 0.0001,
        "head_lr": 0.001, "pos_weight": 3.0, "distractors": 4, "foreign": 1, "title_dropout": 0.3, "holdout": 100,
        "target_recall": 0.88, "eval_every": 0, "log_every": 20, "max_minutes": 50.0, "seed": 0,
        "cache_file": None, "threads": 2, "save_dtype": "float16"}),
    AbstractiveArguments: (["--out", "o"], {"time_budget_min": "max_minutes"}, {
        "data": ["../shared/data/hotpotqa_train.jsonl"], "input": "passages", "extract_tokens": 160,
        "extractor": "default", "per_source": 0, "init_adapter": "", "model": "embedded:smollm2-135m",
        "backbone": "causal", "steps": 150, "batch_size": 1, "accum": 4, "lr": 0.0003, "warmup": 0.1, "rank": 8,
        "alpha": 16.0, "dropout": 0.05, "targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "first_layer": 0, "min_passages": 3, "max_passages": 5, "max_passage_tokens": 128, "empty_frac": 0.3,
        "one_gold_frac": 0.15, "summary_prefix": "Relevant:", "unpaired": False, "first_token_weight": 3.0,
        "holdout": 30, "max_gold_empty": 0.05, "teacher": "", "seed": 0, "threads": 2, "time_budget_min": 40.0,
        "budget_clock": "cpu", "checkpoint_every": 50, "val_every_checkpoint": False, "log_every": 5,
        "dtype": "float16", "device": ""}),
    RefragArguments: (["--out", "o"], {}, {
        "data": os.environ.get("RAGZIP_DATA", "../shared/data"), "k": 16, "p": 0.25, "encoder": "embedded:minilm",
        "decoder": "embedded:smollm2-135m", "encoder_trained_layers": 1, "decoder_lora": 8, "lora_alpha": 16.0,
        "lora_targets": "q_proj,k_proj,v_proj,o_proj", "lr_lora": 0.0003, "qa_share": 0.5, "init": "",
        "resume": False, "stages": "1,2,3", "seed": 0, "device": "", "threads": 1, "positions_per_step": 384,
        "stage1_minutes": 12.0, "stage1_steps": 100_000, "stage2_minutes": 16.0, "stage2_steps": 100_000,
        "stage3_minutes": 12.0, "stage3_steps": 100_000, "lr1": 0.001, "lr1_encoder": 0.0001, "lr2": 0.0005,
        "lr2_encoder": 5e-05, "lr3": 0.003, "max_recon_chunks": 8, "max_cpt_chunks": 16, "cpt_target_tokens": 32,
        "cpt_expand_prob": 0.5, "policy_batch": 4, "group": 4, "val_per_source": 8, "val_questions": 12,
        "val_every": 25, "checkpoint_minutes": 5.0, "log_every": 10, "eval_examples": 24}),
}


@pytest.mark.parametrize("cls", list(PINNED), ids=lambda c: c.prog)
def test_the_pinned_options_and_defaults_are_all_there(cls: type) -> None:
    minimal, renamed, defaults = PINNED[cls]
    options = {s for a in cls.parser()._actions for s in a.option_strings}
    pinned_options = {"--" + d.replace("_", "-") for d in defaults}
    assert pinned_options <= options
    args = cls.parse(minimal)
    assert {d: getattr(args, renamed.get(d, d)) for d in defaults} == defaults
    assert cls.parse(args.to_argv()) == args


@pytest.mark.parametrize("kind", ["extractive", "abstractive", "refrag"])
def test_ragzip_train_help_lists_the_options(kind: str, capsys) -> None:
    from ragzip.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", kind, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    cls = {"extractive": ExtractiveArguments, "abstractive": AbstractiveArguments, "refrag": RefragArguments}[kind]
    assert text.startswith(f"usage: ragzip train {kind}")
    for option in ["--" + d.replace("_", "-") for d in PINNED[cls][2]] + ["--resume", "--keep-checkpoints"]:
        assert option in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "0"], "--steps, --accum and --batch-size must be >= 1"),
    (["--empty-frac", "1"], "--empty-frac must lie in [0, 1) and --one-gold-frac in [0, 1]"),
    (["--min-passages", "4", "--max-passages", "3"], "need 1 <= --min-passages <= --max-passages"),
    (["--data", "a", "b"], "--input passages reads one HotpotQA-style --data file"),
])
def test_abstractive_checks_keep_their_messages(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        AbstractiveArguments.parse(["--out", "o", *argv])
    assert f"ragzip train abstractive: error: {message}" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- extractive card
def _gate_section(card: str) -> str:
    return card[card.index("## The set-level relevance gate"):]


@pytest.fixture()
def shipped_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "default"
    folder.mkdir()
    for name in ("config.json", "set_gate.json", "MODEL_CARD.md"):
        shutil.copy(SHIPPED_EXTRACTIVE / name, folder / name)
    (folder / "model.safetensors").symlink_to(SHIPPED_EXTRACTIVE / "model.safetensors")
    return folder


def test_re_rendering_the_shipped_extractive_card_keeps_its_set_gate_section(shipped_copy: Path) -> None:
    from ragzip.plugins.extractive.train import write_model_card

    before = (shipped_copy / "MODEL_CARD.md").read_text()
    cfg = json.loads((shipped_copy / "config.json").read_text())
    write_model_card(shipped_copy, cfg["metrics"].get("dev"))
    after = (shipped_copy / "MODEL_CARD.md").read_text()
    assert _gate_section(after) == _gate_section(before)  # the hand-written text, verbatim
    assert after.count("## The set-level relevance gate") == 1
    for kept in ("### Dev evidence", "| `extractive:max_tokens=*` | ans_in_ctx |", "## Limits", "CC BY-SA 4.0",
                 "Measured quality", "Reproduce", "seed 0", "1788", "28,599 passage windows seen",
                 "## How this run was trained", "all 6 encoder layers, fine-tuned"):
        assert kept in after
    write_model_card(shipped_copy, cfg["metrics"].get("dev"))
    assert (shipped_copy / "MODEL_CARD.md").read_text() == after  # a fixed point


def test_without_a_card_the_set_gate_section_is_written_from_set_gate_json(shipped_copy: Path) -> None:
    from ragzip.plugins.extractive.train import write_model_card

    (shipped_copy / "MODEL_CARD.md").unlink()
    write_model_card(shipped_copy)
    section = _gate_section((shipped_copy / "MODEL_CARD.md").read_text())
    gate = json.loads((shipped_copy / "set_gate.json").read_text())
    assert section.startswith("## The set-level relevance gate beside it (`set_gate.json`, 4 KB)")
    for fact in ("7 order statistics", "100 questions per source, seed 0; 599 sets", "threshold 0.374",
                 "at most 5% of the sets", "ROC AUC 0.922 (best sentence alone: 0.897)",
                 "gated 7% / 52% on hotpotqa_dev (209)", gate["training"]["command"]):
        assert fact in section


# ------------------------------------------------------------------------------------------------ extractive resume
def test_a_crashed_extractive_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    import ragzip.plugins.extractive.train as train

    bert = write_tiny_bert(tmp_path / "bert")
    data = write_tiny_hotpot(tmp_path / "train.jsonl", n=6)

    def argv(out: str) -> list[str]:
        return ["--data", str(data), "--out", str(tmp_path / out), "--base-model", str(bert), "--window", "64",
                "--trained-layers", "1", "--head-hidden", "8", "--steps", "7", "--batch-size", "2",
                "--eval-every", "3", "--holdout", "1", "--threads", "1", "--seed", "2", "--save-dtype", "float32"]

    assert train.main(argv("full")) == 0
    real_loss, calls = train._batch_loss, []

    def crash_at_step_5(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # a run killed after its step-3 checkpoint
        return real_loss(*a, **k)

    monkeypatch.setattr(train, "_batch_loss", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train.main(argv("cut"))
    monkeypatch.setattr(train, "_batch_loss", real_loss)
    assert train.main([*argv("cut"), "--resume"]) == 0
    full, resumed = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("full", "cut"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    config = json.loads((tmp_path / "cut" / "config.json").read_text())["training"]
    assert config["resumed_from"] == 3 and config["steps"] == 7 and config["device"] == "cpu"
    assert config["samples_seen"] == json.loads((tmp_path / "full" / "config.json").read_text())["training"][
        "samples_seen"]
    assert re.search(r"- Steps: 7 \(best checkpoint: step \d\), \d+ passage windows seen; seed 2; trained on cpu\.",
                     (tmp_path / "cut" / "MODEL_CARD.md").read_text())
