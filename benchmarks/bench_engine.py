"""Engine benchmarks: `opsbook run` against bare papermill, and `opsbook --help` start-up.

Each figure is a ratio against a baseline measured in the same process, alternating runs so that
machine noise hits both sides alike:

* run overhead: ``opsbook run trivial`` (validation, progress, redaction, HTML, manifest, ledger)
  vs ``papermill trivial.ipynb out.ipynb`` on the same notebook, both as fresh processes.
  Target: ratio <= 1.25.
* ``opsbook --help`` wall time vs ``python -c pass``. Target: < 0.3 s absolute.

Usage: python benchmarks/bench_engine.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "tests" / "fixtures" / "notebooks"
BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": "benchmark-secret-value"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        opsbook_cmd = [str(BIN / "opsbook"), "run", "trivial", "--quiet", "--notebooks", str(NOTEBOOKS),
                       "--outputs", str(out / "outputs")]
        papermill_cmd = [str(BIN / "papermill"), "--no-progress-bar", "--cwd", str(NOTEBOOKS),
                         str(NOTEBOOKS / "trivial.ipynb"), str(out / "pm.ipynb")]
        timed(papermill_cmd, env)  # warm the file cache and the kernel spec lookup
        ops_t, pm_t = [], []
        for _ in range(args.runs):
            pm_t.append(timed(papermill_cmd, env))
            ops_t.append(timed(opsbook_cmd, env))
        help_t, py_t = [], []
        for _ in range(10):
            py_t.append(timed([sys.executable, "-c", "pass"], env))
            help_t.append(timed([str(BIN / "opsbook"), "--help"], env))
    pm, ops = statistics.median(pm_t), statistics.median(ops_t)
    hp, py = statistics.median(help_t), statistics.median(py_t)
    table = Table(title=f"engine benchmarks (median of {args.runs} runs; --help median of 10)")
    for col in ("measure", "opsbook", "baseline", "ratio", "target", "result"):
        table.add_column(col)
    table.add_row("run trivial notebook", f"{ops:.2f} s", f"papermill {pm:.2f} s", f"{ops / pm:.2f}",
                  "ratio <= 1.25", "PASS" if ops / pm <= 1.25 else "MISS")
    table.add_row("opsbook --help", f"{hp * 1000:.0f} ms", f"python -c pass {py * 1000:.0f} ms", f"{hp / py:.2f}",
                  "< 300 ms", "PASS" if hp < 0.3 else "MISS")
    Console().print(table)


if __name__ == "__main__":
    main()
