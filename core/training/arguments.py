"""Training arguments: a dataclass whose fields are the trainer's command-line options.

As with transformers' ``TrainingArguments`` and ``HfArgumentParser``, each field of the dataclass is one option:
``max_minutes`` becomes ``--max-minutes``, its type comes from the annotation and its help text from
``field(metadata={"help": ...})``. A plugin subclasses :class:`TrainingArguments` with its own fields (and may
redefine a common field to change its default or help); the README-style option list, ``--help`` and the parsed
object then cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from ragzip.errors import ConfigError

A = TypeVar("A", bound="TrainingArguments")

SCHEDULES = ("cosine", "linear")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _hints(cls: type) -> dict[str, Any]:
    """The fields' types; typing's names resolve even where the defining namespace lacks them (a doctest)."""
    return typing.get_type_hints(cls, localns={"ClassVar": ClassVar, "Literal": Literal, "Any": Any})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a field's default after its help, except where there is nothing to show (None, "", False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS)
        if "%(default)" in text or empty or action.required:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


@dataclass
class TrainingArguments:
    """The options every ragzip trainer shares; a plugin subclasses it with its own fields.

    Each field is one command-line option (``max_minutes`` -> ``--max-minutes``). Field metadata: ``help`` (the help
    text), ``aliases`` (more option strings, e.g. an older name), ``required``, ``choices``, ``metavar`` and
    ``cli=False`` for a field the command line does not set. ``bool`` fields are switches, ``list[...]`` fields take
    one or more values and ``Literal[...]`` fields list their choices.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass
        ... class LoraArguments(TrainingArguments):
        ...     prog = "ragzip train lora"
        ...     rank: int = field(default=8, metadata={"help": "LoRA rank."})
        >>> args = LoraArguments.parse(["--out", "runs/lora", "--rank", "4", "--steps", "20"])
        >>> args.rank, args.steps, args.command
        (4, 20, 'ragzip train lora --out runs/lora --rank 4 --steps 20')
        >>> LoraArguments.parse(args.to_argv()) == args
        True
    """

    prog: ClassVar[str] = "ragzip train"
    description: ClassVar[str] = ""

    out: str = field(default="", metadata={
        "help": "Output folder: the artifact, checkpoint-N/ folders, train_log.jsonl, loss.png and MODEL_CARD.md."})
    seed: int = field(default=0, metadata={"help": "Seed of every random draw (data sampling, initialisation, dropout)."})
    threads: int = field(default=2, metadata={"help": "torch CPU threads (the CPU is shared: keep it small)."})
    device: str = field(default="", metadata={"help": "torch device; empty = cuda when present, else cpu."})
    max_minutes: float = field(default=50.0, metadata={
        "help": "Stop training after this many minutes (then evaluate and save as usual)."})
    steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    warmup: float = field(default=0.06, metadata={"help": "Share of training with linear learning-rate warm-up."})
    schedule: Literal["cosine", "linear"] = field(default="cosine", metadata={
        "help": "Learning rate after the warm-up: cosine decay to 10% of --lr over the larger of the step and time "
                "shares used, or linear decay to 0 over the steps."})
    log_every: int = field(default=20, metadata={"help": "Log the loss (console and train_log.jsonl) every N steps."})
    checkpoint_every: int = field(default=0, metadata={
        "help": "Save a checkpoint every N steps (and evaluate, where the trainer has a validation metric); 0: never."})
    keep_checkpoints: int = field(default=1, metadata={
        "help": "Checkpoints kept: the newest N plus the best by the validation metric; 0 keeps all."})
    resume: bool = field(default=False, metadata={
        "help": "Continue from the newest checkpoint in --out (run with the same arguments) instead of starting over."})
    argv: list[str] = field(default_factory=list, repr=False, compare=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        self._check("seed", self.seed >= 0, "must be >= 0")
        self._check("threads", self.threads >= 1, "must be >= 1")
        self._check("max_minutes", self.max_minutes > 0, "must be > 0 (minutes of training)")
        self._check("steps", self.steps >= 0, "must be >= 0")
        self._check("lr", self.lr > 0, "must be > 0")
        self._check("warmup", 0 <= self.warmup < 1, "must lie in [0, 1) (a share of the training)")
        self._check("schedule", self.schedule in SCHEDULES, f"is not one of {', '.join(SCHEDULES)}")
        self._check("log_every", self.log_every >= 1, "must be >= 1")
        self._check("checkpoint_every", self.checkpoint_every >= 0, "must be >= 0 (0: never)")
        self._check("keep_checkpoints", self.keep_checkpoints >= 0, "must be >= 0 (0 keeps all)")

    def _check(self, name: str, ok: bool, must: str) -> None:
        """Raise :class:`ConfigError` naming the option and its value unless ``ok``."""
        if not ok:
            raise ConfigError(f"{_flag(name)} {getattr(self, name)!r} {must}.")

    # --------------------------------------------------------------------------------------------- command line
    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The ``argparse`` parser whose options are this class's fields."""
        parser = argparse.ArgumentParser(prog=cls.prog, description=cls.description, formatter_class=_HelpFormatter)
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or not f.metadata.get("cli", True):
                continue
            kind, _ = _unwrap(hints[f.name])
            default = _default(f)
            names = [_flag(f.name), *f.metadata.get("aliases", ())]
            text = f.metadata.get("help")
            kwargs: dict[str, Any] = {"dest": f.name, "help": text.replace("%", "%%") if text else text}
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
            else:
                origin = typing.get_origin(kind)
                if origin in (list, tuple):
                    kwargs["nargs"] = f.metadata.get("nargs", "+")
                    kind = typing.get_args(kind)[0]
                if typing.get_origin(kind) is Literal:
                    kwargs["choices"] = list(typing.get_args(kind))
                    kind = type(kwargs["choices"][0])
                kwargs["type"] = kind
                for key in ("choices", "metavar"):
                    if key in f.metadata:
                        kwargs[key] = f.metadata[key]
            if f.metadata.get("required"):
                kwargs["required"] = True
            else:
                kwargs["default"] = default
            parser.add_argument(*names, **kwargs)
        return parser

    @classmethod
    def parse(cls: type[A], argv: Sequence[str] | None = None) -> A:
        """Parse ``argv`` (default: ``sys.argv[1:]``); a bad value exits with the parser's usage and the fix."""
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = cls.parser()
        namespace = parser.parse_args(argv)
        try:
            return cls(**vars(namespace), argv=argv)
        except ConfigError as err:
            parser.error(str(err))
            raise  # unreachable: parser.error exits

    def to_argv(self) -> list[str]:
        """Command-line arguments that parse back into an equal object."""
        hints = _hints(type(self))
        argv: list[str] = []
        for f in dataclasses.fields(self):
            if not f.init or not f.metadata.get("cli", True):
                continue
            value = getattr(self, f.name)
            kind, _ = _unwrap(hints[f.name])
            if value == _default(f) and not f.metadata.get("required"):
                continue
            if kind is bool:
                argv.append(_flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
            elif value is None:
                continue
            elif isinstance(value, (list, tuple)):
                if value or f.metadata.get("required"):
                    argv += [_flag(f.name), *map(str, value)]
            else:
                argv += [_flag(f.name), repr(value) if isinstance(value, float) else str(value)]
        return argv

    def to_dict(self) -> dict[str, Any]:
        """The command-line fields as a plain dict (for ``config.json`` and the trainer state)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.init and f.metadata.get("cli", True)}

    @property
    def command(self) -> str:
        """The command that was run: ``prog`` and the arguments as given (shell-quoted)."""
        return f"{self.prog} {shlex.join(self.argv)}".rstrip()


__all__ = ["SCHEDULES", "TrainingArguments"]
