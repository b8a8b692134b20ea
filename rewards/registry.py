"""From a recipe's `rewards: [{name, weight, args}]` to TRL's `reward_funcs` and `GRPOConfig(reward_weights=...)`.

Each entry becomes one reward function with its `args` bound, named after the entry so that TRL logs it as
`rewards/<name>/mean`. TRL names a `functools.partial` after the function it wraps, so two entries of the same
reward (say `format` for two protocols) would collide; each bound function gets its own `__name__` instead:
the entry's name, suffixed with its argument values when the name repeats (`format_search_r1`, `format_gog`).
Unknown names and arguments are errors that suggest the closest valid one; options are validated when binding.

>>> from seekrl.config import RewardSpec
>>> funcs, weights = build_reward_funcs([RewardSpec("em", 1.0), RewardSpec("format", 0.2, {"protocol": "adasearch"})])
>>> [f.__name__ for f in funcs], weights
(['em', 'format'], [1.0, 0.2])
>>> funcs[1](["<assessment>yes</assessment><answer>Ulm</answer>"])
[1.0]
>>> build_reward_funcs([RewardSpec("fromat")])
Traceback (most recent call last):
...
ValueError: rewards.0: unknown reward 'fromat'; did you mean 'format'? (one of em, f1, subem, format, decision, ...)
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .judge import judge_reward
from .rewards import (
    decision_reward,
    em_reward,
    f1_reward,
    format_reward,
    gog_reward,
    knowledge_bonus_reward,
    search_penalty_reward,
    subem_reward,
)

REWARD_FUNCS: dict[str, Callable[..., list[float | None]]] = {
    "em": em_reward,
    "f1": f1_reward,
    "subem": subem_reward,
    "format": format_reward,
    "decision": decision_reward,
    "search_penalty": search_penalty_reward,
    "knowledge_bonus": knowledge_bonus_reward,
    "gog": gog_reward,
    "judge": judge_reward,
}


def _options(func: Callable) -> list[str]:
    return [p.name for p in inspect.signature(func).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def bind_reward(name: str, args: Mapping[str, Any] | None = None, display_name: str | None = None) -> Callable:
    """The reward `name` of REWARD_FUNCS with `args` bound, called `display_name` (default: `name`) by TRL.

    >>> f1 = bind_reward("f1")
    >>> f1.__name__, f1(["<answer>Lennon</answer>"], golden_answers=[["John Lennon"]])
    ('f1', [0.6666666666666666])
    """
    if name not in REWARD_FUNCS:
        close = difflib.get_close_matches(str(name), REWARD_FUNCS, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown reward {name!r}; {hint}(one of {', '.join(REWARD_FUNCS)})")
    func = REWARD_FUNCS[name]
    args = dict(args or {})
    valid = _options(func)
    for key in args:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            options = ", ".join(valid) if valid else "none"
            raise ValueError(f"reward {name!r} has no argument {key!r}; {hint}(its arguments: {options})")
    # An empty batch runs every option check without touching the data, so a bad value fails here, not mid-run.
    func([], **args)

    def reward(completions, **kwargs):
        return func(completions, **{**kwargs, **args})

    reward.__name__ = reward.__qualname__ = display_name or name
    reward.__doc__ = func.__doc__
    return reward


def _display_names(specs: Sequence[Any]) -> list[str]:
    names = [spec_name for spec_name, _, _ in specs]
    out = []
    for spec_name, _, args in specs:
        if names.count(spec_name) > 1 and args:
            out.append("_".join([spec_name, *(str(v) for v in args.values())]))
        else:
            out.append(spec_name)
    # Still equal after the suffix (same name, same or no arguments): number them in order.
    return [f"{n}_{out[:i].count(n) + 1}" if out.count(n) > 1 else n for i, n in enumerate(out)]


def _fields(spec: Any, index: int) -> tuple[str, float, dict]:
    if isinstance(spec, Mapping):
        name, weight, args = spec.get("name"), spec.get("weight", 1.0), spec.get("args") or {}
    else:
        name, weight, args = spec.name, spec.weight, spec.args or {}
    if not isinstance(name, str) or not name:
        raise ValueError(f"rewards.{index}: every reward entry needs a name (one of {', '.join(REWARD_FUNCS)})")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ValueError(f"rewards.{index}: weight must be a finite number, got {weight!r}")
    if not isinstance(args, Mapping):
        raise ValueError(f"rewards.{index}: args must be a mapping of argument names to values, got {args!r}")
    return name, float(weight), dict(args)


def build_reward_funcs(specs: Sequence[Any]) -> tuple[list[Callable], list[float]]:
    """Reward functions and their weights from RewardSpec entries (or dicts with name, weight, args).

    Pass the functions as `GRPOTrainer(reward_funcs=...)` and the weights as `GRPOConfig(reward_weights=...)`.

    >>> funcs, _ = build_reward_funcs([{"name": "format", "args": {"protocol": "search_r1"}},
    ...                                {"name": "format", "args": {"protocol": "gog"}}, {"name": "em"}])
    >>> [f.__name__ for f in funcs]
    ['format_search_r1', 'format_gog', 'em']
    """
    if not specs:
        raise ValueError(f"rewards: the recipe lists no reward; add at least one of {', '.join(REWARD_FUNCS)}")
    fields = [_fields(spec, i) for i, spec in enumerate(specs)]
    funcs = []
    for i, ((name, _, args), display) in enumerate(zip(fields, _display_names(fields), strict=True)):
        try:
            funcs.append(bind_reward(name, args, display))
        except ValueError as err:
            raise ValueError(f"rewards.{i}: {err}") from None
    return funcs, [weight for _, weight, _ in fields]
