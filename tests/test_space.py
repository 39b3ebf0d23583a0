"""Talairach/MNI transforms, focus placement and the shipped mask (spec section 8, items 6-7)."""

import numpy as np
import pytest

from alemap.space import load_mni152_2mm, mni2tal, place_foci, tal2mni
from alemap.space.grid import Grid


def test_mask_is_the_gingerale_voxel_set():
    g = load_mni152_2mm()
    assert g.shape == (91, 109, 91)
    assert g.n_voxels == 228483
    assert np.allclose(g.affine[:3], [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72]])


def test_lancaster_other():
    assert mni2tal([-44, 31, 27]) == pytest.approx([-42.3176, 26.0594, 29.7364], abs=1e-4)
    assert tal2mni([-44, 31, 27]) == pytest.approx([-45.8400, 35.9790, 23.5519], abs=1e-4)


@pytest.mark.parametrize("variant,expected", [
    ("other", (1.0782, 1.1682, -4.1780)), ("spm", (1.0387, 1.4579, -4.7480)), ("fsl", (1.1155, 0.8694, -3.6047))])
def test_tal2mni_origin(variant, expected):
    assert tal2mni([0, 0, 0], variant) == pytest.approx(expected, abs=1e-4)


def test_roundtrip():
    xyz = np.random.default_rng(0).uniform(-70, 70, (50, 3))
    for v in ("other", "spm", "fsl"):
        assert np.allclose(mni2tal(tal2mni(xyz, v), v), xyz)


def test_placement_nimare_vs_nearest():
    g = load_mni152_2mm()
    assert tuple(place_foci(g, [[0, 0, 0]], "nimare")[0]) == (45, 63, 36)
    assert tuple(place_foci(g, [[0, 0, 0]], "nearest")[0]) == (45, 63, 36)
    # spec 8.6 (NiMARE <= 0.21, truncation): the x-flipped ale_2mm mask puts MNI (1,1,1) at mm (2, 0, 0)
    mm = g.ijk_to_mm(place_foci(g, [[1, 1, 1]], "truncate"))[0]
    assert tuple(mm) == (2, 0, 0)
    unflipped = Grid(g.shape, np.array([[2, 0, 0, -90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1.0]]), g.mask)
    assert tuple(unflipped.ijk_to_mm(place_foci(unflipped, [[1, 1, 1]], "truncate"))[0]) == (0, 0, 0)
    # NiMARE 0.22 rounds halves to even: voxel 44.5 -> 44, 63.5 -> 64, 36.5 -> 36
    assert tuple(place_foci(g, [[1, 1, 1]], "nimare")[0]) == (44, 64, 36)
    # nearest sends halves to the higher index on every axis
    assert tuple(place_foci(g, [[1, 1, 1]], "nearest")[0]) == (45, 64, 37)
    # nearest: every focus lands within half a voxel diagonal of its voxel centre
    xyz = np.random.default_rng(1).uniform(-60, 60, (200, 3))
    d = np.linalg.norm(g.ijk_to_mm(place_foci(g, xyz, "nearest")) - xyz, axis=1)
    assert d.max() <= np.sqrt(3) + 1e-9
