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

from opsbook.canary._stats import information_needed, log_mixture_e, log_tail_e, mixture_boundary
from opsbook.canary.spec import JudgeConfig, MetricSpec

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
    alpha_tail: float       # of the tail guard (0 if none)
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
        a_tail = a_metric * config.tail_share if s.tail else 0.0
        a_roll = a_metric - a_tail
        log_tol = math.log1p(s.tolerance)
        rho = 1.0 / (config.mixture_scale * log_tol) ** 2
        plans.append(MetricPlan(
            spec=s, log_tol=log_tol, rho=rho, point_weight=config.point_mass, alpha_rollback=a_roll,
            alpha_tail=a_tail, alpha_promote=config.alpha_promote * share,
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
    (the spec's quantile, in x's unit): what :func:`evaluate_metric` reads, vectorised."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    v = np.log(x) if spec.scale == "log" else x
    std = v.std(axis=-1, ddof=1) if n > 1 else np.zeros(x.shape[:-1])
    return {"n": np.full(x.shape[:-1], float(n)), "mean": v.mean(axis=-1), "std": std,
            "tail": np.quantile(x, spec.tail_quantile, axis=-1)}


def estimates_bernoulli(spec: MetricSpec, stable: Mapping[str, np.ndarray],
                        canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cumulative rates, theta = sign*log(p_c/p_s) and its information 1/Var (delta method).

    Rates are smoothed, (K + 1/2)/(N + 1), so that zero counts give a finite log and a variance that
    keeps the first intervals of a rare event uninformative rather than alarming.
    """
    out: dict[str, np.ndarray] = {}
    for arm, obs in (("s", stable), ("c", canary)):
        k = np.nan_to_num(np.asarray(obs["successes"], dtype=float))
        n = np.nan_to_num(np.asarray(obs["trials"], dtype=float))
        K, N = np.cumsum(k, axis=-1), np.cumsum(n, axis=-1)
        out["N" + arm] = N
        with np.errstate(invalid="ignore", divide="ignore"):
            out["est" + arm] = np.where(N > 0, K / N, np.nan)
        p = (K + 0.5) / (N + 1.0)
        out["lp" + arm] = np.log(p)
        out["v" + arm] = (1.0 - p) / ((N + 1.0) * p)
    theta = spec.sign * (out["lpc"] - out["lps"])
    v = np.maximum(out["vs"] + out["vc"], _VAR_FLOOR)
    has = (out["Ns"] > 0) & (out["Nc"] > 0)
    return {"theta": np.where(has, theta, np.nan), "info": np.where(has, 1.0 / v, 0.0),
            "Ns": out["Ns"], "Nc": out["Nc"], "est_s": out["ests"], "est_c": out["estc"]}


def estimates_continuous(spec: MetricSpec, stable: Mapping[str, np.ndarray],
                         canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cumulative means (pooled over intervals) and theta with its information.

    ``scale="linear"``: the fields are means and stds of x; theta = sign*log(m_c/m_s) (delta method).
    ``scale="log"``: the fields are means and stds of ln x; theta = sign*(m_c - m_s), the log ratio
    of the geometric means, with variance Var_c/N_c + Var_s/N_s; the estimates reported are the
    geometric means exp(m).
    """
    log_scale = spec.scale == "log"
    cum: dict[str, np.ndarray] = {}
    for arm, obs in (("s", stable), ("c", canary)):
        n = np.asarray(obs["n"], dtype=float)
        mean = np.asarray(obs["mean"], dtype=float)
        std = np.asarray(obs["std"], dtype=float)
        valid = (n > 0) & np.isfinite(mean)
        n = np.where(valid, n, 0.0)
        mean = np.where(valid, mean, 0.0)
        m2 = np.where(valid & np.isfinite(std), (np.maximum(n, 1.0) - 1.0) * std * std, 0.0)
        # shift by a per-run reference so that the pooled second moment loses no precision
        with np.errstate(invalid="ignore"):
            ref = np.nanmedian(np.where(valid, mean, np.nan), axis=-1, keepdims=True)
        ref = np.nan_to_num(ref)
        d = mean - ref
        N = np.cumsum(n, axis=-1)
        S = np.cumsum(n * d, axis=-1)
        Q = np.cumsum(m2 + n * d * d, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            md = np.where(N > 0, S / N, np.nan)
            var = np.where(N > 1, np.maximum(Q - N * md * md, 0.0) / (N - 1.0), np.nan)
        cum["N" + arm] = N
        cum["m" + arm] = md + ref
        cum["var" + arm] = var
    ms, mc = cum["ms"], cum["mc"]
    usable = (cum["Ns"] > 1) & (cum["Nc"] > 1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if log_scale:
            usable = usable & np.isfinite(ms) & np.isfinite(mc)
            theta = spec.sign * (np.where(usable, mc, 0.0) - np.where(usable, ms, 0.0))
            v = cum["varc"] / cum["Nc"] + cum["vars"] / cum["Ns"]
            est_s, est_c = np.exp(ms), np.exp(mc)
        else:
            usable = usable & (ms > 0) & (mc > 0)
            theta = spec.sign * (np.log(np.where(usable, mc, 1.0)) - np.log(np.where(usable, ms, 1.0)))
            v = cum["varc"] / (cum["Nc"] * mc * mc) + cum["vars"] / (cum["Ns"] * ms * ms)
            est_s, est_c = ms, mc
    v = np.where(usable, np.maximum(np.nan_to_num(v, nan=_VAR_FLOOR), _VAR_FLOOR), np.inf)
    return {"theta": np.where(usable, theta, np.nan), "info": np.where(usable, 1.0 / v, 0.0),
            "Ns": cum["Ns"], "Nc": cum["Nc"], "est_s": est_s, "est_c": est_c}


def evaluate_metric(plan: MetricPlan, config: JudgeConfig, stable: Mapping[str, np.ndarray],
                    canary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All per-interval quantities of one metric over whole paths.

    ``stable``/``canary`` map field names to arrays (runs, intervals) of per-interval values:
    Bernoulli ``successes``, ``trials``; continuous ``n``, ``mean``, ``std`` (of ln x for a
    ``scale="log"`` metric) and optionally ``tail`` (always in the metric's own unit).
    Missing values are NaN (or a count of 0).
    """
    spec = plan.spec
    if spec.kind == "bernoulli":
        r = estimates_bernoulli(spec, stable, canary)
    else:
        r = estimates_continuous(spec, stable, canary)
    theta, info = r["theta"], r["info"]
    T = theta.shape[-1]
    active = (r["Ns"] >= config.min_samples) & (r["Nc"] >= config.min_samples) & (info > 0)
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

    regressed = np.maximum.accumulate(mean_regressed | tail_regressed, axis=-1)
    # The promote test is on the mean only; while the tail guard's evidence leans towards a tail
    # regression (e-value > 1) the metric is held from passing. That can only delay or prevent a
    # promote, so neither error bound changes; without it a tail-only regression with an unchanged
    # mean could be promoted before the tail guard has enough intervals to be certain.
    tail_leans = log_e_tail > 0.0 if log_e_tail is not None else np.zeros_like(mean_regressed)
    ok = np.maximum.accumulate(log_e_prom >= math.log(1.0 / plan.alpha_promote), axis=-1) & ~tail_leans
    t = np.arange(1, T + 1, dtype=float)
    projected = info * config.window / t
    no_data = (r["Ns"] <= 0) | (r["Nc"] <= 0)
    hopeless = ~ok & ~no_data & (projected < plan.info_needed)  # no data is a failure, not low traffic
    ok_at_end = ~no_data & (info >= plan.info_needed) & (th < plan.log_tol) & ~tail_leans
    return {**r, "active": active, "log_e_roll": log_e_roll, "log_e_prom": log_e_prom,
            "mean_regressed": mean_regressed, "tail_regressed": tail_regressed, "regressed": regressed,
            "ok": ok, "tail_leans": tail_leans, "no_data": no_data, "hopeless": hopeless, "ok_at_end": ok_at_end,
            "projected": projected, "tail_wins": wins, "tail_losses": losses, "log_e_tail": log_e_tail}


def decide(states: Sequence[Mapping[str, np.ndarray]], config: JudgeConfig) -> np.ndarray:
    """The decision code at every interval (runs, intervals), from all metrics' states.

    In order: any metric regressed -> rollback; every metric shown within tolerance -> promote; at
    the window's last interval: a metric without data -> rollback (it fails, never passes), else every
    metric within tolerance or reaching enough traffic without regression -> promote, else
    inconclusive; before it, once ``min_intervals`` have passed, if no undecided metric can reach
    enough traffic within the window -> inconclusive; else continue.
    """
    reg = np.logical_or.reduce([s["regressed"] for s in states])
    ok = np.logical_and.reduce([s["ok"] for s in states])
    T = reg.shape[-1]
    t = np.arange(1, T + 1)
    end = t >= config.window
    no_data = np.logical_or.reduce([s["no_data"] for s in states])
    end_ok = np.logical_and.reduce([s["ok"] | s["ok_at_end"] for s in states])
    settled = np.logical_and.reduce([s["ok"] | s["hopeless"] for s in states])
    any_hopeless = np.logical_or.reduce([s["hopeless"] for s in states])
    early_inconclusive = (t >= config.min_intervals) & settled & any_hopeless

    code = np.full(reg.shape, CONTINUE, dtype=np.int8)
    code[early_inconclusive] = INCONCLUSIVE
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
