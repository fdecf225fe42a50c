"""ragzip.training: schedules, budget, the fit loop, checkpoints, resume, arguments and the model card."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch

import ragzip.training as training
from ragzip.errors import ConfigError
from ragzip.training import (
    STATE_NAME,
    Budget,
    CardSection,
    ModelCard,
    Trainer,
    TrainingArguments,
    TrainLog,
    WarmupCosine,
    WarmupLinear,
    make_schedule,
    open_log,
    plot_losses,
    prepare,
    restore_random,
    resume_point,
    saved_state,
)


def test_public_names_are_pinned() -> None:
    assert training.__all__ == sorted(training.__all__)
    assert set(training.__all__) == {
        "Budget", "CARD_NAME", "CardSection", "ModelCard", "SCHEDULES", "STATE_NAME", "Schedule", "TrainLog",
        "TrainState", "Trainer", "TrainingArguments", "WarmupCosine", "WarmupLinear", "checkpoints",
        "configure_logging", "make_schedule", "open_log", "plot_losses", "prepare", "resolve_device",
        "restore_random", "resume_point", "saved_state"}


# -------------------------------------------------------------------------------------------------------- schedules
def _reference_cosine_lr(progress: float, base: float, warmup: float) -> float:
    """Warm-up, then cosine decay to 10%, written out: the rates abstractive training runs with, bit for bit."""
    if progress < warmup:
        return base * max(progress / warmup, 0.02)
    rest = min((progress - warmup) / max(1 - warmup, 1e-9), 1.0)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * rest)))


@pytest.mark.parametrize("warmup", [0.0, 0.05, 0.1, 0.3])
def test_cosine_schedule_is_the_abstractive_one_bit_for_bit(warmup: float) -> None:
    schedule = WarmupCosine(warmup)
    for k in range(0, 1001):
        p = k / 1000
        assert 3e-4 * schedule(0, 1, p) == _reference_cosine_lr(p, 3e-4, warmup)


def test_cosine_schedule_values() -> None:
    s = WarmupCosine(warmup=0.1, final=0.1, floor=0.02)
    assert s(0, 100, 0.0) == 0.02  # the floor: the first step trains
    assert s(0, 100, 0.05) == pytest.approx(0.5)
    assert s(0, 100, 0.1) == pytest.approx(1.0)
    assert s(0, 100, 0.55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert s(0, 100, 1.0) == pytest.approx(0.1)
    assert s(0, 100, 1.7) == pytest.approx(0.1)  # past the budget: stays at the end value


@pytest.mark.parametrize("total", [1, 2, 7, 50, 333])
def test_linear_schedule_matches_torch_lambda_lr(total: int) -> None:
    """WarmupLinear sets the rates torch's LambdaLR sets with this lambda (the extractive trainer's schedule)."""
    warm = max(1, int(0.06 * total))
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": 1e-4}], weight_decay=0.01)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    schedule = WarmupLinear(0.06)
    for step in range(total):
        assert optimizer.param_groups[0]["lr"] == 1e-4 * schedule(step, total, step / total)
        optimizer.step()
        lambda_lr.step()


def test_make_schedule_follows_the_arguments() -> None:
    assert make_schedule(TrainingArguments(schedule="linear", warmup=0.2)) == WarmupLinear(0.2)
    assert make_schedule(TrainingArguments(schedule="cosine", warmup=0.2)) == WarmupCosine(0.2)


class FakeClock(Budget):
    """A budget whose clock advances only when told (deterministic time-budget tests)."""

    def __init__(self, seconds: float, **kwargs) -> None:
        self.t = 0.0
        super().__init__(seconds, **kwargs)

    def now(self) -> float:
        return self.t


def test_budget_progress_is_the_larger_of_steps_and_time() -> None:
    budget = FakeClock(100.0, spent=10.0)
    budget.start()
    assert budget.elapsed() == 10.0 and not budget.exhausted()
    assert budget.progress(step=5, total=10) == 0.5
    budget.t = 70.0
    assert budget.progress(step=5, total=10) == pytest.approx(0.8)
    budget.t = 91.0
    assert budget.exhausted()


# -------------------------------------------------------------------------------------------------------- fit loop
def _args(tmp_path: Path, **kw) -> TrainingArguments:
    return TrainingArguments(out=str(tmp_path / "run"), **{"steps": 10, "lr": 0.05, "log_every": 1,
                                                           "max_minutes": 60.0, **kw})


def _quadratic(batch: list[float], w: torch.nn.Parameter) -> torch.Tensor:
    return ((w - torch.tensor(batch)) ** 2).mean()


def test_stops_at_the_step_budget_and_counts_epochs_and_samples(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=5)
    w = torch.nn.Parameter(torch.zeros(1))
    calls = []

    def batches(epoch: int) -> list[list[float]]:
        calls.append(epoch)
        return [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]

    state = Trainer(args, None, [w]).fit(batches, lambda b: _quadratic(b, w))
    assert (state.step, state.epoch, state.samples) == (5, 3, 15)
    assert calls == [1, 2, 3]  # epoch 3's data drawn once, epoch 4's never
    assert state.stopped_early == ""
    rows = [json.loads(x) for x in (Path(args.out) / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["lr"] == pytest.approx(0.05 * WarmupCosine(0.06)(4, 5, 0.8))


def _ten_second_steps(budget: FakeClock, w: torch.nn.Parameter) -> Callable[[list[float]], torch.Tensor]:
    """A loss whose every step takes "10 s" on ``budget``'s clock."""

    def loss(batch: list[float]) -> torch.Tensor:
        budget.t += 10.0
        return _quadratic(batch, w)

    return loss


