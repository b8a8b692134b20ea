"""`seekrl eval` setup: benchmark names, attention budgets, and `seekrl eval RECIPE`."""

from __future__ import annotations

import json

import pytest
import yaml

from seekrl.cli import main
from seekrl.evaluate import EvalError, block_topk_for_budget, load_benchmarks, parse_attention, resolve_benchmark


def test_flashrag_names_resolve_to_the_hub_or_a_local_copy(shared_data):
    assert resolve_benchmark("2wiki") == ("2wikimultihopqa", "RUC-NLPIR/FlashRAG_datasets", "2wikimultihopqa")
    # shared/data/qa holds FlashRAG's benchmarks flattened as test_{alias}.jsonl (tq = triviaqa).
    assert resolve_benchmark("triviaqa", str(shared_data / "qa")) == (
        "triviaqa", str(shared_data / "qa" / "test_tq.jsonl"), None)
    path = shared_data / "qa" / "dev_popqa.jsonl"
    assert resolve_benchmark(f"popqa-dev={path}") == ("popqa-dev", str(path), None)
    assert resolve_benchmark(str(shared_data / "multihop" / "questions.jsonl"))[0] == "multihop"
    with pytest.raises(EvalError, match="does not exist"):
        resolve_benchmark("data/missing.jsonl")


def test_load_benchmarks_limits_and_refuses_duplicate_names(shared_data):
    benchmarks = load_benchmarks(["nq", "bamboogle"], limit=5, data_dir=str(shared_data / "qa"))
    assert [(b.name, len(b.records)) for b in benchmarks] == [("nq", 5), ("bamboogle", 5)]
    # NQ long-answer passages are dropped from the golds (seekrl.data), so scores are on short answers.
    assert all(len(a) <= 80 for r in benchmarks[0].records for a in r.answers)
    with pytest.raises(EvalError, match="given twice"):
        load_benchmarks(["tq", "triviaqa"], data_dir=str(shared_data / "qa"))


def test_block_topk_budget_mapping():
    s = block_topk_for_budget(256)
    assert (s.block_size, s.topk, s.local) == (32, 6, 64)
    s = block_topk_for_budget(1024)
    assert (s.block_size, s.topk, s.local) == (64, 12, 256)
    assert parse_attention("dense") == ("dense", None)
    with pytest.raises(EvalError, match="use dense or block_topk:BUDGET"):
        parse_attention("sparse")
    with pytest.raises(EvalError, match="at least 64"):
        parse_attention("block_topk:8")


@pytest.mark.slow
def test_eval_recipe_runs_the_recipe_protocol(shared_data, tmp_path, capsys):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name_or_path": "seekrl-tiny-text", "dtype": "float32"},
        "data": {"eval": [{"path": str(shared_data / "qa" / "test_bamboogle.jsonl")}]},
        "agent": {"protocol": "parametric"},
        "rollout": {"max_new_tokens_per_turn": 16, "max_total_tokens": 32},
        "output": {"dir": str(tmp_path / "run")},
        "eval": {"limit": 3},
    }))
    code = main(["eval", "--quiet", str(recipe), "eval.batch_size=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = tmp_path / "run" / "eval"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "parametric" and summary["benchmarks"] == ["test_bamboogle"]
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    # Parametric mode has no tools, and the token budget of the recipe holds.
    assert all(x["num_searches"] == 0 and x["tokens"]["generated"] <= 32 for x in lines)
    assert summary["results"]["dense"]["average"]["search_rate"] == 0.0
