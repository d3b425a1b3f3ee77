"""Command-line tools the runbooks drive (helm, kubectl, ...): where they are and which version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from opsbook.errors import CommandFailed, TimedOut

# how each tool reports its version without a cluster
_VERSION_ARGS: dict[str, list[str]] = {
    "helm": ["version", "--short"],
    "kubectl": ["version", "--client", "-o", "json"],
    "psql": ["--version"],
    "pg_dump": ["--version"],
    "prometheus": ["--version"],
}


@dataclass(frozen=True)
class ToolInfo:
    name: str
    path: str | None
    version: str | None
    error: str | None = None


class Tools:
    """Finds binaries on PATH, preferring the active virtualenv's ``bin`` (where ``make setup`` puts
    helm and kubectl), and runs them with a timeout."""

    def __init__(self, *, extra_dirs: list[str] | None = None, timeout: float = 15.0):
        venv_bin = str(Path(sys.executable).parent)
        self.search_path = os.pathsep.join([*(extra_dirs or []), venv_bin, os.environ.get("PATH", "")])
        self.timeout = timeout

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.search_path)

    def run(self, name: str, args: list[str], *, timeout: float | None = None) -> str:
        path = self.which(name)
        if path is None:
            raise CommandFailed(f"{name} is not installed (not on PATH nor in {Path(sys.executable).parent})")
        try:
            proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimedOut(f"{name} {' '.join(args)} did not finish in {exc.timeout} s") from exc
        if proc.returncode != 0:
            raise CommandFailed(f"{name} {' '.join(args)} exited {proc.returncode}", command=[path, *args],
                                returncode=proc.returncode, stderr=proc.stderr)
        return proc.stdout

    def info(self, name: str) -> ToolInfo:
        path = self.which(name)
        if path is None:
            return ToolInfo(name, None, None, "not installed")
        try:
            out = self.run(name, _VERSION_ARGS.get(name, ["--version"]))
        except (CommandFailed, TimedOut) as exc:
            return ToolInfo(name, path, None, str(exc).splitlines()[0])
        if name == "kubectl":
            try:
                return ToolInfo(name, path, json.loads(out)["clientVersion"]["gitVersion"])
            except (ValueError, KeyError):
                pass
        return ToolInfo(name, path, (out.strip().splitlines() or [""])[0])
