"""Issue 18: the canary judge on real traffic.

Stratified comparison (shared time effects cancel whatever the traffic split, missing canary intervals
contribute nothing, Mantel-Haenszel by hand), no early "inconclusive", the p99 exceedance test (valid
under the null, predictable threshold, catches a tail-only regression), the warm-up, readable bounds
and the incremental judge's input checks. Every simulation uses numpy's generator with a fixed seed.

Data model (as benchmarks/bench_canary.py): per request, latency log-normal (median 120 ms, sigma
0.5), ``d`` gamma (shape 2, scale 0.1), errors Bernoulli 1%, correct Bernoulli 90%.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from collections.abc import Mapping

import numpy as np
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
    Summary,
    _engine,
    _stats,
)
from opsbook.canary._engine import INCONCLUSIVE, PROMOTE, ROLLBACK

T = 60
MU0, SIGMA = math.log(120.0), 0.5
D_SHAPE, D_SCALE = 2.0, 0.1
P_ERR, P_MISS = 0.01, 0.10
BERNOULLI = (ACCURACY, ERROR_RATE)


# -- simulation ----------------------------------------------------------------------------------------

def _rt(a, R: int, TT: int = T) -> np.ndarray:
    """A scalar, (T,) or (R, T) value as an (R, T) array."""
    return np.broadcast_to(np.asarray(a, dtype=float), (R, TT)).copy()


def _fields(spec, x: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The engine's own ``sample_fields`` of per-request values x (R, T, n_max) where (run, interval)
    has only its first ``counts`` requests; an interval without requests: n = 0, an empty histogram
    and NaN for the rest (what the incremental judge stores for a missing observation)."""
    counts = np.asarray(counts).astype(np.int64)
    if (counts == x.shape[-1]).all():
        return _engine.sample_fields(spec, x)
    out: dict[str, np.ndarray] = {}
    for u in np.unique(counts):
        if u == 0:
            continue
        sel = counts == u
        f = _engine.sample_fields(spec, x[sel][:, :int(u)])
        if not out:
            out = {k: np.full(counts.shape + v.shape[1:], 0.0 if k in ("n", "hist") else np.nan, dtype=v.dtype)
                   for k, v in f.items()}
        for k, v in f.items():
            out[k][sel] = v
    return out


def simulate(rng: np.random.Generator, R: int, *, TT: int = T, n_s=200, n_c=200, shift=0.0, lat_c=0.0,
             slow: tuple[float, float, float] | None = None, d_shift=0.0, d_c: float = 1.0,
             err_s=P_ERR, err_c=P_ERR, miss_s=P_MISS, miss_c=P_MISS, metrics=("latency", "d", "error_rate",
                                                                             "accuracy"),
             raw: bool = False) -> tuple[dict, dict | None]:
    """Per-interval fields of both arms for ``_engine`` (``data[name] = (stable, canary)``, arrays
    (R, TT)), and with ``raw`` the per-request values and counts for feeding ``CanaryJudge``.

    ``n_s``/``n_c``: requests per (run, interval) of each arm (scalar, (TT,) or (R, TT)). ``shift``:
    added to both arms' ln latency (shared drift/shock), ``lat_c``: added to the canary's only
    ((TT,) for a per-interval effect). ``slow=(p_s, p_c, k)``: a share p of each arm's requests is k
    times slower, the canary's median lowered by (p_c - p_s) ln k so that the geometric means match.
    ``d_shift``: shared ln factor on d's scale, ``d_c`` the canary's factor. ``err_*`` / ``miss_*``:
    per-(run, interval) error and miss (1 - accuracy) probabilities."""
    ns, nc = _rt(n_s, R, TT).astype(np.int64), _rt(n_c, R, TT).astype(np.int64)
    data: dict[str, tuple[dict, dict]] = {}
    raw_out: dict[str, np.ndarray] = {"n_s": ns, "n_c": nc}
    shape_s, shape_c = (R, TT, int(ns.max())), (R, TT, int(nc.max()))
    if "latency" in metrics:
        sh = _rt(shift, R, TT)[..., None]
        ls = rng.normal(MU0, SIGMA, shape_s) + sh
        lc = rng.normal(MU0, SIGMA, shape_c) + sh + _rt(lat_c, R, TT)[..., None]
        if slow is not None:
            p_s, p_c, k = slow
            ls += math.log(k) * (rng.random(shape_s) < p_s)
            lc += math.log(k) * (rng.random(shape_c) < p_c) - (p_c - p_s) * math.log(k)
        xs, xc = np.exp(ls), np.exp(lc)
        del ls, lc
        data["latency"] = (_fields(LATENCY, xs, ns), _fields(LATENCY, xc, nc))
        if raw:
            raw_out["latency_s"], raw_out["latency_c"] = xs, xc
    if "d" in metrics:
        f = np.exp(_rt(d_shift, R, TT))[..., None]
        ds = rng.gamma(D_SHAPE, D_SCALE, shape_s) * f
        dc = rng.gamma(D_SHAPE, D_SCALE * d_c, shape_c) * f
        data["d"] = (_fields(DISSONANCE, ds, ns), _fields(DISSONANCE, dc, nc))
        if raw:
            raw_out["d_s"], raw_out["d_c"] = ds, dc
    for name, ps, pc, correct in (("error_rate", err_s, err_c, False), ("accuracy", miss_s, miss_c, True)):
        if name not in metrics:
            continue
        ps, pc = np.clip(_rt(ps, R, TT), 0.0, 1.0), np.clip(_rt(pc, R, TT), 0.0, 1.0)
        ks = rng.binomial(ns, ps).astype(float)
        kc = rng.binomial(nc, pc).astype(float)
        if correct:  # the probabilities are of a miss; the metric counts correct answers
            ks, kc = ns - ks, nc - kc
        data[name] = ({"successes": ks, "trials": ns.astype(float)}, {"successes": kc, "trials": nc.astype(float)})
    return data, (raw_out if raw else None)


