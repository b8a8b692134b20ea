"""Agent server: requests/s and latency with dynamic batching and without, plus a bounded load test.

Starts two real `seekrl serve` processes on free loopback ports, both with the same checkpoint and BM25 searched
in-process: one batching (`--max-batch-size 32`), one not (`--max-batch-size 1`). Then, in one run:
1. correctness: the same questions asked one at a time of the unbatched server and all at once of the batched
   one must get identical answers and searches (greedy decoding); speedups are not reported when they differ;
2. p50/p95 latency and requests/s at each concurrency (default 1, 8, 16, 32) for both servers side by side, and
   the batching speedup at each (target >= 3x at concurrency 16);
3. a load test on the batching server: 32 users x 30 s (default); target zero 5xx, and the server's memory
   (RSS, sampled every second) stable: the last tenth of the samples within 10% of the first tenth.

Users are threads in this process sharing one pooled httpx.Client; the servers run in their own processes with
OMP_NUM_THREADS from this environment (set it to 1 on a shared machine).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/serve.py
    python benchmarks/serve.py --cell-seconds 5 --concurrency 1,16 --load-seconds 10
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from seekrl.testing import free_port

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="seekrl-tiny-searcher",
                        help="Checkpoint served (default: the tiny format-trained searcher, built offline).")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "multihop",
                        help="Folder with corpus.jsonl (indexed with BM25) and questions.jsonl (asked).")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench_serve",
                        help="Where the BM25 index is built.")
    parser.add_argument("--concurrency", default="1,8,16,32", help="Comma-separated numbers of concurrent users.")
    parser.add_argument("--cell-seconds", type=float, default=10.0, help="Duration of each server x concurrency cell.")
    parser.add_argument("--batch-size", type=int, default=32, help="--max-batch-size of the batching server.")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="--max-wait-ms of the batching server.")
    parser.add_argument("--load-clients", type=int, default=32, help="Concurrent users in the load test.")
    parser.add_argument("--load-seconds", type=float, default=30.0, help="Load test duration.")
    parser.add_argument("--max-total-tokens", type=int, default=512, help="Rollout limit of both servers.")
    parser.add_argument("--max-new-tokens-per-turn", type=int, default=64, help="Rollout limit of both servers.")
    parser.add_argument("--max-obs-tokens", type=int, default=192, help="Rollout limit of both servers.")
    return parser.parse_args(argv)


def start_serve(args, index_dir: Path, batch_size: int) -> tuple[subprocess.Popen, str]:
    """`seekrl serve` in its own process; returns (process, url) once /health answers."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "seekrl.cli", "serve", "--model", args.model, "--retriever", str(index_dir),
           "--port", str(port), "--max-batch-size", str(batch_size), "--max-wait-ms", str(args.max_wait_ms),
           "--max-total-tokens", str(args.max_total_tokens), "--max-new-tokens-per-turn",
           str(args.max_new_tokens_per_turn), "--max-obs-tokens", str(args.max_obs_tokens), "--hardware", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"seekrl serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("seekrl serve did not start in 300 s")


def run_users(user, count: int) -> float:
    """Run `count` threads of `user(i)` to the end; returns the wall time."""
    threads = [threading.Thread(target=user, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def ask_all(url: str, questions: list[str], concurrent: bool) -> list[dict]:
    """Answers to `questions`, asked one at a time or all at once."""
    import httpx

    answers: list = [None] * len(questions)
    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=len(questions))) as client:
        def ask(i: int) -> None:
            answers[i] = client.post(url + "/v1/answer", json={"question": questions[i]}).json()

        if concurrent:
            run_users(ask, len(questions))
        else:
            for i in range(len(questions)):
                ask(i)
    return answers


