"""`seekrl eval` end to end on the shared real data: the tiny format-trained searcher, BM25 over the multihop corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seekrl.cli import main
from seekrl.rewards import cover_exact_match, exact_match, f1_aware, f1_score, normalize_answer

pytestmark = pytest.mark.slow

LIMIT = 10


@pytest.fixture(scope="module")
def searcher_dir(tiny_searcher_dir) -> Path:
    """The format-trained tiny searcher, built once per test session (tests/conftest.py)."""
    return tiny_searcher_dir


def run_eval(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", "--quiet", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def base_args(shared_data, searcher_dir, bm25_dir) -> list[str]:
    """Two benchmarks x 10 questions: FlashRAG HotpotQA (by name, from the local copy) and the multihop file."""
    return ["--model", searcher_dir, "--protocol", "search_r1", "--retriever", bm25_dir,
            "--benchmarks", f"hotpotqa,multihop={shared_data / 'multihop' / 'questions.jsonl'}",
            "--data-dir", shared_data / "qa", "--limit", str(LIMIT), "--batch-size", "5", "--max-total-tokens", "768"]


@pytest.fixture(scope="module")
def first_run(base_args, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["eval", "--quiet", *map(str, base_args), "--out", str(out)]) == 0
    return out


def test_run_writes_every_output(first_run):
    lines = read_lines(first_run / "predictions.jsonl")
    assert len(lines) == 2 * LIMIT
    assert [x["benchmark"] for x in lines] == ["hotpotqa"] * LIMIT + ["multihop"] * LIMIT
    required = {"prediction", "golds", "em", "f1", "subem", "num_searches", "num_turns", "decision", "tokens",
                "eflops", "trajectory"}
    assert all(required <= set(x) for x in lines)
    # The searcher really searched the BM25 index: observations carry passages from the multihop corpus.
    searched = [x for x in lines if x["num_searches"] > 0]
    assert searched and all("<information>Doc 1(Title:" in x["trajectory"]["text"] for x in searched)
    assert all(x["eflops"] > 0 and x["tokens"]["prompt"] > 100 for x in lines)

    summary = json.loads((first_run / "summary.json").read_text())
    assert summary["benchmarks"] == ["hotpotqa", "multihop"]
    assert summary["sources"]["hotpotqa"].endswith("qa/test_hotpotqa.jsonl")
    table = (first_run / "summary.md").read_text()
    assert "| hotpotqa | 10 |" in table and "| multihop | 10 |" in table and "| **average** | 20 |" in table
    for name in ("em_per_benchmark.png", "search_rate_per_benchmark.png"):
        from PIL import Image

        with Image.open(first_run / name) as image:
            assert image.format == "PNG" and image.size[0] >= 600
    # One attention setting: no frontier plot.
    assert not (first_run / "accuracy_vs_eflops.png").exists()


def test_summary_equals_recomputation_from_predictions(first_run):
    lines = read_lines(first_run / "predictions.jsonl")
    summary = json.loads((first_run / "summary.json").read_text())["results"]["dense"]
    per_benchmark = {}
    for name in ("hotpotqa", "multihop"):
        rows = [x for x in lines if x["benchmark"] == name]
        expected = {
            "em": sum(exact_match(x["prediction"], x["golds"]) for x in rows) / len(rows),
            "f1": sum(f1_score(x["prediction"], x["golds"]) for x in rows) / len(rows),
            "subem": sum(cover_exact_match(x["prediction"], x["golds"]) for x in rows) / len(rows),
            "search_rate": sum(x["num_searches"] > 0 for x in rows) / len(rows),
            "eflops": sum(x["eflops"] for x in rows) / len(rows),
        }
        per_benchmark[name] = expected
        for key, value in expected.items():
            assert summary["benchmarks"][name][key] == pytest.approx(value), (name, key)
    for key in ("em", "f1", "search_rate"):
        macro = (per_benchmark["hotpotqa"][key] + per_benchmark["multihop"][key]) / 2
        assert summary["average"][key] == pytest.approx(macro)


def test_rerun_completes_only_the_missing_half(first_run, base_args, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(first_run, out)
    original = (first_run / "predictions.jsonl").read_text().splitlines()
    kept = original[::2]
    (out / "predictions.jsonl").write_text("\n".join(kept) + "\n")

    code, stdout, err = run_eval(capsys, *base_args, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions_run"] == len(original) - len(kept) == LIMIT
    resumed = (out / "predictions.jsonl").read_text().splitlines()
    assert len(resumed) == len(original)
    # Kept lines are untouched; the rerun questions are the deleted ones, in input order.
    assert set(kept) <= set(resumed)
    assert [json.loads(x)["id"] for x in resumed] == [json.loads(x)["id"] for x in original]
    # Greedy decoding: the rerun questions get the same predictions as the first time.
    assert [json.loads(x)["prediction"] for x in resumed] == [json.loads(x)["prediction"] for x in original]


def test_rerun_with_another_model_into_same_out_is_refused(first_run, base_args, tmp_path, capsys, tiny_text_dir):
    out = tmp_path / "other"
    shutil.copytree(first_run, out)
    args = list(base_args)
    args[args.index("--model") + 1] = tiny_text_dir
    code, _, err = run_eval(capsys, *args, "--out", out)
    assert code == 2
    assert err.startswith("error: ") and "different model" in err and "another --out" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_benchmark_fails_before_the_model_loads(tmp_path, bm25_dir, capsys):
    # A model that does not exist: any attempt to load it would fail with a different message.
    code, _, err = run_eval(capsys, "--model", tmp_path / "no-such-model", "--benchmarks", "nq,hotpotqq",
                            "--retriever", bm25_dir, "--out", tmp_path / "out")
    assert code == 2
    assert err.strip() == ("error: unknown benchmark 'hotpotqq' (did you mean 'hotpotqa'?). Give a FlashRAG name "
                           "(nq, triviaqa, tq, popqa, hotpotqa, 2wikimultihopqa, 2wiki, musique, bamboogle), a "
                           "local jsonl/json/parquet file, a Hub id owner/name, or label=PATH")
    assert not (tmp_path / "out").exists()


def test_dataset_without_question_fails_before_the_model_loads(tmp_path, bm25_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "query": "Who wrote Hamlet?", "golden_answers": ["Shakespeare"]}) + "\n")
    code, _, err = run_eval(capsys, "--model", tmp_path / "no-such-model", "--benchmarks", bad,
                            "--retriever", bm25_dir, "--out", tmp_path / "out")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: benchmark 'bad': {bad}: row 0: missing field 'question'")
    assert not (tmp_path / "out").exists()


def test_search_protocol_without_retriever_is_refused(tmp_path, shared_data, capsys):
    code, _, err = run_eval(capsys, "--model", tmp_path / "no-such-model", "--protocol", "search_r1",
                            "--benchmarks", shared_data / "qa" / "dev_nq.jsonl", "--out", tmp_path / "out")
    assert code == 2
    assert "protocol 'search_r1' searches: give --retriever URL" in err


def test_scripted_reader_em_equals_retriever_answer_recall(shared_data, bm25_index, bm25_server, tmp_path, capsys):
    """Retrieval (over HTTP), protocol and scoring agree: the oracle reader's EM is the retriever's answer recall."""
    from seekrl.data import load_qa

    topk = 3
    questions = shared_data / "multihop" / "questions.jsonl"
    code, _, err = run_eval(capsys, "--model", "scripted:reader", "--benchmarks", questions,
                            "--retriever", bm25_server.url, "--topk", topk, "--out", tmp_path / "out",
                            "--batch-size", 64)
    assert code == 0, err
    records = load_qa(questions)
    rows, _ = bm25_index.search([r.question for r in records], topk)
    hits = 0
    for record, row_list in zip(records, rows.tolist(), strict=True):
        passages = [normalize_answer(bm25_index.store.doc(row)["contents"]) for row in row_list if row >= 0]
        golds = [normalize_answer(g) for g in record.answers]
        hits += any(g and g in p for g in golds for p in passages)
    recall = hits / len(records)

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    multihop = summary["results"]["dense"]["benchmarks"]["multihop"]
    assert multihop["n"] == len(records) == 441
    assert multihop["em"] == pytest.approx(recall)
    assert multihop["search_rate"] == 1.0
    # BM25 top-3 over the multi-hop corpus finds the answer string for some questions, not all.
    assert 0.3 < recall < 0.95


def test_attention_budgets_and_awareness_probe(shared_data, searcher_dir, bm25_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_eval(
        capsys, "--model", searcher_dir, "--protocol", "search_r1", "--retriever", bm25_dir,
        "--benchmarks", f"multihop={shared_data / 'multihop' / 'questions.jsonl'}", "--limit", 3,
        "--attention", "dense,block_topk:64", "--awareness-probe", 2, "--awareness-threshold", 0.5,
        "--max-total-tokens", 768, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    # Block top-k attends at most ~64 KV tokens per step instead of the whole context: cheaper per token.
    lines = read_lines(out / "predictions.jsonl")
    sparse_lines = [x for x in lines if x["attention"] == "block_topk:64"]
    assert all(x["eflops"] < x["eflops_dense"] for x in sparse_lines)
    assert (out / "accuracy_vs_eflops.png").stat().st_size > 10_000

    # F1_aware from the probe labels, as seekrl.rewards defines it; the definition is printed with the result.
    dense_lines = [x for x in lines if x["attention"] == "dense"]
    assert all(0.0 <= x["solve_rate"] <= 1.0 and x["aware_label"] in ("yes", "no") for x in dense_lines)
    expected = f1_aware([x["aware_decision"] for x in dense_lines], [x["aware_label"] for x in dense_lines])
    assert summary["results"]["dense"]["benchmarks"]["multihop"]["f1_aware"] == pytest.approx(expected)
    assert "F1_aware: the oracle label" in stdout and "k=2 samples" in summary["f1_aware_definition"]
    # The label is a property of the model, not of the attention budget: both passes probe alike.
    assert [x["solve_rate"] for x in dense_lines] == [x["solve_rate"] for x in sparse_lines]


def test_two_ray_workers_give_the_same_predictions_as_one(shared_data, searcher_dir, bm25_dir, tmp_path,
                                                          capsys):
    import ray

    args = ["--model", searcher_dir, "--protocol", "search_r1", "--retriever", bm25_dir,
            "--benchmarks", f"multihop={shared_data / 'multihop' / 'questions.jsonl'}", "--limit", 6,
            "--batch-size", 2, "--max-total-tokens", 768]
    assert run_eval(capsys, *args, "--out", tmp_path / "one")[0] == 0
    code, _, err = run_eval(capsys, *args, "--out", tmp_path / "two", "--num-workers", 2)
    assert code == 0, err
    assert not ray.is_initialized()
    one = (tmp_path / "one" / "predictions.jsonl").read_text()
    two = (tmp_path / "two" / "predictions.jsonl").read_text()
    assert len(one.splitlines()) == 6
    assert one == two
