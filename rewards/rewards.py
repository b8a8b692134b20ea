"""Reward functions with the TRL signature `(completions, **kwargs) -> list[float | None]`.

TRL calls each reward function with `prompts`, `completions`, `completion_ids`, every dataset column (one value
per completion) and the per-rollout fields the seekrl rollout engine returns. The columns read here:

- `golden_answers`: the gold answers of the row, a list of strings or one string (`answers`, the field name of
  seekrl.data's records, is accepted too). A row with no gold answer gets None (unscorable), not a made-up 0.
  Never `answer`: that is the rollout engine's field for the *model's* parsed answer.
- `num_searches`: tool calls the rollout made. When the column is absent (or a row's value is None) the closed
  `<search>`/`<glance>`/`<gaze>` actions in the completion are counted instead.
- `decision` and `decision_label`: see `decision_reward`.

Options (the `args` of a recipe's reward entry) are keyword-only parameters. Every reward checks its options
before anything else, so calling it on an empty batch validates a configuration.

>>> done = "<think>known</think><answer>Paris</answer>"
>>> em_reward([done, "<answer>Lyon</answer>"], golden_answers=[["Paris"], ["Paris"]])
[1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .answers import completion_text, count_searches, extract_answer, extract_assessment
from .format import check_protocol, format_error
from .metrics import cover_exact_match, exact_match, f1_score

GOLD_COLUMNS = ("golden_answers", "answers")
ACCURACY_METRICS: dict[str, Callable[[str, Any], float]] = {
    "em": exact_match,
    "f1": f1_score,
    "subem": cover_exact_match,
}
# Keyword arguments TRL adds that are not dataset columns; left out when an error lists the columns it got.
_TRL_KWARGS = {"prompts", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


def column_values(kwargs: dict, names: Sequence[str], n: int, reward: str, what: str) -> list:
    """The first of `names` present in kwargs, checked to hold one value per completion."""
    if n == 0:
        # An empty batch needs no columns: that is how a configuration is validated before training.
        return []
    for name in names:
        if name in kwargs:
            values = list(kwargs[name])
            if len(values) != n:
                raise ValueError(f"{reward}: column {name!r} has {len(values)} values for {n} completions")
            return values
    columns = sorted(k for k in kwargs if k not in _TRL_KWARGS)
    raise ValueError(
        f"{reward} needs a {names[0]!r} column ({what}) in the dataset or the rollout fields; got columns {columns}"
    )


def gold_lists(kwargs: dict, n: int, reward: str) -> list[list[str] | None]:
    """Gold answers per completion as lists of strings; None for a row without any."""
    rows = column_values(kwargs, GOLD_COLUMNS, n, reward, "gold answers, a list of strings per row")
    out: list[list[str] | None] = []
    for row in rows:
        if row is None:
            out.append(None)
        elif isinstance(row, str):
            out.append([row])
        else:
            golds = list(row)
            if not all(isinstance(g, str) for g in golds):
                raise ValueError(f"{reward}: gold answers must be strings, got {golds!r}")
            out.append(golds or None)
    return out


def _accuracy(completions: list, kwargs: dict, metric: str, reward: str) -> list[float | None]:
    score = ACCURACY_METRICS[metric]
    golds = gold_lists(kwargs, len(completions), reward)
    out: list[float | None] = []
    for completion, gold in zip(completions, golds, strict=True):
        if gold is None:
            out.append(None)
            continue
        answer = extract_answer(completion)
        out.append(0.0 if answer is None else score(answer, gold))
    return out


def _num_searches(completions: list, kwargs: dict, reward: str) -> list[int]:
    if "num_searches" not in kwargs:
        return [count_searches(c) for c in completions]
    values = column_values(kwargs, ("num_searches",), len(completions), reward, "tool calls per rollout")
    return [count_searches(c) if v is None else int(v) for c, v in zip(completions, values, strict=True)]


def _check_accuracy(metric: str) -> None:
    if metric not in ACCURACY_METRICS:
        raise ValueError(f"accuracy must be one of {', '.join(ACCURACY_METRICS)}, got {metric!r}")


def _check_weight(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def em_reward(completions: list, **kwargs) -> list[float | None]:
    """Exact match of the extracted answer against the golds: 1.0 or 0.0; 0.0 when there is no answer.

    >>> em_reward(["<answer>the Beatles</answer>", "<answer>Beatles"], golden_answers=["Beatles", "Beatles"])
    [1.0, 0.0]
    """
    return _accuracy(completions, kwargs, "em", "em_reward")


def f1_reward(completions: list, **kwargs) -> list[float | None]:
    """Token F1 of the extracted answer against the golds (max over golds); 0.0 when there is no answer.

    >>> f1_reward(["<answer>John Lennon</answer>"], golden_answers=[["Lennon"]])
    [0.6666666666666666]
    """
    return _accuracy(completions, kwargs, "f1", "f1_reward")


def subem_reward(completions: list, **kwargs) -> list[float | None]:
    """SubEM: 1.0 when a gold occurs inside the extracted answer (both normalised), else 0.0.

    >>> subem_reward(["<answer>It was John Lennon.</answer>"], golden_answers=[["john lennon"]])
    [1.0]
    """
    return _accuracy(completions, kwargs, "subem", "subem_reward")


def format_reward(
    completions: list, *, protocol: str = "search_r1", require_think: bool = False, mode: str = "adaptive", **kwargs
) -> list[float | None]:
    """1.0 when the completion is a well-formed trajectory of `protocol` (see `seekrl.rewards.format`), else 0.0.

    `mode` is the AdaSearch mode (`agent.adasearch_mode`: adaptive, decide, parametric, search).

    >>> ok = "<search>who</search><information>Doc 1(Title: T) x</information><answer>x</answer>"
    >>> format_reward([ok, "x <answer>x</answer>"])
    [1.0, 0.0]
    >>> format_reward(["<assessment>no</assessment>" + ok], protocol="adasearch")
    [1.0]
    """
    check_protocol(protocol, mode)
    return [0.0 if format_error(completion_text(c), protocol, require_think, mode) else 1.0 for c in completions]


def decision_reward(completions: list, **kwargs) -> list[float | None]:
    """AdaSearch stage 2: 1.0 when the agent's assessment equals the pseudo-label, 0.0 otherwise.

    The label comes from the `decision_label` column ("yes": the model's own knowledge solves the question,
    "no": it needs search; see `solve_rate_labels`); a row whose label is None gets None (not scored). The
    assessment is the rollout field `decision` when present, otherwise the first `<assessment>` of the
    completion; a missing or malformed assessment never matches.

    >>> decision_reward(["<assessment>yes</assessment>", "<assessment>yes</assessment>", "no tags"],
    ...                 decision_label=["yes", "no", None])
    [1.0, 0.0, None]
    """
    n = len(completions)
    labels = column_values(kwargs, ("decision_label",), n, "decision_reward", '"yes"/"no" pseudo-label per question')
    if "decision" in kwargs:
        decisions = column_values(kwargs, ("decision",), n, "decision_reward", "the assessment the rollout parsed")
    else:
        decisions = [extract_assessment(c) for c in completions]
    out: list[float | None] = []
    for decision, label in zip(decisions, labels, strict=True):
        if label is None:
            out.append(None)
        elif label not in ("yes", "no"):
            raise ValueError(f'decision_reward: decision_label must be "yes", "no" or None, got {label!r}')
        else:
            out.append(float(decision == label))
    return out


def search_penalty_reward(
    completions: list,
    *,
    protocol: str = "search_r1",
    penalty: float = 0.1,
    format_weight: float = 0.1,
    accuracy: str = "em",
    require_think: bool = False,
    **kwargs,
) -> list[float | None]:
    """MMSearch-R1: (1 - format_weight) * acc * (1 - penalty if any search else 1) + format_weight * format.

    With the paper's values (penalty 0.1, format_weight 0.1) a correct answer scores 1.0 without search and
    0.91 with one; a wrong but well-formed one 0.1. Rows without gold answers get None.

    >>> traj = "<search>q</search><information>d</information><answer>Paris</answer>"
    >>> rewards = search_penalty_reward(["<answer>Paris</answer>", traj, "<answer>Rome</answer>"],
    ...                                 golden_answers=[["Paris"]] * 3)
    >>> [round(r, 4) for r in rewards]
    [1.0, 0.91, 0.1]
    """
    check_protocol(protocol)
    _check_accuracy(accuracy)
    _check_weight("penalty", penalty)
    _check_weight("format_weight", format_weight)
    acc = _accuracy(completions, kwargs, accuracy, "search_penalty_reward")
    searches = _num_searches(completions, kwargs, "search_penalty_reward")
    fmt = format_reward(completions, protocol=protocol, require_think=require_think)
    out: list[float | None] = []
    for a, s, f in zip(acc, searches, fmt, strict=True):
        if a is None:
            out.append(None)
            continue
        discounted = a * (1.0 - penalty) if s > 0 else a
        out.append((1.0 - format_weight) * discounted + format_weight * f)
    return out


def knowledge_bonus_reward(
    completions: list,
    *,
    protocol: str = "search_r1",
    bonus: float = 0.6,
    max_searches: int = 3,
    wrong_search_bonus: float = 0.05,
    require_think: bool = False,
    **kwargs,
) -> list[float | None]:
    """IKEA knowledge-boundary reward: -1 for a bad format; EM + bonus * (1 - min(n, max_searches) / max_searches)
    for a correct answer after n searches (0.6 / 0.4 / 0.2 / 0 for 0 / 1 / 2 / >=3); `wrong_search_bonus` (0.05)
    for a wrong answer that searched at least once; 0 for a wrong answer without search.

    >>> search = "<search>q</search><information>d</information>"
    >>> rewards = knowledge_bonus_reward(["<answer>Ulm</answer>", search + "<answer>Ulm</answer>",
    ...                                   search + "<answer>Bonn</answer>", "<answer>Bonn</answer>", "Ulm"],
    ...                                  golden_answers=[["Ulm"]] * 5)
    >>> [round(r, 4) for r in rewards]
    [1.6, 1.4, 0.05, 0.0, -1.0]
    """
    check_protocol(protocol)
    if max_searches < 1:
        raise ValueError(f"max_searches must be at least 1, got {max_searches!r}")
    acc = _accuracy(completions, kwargs, "em", "knowledge_bonus_reward")
    searches = _num_searches(completions, kwargs, "knowledge_bonus_reward")
    fmt = format_reward(completions, protocol=protocol, require_think=require_think)
    out: list[float | None] = []
    for a, s, f in zip(acc, searches, fmt, strict=True):
        if a is None:
            out.append(None)
        elif f == 0.0:
            out.append(-1.0)
        elif a == 1.0:
            out.append(1.0 + bonus * (1.0 - min(s, max_searches) / max_searches))
        else:
            out.append(wrong_search_bonus if s > 0 else 0.0)
    return out


def gog_reward(
    completions: list,
    *,
    format_weight: float = 0.1,
    accuracy: str = "em",
    require_think: bool = False,
    **kwargs,
) -> list[float | None]:
    """Glance-or-Gaze: (1 - λ) * acc + λ * format with λ = `format_weight` and the gog protocol's format check.

    The default λ = 0.1 is MMSearch-R1's format weight, which GoG builds on; set it per recipe.

    >>> gaze = "<gaze>[100, 200, 600, 900]</gaze><information>a red bird</information>"
    >>> gog_reward([gaze + "<answer>cardinal</answer>", "cardinal"], golden_answers=[["Cardinal"]] * 2)
    [1.0, 0.0]
    >>> gog_reward(["<answer>robin</answer>"], golden_answers=[["cardinal"]], format_weight=0.5)
    [0.5]
    """
    _check_accuracy(accuracy)
    _check_weight("format_weight", format_weight)
    acc = _accuracy(completions, kwargs, accuracy, "gog_reward")
    fmt = format_reward(completions, protocol="gog", require_think=require_think)
    return [None if a is None else (1.0 - format_weight) * a + format_weight * f for a, f in zip(acc, fmt, strict=True)]
