"""Kernel width from sample size (Eickhoff et al. 2009).

Eickhoff SB, Laird AR, Grefkes C, Wang LE, Zilles K, Fox PT (2009).
Coordinate-based activation likelihood estimation meta-analysis of
neuroimaging data: a random-effects approach based on empirical estimates of
spatial uncertainty. Hum Brain Mapp 30:2907-2926.

Two sources of spatial uncertainty are combined: between-template (5.7 mm
mean Euclidean distance) and between-subject (11.6 mm, shrinking with the
square root of the sample size). A Euclidean distance is turned into a
Gaussian sigma by dividing by the mean of a chi(3) variable, ``2 sqrt(2/pi)``,
and into a FWHM by multiplying by ``sqrt(8 ln 2)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FWHM_TEMPLATE", "FWHM_SUBJECT_1", "fwhm_from_n", "sigma_vox_from_n"]

_SIGMA_TO_FWHM = np.sqrt(8.0 * np.log(2.0))
_CHI3_MEAN = 2.0 * np.sqrt(2.0 / np.pi)
#: FWHM (mm) of the template uncertainty: 5.7 mm between-template distance.
FWHM_TEMPLATE = 5.7 / _CHI3_MEAN * _SIGMA_TO_FWHM
#: FWHM (mm) of the subject uncertainty for one subject: 11.6 mm distance.
FWHM_SUBJECT_1 = 11.6 / _CHI3_MEAN * _SIGMA_TO_FWHM


def fwhm_from_n(n_subjects) -> np.ndarray:
    """FWHM in mm of the ALE kernel for ``n_subjects`` (Eickhoff 2009, eq. 2)."""
    n = np.asarray(n_subjects, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError("Sample sizes must be positive to derive an ALE kernel width.")
    return np.sqrt(FWHM_TEMPLATE**2 + (FWHM_SUBJECT_1 / np.sqrt(n)) ** 2)


def sigma_vox_from_n(n_subjects, voxel_size_mm: float = 2.0) -> np.ndarray:
    """Gaussian sigma in voxels for isotropic voxels of ``voxel_size_mm``.

    alemap divides the mm sigma by the voxel edge. NiMARE divides the FWHM by
    ``sqrt(prod(zooms))``, which equals this for 2 mm voxels only (spec 1).
    """
    return fwhm_from_n(n_subjects) / _SIGMA_TO_FWHM / voxel_size_mm
