"""The official QA scoring code, the oracle seekrl.rewards is checked against (tests) and timed beside (benchmarks).

SQuAD v1.1 `evaluate-v1.1.py` normalisation and EM, HotpotQA `hotpot_evaluate_v1.py` F1, FlashRAG Sub_ExactMatch:
verbatim apart from layout, so that agreement with them means agreement with the published numbers.
"""

from __future__ import annotations

import re
import string
from collections import Counter


def official_normalize(s):
    """SQuAD v1.1 evaluate-v1.1.py, verbatim apart from layout."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_em(prediction, golds):
    return max(float(official_normalize(prediction) == official_normalize(g)) for g in golds)


def official_f1(prediction, golds):
    """HotpotQA hotpot_evaluate_v1.py f1_score, max over golds."""

    def f1(prediction, ground_truth):
        normalized_prediction = official_normalize(prediction)
        normalized_ground_truth = official_normalize(ground_truth)
        if normalized_prediction in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
            return 0.0
        if normalized_ground_truth in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
            return 0.0
        prediction_tokens = normalized_prediction.split()
        ground_truth_tokens = normalized_ground_truth.split()
        common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0.0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    return max(f1(prediction, g) for g in golds)


def official_subem(prediction, golds):
    """FlashRAG Sub_ExactMatch: a normalised gold inside the normalised prediction."""
    normalized_prediction = official_normalize(prediction)
    return float(any(official_normalize(g) in normalized_prediction for g in golds))
