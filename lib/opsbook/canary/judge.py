"""The incremental judge: feed one interval at a time, get a :class:`Verdict` with the evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from opsbook.canary import _engine
from opsbook.canary.spec import DEFAULT_METRICS, Counts, JudgeConfig, MetricSpec, Observation, Summary

Decision = Literal["promote", "rollback", "continue", "inconclusive"]
Status = Literal["regressed", "ok", "pending", "insufficient", "no_data"]


@dataclass(frozen=True)
class TailResult:
    """The tail guard of one metric: intervals where the canary's quantile exceeded the stable's
    times (1 + tolerance), and the sign test's e-value against its threshold."""

    quantile: float
    worse_intervals: int
    compared_intervals: int
    e_value: float
    threshold: float
    regressed: bool


@dataclass(frozen=True)
class ExceedResult:
    """The exceedance test of one metric: requests above the stable's ``quantile`` bucket boundary (set
    from the stable's earlier intervals) in each arm so far, and the binomial e-value against its
    threshold. ``tolerance``: the canary may have up to (1 + tolerance) times the stable's share."""

    quantile: float
    tolerance: float
    stable_above: int
    stable_requests: int
    canary_above: int
    canary_requests: int
    e_value: float
    threshold: float
    regressed: bool

    @property
    def stable_share(self) -> float | None:
        return self.stable_above / self.stable_requests if self.stable_requests else None

    @property
    def canary_share(self) -> float | None:
        return self.canary_above / self.canary_requests if self.canary_requests else None


@dataclass(frozen=True)
class MetricResult:
    """One metric at one interval. Relative changes are canary/stable - 1 (natural orientation:
    negative means lower). ``ci_low``/``ci_high`` are the anytime-valid bounds of the two tests
    (rollback side at level alpha_rollback, promote side at alpha_promote); ``rollback_at`` and
    ``promote_at`` are the relative changes at which the judge would roll back / pass this metric at
    this interval: the decision boundaries to draw."""

    name: str
    status: Status
    reason: str
    higher_is_worse: bool
    tolerance: float
    stable: float | None
    canary: float | None
    relative_change: float | None
    ci_low: float | None
    ci_high: float | None
    rollback_at: float | None
    promote_at: float | None
    e_rollback: float
    e_promote: float
    threshold_rollback: float
    threshold_promote: float
    information: float
    information_needed: float
    projected_information: float
    samples_stable: float
    samples_canary: float
    needed_per_interval: float | None
    tail: TailResult | None = None
    exceed: ExceedResult | None = None

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"metric": d.pop("name"), **d}
        tail = d.pop("tail")
        if tail:
            d.update({f"tail_{k}": v for k, v in tail.items()})
        exceed = d.pop("exceed")
        if exceed:
            d.update({f"exceed_{k}": v for k, v in exceed.items()})
        return d

    @property
    def tail_leans(self) -> bool:
        """Some tail test's evidence leans towards a tail regression (e-value > 1, not certain)."""
        return any(x is not None and x.e_value > 1.0 for x in (self.tail, self.exceed))


@dataclass(frozen=True)
class Verdict:
    """The judge's answer after an interval: the decision, why, and every metric's evidence."""

    decision: Decision
    interval: int
    window: int
    reason: str
    metrics: dict[str, MetricResult]

    @property
    def final(self) -> bool:
        return self.decision != "continue"

    def rows(self) -> list[dict[str, Any]]:
        return [{"interval": self.interval, "decision": self.decision, **m.row()} for m in self.metrics.values()]


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.1f}%"


def _bound(x: float | None) -> str:
    """A confidence bound as a relative change; "unbounded" where the data do not bound it yet (a
    bound at or beyond -100% or +1000% says nothing an operator can use)."""
    if x is None or not math.isfinite(x) or x <= -0.999 or x >= 10.0:
        return "unbounded"
    return _pct(x)


def _exp(log_value: Any) -> float:
    """exp of a log e-value as a float: inf (not an OverflowError) beyond the float range."""
    x = float(log_value)
    return math.exp(x) if x < 709.0 else math.inf