def test_stops_at_the_time_budget_and_checkpoints_the_last_step(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=100, checkpoint_every=50, max_minutes=1.0)
    w = torch.nn.Parameter(torch.zeros(1))
    budget = FakeClock(35.0)
    loss = _ten_second_steps(budget, w)
    trainer = Trainer(args, None, [w], budget=budget, checkpoint_at_end=True,
                      evaluate=lambda step: {"score": float(step)}, metric="score")
    state = trainer.fit(lambda epoch: [[1.0]] * 10, loss)
    assert state.step == 4
    assert state.stopped_early == "stopped at step 4 of 100 by --max-minutes 1.0"
    assert (Path(args.out) / "checkpoint-4" / STATE_NAME).is_file() and trainer.best_checkpoint.name == "checkpoint-4"


def test_a_run_resumed_after_its_time_budget_ran_out_and_finished_is_not_reported_stopped(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=6, checkpoint_every=50, max_minutes=1.0)
    w = torch.nn.Parameter(torch.zeros(1))
    budget = FakeClock(35.0)
    first = Trainer(args, None, [w], budget=budget, checkpoint_at_end=True).fit(lambda epoch: [[1.0]] * 10,
                                                                                _ten_second_steps(budget, w))
    assert first.step == 4 and first.stopped_early == "stopped at step 4 of 6 by --max-minutes 1.0"
    resumed = Trainer(_args(tmp_path, steps=6, checkpoint_every=50, max_minutes=10.0, resume=True), None, [w],
                      checkpoint_at_end=True).fit(lambda epoch: [[1.0]] * 10, lambda b: _quadratic(b, w))
    assert resumed.step == 6 and resumed.resumed_from == 4 and resumed.stopped_early == ""


def test_gradients_accumulate_over_micro_batches(tmp_path: Path) -> None:
    """Two micro-batches of one example each, averaged, give the gradient of one batch of both."""
    w1, w2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    Trainer(_args(tmp_path / "a", steps=3), None, [w1], accumulate=2).fit(
        lambda epoch: [[1.0], [3.0]], lambda b: _quadratic(b, w1))
    Trainer(_args(tmp_path / "b", steps=3), None, [w2]).fit(
        lambda epoch: [[1.0, 3.0]], lambda b: _quadratic(b, w2))
    assert torch.allclose(w1, w2)


