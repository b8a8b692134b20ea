"""AdaSearch helpers: pseudo-labels from solve rates, and the F1_aware metric of the search decision.

The AdaSearch paper's text is not public, so the definitions below are this project's, stated exactly and kept
stable; every number seekrl reports for AdaSearch uses them.

Pseudo-label. For each training question the policy answers k times from parametric knowledge alone (no search);
its solve rate is the fraction of those answers that are correct (EM). With threshold p:
label = "yes" (own knowledge suffices, do not search) when solve_rate >= p, else "no" (search).

F1_aware. A binary classification of "answerable without search": the positive class is label "yes"; the agent
predicts positive when it chose not to search, i.e. its assessment is "yes". With TP = (assessment yes, label yes),
FP = (yes, no), FN = (no or no assessment, yes):

    F1_aware = 2 TP / (2 TP + FP + FN),  and 0 when 2 TP + FP + FN = 0.

So an agent that always searches (never predicts positive) scores 0 whatever the labels; an agent that never
searches scores 2P / (2P + N) for P "yes" and N "no" labels. Questions without a label (None) are left out.
A non-AdaSearch agent is evaluated by setting its assessment to "yes" exactly when it made no search.

>>> labels = solve_rate_labels([1.0, 0.75, 0.25, 0.0], threshold=0.5)
>>> labels
['yes', 'yes', 'no', 'no']
>>> f1_aware(["yes", "no", "yes", "no"], labels)
0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_DECISIONS = ("yes", "no")


def _label(rate: float | None, threshold: float) -> str | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"a solve rate must be a number between 0 and 1 (or None), got {rate!r}")
    return "yes" if rate >= threshold else "no"


def solve_rate_labels(
    solve_rates: Sequence[float | None] | Mapping[str, float | None], threshold: float
) -> list[str | None] | dict[str, str | None]:
    """Pseudo-labels: "yes" when solve_rate >= threshold (parametric knowledge suffices), else "no"; None stays None.

    Takes a list (returns a list) or a mapping question id -> solve rate (returns a mapping).

    >>> solve_rate_labels({"q1": 0.5, "q2": 0.4, "q3": None}, threshold=0.5)
    {'q1': 'yes', 'q2': 'no', 'q3': None}
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    if isinstance(solve_rates, Mapping):
        return {key: _label(rate, threshold) for key, rate in solve_rates.items()}
    return [_label(rate, threshold) for rate in solve_rates]


def aware_confusion(decisions: Sequence[str | None], labels: Sequence[str | None]) -> dict[str, int]:
    """Counts tp, fp, fn, tn of "answerable without search" (see the module docstring); unlabelled rows skipped.

    >>> aware_confusion(["yes", "yes", "no", None, "no"], ["yes", "no", "yes", "yes", None])
    {'tp': 1, 'fp': 1, 'fn': 2, 'tn': 0}
    """
    if len(decisions) != len(labels):
        raise ValueError(f"{len(decisions)} decisions for {len(labels)} labels; pass one decision per question")
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for decision, label in zip(decisions, labels, strict=True):
        if decision is not None and decision not in _DECISIONS:
            raise ValueError(f'a decision must be "yes", "no" or None (no assessment), got {decision!r}')
        if label is None:
            continue
        if label not in _DECISIONS:
            raise ValueError(f'a label must be "yes", "no" or None (unlabelled), got {label!r}')
        predicted_yes = decision == "yes"
        if label == "yes":
            counts["tp" if predicted_yes else "fn"] += 1
        else:
            counts["fp" if predicted_yes else "tn"] += 1
    return counts


def f1_aware(decisions: Sequence[str | None], labels: Sequence[str | None]) -> float:
    """F1 of predicting "answerable without search": 2 TP / (2 TP + FP + FN), 0 when that denominator is 0.

    `decisions` are the agent's assessments ("yes" = answer without search; "no" or None = search), `labels`
    the pseudo-labels of `solve_rate_labels`.

    >>> f1_aware(["no", "no", "no"], ["yes", "no", "yes"])  # always searches
    0.0
    >>> round(f1_aware(["yes", "yes", "yes"], ["yes", "no", "yes"]), 4)  # never searches: 2*2 / (2*2 + 1)
    0.8
    """
    c = aware_confusion(decisions, labels)
    denominator = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2 * c["tp"] / denominator if denominator else 0.0
