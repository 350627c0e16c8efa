"""Welch's comparison of a candidate arm against the baseline (design section 4), with SciPy's t distribution."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from scipy import stats as sps

from .models import Direction


class Verdict:
    IMPROVED = "improved"
    REGRESSED = "regressed"
    NO_CLEAR_CHANGE = "no clear change"
    NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class ArmStats:
    n: int
    mean: float | None
    sd: float | None

    @classmethod
    def from_aggregate(cls, n: int | None, mean: float | None, variance: float | None) -> ArmStats:
        n = n or 0
        sd = math.sqrt(max(variance, 0.0)) if variance is not None and n >= 2 else None
        return cls(n=n, mean=mean if n else None, sd=sd)


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """Student's t quantile (SciPy's ``t.ppf``), remembered: a call costs ~80 us, and the deltas page and API
    ask for the same (q, df) pairs on every view until new runs arrive."""
    return float(sps.t.ppf(q, df))


@dataclass(frozen=True)
class Comparison:
    delta: float | None  # candidate - baseline
    relative: float | None  # delta / |baseline mean|
    ci_low: float | None
    ci_high: float | None
    df: float | None
    verdict: str


def welch(baseline: ArmStats, candidate: ArmStats, direction: str, confidence: float = 0.95) -> Comparison:
    """The difference of means with its Welch-Satterthwaite confidence interval and a direction-aware verdict.

    ``regressed`` only when the whole interval lies on the worse side; fewer than
    two runs in an arm is ``not enough data``.
    """
    if baseline.n == 0 or candidate.n == 0:
        return Comparison(None, None, None, None, None, Verdict.NOT_ENOUGH_DATA)
    delta = candidate.mean - baseline.mean
    relative = delta / abs(baseline.mean) if baseline.mean else None
    if baseline.n < 2 or candidate.n < 2:
        return Comparison(delta, relative, None, None, None, Verdict.NOT_ENOUGH_DATA)
    vb, vc = baseline.sd**2 / baseline.n, candidate.sd**2 / candidate.n
    se2 = vb + vc
    if se2 == 0:
        # Both arms constant: the difference is known exactly.
        low = high = delta
        df = math.inf
    else:
        df = se2**2 / (vb**2 / (baseline.n - 1) + vc**2 / (candidate.n - 1))
        half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(se2)
        low, high = delta - half, delta + half
    whole_better, whole_worse = (low > 0, high < 0) if direction == Direction.HIGHER else (high < 0, low > 0)
    if whole_better:
        verdict = Verdict.IMPROVED
    elif whole_worse:
        verdict = Verdict.REGRESSED
    else:
        verdict = Verdict.NO_CLEAR_CHANGE
    return Comparison(delta, relative, low, high, df, verdict)
