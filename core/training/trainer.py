"""The fit loop every ragzip trainer shares.

A plugin's trainer keeps its arguments, its loss and its example assembly; :class:`Trainer` does the rest: the
learning-rate schedule, the time/step budget, the optimizer step with gradient clipping, the JSONL log, checkpoints
(evaluated, rotated, the best by a validation metric kept) and resuming from the newest checkpoint.

Resuming is exact: a checkpoint holds the trained tensors in full precision, the optimizer state, the torch and
Python random states and the loop's counters; the resumed run rebuilds its data from the seed as the first run did,
replays the batch order up to the checkpoint without computing anything, and continues with the same random draws,
so it ends with the weights the uninterrupted run would have had.

A run of several stages (each its own model parts, optimizer, schedule and budget) gives each stage its
:class:`Trainer` with ``stage=`` and one shared log: the stage's checkpoints go to ``out/<stage>/``, its rows carry
``stage``, and :func:`resume_point` with ``stages`` finds where a ``--resume`` continues (the stages before it are
done; :func:`saved_state` says whether that stage finished, :func:`restore_random` continues after it).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ragzip.errors import ConfigError
from ragzip.models import infer_device
from ragzip.training.arguments import TrainingArguments
from ragzip.training.log import TrainLog, plot_losses
from ragzip.training.schedule import Budget, Schedule, make_schedule

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"
"""The file in a ``checkpoint-N/`` folder that :class:`Trainer` resumes from (beside what ``save`` wrote there)."""

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_END = object()
_NOT_COMPARED = {"resume", "max_minutes", "threads", "device", "out", "log_every"}


def prepare(args: TrainingArguments) -> random.Random:
    """Set torch's threads and seed, create ``args.out``; returns the run's ``random.Random(args.seed)``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    return rng


def resolve_device(device: str = "") -> str:
    """``device`` if given, else ``cuda`` when a GPU is present, else ``cpu``."""
    return infer_device(device or None)


def configure_logging() -> None:
    """INFO-level console logging, unless the application configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the ``checkpoint-N`` folders in ``out`` that hold a trainer state, oldest first."""
    found = []
    for folder in Path(out).glob("checkpoint-*"):
        match = _CHECKPOINT.fullmatch(folder.name)
        if match and (folder / STATE_NAME).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def resume_point(args: TrainingArguments, stages: Sequence[str] = ()) -> tuple[int, Path] | None:
    """The newest checkpoint to resume from when ``args.resume`` is set, else None.

    With ``stages`` (a run of several stages, in the order they run, each checkpointing into ``out/<stage>/``): the
    newest checkpoint of the first stage that did not finish, or of the last one; the folder's parent names the
    stage. A stage without a checkpoint ends the search: the stages after it hold an earlier run's checkpoints.
    """
    if not args.resume or not args.out:
        return None
    if not stages:
        found = checkpoints(args.out)
        return found[-1] if found else None
    point = None
    for stage in stages:
        found = checkpoints(Path(args.out) / stage)
        if not found:
            break
        point = found[-1]
        if not saved_state(point[1]).finished:
            break
    return point


def open_log(args: TrainingArguments, name: str = "train_log.jsonl", stages: Sequence[str] = ()) -> TrainLog:
    """The run's JSONL log in ``args.out``: started over, or kept up to the checkpoint a ``--resume`` continues.

    With ``stages``, that checkpoint is the one :func:`resume_point` finds for them, and a fresh run (no
    ``--resume``) removes every stage's checkpoints of an earlier run now, before its first stage starts: a run stopped
    between stages could otherwise resume into the earlier run's later stage.
    """
    if stages and args.out and not args.resume:
        for stage in stages:
            clear_checkpoints(Path(args.out) / stage, logger)
    point = resume_point(args, stages)
    return TrainLog(Path(args.out) / name, resume_step=point[0] if point else None,
                    resume_stage=point[1].parent.name if point and stages else None)


def clear_checkpoints(folder: Path, log: logging.Logger) -> None:
    """Remove an earlier run's checkpoints from ``folder`` (a fresh run), so a later --resume cannot pick them."""
    stale = checkpoints(folder)
    if stale:
        log.warning("removing %d checkpoint(s) of an earlier run from %s (pass --resume to continue it instead)",
                    len(stale), folder)
    for _, checkpoint in stale:
        shutil.rmtree(checkpoint, ignore_errors=True)


