"""Measure an extractive classifier on a HotpotQA-style file: ``ragzip evaluate extractive --data DEV.jsonl``.

The same as ``ragzip train extractive --eval-only``, whose options it takes (``--model``, ``--threshold``, ``--limit``,
``--json``, ``--update-card``, ...): the sentence classifier's precision, recall, F1 and average precision over all,
gold and retrieved paragraphs, a threshold sweep, and the compressor's time per question.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ragzip.plugins.extractive.train import main as train_main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip evaluate extractive ...``; returns the exit code."""
    return train_main(["--eval-only", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
