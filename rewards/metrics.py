"""Answer metrics on strings: EM, token F1 and SubEM, with the SQuAD v1.1 / HotpotQA normalisation.

The formulas are those of the official evaluation scripts (SQuAD v1.1 `evaluate-v1.1.py`, HotpotQA
`hotpot_evaluate_v1.py`), which Search-R1, FlashRAG and the papers this project reproduces all report:

- normalise: lowercase, delete ASCII punctuation (`string.punctuation`), replace the words a/an/the by a space,
  collapse whitespace. Non-ASCII letters are kept as they are ("Röntgen" stays "röntgen").
- EM: the normalised strings are equal.
- F1: token-level F1 over the bag of normalised whitespace tokens (`Counter` intersection). As in HotpotQA, when
  either side normalises to "yes", "no" or "noanswer" the F1 is 0 unless both sides are identical.
- SubEM (cover exact match): the normalised gold is a substring of the normalised prediction (FlashRAG's
  `Sub_ExactMatch`, Search-R1's `subem_check`). Character-level, so gold "no" is covered by "not sure"; golds
  that normalise to the empty string are skipped, since "" is inside every prediction.

Every metric takes one prediction and one gold string or a list of golds, and returns the maximum over golds.

>>> normalize_answer("The  Röntgen, Wilhelm!")
'röntgen wilhelm'
>>> exact_match("the Eiffel Tower.", ["Eiffel Tower", "La tour Eiffel"])
1.0
>>> round(f1_score("Eiffel Tower in Paris", "the Eiffel Tower"), 4)
0.6667
>>> cover_exact_match("It is the Eiffel Tower, in Paris.", ["eiffel tower"])
1.0
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

# str.translate deletes in one C pass what the reference does one character at a time; same set of characters.
_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# HotpotQA gives these answers no partial credit: "yes" vs "no" share no token, but "no answer" vs "noanswer" must
# not earn F1 either.
_NO_PARTIAL_CREDIT = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop articles (a, an, the), collapse whitespace (SQuAD/HotpotQA).

    >>> normalize_answer("  An Apple a Day... ")
    'apple day'
    >>> normalize_answer("São Paulo")
    'são paulo'
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_DELETE_PUNCTUATION)).split())


def as_gold_list(golds: str | Iterable[str]) -> list[str]:
    """One gold string or an iterable of them, as a list; an error naming the problem otherwise.

    >>> as_gold_list("Paris"), as_gold_list(("Paris", "paris, france"))
    (['Paris'], ['Paris', 'paris, france'])
    """
    if isinstance(golds, str):
        return [golds]
    if golds is None or not isinstance(golds, Iterable):
        raise TypeError(f"gold answers must be a string or a list of strings, got {golds!r}")
    out = list(golds)
    for g in out:
        if not isinstance(g, str):
            raise TypeError(f"gold answers must be strings, got {g!r} ({type(g).__name__}) in {out!r}")
    if not out:
        raise ValueError("no gold answers to compare against (empty list)")
    return out


def _token_f1(prediction: str, gold: str) -> float:
    """F1 of two already normalised strings, the HotpotQA formula."""
    if (prediction in _NO_PARTIAL_CREDIT or gold in _NO_PARTIAL_CREDIT) and prediction != gold:
        return 0.0
    pred_tokens = prediction.split()
    gold_tokens = gold.split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold, else 0.0.

    >>> exact_match("1,000", "1000"), exact_match("Paris", ["London", "Berlin"])
    (1.0, 0.0)
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in as_gold_list(golds)))


def f1_score(prediction: str, golds: str | Iterable[str]) -> float:
    """Token F1, maximum over golds; yes/no/noanswer earn F1 only on an exact match (HotpotQA).

    >>> f1_score("yes it is", "yes"), f1_score("no", "yes"), f1_score("Yes.", "yes")
    (0.0, 0.0, 1.0)
    """
    pred = normalize_answer(prediction)
    return max(_token_f1(pred, normalize_answer(g)) for g in as_gold_list(golds))


def cover_exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    """SubEM: 1.0 when a non-empty normalised gold occurs inside the normalised prediction, else 0.0.

    >>> cover_exact_match("He was born in 1879 in Ulm", ["Ulm, Germany", "Ulm"])
    1.0
    >>> cover_exact_match("anything", ["The"])  # gold normalises to "", which would cover every prediction
    0.0
    """
    pred = normalize_answer(prediction)
    for g in as_gold_list(golds):
        gold = normalize_answer(g)
        if gold and gold in pred:
            return 1.0
    return 0.0
