"""The canary judge's guarantees, checked by small fixed-seed simulations (the full sweep is
benchmarks/bench_canary.py), and its adapter for per-interval aggregate frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from opsbook.canary import (
    ACCURACY,
    DEFAULT_METRICS,
    DISSONANCE,
    ERROR_RATE,
    LATENCY,
    CanaryJudge,
    Counts,
    JudgeConfig,
    MetricSpec,
    Summary,
    history_frame,
    inputs_from_frame,
    judge_frame,
)
from opsbook.canary._engine import INCONCLUSIVE, PROMOTE, ROLLBACK, judge_paths, sample_fields
from opsbook.canary._stats import log_mixture_e, log_ndtr, log_tail_e, mixture_boundary

MU = math.log(120.0)


def simulate(seed: int, runs: int, intervals: int = 60, n: int = 200, *, lat_scale: float = 1.0,
             sigma: float = 0.5, p_acc: float = 0.9, p_err: float = 0.01, d_scale: float = 1.0) -> dict:
    """Per-interval aggregates of `runs` synthetic canaries, shaped for the vectorised judge."""
    rng = np.random.default_rng(seed)
    shape = (runs, intervals, n)
    nn = np.full((runs, intervals), float(n))

    def counts(p: float) -> dict[str, np.ndarray]:
        return {"successes": rng.binomial(n, p, (runs, intervals)).astype(float), "trials": nn}

    return {
        "latency": (sample_fields(LATENCY, rng.lognormal(MU, 0.5, shape)),
                    sample_fields(LATENCY, rng.lognormal(MU + math.log(lat_scale), sigma, shape))),
        "d": (sample_fields(DISSONANCE, rng.gamma(2.0, 0.1, shape)),
              sample_fields(DISSONANCE, rng.gamma(2.0, 0.1 * d_scale, shape))),
        "accuracy": (counts(0.9), counts(p_acc)),
        "error_rate": (counts(0.01), counts(p_err)),
    }


def one_interval(rng: np.random.Generator, n: int, *, lat_scale: float = 1.0, sigma: float = 0.5,
                 p_acc: float = 0.9) -> tuple[dict, dict]:
    arms = []
    for canary in (False, True):
        arms.append({
            "latency": rng.lognormal(MU + (math.log(lat_scale) if canary else 0.0), sigma if canary else 0.5, n),
            "d": rng.gamma(2.0, 0.1, n),
            "accuracy": (rng.binomial(n, p_acc if canary else 0.9), n),
            "error_rate": Counts(rng.binomial(n, 0.01), n),
        })
    return arms[0], arms[1]


# -- the statistics ----------------------------------------------------------------------------------

def test_log_ndtr_matches_erfc_and_stays_finite_in_the_tails():
    for z in (-30.0, -8.0, -1.3, 0.0, 0.7, 5.0):
        exact = math.log(0.5 * math.erfc(-z / math.sqrt(2)))
        assert abs(float(log_ndtr(z)) - exact) <= 1e-6 * max(1.0, abs(exact))
    assert np.isfinite(log_ndtr(np.array([-200.0, 200.0]))).all()


def test_boundary_inverts_the_mixture_e_value():
    info = np.array([1.0, 50.0, 5_000.0, 1e6])
    b = mixture_boundary(info, rho=100.0, alpha=0.01)
    assert np.allclose(log_mixture_e(b, info, 100.0), math.log(100.0), atol=1e-8)
    # a smaller alpha needs more evidence; no evidence is an e-value of 1
    assert (mixture_boundary(info, 100.0, 0.001) > b).all()
    assert float(log_mixture_e(0.0, 0.0, 100.0)) == pytest.approx(0.0, abs=1e-6)


def test_boundary_inverts_the_mixture_with_a_point_mass_and_the_point_mass_sharpens_it_at_its_effect():
    info = np.array([0.5, 50.0, 5_000.0, 1e6])
    lt = math.log(1.05)
    b = mixture_boundary(info, 100.0, 0.01, point=lt, point_weight=0.5)
    assert np.allclose(log_mixture_e(b, info, 100.0, lt, 0.5), math.log(100.0), atol=1e-8)
    assert float(log_mixture_e(0.0, 0.0, 100.0, lt, 0.5)) == pytest.approx(0.0, abs=1e-6)
    # where a drift of exactly `lt` would reach the boundary (info ~ 1/lt**2 .. 10/lt**2) the point
    # mass lowers it; far from it (very large info) it costs at most its weight's log(2)
    plain = mixture_boundary(info, 100.0, 0.01)
    mid = np.array([4_000.0])
    assert float(mixture_boundary(mid, 100.0, 0.01, lt, 0.5)[0]) < float(mixture_boundary(mid, 100.0, 0.01)[0])
    assert (b <= mixture_boundary(info, 100.0, 0.005) + 1e-9).all()
    assert (b >= np.minimum(plain, (math.log(100.0) + lt * lt * info / 2) / lt) - 1e-9).all()
    with pytest.raises(ValueError, match="point mass"):
        log_mixture_e(1.0, 1.0, 100.0, point=0.0, point_weight=0.5)


def _gaussian_paths(seed: int, runs: int, looks: int, step: float, drift: float) -> tuple[np.ndarray, np.ndarray]:
    """Score S and information I of a Gaussian random walk in intrinsic time (what the judge's
    S = theta_hat * I is, asymptotically): increments N(drift * step, step)."""
    rng = np.random.default_rng(seed)
    s = np.cumsum(rng.normal(drift * step, math.sqrt(step), (runs, looks)), axis=1)
    return s, np.broadcast_to(np.arange(1, looks + 1) * step, s.shape)


@pytest.mark.parametrize("point_weight", [0.0, 0.5, 0.9])
def test_mixture_e_process_keeps_its_false_alarm_bound_over_many_looks(point_weight):
    # no drift, 400 looks from information 5 to 2,000 (a drift of log(1.05) is reached about halfway):
    # the chance that the e-value ever reaches 1/alpha must stay below alpha (Ville), for any weight
    lt, alpha = math.log(1.05), 0.05
    s, info = _gaussian_paths(11, 4000, 400, 5.0, 0.0)
    crossed = (log_mixture_e(s, info, 1 / (2 * lt) ** 2, lt, point_weight) >= math.log(1 / alpha)).any(axis=1)
    assert crossed.mean() <= alpha, crossed.mean()
    assert crossed.mean() >= alpha / 5                   # and is not vacuous: the test does spend alpha
    # a drift of -lt (canary better) is rolled back even less often
    s, info = _gaussian_paths(12, 4000, 400, 5.0, -lt)
    assert (log_mixture_e(s, info, 1 / (2 * lt) ** 2, lt, point_weight) >= math.log(1 / alpha)).any(axis=1).mean() < 0.01


def test_point_mass_at_the_tolerance_stops_a_tolerance_sized_regression_earlier():
    lt, a = math.log(1.05), 0.0125
    rho = 1 / (2 * lt) ** 2
    s, info = _gaussian_paths(13, 2000, 300, 50.0, lt)

    def stop(weight: float) -> np.ndarray:
        hit = log_mixture_e(s, info, rho, lt, weight) >= math.log(1 / a)
        return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 10**6)

    plain, mixed = stop(0.0), stop(0.5)
    assert np.median(mixed) < 0.95 * np.median(plain), (np.median(mixed), np.median(plain))
    # and a regression four times as large is not slowed by more than one look
    s, info = _gaussian_paths(14, 2000, 300, 50.0, 4 * lt)
    assert np.median(stop(0.5)) <= np.median(stop(0.0)) + 1


def test_tail_e_process_grows_on_wins_and_shrinks_on_losses():
    assert float(log_tail_e(0, 0)) == pytest.approx(0.0)
    assert float(log_tail_e(12, 0)) > math.log(400)
    assert float(log_tail_e(6, 6)) < 0.0


# -- the guarantees, by simulation ------------------------------------------------------------------

def test_healthy_canaries_are_rarely_rolled_back_and_never_promoted_on_an_untestable_error_rate():
    code, when = judge_paths(DEFAULT_METRICS, JudgeConfig(), simulate(1, 200))
    rollback = np.mean(code == ROLLBACK)
    assert rollback <= 0.03, rollback          # alpha is 0.05 over all looks and metrics
    # a 1% error rate at 200 requests per interval cannot be checked against a 5% tolerance
    assert np.all((code == INCONCLUSIVE) | (code == ROLLBACK))


def test_a_clear_regression_is_rolled_back_early():
    code, when = judge_paths(DEFAULT_METRICS, JudgeConfig(), simulate(2, 200, lat_scale=1.2))
    assert np.mean(code == ROLLBACK) >= 0.99
    assert np.median(when[code == ROLLBACK]) <= 2


def test_incremental_judge_stops_at_the_first_certain_regression():
    rng = np.random.default_rng(3)
    judge = CanaryJudge()
    for _ in range(60):
        verdict = judge.update(*one_interval(rng, 200, lat_scale=1.3))
        if verdict.final:
            break
    assert verdict.decision == "rollback"
    assert verdict.interval <= 3
    lat = verdict.metrics["latency"]
    assert lat.status == "regressed" and "regression certain" in lat.reason
    assert lat.e_rollback >= lat.threshold_rollback
    assert lat.ci_low is not None and lat.ci_low > 0       # the anytime-valid lower bound left zero
    assert lat.relative_change > lat.rollback_at           # the estimate crossed the drawn boundary
    assert "latency" in verdict.reason
    with pytest.raises(RuntimeError, match="already decided"):
        judge.update(*one_interval(rng, 200))


def test_low_traffic_is_inconclusive_never_promote_and_says_what_traffic_is_needed():
    code, _ = judge_paths(DEFAULT_METRICS, JudgeConfig(), simulate(4, 200, n=5))
    assert not np.any(code == PROMOTE)
    assert np.mean(code == INCONCLUSIVE) >= 0.95

    rng = np.random.default_rng(4)
    judge = CanaryJudge()
    for _ in range(60):
        verdict = judge.update(*one_interval(rng, 5))
        if verdict.final:
            break
    assert verdict.decision == "inconclusive"
    err = verdict.metrics["error_rate"]
    assert err.status == "insufficient"
    assert err.needed_per_interval is not None and err.needed_per_interval > 1000
    assert "needs about" in err.reason


def test_a_metric_without_data_fails_and_never_passes_silently():
    config = JudgeConfig(window=8)
    judge = CanaryJudge((ACCURACY, LATENCY), config)
    rng = np.random.default_rng(5)
    for _ in range(8):
        lat_s, lat_c = rng.lognormal(MU, 0.5, 4000), rng.lognormal(MU, 0.5, 4000)
        verdict = judge.update({"latency": lat_s, "accuracy": (3600, 4000)}, {"latency": lat_c, "accuracy": None})
        assert verdict.decision != "promote"
        if verdict.final:
            break
    assert verdict.decision == "rollback" and verdict.interval == 8
    acc = verdict.metrics["accuracy"]
    assert acc.status == "no_data" and "no data for canary" in acc.reason
    assert verdict.metrics["latency"].status == "ok"


def test_clean_canary_with_enough_traffic_is_promoted_with_boundaries_to_draw():
    judge = CanaryJudge((ACCURACY, LATENCY, MetricSpec("error_rate", "bernoulli", True, tolerance=1.0)))
    rng = np.random.default_rng(6)
    for _ in range(60):
        n = 2000
        stable = {"latency": rng.lognormal(MU, 0.5, n), "accuracy": (rng.binomial(n, 0.9), n),
                  "error_rate": (rng.binomial(n, 0.05), n)}
        canary = {"latency": rng.lognormal(MU, 0.5, n), "accuracy": (rng.binomial(n, 0.9), n),
                  "error_rate": (rng.binomial(n, 0.05), n)}
        verdict = judge.update(stable, canary)
        if verdict.final:
            break
    assert verdict.decision == "promote", verdict.reason
    lat, acc = verdict.metrics["latency"], verdict.metrics["accuracy"]
    assert lat.promote_at < lat.rollback_at            # higher is worse: pass below, roll back above
    assert acc.rollback_at < acc.promote_at            # lower is worse: the other way round
    frame = history_frame(judge.history)
    assert {"interval", "metric", "relative_change", "ci_low", "ci_high", "rollback_at", "promote_at",
            "e_rollback", "reason"} <= set(frame.columns)
    assert len(frame) == 3 * len(judge.history)


def test_variance_only_increase_is_caught():
    code, _ = judge_paths(DEFAULT_METRICS, JudgeConfig(), simulate(7, 100, sigma=0.75))
    assert np.mean(code == ROLLBACK) >= 0.9


def test_tail_guard_alone_catches_a_wider_tail_with_the_same_mean():
    judge = CanaryJudge((LATENCY,))
    for _ in range(60):
        verdict = judge.update({"latency": Summary(200, 120.0, 60.0, tail=190.0)},
                               {"latency": Summary(200, 120.0, 60.0, tail=260.0)})
        if verdict.final:
            break
    lat = verdict.metrics["latency"]
    assert verdict.decision == "rollback"
    assert lat.tail is not None and lat.tail.regressed and "tail regression" in lat.reason
    assert lat.e_rollback < lat.threshold_rollback        # the mean test alone saw nothing


@pytest.mark.parametrize(("metric", "stable", "canary", "rolled_back"), [
    ("accuracy", Counts(900, 1000), Counts(800, 1000), True),      # lower accuracy is worse
    ("accuracy", Counts(900, 1000), Counts(980, 1000), False),
    ("latency", Summary(1000, 100.0, 50.0), Summary(1000, 130.0, 65.0), True),  # higher latency is worse
    ("latency", Summary(1000, 100.0, 50.0), Summary(1000, 70.0, 35.0), False),
])
def test_direction_of_each_metric(metric, stable, canary, rolled_back):
    spec = {"accuracy": ACCURACY, "latency": MetricSpec("latency", "continuous", True)}[metric]
    judge = CanaryJudge((spec,), JudgeConfig(window=5))
    verdict = None
    for _ in range(5):
        verdict = judge.update({metric: stable}, {metric: canary})
        if verdict.final:
            break
    assert (verdict.decision == "rollback") is rolled_back
    if not rolled_back:
        assert verdict.decision == "promote"


def test_incremental_and_vectorised_judges_agree():
    data = simulate(8, 4, intervals=30, lat_scale=1.04)
    config = JudgeConfig(window=30)
    code, when = judge_paths(DEFAULT_METRICS, config, data)
    names = {"successes", "trials", "n", "mean", "std", "tail"}
    for r in range(4):
        judge = CanaryJudge(DEFAULT_METRICS, config)
        for t in range(30):
            arms = []
            for side in (0, 1):
                obs = {}
                for m, pair in data.items():
                    f = {k: v[r, t] for k, v in pair[side].items() if k in names}
                    if "trials" in f:
                        obs[m] = Counts(f["successes"], f["trials"])
                    elif m == "latency":  # judged on the log scale: the fields are the moments of ln x
                        obs[m] = Summary(f["n"], math.exp(f["mean"] + f["std"] ** 2 / 2), 1.0, f["tail"],
                                         log_mean=f["mean"], log_std=f["std"])
                    else:
                        obs[m] = Summary(f["n"], f["mean"], f["std"], f["tail"])
                arms.append(obs)
            verdict = judge.update(*arms)
            if verdict.final:
                break
        assert ("continue", "promote", "rollback", "inconclusive").index(verdict.decision) == code[r]
        assert verdict.interval == when[r]


def test_config_and_spec_validation():
    with pytest.raises(ValueError, match="tail guard"):
        MetricSpec("acc", "bernoulli", False, tail=True)
    with pytest.raises(ValueError, match="alpha"):
        JudgeConfig(alpha=1.5)
    with pytest.raises(ValueError, match="unique"):
        CanaryJudge((LATENCY, LATENCY))
    with pytest.raises(ValueError, match="unknown metric"):
        CanaryJudge((LATENCY,)).update({"latnecy": None}, {})
    with pytest.raises(ValueError, match="exceed"):
        Counts(5, 3)
    with pytest.raises(ValueError, match="point_mass"):
        JudgeConfig(point_mass=1.0)


# -- the aggregate-frame adapter ---------------------------------------------------------------------

def make_frame(intervals: int = 12, n: int = 300, seed: int = 9, lat_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(intervals):
        for arm in ("stable", "canary"):
            lat = rng.lognormal(MU + (math.log(lat_scale) if arm == "canary" else 0.0), 0.5, n)
            d = rng.gamma(2.0, 0.1, n)
            rows.append({"interval": t, "arm": arm, "requests": n, "errors": rng.binomial(n, 0.01),
                         "labelled": n // 2, "correct": rng.binomial(n // 2, 0.9),
                         "latency_mean": lat.mean(), "latency_std": lat.std(ddof=1),
                         "latency_p50": np.quantile(lat, 0.5), "latency_p90": np.quantile(lat, 0.9),
                         "d_mean": d.mean(), "d_std": d.std(ddof=1)})
    return pd.DataFrame(rows)


def test_frame_adapter_turns_aggregates_into_judge_inputs():
    frame = make_frame()
    items = inputs_from_frame(frame)
    assert [i.interval for i in items] == list(range(12))
    first = items[0]
    assert isinstance(first.stable["accuracy"], Counts) and first.stable["accuracy"].trials == 150
    assert isinstance(first.canary["latency"], Summary) and first.canary["latency"].tail is not None
    assert first.canary["d"].n == 300                  # d_count absent: falls back to requests
    judge = judge_frame(make_frame(intervals=20, lat_scale=1.3))
    assert judge.verdict.decision == "rollback" and judge.verdict.metrics["latency"].status == "regressed"


def test_frame_adapter_accepts_m2_or_quantiles_instead_of_std():
    frame = make_frame()
    m2 = frame.assign(latency_m2=frame["latency_std"] ** 2 * (frame["requests"] - 1)).drop(columns="latency_std")
    assert inputs_from_frame(m2)[0].stable["latency"].std == pytest.approx(frame["latency_std"][0])
    q = frame.drop(columns="latency_std")
    std = inputs_from_frame(q)[0].stable["latency"].std           # log-normal approximation
    assert 0.6 * frame["latency_std"][0] < std < 1.6 * frame["latency_std"][0]


def test_frame_adapter_missing_rows_and_values_mean_no_data():
    frame = make_frame(intervals=3)
    frame.loc[(frame["arm"] == "canary"), "correct"] = np.nan
    frame = frame.drop(index=frame.index[(frame["interval"] == 1) & (frame["arm"] == "stable")])
    items = inputs_from_frame(frame)
    assert all(i.canary["accuracy"] is None for i in items)
    assert all(v is None for v in items[1].stable.values())


@pytest.mark.parametrize(("mutate", "column"), [
    (lambda f: f.drop(columns="errors"), "errors"),
    (lambda f: f.drop(columns="latency_p90"), "latency_p90"),
    (lambda f: f.drop(columns=["latency_std", "latency_p50"]), "latency_std"),
    (lambda f: f.drop(columns="arm"), "arm"),
    (lambda f: f.assign(requests=f["requests"].where(f.index != 3, -1)), "requests"),
    (lambda f: f.assign(correct=f["labelled"] + 1), "correct"),
    (lambda f: f.assign(latency_std=-1.0), "latency_std"),
    (lambda f: f.assign(d_mean=0.0), "d_mean"),
    (lambda f: f.assign(errors="many"), "errors"),
    (lambda f: f.assign(arm="blue"), "arm"),
    (lambda f: pd.concat([f, f.iloc[[0]]]), "interval"),
])
def test_frame_adapter_rejects_bad_input_naming_the_column(mutate, column):
    with pytest.raises(ValueError, match=f"'{column}'"):
        inputs_from_frame(mutate(make_frame(intervals=3)))


def test_frame_adapter_rejects_what_is_not_a_frame():
    with pytest.raises(ValueError, match="DataFrame"):
        inputs_from_frame([{"interval": 0}])
    assert ERROR_RATE.trials == "requests"
