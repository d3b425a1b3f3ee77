"""Numerical primitives of the judge: normal tail, the one-sided mixture e-process (half-normal plus
a point mass) and its boundary, the sign-test e-process of the tail guard, and the information a decision needs.

Everything here is vectorised over numpy arrays and free of I/O. The normal CDF and its inverse are
scipy's (``scipy.special.log_ndtr`` stays finite far into both tails, where Phi itself underflows).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import log_ndtr, ndtri

__all__ = ["log_ndtr", "log_mixture_e", "mixture_boundary", "log_tail_e", "log_exceed_e",
           "information_needed", "TAIL_GRID", "EXCEED_GRID"]

LOG2 = math.log(2.0)

# Betting fractions of the tail guard's sign test, as the probability p of a "canary worse" interval
# under the alternative; the e-process is the uniform average over this grid (a discrete mixture).
TAIL_GRID = np.array([0.6, 0.7, 0.8, 0.9, 0.97])


def _log_half_normal_e(s: np.ndarray, info: np.ndarray, rho: float) -> np.ndarray:
    v = info + rho
    return LOG2 + 0.5 * np.log(rho / v) + s * s / (2.0 * v) + log_ndtr(s / np.sqrt(v))


def log_mixture_e(s: np.ndarray | float, info: np.ndarray | float, rho: float,
                  point: float = 0.0, point_weight: float = 0.0) -> np.ndarray:
    """log of the one-sided mixture e-process (mixture SPRT) of H0 "drift <= 0".

    With ``s = theta_hat * info`` (the score, a Brownian motion in intrinsic time ``info`` with drift
    theta), the likelihood ratio of drift lam against drift 0 is exp(lam*s - lam**2*info/2). Any
    mixture of it over lam >= 0 is a nonnegative supermartingale with E_0 = 1 under any drift <= 0,
    so P(sup_t E_t >= 1/alpha) <= alpha (Ville's inequality). The mixing distribution here has two
    parts, fixed before the first look:

    * weight ``1 - point_weight``: a half-normal of precision ``rho`` (Robbins 1970; Howard et al.
      2021, section 3), in closed form
      E_hn = 2 sqrt(rho / (info + rho)) exp(s**2 / (2 (info + rho))) Phi(s / sqrt(info + rho));
      it adapts to any effect size and pays for it, at the effect where it stops, about
      log(effect**2 * info)/2 in log-evidence (the price of not knowing the effect);
    * weight ``point_weight``: a point mass at lam = ``point`` (Wald's SPRT for that drift),
      exp(point*s - point**2*info/2); it pays only log(1/point_weight) and is the fastest test of an
      effect of exactly ``point`` (the judge puts it at one tolerance, the smallest regression it
      must catch).

    ``point_weight = 0`` is the plain half-normal mixture.
    """
    s = np.asarray(s, dtype=float)
    info = np.asarray(info, dtype=float)
    hn = _log_half_normal_e(s, info, rho)
    if point_weight <= 0.0:
        return hn
    if not (point > 0.0 and point_weight < 1.0):
        raise ValueError(f"point mass at {point!r} with weight {point_weight!r}: need point > 0, weight < 1")
    pt = point * s - 0.5 * point * point * info
    a = math.log1p(-point_weight) + hn
    b = math.log(point_weight) + pt
    return np.logaddexp(a, b)


def _half_normal_boundary(info: np.ndarray, rho: float, alpha: np.ndarray | float) -> np.ndarray:
    c = np.log(1.0 / np.asarray(alpha, dtype=float)) - LOG2 + 0.5 * np.log1p(info / rho)
    lo = np.sqrt(2.0 * c)
    hi = np.sqrt(2.0 * (c + LOG2))
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        above = mid * mid / 2.0 + log_ndtr(mid) >= c
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi) * np.sqrt(info + rho)


def mixture_boundary(info: np.ndarray | float, rho: float, alpha: float,
                     point: float = 0.0, point_weight: float = 0.0) -> np.ndarray:
    """The score ``s`` at which :func:`log_mixture_e` reaches log(1/alpha), for each ``info``.

    Half-normal alone: log E = c0 + g(u) with u = s / sqrt(info + rho) and g(u) = u**2/2 + log Phi(u)
    increasing, so the boundary is u* sqrt(info + rho) with g(u*) = log(1/alpha) - log 2 +
    log(1 + info/rho)/2; u* lies in [sqrt(2c), sqrt(2(c + log 2))] and is found by bisection.
    With a point mass, log E is increasing in s too and the boundary lies between the smaller of the
    two parts' boundaries at alpha (E is at most the larger part) and the smaller of their boundaries
    at alpha times their weight (E is at least each weighted part); bisection again. In estimate
    units the boundary is s/info.
    """
    info = np.asarray(info, dtype=float)
    if point_weight <= 0.0:
        return _half_normal_boundary(info, rho, alpha)

    def point_boundary(a: float) -> np.ndarray:
        return (math.log(1.0 / a) + 0.5 * point * point * info) / point

    lo = np.minimum(_half_normal_boundary(info, rho, alpha), point_boundary(alpha))
    hi = np.minimum(_half_normal_boundary(info, rho, alpha * (1.0 - point_weight)),
                    point_boundary(alpha * point_weight))
    target = math.log(1.0 / alpha)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = log_mixture_e(mid, info, rho, point, point_weight) >= target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def log_tail_e(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """log e-process of the tail guard: the sign test of H0 "P(canary interval worse) <= 1/2".

    Each interval with a comparison is one bet; with p the betting probability, the wealth after
    W wins and L losses is (2p)**W (2(1-p))**L, a nonnegative supermartingale under H0 for any p > 1/2.
    The average over :data:`TAIL_GRID` is one too (Shafer & Vovk; Waudby-Smith & Ramdas 2023).
    """
    wins = np.asarray(wins, dtype=float)[..., None]
    losses = np.asarray(losses, dtype=float)[..., None]
    logs = wins * np.log(2.0 * TAIL_GRID) + losses * np.log(2.0 * (1.0 - TAIL_GRID))
    top = logs.max(axis=-1)
    return top + np.log(np.mean(np.exp(logs - top[..., None]), axis=-1))


#: alternatives of the exceedance test, as multiples of the null's boundary ratio (1 + tolerance): the
#: e-process is the uniform average of the binomial likelihood ratios at these (a discrete mixture)
EXCEED_GRID = np.array([1.5, 2.0, 3.0, 5.0])


def log_exceed_e(x_c: np.ndarray, x_s: np.ndarray, n_c: np.ndarray, n_s: np.ndarray,
                 tolerance: float) -> np.ndarray:
    """log e-process of the exceedance test of H0 "the canary's share of requests above the threshold
    is at most (1 + tolerance) times the stable's", cumulative over intervals (last axis).

    In an interval with m = x_c + x_s requests above its threshold, given m, the canary's count is
    (for rare exceedances) binomial with probability pi = n_c r / (n_c r + n_s), r the ratio of the
    arms' exceedance rates; under H0 r <= 1 + tolerance, so pi <= pi0. The likelihood ratio of
    pi1 (r = k (1 + tolerance), k > 1) against pi0 is a bet whose expectation is at most 1 under H0,
    given the past (for equal rates the count is hypergeometric, less spread than the binomial, which
    only lowers the bet's expectation: Hoeffding 1963); their running product is an e-process and so
    is the average over :data:`EXCEED_GRID`. The threshold and the interval's traffic split only change
    pi0, so shared time effects and unequal traffic do not bias it.
    """
    x_c = np.asarray(x_c, dtype=float)[..., None]
    x_s = np.asarray(x_s, dtype=float)[..., None]
    n_c = np.asarray(n_c, dtype=float)[..., None]
    n_s = np.asarray(n_s, dtype=float)[..., None]
    r0 = 1.0 + tolerance
    r1 = r0 * EXCEED_GRID
    used = (n_c > 0) & (n_s > 0) & (x_c + x_s > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pi0 = n_c * r0 / (n_c * r0 + n_s)
        pi1 = n_c * r1 / (n_c * r1 + n_s)
        step = x_c * np.log(pi1 / pi0) + x_s * np.log((1.0 - pi1) / (1.0 - pi0))
    logs = np.cumsum(np.where(used, step, 0.0), axis=-2)
    top = logs.max(axis=-1)
    return top + np.log(np.mean(np.exp(logs - top[..., None]), axis=-1))


@functools.lru_cache(maxsize=256)
def information_needed(effect: float, rho: float, alpha: float, power: float,
                       point: float = 0.0, point_weight: float = 0.0) -> float:
    """Smallest information at which a regression of ``effect`` (log scale) is rolled back with
    probability about ``power``: effect*sqrt(I) >= boundary(I)/sqrt(I) + z_power (normal approximation).
    """
    if effect <= 0:
        return math.inf
    if not 0.0 < power < 1.0:
        raise ValueError(f"probability {power!r} must be in (0, 1)")
    z_power = float(ndtri(power))

    def margin(info: np.ndarray) -> np.ndarray:
        return effect * np.sqrt(info) - mixture_boundary(info, rho, alpha, point, point_weight) / np.sqrt(info) - z_power

    grid = np.logspace(-2, 12, 281)
    ok = margin(grid) >= 0
    if not ok.any():
        return math.inf
    i = int(np.argmax(ok))
    if i == 0:
        return float(grid[0])
    lo, hi = float(grid[i - 1]), float(grid[i])
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if margin(np.array(mid)) >= 0:
            hi = mid
        else:
            lo = mid
    return hi