def _evalue(log_value: Any) -> str:
    """An e-value for people: digits up to a million, then a power of ten (a huge change gives a log
    e-value in the thousands: its exp is not a number anyone reads, or even a float)."""
    x = float(log_value)
    if x < math.log(1e6):
        return _num(math.exp(x))
    return f"10^{x / math.log(10):.0f}"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


class CanaryJudge:
    """Sequential canary judge. ``update(stable, canary)`` after every analysis interval.

    ``stable``/``canary`` map metric name to that interval's observation: :class:`Counts` (or a
    ``(successes, trials)`` pair) for Bernoulli metrics, :class:`Summary` (or an array of per-request
    values) for continuous ones; a missing name or ``None`` means no data this interval. Once the
    verdict is final (anything but ``continue``) the judge refuses further intervals.
    """

    def __init__(self, metrics: Sequence[MetricSpec] = DEFAULT_METRICS, config: JudgeConfig | None = None):
        self.specs = tuple(metrics)
        self.config = config or JudgeConfig()
        self.plans = _engine.make_plans(self.specs, self.config)
        self._rows: dict[str, dict[str, dict[str, list[float]]]] = {
            s.name: {"s": {}, "c": {}} for s in self.specs}
        self._hists: dict[str, dict[str, dict[int, Any]]] = {s.name: {"s": {}, "c": {}} for s in self.specs}
        self._hist_width: dict[str, int] = {}
        self.history: list[Verdict] = []

    @property
    def verdict(self) -> Verdict | None:
        return self.history[-1] if self.history else None

    def update(self, stable: Mapping[str, Any], canary: Mapping[str, Any]) -> Verdict:
        if self.verdict is not None and self.verdict.final:
            raise RuntimeError(f"the judge already decided {self.verdict.decision!r} at interval "
                               f"{self.verdict.interval}; start a new judge for a new canary")
        if len(self.history) >= self.config.window:
            raise RuntimeError(f"the planned window of {self.config.window} intervals is over")
        unknown = (set(stable) | set(canary)) - {s.name for s in self.specs}
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; the judge knows {[s.name for s in self.specs]}")
        t = len(self.history)
        staged = []
        for spec in self.specs:
            for arm, obs in (("s", stable.get(spec.name)), ("c", canary.get(spec.name))):
                fields = _fields(spec, obs)
                hist = fields.pop("hist", None)
                if hist is not None:
                    width = self._hist_width.setdefault(spec.name, len(hist))
                    if len(hist) != width:
                        raise ValueError(f"metric {spec.name!r}: a histogram of {len(hist)} buckets after earlier ones "
                                         f"of {width}: every interval must use the same bucket bounds")
                staged.append((spec.name, arm, fields, hist))
        for name, arm, fields, hist in staged:
            store = self._rows[name][arm]
            for k, v in fields.items():
                store.setdefault(k, []).append(v)
            if hist is not None:
                self._hists[name][arm][t] = hist
        verdict = self._evaluate()
        self.history.append(verdict)
        return verdict

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate(self) -> Verdict:
        cfg = self.config
        t = len(next(iter(next(iter(self._rows.values()))["s"].values())))
        states, results = [], {}
        for plan in self.plans:
            rows = self._rows[plan.spec.name]
            st = {k: np.array([v]) for k, v in rows["s"].items()}
            ca = {k: np.array([v]) for k, v in rows["c"].items()}
            width = self._hist_width.get(plan.spec.name)
            if width is not None:  # histograms seen: intervals without one have no exceedance evidence
                for arm, fields in (("s", st), ("c", ca)):
                    h = np.zeros((1, t, width))
                    for i, v in self._hists[plan.spec.name][arm].items():
                        h[0, i] = v
                    fields["hist"] = h
            state = _engine.evaluate_metric(plan, cfg, st, ca)
            states.append(state)
            results[plan.spec.name] = self._metric_result(plan, state, t, st, ca)
        code = int(_engine.decide(states, cfg)[0, -1])
        decision: Decision = _engine.DECISIONS[code]  # type: ignore[assignment]
        results = {name: self._final_status(r, decision, t) for name, r in results.items()}
        return Verdict(decision, t, cfg.window, self._reason(decision, results, t), results)

    def _metric_result(self, plan: _engine.MetricPlan, s: dict[str, np.ndarray], t: int,
                       st: dict[str, np.ndarray], ca: dict[str, np.ndarray]) -> MetricResult:
        spec, cfg = plan.spec, self.config
        last = {k: (v[0, -1] if isinstance(v, np.ndarray) else None) for k, v in s.items()}
        info = float(last["info"])
        theta = float(last["theta"])
        est_s = float(last["est_s"]) if np.isfinite(last["est_s"]) else None
        est_c = float(last["est_c"]) if np.isfinite(last["est_c"]) else None
        nat = _natural(spec, theta)
        ci_low = ci_high = rollback_at = promote_at = None
        if info > 0:
            b_r = float(plan.boundary(info, plan.alpha_rollback)) / info
            b_p = float(plan.boundary(info, plan.alpha_promote)) / info
            lo_w, hi_w = theta - b_r, theta + b_p         # bounds on theta (worse-positive)
            a, b = _natural(spec, lo_w), _natural(spec, hi_w)
            ci_low, ci_high = min(a, b), max(a, b)
            rollback_at = _natural(spec, b_r)
            promote_at = _natural(spec, plan.log_tol - b_p)
        n_s, n_c = float(last["Ns"]), float(last["Nc"])
        projected = float(last["projected"])
        needed = None
        if projected < plan.info_needed and (t - cfg.warmup >= cfg.min_intervals or t >= cfg.window):
            rate = (n_s + n_c) / (2.0 * max(t - cfg.warmup, 1))  # per judged interval
            needed = math.inf if projected <= 0 else rate * plan.info_needed / projected
        exceed = None
        if s.get("log_e_exceed") is not None:
            exceed = ExceedResult(spec.exceed_quantile, spec.exceed_tolerance, int(last["exceed_s"]),
                                  int(last["exceed_ns"]), int(last["exceed_c"]), int(last["exceed_nc"]),
                                  _exp(last["log_e_exceed"]), 1.0 / plan.alpha_exceed,
                                  bool(last["exceed_regressed"]))
        tail = None
        if s.get("log_e_tail") is not None:
            wins, losses = int(last["tail_wins"]), int(last["tail_losses"])
            tail = TailResult(spec.tail_quantile, wins, wins + losses, _exp(last["log_e_tail"]),
                              1.0 / plan.alpha_tail, bool(last["tail_regressed"]))

        status: Status
        if bool(last["regressed"]):
            status = "regressed"
            if exceed is not None and exceed.regressed and not bool(last["mean_regressed"]):
                q = f"p{_qname(spec.exceed_quantile)}"
                reason = (f"tail regression: {_share(exceed.canary_share)} of the canary's requests above the stable's "
                          f"{q} bucket boundary against {_share(exceed.stable_share)} of the stable's "
                          f"(tolerated: x{1 + spec.exceed_tolerance:g}), e-value {_evalue(math.log(exceed.e_value) if exceed.e_value > 0 else 0.0)} >= "
                          f"{_num(exceed.threshold)}")
            elif bool(last["mean_regressed"]) or not (tail and tail.regressed):
                what = "geometric mean: " if spec.scale == "log" else ""
                reason = (f"regression certain: {what}canary {_num(est_c or math.nan)} vs stable {_num(est_s or math.nan)} "
                          f"({_pct(nat)}), e-value {_evalue(last['log_e_roll'])} >= {_num(1 / plan.alpha_rollback)}")
            else:
                assert tail is not None
                reason = (f"tail regression: canary p{round(spec.tail_quantile * 100)} above stable's "
                          f"x{1 + spec.tolerance:g} in {tail.worse_intervals} of {tail.compared_intervals} intervals, "
                          f"e-value {_num(tail.e_value)} >= {_num(tail.threshold)}")
        elif t <= cfg.warmup:
            status = "pending"
            reason = (f"warm-up: interval {t} of the first {cfg.warmup} is not judged (a new version's first "
                      "minutes are not its steady state)")
        elif bool(last["no_data"]):
            status = "no_data"
            side = " and ".join(a for a, n in (("stable", n_s), ("canary", n_c)) if n <= 0)
            reason = f"no data for {side}: a metric that cannot be checked fails, it never passes"
        elif bool(last["ok"]):
            status = "ok"
            reason = (f"within tolerance: {_pct(nat)}, bound {_pct(ci_high if spec.higher_is_worse else ci_low)} "
                      f"better than {_pct(spec.sign * spec.tolerance)}, e-value {_evalue(last['log_e_prom'])} "
                      f">= {_num(1 / plan.alpha_promote)}")
        else:
            status = "pending"
            if not bool(last["active"]):
                reason = f"gathering data: {_num(min(n_s, n_c))} of {cfg.min_samples} samples per arm before testing"
            else:
                reason = f"{_pct(nat)} (bounds {_bound(ci_low)} .. {_bound(ci_high)}): not decided yet"
            if bool(last["tail_leans"]):
                leaning = []
                if tail and tail.e_value > 1.0:
                    leaning.append(f"p{round(spec.tail_quantile * 100)} worse in {tail.worse_intervals} of "
                                   f"{tail.compared_intervals} intervals, e-value {_num(tail.e_value)}")
                if exceed and exceed.e_value > 1.0:
                    leaning.append(f"{_share(exceed.canary_share)} of the canary's requests above the stable's "
                                   f"p{_qname(spec.exceed_quantile)} against {_share(exceed.stable_share)}, "
                                   f"e-value {_evalue(math.log(exceed.e_value) if exceed.e_value > 0 else 0.0)}")
                reason += "; held from passing while a tail test leans towards a tail regression (" + \
                    "; ".join(leaning) + ")"
            if needed is not None:
                reason += (f"; too little traffic: projected information {_num(projected)} < {_num(plan.info_needed)} "
                           f"needed to judge a {spec.tolerance:.0%} change, needs about {_num(needed)} "
                           f"per interval per arm (have {_num((n_s + n_c) / (2 * max(t - cfg.warmup, 1)))})")
        return MetricResult(
            name=spec.name, status=status, reason=reason, higher_is_worse=spec.higher_is_worse,
            tolerance=spec.tolerance, stable=est_s, canary=est_c,
            relative_change=nat if math.isfinite(nat) else None, ci_low=ci_low, ci_high=ci_high,
            rollback_at=rollback_at, promote_at=promote_at,
            e_rollback=_exp(last["log_e_roll"]), e_promote=_exp(last["log_e_prom"]),
            threshold_rollback=1.0 / plan.alpha_rollback, threshold_promote=1.0 / plan.alpha_promote,
            information=info, information_needed=plan.info_needed, projected_information=projected,
            samples_stable=n_s, samples_canary=n_c, needed_per_interval=needed, tail=tail, exceed=exceed,
        )

    def _final_status(self, r: MetricResult, decision: Decision, t: int) -> MetricResult:
        """At the window's end a pending metric becomes ok (enough traffic, no regression) or
        insufficient; on an early inconclusive the hopeless ones become insufficient."""
        if r.status != "pending" or not (t >= self.config.window or decision == "inconclusive"):
            return r
        plan = next(p for p in self.plans if p.spec.name == r.name)
        theta = math.log1p(r.relative_change) * plan.spec.sign if r.relative_change is not None else math.nan
        if r.tail_leans:
            e = max(x.e_value for x in (r.tail, r.exceed) if x is not None)
            return _replace(r, status="insufficient", reason=(
                f"{_pct(r.relative_change)} so far, but a tail test leans towards a tail regression "
                f"(e-value {_num(e)} > 1, not certain): cannot pass"))
        if r.information >= plan.info_needed and theta < plan.log_tol:
            return _replace(r, status="ok", reason=(
                f"window ended without regression and with enough traffic ({_pct(r.relative_change)}, "
                f"information {_num(r.information)} >= {_num(plan.info_needed)})"))
        if r.needed_per_interval is not None or r.information < plan.info_needed:
            i = r.reason.find("too little traffic")
            traffic = r.reason[i:] if i >= 0 else "too little traffic to judge this metric"
            return _replace(r, status="insufficient", reason=f"{_pct(r.relative_change)} so far; {traffic}")
        return _replace(r, status="insufficient", reason=(
            f"{_pct(r.relative_change)} is beyond the {r.tolerance:.0%} tolerance but not certain: cannot pass"))

    def _reason(self, decision: Decision, results: dict[str, MetricResult], t: int) -> str:
        def names(*statuses: str) -> str:
            return ", ".join(n for n, r in results.items() if r.status in statuses)

        if decision == "rollback":
            regressed = names("regressed")
            if regressed:
                return f"rollback at interval {t}: {regressed} regressed"
            return f"rollback at the window's end: no data for {names('no_data')}"
        if decision == "promote":
            return f"promote at interval {t}: no metric regressed beyond its tolerance"
        if decision == "inconclusive":
            so_far = ", ".join(f"{n} {_pct(r.relative_change)}" for n, r in results.items()
                               if r.relative_change is not None)
            return (f"inconclusive at interval {t}: too little traffic to judge {names('insufficient', 'pending')}; "
                    f"never promote on this evidence (estimates so far: {so_far or 'none'})")
        pending = names("pending", "no_data")
        return f"continue: interval {t} of {self.config.window}; undecided: {pending or 'none'}"


