"""The canary judge: sequential, anytime-valid comparison of a canary with the stable version.

Pure statistics, no I/O (numpy and, for the frame adapter, pandas). The ``deploy-new-model`` runbook
feeds it one analysis interval at a time and acts on its verdict::

    from opsbook.canary import CanaryJudge, DEFAULT_METRICS, JudgeConfig, inputs_from_frame

    judge = CanaryJudge(DEFAULT_METRICS, JudgeConfig(window=60, alpha=0.05))
    for item in inputs_from_frame(frame):            # per-interval aggregates, schema in ``frames``
        verdict = judge.update(item.stable, item.canary)
        if verdict.final:                             # promote, rollback or inconclusive
            break
    verdict.decision, verdict.reason, verdict.metrics["latency"].rollback_at

Verdicts: ``rollback`` as soon as some metric is *certainly worse* (early stop); ``promote`` when
every metric is shown to be less than its tolerance worse, or when the planned window ends with no
regression and enough traffic; ``inconclusive`` when the window ends and the traffic could not
support a decision (with the traffic that would be needed and the estimates so far): never promote
on it; ``continue`` otherwise.

Method
------
Per metric, theta = s * log(canary / stable) of the rate (Bernoulli: errors/requests,
correct/labelled), of the mean (continuous: ``d``) or of the geometric mean (continuous on the log
scale, ``MetricSpec.scale="log"``: latency, whose theta is the difference of the mean ln(latency) of
the two arms), with s = +1 when higher is worse and -1 when lower is worse, so theta > 0 is a
regression. Latency is judged on the log scale because it is skewed and heavy-tailed and its changes
are multiplicative: ln(latency) has a smaller and steadier variance than latency (a handful of slow
requests dominates the raw mean's), so the same traffic decides sooner (for a log-normal with sigma
0.5, 14% more information per request); a rise of the spread or tail at an unchanged median is the tail
guard's to catch. The moments of ln(latency) come from a recorded file's ``latency_logmean`` /
``latency_logstd``, from Prometheus histogram buckets (``frames.log_moments_from_buckets``), or, when
neither is there, from the mean and standard deviation assuming a log-normal interval.

**Stratified by interval.** Each analysis interval is a stratum: the arms are compared within it and
the evidence is combined across intervals, so anything that moves both arms over time (diurnal load,
a shared latency drift, a shared shock) cancels whatever the traffic split (a canary whose traffic
ramps up, intervals where the canary had no traffic: those contribute nothing). Rates: the
Mantel-Haenszel rate ratio with the Greenland-Robins variance of its log (valid for a few large
intervals and for many sparse ones). Means: the within-interval differences (log scale) or the
Mantel-Haenszel-type ratio of weighted means (linear scale), weights n_c n_s / (n_c + n_s), variances
from each interval's own spread. After every interval the cumulative estimate theta_hat and its
information I = 1/Var(theta_hat) are formed; S = theta_hat * I behaves like a Brownian motion with drift theta in
intrinsic time I. Two one-sided **mixture e-processes** (mixture SPRTs) run on it:

* rollback: H0 theta <= 0 ("canary no worse"), E = integral of exp(l*S - l**2*I/2) over a mixing
  distribution on l >= 0 (closed form in ``_stats.log_mixture_e``). Rollback when E >= 1/alpha_m.
* promote: H0 theta >= log(1 + tolerance), the same e-process on (log(1+tol) - theta_hat) * I.

By Ville's inequality P(sup_t E_t >= 1/a) <= a under H0, so each test may be looked at after every
interval, and stopped at any time, without inflating its error: the false-rollback rate is bounded over
all looks. alpha is split across metrics by weight (Bonferroni: P(any false rollback) <= alpha), the
same for ``alpha_promote``. The mixing distribution is fixed before the first look (so it cannot break
the guarantee, only move where the test is fastest): ``point_mass`` (default 0.7) exactly at one
tolerance, l = log(1 + tolerance), the smallest regression the judge must catch (for the promote test:
an unchanged canary), where it is Wald's SPRT and pays only log(1/0.7) for not knowing the effect; the
rest a half-normal of scale ``mixture_scale`` (default 3) x log(1 + tolerance), which adapts to larger
regressions and stops them within an interval or two. Against the plain half-normal mixture this rolls a
5% regression back about 17% sooner at the same false-alarm bound. The boundaries at each interval (the estimate at
which the judge would roll back / pass) are reported for plots; they are the confidence-sequence bounds
of the two tests.

**Tail guard** (variance, not only the mean), for continuous higher-is-worse metrics with a quantile
(latency p90): after every interval with at least ``tail_min_samples`` requests per arm, a bet on
"canary p90 > stable p90 x (1 + tolerance)". Under "no tail regression beyond tolerance" that event
has probability <= 1/2 in each interval, independently of the past, so the sign-test wealth averaged
over a grid of betting odds is an e-process (``_stats.log_tail_e``); it gets ``tail_share`` of the
metric's alpha. It catches a spread-only increase (sigma 0.5 -> 0.75 at the same median), which the
log-scale test of latency (a test of the median) does not see.

**Exceedance test** (the p99), for metrics with ``tail=True`` when per-interval histograms are there
(Prometheus ``_bucket`` series, or per-request values binned by the judge): in each interval, the
requests of both arms above the stable's ``exceed_quantile`` (default p99) bucket boundary, as
measured on the stable's *earlier* intervals (a threshold fixed before the interval, so that any
threshold is a fair bet), are counted. Given their total m, the canary's count is about binomial with
probability n_c r / (n_c r + n_s), r the ratio of the arms' exceedance rates; under "r <= 1 +
``exceed_tolerance``" a product of binomial likelihood ratios, averaged over a grid of alternatives,
is an e-process (``_stats.log_exceed_e``). It gets ``exceed_share`` of the metric's tail alpha, the
quantile guard the rest: alpha = alpha_mean + alpha_quantile_guard + alpha_exceedance per metric
(0.8/0.1/0.1 by default). It catches a tail-only regression (p99 up by a third or a half, the
geometric mean held), which users' SLOs are written on and the mean test promotes.

**Warm-up.** The first ``warmup`` intervals (default one) are not judged: a new pod's first minute
(cold caches, lazy loading) is not the version's steady state. They count towards the window.

**Guards.** A metric's tests start only after ``min_samples`` per arm (in intervals where both arms
were served). A metric with no data on an arm
is ``no_data``: the judge never promotes while it lasts and rolls back at the window's end (a metric
that cannot be checked fails). A metric with a tail guard is not passed while the guard's evidence leans
towards a tail regression (its e-value above 1): that only delays a promote. Traffic: from the
information rate so far the judge projects the information at the window's end; the information needed
is where a tolerance-sized regression would be rolled back with probability ``power``. At the window's
end a metric passes only if it reached that information without regression (and its estimate is within
tolerance); otherwise the verdict is ``inconclusive`` with the requests per interval that would be
needed. "Inconclusive" is only ever decided at the window's end: a large regression can still be
caught with little traffic (at 5 requests per interval, every metric 20% worse is rolled back around
interval 22). Before the end, once ``min_intervals`` have been judged, a metric whose projected
information falls short says so in its reason (the projection), and the analysis goes on.

Assumptions
-----------
Intervals are independent given the past (requests in different intervals do not share state that
matters), within an interval the two arms receive comparable traffic mixes (what changes over time
may change both arms: it cancels), and the normal approximation of theta_hat
holds once ``min_samples`` are in (the guarantee is then the asymptotic, time-uniform one of
Waudby-Smith et al.; it is exact for Gaussian data with known variance). Rates and means must be
positive (log-scale metrics: their values). For the tail guard, the sample quantiles of equal distributions are exchangeable between
arms (close to true when the arms' per-interval counts are comparable).

References
----------
* H. Robbins (1970). Statistical methods related to the law of the iterated logarithm. Ann. Math. Stat.
* S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021). Time-uniform, nonparametric, nonasymptotic
  confidence sequences. Ann. Statist. 49(2). (normal-mixture boundaries, section 3)
* R. Johari, P. Koomen, L. Pekelis, D. Walsh (2022). Always valid inference: continuous monitoring of
  A/B tests. Operations Research 70(3). (the mixture SPRT for two-sample tests)
* I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas (2024). Time-uniform central limit
  theory and asymptotic confidence sequences. Ann. Statist. (plug-in variance)
* G. Shafer, V. Vovk (2019). Game-theoretic foundations for probability and finance; I. Waudby-Smith,
  A. Ramdas (2023). Estimating means of bounded random variables by betting. JRSS B. (betting e-processes)
* A. Wald (1945). Sequential tests of statistical hypotheses. (the oracle SPRT of the benchmark)
* N. Mantel, W. Haenszel (1959). Statistical aspects of the analysis of data from retrospective studies
  of disease. J. Natl. Cancer Inst. 22. (the stratified rate ratio)
* S. Greenland, J. M. Robins (1985). Estimation of a common effect parameter from sparse follow-up
  data. Biometrics 41. (its variance, for large and sparse strata)
* W. Hoeffding (1963). Probability inequalities for sums of bounded random variables. JASA 58.
  (sampling without replacement is less spread than with: the exceedance test's binomial bet)
"""

from __future__ import annotations

from opsbook.canary.frames import IntervalInput, inputs_from_frame, judge_frame
from opsbook.canary.judge import CanaryJudge, ExceedResult, MetricResult, TailResult, Verdict, history_frame
from opsbook.canary.spec import (
    ACCURACY,
    DEFAULT_METRICS,
    DISSONANCE,
    ERROR_RATE,
    LATENCY,
    Counts,
    JudgeConfig,
    MetricSpec,
    Summary,
)

__all__ = [
    "ACCURACY", "DEFAULT_METRICS", "DISSONANCE", "ERROR_RATE", "LATENCY",
    "CanaryJudge", "Counts", "ExceedResult", "IntervalInput", "JudgeConfig", "MetricResult", "MetricSpec", "Summary",
    "TailResult", "Verdict", "history_frame", "inputs_from_frame", "judge_frame",
]
