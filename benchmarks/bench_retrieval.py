"""Retrieval quality and speed on the multihop corpus (441 questions, 6,200 passages, gold passage ids).

Prints, from one run:
1. recall@1/5/10 per dataset for bm25, dense and the two hybrid fusions (RRF, convex at --alpha), then the
   convex fusion over a grid of alpha (--alphas), and whether each hybrid beats the better single retriever;
2. in-process BM25 queries/s of seekrl (bm25s) beside rank_bm25's BM25Okapi on the same tokens; the speedup
   is only reported when both rank the gold passages about equally well (recall@10 within 0.03);
3. dense passage encoding passages/s on this machine (a fixed sample, measured every run) and whether the
   full-corpus embeddings came from the on-disk cache.

    python benchmarks/bench_retrieval.py          # defaults: MiniLM over title_text, depth 100, RRF k=60, alpha 0.5
    python benchmarks/bench_retrieval.py --passage-format contents --norm zscore --sweep

alpha is fixed before looking at these questions (0.5: equal shares, no tuning data); the grid shows how
sensitive the result is to it, it is not a place to pick a per-dataset value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("hotpotqa", "musique", "2wikimultihopqa")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "multihop",
                        help="Folder with corpus.jsonl and questions.jsonl.")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench_retrieval",
                        help="Where the indexes are built (rebuilt every run; embeddings come from the cache).")
    parser.add_argument("--encoder", default="default", help="Dense encoder name or path.")
    parser.add_argument("--passage-format", choices=("contents", "title_text"), default="title_text",
                        help="What the dense encoder sees: 'Title text' or the stored '\"Title\"\\ntext'.")
    parser.add_argument("--fusion", choices=("rrf", "convex"), default="convex",
                        help="Fusion of the HybridIndex whose query throughput is timed.")
    parser.add_argument("--rrf-k", type=float, default=60.0, help="Hybrid RRF constant k.")
    parser.add_argument("--depth", type=int, default=100, help="Hybrid candidates per retriever.")
    parser.add_argument("--weights", type=float, nargs=2, default=(1.0, 1.0), metavar=("BM25", "DENSE"),
                        help="Hybrid RRF weights.")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="Convex fusion: dense share (BM25 gets 1 - alpha); the one default reported.")
    parser.add_argument("--norm", choices=("minmax", "zscore"), default="minmax",
                        help="Convex fusion: per-query score normalisation.")
    parser.add_argument("--alphas", type=float, nargs="+", default=(0.3, 0.4, 0.5, 0.6, 0.7),
                        help="Convex fusion: alpha grid printed for sensitivity.")
    parser.add_argument("--sweep", action="store_true",
                        help="Also print hybrid recall@10 over a grid of rrf_k x depth (parameter sensitivity).")
    parser.add_argument("--encode-sample", type=int, default=256, help="Passages encoded to measure passages/s.")
    parser.add_argument("--bm25-repeats", type=int, default=5, help="Timed passes over the 441 questions (bm25s).")
    return parser.parse_args(argv)


def recall_table(rows, questions, store, ks=(1, 5, 10)) -> dict:
    """{dataset: {k: mean recall@k}} of ranked row lists, each question's gold passages counted fractionally."""
    table: dict = defaultdict(lambda: defaultdict(list))
    for q, row_list in zip(questions, rows):
        gold = set(q["gold_doc_ids"])
        for k in ks:
            found = {store.ids[r] for r in row_list[:k] if r >= 0}
            table[q["dataset"]][k].append(len(found & gold) / len(gold))
    return {d: {k: float(np.mean(v)) for k, v in table[d].items()} for d in table}


def fused_rows(fuse, bm25_hits, dense_hits, k=10) -> list[list[int]]:
    """Per question, the rows of `fuse(rankings, scores, k)` over the (rows, scores) of both retrievers."""
    (b_rows, b_scores), (d_rows, d_scores) = bm25_hits, dense_hits
    return [[row for row, _ in fuse([br.tolist(), dr.tolist()], [bs.tolist(), ds.tolist()], k)]
            for br, bs, dr, ds in zip(b_rows, b_scores, d_rows, d_scores)]


def print_recall(tables: dict, counts: dict, width: int = 20) -> None:
    print(f"{'dataset':18s} {'n':>4s} | " + " | ".join(f"{n:^{width}s}" for n in tables))
    print(f"{'':18s} {'':>4s} | " + " | ".join(f"{'@1':>6s}{'@5':>7s}{'@10':>7s}".center(width) for _ in tables))
    for d in DATASETS:
        cells = " | ".join(f"{tables[n][d][1]:6.3f}{tables[n][d][5]:7.3f}{tables[n][d][10]:7.3f}".center(width)
                           for n in tables)
        print(f"{d:18s} {counts[d]:4d} | {cells}")