def test_a_loss_may_log_more_numbers_and_the_gradient_norm_is_logged(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=4, log_every=2)
    w = torch.nn.Parameter(torch.zeros(1))
    seen = []

    def loss(batch: list[float]) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append(batch[0])
        return _quadratic(batch, w), {"target": batch[0]}

    Trainer(args, None, [w], accumulate=2).fit(lambda epoch: [[1.0], [3.0], [5.0], [7.0]], loss)
    rows = [json.loads(x) for x in (Path(args.out) / "train_log.jsonl").read_text().splitlines()]
    # step 1 = micro-batches 1, 3; steps 1-2 = 1, 3, 5, 7; steps 3-4 again (the second epoch)
    assert [(r["step"], r["target"]) for r in rows] == [(1, 2.0), (2, 4.0), (4, 4.0)]
    assert all(r["grad_norm"] > 0 for r in rows)


@pytest.mark.parametrize(("greater", "best"), [(True, 4), (False, 2)])
def test_rotation_keeps_the_newest_and_the_best(tmp_path: Path, greater: bool, best: int) -> None:
    args = _args(tmp_path, steps=10, checkpoint_every=2, keep_checkpoints=1)
    w = torch.nn.Parameter(torch.zeros(1))
    scores = {2: 0.5, 4: 0.9, 6: 0.7, 8: 0.6, 10: 0.65}
    saved = []
    trainer = Trainer(args, None, [w], checkpoint_at_end=True, evaluate=lambda step: {"score": scores[step]},
                      metric="score", greater_is_better=greater,
                      save=lambda folder, metrics: saved.append((folder.name, metrics["score"])))
    state = trainer.fit(lambda epoch: [[1.0]] * 3, lambda b: _quadratic(b, w))
    out = Path(args.out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted({f"checkpoint-{best}", "checkpoint-10"})
    assert (state.best_step, trainer.best_checkpoint) == (best, out / f"checkpoint-{best}")
    assert saved == [(f"checkpoint-{s}", v) for s, v in scores.items()]
    evals = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if '"score"' in x]
    assert [r["step"] for r in evals] == [2, 4, 6, 8, 10]  # each step evaluated once, the last one too
    assert (out / "loss.png").is_file()


def test_keep_zero_keeps_every_checkpoint(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=6, checkpoint_every=2, keep_checkpoints=0)
    w = torch.nn.Parameter(torch.zeros(1))
    Trainer(args, None, [w]).fit(lambda epoch: [[1.0]] * 6, lambda b: _quadratic(b, w))
    # checkpoints before the last step only (the plugin saves its final artifact itself)
    assert sorted(p.name for p in Path(args.out).glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_a_fresh_run_clears_an_earlier_runs_checkpoints(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=8, checkpoint_every=4, keep_checkpoints=0)
    w = torch.nn.Parameter(torch.zeros(1))
    Trainer(args, None, [w]).fit(lambda epoch: [[1.0]] * 8, lambda b: _quadratic(b, w))
    short = _args(tmp_path, steps=3, checkpoint_every=2, keep_checkpoints=0)
    Trainer(short, None, [w]).fit(lambda epoch: [[1.0]] * 8, lambda b: _quadratic(b, w))
    assert [p.name for p in Path(args.out).glob("checkpoint-*")] == ["checkpoint-2"]  # not a stale checkpoint-4


# ------------------------------------------------------------------------------------------------------------ resume
class Crash(RuntimeError):
    pass


def _resumable_run(args: TrainingArguments, *, accumulate: int, per_epoch: int, crash_at: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], list[float], Trainer]:
    """A model with dropout, data drawn from the plugin's own seeded rng every epoch: what resume must reproduce."""
    rng = prepare(args)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    data = [([rng.random() for _ in range(3)], rng.random()) for _ in range(40)]
    losses: list[float] = []

    def batches(epoch: int) -> list[list[tuple[list[float], float]]]:
        order = rng.sample(range(len(data)), per_epoch * 2)  # a fresh draw every epoch
        return [[data[i] for i in order[k: k + 2]] for k in range(0, len(order), 2)]

    def loss(batch: list[tuple[list[float], float]]) -> torch.Tensor:
        if crash_at is not None and len(losses) == crash_at:
            raise Crash
        x = torch.tensor([b[0] for b in batch])
        y = torch.tensor([[b[1]] for b in batch])
        value = ((model(x) - y) ** 2).mean()
        losses.append(float(value.detach()))
        return value

    trainer = Trainer(args, model, list(model.parameters()), accumulate=accumulate, rng=rng,
                      evaluate=lambda step: {"val": -float(losses[-1])}, metric="val")
    try:
        trainer.fit(batches, loss)
    except Crash:
        pass
    return {k: v.clone() for k, v in model.state_dict().items()}, losses, trainer


