"""Kernel width and values against the spec's test vectors (section 8, items 1-2)."""

import numpy as np
import pytest

from alemap.kernels import ale_kernel, fwhm_from_n, sigma_vox_from_n
from alemap.kernels.gaussian import block_bounds, kernel_cubes

FWHM_TABLE = {1: 19.072644, 5: 11.373345, 10: 10.002568, 12: 9.755397, 15: 9.501798,
              20: 9.241243, 30: 8.973125, 50: 8.752719, 100: 8.583702}


@pytest.mark.parametrize("n,fwhm", FWHM_TABLE.items())
def test_fwhm_table(n, fwhm):
    assert fwhm_from_n(n) == pytest.approx(fwhm, abs=1e-6)


def test_fwhm_limit_and_sigma():
    assert fwhm_from_n(1e12) == pytest.approx(8.411288, abs=1e-6)
    assert sigma_vox_from_n(10) == pytest.approx(2.123850, abs=1e-6)
    with pytest.raises(ValueError):
        fwhm_from_n(0)


def test_kernel_n10():
    k = ale_kernel(10)
    assert k.shape == (17, 17, 17)
    assert k[8, 8, 8] == pytest.approx(0.00662871, abs=5e-9)
    assert k[8, 8, 9] == pytest.approx(0.00593320, abs=5e-9)
    assert k[9, 9, 9] == pytest.approx(0.00475345, abs=5e-9)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n,peak", [(20, 0.00840461), (5, 0.00450863), (15, 0.00773220), (100, 0.01048842), (1, 0.00095613)])
def test_kernel_peaks(n, peak):
    k = ale_kernel(n)
    assert k.max() == pytest.approx(peak, abs=5e-9)
    assert np.allclose(k, k[::-1, ::-1, ::-1])


def test_kernel_n1_radius_cap():
    k = ale_kernel(1)
    assert k.shape == (31, 31, 31)  # radius capped at 15 voxels
    assert k.sum() == pytest.approx(0.999759, abs=1e-6)


def test_block_bounds_dominate_kernel():
    cubes = kernel_cubes([7, 10, 1])
    bb = block_bounds(cubes)
    for j, n in enumerate(cubes.sample_sizes):
        k = ale_kernel(n)
        r = k.shape[0] // 2
        nb, lo = bb.bwidth[j], bb.dlo[j]
        for par in (0, 3, 5, 7):
            p = np.array([(par >> 2) & 1, (par >> 1) & 1, par & 1])
            bound = -np.expm1(bb.log1m[bb.start[8 * j + par] : bb.start[8 * j + par + 1]]).reshape(nb, nb, nb)
            d = np.arange(-r, r + 1)
            blk = [((p[a] + d) >> 1) - lo for a in range(3)]
            b3 = bound[np.ix_(blk[0], blk[1], blk[2])]
            assert np.all(b3 >= k)
