"""seekrl.rewards: answer metrics, reward functions and the AdaSearch decision metric.

Metrics take strings (`exact_match(prediction, golds)`); rewards have TRL's signature
`(completions, **kwargs) -> list[float | None]`; `build_reward_funcs` turns a recipe's `rewards` list into
`reward_funcs` and `reward_weights` for TRL's GRPOTrainer.

>>> from seekrl.rewards import em_reward, f1_aware
>>> em_reward(["<answer>Wilhelm Röntgen</answer>"], golden_answers=[["wilhelm röntgen"]])
[1.0]
>>> f1_aware(["no", "no"], ["yes", "no"])
0.0
"""

from .adasearch import aware_confusion, f1_aware, solve_rate_labels
from .answers import completion_text, count_searches, extract_answer, extract_assessment, strip_observations
from .format import ADASEARCH_MODES, PROTOCOLS, check_protocol, format_error
from .judge import judge_reward
from .metrics import cover_exact_match, exact_match, f1_score, normalize_answer
from .registry import REWARD_FUNCS, bind_reward, build_reward_funcs
from .rewards import (
    GOLD_COLUMNS,
    decision_reward,
    em_reward,
    f1_reward,
    format_reward,
    gog_reward,
    knowledge_bonus_reward,
    search_penalty_reward,
    subem_reward,
)

__all__ = [
    "ADASEARCH_MODES",
    "GOLD_COLUMNS",
    "PROTOCOLS",
    "REWARD_FUNCS",
    "aware_confusion",
    "bind_reward",
    "build_reward_funcs",
    "check_protocol",
    "completion_text",
    "count_searches",
    "cover_exact_match",
    "decision_reward",
    "em_reward",
    "exact_match",
    "extract_answer",
    "extract_assessment",
    "f1_aware",
    "f1_reward",
    "f1_score",
    "format_error",
    "format_reward",
    "gog_reward",
    "judge_reward",
    "knowledge_bonus_reward",
    "normalize_answer",
    "search_penalty_reward",
    "solve_rate_labels",
    "strip_observations",
    "subem_reward",
]
