"""`seekrl eval --protocol gog` on the real multimodal data: FVQA-layout parquet (InfoSeek) and OK-VQA jsonl with
its images, the image knowledge base of their images, the tiny format-trained VLM."""

from __future__ import annotations

import json

import pytest

from seekrl.cli import main
from seekrl.rewards import cover_exact_match, exact_match

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_kb(shared_data, tmp_path_factory):
    from seekrl.envs.image_kb import build_image_index
    from seekrl.envs.image_world import shared_images, write_kb_files

    root = tmp_path_factory.mktemp("shared-kb")
    images, meta = write_kb_files(shared_images(shared_data), root / "kb")
    build_image_index(images, meta, root / "index")
    return root / "index"


def run_eval(capsys, *args):
    code = main(["eval", "--quiet", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_gog_eval_reports_accuracy_and_search_split(shared_data, shared_kb, tiny_gazer_dir, tmp_path, capsys):
    mm = shared_data / "multimodal"
    out = tmp_path / "eval"
    code, stdout, err = run_eval(capsys, "--model", tiny_gazer_dir, "--protocol", "gog", "--image-retriever", shared_kb,
                                 "--benchmarks", f"infoseek={mm / 'infoseek_mini_5.parquet'},"
                                                 f"okvqa={mm / 'okvqa_20' / 'dev.jsonl'}",
                                 "--limit", "6", "--batch-size", "3", "--max-new-tokens-per-turn", "64",
                                 "--max-total-tokens", "256", "--max-turns", "2", "--out", out)
    assert code == 0, err
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["benchmark"] for x in lines] == ["infoseek"] * 5 + ["okvqa"] * 6
    for x in lines:
        assert x["em"] == exact_match(x["prediction"], x["golds"])
        assert x["subem"] == cover_exact_match(x["prediction"], x["golds"])
        assert x["num_searches"] == x["num_text_searches"] + x["num_glances"] + x["num_gazes"]
        assert x["images_shown"] == 1 + x["num_gazes"] and len(x["gazes"]) == x["num_gazes"]
        assert x["num_images"] == 1 and x["eflops"] > 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("infoseek", "okvqa"):
        m = summary["results"]["dense"]["benchmarks"][name]
        mine = [x for x in lines if x["benchmark"] == name]
        assert m["em"] == pytest.approx(sum(x["em"] for x in mine) / len(mine))
        assert m["gaze_rate"] == pytest.approx(sum(x["num_gazes"] > 0 for x in mine) / len(mine))
        assert m["glance_rate"] == pytest.approx(sum(x["num_glances"] > 0 for x in mine) / len(mine))
        calls = sum(x["num_searches"] for x in mine)
        assert m["gaze_share"] == pytest.approx(sum(x["num_gazes"] for x in mine) / calls if calls else 0.0)
    # Every image action in a trajectory's text that ran is counted by its kind.
    for x in lines:
        assert x["trajectory"]["text"].count("</gaze>") >= x["num_gazes"]
        assert x["trajectory"]["text"].count("</glance>") >= x["num_glances"]
    table = (out / "summary.md").read_text()
    assert "| glance |" in table and "| gaze share |" in table


def test_gog_eval_errors_before_the_model_loads(shared_data, bm25_dir, shared_kb, tmp_path, capsys):
    mm = shared_data / "multimodal" / "infoseek_mini_5.parquet"
    no_model = tmp_path / "no-such-model"
    code, _, err = run_eval(capsys, "--model", no_model, "--protocol", "gog", "--benchmarks", mm, "--out", tmp_path / "a")
    assert code == 2 and "protocol 'gog' searches images: give --image-retriever" in err
    code, _, err = run_eval(capsys, "--model", no_model, "--protocol", "gog", "--image-retriever", bm25_dir,
                            "--benchmarks", mm, "--out", tmp_path / "b")
    assert code == 2 and "is a bm25 index, not an image index" in err
    code, _, err = run_eval(capsys, "--model", no_model, "--protocol", "gog", "--image-retriever", shared_kb,
                            "--benchmarks", shared_data / "qa" / "dev_nq.jsonl", "--limit", "3", "--out", tmp_path / "c")
    assert code == 2 and "questions have no image" in err
    code, _, err = run_eval(capsys, "--model", no_model, "--protocol", "search_r1", "--retriever", bm25_dir,
                            "--benchmarks", mm, "--out", tmp_path / "d")
    assert code == 2 and "evaluate it with --protocol gog" in err
