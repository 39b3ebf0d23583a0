"""Sequential stopping of the Monte Carlo null (optional; off by default).

A Monte Carlo FWE threshold is an order statistic of the null maxima: the
``ceil(alpha n)``-th largest of ``n`` (:func:`alemap.corrections.voxel.fwe_threshold`).
Its precision after ``n`` iterations is given by the distribution-free
confidence interval of a quantile from order statistics: the number of null
maxima below the ``(1 - alpha)`` quantile is Binomial(``n``, ``1 - alpha``),
so the ascending order statistics ``X_(l)`` and ``X_(u)`` with
``P(l <= B < u) >= confidence`` bracket it (Hahn & Meeker 1991, *Statistical
Intervals*, section 5.2; Conover 1999, *Practical Nonparametric Statistics*,
section 3.2).

The rule checks at fixed iteration counts (multiples of :data:`CHECK_EVERY`,
from ``min_iterations``): it stops when, for every monitored statistic, the
interval's width relative to the threshold is at most ``rel_width``. A check
is made only on a complete prefix of iterations, and batch ``b``'s draws
depend only on ``(seed, b)``, so a run that stops at ``n`` has exactly the
null of a run with ``iterations=n`` and the same seed, whatever the number of
threads or the backend.

This addresses the request for early stopping of GingerALE/NiMARE users; it
is not in either peer. Off by default so that results match a fixed number of
iterations unless asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy.stats import binom

from alemap.corrections.voxel import fwe_threshold
from alemap.inference.montecarlo import BATCH_SIZE, NullMaxima

__all__ = ["CHECK_EVERY", "StoppingRule", "quantile_ci", "run_sequential"]

#: Iterations between checks (a whole number of seeded batches).
CHECK_EVERY = 32 * BATCH_SIZE


@dataclass(frozen=True)
class StoppingRule:
    """When to stop the Monte Carlo null early.

    Parameters
    ----------
    rel_width : float
        Stop when ``(upper - lower) / threshold <= rel_width`` for every
        monitored FWE threshold.
    confidence : float
        Coverage of the order-statistic interval.
    min_iterations : int
        No check before this many iterations (rounded up to a check point).
    """

    rel_width: float = 0.05
    confidence: float = 0.95
    min_iterations: int = 2 * CHECK_EVERY

    def __post_init__(self):
        if not 0 < self.rel_width:
            raise ValueError(f"stopping rel_width must be > 0, got {self.rel_width}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"stopping confidence must be in (0, 1), got {self.confidence}")
        if self.min_iterations < 1:
            raise ValueError(f"stopping min_iterations must be >= 1, got {self.min_iterations}")

    def check_points(self, n_max: int) -> list[int]:
        """Iteration counts at which the rule is checked (the last is ``n_max``)."""
        first = -(-self.min_iterations // CHECK_EVERY) * CHECK_EVERY
        pts = list(range(first, n_max, CHECK_EVERY))
        return pts + [n_max]

    def as_dict(self) -> dict:
        """Parameters, for provenance."""
        return asdict(self) | {"check_every": CHECK_EVERY}


def quantile_ci(null: np.ndarray, alpha: float, confidence: float) -> tuple[float, float, float]:
    """``(lower, threshold, upper)`` of the FWE threshold of ``null`` at ``alpha``.

    ``threshold`` is :func:`fwe_threshold`; the interval covers the
    ``(1 - alpha)`` quantile of the null distribution with probability at
    least ``confidence`` (order statistics; module docstring). Bounds beyond
    the sample are ``-inf`` / ``inf``.
    """
    x = np.sort(np.asarray(null, dtype=np.float64))
    n = x.shape[0]
    q = 1.0 - alpha
    g = (1.0 - confidence) / 2.0
    # B ~ Bin(n, q): P(l <= B < u) >= confidence with l = ppf(g), u = ppf(1 - g) + 1 (1-based ranks)
    lo_rank = int(binom.ppf(g, n, q))
    hi_rank = int(binom.ppf(1.0 - g, n, q)) + 1
    lower = float(x[lo_rank - 1]) if lo_rank >= 1 else float("-inf")
    upper = float(x[hi_rank - 1]) if hi_rank <= n else float("inf")
    return lower, fwe_threshold(x, alpha), upper


def _narrow(lower: float, threshold: float, upper: float, rel_width: float) -> bool:
    if not np.isfinite(lower) or not np.isfinite(upper):
        return False
    if threshold == 0:
        return upper == lower
    return (upper - lower) / abs(threshold) <= rel_width


def run_sequential(
    run_prefix: Callable[[int], NullMaxima],
    n_max: int,
    rule: StoppingRule,
    alpha: float,
    monitored: tuple[str, ...] = ("ale", "size"),
) -> tuple[NullMaxima, dict]:
    """Run the null up to ``n_max`` iterations, stopping early by ``rule``.

    ``run_prefix(n)`` returns the maxima of the first ``n`` iterations (it is
    called with increasing ``n`` and is expected to resume, not restart).
    ``monitored`` names the :class:`NullMaxima` fields whose FWE thresholds
    must be precise. Returns the maxima and a record for provenance.
    """
    checks = []
    maxima = None
    for n in rule.check_points(n_max):
        maxima = run_prefix(n)
        cis = {f: quantile_ci(getattr(maxima, f), alpha, rule.confidence) for f in monitored}
        ok = all(_narrow(*ci, rule.rel_width) for ci in cis.values())
        checks.append({"iterations": n, "narrow": ok,
                       **{f"{f}_ci": [cis[f][0], cis[f][2]] for f in monitored},
                       **{f"{f}_threshold": cis[f][1] for f in monitored}})
        if ok:
            break
    assert maxima is not None
    record = {"rule": rule.as_dict(), "monitored": list(monitored), "max_iterations": n_max,
              "iterations": maxima.n_iterations, "stopped_early": maxima.n_iterations < n_max,
              "checks": checks}
    return maxima, record
