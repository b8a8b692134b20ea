"""EM / F1 / SubEM against hand-computed values of the official SQuAD v1.1 and HotpotQA formulas."""

from __future__ import annotations

import json

import pytest
from official_eval import official_em, official_f1, official_normalize

from seekrl.rewards import cover_exact_match, exact_match, f1_score, normalize_answer

# (prediction, golds, EM, F1, SubEM), each value worked out by hand from the formulas:
# normalise = lowercase, drop ASCII punctuation, articles -> space, collapse whitespace;
# F1 = 2PR / (P + R) over the token bags, 0 when yes/no/noanswer on either side differ.
CASES = [
    ("The Eiffel Tower", ["eiffel tower"], 1.0, 1.0, 1.0),
    ("an apple a day", ["Apple Day"], 1.0, 1.0, 1.0),
    ("U.S.A.", ["USA"], 1.0, 1.0, 1.0),
    ("  PARIS\n", ["paris"], 1.0, 1.0, 1.0),
    ("Röntgen", ["röntgen"], 1.0, 1.0, 1.0),
    # Unicode letters are kept, not transliterated.
    ("Rontgen", ["Röntgen"], 0.0, 0.0, 0.0),
    # Only ASCII punctuation goes: the en dash stays and glues the two words into one token.
    ("Paris–Roubaix", ["Paris Roubaix"], 0.0, 0.0, 0.0),
    # The ASCII hyphen is deleted without a space: "parisroubaix" is one token.
    ("Paris-Roubaix", ["Paris Roubaix"], 0.0, 0.0, 0.0),
    # Multiple golds: max over golds. vs "paris": 1 common token, P = 1/2, R = 1, F1 = 2/3.
    ("Paris France", ["London", "Paris"], 0.0, 2 / 3, 1.0),
    ("", ["Paris"], 0.0, 0.0, 0.0),
    ("1,000", ["1000"], 1.0, 1.0, 1.0),
    # "1000 people" vs "1000": P = 1/2, R = 1.
    ("1000 people", ["1000"], 0.0, 2 / 3, 1.0),
    # SubEM is a character substring (as in FlashRAG / Search-R1): "10" is inside "100".
    ("100", ["10"], 0.0, 0.0, 1.0),
    ("10", ["100"], 0.0, 0.0, 0.0),
    ("yes", ["Yes."], 1.0, 1.0, 1.0),
    ("yes", ["no"], 0.0, 0.0, 0.0),
    # HotpotQA: no partial credit around yes/no (plain SQuAD F1 would give 2 * (1/3) / (4/3) = 0.5).
    ("yes it is", ["yes"], 0.0, 0.0, 1.0),
    ("no answer", ["noanswer"], 0.0, 0.0, 0.0),
    # Articles go only as whole words.
    ("the theatre", ["Theatre"], 1.0, 1.0, 1.0),
    ("Anthem", ["them"], 0.0, 0.0, 1.0),
    # Repeated tokens: Counter overlap min(3, 1) = 1, P = 1/3, R = 1, F1 = 0.5.
    ("the cat cat cat", ["cat"], 0.0, 0.5, 1.0),
    # Two of three tokens shared each way: P = R = 2/3.
    ("Barack Obama Jr", ["Barack Hussein Obama"], 0.0, 2 / 3, 0.0),
    # A gold that normalises to "" never covers a prediction, but still equals an empty one.
    ("", ["The"], 1.0, 0.0, 0.0),
]


@pytest.mark.parametrize("prediction,golds,em,f1,subem", CASES)
def test_metrics_match_hand_computed_values(prediction, golds, em, f1, subem):
    assert exact_match(prediction, golds) == em
    assert f1_score(prediction, golds) == pytest.approx(f1, abs=1e-12)
    assert cover_exact_match(prediction, golds) == subem


def test_normalize_answer_examples():
    assert normalize_answer("The  Röntgen, Wilhelm!") == "röntgen wilhelm"
    assert normalize_answer("A\ttale of\nTwo Cities") == "tale of two cities"
    assert normalize_answer("Ærø's harbour") == "ærøs harbour"


def test_single_gold_string_equals_list_of_one():
    assert f1_score("John Lennon", "Lennon") == f1_score("John Lennon", ["Lennon"]) == pytest.approx(2 / 3)


def test_bad_golds_are_clear_errors():
    with pytest.raises(ValueError, match="no gold answers"):
        exact_match("x", [])
    with pytest.raises(TypeError, match="must be strings"):
        f1_score("x", [1000])
    with pytest.raises(TypeError, match="string or a list of strings"):
        cover_exact_match("x", None)


def test_agrees_with_official_scripts_on_real_answers(shared_data):
    golds = []
    for path in sorted((shared_data / "qa").glob("dev_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            golds.append([g for g in json.loads(line)["golden_answers"] if len(g) <= 80])
    golds = [g for g in golds if g]
    assert len(golds) > 800
    checked = 0
    for i, gold in enumerate(golds):
        other = golds[(i * 7 + 3) % len(golds)][0]
        for prediction in (
            gold[0],
            f"The {gold[0].upper()}!",
            f"{gold[0]} and {other}",
            other,
            gold[0][: len(gold[0]) // 2],
        ):
            assert normalize_answer(prediction) == official_normalize(prediction)
            em = official_em(prediction, gold)
            assert exact_match(prediction, gold) == em
            assert f1_score(prediction, gold) == pytest.approx(
                official_f1(prediction, gold), abs=1e-12
            )
            checked += 1
    assert checked == 5 * len(golds)