def _apply_random(payload: dict[str, Any], rng: random.Random | None) -> None:
    """Set torch's random state (and CUDA's, and ``rng``'s) to the ones a checkpoint payload saved."""
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    if rng is not None and payload["rng"] is not None:
        rng.setstate(_as_tuple(payload["rng"]))


def _payload(folder: Path) -> dict[str, Any]:
    return torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)


def saved_state(folder: str | Path) -> TrainState:
    """The loop's counters a checkpoint folder holds (``finished``: its stage ended there)."""
    return TrainState(**_payload(Path(folder))["state"])


def restore_random(folder: str | Path, rng: random.Random | None = None) -> None:
    """Set torch's random state (and CUDA's, and ``rng``'s) to the one a checkpoint saved.

    A run resumed after a finished stage then draws what the uninterrupted run drew next.
    """
    _apply_random(_payload(Path(folder)), rng)


@dataclass
class TrainState:
    """The loop's counters; saved in every checkpoint and restored by ``--resume``."""

    step: int = 0
    epoch: int = 0
    samples: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    last_checkpoint: int | None = None
    checkpoints: list[int] = field(default_factory=list)
    train_seconds: float = 0.0  # on the budget's clock, including the budget's `spent`
    wall_seconds: float = 0.0
    loss_ema: float | None = None
    recent: list[float] = field(default_factory=list)
    recent_extras: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: str = ""
    resumed_from: int | None = None
    stage: str = ""
    finished: bool = False  # the loop ended (steps, budget or data); set before the last checkpoint


def _size(batch: Any) -> int:
    try:
        return len(batch)
    except TypeError:
        return 1


