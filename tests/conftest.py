"""Shared test helpers. The real-service fixtures come from the opsbook pytest plugin
(``opsbook.testing``), loaded through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

collect_ignore = ["fixtures"]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_NOTEBOOKS = ROOT / "tests" / "fixtures" / "notebooks"
OPSBOOK = [sys.executable, "-m", "opsbook"]
FIXTURE_SECRET = "hunter2-correct-horse-battery"


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def cli(outputs: Path):
    """Run the real `opsbook` CLI against the fixture notebooks and a private archive."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            notebooks: Path = FIXTURE_NOTEBOOKS) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, **(env or {})}
        argv = [*OPSBOOK, *args]
        if args and args[0] in ("run", "list", "show"):
            argv += ["--notebooks", str(notebooks)]
        if args and args[0] in ("run", "history", "verify"):
            argv += ["--outputs", str(outputs)]
        return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)

    return run
