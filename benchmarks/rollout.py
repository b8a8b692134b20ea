"""Rollout throughput: the batched multi-turn engine side by side with a naive per-sample loop.

The naive loop is what a first implementation does: one trajectory at a time, `model.generate` per turn with
stop strings, re-encoding the whole history every turn, one search call per query. Both run the same
format-trained tiny policy (seekrl.testing) with greedy decoding over the same questions, against BM25 over
the shared multi-hop corpus, in-process and over HTTP (the retrieval server on loopback).

    python benchmarks/rollout.py                       # batch 1, 8, 32; in-process and HTTP
    python benchmarks/rollout.py --batches 32 --env inprocess
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def naive_rollout(model, tokenizer, protocol, client, question: str, config) -> dict:
    """One trajectory, one `generate` call per turn over the full history (no cache reuse, no batching)."""
    from seekrl.agents.protocol import TrajectoryState
    from seekrl.envs.client import ToolError

    text = tokenizer.apply_chat_template(protocol.messages(question), tokenize=False, add_generation_prompt=True)
    context = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_len, generated, state = len(context), 0, TrajectoryState()
    while True:
        budget = min(config.max_new_tokens_per_turn, config.max_total_tokens - (len(context) - prompt_len))
        if budget <= 0:
            break
        ids = torch.tensor([context])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                             stop_strings=list(protocol.stop_strings), tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[0, len(context):].tolist()
        generated += len(new)
        context += new
        ended = not any(s in tokenizer.decode(new[-24:]) for s in protocol.stop_strings)
        state.num_turns += 1
        reaction = protocol.react(protocol.parse(tokenizer.decode(new, skip_special_tokens=True)), state, ended)
        if reaction.kind == "finish":
            break
        if reaction.kind == "search":
            state.num_searches += 1
            try:
                obs = protocol.format_observation(client.search([reaction.query], config.topk)[0])
            except ToolError:
                obs = protocol.search_failed_text
        else:
            obs = reaction.text
        context += tokenizer(obs, add_special_tokens=False)["input_ids"][:config.max_obs_tokens]
    return {"generated": generated, "searches": state.num_searches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    parser.add_argument("--env", default="inprocess,http", help="inprocess, http or both (default both)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per turn (default 48)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from seekrl.agents import SearchR1
    from seekrl.agents.rollout import RolloutConfig, RolloutEngine
    from seekrl.data import load_qa
    from seekrl.envs.client import HTTPClient, InProcessClient
    from seekrl.envs.index import build_index, load_index
    from seekrl.envs.server import create_app
    from seekrl.models import load_model, load_tokenizer
    from seekrl.testing import ThreadServer, tiny_model_dir

    data = Path(args.data)
    batches = [int(b) for b in args.batches.split(",")]
    questions = [r.question for r in load_qa(data / "multihop" / "questions.jsonl", limit=max(batches))]
    policy_dir = tiny_model_dir("searcher")
    model, tokenizer = load_model(policy_dir, dtype="float32"), load_tokenizer(policy_dir)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        print("building BM25 over the multi-hop corpus ...", file=sys.stderr)
        build_index(data / "multihop" / "corpus.jsonl", Path(tmp) / "bm25", "bm25", progress=False)
        index = load_index(Path(tmp) / "bm25")
        server = ThreadServer(create_app(index)).start() if "http" in args.env else None
        clients = {}
        if "inprocess" in args.env:
            clients["inprocess"] = InProcessClient(index)
        if server is not None:
            clients["http"] = HTTPClient(server.url)
        config = RolloutConfig(max_new_tokens_per_turn=args.max_new_tokens, max_total_tokens=512,
                               max_obs_tokens=256, temperature=0.0, max_batch_size=max(batches))
        protocol = SearchR1(max_turns=3)
        print(f"{'env':10s} {'batch':>5s} {'engine':>8s} {'rollouts/s':>11s} {'gen tok/s':>10s} {'searches':>9s} "
              f"{'naive r/s':>10s} {'naive tok/s':>11s} {'speedup':>8s}")
        for env_name, client in clients.items():
            engine = RolloutEngine(model, tokenizer, protocol, client, config)
            engine.run(questions[:2])  # warm-up
            for batch in batches:
                qs = questions[:batch]
                start = time.perf_counter()
                trajs = engine.run(qs)
                fast = time.perf_counter() - start
                fast_tokens = sum(t.num_generated for t in trajs)
                start = time.perf_counter()
                naive = [naive_rollout(model, tokenizer, protocol, client, q, config) for q in qs]
                slow = time.perf_counter() - start
                slow_tokens = sum(r["generated"] for r in naive)
                print(f"{env_name:10s} {batch:5d} {'batched':>8s} {batch / fast:11.2f} {fast_tokens / fast:10.1f} "
                      f"{sum(t.num_searches for t in trajs):9d} {batch / slow:10.2f} {slow_tokens / slow:11.1f} "
                      f"{slow / fast:7.1f}x")
        if server is not None:
            clients["http"].close()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