class Trainer:
    """One training loop: schedule, budget, optimizer steps, log, checkpoints, resume.

    Args:
        args: The run's arguments (``steps``, ``lr``, ``warmup``, ``schedule``, ``max_minutes``, ``log_every``,
            ``checkpoint_every``, ``keep_checkpoints``, ``resume``, ``out``).
        model: The ``nn.Module`` trained (set to train mode at each epoch and after each evaluation); may be None.
        param_groups: The trained parameters, or AdamW parameter groups (dicts with ``params`` and ``lr``); groups
            without ``lr`` get ``args.lr``. Gradients are clipped over all of them, in this order.
        total_steps: Steps planned (default ``args.steps``).
        log: The JSONL log (default: ``train_log.jsonl`` in ``out``, kept up to the checkpoint a resume continues).
        optimizer: An optimizer built over ``param_groups`` instead of AdamW.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm.
        schedule: Learning-rate factor by step (default: :func:`make_schedule` of ``args``).
        budget: The time budget (default: ``args.max_minutes`` of wall clock).
        accumulate: Micro-batches per optimizer step (each loss divided by it).
        checkpoint_every: Steps between checkpoints (default ``args.checkpoint_every``; 0: none before the end).
        checkpoint_at_end: Also checkpoint (and evaluate) the last step, unless it was just checkpointed.
        evaluate: ``evaluate(step) -> dict`` run at each checkpoint; the dict is logged.
        metric: The key of ``evaluate``'s dict that picks the best checkpoint.
        greater_is_better: Whether a larger ``metric`` is better.
        save: ``save(folder, metrics)`` writes the loadable artifact of a checkpoint.
        smoothing: The logged loss: None = the mean over the current ``log_every`` window (steps ``k*N+1`` to now;
            step 1 and the last step are logged too); a weight ``a`` = the exponential moving average
            ``(1 - a) * ema + a * loss``. Logged unrounded.
        rng: The plugin's ``random.Random``; its state is saved and restored with the checkpoints.
        out: The checkpoint folder (default ``args.out``).
        plot_title: Title of ``loss.png``.
        plot_ylabel: The loss axis label of ``loss.png``.
        log_to: The logger for progress messages.
        stage: This trainer runs one stage of a multi-stage run: its checkpoints go to ``out/<stage>/``, its log
            rows (steps and evaluations) carry ``stage``, and a fresh stage clears only its own stale checkpoints.
            A stage resumed after skipped ones replays its batch order from another random state than the first
            run's, so its resume is exact when ``batches`` draws each batch when asked (a generator).
        resume: Continue from the newest checkpoint (default ``args.resume``); a multi-stage run sets it for the
            stage :func:`resume_point` names only.
        checkpoint_minutes: Also checkpoint when this many minutes of wall clock passed since the last checkpoint
            (or the start); 0: never.
        budget_excludes_checkpoints: Checkpoints (with their evaluation and ``save``) and the evaluations of
            ``evaluate_every`` do not count against the budget.
        evaluate_every: Run ``evaluate`` every this many steps (the last step too when it falls on one) instead of
            at the checkpoints, which then do not evaluate; no best checkpoint is tracked (no ``metric``). 0: at the
            checkpoints.

    Example:
        >>> import tempfile, torch
        >>> args = TrainingArguments(out=tempfile.mkdtemp(), steps=4, lr=0.1, log_every=2)
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> state = Trainer(args, None, [w]).fit(lambda epoch: [[1.0, 1.0]] * 3,
        ...                                      lambda x: ((w - torch.tensor(x)) ** 2).sum())
        >>> state.step, state.epoch, state.samples
        (4, 2, 8)
    """

    def __init__(self, args: TrainingArguments, model: Any, param_groups: Sequence[Any], *,
                 total_steps: int | None = None, log: TrainLog | None = None, optimizer: Any = None,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, schedule: Schedule | None = None,
                 budget: Budget | None = None, accumulate: int = 1, checkpoint_every: int | None = None,
                 checkpoint_at_end: bool = False, evaluate: Callable[[int], dict[str, Any]] | None = None,
                 metric: str | None = None, greater_is_better: bool = True,
                 save: Callable[[Path, dict[str, Any]], Any] | None = None, smoothing: float | None = None,
                 rng: random.Random | None = None, out: str | Path | None = None,
                 plot_title: str = "training loss", plot_ylabel: str = "loss",
                 log_to: logging.Logger | None = None, stage: str = "", resume: bool | None = None,
                 checkpoint_minutes: float = 0.0, budget_excludes_checkpoints: bool = False,
                 evaluate_every: int = 0) -> None:
        self.args = args
        self.model = model
        self.out = Path(out if out is not None else args.out)
        self.stage = stage
        self.folder = self.out / stage if stage else self.out  # where the checkpoint-N folders go
        self._tag = {"stage": stage} if stage else {}
        resume = args.resume if resume is None else resume
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.budget_excludes_checkpoints = budget_excludes_checkpoints
        self._last_checkpoint_time = time.perf_counter()
        self.total_steps = args.steps if total_steps is None else total_steps
        if optimizer is None:
            groups = list(param_groups)
            if groups and not isinstance(groups[0], dict):
                groups = [{"params": groups}]
            groups = [{**g, "params": list(g["params"]), "lr": g.get("lr", args.lr)} for g in groups]
            optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.max_grad_norm = max_grad_norm
        self.schedule = schedule or make_schedule(args)
        self.budget = budget or Budget(args.max_minutes * 60)
        self.accumulate = accumulate
        self.checkpoint_every = args.checkpoint_every if checkpoint_every is None else checkpoint_every
        self.checkpoint_at_end = checkpoint_at_end
        self.evaluate = evaluate
        self.evaluate_every = evaluate_every
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.save = save
        self.smoothing = smoothing
        self.rng = rng
        self.plot_title, self.plot_ylabel = plot_title, plot_ylabel
        self.logger = log_to or logger
        self.state = TrainState(stage=stage)
        found = checkpoints(self.folder) if resume else []
        self._resume: tuple[int, Path] | None = found[-1] if found else None
        if resume and self._resume is None:
            self.logger.warning("--resume: no checkpoint with a trainer state in %s; starting from step 0", self.folder)
        if stage and log is None:
            raise ValueError("Trainer(stage=...) needs log= (the run's shared log from open_log(args, stages=...)): "
                             "a stage opening its own log would rewrite the rows of the stages before it")
        self.log = log if log is not None else TrainLog(self.out / "train_log.jsonl",
                                                        resume_step=self._resume[0] if self._resume else None)
        self._pending: dict[str, Any] | None = None
        self._to_skip = self._skipped = 0
        if metric is not None and evaluate is None:
            raise ValueError("Trainer(metric=...) needs evaluate= to compute it")
        if metric is not None and evaluate_every:
            raise ValueError("Trainer(metric=...) picks the best checkpoint, evaluated at each checkpoint; drop "
                             "evaluate_every= to use it")

    # ----------------------------------------------------------------------------------------------------- loop
    def fit(self, batches: Callable[[int], Iterable[Any]], loss: Callable[[Any], Any]) -> TrainState:
        """Train until ``total_steps`` or the budget; returns the final :class:`TrainState`.

        Args:
            batches: ``batches(epoch)`` -> that epoch's batches (epochs count from 1; called when the epoch starts,
                so a plugin may draw the epoch's sample then). An epoch with no batch ends the data.
            loss: ``loss(batch)`` -> a scalar tensor, or ``(tensor, {"name": number, ...})`` to log more numbers
                (averaged like the loss).
        """
        if self._resume is not None:
            self._load(self._resume[1])
            self.state.stopped_early = ""  # how the earlier run ended; this one says how it ends
            self.budget.start(spent=self.budget.spent + self.state.train_seconds)
        else:
            clear_checkpoints(self.folder, self.logger)
            self.budget.start()
        state = self.state
        wall_start, wall_before, steps_before = time.perf_counter(), state.wall_seconds, state.step
        self._last_checkpoint_time = wall_start
        total = self.total_steps
        if self.model is not None:
            self.model.train()
        stream = self._stream(batches)
        while state.step < total:
            factor = self.schedule(state.step, total, self.budget.progress(state.step, total))
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            value, taken = 0.0, 0
            extras: dict[str, float] = {}
            for _ in range(self.accumulate):
                item = next(stream, None)
                if item is None:
                    break
                epoch, batch = item
                if epoch != state.epoch:
                    state.epoch = epoch
                    if self.model is not None:
                        self.model.train()
                out = loss(batch)
                if isinstance(out, tuple):  # (loss, {"nll": ..., ...}): more numbers to log
                    out, more = out
                    for key, number in more.items():
                        extras[key] = extras.get(key, 0.0) + float(number)
                if self.accumulate > 1:
                    out = out / self.accumulate
                out.backward()
                value += float(out.detach())
                state.samples += _size(batch)
                taken += 1
            if not taken:
                state.stopped_early = f"the data ran out at step {state.step} of {total}"
                self.logger.warning(state.stopped_early)
                break
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.wall_seconds = wall_before + time.perf_counter() - wall_start
            self._log_step(value, {k: v / taken for k, v in extras.items()}, grad_norm, total,
                           (time.perf_counter() - wall_start) / (state.step - steps_before))
            if self.evaluate_every and state.step % self.evaluate_every == 0:
                self._evaluate()
            due = (self.checkpoint_every and state.step % self.checkpoint_every == 0) or (
                self.checkpoint_seconds and time.perf_counter() - self._last_checkpoint_time >= self.checkpoint_seconds)
            if due and state.step < total and not (self.checkpoint_at_end and self.budget.exhausted()):
                self.checkpoint()  # an exhausted budget ends the loop here: the last checkpoint covers this step
            if self.budget.exhausted():
                by = f"{self.stage}'s time budget ({self.budget.seconds / 60:g} minutes)" if self.stage else \
                    f"--max-minutes {self.args.max_minutes}"
                state.stopped_early = f"stopped at step {state.step} of {total} by {by}"
                self.logger.warning(state.stopped_early)
                break
        self._restore_random()  # a run resumed at its last step draws nothing above
        state.finished = True
        if self.checkpoint_at_end and state.step and state.last_checkpoint != state.step:
            self.checkpoint()
        elif self.checkpoint_at_end and state.step:
            self._save_state(self.folder / f"checkpoint-{state.step}")  # the last checkpoint now says finished
        state.train_seconds = self.budget.elapsed()
        state.wall_seconds = wall_before + time.perf_counter() - wall_start
        return state

    def _stream(self, batches: Callable[[int], Iterable[Any]]) -> Iterator[tuple[int, Any]]:
        """``(epoch, batch)`` for ever; a resumed run skips the batches trained before its checkpoint."""
        epoch = 0
        while True:
            self._restore_random()
            epoch += 1
            empty = True
            drawn = iter(batches(epoch))
            while True:
                self._restore_random()  # before the first batch after the replay is drawn (by a generator)
                batch = next(drawn, _END)
                if batch is _END:
                    break
                empty = False
                if self._skipped < self._to_skip:
                    self._skipped += 1
                    continue
                yield epoch, batch
            if empty:
                return

    def _log_step(self, value: float, extras: dict[str, float], grad_norm: float, total: int,
                  s_per_step: float) -> None:
        state = self.state
        if self.smoothing is not None:
            state.loss_ema = value if state.loss_ema is None else \
                (1 - self.smoothing) * state.loss_ema + self.smoothing * value
        state.recent.append(value)
        for key, number in extras.items():
            state.recent_extras.setdefault(key, []).append(number)
        if state.step == 1 or state.step % self.args.log_every == 0 or state.step == total:
            shown = state.loss_ema if self.smoothing is not None else sum(state.recent) / len(state.recent)
            lr = self.optimizer.param_groups[0]["lr"]
            self.log.record(**self._tag, step=state.step, epoch=state.epoch, loss=shown,
                            **{k: sum(v) / len(v) for k, v in state.recent_extras.items()}, lr=lr,
                            grad_norm=grad_norm, samples=state.samples, elapsed_s=round(state.wall_seconds, 1),
                            s_per_step=round(s_per_step, 3))
            self.logger.info("%sstep %d/%d epoch %d loss %.4f lr %.3g (%.2f s/step, %.0f s)",
                             f"{self.stage} " if self.stage else "", state.step, total, state.epoch, shown, lr,
                             s_per_step, state.wall_seconds)
        if state.step % self.args.log_every == 0:
            state.recent, state.recent_extras = [], {}

    # ---------------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> Path:
        """Evaluate (when the trainer has ``evaluate``), save ``checkpoint-<step>/`` and rotate the old ones.

        An evaluation that returns nothing logs no row.
        """
        paused = self.budget.paused() if self.budget_excludes_checkpoints else contextlib.nullcontext()
        with paused:
            folder = self._checkpoint()
        self._last_checkpoint_time = time.perf_counter()
        return folder

    def _checkpoint(self) -> Path:
        state = self.state
        folder = self.folder / f"checkpoint-{state.step}"
        metrics: dict[str, Any] = {}
        if self.evaluate is not None and not self.evaluate_every:
            metrics = dict(self.evaluate(state.step) or {})
            if metrics:
                self.log.record(**self._tag, step=state.step, epoch=state.epoch, **metrics,
                                elapsed_s=round(state.wall_seconds, 1))
            if self.metric is not None:
                value = float(metrics[self.metric])
                best = state.best_metric
                if best is None or (value > best if self.greater_is_better else value < best):
                    state.best_metric, state.best_step = value, state.step
        if self.save is not None:
            self.save(folder, metrics)
        folder.mkdir(parents=True, exist_ok=True)
        state.last_checkpoint = state.step
        if state.step not in state.checkpoints:
            state.checkpoints.append(state.step)
        state.train_seconds = self.budget.elapsed()
        drop = self._rotation()
        state.checkpoints = [s for s in state.checkpoints if s not in drop]
        self._save_state(folder)
        for step in drop:
            shutil.rmtree(self.folder / f"checkpoint-{step}", ignore_errors=True)
        self.plot()
        if self.model is not None:
            self.model.train()
        return folder

    def _evaluate(self) -> None:
        """An evaluation on the ``evaluate_every`` cadence, logged (no row when it returns nothing)."""
        state = self.state
        with self.budget.paused() if self.budget_excludes_checkpoints else contextlib.nullcontext():
            metrics = dict(self.evaluate(state.step) or {}) if self.evaluate is not None else {}
        if metrics:
            self.log.record(**self._tag, step=state.step, epoch=state.epoch, **metrics,
                            elapsed_s=round(state.wall_seconds, 1))
        if self.model is not None:
            self.model.train()

    def _rotation(self) -> set[int]:
        """The checkpoints to delete: all but the newest ``keep_checkpoints`` and the best."""
        keep = self.args.keep_checkpoints
        if not keep:
            return set()
        steps = sorted(self.state.checkpoints)
        kept = set(steps[-keep:]) | ({self.state.best_step} if self.state.best_step is not None else set())
        return {s for s in steps if s not in kept}

    @property
    def best_checkpoint(self) -> Path | None:
        """The best checkpoint by ``metric`` (the newest checkpoint when there is no metric); None before any."""
        step = self.state.best_step if self.state.best_step is not None else self.state.last_checkpoint
        return None if step is None else self.folder / f"checkpoint-{step}"

    def plot(self) -> Path | None:
        """Draw ``loss.png`` in the output folder from the log."""
        return plot_losses(self.log, self.out / "loss.png", title=self.plot_title, ylabel=self.plot_ylabel,
                           metric=self.metric if self.metric != "val_loss" else None)

    def _save_state(self, folder: Path) -> None:
        payload = {
            "state": asdict(self.state),
            "params": [p.detach().to("cpu", copy=True) for p in self.params],
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "rng": self.rng.getstate() if self.rng is not None else None,
            "args": {k: v for k, v in self.args.to_dict().items() if k not in _NOT_COMPARED},
        }
        tmp = folder / (STATE_NAME + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(folder / STATE_NAME)  # a run killed while saving leaves the previous checkpoint usable

    def _load(self, folder: Path) -> None:
        payload = _payload(folder)
        saved = payload["params"]
        shapes = [tuple(p.shape) for p in self.params]
        if [tuple(t.shape) for t in saved] != shapes:
            raise ConfigError(f"--resume: {str(folder)!r} holds {len(saved)} trained tensors whose shapes differ from "
                              f"this run's {len(shapes)}; resume with the arguments of the run that wrote it, or "
                              "start over without --resume.")
        with torch.no_grad():
            for param, tensor in zip(self.params, saved, strict=True):
                param.copy_(tensor.to(device=param.device, dtype=param.dtype))
        self.optimizer.load_state_dict(payload["optimizer"])
        now = {k: v for k, v in self.args.to_dict().items() if k not in _NOT_COMPARED}
        changed = sorted(k for k in set(now) | set(payload["args"]) if now.get(k) != payload["args"].get(k))
        if changed:
            self.logger.warning("--resume: these arguments differ from the run that wrote %s: %s", folder,
                                ", ".join(f"{k} {payload['args'].get(k)!r} -> {now.get(k)!r}" for k in changed))
        self.state = TrainState(**payload["state"])
        self.state.resumed_from = self.state.step
        self._to_skip, self._skipped = self.state.step * self.accumulate, 0
        self._pending = payload
        self.logger.info("resuming from %s (step %d, epoch %d)", folder, self.state.step, self.state.epoch)

    def _restore_random(self) -> None:
        """Once the replay reaches the checkpoint: the random states as they were when it was saved."""
        if self._pending is None or self._skipped < self._to_skip:
            return
        _apply_random(self._pending, self.rng)
        self._pending = None

    def summary(self) -> dict[str, Any]:
        """The run's facts for ``config.json`` and the model card."""
        s = self.state
        return {
            "seed": self.args.seed, "steps": s.step, "steps_planned": self.total_steps, "best_step": s.best_step,
            "samples_seen": s.samples, "epochs_started": s.epoch,
            "device": self.params[0].device.type if self.params else "cpu", "threads": self.args.threads,
            "train_seconds": round(s.train_seconds), "stopped_early": s.stopped_early,
            **({"resumed_from": s.resumed_from} if s.resumed_from is not None else {}),
            "command": self.args.command,
        }


def _as_tuple(value: Any) -> Any:
    """``random.Random.setstate`` wants tuples where a saved state may come back with lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


__all__ = ["STATE_NAME", "TrainState", "Trainer", "checkpoints", "configure_logging", "open_log", "prepare",
           "resolve_device", "restore_random", "resume_point", "saved_state"]
