"""Model cards: one renderer for every trainer's ``MODEL_CARD.md``.

A card is fed by the run's facts (the ``training`` dict a trainer stores in ``config.json``: seed, steps, samples
seen, device, command) and the plugin's own text (what the artifact holds, the data, the recipe, the measured
results, limits). Every card has the same skeleton::

    # title / summary
    ## What this artifact holds
    ## Training          (data, recipe, then the standard line: steps, samples seen, seed, device)
    ## Measured quality
    ## Reproduce         (the command)
    ## ...               (the plugin's further sections, e.g. Limits)
    ## ...               (sections written by hand into the existing card, kept as they are)

Re-rendering a card keeps every ``## `` section of the existing file that the renderer does not write itself, so
a hand-written note (the extractive classifier's set-gate section, an end-to-end measurement) survives. A
``fallback`` section is written only when the existing card has no section under its ``key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD_NAME = "MODEL_CARD.md"

WHAT = "## What this artifact holds"
TRAINING = "## Training"
RESULTS = "## Measured quality"
REPRODUCE = "## Reproduce"


@dataclass
class CardSection:
    """One ``## `` section.

    Args:
        heading: The heading line, with its ``## ``.
        lines: The body, one Markdown line each.
        key: A heading prefix that identifies this section in an existing card (default: the exact heading), for a
            heading that carries a number (``..., 4 KB)``).
        fallback: Write this text only when the existing card has no section matching ``key``; a hand-written one
            is kept instead.
    """

    heading: str
    lines: list[str]
    key: str = ""
    fallback: bool = False

    def matches(self, heading: str) -> bool:
        """Whether ``heading`` (a line of an existing card) is this section's."""
        return heading.startswith(self.key) if self.key else heading == self.heading

    def render(self) -> str:
        """The section's Markdown text."""
        return "\n".join([self.heading, "", *self.lines]).rstrip() + "\n"


def _fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


@dataclass
class ModelCard:
    r"""The content of one ``MODEL_CARD.md``; :meth:`write` renders it beside the artifact.

    Example:
        >>> card = ModelCard.from_training(
        ...     {"seed": 0, "steps": 40, "samples_seen": 640, "device": "cpu", "command": "ragzip train demo --out x"},
        ...     title="demo", summary="A demo.", what=["- Nothing."], data=["- Data: none."],
        ...     results=["- Loss 0.1."])
        >>> print(card.render().splitlines()[11])
        - Steps: 40, 640 examples seen; seed 0; trained on cpu.
        >>> hand = "## Notes\n\nWritten by hand.\n"
        >>> card.render(card.render() + "\n" + hand).endswith(hand)
        True
    """

    title: str
    summary: str
    what: list[str]
    data: list[str]
    results: list[str]
    command: str
    seed: Any
    steps: Any
    samples_seen: Any
    recipe: list[str] = field(default_factory=list)
    sample_unit: str = "examples"
    steps_planned: int | None = None
    best_step: int | None = None
    device: str | None = None
    stopped_early: str = ""
    sections: list[CardSection] = field(default_factory=list)
    replaces: tuple[str, ...] = ()

    @classmethod
    def from_training(cls, training: Mapping[str, Any], **fields: Any) -> ModelCard:
        """A card whose run facts come from a trainer's ``training`` dict.

        That dict is :meth:`Trainer.summary` and the plugin's own keys; ``fields`` give the text and may override
        any fact.
        """
        facts: dict[str, Any] = {
            "command": training.get("command", "?"), "seed": training.get("seed", "?"),
            "steps": training.get("steps", "?"), "samples_seen": training.get("samples_seen", "?"),
            "steps_planned": training.get("steps_planned"), "best_step": training.get("best_step"),
            "device": training.get("device"), "stopped_early": training.get("stopped_early") or "",
        }
        return cls(**{**facts, **fields})

    def steps_line(self) -> str:
        """The standard run line: steps (of planned, best checkpoint), samples seen, seed, device."""
        planned = f" of {self.steps_planned} planned" if self.steps_planned not in (None, self.steps) else ""
        best = f" (best checkpoint: step {self.best_step})" if self.best_step is not None else ""
        device = f"; trained on {self.device}" if self.device else ""
        return (f"- Steps: {self.steps}{planned}{best}, {_fmt_count(self.samples_seen)} {self.sample_unit} seen; "
                f"seed {self.seed}{device}.")

    def generated(self) -> list[CardSection]:
        """The sections this card writes, in order."""
        training = [*self.data, *self.recipe, self.steps_line()]
        if self.stopped_early:
            training.append(f"- Note: {self.stopped_early}.")
        return [
            CardSection(WHAT, list(self.what)),
            CardSection(TRAINING, training),
            CardSection(RESULTS, list(self.results)),
            CardSection(REPRODUCE, ["```", self.command, "```"]),
            *self.sections,
        ]

    def render(self, existing: str | None = None) -> str:
        """The Markdown text; sections of ``existing`` that this card does not write are kept after its own."""
        found = _split_sections(existing) if existing else []
        generated = self.generated()
        blocks = [f"# {self.title}\n\n{self.summary.rstrip()}\n"]
        for section in generated:
            hand = next((text for heading, text in found if section.fallback and section.matches(heading)), None)
            blocks.append(hand if hand is not None else section.render())
        for heading, text in found:
            if not any(s.matches(heading) for s in generated) and heading not in self.replaces:
                blocks.append(text)
        return "\n".join(blocks)

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/MODEL_CARD.md``, keeping the hand-written sections of the card already there."""
        path = Path(folder) / CARD_NAME
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
        path.write_text(self.render(existing), encoding="utf-8")
        return path


def _split_sections(text: str) -> list[tuple[str, str]]:
    """``(heading, text)`` of each ``## `` section of a Markdown card (fenced code is not split)."""
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line.rstrip(), [line.rstrip()]))
        elif sections:
            sections[-1][1].append(line)
    return [(heading, "\n".join(lines).rstrip() + "\n") for heading, lines in sections]


__all__ = ["CARD_NAME", "CardSection", "ModelCard"]
