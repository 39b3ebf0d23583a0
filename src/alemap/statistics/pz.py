"""Conversions between one-tailed p-values and z scores.

``z = Phi^-1(1 - p)`` computed from ``p`` directly (``-ndtri(p)``) so that
tiny p-values keep full precision (NiMARE 0.17 clipped them and produced
z = 0 at the strongest voxels; alemap does not).
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["p_to_z", "z_to_p"]


#: z scores are kept finite: p is clipped to [P_FLOOR, 1 - P_FLOOR] before conversion.
P_FLOOR = 1e-300


def p_to_z(p) -> np.ndarray:
    """One-tailed z, ``Phi^-1(1 - p)``, floored at 0 and finite for every p in [0, 1].

    ALE tests convergence in one direction only, so p > 0.5 carries no
    evidence and maps to z = 0 (as NiMARE's one-tailed ``p_to_z``).
    """
    p = np.clip(np.asarray(p, dtype=np.float64), P_FLOOR, 1.0)
    return np.maximum(-special.ndtri(p), 0.0)


def z_to_p(z) -> np.ndarray:
    """One-tailed p of z: ``1 - Phi(z)``."""
    return special.ndtr(-np.asarray(z, dtype=np.float64))
