#!/usr/bin/env bash
# The test command (README.md, .ci/run): sets up .venv, then runs the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_config.py -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Triton kernels run on CPU through the interpreter; it must be set before triton is imported.
export TRITON_INTERPRET=1
# Nothing may reach a model or dataset hub: tests build their models and data locally.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export RAY_USAGE_STATS_ENABLED=0
set +e
python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests" >&2; exit 1; fi
exit "$rc"
