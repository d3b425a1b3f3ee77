"""The judge's arithmetic over whole paths, vectorised: arrays of shape (runs, intervals).

The incremental :class:`~opsbook.canary.judge.CanaryJudge` calls these with one run, the benchmark
with a thousand; both therefore decide by the same code. Per-interval inputs go in; cumulative
estimates, e-values and per-interval metric states come out; :func:`decide` turns the states of all
metrics into the judge's decision at every interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from opsbook.canary._stats import (
    information_needed,
    log_exceed_e,
    log_mixture_e,
    log_tail_e,
    mixture_boundary,
)
from opsbook.canary.spec import JudgeConfig, MetricSpec, histogram

CONTINUE, PROMOTE, ROLLBACK, INCONCLUSIVE = 0, 1, 2, 3
DECISIONS = ("continue", "promote", "rollback", "inconclusive")
_VAR_FLOOR = 1e-12


@dataclass(frozen=True)
class MetricPlan:
    """Constants of one metric's tests, fixed before the first look."""

    spec: MetricSpec
    log_tol: float          # log(1 + tolerance): the promote test's null is theta >= log_tol
    rho: float              # precision of the half-normal part of the mixture over theta
    point_weight: float     # mass of the mixture's point at one tolerance (log_tol)
    alpha_rollback: float   # of the mean/rate test
    alpha_tail: float       # of the quantile guard (0 if none)
    alpha_exceed: float     # of the exceedance test (0 if none)
    alpha_promote: float
    info_needed: float      # information for a tolerance-sized regression to be caught with `power`

    def log_e(self, score: np.ndarray, info: np.ndarray) -> np.ndarray:
        """log e-value of the metric's mixture e-process (both tests use the same mixture)."""
        return log_mixture_e(score, info, self.rho, self.log_tol, self.point_weight)

    def boundary(self, info: np.ndarray | float, alpha: float) -> np.ndarray:
        """The score at which :meth:`log_e` reaches 1/alpha (divide by ``info`` for estimate units)."""
        return mixture_boundary(info, self.rho, alpha, self.log_tol, self.point_weight)


def make_plans(specs: Sequence[MetricSpec], config: JudgeConfig) -> list[MetricPlan]:
    names = [s.name for s in specs]
    if not specs:
        raise ValueError("the judge needs at least one metric")
    if len(set(names)) != len(names):
        raise ValueError(f"metric names must be unique, got {names}")
    total = sum(s.weight for s in specs)
    plans = []
    for s in specs:
        share = s.weight / total
        a_metric = config.alpha * share
        a_tails = a_metric * config.tail_share if s.tail else 0.0
        a_exceed = a_tails * config.exceed_share
        a_tail = a_tails - a_exceed
        a_roll = a_metric - a_tails
        log_tol = math.log1p(s.tolerance)
        rho = 1.0 / (config.mixture_scale * log_tol) ** 2
        plans.append(MetricPlan(
            spec=s, log_tol=log_tol, rho=rho, point_weight=config.point_mass, alpha_rollback=a_roll,
            alpha_tail=a_tail, alpha_exceed=a_exceed, alpha_promote=config.alpha_promote * share,
            info_needed=information_needed(log_tol, rho, a_roll, config.power, log_tol, config.point_mass),
        ))
    return plans


def _f(a: np.ndarray | None, shape: tuple[int, ...], fill: float = np.nan) -> np.ndarray:
    if a is None:
        return np.full(shape, fill)
    return np.asarray(a, dtype=float)


