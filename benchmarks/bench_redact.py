"""Benchmark of the redactor: a ~5 MB executed notebook, 5 registered secrets, every encoded form.

    python benchmarks/bench_redact.py [--mb 5] [--repeat 5]

The baseline, in the same process and over the same notebook, is one regex of the raw values only
(what a redactor that knows no encodings would do); the ratio is the price of recognising every
form a value takes (base64 at three offsets, hex, URL, repr/JSON and HTML escapes: see
``opsbook.secrets.Redactor``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))  # run from a checkout

from opsbook import secrets  # noqa: E402

WORDS = ["pod", "web-0", "Running", "ready", "namespace", "ml-platform", "replicas", "INFO", "GET", "/healthz",
         "200", "OK", "latency_ms=", "12", "kube-system", "deployment", "rollout", "image:", "v1.2.3", "node-7"]


def notebook(mb: float, values: list[str], rnd: random.Random) -> dict:
    cells, size, i = [], 0.0, 0
    while size < mb * 1e6:
        text = "".join(" ".join(rnd.choice(WORDS) for _ in range(12)) + "\n" for _ in range(40))
        if i % 50 == 0:
            text += f"connecting with {values[i % len(values)]}\n"
        html_out = "<table>" + "".join(f"<tr><td>{w}</td></tr>" for w in text.split()[:60]) + "</table>"
        cells.append({"cell_type": "code", "source": f"run.step('step {i}', fn)", "metadata": {}, "execution_count": i,
                      "outputs": [{"output_type": "stream", "name": "stdout", "text": text},
                                  {"output_type": "display_data", "metadata": {},
                                   "data": {"text/plain": text[:500], "text/html": html_out}}]})
        size += len(text) * 1.1 + len(html_out) + 100
        i += 1
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    rnd = random.Random(15)
    values = ["hunter2-correct-horse-battery", "p@ss w/rd+=%&<>'\"é", "AKIAABCDEFGHIJKLMNOP",
              "ghp_" + "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(36)), "Zq7!"]
    nb = notebook(args.mb, values, rnd)
    text = json.dumps(nb)
    t0 = time.perf_counter()
    red = secrets.Redactor(values)
    red.redact("warm")  # compiles the pattern
    t_build = time.perf_counter() - t0
    raw = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))

    t_obj = best_of(lambda: red.redact_obj(nb), args.repeat)
    t_text = best_of(lambda: red.redact(text), args.repeat)
    t_base = best_of(lambda: raw.sub(secrets.MASK, text), args.repeat)
    assert not any(v in red.redact(text) for v in values)
    print(f"redactor, {len(text) / 1e6:.1f} MB notebook JSON, {len(nb['cells'])} cells, {len(values)} secrets "
          f"({len(red.values())} forms; built and compiled in {t_build * 1000:.1f} ms); best of {args.repeat}")
    print(f"  redact_obj(notebook)                     {t_obj * 1000:8.1f} ms")
    print(f"  redact(notebook JSON text)               {t_text * 1000:8.1f} ms")
    print(f"  baseline: one regex of the raw values    {t_base * 1000:8.1f} ms")
    print(f"  every form / raw values only: {t_text / t_base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
