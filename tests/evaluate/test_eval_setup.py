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


@pytest.mark.slow
def test_sampling_is_seeded_per_question_and_reports_pass_at_k(shared_data, tmp_path, capsys):
    """pass@k samples: the same per question whatever the batching, so sharded runs reproduce them."""
    args = ["eval", "--quiet", "--model", "seekrl-tiny-text", "--protocol", "parametric",
            "--benchmarks", str(shared_data / "qa" / "dev_popqa.jsonl"), "--limit", "3", "--temperature", "1.0",
            "--num-samples", "3", "--max-new-tokens-per-turn", "12", "--max-total-tokens", "24"]
    assert main([*args, "--batch-size", "1", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--batch-size", "3", "--out", str(tmp_path / "b")]) == 0
    a = [json.loads(x) for x in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "predictions.jsonl").read_text().splitlines()]
    assert [x["trajectory"]["text"] for x in a] == [x["trajectory"]["text"] for x in b]
    assert all(len(x["samples"]) == 3 and x["pass_at_k"] == max(s["em"] for s in x["samples"]) for x in a)
    # It really samples: another seed draws other texts.
    assert main([*args, "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    c = [json.loads(x) for x in (tmp_path / "c" / "predictions.jsonl").read_text().splitlines()]
    assert [x["trajectory"]["text"] for x in a] != [x["trajectory"]["text"] for x in c]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["results"]["dense"]["average"]["pass_at_k"] >= summary["results"]["dense"]["average"]["em"]
    assert "pass@3" in (tmp_path / "a" / "summary.md").read_text()
    capsys.readouterr()


def test_greedy_with_several_samples_is_refused(shared_data, tmp_path, capsys):
    code = main(["eval", "--model", "seekrl-tiny-text", "--protocol", "parametric", "--num-samples", "4",
                 "--benchmarks", str(shared_data / "qa" / "dev_popqa.jsonl"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--num-samples > 1 needs sampling: set --temperature above 0" in capsys.readouterr().err


def test_image_benchmark_with_a_text_protocol_points_to_gog(shared_data, tmp_path, capsys):
    """OK-VQA loads (images travel in the records) and is refused for a text protocol, naming the fix, before a
    model loads."""
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--protocol", "parametric",
                 "--benchmarks", str(shared_data / "multimodal" / "okvqa_20" / "dev.jsonl"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "benchmark 'okvqa_20' has images" in err and "evaluate it with --protocol gog" in err
