"""Latency judged on the log scale: bucket log moments, specs, summaries, the judge, the frame adapter,
the Prometheus bucket query and the engine's log branch (fixed seeds throughout)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from opsbook.canary import (
    DISSONANCE,
    LATENCY,
    CanaryJudge,
    JudgeConfig,
    MetricSpec,
    Summary,
    inputs_from_frame,
    judge_frame,
)
from opsbook.canary._engine import estimates_continuous, sample_fields
from opsbook.canary.frames import Z90, log_moments_from_buckets
from opsbook.canary.spec import lognormal_moments
from opsbook.errors import Invalid
from opsbook.ops.deploy_new_model import metrics as cm

MU, SIGMA = math.log(0.12), 0.5
BOUNDS = [0.01 * 1.25**k for k in range(26)] + [math.inf]   # 10 ms .. 2.65 s, x1.25, +Inf


def _cumulative(x: np.ndarray, bounds=BOUNDS) -> np.ndarray:
    return np.array([(x <= b).sum() for b in bounds], dtype=float)


# -- 1. log_moments_from_buckets ------------------------------------------------------------------

def test_bucket_moments_match_the_samples_log_moments():
    x = np.random.default_rng(1).lognormal(MU, SIGMA, 20_000)
    n, m, s = log_moments_from_buckets(BOUNDS, _cumulative(x))
    assert n == 20_000
    assert abs(m - np.log(x).mean()) < 0.01
    assert abs(s - np.log(x).std(ddof=1)) < 0.02
    perm = np.random.default_rng(2).permutation(len(BOUNDS))      # any order of the bounds
    n2, m2, s2 = log_moments_from_buckets(np.array(BOUNDS)[perm], _cumulative(x)[perm])
    assert [float(v) for v in (n2, m2, s2)] == pytest.approx([float(v) for v in (n, m, s)], rel=1e-12)


def test_bucket_moments_batch_zero_count_and_noisy_cumulative_counts():
    x = np.random.default_rng(3).lognormal(MU, SIGMA, 500)
    batch = np.stack([_cumulative(x), np.zeros(len(BOUNDS))])
    n, m, s = log_moments_from_buckets(BOUNDS, batch)
    assert n.tolist() == [500.0, 0.0] and np.isnan(m[1]) and np.isnan(s[1]) and np.isfinite(m[0])
    # increase() extrapolation can make a cumulative sequence dip: the dip is no negative count
    b = [0.1, 0.2, 0.4, math.inf]
    noisy = [float(v) for v in log_moments_from_buckets(b, [5.0, 4.0, 10.0, 10.0])]
    monotone = [float(v) for v in log_moments_from_buckets(b, [5.0, 5.0, 10.0, 10.0])]
    assert noisy == pytest.approx(monotone, rel=1e-12)
    mids = np.log([0.1 / math.sqrt(2), math.sqrt(0.2 * 0.4)])          # 5 in bucket 1, 5 in bucket 3
    assert noisy[1] == pytest.approx(mids.mean()) and noisy[2] == pytest.approx(np.std(np.repeat(mids, 5), ddof=1))


def test_bucket_moments_accept_an_empty_zero_bucket():
    with_zero = log_moments_from_buckets([0.0, 0.1, 0.2, math.inf], [0.0, 5.0, 8.0, 10.0])
    without = log_moments_from_buckets([0.1, 0.2, math.inf], [5.0, 8.0, 10.0])
    assert [float(v) for v in with_zero] == pytest.approx([float(v) for v in without], rel=1e-12)


@pytest.mark.parametrize(("bounds", "cum", "match"), [
    ([0.1, math.inf], [3.0, 4.0], "two positive finite"),
    ([-1.0, 0.1, math.inf], [0.0, 3.0, 4.0], "two positive finite"),
    ([0.1, 0.2, math.inf], [1.0, 2.0, 3.0, 4.0], "bucket bounds"),
    ([[0.1, 0.2]], [1.0, 2.0], "bucket bounds"),
    ([0.0, 0.1, 0.2, math.inf], [1.0, 3.0, 4.0, 4.0], "at or below 0"),
])
def test_bucket_moments_refuse_bad_bounds(bounds, cum, match):
    with pytest.raises(ValueError, match=match):
        log_moments_from_buckets(bounds, cum)


# -- 2. MetricSpec ---------------------------------------------------------------------------------

def test_spec_scale_validation():
    with pytest.raises(ValueError, match=r"'lat'.*scale 'sqrt'"):
        MetricSpec("lat", "continuous", True, scale="sqrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'err'.*scale='log'"):
        MetricSpec("err", "bernoulli", True, scale="log", successes="errors", trials="requests")
    assert LATENCY.scale == "log" and DISSONANCE.scale == "linear"


# -- 3. Summary ------------------------------------------------------------------------------------

def test_summary_log_fields_validation_and_moments():
    with pytest.raises(ValueError, match="together"):
        Summary(10, 1.0, 0.5, log_mean=0.0)
    with pytest.raises(ValueError, match="log_std"):
        Summary(10, 1.0, 0.5, None, 0.0, -0.1)
    x = np.random.default_rng(4).lognormal(MU, SIGMA, 300)
    s = Summary.from_samples(x)
    assert s.log_mean == pytest.approx(np.log(x).mean(), rel=1e-12)
    assert s.log_std == pytest.approx(np.log(x).std(ddof=1), rel=1e-12)
    assert s.log_moments() == (s.log_mean, s.log_std)
    z = Summary.from_samples(np.append(x, 0.0))
    assert z.log_mean is None and z.log_std is None and z.n == 301
    plain = Summary(300, float(x.mean()), float(x.std(ddof=1)))
    assert plain.log_moments() == pytest.approx(lognormal_moments(x.mean(), x.std(ddof=1)), rel=1e-12)
    mu, sigma = -2.0, 0.4                              # exact log-normal mean/std -> (mu, sigma) back
    mean = math.exp(mu + sigma**2 / 2)
    assert Summary(100, mean, mean * math.sqrt(math.expm1(sigma**2))).log_moments() == pytest.approx((mu, sigma))
    assert all(math.isnan(v) for v in lognormal_moments(-1.0, 1.0))


# -- 4. CanaryJudge --------------------------------------------------------------------------------

def test_judge_refuses_non_positive_latency_samples():
    x = np.random.default_rng(5).lognormal(MU, SIGMA, 200)
    with pytest.raises(ValueError, match="log scale"):
        CanaryJudge((LATENCY,)).update({"latency": -x}, {"latency": x})


def test_judge_refuses_latency_samples_with_a_zero():
    x = np.random.default_rng(5).lognormal(MU, SIGMA, 200)
    with pytest.raises(ValueError, match="log scale"):
        CanaryJudge((LATENCY,)).update({"latency": np.append(x, 0.0)}, {"latency": x})


def _latency_change(stable: Summary, canary: Summary) -> float:
    judge = CanaryJudge((LATENCY,), JudgeConfig(warmup=0))  # one interval, judged
    return judge.update({"latency": stable}, {"latency": canary}).metrics["latency"].relative_change


def test_judge_uses_the_log_fields_of_a_summary():
    lin = {"n": 200, "mean": 0.135, "std": 0.07, "tail": 0.2}
    stable = Summary(**lin, log_mean=MU, log_std=SIGMA)
    up = _latency_change(stable, Summary(**lin, log_mean=MU + 0.1, log_std=SIGMA))
    down = _latency_change(stable, Summary(**lin, log_mean=MU - 0.1, log_std=SIGMA))
    assert up == pytest.approx(math.expm1(0.1)) and down == pytest.approx(math.expm1(-0.1))
    assert _latency_change(Summary(**lin), Summary(**lin)) == pytest.approx(0.0, abs=1e-12)


def test_judge_relative_change_is_the_ratio_of_geometric_means():
    rng = np.random.default_rng(6)
    xs, xc = rng.lognormal(MU, SIGMA, 400), rng.lognormal(MU + 0.05, SIGMA, 400)
    r = CanaryJudge((LATENCY,), JudgeConfig(warmup=0)).update({"latency": xs}, {"latency": xc}).metrics["latency"]
    assert r.relative_change == pytest.approx(math.expm1(np.log(xc).mean() - np.log(xs).mean()), rel=1e-9)
    assert r.stable == pytest.approx(math.exp(np.log(xs).mean()), rel=1e-12)


# -- 5. frames -------------------------------------------------------------------------------------

def _frame(intervals: int = 4, n: int = 300, seed: int = 9, lat_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(intervals):
        for arm in ("stable", "canary"):
            lat = rng.lognormal(MU + (lat_shift if arm == "canary" else 0.0), SIGMA, n)
            d = rng.gamma(2.0, 0.1, n)
            rows.append({"interval": t, "arm": arm, "requests": n, "errors": rng.binomial(n, 0.01),
                         "labelled": n // 2, "correct": rng.binomial(n // 2, 0.9),
                         "latency_mean": lat.mean(), "latency_std": lat.std(ddof=1),
                         "latency_p50": np.quantile(lat, 0.5), "latency_p90": np.quantile(lat, 0.9),
                         "latency_logmean": np.log(lat).mean(), "latency_logstd": np.log(lat).std(ddof=1),
                         "d_mean": d.mean(), "d_std": d.std(ddof=1), "d_count": n})
    return pd.DataFrame(rows)


LINEAR = ["latency_mean", "latency_std", "latency_p50"]


def test_frame_with_log_columns_only():
    frame = _frame().drop(columns=LINEAR)
    s = inputs_from_frame(frame)[1].canary["latency"]
    row = frame[(frame["interval"] == 1) & (frame["arm"] == "canary")].iloc[0]
    assert (s.log_mean, s.log_std) == (row["latency_logmean"], row["latency_logstd"])
    assert s.mean == pytest.approx(math.exp(row["latency_logmean"] + row["latency_logstd"] ** 2 / 2))
    judge = judge_frame(_frame(intervals=12, lat_shift=math.log(1.3)).drop(columns=LINEAR))
    assert judge.verdict.decision == "rollback" and judge.verdict.metrics["latency"].status == "regressed"


@pytest.mark.parametrize("mutate", [lambda f: f.drop(columns="latency_logstd"),
                                    lambda f: f.assign(latency_logstd=-0.1)])
def test_frame_rejects_missing_or_negative_logstd(mutate):
    with pytest.raises(ValueError, match="'latency_logstd'"):
        inputs_from_frame(mutate(_frame(intervals=2)))


def test_frame_with_linear_columns_only_derives_log_moments():
    frame = _frame().drop(columns=["latency_p50", "latency_logmean", "latency_logstd"])
    s = inputs_from_frame(frame)[0].stable["latency"]
    mu, sigma = lognormal_moments(frame["latency_mean"][0], frame["latency_std"][0])
    assert (s.log_mean, s.log_std) == pytest.approx((mu, sigma), rel=1e-12)
    assert judge_frame(frame).verdict is not None


def test_frame_interval_without_log_moments_falls_back_or_is_no_data():
    frame = _frame()
    gap = (frame["interval"] == 2) & (frame["arm"] == "stable")
    frame.loc[gap, ["latency_logmean", "latency_logstd"]] = np.nan
    items = inputs_from_frame(frame)
    row = frame[gap].iloc[0]
    mu, sigma = lognormal_moments(row["latency_mean"], row["latency_std"])
    assert items[2].stable["latency"].log_mean == pytest.approx(mu, rel=1e-12)
    assert items[2].stable["latency"].log_std == pytest.approx(sigma, rel=1e-12)
    assert items[1].stable["latency"].log_mean == frame["latency_logmean"][2]   # others untouched
    items = inputs_from_frame(frame.drop(columns=LINEAR))
    assert items[2].stable["latency"] is None and items[2].canary["latency"] is not None


def test_frame_with_log_columns_mean_and_p90_is_accepted():
    frame = _frame().drop(columns=["latency_std", "latency_p50"])
    s = inputs_from_frame(frame)[0].stable["latency"]
    assert s.log_mean == frame["latency_logmean"][0]


# -- 6. query_metrics with histogram buckets ------------------------------------------------------

LES = [f"{b:.6g}" for b in BOUNDS[:-1]] + ["+Inf"]
CONST = [("clamp_min(", 2.0), ("histogram_quantile(0.5", 0.12), ("histogram_quantile(0.9", 0.23),
         ("duration_seconds_sum", 0.135), ("dissonance_sum", 0.2), ("dissonance_count", 200.0),
         ("code=~", 2.0), ("outcome=", 90.0), ("model_feedback_total", 100.0), ("model_requests_total", 200.0)]


def _bucket_cum(canary: bool, k: int) -> np.ndarray:
    x = np.random.default_rng([k, int(canary)]).lognormal(MU + (0.1 if canary else 0.0), SIGMA, 400)
    return _cumulative(x, [float(le.replace("+Inf", "inf")) for le in LES])


class BucketProm:
    """Constant answers per query; the buckets template gets cumulative counts of known samples."""

    def __init__(self, skip: int | None = None, mode: str = "ok") -> None:
        self.skip, self.mode = skip, mode

    def query_range(self, promql, start, end, step):
        ts = np.arange(start, end + step / 2, step)
        if not promql.startswith("sum by (le)"):
            value = next(v for key, v in CONST if key in promql)
            return pd.DataFrame({"timestamp": ts, "value": np.full(len(ts), value)})
        canary = 'track="canary"' in promql
        rows = [{"le": le, "timestamp": t, "value": c} for k, t in enumerate(ts) if k != self.skip
                for le, c in zip(LES, _bucket_cum(canary, k), strict=True)]
        got = pd.DataFrame(rows)
        if self.mode == "nole":
            return got.drop(columns="le")
        if self.mode == "two":
            return pd.concat([got.assign(pod="a"), got.assign(pod="b")], ignore_index=True)
        if self.mode == "coarse":  # one finite bound and +Inf: no log moments to be had
            return got[got["le"].isin([LES[0], "+Inf"])]
        return got


def test_query_metrics_turns_buckets_into_log_moments():
    frame = cm.query_metrics(BucketProm(skip=1), model="m", start=0, end=300, interval=60)
    bounds = [float(le.replace("+Inf", "inf")) for le in LES]
    for arm in ("stable", "canary"):
        part = frame[frame["arm"] == arm].reset_index(drop=True)
        assert np.isnan(part["latency_logmean"][1]) and np.isnan(part["latency_logstd"][1])
        for k in (0, 2, 3, 4):
            _, m, s = log_moments_from_buckets(bounds, _bucket_cum(arm == "canary", k))
            assert part["latency_logmean"][k] == pytest.approx(m, rel=1e-12)
            assert part["latency_logstd"][k] == pytest.approx(s, rel=1e-12)
    # the missing step falls back to the linear columns (mean, std from p50/p90)
    sigma = math.log(0.23 / 0.12) / Z90
    s = inputs_from_frame(frame)[1].stable["latency"]
    assert (s.log_mean, s.log_std) == pytest.approx((math.log(0.135) - sigma**2 / 2, sigma), rel=1e-9)


@pytest.mark.parametrize(("mode", "match"), [("nole", "one series per bucket"), ("two", "several histograms")])
def test_query_metrics_refuses_bad_bucket_answers(mode, match):
    with pytest.raises(Invalid, match=match):
        cm.query_metrics(BucketProm(mode=mode), model="m", start=0, end=120, interval=60)


def test_query_metrics_warns_and_falls_back_on_a_too_coarse_histogram():
    with pytest.warns(UserWarning, match="no log moments from the buckets"):
        frame = cm.query_metrics(BucketProm(mode="coarse"), model="m", start=0, end=300, interval=60)
    assert frame["latency_logmean"].isna().all()
    sigma = math.log(0.23 / 0.12) / Z90
    s = inputs_from_frame(frame)[0].stable["latency"]
    assert (s.log_mean, s.log_std) == pytest.approx((math.log(0.135) - sigma**2 / 2, sigma), rel=1e-9)


def test_query_metrics_without_buckets_judges_from_derived_moments():
    frame = cm.query_metrics(BucketProm(), model="m", start=0, end=300, interval=60,
                             templates={"latency_buckets": None})
    assert "latency_logmean" not in frame.columns and "latency_logstd" not in frame.columns
    result = cm.judge_metrics(frame)
    lat = result.value.verdict.metrics["latency"]
    sigma = math.log(0.23 / 0.12) / Z90
    assert lat.stable == pytest.approx(math.exp(math.log(0.135) - sigma**2 / 2), rel=1e-9)
    assert lat.relative_change == pytest.approx(0.0, abs=1e-12)
    with_buckets = cm.judge_metrics(cm.query_metrics(BucketProm(), model="m", start=0, end=300, interval=60))
    assert with_buckets.value.verdict.metrics["latency"].relative_change > 0.05   # canary buckets +10%


# -- 7. engine -------------------------------------------------------------------------------------

def test_sample_fields_log_and_linear():
    x = np.random.default_rng(7).lognormal(MU, SIGMA, (2, 3, 50))
    f = sample_fields(LATENCY, x)
    assert np.allclose(f["mean"], np.log(x).mean(-1)) and np.allclose(f["std"], np.log(x).std(-1, ddof=1))
    assert np.allclose(f["tail"], np.quantile(x, 0.9, axis=-1)) and (f["n"] == 50).all()
    g = sample_fields(DISSONANCE, x)
    assert np.allclose(g["mean"], x.mean(-1)) and np.allclose(g["std"], x.std(-1, ddof=1))


@pytest.mark.parametrize("higher_is_worse", [True, False])
def test_estimates_continuous_log_branch_stratifies_log_means_by_interval(higher_is_worse):
    """theta is the within-interval difference of mean logs, weighted by n_c n_s / (n_c + n_s), and
    its variance sum(w**2 (s_c**2/n_c + s_s**2/n_s)) / sum(w)**2; the reported estimates are the pooled
    geometric means. With equal counts per interval theta equals the pooled difference."""
    spec = MetricSpec("lat", "continuous", higher_is_worse, scale="log", column="lat")
    rng = np.random.default_rng(8)
    arms = []
    for shift, sizes in ((0.0, (100, 40, 250)), (0.07, (30, 200, 250))):
        xs = [rng.lognormal(MU + shift, SIGMA, k) for k in sizes]
        ln = [np.log(x) for x in xs]
        fields = {"n": np.array([[len(v) for v in ln]], float), "mean": np.array([[v.mean() for v in ln]]),
                  "std": np.array([[v.std(ddof=1) for v in ln]])}
        arms.append((fields, ln))
    r = estimates_continuous(spec, arms[0][0], arms[1][0])
    num = wsum = vsum = 0.0
    for t in range(3):
        s_t, c_t = arms[0][1][t], arms[1][1][t]
        w = s_t.size * c_t.size / (s_t.size + c_t.size)
        num += w * (c_t.mean() - s_t.mean())
        wsum += w
        vsum += w * w * (c_t.var(ddof=1) / c_t.size + s_t.var(ddof=1) / s_t.size)
        ls, lc = np.concatenate(arms[0][1][: t + 1]), np.concatenate(arms[1][1][: t + 1])
        assert r["theta"][0, t] == pytest.approx(spec.sign * num / wsum, rel=1e-9)
        assert r["est_s"][0, t] == pytest.approx(math.exp(ls.mean()), rel=1e-12)
        assert r["est_c"][0, t] == pytest.approx(math.exp(lc.mean()), rel=1e-12)
        assert r["info"][0, t] == pytest.approx(wsum * wsum / vsum, rel=1e-9)
