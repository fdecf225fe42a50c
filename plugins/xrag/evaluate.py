"""Measure an xRAG projector: ``ragzip evaluate xrag --artifact DIR`` (the same as ``ragzip train xrag eval``).

Reconstruction F1 on held-out passages, QA accuracy and F1 on held-out SQuAD articles and HotpotQA dev, and TTFT; the
options and the measurement live beside the trainer, which shares the held-out split
(:func:`ragzip.plugins.xrag.train.build_eval_parser`, :func:`ragzip.plugins.xrag.train.evaluate`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ragzip.plugins.xrag.train import main as train_main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ragzip evaluate xrag ...``; returns the exit code."""
    return train_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
