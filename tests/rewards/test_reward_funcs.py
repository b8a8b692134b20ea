"""Each reward on hand-built completions, AdaSearch labels and F1_aware, and recipe binding."""

from __future__ import annotations

import pytest

from seekrl.config import RewardSpec, load_recipe_dict
from seekrl.rewards import (
    aware_confusion,
    build_reward_funcs,
    decision_reward,
    em_reward,
    f1_aware,
    f1_reward,
    gog_reward,
    knowledge_bonus_reward,
    search_penalty_reward,
    solve_rate_labels,
    subem_reward,
)

OBS = "<information>Doc 1(Title: Ulm) Einstein was born in Ulm.</information>"
SEARCH = "<think>look it up</think><search>Einstein birthplace</search>" + OBS
GOLDS = {"golden_answers": [["Ulm", "Ulm, Germany"]] * 6}
# 0: correct, no search; 1: correct, 1 search; 2: correct, 3 searches; 3: wrong, 1 search; 4: wrong, no search;
# 5: correct answer but text after it (bad format).
COMPLETIONS = [
    "<think>I know this</think><answer>Ulm</answer>",
    SEARCH + "<answer>Ulm, Germany</answer>",
    SEARCH * 3 + "<answer>ulm</answer>",
    SEARCH + "<answer>Munich</answer>",
    "<answer>Munich, Bavaria</answer>",
    "<answer>Ulm</answer> I am sure.",
]


def _rounded(values):
    return [None if v is None else round(v, 6) for v in values]


def test_accuracy_rewards():
    assert em_reward(COMPLETIONS, **GOLDS) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert subem_reward(
        ["<answer>born in Ulm, Germany</answer>", "<answer>U</answer>"], golden_answers=["Ulm"] * 2
    ) == [1.0, 0.0]
    # "munich bavaria" vs "ulm germany": no overlap; "ulm germany" vs "ulm": P = 1/2, R = 1.
    assert _rounded(
        f1_reward(["<answer>Munich, Bavaria</answer>", "<answer>Ulm Germany</answer>"], golden_answers=[["Ulm"]] * 2)
    ) == [0.0, 0.666667]


def test_rows_without_gold_are_unscored_and_missing_column_is_an_error():
    assert em_reward(["<answer>x</answer>"] * 2, golden_answers=[[], None]) == [None, None]
    assert em_reward(["<answer>x</answer>"], answers=[["x"]]) == [1.0]
    # `answer` is the rollout's field for the model's own answer, never a gold column.
    with pytest.raises(ValueError, match="needs a 'golden_answers' column"):
        em_reward(["<answer>x</answer>"], answer=["x"])
    with pytest.raises(ValueError, match="needs a 'golden_answers' column .* got columns \\['question'\\]"):
        em_reward(["<answer>x</answer>"], question=["q?"], trainer_state=None)
    with pytest.raises(ValueError, match="has 1 values for 2 completions"):
        em_reward(["a", "b"], golden_answers=[["x"]])


def test_search_penalty_reward_mmsearch_r1():
    # acc * (1 - 0.1 if searched) * 0.9 + 0.1 * format: 1.0, 0.91, 0.91, 0.1, 0.1, and 0.9 for a correct answer
    # in a bad format.
    assert _rounded(search_penalty_reward(COMPLETIONS, **GOLDS)) == [1.0, 0.91, 0.91, 0.1, 0.1, 0.9]
    # The rollout's own count wins over the text: row 0 reported 2 searches, row 1 None falls back to the text.
    rewards = search_penalty_reward(COMPLETIONS[:2], golden_answers=GOLDS["golden_answers"][:2], num_searches=[2, None])
    assert _rounded(rewards) == [0.91, 0.91]
    assert _rounded(
        search_penalty_reward(
            COMPLETIONS[:2], penalty=0.5, format_weight=0.0, **{"golden_answers": GOLDS["golden_answers"][:2]}
        )
    ) == [1.0, 0.5]


def test_knowledge_bonus_reward_ikea():
    # correct: 1 + 0.6 * (1 - min(n, 3) / 3) -> 1.6 (n=0), 1.4 (n=1), 1.0 (n=3); wrong and searched 0.05;
    # wrong without search 0; bad format -1.
    assert _rounded(knowledge_bonus_reward(COMPLETIONS, **GOLDS)) == [1.6, 1.4, 1.0, 0.05, 0.0, -1.0]
    two = SEARCH * 2 + "<answer>Ulm</answer>"
    assert _rounded(knowledge_bonus_reward([two], golden_answers=[["Ulm"]])) == [1.2]


def test_gog_reward():
    gaze = (
        "<glance></glance><information>a bird</information>"
        "<gaze>[100, 100, 500, 600]</gaze><information>x</information>"
    )
    completions = [gaze + "<answer>Cardinal</answer>", gaze + "<answer>robin</answer>", "<answer>cardinal</answer>!"]
    assert _rounded(gog_reward(completions, golden_answers=[["cardinal"]] * 3)) == [1.0, 0.1, 0.9]
    assert _rounded(gog_reward(completions, golden_answers=[["cardinal"]] * 3, format_weight=0.3)) == [1.0, 0.3, 0.7]
    with pytest.raises(ValueError, match="format_weight must be between 0 and 1"):
        gog_reward([], format_weight=1.5)


