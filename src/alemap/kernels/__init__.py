"""Kernel layer: the ALE modelled-activation kernel (Eickhoff et al. 2009).

Layer 3 of alemap: imports :mod:`alemap.space` at most.
"""

from alemap.kernels.gaussian import KernelCubes, ale_kernel, kernel_cubes
from alemap.kernels.width import fwhm_from_n, sigma_vox_from_n

__all__ = ["KernelCubes", "ale_kernel", "kernel_cubes", "fwhm_from_n", "sigma_vox_from_n"]