def sample_fields(spec: MetricSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-interval fields of a continuous metric from per-request values ``x`` of shape
    (..., requests): ``n``, ``mean`` and ``std`` (of ln x for a ``scale="log"`` metric) and ``tail``
    (the spec's quantile, in x's unit) and, for a metric with tail tests, ``hist`` (the values binned on
    the spec's bucket bounds): what :func:`evaluate_metric` reads, vectorised."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    v = np.log(x) if spec.scale == "log" else x
    std = v.std(axis=-1, ddof=1) if n > 1 else np.zeros(x.shape[:-1])
    out = {"n": np.full(x.shape[:-1], float(n)), "mean": v.mean(axis=-1), "std": std,
           "tail": np.quantile(x, spec.tail_quantile, axis=-1)}
    if spec.tail:
        out["hist"] = histogram(spec.bucket_bounds(), x)
    return out


def _both(stable_n: np.ndarray, canary_n: np.ndarray) -> np.ndarray:
    """Intervals where both arms have data: the strata that carry evidence."""
    return (stable_n > 0) & (canary_n > 0)


def estimates_bernoulli(spec: MetricSpec, stable: Mapping[str, np.ndarray],
                        canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cumulative theta = sign*log(p_c/p_s), stratified by interval, and its information 1/Var.

    The rate ratio is the Mantel-Haenszel estimate over intervals (strata),
    RR = sum_t(k_c n_s / N) / sum_t(k_s n_c / N), N = n_s + n_c, with the Greenland-Robins (1985)
    variance of its log, which holds both for a few large intervals and for many sparse ones. Each
    interval compares the arms within itself, so anything that moves both arms over time (diurnal
    load, a shared drift or shock) cancels whatever the traffic split, and an interval where one arm
    has no traffic contributes nothing. One pseudo-event, added in the first interval with
    both arms (split in proportion to the arms' traffic, so that it is neutral), keeps zero counts finite
    and the first intervals of a rare event uninformative. The
    estimates reported (``est_s``/``est_c``) are the pooled rates K/N.
    """
    ks = np.nan_to_num(np.asarray(stable["successes"], dtype=float))
    ns = np.nan_to_num(np.asarray(stable["trials"], dtype=float))
    kc = np.nan_to_num(np.asarray(canary["successes"], dtype=float))
    nc = np.nan_to_num(np.asarray(canary["trials"], dtype=float))
    both = _both(ns, nc)
    ks, kc = np.where(both, ks, 0.0), np.where(both, kc, 0.0)
    ns_b, nc_b = np.where(both, ns, 0.0), np.where(both, nc, 0.0)
    N = np.where(both, ns_b + nc_b, 1.0)
    R = np.cumsum(kc * ns_b / N, axis=-1)
    S = np.cumsum(ks * nc_b / N, axis=-1)
    P = np.cumsum((nc_b * ns_b * (kc + ks) - kc * ks * N) / (N * N), axis=-1)
    # one pseudo-event in the first interval with both arms, split between the arms in proportion to
    # their traffic there (what no difference would give): it adds f_c f_s to R, S and P alike, so it
    # leaves theta at 0 when there are no events, whatever the split
    first = np.cumsum(both, axis=-1) >= 1
    idx = np.argmax(both, axis=-1)[..., None]
    f_s = np.take_along_axis(ns_b / N, idx, axis=-1)
    f_c = np.take_along_axis(nc_b / N, idx, axis=-1)
    pseudo = np.where(first, f_s * f_c, 0.0)
    R, S, P = R + pseudo, S + pseudo, P + pseudo
    Ns, Nc = np.cumsum(ns_b, axis=-1), np.cumsum(nc_b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = spec.sign * (np.log(R) - np.log(S))
        v = P / (R * S)
        est_s = np.where(Ns > 0, np.cumsum(ks, axis=-1) / np.where(Ns > 0, Ns, 1.0), np.nan)
        est_c = np.where(Nc > 0, np.cumsum(kc, axis=-1) / np.where(Nc > 0, Nc, 1.0), np.nan)
    used_s, used_c = Ns, Nc
    Ns, Nc = np.cumsum(ns, axis=-1), np.cumsum(nc, axis=-1)  # each arm's own traffic, compared or not
    has = first & np.isfinite(theta) & np.isfinite(v) & (v > 0)
    v = np.maximum(np.where(has, v, 1.0), _VAR_FLOOR)
    return {"theta": np.where(has, theta, np.nan), "info": np.where(has, 1.0 / v, 0.0),
            "Ns": Ns, "Nc": Nc, "used_s": used_s, "used_c": used_c, "est_s": est_s, "est_c": est_c}


def estimates_continuous(spec: MetricSpec, stable: Mapping[str, np.ndarray],
                         canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cumulative theta, stratified by interval, and its information.

    Each interval where both arms have data is a stratum, weighted by w = n_c n_s / (n_c + n_s)
    (the inverse of its difference's variance when the spread is steady). ``scale="log"``: the
    fields are means and stds of ln x; theta = sign * sum(w (m_c - m_s)) / sum(w), the weighted
    within-interval difference of the mean logs (the log ratio of geometric means), with variance
    sum(w**2 (s_c**2/n_c + s_s**2/n_s)) / sum(w)**2. ``scale="linear"``: theta = sign * log(R/S)
    with R = sum(w m_c), S = sum(w m_s), the Mantel-Haenszel-type ratio of means, variance by the
    delta method sum(w**2 s_c**2/n_c)/R**2 + sum(w**2 s_s**2/n_s)/S**2. A within-interval spread
    that cannot be estimated (one value) takes the arm's pooled within-interval variance so far.
    Shared time effects cancel within each interval whatever the traffic split; an interval where one
    arm has no data contributes nothing. The estimates reported are the pooled means (geometric
    means exp(m) on the log scale).
    """
    log_scale = spec.scale == "log"
    arms: dict[str, dict[str, np.ndarray]] = {}
    for arm, obs in (("s", stable), ("c", canary)):
        n = np.asarray(obs["n"], dtype=float)
        mean = np.asarray(obs["mean"], dtype=float)
        std = np.asarray(obs["std"], dtype=float)
        valid = (np.nan_to_num(n) > 0) & np.isfinite(mean)
        arms[arm] = {"n": np.where(valid, n, 0.0), "mean": np.where(valid, mean, 0.0),
                     "std": np.where(valid & np.isfinite(std), std, np.nan)}
    both = _both(arms["s"]["n"], arms["c"]["n"])
    w = np.where(both, arms["s"]["n"] * arms["c"]["n"] / np.where(both, arms["s"]["n"] + arms["c"]["n"], 1.0), 0.0)
    W = np.cumsum(w, axis=-1)
    out: dict[str, np.ndarray] = {}
    for arm in ("s", "c"):
        a = arms[arm]
        n = np.where(both, a["n"], 0.0)
        # pooled within-interval variance so far, for intervals whose own spread is unknown (n = 1)
        has_sd = both & (n > 1) & np.isfinite(a["std"])
        dof = np.cumsum(np.where(has_sd, n - 1.0, 0.0), axis=-1)
        ss = np.cumsum(np.where(has_sd, (n - 1.0) * np.square(np.nan_to_num(a["std"])), 0.0), axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = np.where(dof > 0, ss / np.where(dof > 0, dof, 1.0), np.nan)
            var_t = np.where(has_sd, np.square(np.nan_to_num(a["std"])), pooled)
            a["wm"] = np.cumsum(w * a["mean"], axis=-1)
            a["vsum"] = np.cumsum(np.where(both, w * w * var_t / np.where(n > 0, n, 1.0), 0.0), axis=-1)
            a["vok"] = np.cumsum(both & ~np.isfinite(var_t), axis=-1) == 0
            N = np.cumsum(a["n"], axis=-1)
            m = np.where(N > 0, np.cumsum(a["n"] * a["mean"], axis=-1) / np.where(N > 0, N, 1.0), np.nan)
        out["N" + arm] = N
        out["used_" + arm] = np.cumsum(n, axis=-1)
        out["m" + arm] = m
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = (W > 0) & arms["s"]["vok"] & arms["c"]["vok"] & (out["used_s"] > 1) & (out["used_c"] > 1)
        if log_scale:
            theta = spec.sign * (arms["c"]["wm"] - arms["s"]["wm"]) / np.where(W > 0, W, 1.0)
            v = (arms["c"]["vsum"] + arms["s"]["vsum"]) / np.square(np.where(W > 0, W, 1.0))
            est_s, est_c = np.exp(out["ms"]), np.exp(out["mc"])
        else:
            R, S = arms["c"]["wm"], arms["s"]["wm"]
            usable = usable & (R > 0) & (S > 0)
            theta = spec.sign * (np.log(np.where(usable, R, 1.0)) - np.log(np.where(usable, S, 1.0)))
            v = arms["c"]["vsum"] / np.square(np.where(usable, R, 1.0)) + arms["s"]["vsum"] / np.square(
                np.where(usable, S, 1.0))
            est_s, est_c = out["ms"], out["mc"]
    usable = usable & np.isfinite(theta) & np.isfinite(v)
    v = np.where(usable, np.maximum(np.nan_to_num(v, nan=_VAR_FLOOR), _VAR_FLOOR), np.inf)
    return {"theta": np.where(usable, theta, np.nan), "info": np.where(usable, 1.0 / v, 0.0),
            "Ns": out["Ns"], "Nc": out["Nc"], "used_s": out["used_s"], "used_c": out["used_c"],
            "est_s": est_s, "est_c": est_c}


def exceedances(stable_hist: np.ndarray, canary_hist: np.ndarray, quantile: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per interval, the requests of each arm above a threshold fixed before the interval: the upper
    bound of the bucket holding the stable's ``quantile`` over all its earlier intervals (a predictable
    choice, so that the comparison within the interval is a fair bet whatever the threshold).
    Returns (x_s, n_s, x_c, n_c), NaN-free, zero where there is no threshold yet or no histogram."""
    hs = np.nan_to_num(np.asarray(stable_hist, dtype=np.float64))
    hc = np.nan_to_num(np.asarray(canary_hist, dtype=np.float64))
    prev = np.cumsum(hs, axis=-2) - hs          # the stable's histogram before each interval
    total = prev.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(prev, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reached = cdf >= quantile * total
    j = np.argmax(reached, axis=-1)[..., None]  # the bucket holding the quantile
    # enough earlier requests that the quantile is inside the histogram, not its last value
    ready = (total[..., 0] * (1.0 - quantile) >= 1.0)
    above_s = hs.sum(axis=-1) - np.take_along_axis(np.cumsum(hs, axis=-1), j, axis=-1)[..., 0]
    above_c = hc.sum(axis=-1) - np.take_along_axis(np.cumsum(hc, axis=-1), j, axis=-1)[..., 0]
    n_s, n_c = hs.sum(axis=-1), hc.sum(axis=-1)
    ok = ready & (n_s > 0) & (n_c > 0)
    z = np.zeros_like(n_s)
    return (np.where(ok, above_s, z), np.where(ok, n_s, z), np.where(ok, above_c, z), np.where(ok, n_c, z))


def _without_warmup(obs: Mapping[str, np.ndarray], warmup: int) -> dict[str, np.ndarray]:
    """The observations with the first ``warmup`` intervals emptied (no data, as if not served)."""
    out: dict[str, np.ndarray] = {}
    for k, v in obs.items():
        a = np.asarray(v)
        if warmup <= 0:
            out[k] = a
            continue
        a = np.array(a, dtype=np.float32 if a.dtype == np.float32 else float, copy=True)
        ax = -2 if k == "hist" else -1
        idx = [slice(None)] * a.ndim
        idx[ax] = slice(0, min(warmup, a.shape[ax]))
        a[tuple(idx)] = 0.0 if k in ("n", "trials", "successes", "hist") else np.nan
        out[k] = a
    return out


def evaluate_metric(plan: MetricPlan, config: JudgeConfig, stable: Mapping[str, np.ndarray],
                    canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All per-interval quantities of one metric over whole paths.

    ``stable``/``canary`` map field names to arrays (runs, intervals) of per-interval values:
    Bernoulli ``successes``, ``trials``; continuous ``n``, ``mean``, ``std`` (of ln x for a
    ``scale="log"`` metric), optionally ``tail`` (always in the metric's own unit) and ``hist``
    (runs, intervals, buckets): per-bucket counts on fixed bounds, the exceedance test's input.
    Missing values are NaN (or a count of 0). The first ``config.warmup`` intervals are not judged.
    """
    spec = plan.spec
    stable = _without_warmup(stable, config.warmup)
    canary = _without_warmup(canary, config.warmup)
    if spec.kind == "bernoulli":
        r = estimates_bernoulli(spec, stable, canary)
    else:
        r = estimates_continuous(spec, stable, canary)
    theta, info = r["theta"], r["info"]
    T = theta.shape[-1]
    # the samples in intervals where both arms were served: what the stratified comparison rests on
    active = (r["used_s"] >= config.min_samples) & (r["used_c"] >= config.min_samples) & (info > 0)
    th = np.nan_to_num(theta)
    log_e_roll = np.where(active, plan.log_e(th * info, info), 0.0)
    log_e_prom = np.where(active, plan.log_e((plan.log_tol - th) * info, info), 0.0)
    mean_regressed = log_e_roll >= math.log(1.0 / plan.alpha_rollback)

    wins = losses = log_e_tail = None
    tail_regressed = np.zeros_like(mean_regressed)
    if spec.tail and "tail" in stable and "tail" in canary:
        ns = _f(stable.get("n"), theta.shape, 0.0)
        nc = _f(canary.get("n"), theta.shape, 0.0)
        qs = np.asarray(stable["tail"], dtype=float)
        qc = np.asarray(canary["tail"], dtype=float)
        compared = (np.nan_to_num(ns) >= config.tail_min_samples) & (np.nan_to_num(nc) >= config.tail_min_samples) \
            & np.isfinite(qs) & np.isfinite(qc)
        with np.errstate(invalid="ignore"):
            worse = compared & (qc > (1.0 + spec.tolerance) * qs)
        wins = np.cumsum(worse, axis=-1)
        losses = np.cumsum(compared & ~worse, axis=-1)
        log_e_tail = log_tail_e(wins, losses)
        tail_regressed = log_e_tail >= math.log(1.0 / plan.alpha_tail)

    ex = None
    log_e_exceed = None
    exceed_regressed = np.zeros_like(mean_regressed)
    if spec.tail and "hist" in stable and "hist" in canary:
        x_s, n_s, x_c, n_c = exceedances(stable["hist"], canary["hist"], spec.exceed_quantile)
        log_e_exceed = log_exceed_e(x_c, x_s, n_c, n_s, spec.exceed_tolerance)
        exceed_regressed = log_e_exceed >= math.log(1.0 / plan.alpha_exceed)
        ex = {"exceed_s": np.cumsum(x_s, axis=-1), "exceed_c": np.cumsum(x_c, axis=-1),
              "exceed_ns": np.cumsum(n_s, axis=-1), "exceed_nc": np.cumsum(n_c, axis=-1)}

    regressed = np.maximum.accumulate(mean_regressed | tail_regressed | exceed_regressed, axis=-1)
    # The promote test is on the mean only; while a tail test's evidence leans towards a tail
    # regression (e-value > 1) the metric is held from passing. That can only delay or prevent a
    # promote, so neither error bound changes; without it a tail-only regression with an unchanged
    # mean could be promoted before the tail test has enough intervals to be certain.
    tail_leans = np.zeros_like(mean_regressed)
    if log_e_tail is not None:
        tail_leans = tail_leans | (log_e_tail > 0.0)
    if log_e_exceed is not None:
        tail_leans = tail_leans | (log_e_exceed > 0.0)
    ok = np.maximum.accumulate(log_e_prom >= math.log(1.0 / plan.alpha_promote), axis=-1) & ~tail_leans
    judged = np.maximum(np.arange(1, T + 1, dtype=float) - config.warmup, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        projected = np.where(judged > 0, info * (config.window - config.warmup) / np.where(judged > 0, judged, 1.0),
                             0.0)
    no_data = (r["Ns"] <= 0) | (r["Nc"] <= 0)
    # a projection only (no data is a failure, not low traffic): reported, never a decision before the end
    hopeless = ~ok & ~no_data & (projected < plan.info_needed)
    ok_at_end = ~no_data & (info >= plan.info_needed) & (th < plan.log_tol) & ~tail_leans
    return {**r, "active": active, "log_e_roll": log_e_roll, "log_e_prom": log_e_prom,
            "mean_regressed": mean_regressed, "tail_regressed": tail_regressed,
            "exceed_regressed": exceed_regressed, "regressed": regressed,
            "ok": ok, "tail_leans": tail_leans, "no_data": no_data, "hopeless": hopeless, "ok_at_end": ok_at_end,
            "projected": projected, "tail_wins": wins, "tail_losses": losses, "log_e_tail": log_e_tail,
            "log_e_exceed": log_e_exceed, **(ex or {})}


def decide(states: Sequence[Mapping[str, np.ndarray]], config: JudgeConfig) -> np.ndarray:
    """The decision code at every interval (runs, intervals), from all metrics' states.

    In order: any metric regressed -> rollback; every metric shown within tolerance -> promote; at
    the window's last interval: a metric without data -> rollback (it fails, never passes), else every
    metric within tolerance or reaching enough traffic without regression -> promote, else
    inconclusive; before it: continue. "Inconclusive" is never decided early: a projection that the
    window cannot suffice is reported (``hopeless``) while the analysis goes on, since a large
    regression can still be caught with little traffic.
    """
    reg = np.logical_or.reduce([s["regressed"] for s in states])
    ok = np.logical_and.reduce([s["ok"] for s in states])
    T = reg.shape[-1]
    t = np.arange(1, T + 1)
    end = t >= config.window
    no_data = np.logical_or.reduce([s["no_data"] for s in states])
    end_ok = np.logical_and.reduce([s["ok"] | s["ok_at_end"] for s in states])

    code = np.full(reg.shape, CONTINUE, dtype=np.int8)
    at_end = np.where(no_data, ROLLBACK, np.where(end_ok, PROMOTE, INCONCLUSIVE))
    code = np.where(end, at_end, code)
    code[ok] = PROMOTE
    code[reg] = ROLLBACK
    return code


def first_decision(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the first non-continue decision and its interval (1-based; 0 and CONTINUE if none)."""
    decided = code != CONTINUE
    any_decided = decided.any(axis=-1)
    idx = np.argmax(decided, axis=-1)
    which = np.take_along_axis(code, idx[..., None], axis=-1)[..., 0]
    return np.where(any_decided, which, CONTINUE), np.where(any_decided, idx + 1, 0)


def judge_paths(specs: Sequence[MetricSpec], config: JudgeConfig,
                data: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                ) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised judge over many runs: ``data[name] = (stable_fields, canary_fields)`` with arrays of
    shape (runs, intervals). Returns the first decision code and its interval per run."""
    plans = make_plans(specs, config)
    states = [evaluate_metric(p, config, *data[p.spec.name]) for p in plans]
    return first_decision(decide(states, config))