@pytest.mark.parametrize(("accumulate", "per_epoch", "every"), [
    (1, 3, 4),  # the checkpoint falls mid-epoch
    (2, 6, 3),  # 3 steps of 2 micro-batches per epoch: the checkpoint falls on an epoch boundary
])
def test_resume_continues_at_the_right_step_with_the_same_draws(tmp_path: Path, accumulate: int, per_epoch: int,
                                                                  every: int) -> None:
    common = {"steps": 12, "lr": 0.01, "checkpoint_every": every, "keep_checkpoints": 2, "seed": 3}
    full, full_losses, _ = _resumable_run(_args(tmp_path / "full", **common), accumulate=accumulate,
                                          per_epoch=per_epoch)
    crash_after = 2 * every + 1  # the crash comes one step after the second checkpoint
    _, first_losses, _ = _resumable_run(_args(tmp_path / "cut", **common), accumulate=accumulate,
                                        per_epoch=per_epoch, crash_at=crash_after * accumulate)
    resumed, more_losses, trainer = _resumable_run(_args(tmp_path / "cut", resume=True, **common),
                                                   accumulate=accumulate, per_epoch=per_epoch)
    assert trainer.state.resumed_from == 2 * every and trainer.state.step == 12
    assert more_losses == full_losses[2 * every * accumulate:]  # every draw (data and dropout) as uninterrupted
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = [json.loads(x) for x in (tmp_path / "cut" / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 13))  # the lost step after the checkpoint logged once


def test_resume_without_a_checkpoint_starts_over(tmp_path: Path, caplog) -> None:
    args = _args(tmp_path, steps=2, resume=True)
    w = torch.nn.Parameter(torch.zeros(1))
    state = Trainer(args, None, [w]).fit(lambda epoch: [[1.0]], lambda b: _quadratic(b, w))
    assert state.step == 2 and state.resumed_from is None
    assert "--resume: no checkpoint with a trainer state" in caplog.text


def test_resume_refuses_other_trained_tensors(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=4, checkpoint_every=2)
    w = torch.nn.Parameter(torch.zeros(1))
    Trainer(args, None, [w]).fit(lambda epoch: [[1.0]], lambda b: _quadratic(b, w))
    other = torch.nn.Parameter(torch.zeros(3))
    folder = Path(args.out) / "checkpoint-2"
    message = (f"--resume: {str(folder)!r} holds 1 trained tensors whose shapes differ from this run's 1; resume "
               "with the arguments of the run that wrote it, or start over without --resume.")
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(_args(tmp_path, steps=4, resume=True), None, [other]).fit(lambda epoch: [[1.0]],
                                                                          lambda b: _quadratic(b, other))


def test_train_log_drops_the_rows_after_the_resumed_checkpoint(tmp_path: Path) -> None:
    log = TrainLog(tmp_path / "train_log.jsonl")
    for step in range(1, 6):
        log.record(step=step, loss=1.0 / step)
    log.record(step=5, done=True)
    again = TrainLog(tmp_path / "train_log.jsonl", resume_step=3)
    assert [r["step"] for r in again.rows] == [1, 2, 3]
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 3
    assert TrainLog(tmp_path / "train_log.jsonl").rows == []  # a fresh run starts the file over


# -------------------------------------------------------------------------------------------------- several stages
def test_a_paused_budget_stands_still() -> None:
    budget = FakeClock(100.0)
    budget.start()
    budget.t = 10.0
    with budget.paused():
        budget.t = 50.0
        with budget.paused():  # nested: paused once
            budget.t = 70.0
        assert budget.elapsed() == 10.0
    assert budget.elapsed() == 10.0
    budget.t = 80.0
    assert budget.elapsed() == 20.0 and budget.progress(step=0, total=10) == pytest.approx(0.2)


