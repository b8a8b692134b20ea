#!/usr/bin/env bash
# The main job (README.md): sets up .venv, builds a BM25 index over the shared multi-hop corpus, then trains the
# tiny offline Search-R1 agent with GRPO on 2 Ray workers (recipes/search_r1_tiny.yaml) and prints one line per
# step: reward, its components, search rate, turns, tool failures. Extra arguments are recipe overrides,
# e.g. `bash scripts/quickstart.sh grpo.max_steps=4`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_USAGE_STATS_ENABLED=0 TRL_EXPERIMENTAL_SILENCE=1

INDEX=runs/indexes/multihop-bm25
if [ ! -f "$INDEX/manifest.json" ]; then
    seekrl retriever build --corpus ../shared/data/multihop/corpus.jsonl --kind bm25 --out "$INDEX"
fi
# A fresh output directory per run, so a rerun never collides with an earlier one.
seekrl train recipes/search_r1_tiny.yaml "output.dir=runs/quickstart-$(date +%Y%m%d-%H%M%S)" "$@"
