"""`seekrl eval` throughput: questions/s with 1 in-process worker vs N Ray workers, same questions, same outputs.

The format-trained tiny searcher (seekrl.testing) runs the Search-R1 protocol with greedy decoding against BM25
over the shared multi-hop corpus (in-process index in every worker). Times include worker start-up (model and
index load, and for Ray the cluster start), which is what a user waits for. The speedup is reported only when
every worker count wrote byte-identical predictions.

    python benchmarks/eval_speed.py                          # 48 questions, 1 vs 2 workers
    python benchmarks/eval_speed.py --questions 96 --workers 1,2,4 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48, help="Multihop questions to evaluate.")
    parser.add_argument("--workers", default="1,2", help="Worker counts to compare, comma-separated.")
    parser.add_argument("--batch-size", type=int, default=8, help="Questions per batched rollout (chunk).")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="The shared data folder.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from seekrl.envs.index import build_index
    from seekrl.evaluate import EvalOptions, evaluate
    from seekrl.testing import tiny_model_dir

    data = Path(args.data)
    model = str(tiny_model_dir("searcher"))
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "bm25"
        build_index(data / "multihop" / "corpus.jsonl", index, "bm25", progress=False)
        rows = []
        for workers in counts:
            out = Path(tmp) / f"w{workers}"
            options = EvalOptions(
                model=model, benchmarks=[f"multihop={data / 'multihop' / 'questions.jsonl'}"], retriever=str(index),
                out_dir=str(out), limit=args.questions, num_workers=workers, batch_size=args.batch_size,
                progress=False)
            start = time.perf_counter()
            summary = evaluate(options)
            wall = time.perf_counter() - start
            predictions = (out / "predictions.jsonl").read_text()
            rows.append((workers, summary["questions_run"], wall, summary["results"]["dense"]["average"], predictions))

    same = all(r[4] == rows[0][4] for r in rows)
    print(f"seekrl eval, tiny searcher (search_r1, greedy, BM25 top-3), {args.questions} multihop questions, "
          f"batch {args.batch_size}, {os.cpu_count()} CPU cores")
    print(f"{'workers':>7} {'questions':>9} {'wall s':>8} {'q/s':>7} {'speedup':>8} {'EM':>6} {'search rate':>11}")
    for workers, n, wall, avg, _ in rows:
        speedup = f"{rows[0][2] / wall:.2f}x" if same else "n/a"
        print(f"{workers:>7} {n:>9} {wall:>8.1f} {n / wall:>7.2f} {speedup:>8} {avg['em']:>6.3f} "
              f"{avg['search_rate']:>11.2f}")
    if not same:
        print("predictions differ between worker counts: no speedup reported", file=sys.stderr)
        return 1
    print("predictions identical across worker counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