def _qname(q: float) -> str:
    """0.99 -> "99", 0.999 -> "99.9"."""
    return f"{q * 100:.10g}"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2g}%"


def _replace(r: MetricResult, **changes: Any) -> MetricResult:
    from dataclasses import replace

    return replace(r, **changes)


def _natural(spec: MetricSpec, theta: float) -> float:
    """theta (worse-positive log ratio) -> natural relative change canary/stable - 1."""
    return math.expm1(spec.sign * theta) if math.isfinite(theta) else math.nan


def _fields(spec: MetricSpec, obs: Observation | Any) -> dict[str, Any]:
    """One arm's observation for one interval as the engine's per-interval fields."""
    nan = math.nan
    if spec.kind == "bernoulli":
        if obs is None:
            return {"successes": nan, "trials": 0.0}
        if isinstance(obs, Summary):
            raise ValueError(f"metric {spec.name!r} is Bernoulli: pass Counts or (successes, trials), not a Summary")
        if not isinstance(obs, Counts):
            try:
                k, n = obs
            except (TypeError, ValueError):
                raise ValueError(f"metric {spec.name!r}: expected Counts or (successes, trials), got {obs!r}") from None
            obs = Counts(float(k), float(n))
        return {"successes": float(obs.successes), "trials": float(obs.trials)}
    if obs is None:
        return {"n": 0.0, "mean": nan, "std": nan, "tail": nan}
    if not isinstance(obs, Summary):
        if isinstance(obs, Counts):
            raise ValueError(f"metric {spec.name!r} is continuous: pass a Summary or samples, not Counts")
        if spec.scale == "log":
            x = np.asarray(obs, dtype=float)
            bad = np.isfinite(x) & (x <= 0)
            if bad.any():
                raise ValueError(f"metric {spec.name!r} is judged on the log scale (geometric mean): its values must "
                                 f"be positive, got {int(bad.sum())} value(s) <= 0 (e.g. {float(x[bad][0])!r})")
        obs = Summary.from_samples(obs, spec.tail_quantile, bounds=spec.bucket_bounds() if spec.tail else None)
    tail = nan if obs.tail is None else float(obs.tail)
    hist: dict[str, Any] = {} if obs.hist is None or not spec.tail else {"hist": np.asarray(obs.hist, dtype=float)}
    if spec.scale == "log" and obs.n > 0:
        log_mean, log_std = obs.log_moments()
        if not (math.isfinite(log_mean) and math.isfinite(log_std)):
            raise ValueError(f"metric {spec.name!r} is judged on the log scale (geometric mean): its values must be "
                             f"positive, got a summary with mean {obs.mean!r} and no log_mean/log_std")
        return {"n": float(obs.n), "mean": log_mean, "std": log_std, "tail": tail, **hist}
    return {"n": float(obs.n), "mean": float(obs.mean), "std": float(obs.std), "tail": tail, **hist}


def history_frame(verdicts: Sequence[Verdict]):  # -> pandas.DataFrame
    """One row per interval and metric: estimates, bounds, boundaries, e-values (for plots)."""
    import pandas as pd

    return pd.DataFrame([row for v in verdicts for row in v.rows()])
