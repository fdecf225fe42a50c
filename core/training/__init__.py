"""The training layer every ``ragzip train <type>`` shares.

A plugin's ``train.py`` keeps its arguments, its loss and its example assembly; this package holds the rest:

- :class:`TrainingArguments`: a dataclass whose fields are the command-line options (``--help`` is generated from
  the fields' help text); a plugin subclasses it with its own fields.
- :class:`Trainer`: the fit loop (warm-up + cosine or linear learning rate, a step and time :class:`Budget`,
  gradient clipping, gradient accumulation, a JSONL :class:`TrainLog`, checkpoints rotated with the best by a
  validation metric kept, exact ``--resume``), and :func:`plot_losses` for ``loss.png``. A run of several stages
  gives each stage its :class:`Trainer` (``stage=``) over one shared log and output folder; :func:`resume_point`
  with ``stages`` finds where its ``--resume`` continues.
- :class:`ModelCard`: one ``MODEL_CARD.md`` renderer fed by the run's facts and the plugin's text, which keeps the
  sections written into an existing card by hand.

Example:
    >>> import tempfile
    >>> from dataclasses import dataclass, field
    >>> import torch
    >>> @dataclass
    ... class FitArguments(TrainingArguments):
    ...     prog = "ragzip train fit"
    ...     target: float = field(default=3.0, metadata={"help": "The value to fit."})
    >>> args = FitArguments.parse(["--out", tempfile.mkdtemp(), "--steps", "300", "--lr", "0.1"])
    >>> rng = prepare(args)
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> state = Trainer(args, None, [w]).fit(lambda epoch: [args.target] * 100, lambda t: (w - t).pow(2).sum())
    >>> state.step, round(w.item(), 1)
    (300, 3.0)
"""

from __future__ import annotations

from ragzip.training.arguments import SCHEDULES, TrainingArguments
from ragzip.training.card import CARD_NAME, CardSection, ModelCard
from ragzip.training.log import TrainLog, plot_losses
from ragzip.training.schedule import Budget, Schedule, WarmupCosine, WarmupLinear, make_schedule
from ragzip.training.trainer import (
    STATE_NAME,
    Trainer,
    TrainState,
    checkpoints,
    configure_logging,
    open_log,
    prepare,
    resolve_device,
    restore_random,
    resume_point,
    saved_state,
)

__all__ = [
    "Budget",
    "CARD_NAME",
    "CardSection",
    "ModelCard",
    "SCHEDULES",
    "STATE_NAME",
    "Schedule",
    "TrainLog",
    "TrainState",
    "Trainer",
    "TrainingArguments",
    "WarmupCosine",
    "WarmupLinear",
    "checkpoints",
    "configure_logging",
    "make_schedule",
    "open_log",
    "plot_losses",
    "prepare",
    "resolve_device",
    "restore_random",
    "resume_point",
    "saved_state",
]
