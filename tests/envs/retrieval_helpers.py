"""Loopback servers for the retrieval tests: uvicorn in a thread (seekrl.testing), or the real CLI server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from seekrl.testing import ThreadServer, free_port, start_retriever_process

__all__ = ["ThreadServer", "free_port", "start_cli_server"]


def start_cli_server(index_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    """`seekrl retriever serve` as a subprocess; returns once /health answers."""
    return start_retriever_process(index_dir, port, *extra)