def cell(url: str, questions: list[str], concurrency: int, seconds: float):
    """`concurrency` users asking questions back to back for `seconds`: (latencies, statuses, requests/s)."""
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=300) as client:
        def user(i: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                question = questions[(i * 7 + n) % len(questions)]
                n += 1
                start = time.perf_counter()
                try:
                    status = client.post(url + "/v1/answer", json={"question": question}).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses.append(status)

        elapsed = run_users(user, concurrency)
    return np.array(latencies), statuses, len(statuses) / elapsed


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def batch_sizes(url: str) -> tuple[float, float]:
    """(number of batches, requests batched) from the server's /metrics."""
    import httpx

    page = httpx.get(url + "/metrics").text
    values = {name: float(v) for name, v in re.findall(r"^(seekrl_serve_batch_size_(?:count|sum)) (\S+)$", page, re.M)}
    return values.get("seekrl_serve_batch_size_count", 0.0), values.get("seekrl_serve_batch_size_sum", 0.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    from seekrl.envs.index import build_index
    from seekrl.models import resolve_model_path

    resolve_model_path(args.model)  # builds the tiny model once here, not in both servers at the same time
    questions = [json.loads(line)["question"] for line in (args.data / "questions.jsonl").read_text().splitlines()]
    index_dir = args.work_dir / "bm25"
    build_index(args.data / "corpus.jsonl", index_dir, "bm25", overwrite=True, progress=False)
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    batched, batched_url = start_serve(args, index_dir, args.batch_size)
    single, single_url = start_serve(args, index_dir, 1)
    try:
        print(f"model {args.model}, BM25 over {args.data / 'corpus.jsonl'} in the server process, "
              f"{len(questions)} questions; limits: {args.max_total_tokens} total / {args.max_new_tokens_per_turn} "
              f"per turn / {args.max_obs_tokens} observation tokens; OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs shared with the load generator "
              "(and with anything else running)")
        sample = questions[:32]
        alone = ask_all(single_url, sample, concurrent=False)
        together = ask_all(batched_url, sample, concurrent=True)
        identical = all(a["answer"] == b["answer"] and a["searches"] == b["searches"] for a, b in zip(alone, together))
        searched = sum(a["num_searches"] > 0 for a in alone)
        print(f"correctness: {len(sample)} questions answered alone (batching off) and all at once (batching on) "
              f"give identical answers and searches: {identical} ({searched} of them searched)")

        print(f"\n## requests/s and latency (batching: --max-batch-size {args.batch_size} --max-wait-ms "
              f"{args.max_wait_ms:g}; off: --max-batch-size 1)")
        print(f"{'conc':>5s} | {'batching req/s':>14s} {'p50 ms':>8s} {'p95 ms':>8s} {'mean batch':>10s} | "
              f"{'off req/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} | {'speedup':>7s} {'errors':>6s}")
        speedups = {}
        for concurrency in concurrencies:
            before = batch_sizes(batched_url)
            lat_b, status_b, rps_b = cell(batched_url, questions, concurrency, args.cell_seconds)
            after = batch_sizes(batched_url)
            mean_batch = (after[1] - before[1]) / max(1.0, after[0] - before[0])
            lat_s, status_s, rps_s = cell(single_url, questions, concurrency, args.cell_seconds)
            errors = sum(s != 200 for s in status_b + status_s)
            speedups[concurrency] = rps_b / rps_s
            shown = f"{speedups[concurrency]:6.2f}x" if identical else "   n/a"
            print(f"{concurrency:5d} | {rps_b:14.2f} {np.percentile(lat_b, 50) * 1e3:8.0f} "
                  f"{np.percentile(lat_b, 95) * 1e3:8.0f} {mean_batch:10.1f} | {rps_s:9.2f} "
                  f"{np.percentile(lat_s, 50) * 1e3:8.0f} {np.percentile(lat_s, 95) * 1e3:8.0f} | {shown} {errors:6d}")
        if not identical:
            print("speedups NOT reported: batched answers differ from unbatched answers")
        elif 16 in speedups:
            print(f"batching speedup at concurrency 16: {speedups[16]:.2f}x (target >= 3x)")

        single.terminate()
        single.wait(timeout=30)
        print(f"\n## load test: {args.load_clients} users x {args.load_seconds:g} s on the batching server")
        memory: list[float] = []
        done = threading.Event()

        def sample_memory() -> None:
            while not done.wait(1.0):
                memory.append(rss_mb(batched.pid))

        sampler = threading.Thread(target=sample_memory)
        start_rss = rss_mb(batched.pid)
        sampler.start()
        latencies, statuses, rps = cell(batched_url, questions, args.load_clients, args.load_seconds)
        done.set()
        sampler.join()
        tenth = max(1, len(memory) // 10)
        first, last = float(np.mean(memory[:tenth])), float(np.mean(memory[-tenth:]))
        stable = last <= 1.10 * first
        server_errors = sum(s >= 500 for s in statuses)
        failed = sum(s == 0 for s in statuses)
        print(f"requests {len(statuses)}, {rps:.2f} req/s, p50 {np.percentile(latencies, 50) * 1e3:.0f} ms, p95 "
              f"{np.percentile(latencies, 95) * 1e3:.0f} ms; 5xx {server_errors}, connection errors {failed}, "
              f"other non-200 {sum(0 < s != 200 and s < 500 for s in statuses)}")
        print(f"server RSS: {start_rss:.0f} MB before, first tenth {first:.0f} MB, last tenth {last:.0f} MB, max "
              f"{max(memory):.0f} MB -> {'stable' if stable else 'GREW'}; server alive after: {batched.poll() is None}")
        ok = server_errors == 0 and failed == 0 and stable and batched.poll() is None and identical
        print(f"load test {'PASSED' if ok else 'FAILED'} (zero 5xx, memory stable, answers identical)")
    finally:
        for proc in (batched, single):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
