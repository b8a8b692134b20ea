"""The distribution installs one `seekrl` namespace and nothing generic at top level."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    mapping = setuptools_cfg["package-dir"]
    listed = set(setuptools_cfg["packages"])
    found = set()
    for package, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found == listed, f"pyproject packages differ from folders: missing {found - listed}, stale {listed - found}"


def test_import_from_outside_the_repo(tmp_path):
    code = (
        "import importlib.util, seekrl, seekrl.agents, seekrl.envs, seekrl.rewards, seekrl.kernels\n"
        "import os\n"
        "for mod in (seekrl.agents, seekrl.envs, seekrl.rewards, seekrl.kernels):\n"
        "    print(mod.__name__, os.path.dirname(mod.__file__))\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print('kernels', spec.origin if spec else None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines["seekrl.agents"] == str(REPO / "agents")
    assert lines["seekrl.kernels"] == str(REPO / "kernels")
    # `import kernels` must not find this project's kernels/ folder (PyPI's `kernels` is a different package).
    assert not lines["kernels"].startswith(str(REPO)), lines["kernels"]
    for name in ("agents", "envs", "rewards"):
        spec_out = subprocess.run(
            [sys.executable, "-c", f"import importlib.util as u; s = u.find_spec('{name}'); print(s and s.origin)"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert not spec_out.startswith(str(REPO)), f"top-level '{name}' resolves into the repo: {spec_out}"


def _subcommands(help_text: str) -> list[str]:
    # Rows of the "Commands" panel look like "│ name   description │".
    panel = help_text.split("Commands", 1)[1]
    return re.findall(r"^│ (\w[\w-]*)\s", panel, flags=re.M)


def test_help_lists_only_working_subcommands():
    exe = Path(sys.executable).parent / "seekrl"
    env = dict(os.environ, COLUMNS="120", TERM="dumb")
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env, check=True).stdout
    commands = _subcommands(top)
    assert "version" in commands and "recipe" in commands
    for command in commands:
        result = subprocess.run([str(exe), command, "--help"], capture_output=True, text=True, env=env)
        assert result.returncode == 0, f"`seekrl {command} --help` failed: {result.stderr}"
    version = subprocess.run([str(exe), "version"], capture_output=True, text=True, env=env, check=True).stdout
    assert version.startswith("seekrl 0.") and "transformers" in version
