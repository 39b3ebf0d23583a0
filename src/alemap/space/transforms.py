"""Talairach <-> MNI transforms of Lancaster et al. (2007).

Lancaster JL et al. (2007) Bias between MNI and Talairach coordinates analyzed
using the ICBM-152 brain template. Hum Brain Mapp 28:1194-1205.

The matrices map MNI to Talairach (``icbm_other2tal``, ``icbm_spm2tal``,
``icbm_fsl2tal``, BrainMap 2007); Talairach -> MNI uses their inverses. The
``other`` variant is NiMARE's and is alemap's default; JALE uses ``spm`` (and
rounds to whole mm, which alemap does not).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TAL2MNI_VARIANTS", "mni2tal", "tal2mni"]

_MNI2TAL = {
    "other": [
        [0.9357, 0.0029, -0.0072, -1.0423],
        [-0.0065, 0.9396, -0.0726, -1.3940],
        [0.0103, 0.0752, 0.8967, 3.6475],
    ],
    "spm": [
        [0.9254, 0.0024, -0.0118, -1.0207],
        [-0.0048, 0.9316, -0.0871, -1.7667],
        [0.0152, 0.0883, 0.8924, 4.0926],
    ],
    "fsl": [
        [0.9464, 0.0034, -0.0026, -1.0680],
        [-0.0083, 0.9479, -0.0580, -1.0239],
        [0.0053, 0.0617, 0.9010, 3.1883],
    ],
}
TAL2MNI_VARIANTS = tuple(_MNI2TAL)


def _matrix(variant: str) -> np.ndarray:
    if variant not in _MNI2TAL:
        raise ValueError(f"Unknown Talairach variant {variant!r}; expected one of {TAL2MNI_VARIANTS}.")
    m = np.eye(4)
    m[:3, :] = _MNI2TAL[variant]
    return m


def _apply(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    flat = xyz.reshape(-1, 3)
    out = flat @ m[:3, :3].T + m[:3, 3]
    return out.reshape(xyz.shape)


def mni2tal(xyz: np.ndarray, variant: str = "other") -> np.ndarray:
    """MNI (mm) -> Talairach (mm) with Lancaster's ``icbm_<variant>2tal``."""
    return _apply(_matrix(variant), xyz)


def tal2mni(xyz: np.ndarray, variant: str = "other") -> np.ndarray:
    """Talairach (mm) -> MNI (mm): the inverse of :func:`mni2tal`."""
    return _apply(np.linalg.inv(_matrix(variant)), xyz)
