#!/usr/bin/env bash
# The main job (README.md): sets up .venv, then runs `seekrl quickstart`: AdaSearch in miniature on a synthetic
# knowledge world, offline on a CPU (recipes/quickstart.yaml: SFT warm start, then the solve / label / decide
# stages with GRPO on 2 Ray workers). Prints warm start vs trained agent on held-out questions (EM, search rate,
# F1_aware, reward) and writes quickstart_results.json and training_curves.png into the output directory.
# Extra arguments go to `seekrl quickstart`, e.g. `bash scripts/quickstart.sh --seed 1`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_USAGE_STATS_ENABLED=0 TRL_EXPERIMENTAL_SILENCE=1

# A fresh output directory per run, so a rerun never collides with an earlier one (--out overrides it).
seekrl quickstart --out "runs/quickstart-$(date +%Y%m%d-%H%M%S)" "$@"
