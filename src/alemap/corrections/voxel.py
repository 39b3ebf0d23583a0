"""Voxel-wise corrections: FDR (Benjamini-Hochberg / Benjamini-Yekutieli) and
voxel-level FWE from the Monte Carlo null of the maximum.

FDR: Benjamini Y, Hochberg Y (1995) J R Stat Soc B 57:289-300; under
dependency, Benjamini Y, Yekutieli D (2001) Ann Stat 29:1165-1188. In ALE it
was introduced by Laird et al. (2005) and is no longer recommended for
inference (Eickhoff et al. 2016, NeuroImage 137:70-85); it is offered for
comparison.

Voxel-FWE: the corrected p of a voxel is the fraction of Monte Carlo
iterations whose maximum ALE is at least the voxel's ALE, floored at 1/n
(Eickhoff et al. 2012; NiMARE's ``null_to_p`` convention).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fdr_threshold", "fwe_p_from_null", "null_to_p", "fwe_threshold"]


def null_to_p(values: np.ndarray, null_maxima: np.ndarray) -> np.ndarray:
    """Fraction of ``null_maxima`` >= each value, floored at 1/n."""
    null = np.sort(np.asarray(null_maxima, dtype=np.float64))
    n = null.shape[0]
    count = n - np.searchsorted(null, np.asarray(values, dtype=np.float64), side="left")
    return np.maximum(count, 1) / n


def fwe_threshold(null_maxima: np.ndarray, alpha: float) -> float:
    """The value ``t`` such that a statistic is significant exactly when it exceeds ``t``.

    With ``p = max(c, 1) / n`` and ``c`` the number of null maxima >= the
    statistic, ``p < alpha`` holds exactly when ``c <= k = ceil(alpha n) - 1``,
    i.e. when the statistic exceeds the (k+1)-th largest null maximum. This is
    the threshold reported, so that it matches the decisions made with p.
    """
    null = np.sort(np.asarray(null_maxima, dtype=np.float64))[::-1]
    k = int(np.ceil(alpha * null.shape[0])) - 1
    if k < 0:
        return float("inf")
    return float(null[min(k, null.shape[0] - 1)])


def fwe_p_from_null(ale: np.ndarray, null_max_ale: np.ndarray) -> np.ndarray:
    """Voxel-level FWE-corrected p of ALE values."""
    return null_to_p(ale, null_max_ale)


def fdr_threshold(p: np.ndarray, q: float = 0.05, method: str = "bh") -> float:
    """Largest p-value declared significant at FDR ``q`` (0 if none).

    ``method="bh"`` assumes independence or positive dependence; ``"by"`` holds
    under any dependence (it divides ``q`` by the harmonic sum).
    """
    if method not in ("bh", "by"):
        raise ValueError(f"FDR method must be 'bh' or 'by', got {method!r}.")
    p = np.sort(np.asarray(p, dtype=np.float64).ravel())
    m = p.shape[0]
    c = 1.0 if method == "bh" else np.sum(1.0 / np.arange(1, m + 1))
    ok = np.flatnonzero(p <= q * np.arange(1, m + 1) / (m * c))
    return float(p[ok[-1]]) if ok.size else 0.0