def test_train_log_keeps_the_earlier_stages_when_a_stage_resumes(tmp_path: Path) -> None:
    log = TrainLog(tmp_path / "train_log.jsonl")
    for stage, step in [("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("b", 2), ("b", 3), ("c", 1)]:
        log.record(stage=stage, step=step, loss=1.0)
    log.record(step=3, done=True)
    again = TrainLog(tmp_path / "train_log.jsonl", resume_step=2, resume_stage="b")
    assert [(r["stage"], r["step"]) for r in again.rows] == [("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1),
                                                             ("b", 2)]


def _staged_run(args: TrainingArguments, crash_at: int | None = None) -> dict[str, torch.Tensor]:
    """Two stages, each training its own tensor on data from the shared rng and torch noise (what resume must
    reproduce), checkpointing every 2 of their 4 steps; the plugin saves every tensor beside each checkpoint."""
    rng = prepare(args)
    weights = {"a": torch.nn.Parameter(torch.zeros(2)), "b": torch.nn.Parameter(torch.zeros(2))}
    stages = ["a", "b"]
    point = resume_point(args, stages)
    log = open_log(args, stages=stages)
    done: list[str] = []
    if point is not None:
        with torch.no_grad():
            for name, tensor in torch.load(point[1] / "weights.pt").items():
                weights[name].copy_(tensor)
        current = point[1].parent.name
        done = stages[:stages.index(current)] + ([current] if saved_state(point[1]).finished else [])
        if current in done:
            restore_random(point[1], rng)
    calls: list[int] = []

    def save(folder: Path, metrics: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in weights.items()}, folder / "weights.pt")

    for stage in stages:
        if stage in done:
            continue
        w = weights[stage]

        def loss(batch: list[float], w: torch.nn.Parameter = w) -> torch.Tensor:
            calls.append(1)
            if crash_at is not None and len(calls) == crash_at:
                raise Crash
            return ((w - torch.tensor(batch) - torch.rand(2)) ** 2).mean()

        def batches(epoch: int) -> Iterator[list[float]]:
            for _ in range(3):  # drawn when asked: the replay after a skipped stage ends in the saved state
                yield [rng.random(), rng.random()]

        Trainer(args, None, [w], total_steps=4, log=log, stage=stage, checkpoint_every=2, checkpoint_at_end=True,
                resume=point is not None and point[1].parent.name == stage, rng=rng, save=save).fit(batches, loss)
    return {k: v.detach().clone() for k, v in weights.items()}


@pytest.mark.parametrize(("crash_at", "resumed_in"), [
    (8, ("b", 2)),  # stage b killed after its step-2 checkpoint: b continues there
    (5, ("a", 4)),  # killed as stage b starts: a finished, b starts over with a's random state
])
def test_stages_share_one_log_and_resume_where_the_run_stopped(tmp_path: Path, crash_at: int,
                                                                resumed_in: tuple[str, int]) -> None:
    common = {"steps": 0, "lr": 0.1, "seed": 5, "keep_checkpoints": 1}
    full = _staged_run(_args(tmp_path / "full", **common))
    with pytest.raises(Crash):
        _staged_run(_args(tmp_path / "cut", **common), crash_at=crash_at)
    args = _args(tmp_path / "cut", resume=True, **common)
    step, folder = resume_point(args, ["a", "b"])
    assert (folder.parent.name, step) == resumed_in and saved_state(folder).finished == (resumed_in[0] == "a")
    resumed = _staged_run(args)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    out = Path(args.out)
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [(s, k) for s in "ab" for k in range(1, 5)]
    assert [p.relative_to(out).as_posix() for p in sorted(out.glob("*/checkpoint-*"))] == \
        ["a/checkpoint-4", "b/checkpoint-4"]
    assert saved_state(out / "b" / "checkpoint-4").stage == "b"
    assert resume_point(_args(tmp_path / "cut", **common), ["a", "b"]) is None  # without --resume


def test_a_stage_without_a_checkpoint_ends_the_search_for_the_resume_point(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=0, resume=True)
    _staged_run(_args(tmp_path, steps=0))
    shutil.rmtree(Path(args.out) / "a")  # b's checkpoints are an earlier run's: a fresh a removed its own
    assert resume_point(args, ["a", "b"]) is None


def test_a_fresh_staged_run_removes_every_stage_of_an_earlier_run_before_it_starts(tmp_path: Path) -> None:
    """Else a fresh run stopped after stage a would --resume into the earlier run's finished stage b."""
    _staged_run(_args(tmp_path, steps=0))
    out = Path(_args(tmp_path, steps=0).out)
    assert sorted(p.parent.name for p in out.glob("*/checkpoint-*")) == ["a", "b"]
    open_log(_args(tmp_path, steps=0), stages=["a", "b"])  # a fresh run begins
    assert not list(out.glob("*/checkpoint-*"))
    assert resume_point(_args(tmp_path, steps=0, resume=True), ["a", "b"]) is None


def test_time_checkpoints_and_a_budget_that_excludes_them(tmp_path: Path) -> None:
    args = _args(tmp_path, steps=4, keep_checkpoints=0, max_minutes=1.0)
    w = torch.nn.Parameter(torch.zeros(1))
    budget = FakeClock(25.0)

    def evaluate(step: int) -> dict:
        budget.t += 100.0  # a slow held-out check
        return {} if step % 2 else {"score": float(step)}

    def loss(batch: list[float]) -> torch.Tensor:
        budget.t += 5.0
        return _quadratic(batch, w)

    trainer = Trainer(args, None, [w], budget=budget, checkpoint_minutes=1e-9, budget_excludes_checkpoints=True,
                      checkpoint_at_end=True, evaluate=evaluate, stage="s", log=open_log(args, stages=["s"]))
    state = trainer.fit(lambda epoch: [[1.0]], loss)
    assert state.step == 4 and state.stopped_early == "" and state.finished
    assert state.train_seconds == 20.0  # four steps of 5 s; the checks' 400 s not counted
    assert [p.name for p in sorted((Path(args.out) / "s").glob("checkpoint-*"))] == [f"checkpoint-{k}" for k in
                                                                                      range(1, 5)]
    rows = [json.loads(x) for x in (Path(args.out) / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["score"]) for r in rows if "score" in r] == [(2, 2.0), (4, 4.0)]  # empty checks: no row
    assert all(r["stage"] == "s" for r in rows)


def test_a_stage_stopped_by_its_budget_says_so(tmp_path: Path) -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    budget = FakeClock(12.0)

    def loss(batch: list[float]) -> torch.Tensor:
        budget.t += 5.0
        return _quadratic(batch, w)

    args = _args(tmp_path, steps=10, checkpoint_every=3)
    state = Trainer(args, None, [w], budget=budget, stage="s1", checkpoint_at_end=True,
                    log=open_log(args, stages=["s1"])).fit(lambda epoch: [[1.0]], loss)
    assert state.stopped_early == "stopped at step 3 of 10 by s1's time budget (0.2 minutes)"
    assert saved_state(Path(tmp_path / "run" / "s1" / "checkpoint-3")).finished  # the end, not a periodic one


def test_a_stage_without_the_shared_log_is_refused(tmp_path: Path) -> None:
    """A stage opening its own log would rewrite the rows the stages before it wrote."""
    args = _args(tmp_path, steps=2)
    with pytest.raises(ValueError, match="needs log="):
        Trainer(args, None, [torch.nn.Parameter(torch.zeros(1))], stage="b")


def test_plot_draws_one_panel_per_stage(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"stage": s, "step": k, "loss": 1.0 / k, "reward": -float(k)} for s in ("a", "b") for k in (1, 2)]
    path = plot_losses(rows, tmp_path / "loss.png", series=("reward",), stage_titles={"a": "A", "b": "B"})
    assert path is not None and path.stat().st_size > 0


# --------------------------------------------------------------------------------------------------------- arguments
@dataclass
class DemoArguments(TrainingArguments):
    prog: ClassVar[str] = "ragzip train demo"

    data: list[str] = field(default_factory=list, metadata={"required": True, "help": "Files."})
    dev: list[str] = field(default_factory=lambda: ["a.jsonl"], metadata={"help": "Dev files."})
    limit: int | None = field(default=None, metadata={"help": "First N."})
    ratio: float = field(default=0.25, metadata={"help": "A share, 25% by default."})
    head: Literal["mlp", "linear"] = field(default="mlp", metadata={"help": "Head."})
    fast: bool = field(default=False, metadata={"help": "A switch."})
    cache: bool = field(default=True, metadata={"help": "A switch that is on."})
    name: str = field(default="x", metadata={"help": "A name."})
    eval_every: int = field(default=0, metadata={"aliases": ["--evaluate-every"], "help": "Old name too."})
    internal: str = field(default="", metadata={"cli": False})


@pytest.mark.parametrize("values", [
    {"data": ["d.jsonl"]},
    {"data": ["d1", "d 2.jsonl"], "dev": ["x", "y"], "limit": 7, "ratio": 1e-7, "head": "linear", "fast": True,
     "cache": False, "name": "", "eval_every": 3, "out": "runs/o", "seed": 4, "threads": 1, "device": "cpu",
     "max_minutes": 2.5, "steps": 9, "lr": 3e-4, "warmup": 0.0, "schedule": "linear", "log_every": 2,
     "checkpoint_every": 5, "keep_checkpoints": 0, "resume": True},
])
def test_arguments_round_trip_through_the_command_line(values: dict) -> None:
    args = DemoArguments(**values)
    again = DemoArguments.parse(args.to_argv())
    assert again == args
    assert again.argv == args.to_argv()
    assert DemoArguments.parse(["--data", "d", "--evaluate-every", "4"]).eval_every == 4  # the alias


def test_the_parser_is_generated_from_the_fields() -> None:
    parser = DemoArguments.parser()
    options = {s for a in parser._actions for s in a.option_strings}
    assert {"--data", "--dev", "--limit", "--ratio", "--head", "--fast", "--cache", "--no-cache", "--name",
            "--eval-every", "--evaluate-every", "--out", "--seed", "--threads", "--device", "--max-minutes",
            "--steps", "--lr", "--warmup", "--schedule", "--log-every", "--checkpoint-every", "--keep-checkpoints",
            "--resume"} <= options
    assert "--internal" not in options and "--argv" not in options and "--prog" not in options
    text = parser.format_help()
    assert "A share, 25% by default. (default: 0.25)" in " ".join(text.split())
    assert "{mlp,linear}" in text


def test_a_bad_value_exits_with_the_option_and_the_fix(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        DemoArguments.parse(["--data", "d", "--warmup", "1.5"])
    assert exit_.value.code == 2
    assert "ragzip train demo: error: --warmup 1.5 must lie in [0, 1) (a share of the training)." in \
        capsys.readouterr().err
    with pytest.raises(ConfigError, match=re.escape("--keep-checkpoints -1 must be >= 0 (0 keeps all).")):
        TrainingArguments(keep_checkpoints=-1)


def test_command_quotes_what_the_shell_needs() -> None:
    args = DemoArguments.parse(["--data", "a b.jsonl", "--name", ""])
    assert args.command == "ragzip train demo --data 'a b.jsonl' --name ''"


# -------------------------------------------------------------------------------------------------------- model card
def _card(**kw) -> ModelCard:
    training_dict = {"seed": 3, "steps": 40, "steps_planned": 50, "best_step": 30, "samples_seen": 1280,
                     "device": "cpu", "command": "ragzip train demo --out x", "stopped_early": "stopped at step 40"}
    return ModelCard.from_training(training_dict, **{
        "title": "demo", "summary": "A demo model.", "what": ["- Weights."], "data": ["- Data: d.jsonl."],
        "recipe": ["- AdamW."], "results": ["- Loss 0.1."], **kw})


def test_card_has_the_standard_sections_and_facts() -> None:
    text = _card().render()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# demo", "## What this artifact holds", "## Training", "## Measured quality",
                        "## Reproduce"]
    assert "- Steps: 40 of 50 planned (best checkpoint: step 30), 1,280 examples seen; seed 3; trained on cpu." in text
    assert "- Note: stopped at step 40." in text
    assert "```\nragzip train demo --out x\n```" in text


def test_card_keeps_hand_written_sections_and_regenerates_its_own() -> None:
    old = _card(results=["- Loss 0.9."]).render()
    hand = ("## Measured end to end (by hand)\n\nA table.\n\n```\n## not a heading inside code\n```\n")
    existing = old + "\n" + hand
    new = _card().render(existing)
    assert new.endswith(hand)  # kept verbatim, code block included
    assert "- Loss 0.1." in new and "- Loss 0.9." not in new  # its own section regenerated
    assert _card().render(new) == new  # re-rendering changes nothing


def test_a_fallback_section_yields_to_a_hand_written_one() -> None:
    gate = CardSection("## The gate (`gate.json`, 4 KB)", ["Generated from gate.json."], key="## The gate",
                       fallback=True)
    card = _card(sections=[CardSection("## Limits", ["- Few."]), gate])
    assert "Generated from gate.json." in card.render()  # no card yet: the generated text
    hand = "## The gate (`gate.json`, 3 KB)\n\nCurated by hand, with context.\n"
    existing = _card().render() + "\n" + hand
    text = card.render(existing)
    assert text.count("## The gate") == 1 and text.endswith(hand)
    assert text.index("## Limits") < text.index("## The gate")


def test_card_writes_beside_the_artifact(tmp_path: Path) -> None:
    (tmp_path / "MODEL_CARD.md").write_text("# old\n\n## Notes\n\nKeep me.\n")
    path = _card().write(tmp_path)
    assert path.read_text().startswith("# demo\n") and path.read_text().endswith("## Notes\n\nKeep me.\n")


def test_device_is_inferred_and_recorded(tmp_path: Path) -> None:
    assert training.resolve_device("") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert training.resolve_device("cpu") == "cpu"
    w = torch.nn.Parameter(torch.zeros(1))
    trainer = Trainer(_args(tmp_path, steps=1), None, [w])
    trainer.fit(lambda epoch: [[1.0]], lambda b: _quadratic(b, w))
    summary = trainer.summary()
    assert summary["device"] == "cpu" and summary["samples_seen"] == 1 and summary["steps"] == 1


def test_prepare_seeds_everything(tmp_path: Path) -> None:
    args = _args(tmp_path, seed=11, threads=1)
    rng = prepare(args)
    a = (rng.random(), torch.rand(1).item())
    rng = prepare(args)
    assert (rng.random(), torch.rand(1).item()) == a and Path(args.out).is_dir()
    assert isinstance(rng, random.Random)


def test_evaluate_every_runs_on_its_own_cadence(tmp_path: Path) -> None:
    from ragzip.training import checkpoints

    args = TrainingArguments(out=str(tmp_path), steps=7, lr=0.1, checkpoint_every=2, keep_checkpoints=0)
    w = torch.nn.Parameter(torch.zeros(1))
    seen: list[int] = []

    def evaluate(step: int) -> dict:
        seen.append(step)
        return {"val": float(step)}

    trainer = Trainer(args, None, [w], evaluate=evaluate, evaluate_every=3, checkpoint_at_end=True)
    trainer.fit(lambda epoch: [1.0] * 10, lambda t: (w - t).pow(2).sum())
    assert seen == [3, 6]  # not at the checkpoints (2, 4, 6, 7)
    assert [r["step"] for r in trainer.log.rows if "val" in r] == [3, 6]
    assert [step for step, _ in checkpoints(tmp_path)] == [2, 4, 6, 7]
    with pytest.raises(ValueError, match=re.escape("drop evaluate_every= to use it")):
        Trainer(args, None, [w], evaluate=evaluate, evaluate_every=3, metric="val")
