"""``ragzip bench``: method specs, the DESIGN §6 JSON contract, skipped peers, equal budgets, the output files.

The full runs use a tiny Llama built from a config with the SmolLM2 tokenizer and the model-free hash embedder.
"""

from __future__ import annotations

import argparse
import json
import re

import pytest

from ragzip import bench
from ragzip.bench import CONTRACT_KEYS, parse_method, parse_methods, run_bench
from ragzip.bench.peers import PEERS, PeerInfo
from ragzip.compressor import registered_compressors
from ragzip.errors import ConfigError

RECORDS = [
    {"id": f"q{i}", "question": f"Which city is home to landmark {i}?", "answer": city,
     "context": [[f"Landmark {i}", [f"Landmark {i} stands in {city}.", f" It was built in {1800 + i}."]],
                 [f"Other {i}", [f"Other {i} is a village near {other}.", " It has a church."]]],
     "supporting_facts": [[f"Landmark {i}", 0]]}
    for i, (city, other) in enumerate([("Paris", "Lyon"), ("Rome", "Milan"), ("Berlin", "Bonn"), ("Madrid", "Leon")])
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny_hotpot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generator(tiny_llama_generator):
    return tiny_llama_generator


@pytest.fixture(scope="module")
def embedder():
    from ragzip.embed import Embedder

    return Embedder("hash:128")


# ------------------------------------------------------------------------------------------------------ method specs
@pytest.mark.parametrize(
    ("text", "name", "kind", "options", "budgeted"),
    [
        ("no_context", "no_context", "no_context", {}, False),
        ("none", "none", "ragzip", {}, False),
        ("truncate", "truncate", "ragzip", {}, True),
        ("truncate:256", "truncate", "ragzip", {"max_tokens": 256}, False),
        ("truncate:n64", "truncate", "ragzip", {"max_tokens": 64}, False),
        ("truncate:max_tokens=32", "truncate", "ragzip", {"max_tokens": 32}, False),
        ("lc_embeddings_filter", "lc_embeddings_filter", "peer", {}, False),
        ("lc_embeddings_filter:k3", "lc_embeddings_filter", "peer", {"k": 3}, False),
        ("lc_embeddings_filter:k=3,similarity_threshold=0.2", "lc_embeddings_filter", "peer",
         {"k": 3, "similarity_threshold": 0.2}, False),
        ("li_sentence_optimizer:p0.3", "li_sentence_optimizer", "peer", {"percentile_cutoff": 0.3}, False),
        ("longllmlingua", "longllmlingua", "peer", {}, True),
        ("longllmlingua:r0.3", "longllmlingua", "peer", {"rate": 0.3}, False),
        ("longllmlingua:n200", "longllmlingua", "peer", {"target_token": 200}, False),
    ],
)
def test_parse_method(text, name, kind, options, budgeted):
    spec = parse_method(text)
    assert (spec.label, spec.name, spec.kind, spec.options, spec.budgeted) == (text, name, kind, options, budgeted)


@pytest.mark.parametrize(
    ("text", "options"),
    [("extractive:t0.3", {"threshold": 0.3}), ("extractive:threshold=0.7", {"threshold": 0.7}),
     ("refrag:k8", {"k": 8}), ("refrag:p0.25", {"p": 0.25})],
)
def test_parse_plugin_variants(text, options):
    name = text.split(":")[0]
    if name not in registered_compressors():
        pytest.skip(f"plugin {name} is not registered in this build")
    spec = parse_method(text)
    assert spec.kind == "ragzip" and spec.options == options and spec.config == {"type": name, **options}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown method 'bogus' in --methods. Valid methods: no_context, none, truncate"),
        ("truncat", "unknown method 'truncat' in --methods. Did you mean 'truncate'?"),
        ("truncate:maxtokens=3", "unknown key 'maxtokens' in method 'truncate:maxtokens=3'. Did you mean 'max_tokens'?"),
        ("truncate:z9", "method 'truncate:z9': 'z' is not a short alias or a config field of 'truncate'."),
        ("truncate:fast", "method 'truncate:fast': variant 'fast' is neither key=value pairs nor <alias><number>."),
        ("lc_embeddings_filter:k=0", "lc_embeddings_filter.k"),
        ("no_context:1", "method 'no_context:1': no_context takes no variant."),
        ("none,none", "method 'none' is listed twice in --methods; list each once."),
        ("none,,truncate", "empty method name in --methods"),
    ],
)
def test_parse_method_errors(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_methods(text)


def test_custom_methods_from_config():
    custom = {"strict": {"type": "truncate", "max_tokens": 7}}
    specs = parse_methods("none,strict", custom)
    assert specs[1].kind == "ragzip" and specs[1].config == custom["strict"]
    assert "strict" in bench.valid_method_names(custom)


def test_bench_config_file(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("methods:\n  cut: {type: truncate, max_tokens: 5}\ngenerator:\n  max_new_tokens: 8\n"
                    "retriever:\n  embedder: hash:64\n  top_k: 3\n", encoding="utf-8")
    cfg = bench.load_bench_config(path)
    assert cfg == {"methods": {"cut": {"type": "truncate", "max_tokens": 5}}, "embedder": "hash:64", "top_k": 3,
                   "generator": {"max_new_tokens": 8}}
    path.write_text("method: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("unknown key 'method' in bench config bench.yaml. Did you mean "
                                                    "'methods'?")):
        bench.load_bench_config(path)
    path.write_text("methods:\n  bad: {type: truncate, max_tokns: 5}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("bench.yaml: method 'bad': unknown key 'max_tokns'")):
        bench.load_bench_config(path)


# ---------------------------------------------------------------------------------------------------------- full run
@pytest.fixture()
def no_llmlingua(monkeypatch):
    """Pretend llmlingua is not installed: the bench must report the peer as skipped."""
    monkeypatch.setitem(PEERS, "longllmlingua", PeerInfo(("no_such_llmlingua_xyz",), "peers", "test"))


def test_run_bench_contract(data_file, generator, embedder, tmp_path, no_llmlingua, monkeypatch):
    registered, absent = bench._plugin_names()
    monkeypatch.setattr(bench.methods, "_plugin_names", lambda: (registered, [*absent, "ghostzip"]))
    out = tmp_path / "res" / "result.json"
    methods = "no_context,none,truncate,truncate:8,cut,longllmlingua,ghostzip"
    result = run_bench(data_file, methods, limit=3, top_k=2, seed=1, generator=generator, embedder=embedder,
                       config={"methods": {"cut": {"type": "truncate", "max_tokens": 5}}}, out=out, progress=False,
                       command="ragzip bench --test")

    # DESIGN §6 keys, exactly.
    assert {"data", "n", "retrieval", "generator", "methods"} <= set(result)
    assert result["n"] == 3 and result["data"] == str(data_file)
    assert {"mode", "top_k", "recall_at_k"} <= set(result["retrieval"])
    assert result["retrieval"]["mode"] == "faiss" and result["retrieval"]["top_k"] == 2
    assert 0.0 <= result["retrieval"]["recall_at_k"] <= 1.0
    assert result["retrieval"]["corpus_passages"] == 8
    assert result["generator"] == "embedded:smollm2-135m"
    assert list(result["methods"]) == ["no_context", "none", "truncate", "truncate:8", "cut"]  # the order asked for
    for name, m in result["methods"].items():
        assert set(CONTRACT_KEYS) <= set(m), name
        assert m["n"] == 3
        assert 0.0 <= m["acc"] <= 1.0 and 0.0 <= m["f1"] <= 1.0
        assert m["total_s"] >= m["ttft_s"] >= m["compress_s"] >= 0.0
        assert m["peak_rss_mb"] > 0

    # Skipped methods are reported with the reason, never silently dropped.
    assert set(result["skipped"]) == {"longllmlingua", "ghostzip"}
    assert "pip install 'ragzip[peers]'" in result["skipped"]["longllmlingua"]
    assert "ghostzip" in result["skipped"]["ghostzip"] and result["failed"] == []

    m = result["methods"]
    assert m["no_context"]["context_tokens"] == 0 and m["no_context"]["compression_ratio"] is None
    assert m["none"]["compression_ratio"] == 1.0
    assert m["truncate:8"]["context_tokens"] <= 8
    # Plain truncate takes the mean budget of the first ragzip compressor ("cut", 5 tokens).
    assert result["budget"] == {"reference": "cut", "tokens": 5}
    assert m["truncate"]["budget_from"] == "cut" and m["truncate"]["config"]["max_tokens"] == 5
    assert m["truncate"]["context_tokens"] == pytest.approx(m["cut"]["context_tokens"])

    # The files beside the JSON.
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved == result
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 * 5
    first = lines[0]
    assert {"id", "method", "prediction", "golds", "acc", "em", "f1", "tokens_before", "tokens_after", "compress_s",
            "ttft_s", "total_s", "passages", "recall"} <= set(first)
    assert {"passage_id", "decision", "title"} <= set(first["passages"][0])
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| truncate:8 |" in table and "`longllmlingua`: not installed" in table
    assert "Command: `ragzip bench --test`" in table
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_run_bench_given_setting_batched(data_file, generator, embedder):
    result = run_bench(data_file, ["none", "no_context"], limit=2, setting="given", generator=generator,
                       embedder=embedder, batch_size=2, warmup=False, progress=False)
    assert result["retrieval"]["mode"] == "given" and result["retrieval"]["top_k"] is None
    assert result["retrieval"]["recall_at_k"] == 1.0
    assert result["methods"]["none"]["n"] == 2
    assert result["timing"]["per_question"] is False


def test_batched_run_times_ttft_alone_on_the_first_questions(data_file, generator, embedder, tmp_path):
    out = tmp_path / "b.json"
    result = run_bench(data_file, ["none"], limit=3, setting="given", generator=generator, embedder=embedder,
                       batch_size=3, ttft_questions=2, warmup=False, progress=False, out=out)
    none = result["methods"]["none"]
    assert result["timing"]["ttft_questions"] == 2 and none["ttft_n"] == 2
    records = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [r["ttft_s"] is not None for r in records] == [True, True, False]
    assert all(r["batch_ttft_s"] > 0 for r in records)
    probed = [r["gen_ttft_s"] for r in records[:2]]
    assert none["gen_ttft_s"] == pytest.approx(sum(probed) / 2, abs=1e-5)
    assert none["wall_per_question_s"] > 0 and none["total_s"] == none["wall_per_question_s"]
    assert all(r["total_s"] is None and r["batch_total_s"] > 0 for r in records)
    assert "each run alone to its first token" in out.with_suffix(".md").read_text()
    with pytest.raises(ConfigError, match="ttft_questions"):
        run_bench(data_file, "none", ttft_questions=-1, generator=object())


def test_plain_truncate_without_reference_is_skipped(data_file, generator, embedder):
    result = run_bench(data_file, "none,truncate", limit=1, setting="given", generator=generator, embedder=embedder,
                       progress=False)
    assert list(result["methods"]) == ["none"]
    assert result["skipped"]["truncate"].startswith("no reference method ran to take the equal budget from")
    # An explicit budget (to add rows to an earlier run at its budget) needs no reference.
    result = run_bench(data_file, "truncate", limit=1, setting="given", generator=generator, embedder=embedder,
                       progress=False, warmup=False, budget=6)
    assert result["budget"] == {"reference": "--budget", "tokens": 6}
    assert result["methods"]["truncate"]["budget_from"] == "--budget"
    assert result["methods"]["truncate"]["context_tokens"] == 6
    with pytest.raises(ConfigError, match=re.escape("budget = -1 must be a non-negative integer (tokens), e.g. 300.")):
        run_bench(data_file, "truncate", budget=-1, generator=object())


def test_run_bench_rejects_bad_settings_before_loading(data_file):
    with pytest.raises(ConfigError, match=re.escape("setting 'bm25' is not valid; choose faiss or given.")):
        run_bench(data_file, "none", setting="bm25", generator=object())
    with pytest.raises(ConfigError, match=re.escape("top_k = 0 must be a positive integer, e.g. 5.")):
        run_bench(data_file, "none", top_k=0, generator=object())


def test_cli_arguments_and_error_exit(data_file, capsys, tmp_path):
    parser = argparse.ArgumentParser(prog="ragzip bench")
    bench.add_arguments(parser)
    args = parser.parse_args(["--data", str(data_file), "--methods", "none,bogus", "--out", str(tmp_path / "r.json")])
    assert (args.limit, args.setting, args.seed, args.batch_size) == (100, "faiss", 0, 1)
    assert bench.run(args) == 2
    assert "ragzip bench: error: unknown method 'bogus'" in capsys.readouterr().err


def test_index_cache_is_reused_and_keyed_by_content(data_file, embedder, tmp_path):
    from ragzip.data import corpus, load_qa

    passages = corpus(load_qa(data_file))
    first, cached = bench._faiss_retriever(passages, embedder, 2, tmp_path, "tiny")
    assert not cached
    again, cached = bench._faiss_retriever(passages, embedder, 2, tmp_path, "tiny")
    assert cached and [p.id for p in again.passages] == [p.id for p in first.passages]
    assert [p.id for p in again.search("landmark 2", 2)] == [p.id for p in first.search("landmark 2", 2)]
    _, cached = bench._faiss_retriever(passages[:-1], embedder, 2, tmp_path, "tiny")  # other content: other key
    assert not cached and len(list(tmp_path.iterdir())) == 2