def test_decision_reward():
    completions = [
        "<assessment>yes</assessment><answer>a</answer>",
        "<assessment>no</assessment>",
        "<assessment>no</assessment>",
        "nothing",
    ]
    labels = ["yes", "yes", None, "no"]
    assert decision_reward(completions, decision_label=labels) == [1.0, 0.0, None, 0.0]
    # The rollout's parsed decision, when present, is what is scored.
    assert decision_reward(completions, decision_label=labels, decision=["no", "yes", "no", "no"]) == [
        0.0,
        1.0,
        None,
        1.0,
    ]
    with pytest.raises(ValueError, match="needs a 'decision_label' column"):
        decision_reward(completions, golden_answers=[["a"]] * 4)
    with pytest.raises(ValueError, match='decision_label must be "yes", "no" or None'):
        decision_reward(["x"], decision_label=[True])


def test_solve_rate_labels_threshold_is_inclusive():
    assert solve_rate_labels([0.0, 0.49, 0.5, 1.0, None], threshold=0.5) == ["no", "no", "yes", "yes", None]
    assert solve_rate_labels({"a": 0.25}, threshold=0.25) == {"a": "yes"}
    with pytest.raises(ValueError, match="between 0 and 1"):
        solve_rate_labels([1.5], threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        solve_rate_labels([0.5], threshold=2)


def test_f1_aware_on_a_hand_computed_confusion_matrix():
    # 10 labelled questions: TP = 3, FP = 1, FN = 2, TN = 4; one unlabelled question is ignored.
    decisions = ["yes", "yes", "yes", "yes", "no", None, "no", "no", "no", "no", "yes"]
    labels = ["yes", "yes", "yes", "no", "yes", "yes", "no", "no", "no", "no", None]
    assert aware_confusion(decisions, labels) == {"tp": 3, "fp": 1, "fn": 2, "tn": 4}
    # P = 3/4, R = 3/5, F1 = 2 * 3 / (2 * 3 + 1 + 2) = 6/9.
    assert f1_aware(decisions, labels) == pytest.approx(2 / 3)


def test_f1_aware_always_search_is_zero_never_search_is_2p_over_2p_plus_n():
    labels = ["yes"] * 6 + ["no"] * 4
    assert f1_aware(["no"] * 10, labels) == 0.0
    assert f1_aware([None] * 10, labels) == 0.0
    assert f1_aware(["no"] * 4, ["no"] * 4) == 0.0
    assert f1_aware(["yes"] * 10, labels) == pytest.approx(12 / 16)
    with pytest.raises(ValueError, match="one decision per question"):
        f1_aware(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match='decision must be "yes", "no" or None'):
        f1_aware([True], ["yes"])


def test_build_reward_funcs_from_a_recipe():
    recipe = load_recipe_dict(
        {
            "rewards": [
                {"name": "em", "weight": 1.0},
                {"name": "format", "weight": 0.2, "args": {"protocol": "search_r1"}},
                {"name": "format", "weight": 0.1, "args": {"protocol": "adasearch"}},
                {"name": "knowledge_bonus", "weight": 0.5, "args": {"bonus": 0.3}},
            ]
        }
    )
    funcs, weights = build_reward_funcs(recipe.rewards)
    assert [f.__name__ for f in funcs] == ["em", "format_search_r1", "format_adasearch", "knowledge_bonus"]
    assert weights == [1.0, 0.2, 0.1, 0.5]
    # The bound arguments are applied: 1 + 0.3 * (1 - 1/3) after one search.
    assert _rounded(funcs[3]([COMPLETIONS[1]], golden_answers=[["Ulm", "Ulm, Germany"]])) == [1.2]
    assert funcs[2](["<assessment>yes</assessment><answer>Ulm</answer>"]) == [1.0]
    assert funcs[1](["<assessment>yes</assessment><answer>Ulm</answer>"]) == [0.0]


def test_build_reward_funcs_same_entry_twice_gets_numbered():
    funcs, _ = build_reward_funcs([RewardSpec("em"), RewardSpec("em")])
    assert [f.__name__ for f in funcs] == ["em_1", "em_2"]


@pytest.mark.parametrize(
    "spec,message",
    [
        (RewardSpec("exact"), "rewards.0: unknown reward 'exact'"),
        (RewardSpec("search_penalty", 1.0, {"penalti": 0.2}), "no argument 'penalti'; did you mean 'penalty'?"),
        (RewardSpec("format", 1.0, {"protocol": "gogg"}), "unknown protocol 'gogg'; did you mean 'gog'?"),
        (RewardSpec("em", 1.0, {"protocol": "gog"}), "reward 'em' has no argument 'protocol'.*its arguments: none"),
        (RewardSpec("judge", 1.0, {"url": "localhost:8000", "model": "m"}), "url must start with http://"),
        (RewardSpec("judge", 1.0, {"url": "http://127.0.0.1:1/v1"}), "set args.model"),
        (RewardSpec("em", float("nan")), "weight must be a finite number"),
        (RewardSpec("search_penalty", 1.0, {"accuracy": "bleu"}), "accuracy must be one of em, f1, subem"),
    ],
)
def test_bad_reward_entries_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        build_reward_funcs([spec])


def test_empty_reward_list_is_an_error():
    with pytest.raises(ValueError, match="lists no reward"):
        build_reward_funcs([])
