"""Answer extraction from completions only, and the per-protocol format check on hand-built trajectories."""

from __future__ import annotations

import pytest

from seekrl.rewards import (
    count_searches,
    em_reward,
    extract_answer,
    extract_assessment,
    format_error,
    format_reward,
)

# The Search-R1 prompt carries an example answer; it must never count as the model's.
SEARCH_R1_PROMPT = (
    "Answer the given question. ... For example, <answer> Beijing </answer>. Question: What is the capital of China?"
)
OBS = "\n\n<information>Doc 1(Title: Paris) Paris is the capital of France.\nDoc 2(Title: X) y</information>\n\n"


def test_answer_comes_from_the_completion_not_the_prompt():
    completions = ["<think>I do not know</think>", "<think>known</think><answer> Beijing </answer>"]
    rewards = em_reward(completions, prompts=[SEARCH_R1_PROMPT] * 2, golden_answers=[["Beijing"]] * 2)
    assert rewards == [0.0, 1.0]


def test_chat_message_completions():
    messages = [
        {"role": "assistant", "content": "<search>capital of France</search>"},
        {"role": "tool", "content": "Doc 1(Title: Paris) <answer>Lyon</answer>"},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>Paris</answer>"}]},
    ]
    assert extract_answer(messages) == "Paris"
    assert count_searches(messages) == 1
    assert format_reward([messages]) == [1.0]


@pytest.mark.parametrize(
    "completion,answer",
    [
        ("<answer>Paris</answer>", "Paris"),
        ("<answer>\n  Paris \n</answer><|im_end|>", "Paris"),
        ("<answer>Berlin</answer> no wait <answer>Bonn</answer>", "Bonn"),
        ("<answer>Bonn</answer> then <answer>Ber", "Bonn"),
        ("<answer>Ber", None),
        ("Paris", None),
        ("<answer></answer>", ""),
        # An observation is retrieved text: an answer tag inside it is not the model's.
        ("<search>q</search><information>Doc <answer>Rome</answer></information>", None),
        # A rollout truncated inside an observation: everything after <information> is retrieved text.
        ("<search>q</search><information>Doc <answer>Rome</answer>", None),
        ("<answer>a<answer>b</answer>", "b"),
    ],
)
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


# Search-R1's corrective line, as the environment appends it after an invalid action (seekrl.agents uses it too).
CORRECTIVE = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"
)


def test_corrective_lines_are_not_the_models_answer_or_actions():
    truncated = "<serch>capital</serch>" + CORRECTIVE
    assert extract_answer(truncated) is None
    assert count_searches(truncated) == 0
    assert em_reward([truncated], golden_answers=[["and"]]) == [0.0]
    assess = (
        "<search>q</search>\nMy previous action is invalid. I must first give my assessment: "
        "<assessment>yes</assessment> if my own knowledge suffices, <assessment>no</assessment> if I need to search.\n"
    )
    assert extract_assessment(assess) is None
    recovered = "<serch>capital</serch>" + CORRECTIVE + "<answer>Paris</answer>"
    assert extract_answer(recovered) == "Paris"
    # The trajectory made an invalid action, so it is not well formed.
    assert "an invalid action was corrected by the environment" in format_error(recovered)


def test_extract_assessment_and_count_searches():
    assert extract_assessment("<think>t</think><assessment>NO</assessment>") == "no"
    assert extract_assessment("<information><assessment>yes</assessment></information>") is None
    assert extract_assessment("<assessment>yes, probably</assessment>") is None
    text = "<search>a</search>" + OBS + "<glance></glance>" + OBS + "<gaze>[0, 0, 5, 5]</gaze>" + OBS + "<search>b"
    assert count_searches(text) == 3


VALID = [
    ("search_r1", "<answer>Paris</answer>"),
    ("search_r1", "<think>t</think><search>q</search>" + OBS + "<think>t</think><answer>Paris</answer>"),
    ("search_r1", "<search>q1</search>" + OBS + "<search>q2</search>" + OBS + "<answer>Paris</answer>\n<|im_end|>"),
    # Observation content is opaque: stray tags inside it do not break the trajectory.
    ("search_r1", "<search>q</search><information>a </think> <answer>x</answer> b</information><answer>P</answer>"),
    ("adasearch", "<think>I know it</think><assessment>yes</assessment><answer>Paris</answer>"),
    ("adasearch", "<assessment> No </assessment><search>q</search>" + OBS + "<think>t</think><answer>Paris</answer>"),
    ("adasearch", "<assessment>no</assessment><answer>Paris</answer>"),
    ("gog", "<glance></glance>" + OBS + "<answer>cardinal</answer>"),
    (
        "gog",
        "<think>t</think><gaze>[0, 0, 1000, 1000]</gaze>"
        + OBS
        + "<search>red bird</search>"
        + OBS
        + "<think>t</think><gaze>[10.5,20,30.5,40]</gaze>"
        + OBS
        + "<answer>cardinal</answer>",
    ),
]

