"""Run the `>>>` examples of every module in the seekrl packages (docstrings are documentation that must run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

PACKAGES = ["seekrl", "seekrl.agents", "seekrl.envs", "seekrl.rewards", "seekrl.kernels"]


def _optional_dependencies() -> set[str]:
    """Names of the extras in pyproject.toml (`triton`, `rank_bm25`, ...): the only imports allowed to be missing."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"].get("optional-dependencies", {})
    names = {re.match(r"[A-Za-z0-9_.\-]+", req).group(0) for reqs in extras.values() for req in reqs}
    return {name.lower().replace("-", "_") for name in names}


@pytest.fixture(scope="module", autouse=True)
def _one_time_library_logs():
    """Let one-time third-party log lines print before the examples run, not inside one of them.

    DeepSpeed (imported by transformers/accelerate on first use) prints "Setting accelerator to CPU" to stdout
    the first time anything asks for the accelerator; inside a doctest that line would count as the example's
    output, and which example comes first depends on the test order.
    """
    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return
    get_accelerator()


def _module_names() -> list[str]:
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        # walk_packages imports subpackages to look inside them; one that fails to import is still listed (and
        # then fails or skips in its own test below) rather than breaking collection.
        walk = pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.", onerror=lambda name: None)
        names += [info.name for info in walk]
    return sorted(set(names))


@pytest.mark.parametrize("module_name", _module_names())
def test_doctests(module_name):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only an optional extra that is not installed (triton on a CPU box) may skip; a missing required
        # dependency or seekrl module is a real failure.
        if err.name and err.name.split(".")[0].lower() in _optional_dependencies():
            pytest.skip(f"{module_name} needs the optional dependency {err.name!r}, which is not installed")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples in {module_name} failed"