def rank_bm25_recall_and_speed(index, questions, k=10):
    """rank_bm25 BM25Okapi over the same tokens bm25s indexed; returns ({dataset: recall@10}, q/s)."""
    from rank_bm25 import BM25Okapi

    tokenizer = index.tokenizer
    vocab = {v: t for t, v in tokenizer.get_vocab_dict().items()}
    corpus_tokens = tokenizer.tokenize(list(index.store.iter_contents()), update_vocab=False, return_as="ids",
                                       show_progress=False)
    okapi = BM25Okapi([[vocab[i] for i in doc] for doc in corpus_tokens])
    query_tokens = tokenizer.tokenize([q["question"] for q in questions], update_vocab=False, return_as="ids",
                                      show_progress=False)
    queries = [[vocab[i] for i in q if i in vocab] for q in query_tokens]
    start = time.perf_counter()
    tops = [np.argsort(-okapi.get_scores(q), kind="stable")[:k] for q in queries]
    qps = len(queries) / (time.perf_counter() - start)
    recall: dict = defaultdict(list)
    for q, top in zip(questions, tops):
        gold = set(q["gold_doc_ids"])
        recall[q["dataset"]].append(len({index.store.ids[int(r)] for r in top} & gold) / len(gold))
    return {d: float(np.mean(v)) for d, v in recall.items()}, qps


