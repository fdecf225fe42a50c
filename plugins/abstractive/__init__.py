"""``type: abstractive``: RECOMP-style query-focused summaries with selective augmentation (empty = "nothing helps").

The default summarizer is the embedded SmolLM2-135M-Instruct with a LoRA adapter trained by ``ragzip train
abstractive`` on HotpotQA (shipped in ``artifacts/default``); any Hugging Face causal or seq2seq model (RECOMP's
``fangyuan/*_abstractive_compressor`` T5 checkpoints) runs through the same code.
"""

from __future__ import annotations

from ragzip.compressor import register_compressor
from ragzip.plugins.abstractive.compressor import AbstractiveCompressor
from ragzip.plugins.abstractive.config import AbstractiveConfig

__all__ = ["AbstractiveCompressor", "AbstractiveConfig"]

register_compressor(AbstractiveCompressor, budget="max_summary_tokens", aliases={"n": "max_summary_tokens"})