def _states(specs, config: JudgeConfig, data: Mapping) -> list[dict[str, np.ndarray]]:
    plans = _engine.make_plans(specs, config)
    return [_engine.evaluate_metric(p, config, *data[p.spec.name]) for p in plans]


def _judge(specs, config: JudgeConfig, data: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-interval decision codes, first decision, its interval) of the engine on every run."""
    code = _engine.decide(_states(specs, config, data), config)
    which, when = _engine.first_decision(code)
    return code, which, when


def _feed(raw: dict, data: Mapping, r: int, t: int, specs) -> tuple[dict, dict]:
    """Run r's interval t (0-based) as the incremental judge's input: per-request values for the
    continuous metrics, Counts for the rates, None where an arm has no requests."""
    arms = []
    for arm, key in (("s", 0), ("c", 1)):
        n = int(raw["n_" + arm][r, t])
        obs: dict = {}
        for spec in specs:
            if n == 0:
                obs[spec.name] = None
            elif spec.kind == "continuous":
                obs[spec.name] = raw[f"{spec.name}_{arm}"][r, t, :n]
            else:
                f = data[spec.name][key]
                obs[spec.name] = Counts(float(f["successes"][r, t]), float(f["trials"][r, t]))
        arms.append(obs)
    return arms[0], arms[1]


# -- the old pooled comparison, for contrast -----------------------------------------------------------

def pooled_regressed(specs, config: JudgeConfig, data: Mapping) -> np.ndarray:
    """Per run: did the pre-issue-18 comparison (each arm pooled over all intervals so far, the log
    ratio of cumulative rates/means with its delta-method variance) reach the rollback threshold of the
    same mixture e-process at some interval, in any metric? Built from ``_stats.log_mixture_e`` and
    the plans of ``make_plans``: only the comparison differs from the judge's."""
    out = None
    for plan in _engine.make_plans(specs, config):
        st, ca = data[plan.spec.name]
        spec = plan.spec
        if spec.kind == "bernoulli":
            cum = {}
            for arm, obs in (("s", st), ("c", ca)):
                K = np.cumsum(np.nan_to_num(obs["successes"]), axis=-1)
                N = np.cumsum(np.nan_to_num(obs["trials"]), axis=-1)
                p = (K + 0.5) / (N + 1.0)
                cum[arm] = (N, np.log(p), (1.0 - p) / ((N + 1.0) * p))
            (Ns, lps, vs), (Nc, lpc, vc) = cum["s"], cum["c"]
            theta, var = spec.sign * (lpc - lps), vs + vc
        else:
            cum = {}
            for arm, obs in (("s", st), ("c", ca)):
                n = np.nan_to_num(np.asarray(obs["n"], dtype=float))
                ok = n > 0
                m = np.where(ok, obs["mean"], 0.0)
                s = np.where(ok & (n > 1), obs["std"], 0.0)
                N = np.cumsum(n, axis=-1)
                S = np.cumsum(n * m, axis=-1)
                Q = np.cumsum((np.maximum(n, 1.0) - 1.0) * s * s + n * m * m, axis=-1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = S / N
                    var = np.maximum(Q - N * mean * mean, 0.0) / (N - 1.0)
                cum[arm] = (N, mean, var)
            (Ns, ms, vs), (Nc, mc, vc) = cum["s"], cum["c"]
            with np.errstate(invalid="ignore", divide="ignore"):
                if spec.scale == "log":
                    theta, var = spec.sign * (mc - ms), vc / Nc + vs / Ns
                else:
                    theta = spec.sign * np.log(mc / ms)
                    var = vc / (Nc * mc * mc) + vs / (Ns * ms * ms)
        active = (Ns >= config.min_samples) & (Nc >= config.min_samples) & np.isfinite(theta) & (var > 0)
        info = np.where(active, 1.0 / np.where(active, var, 1.0), 0.0)
        th = np.where(active, theta, 0.0)
        log_e = np.where(active, _stats.log_mixture_e(th * info, info, plan.rho, plan.log_tol, plan.point_weight), 0.0)
        reg = (log_e >= math.log(1.0 / plan.alpha_rollback)).any(axis=-1)
        out = reg if out is None else out | reg
    assert out is not None
    return out


# -- 1. shared time effects cancel whatever the traffic split ------------------------------------------

DRIFT = 0.03   # shared relative drift per interval of every metric (latency and d scale, error and miss rate)
SHOCK = 0.1    # sigma of the shared per-interval log-normal shock on each metric


def _ramp_with_shared_effects(rng: np.random.Generator, R: int) -> dict:
    """Healthy canaries (the same distribution as the stable within every interval) whose requests
    per interval ramp 20 -> 200 while the stable serves 200, and both arms share a drift of +3% per
    interval plus a per-interval random shock, in every metric."""
    t = np.arange(T)
    drift = math.log1p(DRIFT) * t

    def shared() -> np.ndarray:
        return drift + SHOCK * rng.standard_normal((R, T))

    g_err, g_miss = np.exp(shared()), np.exp(shared())
    data, _ = simulate(rng, R, n_c=np.rint(np.linspace(20, 200, T)), shift=shared(), d_shift=shared(),
                       err_s=P_ERR * g_err, err_c=P_ERR * g_err, miss_s=P_MISS * g_miss, miss_c=P_MISS * g_miss)
    return data


def test_shared_drift_and_shocks_with_ramping_canary_traffic_do_not_roll_back_healthy_canaries():
    """300 healthy runs: the stratified judge rolls back <= alpha (5%), also counting a regression
    signalled after an early stop, and for the two rates alone; the pooled comparison of the same
    data with the same e-process (the judge before issue 18) rolls back far more often: the canary's
    pooled mean leans to its later, busier intervals, which the drift made worse. (With +1%/interval,
    as in the issue, the pooled latency test already rolls back 100% of these runs; +3% is used so that
    the pooled accuracy test, whose shift is smaller, fails on its own too: 100% against 8% at +1%.)
    Measured: the judge 1.7-2.7% on 300-600 runs of several seeds (d about 1.2%, accuracy 0.7%,
    latency 0.5%), the pooled comparison 100%."""
    data = _ramp_with_shared_effects(np.random.default_rng(18), 300)
    cfg = JudgeConfig()
    states = _states(DEFAULT_METRICS, cfg, data)
    which, _ = _engine.first_decision(_engine.decide(states, cfg))
    rolled = float((which == ROLLBACK).mean())
    ever = float(np.logical_or.reduce([s["regressed"][:, -1] for s in states]).mean())
    assert rolled <= 0.05, f"healthy canaries rolled back {rolled:.1%} under shared effects and a traffic ramp"
    assert ever <= 0.05, f"some metric regressed in {ever:.1%} of healthy runs"
    _, which_b, _ = _judge(BERNOULLI, cfg, data)
    assert float((which_b == ROLLBACK).mean()) <= 0.05

    pooled = float(pooled_regressed(DEFAULT_METRICS, cfg, data).mean())
    pooled_rates = float(pooled_regressed(BERNOULLI, cfg, data).mean())
    assert pooled > 0.20 and pooled > 5 * max(ever, 0.01), (pooled, ever)
    assert pooled_rates > 0.20, f"the pooled rate comparison rolled back only {pooled_rates:.1%}: no teeth"


# -- 2. missing canary intervals contribute nothing ----------------------------------------------------

def _continuous_path(rng: np.random.Generator, TT: int, gap: int) -> tuple[dict, dict]:
    n_s = rng.integers(30, 90, TT).astype(float)
    n_c = rng.integers(5, 60, TT).astype(float)
    st = {"n": n_s, "mean": rng.normal(1.0, 0.1, TT), "std": rng.uniform(0.3, 0.6, TT)}
    ca = {"n": n_c, "mean": rng.normal(1.05, 0.1, TT), "std": rng.uniform(0.3, 0.6, TT)}
    st["mean"][gap], st["std"][gap], st["n"][gap] = 40.0, 9.0, 5000.0  # extreme: it must not count
    ca["n"][gap], ca["mean"][gap], ca["std"][gap] = 0.0, np.nan, np.nan
    return st, ca


def _bernoulli_path(rng: np.random.Generator, TT: int, gap: int) -> tuple[dict, dict]:
    n_s = rng.integers(100, 300, TT).astype(float)
    n_c = rng.integers(20, 120, TT).astype(float)
    st = {"successes": rng.binomial(n_s.astype(int), 0.3).astype(float), "trials": n_s}
    ca = {"successes": rng.binomial(n_c.astype(int), 0.35).astype(float), "trials": n_c}
    st["successes"][gap], st["trials"][gap] = 4000.0, 5000.0
    ca["successes"][gap], ca["trials"][gap] = np.nan, 0.0
    return st, ca


@pytest.mark.parametrize("spec", [LATENCY, DISSONANCE, ERROR_RATE, ACCURACY], ids=lambda s: s.name)
@pytest.mark.parametrize("gap", [0, 3])
def test_an_interval_without_canary_data_leaves_the_state_exactly_unchanged(spec, gap):
    TT = 8
    rng = np.random.default_rng(18 + gap)
    make = _bernoulli_path if spec.kind == "bernoulli" else _continuous_path
    st, ca = make(rng, TT, gap)
    cfg = JudgeConfig(warmup=0, min_samples=2)
    plan = _engine.make_plans([spec], cfg)[0]
    with_gap = _engine.evaluate_metric(plan, cfg, {k: v[None] for k, v in st.items()},
                                       {k: v[None] for k, v in ca.items()})
    keep = np.arange(TT) != gap
    without = _engine.evaluate_metric(plan, cfg, {k: v[None, keep] for k, v in st.items()},
                                      {k: v[None, keep] for k, v in ca.items()})
    keys = ("theta", "info", "used_s", "used_c", "log_e_roll", "log_e_prom")
    if gap > 0:  # the state after the gap is the state before it, bit for bit
        for k in keys:
            np.testing.assert_array_equal(with_gap[k][0, gap], with_gap[k][0, gap - 1], err_msg=k)
        assert with_gap["info"][0, gap] > 0  # there was something to keep
    # and the path with the gap is the path without that interval, bit for bit, from the gap on
    for k in keys:
        np.testing.assert_array_equal(with_gap[k][0, gap + 1:], without[k][0, gap:], err_msg=k)
    # the canary's own traffic does not move; the stable's counts, not compared, are still reported
    earlier_c = with_gap["Nc"][0, gap - 1] if gap else 0.0
    earlier_s = with_gap["Ns"][0, gap - 1] if gap else 0.0
    assert with_gap["Nc"][0, gap] == earlier_c
    assert with_gap["Ns"][0, gap] == earlier_s + 5000.0


def test_incremental_judge_state_does_not_move_on_an_interval_without_canary_data():
    rng = np.random.default_rng(5)
    judge = CanaryJudge((LATENCY, ERROR_RATE), JudgeConfig(warmup=0))
    for _ in range(3):
        v = judge.update({"latency": rng.lognormal(MU0, SIGMA, 200), "error_rate": Counts(3, 200)},
                         {"latency": rng.lognormal(MU0, SIGMA, 100), "error_rate": Counts(1, 100)})
    before = v.metrics
    after = judge.update({"latency": rng.lognormal(MU0 + 2.0, SIGMA, 200), "error_rate": Counts(150, 200)},
                         {"latency": None}).metrics
    assert after["latency"].status != "no_data" and after["error_rate"].status != "no_data"
    for name in ("latency", "error_rate"):
        for field in ("relative_change", "information", "e_rollback", "e_promote", "samples_canary"):
            assert getattr(after[name], field) == getattr(before[name], field), (name, field)


# -- 3. Mantel-Haenszel by hand ------------------------------------------------------------------------

def test_mantel_haenszel_rate_ratio_and_greenland_robins_variance_by_hand():
    """Three intervals (errors of requests): 1. stable 4/100, canary none (contributes nothing, no
    pseudo-event); 2. stable 3/100, canary 1/50 (the first with both arms: one pseudo-event, split
    between the arms in proportion to their traffic there); 3. stable 2/80, canary 4/120.

    R = sum(k_c n_s / N), S = sum(k_s n_c / N), P = sum((n_c n_s (k_c + k_s) - k_c k_s N) / N**2);
    the pseudo-event (n_c/N to the canary, n_s/N to the stable) adds (n_s/N)(n_c/N) to each of R, S
    and P, so that it is neutral. theta = log(R/S), Var = P / (R S) (Greenland and Robins 1985, for
    risk ratios)."""
    st = {"successes": np.array([[4.0, 3.0, 2.0]]), "trials": np.array([[100.0, 100.0, 80.0]])}
    ca = {"successes": np.array([[np.nan, 1.0, 4.0]]), "trials": np.array([[0.0, 50.0, 120.0]])}
    # interval 2: N = 150
    R2 = 1 * 100 / 150 + 2 / 9                           # = 8/9
    S2 = 3 * 50 / 150 + 2 / 9                            # = 11/9
    P2 = (50 * 100 * 4 - 1 * 3 * 150) / 150**2 + (100 / 150) * (50 / 150)   # = 19550/22500 + 2/9
    # interval 3: N = 200
    R3 = R2 + 4 * 80 / 200                               # + 1.6
    S3 = S2 + 2 * 120 / 200                              # + 1.2
    P3 = P2 + (120 * 80 * 6 - 4 * 2 * 200) / 200**2      # + 1.4
    assert math.isclose(R2, 8 / 9) and math.isclose(S2, 11 / 9) and math.isclose(P2, 19550 / 22500 + 2 / 9)
    theta = [math.log(R2 / S2), math.log(R3 / S3)]
    info = [R2 * S2 / P2, R3 * S3 / P3]

    r = _engine.estimates_bernoulli(ERROR_RATE, st, ca)
    assert np.isnan(r["theta"][0, 0]) and r["info"][0, 0] == 0.0
    assert r["theta"][0, 1:].tolist() == pytest.approx(theta, rel=1e-12)
    assert r["info"][0, 1:].tolist() == pytest.approx(info, rel=1e-12)
    assert r["used_s"][0].tolist() == [0.0, 100.0, 180.0] and r["used_c"][0].tolist() == [0.0, 50.0, 170.0]
    assert r["Ns"][0].tolist() == [100.0, 200.0, 280.0] and r["Nc"][0].tolist() == [0.0, 50.0, 170.0]
    # the reported estimates are the pooled rates of the compared intervals
    assert r["est_s"][0, 2] == pytest.approx(5 / 180) and r["est_c"][0, 2] == pytest.approx(5 / 170)
    # lower is worse (accuracy): the same ratio, the sign flipped, the same information
    a = _engine.estimates_bernoulli(ACCURACY, st, ca)
    assert a["theta"][0, 1:].tolist() == pytest.approx([-x for x in theta], rel=1e-12)
    assert a["info"][0, 1:].tolist() == pytest.approx(info, rel=1e-12)


def test_mantel_haenszel_cancels_a_shared_rate_shift_that_pooling_does_not():
    """Equal rates within each interval (2% then 20%) with opposite traffic splits: the MH ratio is
    exactly 1 (the pseudo-event is neutral), the pooled ratio is far from it."""
    st = {"successes": np.array([[18.0, 20.0]]), "trials": np.array([[900.0, 100.0]])}
    ca = {"successes": np.array([[2.0, 180.0]]), "trials": np.array([[100.0, 900.0]])}
    r = _engine.estimates_bernoulli(ERROR_RATE, st, ca)
    # R = 2*900/1000 + 180*100/1000 + 0.09 = 19.89 = S = 18*100/1000 + 20*900/1000 + 0.09
    assert r["theta"][0, 1] == pytest.approx(0.0, abs=1e-12)
    pooled = math.log((182 / 1000) / (38 / 1000))
    assert pooled > 1.5


# -- 4. low traffic: never "inconclusive" before the window's end ---------------------------------------

WORSE20 = dict(lat_c=math.log(1.2), miss_c=1.0 - 0.72, err_c=P_ERR * 1.2, d_c=1.2)


def _run_incremental(judge: CanaryJudge, raw: dict, data: Mapping, r: int, specs) -> list:
    for t in range(T):
        v = judge.update(*_feed(raw, data, r, t, specs))
        if v.final:
            break
    return judge.history


def test_low_traffic_regression_is_judged_to_the_end_of_the_window_and_rolled_back():
    """5 requests per interval, every metric 20% worse. Over 200 runs (the engine, vectorised) no run
    is ever "inconclusive" before interval 60 and >= 90% are rolled back within the window; the
    incremental CanaryJudge, fed the per-request values of some of those runs, keeps going past
    interval 5 and reaches the same decision at the same interval."""
    rng = np.random.default_rng(1802)
    data, raw = simulate(rng, 200, n_s=5, n_c=5, raw=True, **WORSE20)
    cfg = JudgeConfig()
    code, which, when = _judge(DEFAULT_METRICS, cfg, data)
    assert not (code[:, :T - 1] == INCONCLUSIVE).any()
    assert float(((which == ROLLBACK) & (when < T)).mean()) >= 0.90  # before the window's last interval
    assert not (which == PROMOTE).any()
    assert when.min() > 5  # the old judge gave up at interval 5

    for r in range(4):
        history = _run_incremental(CanaryJudge(DEFAULT_METRICS, cfg), raw, data, r, DEFAULT_METRICS)
        decisions = [v.decision for v in history]
        assert len(history) > 5 and set(decisions[:-1]) == {"continue"}, decisions
        assert decisions[-1] == _engine.DECISIONS[which[r]] and len(history) == when[r], (r, decisions[-1], when[r])


def test_low_traffic_healthy_canary_is_inconclusive_exactly_at_the_window_end_and_never_promoted():
    rng = np.random.default_rng(1803)
    data, raw = simulate(rng, 200, n_s=5, n_c=5, raw=True)
    cfg = JudgeConfig()
    code, which, when = _judge(DEFAULT_METRICS, cfg, data)
    assert not (code == PROMOTE).any()
    assert not (code[:, :T - 1] == INCONCLUSIVE).any()
    assert float((which == ROLLBACK).mean()) <= 0.05
    assert ((which == INCONCLUSIVE) == (which != ROLLBACK)).all() and (when[which == INCONCLUSIVE] == T).all()

    r = int(np.argmax(which == INCONCLUSIVE))
    judge = CanaryJudge(DEFAULT_METRICS, cfg)
    history = _run_incremental(judge, raw, data, r, DEFAULT_METRICS)
    assert [v.decision for v in history] == ["continue"] * (T - 1) + ["inconclusive"]
    final = history[-1]
    assert final.interval == T and final.final
    assert "estimates so far" in final.reason
    # the estimates it shows are the metrics' own
    for name, m in final.metrics.items():
        assert m.relative_change is not None
        assert f"{name} {m.relative_change * 100:+.1f}%" in final.reason
    with pytest.raises(RuntimeError, match="inconclusive"):
        judge.update(*_feed(raw, data, r, T - 1, DEFAULT_METRICS))


# -- 5. the p99 exceedance test ------------------------------------------------------------------------

#: alpha = 0.8 * tail_share 0.5 * exceed_share 0.5 = 0.2 for a judge of latency alone: a false-alarm
#: rate that 1,000 runs can measure (the default, 0.05/4 * 0.2 * 0.5 = 0.00125, cannot be)
WIDE = JudgeConfig(alpha=0.8, tail_share=0.5, exceed_share=0.5)
#: tolerance 0: equal arms sit exactly on the null's boundary, where the bound is tight
TIGHT = dataclasses.replace(LATENCY, exceed_tolerance=0.0)


def _exceed_false_alarms(rng: np.random.Generator, reps: int, scenario: str) -> tuple[float, float]:
    """Share of healthy runs whose exceedance test alone (``exceed_regressed``) fires within 60
    intervals, and the test's alpha."""
    plan = _engine.make_plans([TIGHT], WIDE)[0]
    fired = []
    t = np.arange(T)
    for _ in range(reps // 250):
        R = 250
        if scenario == "equal":
            kw: dict = {}
        elif scenario == "ramp":   # canary 20 -> 200, shared drift up and per-interval shock
            kw = dict(n_c=np.rint(np.linspace(20, 200, T)), shift=math.log(1.03) * t + 0.1 * rng.standard_normal((R, T)))
        else:  # stable 200 -> 60; canary 200, 30% of its intervals missing, 30 in every 7th; drift down, shock
            nc = np.full((R, T), 200)
            nc[rng.random((R, T)) < 0.3] = 0
            nc[:, ::7] = 30
            kw = dict(n_s=np.rint(np.linspace(200, 60, T)), n_c=nc,
                      shift=-math.log(1.02) * t + 0.2 * rng.standard_normal((R, T)))
        data, _ = simulate(rng, R, metrics=("latency",), **kw)
        st = _engine.evaluate_metric(plan, WIDE, *data["latency"])
        fired.append(st["exceed_regressed"].any(axis=-1))
    return float(np.concatenate(fired).mean()), plan.alpha_exceed


@pytest.mark.parametrize("scenario", ["equal", "ramp", "gaps"])
def test_exceedance_test_false_alarms_stay_below_its_alpha_under_the_null(scenario):
    """Same distribution in both arms; equal traffic, or a ramping canary under a shared drift and
    shock, or a shrinking stable against a canary with gaps (where a test that ignored the traffic
    split would blame the canary for having more requests). 1,000 runs of 60 intervals each; the
    measured rates are 7-12% against alpha 0.2."""
    rate, alpha = _exceed_false_alarms(np.random.default_rng({"equal": 51, "ramp": 52, "gaps": 53}[scenario]),
                                       1000, scenario)
    assert alpha == pytest.approx(0.2)
    assert rate <= alpha, f"{scenario}: the exceedance test fired in {rate:.1%} of null runs (alpha {alpha})"
    assert rate > 0.01  # at the null's boundary the bound is nearly used: the test is not vacuous


#: 2% -> 6% slow requests, k = 5.16 times slower: p99 +48% with the geometric mean held (the issue's
#: scenario). With k = 3 (p99 +25%, the canary's share above the stable's p99 about 2x the stable's
#: against the 1.5x tolerated) the judge rolls back only ~14% of runs within the window: at alpha
#: 0.00125 and 200 requests per interval even a fixed-sample test of that ratio would lack the power.
SLOW = (0.02, 0.06, 5.155)


def test_a_tail_only_latency_regression_is_rolled_back_by_the_exceedance_test():
    rng = np.random.default_rng(1804)
    data, raw = simulate(rng, 200, slow=SLOW, raw=True)
    cfg = JudgeConfig()
    states = _states(DEFAULT_METRICS, cfg, data)
    which, when = _engine.first_decision(_engine.decide(states, cfg))
    rolled = which == ROLLBACK
    assert float(rolled.mean()) >= 0.80, f"p99 +48% rolled back in {rolled.mean():.1%} of runs"
    lat = states[[s.name for s in DEFAULT_METRICS].index("latency")]
    # the geometric mean is held: the mean test fires no more than its false-alarm rate
    assert float(lat["mean_regressed"][:, -1].mean()) <= 0.05
    assert float(lat["exceed_regressed"][:, -1].mean()) >= 0.75

    # the incremental judge on one of those runs: the same decision, and it says why
    r = int(np.argmax(rolled & lat["exceed_regressed"][np.arange(200), when - 1]))
    history = _run_incremental(CanaryJudge(DEFAULT_METRICS, cfg), raw, data, r, DEFAULT_METRICS)
    final = history[-1]
    assert final.decision == "rollback" and final.interval == when[r]
    m = final.metrics["latency"]
    assert m.status == "regressed" and m.exceed is not None and m.exceed.regressed
    assert m.reason.startswith("tail regression") and "stable's p99" in m.reason, m.reason
    assert m.exceed.canary_share > 1.5 * m.exceed.stable_share
    assert m.exceed.threshold == pytest.approx(1 / (0.05 / 4 * 0.2 * 0.5))


def test_the_first_interval_has_no_exceedance_evidence_whatever_the_canary_tail():
    """The threshold is the stable's p99 bucket boundary from its earlier intervals: interval 1 has
    none, so its e-value is 1 however slow the canary; the same tail in interval 2 is seen. With 50
    stable requests per interval the p99 needs 100 earlier ones: no evidence before interval 3."""
    rng = np.random.default_rng(1805)
    cfg = JudgeConfig(warmup=0)
    plan = _engine.make_plans([LATENCY], cfg)[0]
    lat_c = np.zeros(T)
    lat_c[:3] = math.log(50.0)  # the canary 50 times slower in its first three intervals
    for n_s, first_seen in ((200, 2), (50, 3)):
        data, _ = simulate(rng, 20, TT=T, n_s=n_s, lat_c=lat_c, metrics=("latency",))
        st = _engine.evaluate_metric(plan, cfg, *data["latency"])
        log_e = st["log_e_exceed"]
        assert (log_e[:, :first_seen - 1] == 0.0).all()
        assert (st["exceed_nc"][:, :first_seen - 1] == 0.0).all()
        assert (log_e[:, first_seen - 1] > math.log(1 / plan.alpha_exceed)).all()

    judge = CanaryJudge((LATENCY,), cfg)
    slow = rng.lognormal(MU0, SIGMA, 200)
    slow[:20] *= 100.0  # 10% of the canary's requests 100 times slower
    v = judge.update({"latency": rng.lognormal(MU0, SIGMA, 200)}, {"latency": slow})
    assert v.metrics["latency"].exceed is not None
    assert v.metrics["latency"].exceed.e_value == 1.0 and v.metrics["latency"].exceed.canary_requests == 0


@pytest.mark.parametrize(("factor", "decision"), [(10.0, "rollback"), (0.1, "promote")])
def test_a_huge_change_gives_a_verdict_not_an_overflow(factor, decision):
    """A canary 10x slower (or faster) in one interval of 200 requests: log e ~ 1,000, beyond what a
    float's exp holds; the verdict must still be given (e-value shown as inf or capped)."""
    rng = np.random.default_rng(1806)
    judge = CanaryJudge((LATENCY,), JudgeConfig(warmup=0))
    v = judge.update({"latency": rng.lognormal(MU0, SIGMA, 200)},
                     {"latency": rng.lognormal(MU0 + math.log(factor), SIGMA, 200)})
    assert v.decision == decision


# -- 6. warm-up ----------------------------------------------------------------------------------------

def _cold_start(rng: np.random.Generator, R: int, raw: bool = False):
    lat_c = np.zeros(T)
    lat_c[0] = math.log(1.3)  # the canary's first interval 30% slower (cold caches), healthy after
    return simulate(rng, R, lat_c=lat_c, raw=raw)


def test_warm_up_keeps_a_slow_first_interval_from_rolling_back_and_it_matters():
    """Default warm-up (1 interval): no rollback at interval 1, and every decision is exactly the one
    on the same data with a healthy first interval (what the warm-up holds does not count); without a
    warm-up the slow first interval is rolled back at once in most runs."""
    data, _ = _cold_start(np.random.default_rng(1807), 200)
    code, _, _ = _judge(DEFAULT_METRICS, JudgeConfig(), data)
    assert not (code[:, 0] == ROLLBACK).any()
    healthy, _ = simulate(np.random.default_rng(1807), 200)  # the same draws without the slow start
    np.testing.assert_array_equal(code, _judge(DEFAULT_METRICS, JudgeConfig(), healthy)[0])
    code0, _, _ = _judge(DEFAULT_METRICS, JudgeConfig(warmup=0), data)
    assert float((code0[:, 0] == ROLLBACK).mean()) >= 0.90
    assert not (_judge(DEFAULT_METRICS, JudgeConfig(warmup=0), healthy)[0][:, 0] == ROLLBACK).all()


def test_the_warm_up_interval_is_reported_as_warm_up():
    _, raw = _cold_start(np.random.default_rng(1808), 1, raw=True)
    data, _ = _cold_start(np.random.default_rng(1808), 1)
    v = CanaryJudge(DEFAULT_METRICS).update(*_feed(raw, data, 0, 0, DEFAULT_METRICS))
    assert v.decision == "continue"
    for name, m in v.metrics.items():
        assert m.status == "pending" and "warm-up" in m.reason, (name, m.status, m.reason)


@pytest.mark.parametrize("warmup", [-1, 60, 61, True, 1.0, "1"])
def test_warm_up_must_be_a_whole_number_of_intervals_inside_the_window(warmup):
    with pytest.raises(ValueError, match="warmup"):
        JudgeConfig(warmup=warmup)


def test_warm_up_bounds_follow_the_window():
    assert JudgeConfig(window=5, warmup=4).warmup == 4 and JudgeConfig(warmup=0).warmup == 0
    with pytest.raises(ValueError, match="warmup"):
        JudgeConfig(window=5, warmup=5)


# -- 7. readable bounds, no warnings ------------------------------------------------------------------

@pytest.mark.parametrize(("stable", "canary"), [((0, 60), (0, 60)), ((1, 60), (0, 60)), ((0, 50), (2, 50)),
                                                ((3, 100), (1, 60))])
def test_bounds_from_very_little_data_print_unbounded_not_huge_percentages(stable, canary):
    judge = CanaryJudge((ERROR_RATE,), JudgeConfig(warmup=0))
    v = judge.update({"error_rate": Counts(*stable)}, {"error_rate": Counts(*canary)})
    m = v.metrics["error_rate"]
    assert m.ci_high is not None and m.ci_high >= 10.0  # the data do not bound it...
    assert "unbounded" in m.reason, m.reason            # ...and the text says so
    assert not re.search(r"[+-]\d{4,}(\.\d+)?%", m.reason), m.reason


def test_bounds_that_say_something_are_printed_as_numbers():
    rng = np.random.default_rng(1809)
    judge = CanaryJudge((DISSONANCE,), JudgeConfig(warmup=0))
    for _ in range(2):
        v = judge.update({"d": rng.gamma(D_SHAPE, D_SCALE, 60)}, {"d": rng.gamma(D_SHAPE, D_SCALE, 60)})
    m = v.metrics["d"]
    assert m.status == "pending" and "unbounded" not in m.reason
    assert re.search(r"bounds [+-]\d+\.\d% \.\. [+-]\d+\.\d%", m.reason), m.reason


def test_no_runtime_warning_while_an_arm_has_no_data_yet():
    rng = np.random.default_rng(1810)

    def arm(n: int) -> dict:
        return {"latency": rng.lognormal(MU0, SIGMA, n), "d": rng.gamma(D_SHAPE, D_SCALE, n),
                "error_rate": Counts(rng.binomial(n, P_ERR), n), "accuracy": Counts(rng.binomial(n, 0.9), n)}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cfg in (JudgeConfig(), JudgeConfig(warmup=0)):
            judge = CanaryJudge(DEFAULT_METRICS, cfg)
            judge.update(arm(200), {})                                   # no canary yet
            judge.update(arm(200), {name: None for name in arm(1)})      # explicitly none
            judge.update({}, arm(50))                                    # no stable this time
            v = judge.update(arm(200), arm(50))                          # both
            assert v.decision == "continue"
            judge = CanaryJudge(DEFAULT_METRICS, cfg)
            v = judge.update({}, {})                                     # nothing at all
            assert all(m.status in ("no_data", "pending") for m in v.metrics.values())


# -- 8. histograms in the incremental judge ------------------------------------------------------------

def _summary(hist: tuple[float, ...]) -> Summary:
    return Summary(n=sum(hist), mean=0.12, std=0.06, log_mean=math.log(0.11), log_std=0.45, hist=hist)


def test_histogram_summaries_feed_the_exceedance_test():
    """Buckets (4 of them, the last the overflow). Interval 1: no earlier stable data, no evidence.
    Interval 2: the stable's interval-1 p99 lies in bucket 3 (cumulative 50, 150, 198 >= 0.99*200),
    so the requests above it are bucket 4's: stable 2 of 200, canary 10 of 200."""
    judge = CanaryJudge((LATENCY,), JudgeConfig(warmup=0))
    v1 = judge.update({"latency": _summary((50, 100, 48, 2))}, {"latency": _summary((50, 100, 48, 2))})
    e1 = v1.metrics["latency"].exceed
    assert e1 is not None and e1.e_value == 1.0 and e1.stable_requests == 0 and e1.canary_requests == 0
    v2 = judge.update({"latency": _summary((50, 100, 48, 2))}, {"latency": _summary((50, 100, 40, 10))})
    e2 = v2.metrics["latency"].exceed
    assert (e2.stable_above, e2.stable_requests, e2.canary_above, e2.canary_requests) == (2, 200, 10, 200)
    assert e2.stable_share == pytest.approx(0.01) and e2.canary_share == pytest.approx(0.05)
    # the binomial e-value by hand: pi0 = r0 n_c / (r0 n_c + n_s), r0 = 1 + tolerance (1.25 by
    # default), pi1 at r = r0 k, k in the grid
    r0 = 1.25
    pi0 = r0 / (r0 + 1.0)
    pi1 = np.array([r0 * k / (r0 * k + 1.0) for k in (1.5, 2.0, 3.0, 5.0)])
    e = np.mean((pi1 / pi0) ** 10 * ((1 - pi1) / (1 - pi0)) ** 2)
    assert e2.e_value == pytest.approx(e, rel=1e-9) and e2.e_value > 1.0
    assert e2.tolerance == 0.25 and e2.quantile == 0.99 and not e2.regressed


def test_a_histogram_whose_bucket_count_changes_is_refused_and_the_judge_is_unchanged():
    judge = CanaryJudge((LATENCY,), JudgeConfig(warmup=0))
    judge.update({"latency": _summary((50, 100, 48, 2))}, {"latency": _summary((50, 100, 48, 2))})
    with pytest.raises(ValueError, match="bucket"):
        judge.update({"latency": _summary((50, 100, 48, 2))}, {"latency": _summary((50, 100, 40, 5, 5))})
    with pytest.raises(ValueError, match="bucket"):
        judge.update({"latency": _summary((50, 100, 48, 1, 1))}, {"latency": _summary((50, 100, 48, 2))})
    assert len(judge.history) == 1
    v = judge.update({"latency": _summary((50, 100, 48, 2))}, {"latency": _summary((50, 100, 40, 10))})
    assert v.interval == 2 and v.metrics["latency"].exceed.canary_above == 10


# -- 9. creating a judge again is cheap ----------------------------------------------------------------

def test_a_second_judge_with_the_same_config_reuses_the_planned_information():
    cfg = JudgeConfig(alpha=0.0437)  # a config no other test plans, so the first judge computes
    before = _stats.information_needed.cache_info()
    CanaryJudge(DEFAULT_METRICS, cfg)
    first = _stats.information_needed.cache_info()
    assert first.misses > before.misses  # computed (metrics with the same constants share an entry)
    t0 = time.process_time()
    CanaryJudge(DEFAULT_METRICS, cfg)
    cpu = time.process_time() - t0
    second = _stats.information_needed.cache_info()
    assert second.misses == first.misses and second.hits - first.hits == len(DEFAULT_METRICS)
    assert cpu < 0.2, f"a second judge took {cpu:.3f} s of CPU"
