"""Metadata is copied deeply (never shared with the caller), bad nesting is an InputError, and
provenance is strict JSON even when scores are NaN or infinite."""

from __future__ import annotations

import json
import math
import re

import pytest

from ragzip import InputError, Passage
from ragzip.embed import Embedder
from ragzip.retrieval import FaissRetriever
from ragzip.types import PassageResult, Unit


def test_nested_metadata_is_not_shared_with_the_caller() -> None:
    tags = ["a"]
    meta = {"source": {"tags": tags}}
    passage = Passage("text", metadata=meta)
    tags.append("b")
    meta["source"]["new"] = 1
    assert passage.metadata["source"] == {"tags": ["a"]}


def _deep(levels: int) -> dict:
    node: dict = {}
    root = node
    for _ in range(levels):
        node["x"] = {}
        node = node["x"]
    return root


def test_circular_metadata_is_an_input_error() -> None:
    meta: dict = {"a": 1}
    meta["self"] = meta
    with pytest.raises(InputError, match=re.escape("metadata contains a circular reference")):
        Passage("text", metadata=meta)


def test_deeply_nested_metadata_is_an_input_error_not_a_recursion_error() -> None:
    with pytest.raises(InputError, match=re.escape("metadata is nested more than 64 levels deep")):
        Passage("text", metadata=_deep(5000))


def test_saving_an_index_with_unserialisable_or_nan_metadata_is_an_input_error(tmp_path) -> None:
    embedder = Embedder("hash:16")
    retriever = FaissRetriever.build([Passage("x", id="a", metadata={"score": math.nan})], embedder)
    with pytest.raises(InputError, match=re.escape("passage 'a': metadata is not JSON-serialisable")):
        retriever.save(tmp_path / "index")
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_provenance_is_strict_json_with_nan_and_inf_scores() -> None:
    passage = Passage("a b", id="p", score=math.nan)
    result = PassageResult(passage, "a", "compressed", units=(Unit(0, "a", math.inf, True), Unit(1, "b", math.nan,
                                                                                                   False)),
                           extra={"ratio": -math.inf, "scores": [1.0, math.nan]})
    record = result.provenance()
    text = json.dumps(record, allow_nan=False)  # raises ValueError on a NaN or infinity left in
    assert record["retrieval_score"] is None and record["ratio"] is None and record["scores"] == [1.0, None]
    assert "NaN" not in text and "Infinity" not in text