def bm25s_speed(index, questions, repeats: int) -> tuple[float, float]:
    """(batched q/s: all questions in one call, one-at-a-time q/s), best of `repeats` passes."""
    queries = [q["question"] for q in questions]
    index.search(queries, 10)
    batched = []
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, 10)
        batched.append(len(queries) / (time.perf_counter() - start))
    start = time.perf_counter()
    for query in queries:
        index.search([query], 10)
    single = len(queries) / (time.perf_counter() - start)
    return max(batched), single


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from seekrl.envs.bm25 import BM25Index
    from seekrl.envs.corpus import DocStore
    from seekrl.envs.dense import DenseIndex, Encoder, cache_dir, passage_embeddings
    from seekrl.envs.hybrid import HybridIndex, convex_fuse, rrf_fuse

    corpus = args.data / "corpus.jsonl"
    questions = [json.loads(line) for line in (args.data / "questions.jsonl").read_text().splitlines() if line]
    counts = {d: sum(q["dataset"] == d for q in questions) for d in DATASETS}
    print(f"data: {len(questions)} questions {counts}, corpus {corpus}")

    store = DocStore.build(corpus, args.work_dir / "docs", progress=False)
    start = time.perf_counter()
    bm25 = BM25Index.build(store, progress=False)
    print(f"bm25 index built in {time.perf_counter() - start:.1f} s ({len(store)} passages)")

    encoder = Encoder(args.encoder, passage_format=args.passage_format)
    sample = [store.contents[i] for i in range(min(args.encode_sample, len(store)))]
    encoder.encode_passages(sample[:8])
    start = time.perf_counter()
    encoder.encode_passages(sample)
    encode_pps = len(sample) / (time.perf_counter() - start)
    cached = (cache_dir() / f"{encoder.cache_key(store.sha256)}.npy").exists()
    start = time.perf_counter()
    passage_embeddings(encoder, store, progress=True)
    embed_s = time.perf_counter() - start
    dense = DenseIndex.build(store, encoder, progress=False)

    # Both candidate lists are computed once at the hybrid depth; every fused row below goes through the same
    # fuse functions HybridIndex.search uses (its own search is timed at the end and checked against them).
    queries = [q["question"] for q in questions]
    depth = max(args.depth, 100 if args.sweep else 0)
    bm25_hits = bm25.search(queries, depth)
    dense_hits = dense.search(queries, depth)
    top = lambda hits, dp: (hits[0][:, :dp], hits[1][:, :dp])  # noqa: E731
    rrf = lambda rk, sc, k: rrf_fuse(rk, list(args.weights), args.rrf_k, k)  # noqa: E731
    convex = {a: (lambda rk, sc, k, a=a: convex_fuse(rk, sc, [1 - a, a], k, args.norm)) for a in
              sorted({args.alpha, *args.alphas})}
    b, d_ = top(bm25_hits, args.depth), top(dense_hits, args.depth)
    tables = {"bm25": recall_table(bm25_hits[0][:, :10].tolist(), questions, store),
              "dense": recall_table(dense_hits[0][:, :10].tolist(), questions, store),
              "hybrid rrf": recall_table(fused_rows(rrf, b, d_), questions, store),
              f"hybrid convex a={args.alpha:g}": recall_table(fused_rows(convex[args.alpha], b, d_), questions, store)}
    print(f"\n## recall (depth {args.depth}; rrf: k={args.rrf_k:g}, weights {list(args.weights)}; "
          f"convex: (1-a)*bm25 + a*dense, {args.norm} normalisation, a={args.alpha:g} fixed a priori)")
    print_recall(tables, counts)

    grid = {f"convex a={a:g}": recall_table(fused_rows(convex[a], b, d_), questions, store) for a in args.alphas}
    print(f"\n## convex fusion over alpha ({args.norm}; sensitivity only, the default stays a={args.alpha:g})")
    print_recall(grid, counts)

    print("\nhybrid vs the better single retriever at recall@10:")
    all_beat = {}
    for name in ("hybrid rrf", f"hybrid convex a={args.alpha:g}"):
        all_beat[name] = True
        for d in DATASETS:
            best = max(tables["bm25"][d][10], tables["dense"][d][10])
            beat = tables[name][d][10] > best
            all_beat[name] &= beat
            print(f"  {name:22s} {d:18s} {tables[name][d][10]:.3f} vs best single {best:.3f}: "
                  f"{'beats' if beat else 'DOES NOT beat'} ({tables[name][d][10] - best:+.3f})")
    for name, beat in all_beat.items():
        print(f"  {name} beats the better single retriever on every dataset: {beat}")

    hybrid = HybridIndex(bm25, dense, fusion=args.fusion, rrf_k=args.rrf_k, depth=args.depth,
                         weights=tuple(args.weights), alpha=args.alpha, norm=args.norm)
    expected = fused_rows(rrf if args.fusion == "rrf" else convex[args.alpha], b, d_)
    consistent = hybrid.search(queries, 10)[0].tolist() == [r + [-1] * (10 - len(r)) for r in expected]
    print(f"HybridIndex(fusion={args.fusion}).search gives the rows above: {consistent}")

    if args.sweep:
        # Each cell fuses prefixes of the depth-100 rankings exactly as HybridIndex.search does (same rrf_fuse).
        depths = (10, 20, 50, 100)
        print("\n## hybrid RRF recall@10 sensitivity (rows rrf_k, columns depth; cells hotpotqa/musique/2wiki)")
        print(f"{'rrf_k':>6s} | " + " | ".join(f"{'depth ' + str(dp):^20s}" for dp in depths))
        for rrf_k in (1, 10, 30, 60, 100):
            cells = []
            for dp in depths:
                fuse = lambda rk, sc, k, rrf_k=rrf_k: rrf_fuse(rk, list(args.weights), rrf_k, k)  # noqa: E731
                table = recall_table(fused_rows(fuse, top(bm25_hits, dp), top(dense_hits, dp)), questions, store)
                cells.append("/".join(f"{table[d][10]:.3f}" for d in DATASETS))
            print(f"{rrf_k:6d} | " + " | ".join(f"{c:^20s}" for c in cells))

    print("\n## BM25 in-process speed (441 questions, top-10)")
    ours_batched, ours_single = bm25s_speed(bm25, questions, args.bm25_repeats)
    okapi_recall, okapi_qps = rank_bm25_recall_and_speed(bm25, questions)
    agree = all(abs(okapi_recall[d] - tables["bm25"][d][10]) <= 0.03 for d in DATASETS)
    print(f"{'library':28s} {'q/s':>10s}   recall@10 hotpotqa/musique/2wiki")
    print(f"{'seekrl bm25s (batched)':28s} {ours_batched:10.0f}   "
          + "/".join(f"{tables['bm25'][d][10]:.3f}" for d in DATASETS))
    print(f"{'seekrl bm25s (one by one)':28s} {ours_single:10.0f}")
    print(f"{'rank_bm25 BM25Okapi':28s} {okapi_qps:10.1f}   " + "/".join(f"{okapi_recall[d]:.3f}" for d in DATASETS))
    if agree:
        print(f"speedup batched {ours_batched / okapi_qps:.0f}x, one by one {ours_single / okapi_qps:.0f}x")
    else:
        print("speedup NOT reported: the two rankings disagree on recall@10 by more than 0.03")

    dense_qps = _qps(dense, questions)
    hybrid_qps = _qps(hybrid, questions)
    print("\n## dense")
    print(f"encoder {encoder.path} (batch {encoder.batch_size}, passage format {encoder.passage_format}, "
          f"{os.cpu_count()} CPUs)")
    print(f"passage encoding: {encode_pps:.1f} passages/s (sample of {len(sample)})")
    print(f"full corpus embeddings: {'cache hit' if cached else 'computed and cached'} in {embed_s:.1f} s "
          f"({cache_dir()})")
    print(f"query throughput (batched, top-10): dense {dense_qps:.0f} q/s, hybrid {hybrid_qps:.0f} q/s")
    return 0


def _qps(index, questions) -> float:
    queries = [q["question"] for q in questions]
    start = time.perf_counter()
    index.search(queries, 10)
    return len(queries) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
