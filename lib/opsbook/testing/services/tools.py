"""The ``helm`` and ``kubectl`` fixtures: the real binaries ``make setup`` puts in the venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .process import (
    venv_bin,
)


def _venv_tool(name: str, probe: list[str]) -> Path:
    path = venv_bin() / name
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found at {path}: run `make setup` (scripts/install-tools.sh installs it)",
            pytrace=False,
        )
    res = subprocess.run([str(path), *probe], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        pytest.fail(
            f"{path} {' '.join(probe)} exited {res.returncode}: {res.stdout}{res.stderr}\n"
            "run `make setup` to reinstall it",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the real ``helm`` (v3.17) in the venv."""
    return _venv_tool("helm", ["version", "--short"])


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """Path of the real ``kubectl`` in the venv."""
    return _venv_tool("kubectl", ["version", "--client"])
