"""`seekrl retriever build|serve` through the real command line."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from seekrl.cli import app
from seekrl.envs.index import load_index, read_manifest

runner = CliRunner()


def test_build_bm25_then_load(small_corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(app, ["retriever", "build", "--corpus", str(small_corpus), "--kind", "bm25",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "built bm25 index of 200 passages" in result.output
    manifest = read_manifest(out)
    assert manifest["kind"] == "bm25" and manifest["bm25"]["k1"] == 1.5
    assert load_index(out).search(["Constantin Medien"], 1)[0][0, 0] == 0


def test_build_hybrid_records_fusion_parameters(small_corpus, embedding_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SEEKRL_CACHE_DIR", str(embedding_cache.parent))
    out = tmp_path / "hybrid"
    result = runner.invoke(app, ["retriever", "build", "--corpus", str(small_corpus), "--kind", "hybrid",
                                 "--out", str(out), "--fusion", "rrf", "--rrf-k", "30", "--depth", "50",
                                 "--dense-weight", "0.5"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["hybrid"] == {"fusion": "rrf", "rrf_k": 30.0, "depth": 50, "weights": [1.0, 0.5],
                                  "alpha": 0.5, "norm": "minmax"}
    assert manifest["dense"]["encoder"]["name"] == "default"
    assert load_index(out).params == manifest["hybrid"]
    # The passages were encoded once for the whole session: the CLI build reused the cached embeddings.
    assert len(list(embedding_cache.glob("*.npy"))) == 1


def test_build_hybrid_convex_options(small_corpus, embedding_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SEEKRL_CACHE_DIR", str(embedding_cache.parent))
    out = tmp_path / "convex"
    result = runner.invoke(app, ["retriever", "build", "--corpus", str(small_corpus), "--kind", "hybrid",
                                 "--out", str(out), "--alpha", "0.7", "--norm", "zscore"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["hybrid"]["fusion"] == "convex"  # the default fusion
    assert (manifest["hybrid"]["alpha"], manifest["hybrid"]["norm"]) == (0.7, "zscore")
    assert manifest["dense"]["encoder"]["passage_format"] == "title_text"
    assert load_index(out).params == manifest["hybrid"]


def test_user_errors_exit_2_with_one_line(tmp_path, small_corpus):
    cases = [
        ["build", "--corpus", str(tmp_path / "missing.jsonl"), "--kind", "bm25", "--out", str(tmp_path / "o")],
        ["build", "--corpus", str(small_corpus), "--kind", "bm25", "--out", str(tmp_path / "o2"),
         "--faiss-file", str(tmp_path / "nope.index")],
        ["build", "--corpus", str(small_corpus), "--kind", "hybrid", "--out", str(tmp_path / "o3"),
         "--alpha", "2"],
        ["serve", "--index", str(tmp_path)],
        ["serve", "--index", str(tmp_path), "--topk", "0"],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "seekrl.cli", "retriever", *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from seekrl.cli import main; main(['retriever', '--help']) ; "
            "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', 'ray', 'bm25s') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout[-300:]
    assert "build" in proc.stdout and "serve" in proc.stdout
