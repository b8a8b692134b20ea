"""`seekrl submit` and `seekrl jobs` against a real local Ray head started by the test (loopback only)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from seekrl.testing import free_port

BIN = Path(sys.executable).parent
SEEKRL, RAY = str(BIN / "seekrl"), str(BIN / "ray")


def _stop_cluster(temp_dir: str) -> None:
    """End this head's processes only (found by its temp dir), with their children; `ray stop` would end every
    Ray instance on the machine."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in (proc.info["cmdline"] or [])):
            procs += [proc, *proc.children(recursive=True)]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=20)
    for proc in alive:
        proc.kill()


@pytest.fixture()
def ray_head():
    # A short temp dir: Ray's socket paths must stay under the 107-character limit.
    temp_dir = tempfile.mkdtemp(prefix="srh", dir="/tmp")
    port, dashboard = free_port(), free_port()
    # Ray's token authentication, with a token of this test's own, for the head and for every client command.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
                    "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}",
                    # Ports of its own: an embedded cluster from an earlier test in this process keeps the
                    # default agent port (52365), and a head whose job agent cannot bind never accepts jobs.
                    f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                    f"--metrics-export-port={free_port()}"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _stop_cluster(temp_dir)
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ.pop(key, None)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_runs_a_tiny_job_and_jobs_show_it(ray_head, tiny_searcher_dir, bm25_dir, shared_data, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = {
        "name": "submitted",
        "model": {"name_or_path": str(tiny_searcher_dir), "dtype": "float32"},
        "data": {"train": [{"path": str(shared_data / "multihop" / "questions.jsonl"), "limit": 4}]},
        "env": {"kind": "index", "index_dir": str(bm25_dir), "topk": 2},
        "rollout": {"max_new_tokens_per_turn": 16, "max_total_tokens": 96, "max_obs_tokens": 32},
        "rewards": [{"name": "format", "args": {"protocol": "search_r1"}}],
        "grpo": {"num_generations": 2, "per_device_train_batch_size": 2, "max_steps": 1, "save_steps": 1},
        "ray": {"num_workers": 1},
        "output": {"dir": str(tmp_path / "run")},
    }
    Path("recipe.yaml").write_text("# seekrl submit recipe.yaml\n" + yaml.safe_dump(recipe))
    bad = subprocess.run([SEEKRL, "submit", "recipe.yaml", "grpo.num_generation=2", "--address", ray_head],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "did you mean 'grpo.num_generations'" in bad.stderr

    submitted = subprocess.run([SEEKRL, "submit", "recipe.yaml", "--address", ray_head], capture_output=True,
                               text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.strip().splitlines()[-1]
    deadline, status = time.monotonic() + 600, ""
    while time.monotonic() < deadline:
        status = subprocess.run([SEEKRL, "jobs", "status", job_id, "--address", ray_head], capture_output=True,
                                text=True, timeout=60).stdout.strip()
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = subprocess.run([SEEKRL, "jobs", "logs", job_id, "--address", ray_head], capture_output=True, text=True,
                          timeout=60).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    assert "done: 1 steps; model saved to" in logs
    assert (tmp_path / "run" / "final" / "recipe.yaml").exists()
    unknown = subprocess.run([SEEKRL, "jobs", "status", "raysubmit_nope", "--address", ray_head],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "raysubmit_nope" in unknown.stderr
