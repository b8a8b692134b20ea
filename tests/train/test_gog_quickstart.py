"""`seekrl gog-quickstart` end to end at toy size through the real CLI: world, SFT, levels, GRPO on Ray, and the
SFT-start vs trained report on held-out composites."""

from __future__ import annotations

import json

import pytest

from seekrl.cli import main

pytestmark = pytest.mark.slow


def test_gog_quickstart_reports_sft_start_and_trained(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(["gog-quickstart", "--seed", "1", "--out", str(out),
                 "gog.world_num_train=2", "gog.world_num_heldout=1", "gog.world_tile=56", "gog.sft.epochs=1",
                 "gog.sft.bare_reading_drills=8", "gog.sft.reading_drills=4",
                 "gog.levels.samples=2", "gog.levels.train_on=all", "grpo.max_steps=1",
                 "grpo.per_device_train_batch_size=8", "rollout.max_total_tokens=128"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((out / "gog_quickstart_results.json").read_text())
    assert results["seed"] == 1 and results["n_heldout"] == 8  # 1 composite x 4 tiles x 2 questions
    for key in ("sft_start", "trained"):
        m = results[key]
        assert m["n"] == 8 and 0.0 <= m["em"] <= 1.0 and 0.0 <= m["gaze_share"] <= 1.0
        assert m["gaze_rate"] <= m["search_rate"]
        # 4 name and 4 origin questions: the kinds' accuracies average to the whole.
        assert set(m["em_by_kind"]) == {"name", "origin"}
        assert sum(m["em_by_kind"].values()) / 2 == pytest.approx(m["em"])
    # The same, sampled: 4 rollouts per question at the rollout temperature (the recipe's 1.0).
    sampled = results["sampled"]
    assert sampled["samples"] == 4 and sampled["temperature"] == 1.0
    assert sampled["sft_start"]["n"] == sampled["trained"]["n"] == 32
    assert sum(results["levels"].values()) == 16  # 2 composites x 8 questions
    assert results["train_probe"]["n"] == 16 and set(results["train_probe"]) == {"n", "sft_start", "trained"}
    assert "SFT start" in captured.out and "trained" in captured.out and "sampled: 4 rollouts" in captured.out
    assert (out / "training_curves.png").stat().st_size > 0
    # The SFT stage ran its bare reading drills alone first, then mixed the full-prompt drills in.
    sft_data = json.loads((out / "stages" / "sft" / "sft_data.json").read_text())
    assert sft_data["bare_reading_drills"] == 8 and sft_data["reading_drills"] == 4
    bare = json.loads((out / "stages" / "sft" / "reading" / "log_history.json").read_text())
    assert bare[-1]["step"] == 1  # 8 drills, global batch 8
    mixed = json.loads((out / "stages" / "sft" / "log_history.json").read_text())
    assert mixed[-1]["step"] == (sft_data["kept"] + 4 + 7) // 8
    history = json.loads((out / "stages" / "grpo" / "log_history.json").read_text())
    assert [h["step"] for h in history if "reward" in h] == [1]
