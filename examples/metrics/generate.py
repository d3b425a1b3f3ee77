"""Regenerate the recorded stable/canary metrics files in this folder (seeded, so byte-identical).

    .venv/bin/python examples/metrics/generate.py [--out examples/metrics] [--seed 7]

Synthetic per-request streams with the distributions of ``benchmarks/bench_canary.py``: 200 requests
per arm per one-minute interval, 60 intervals; latency log-normal with median 120 ms and sigma 0.5
(recorded in **seconds**, as Prometheus exports it); errors Bernoulli 1%; every request labelled,
correct Bernoulli 90%; dissonance ``d`` gamma with shape 2 and scale 0.1. Each interval is reduced to
the aggregates the judge reads (schema in ``opsbook.canary.frames`` and
``opsbook.ops.deploy_new_model.metrics``): counts, latency mean / sample std / p50 / p90 and the mean / sample
std of ln(latency) (latency is judged on the log scale), ``d`` count / mean / sample std, with the
interval's ``start``/``end`` in UTC.

Files:

* ``proposer-canary-healthy.csv``    canary = stable in every metric
* ``proposer-canary-regressed.csv``  canary latency x1.2 (a 20% regression of the median and mean),
                                     everything else equal
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "lib"))  # run from a checkout without installing

from opsbook.ops.deploy_new_model.metrics import save_metrics, validate_metrics  # noqa: E402

INTERVALS = 60
N_REQ = 200
STEP = 60  # seconds per interval
START = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
LAT_MEDIAN_S, LAT_SIGMA = 0.120, 0.5
P_ERR, P_ACC = 0.01, 0.90
D_SHAPE, D_SCALE = 2.0, 0.1

SCENARIOS = {
    "proposer-canary-healthy.csv": {},
    "proposer-canary-regressed.csv": {"lat_scale": 1.2},
}


def interval_row(rng: np.random.Generator, n: int, *, lat_scale: float = 1.0, lat_sigma: float = LAT_SIGMA,
                 p_err: float = P_ERR, p_acc: float = P_ACC, d_scale: float = 1.0) -> dict[str, float]:
    """One arm's aggregates for one interval of ``n`` requests."""
    lat = rng.lognormal(math.log(LAT_MEDIAN_S * lat_scale), lat_sigma, n)
    d = rng.gamma(D_SHAPE, D_SCALE * d_scale, n)
    return {
        "requests": n,
        "errors": int(rng.binomial(n, p_err)),
        "labelled": n,
        "correct": int(rng.binomial(n, p_acc)),
        "latency_mean": float(lat.mean()),
        "latency_std": float(lat.std(ddof=1)),
        "latency_p50": float(np.quantile(lat, 0.5)),
        "latency_p90": float(np.quantile(lat, 0.9)),
        "latency_logmean": float(np.log(lat).mean()),
        "latency_logstd": float(np.log(lat).std(ddof=1)),
        "d_count": n,
        "d_mean": float(d.mean()),
        "d_std": float(d.std(ddof=1)),
    }


def scenario_frame(seed: int, canary: dict[str, float], *, intervals: int = INTERVALS,
                   n: int = N_REQ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, intervals + 1):
        start = START + dt.timedelta(seconds=STEP * (i - 1))
        for arm, kw in (("stable", {}), ("canary", canary)):
            rows.append({"interval": i, "arm": arm, "start": start, "end": start + dt.timedelta(seconds=STEP),
                         **interval_row(rng, n, **kw)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    for k, (name, canary) in enumerate(SCENARIOS.items()):
        frame = scenario_frame(args.seed + k, canary)
        path = save_metrics(validate_metrics(frame), args.out / name)
        print(f"wrote {path} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
