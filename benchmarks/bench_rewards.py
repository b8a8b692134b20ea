"""Scoring speed of seekrl.rewards on real gold answers, beside the official reference implementations.

Pairs are (prediction, golds) with golds from the FlashRAG-style QA files of the shared data
(`qa/{dev,test}_*.jsonl`, golds over 80 characters dropped as the NQ caveat in MANIFEST.md says) and predictions
perturbed from them: the gold itself, recased with an article and punctuation, padded with extra words,
truncated, another question's answer, and yes/no. The baseline is the official code of each metric (SQuAD v1.1
normalisation and EM, HotpotQA F1, FlashRAG SubEM, and a Search-R1-style regex answer extraction for the reward).
Both sides score the same pairs; a timing is reported only when every score agrees with the baseline.

    python benchmarks/bench_rewards.py                 # 10,000 pairs, best of 3
    python benchmarks/bench_rewards.py --pairs 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

from seekrl.rewards import cover_exact_match, em_reward, exact_match, f1_score

REPO = Path(__file__).resolve().parents[1]
# The official implementations live with the tests that check seekrl.rewards against them.
sys.path.insert(0, str(REPO / "tests" / "rewards"))
from official_eval import official_em, official_f1, official_subem  # noqa: E402


def baseline_em_reward(completions, golden_answers):
    """Search-R1-style: last <answer>...</answer> by regex, then EM (0 when there is none)."""
    out = []
    for completion, golds in zip(completions, golden_answers, strict=True):
        matches = list(re.finditer(r"<answer>(.*?)</answer>", completion, re.DOTALL))
        out.append(official_em(matches[-1].group(1).strip(), golds) if matches else 0.0)
    return out


def load_golds(data_dir: Path) -> list[list[str]]:
    files = sorted((data_dir / "qa").glob("dev_*.jsonl")) + sorted((data_dir / "qa").glob("test_*.jsonl"))
    if not files:
        sys.exit(f"no qa/dev_*.jsonl or qa/test_*.jsonl under {data_dir}; pass --data-dir PATH/TO/shared/data")
    golds = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            answers = [g for g in json.loads(line)["golden_answers"] if len(g) <= 80]
            if answers:
                golds.append(answers)
    return golds


def make_pairs(golds: list[list[str]], n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        gold = golds[i % len(golds)]
        answer = rng.choice(gold)
        kind = i % 6
        if kind == 0:
            prediction = answer
        elif kind == 1:
            prediction = f"The {answer.upper()}!"
        elif kind == 2:
            prediction = f"I think it is {answer}, probably."
        elif kind == 3:
            prediction = answer[: max(1, len(answer) // 2)]
        elif kind == 4:
            prediction = rng.choice(golds)[0]
        else:
            prediction = rng.choice(["yes", "no", "Yes, it is."])
        pairs.append((prediction, gold))
    return pairs


def best_time(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    default_data = os.environ.get("SEEKRL_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-dir", type=Path, default=Path(default_data), help="shared data folder (has qa/)")
    parser.add_argument("--pairs", type=int, default=10_000, help="(prediction, golds) pairs to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the best is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    args = parser.parse_args()

    golds = load_golds(args.data_dir)
    pairs = make_pairs(golds, args.pairs, args.seed)
    completions = [f"<think>I recall it.</think><answer> {p} </answer>" for p, _ in pairs]
    gold_lists = [g for _, g in pairs]

    rows = [
        ("EM", lambda: [exact_match(p, g) for p, g in pairs], lambda: [official_em(p, g) for p, g in pairs]),
        ("F1", lambda: [f1_score(p, g) for p, g in pairs], lambda: [official_f1(p, g) for p, g in pairs]),
        (
            "SubEM",
            lambda: [cover_exact_match(p, g) for p, g in pairs],
            lambda: [official_subem(p, g) for p, g in pairs],
        ),
        (
            "em_reward",
            lambda: em_reward(completions, golden_answers=gold_lists),
            lambda: baseline_em_reward(completions, gold_lists),
        ),
    ]
    print(f"{args.pairs} pairs from {len(golds)} gold lists in {args.data_dir / 'qa'}; best of {args.repeats}")
    header = f"{'metric':<10} {'seekrl s':>9} {'pairs/s':>11} {'official s':>10} {'pairs/s':>11} {'speedup':>8}  agree"
    print(header)
    print("-" * len(header))
    failed = False
    for name, ours, reference in rows:
        ours_s, ours_scores = best_time(ours, args.repeats)
        ref_s, ref_scores = best_time(reference, args.repeats)
        mismatches = sum(abs(a - b) > 1e-12 for a, b in zip(ours_scores, ref_scores, strict=True))
        agree = "yes" if mismatches == 0 else f"NO ({mismatches} differ)"
        speedup = f"{ref_s / ours_s:7.2f}x" if mismatches == 0 else "   n/a"
        failed |= mismatches > 0
        print(
            f"{name:<10} {ours_s:9.4f} {args.pairs / ours_s:11,.0f} {ref_s:10.4f} {args.pairs / ref_s:11,.0f} "
            f"{speedup:>8}  {agree}"
        )
    mean_em = sum(exact_match(p, g) for p, g in pairs) / len(pairs)
    print(f"mean EM of the perturbed predictions: {mean_em:.3f}")
    if failed:
        sys.exit("scores differ from the official implementations: no speedup reported")


if __name__ == "__main__":
    main()