INVALID = [
    ("search_r1", "", "block order (none) is not valid for search_r1"),
    ("search_r1", "Paris", "text outside tags: 'Paris'"),
    ("search_r1", "<answer>Paris</answer> because", "text outside tags: 'because'"),
    ("search_r1", "<answer>Paris</answer><answer>Paris</answer>", "block order answer answer"),
    ("search_r1", "<answer>Paris", "<answer> not closed before the end"),
    ("search_r1", "<think>a <answer>P</answer></think>", "<think> not closed before <answer>"),
    ("search_r1", "</think><answer>P</answer>", "</think> without an opening <think>"),
    ("search_r1", "<answer>  </answer>", "empty <answer>"),
    ("search_r1", "<search>q</search><answer>P</answer>", "block order search answer"),
    ("search_r1", "<search>q</search>" + OBS, "block order search information is not valid"),
    ("search_r1", OBS + "<answer>P</answer>", "block order information answer"),
    ("search_r1", "<search>q</search><information>Doc 1", "unclosed <information>"),
    ("search_r1", "<think>a</think><think>b</think><answer>P</answer>", "block order think think answer"),
    ("search_r1", "<gaze>[0, 0, 5, 5]</gaze>" + OBS + "<answer>P</answer>", "text outside tags"),
    ("adasearch", "<answer>Paris</answer>", "block order answer is not valid for adasearch"),
    ("adasearch", "<assessment>maybe</assessment><answer>P</answer>", "<assessment> must be yes or no"),
    (
        "adasearch",
        "<assessment>yes</assessment><search>q</search>" + OBS + "<answer>P</answer>",
        "not valid for adasearch after assessment yes",
    ),
    ("adasearch", "<answer>P</answer><assessment>no</assessment>", "block order answer assessment"),
    ("gog", "<glance>the bird</glance>" + OBS + "<answer>P</answer>", "<glance> must be empty"),
    ("gog", "<gaze>[0, 0, 1001, 5]</gaze>" + OBS + "<answer>P</answer>", "must satisfy 0 <= x1 < x2 <= 1000"),
    ("gog", "<gaze>[50, 0, 50, 5]</gaze>" + OBS + "<answer>P</answer>", "must satisfy"),
    ("gog", "<gaze>[0, 9, 5, 3]</gaze>" + OBS + "<answer>P</answer>", "must satisfy"),
    ("gog", "<gaze>[-1, 0, 5, 5]</gaze>" + OBS + "<answer>P</answer>", "<gaze> must be [x1, y1, x2, y2]"),
    ("gog", "<gaze>0, 0, 5, 5</gaze>" + OBS + "<answer>P</answer>", "<gaze> must be [x1, y1, x2, y2]"),
    ("gog", "<gaze>[0, 0, 5]</gaze>" + OBS + "<answer>P</answer>", "<gaze> must be [x1, y1, x2, y2]"),
]


@pytest.mark.parametrize("protocol,text", VALID)
def test_valid_trajectories(protocol, text):
    assert format_error(text, protocol) is None
    assert format_reward([text], protocol=protocol) == [1.0]


@pytest.mark.parametrize("protocol,text,reason", INVALID)
def test_invalid_trajectories_say_why(protocol, text, reason):
    assert reason in format_error(text, protocol)
    assert format_reward([text], protocol=protocol) == [0.0]


def test_require_think_is_search_r1s_strict_order():
    loose = "<search>q</search>" + OBS + "<think>t</think><answer>P</answer>"
    strict = "<think>t</think><search>q</search>" + OBS + "<think>t</think><answer>P</answer>"
    assert format_reward([loose, strict], require_think=True) == [0.0, 1.0]
    assert format_reward([loose, strict], require_think=False) == [1.0, 1.0]


@pytest.mark.parametrize(
    "mode,text,valid",
    [
        ("decide", "<think>I know it</think><assessment>yes</assessment>", True),
        ("decide", "<assessment>yes</assessment><answer>Paris</answer>", False),
        ("parametric", "<think>t</think><answer>Paris</answer>", True),
        ("parametric", "<assessment>yes</assessment><answer>Paris</answer>", False),
        ("search", "<search>q</search>" + OBS + "<answer>Paris</answer>", True),
        ("search", "<assessment>no</assessment><search>q</search>" + OBS + "<answer>Paris</answer>", False),
        ("adaptive", "<assessment>yes</assessment>", False),
    ],
)
def test_adasearch_modes(mode, text, valid):
    assert format_reward([text], protocol="adasearch", mode=mode) == [1.0 if valid else 0.0]


def test_unknown_protocol_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'search_r1'"):
        format_reward(["<answer>x</answer>"], protocol="search-r1")
    with pytest.raises(ValueError, match="unknown AdaSearch mode 'decde'; did you mean 'decide'"):
        format_reward([], protocol="adasearch", mode="decde")
