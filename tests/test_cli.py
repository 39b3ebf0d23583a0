"""The ``alemap`` command line: outputs, the motor network, and clear errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from alemap.cli.main import main

EXPECTED = ["ale.nii.gz", "p.nii.gz", "z.nii.gz", "z_vfwe.nii.gz", "z_cfwe.nii.gz", "clusters.tsv",
            "null.npz", "provenance.json"]


@pytest.fixture(scope="module")
def finger_out(tmp_path_factory, finger_path):
    out = tmp_path_factory.mktemp("finger")
    assert main(["ale", str(finger_path), "-o", str(out), "--iterations", "500", "--seed", "3", "--quiet", "--jobs", "2"]) == 0
    return out


def test_outputs_written(finger_out):
    for name in EXPECTED:
        assert (finger_out / name).is_file(), name
    assert not list(finger_out.glob(".tmp-*"))
    assert not (finger_out / ".alemap-null-checkpoint.npz").exists()
    img = nib.load(finger_out / "ale.nii.gz")
    assert img.shape == (91, 109, 91)
    z = np.asarray(nib.load(finger_out / "z_cfwe.nii.gz").dataobj)
    assert z.max() > 5
    null = np.load(finger_out / "null.npz")
    assert null["max_ale"].shape == (500,) and null["max_cluster_size"].shape == (500,)
    prov = json.loads((finger_out / "provenance.json").read_text())
    assert prov["parameters"]["iterations"] == 500 and prov["parameters"]["seed"] == 3
    assert len(prov["inputs"][0]["sha256"]) == 64
    assert prov["counts"]["experiments_used"] == 73 and prov["counts"]["foci_used"] == 654
    assert {"numpy", "numba", "alemap"} <= set(prov["versions"])


def _near(table, xyz, radius):
    d = np.linalg.norm(table[["peak_x", "peak_y", "peak_z"]].to_numpy() - np.asarray(xyz), axis=1)
    com = np.linalg.norm(table[["com_x", "com_y", "com_z"]].to_numpy() - np.asarray(xyz), axis=1)
    return bool(np.any(np.minimum(d, com) <= radius))


def test_finger_tapping_finds_the_motor_network(finger_out):
    t = pd.read_csv(finger_out / "clusters.tsv", sep="\t")
    assert len(t) >= 5
    assert (t["p_fwe_size"] < 0.05).all()
    assert _near(t, (-38, -24, 56), 12), "left M1/S1"
    assert _near(t, (-2, -4, 54), 12), "SMA"
    assert _near(t, (18, -54, -22), 14), "right anterior cerebellum"
    assert _near(t, (-24, -6, 4), 12), "left putamen / basal ganglia"
    assert _near(t, (38, -22, 52), 14), "right sensorimotor / premotor"


def test_same_seed_same_outputs(tmp_path, finger_path):
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        main(["ale", str(finger_path), "-o", str(out), "--iterations", "64", "--seed", "7", "--quiet", "--jobs", jobs, "--no-report"])
        outs.append(out)
    a, b = (np.load(o / "null.npz") for o in outs)
    for key in ("max_ale", "max_cluster_size", "max_cluster_mass"):
        assert np.array_equal(a[key], b[key])
    assert (outs[0] / "clusters.tsv").read_bytes() == (outs[1] / "clusters.tsv").read_bytes()
    for name in ("ale.nii.gz", "z_cfwe.nii.gz"):
        assert np.array_equal(nib.load(outs[0] / name).get_fdata(), nib.load(outs[1] / name).get_fdata())


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["ale", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "alemap: error" in err


def test_bad_line_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "bad.txt"
    f.write_text("// Reference=MNI\n// A, 2000: x\n// Subjects=10\n1 2 3\n4 five 6\n")
    assert main(["ale", str(f), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.txt:5" in err


def test_bad_parameter_is_a_clear_error(tmp_path, capsys, finger_path):
    assert main(["ale", str(finger_path), "-o", str(tmp_path / "o"), "--alpha", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'alpha'" in err and "Got 2.0" in err


def test_foci_outside_the_template_are_reported(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("// Reference=MNI\n// A, 2000: x\n// Subjects=10\n-38 -24 56\n300 0 0\n"
                 "\n// B, 2001: y\n// Subjects=12\n-36 -22 54\n")
    out = tmp_path / "o"
    assert main(["ale", str(f), "-o", str(out), "--iterations", "32", "--quiet", "--no-report"]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["excluded_foci"]) == 1
    ex = prov["excluded_foci"][0]
    assert ex["origin"].endswith("out.txt:5") and "bounding box" in ex["reason"]
    assert prov["counts"]["foci_used"] == 2


@pytest.mark.parametrize("command", [["ale", "x.txt", "-o", "out"], ["run", "p.yaml", "-o", "out"]])
@pytest.mark.parametrize("jobs", ["0", "-2", "two"])
def test_jobs_must_be_a_positive_whole_number(command, jobs, capsys):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--jobs", jobs])
    assert exc.value.code == 2
    assert "--jobs: expected a whole number >= 1" in capsys.readouterr().err


def test_demo_checks_memory_before_computing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--max-memory", "50M", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "alemap: error: this analysis needs about " in err and "more than --max-memory 50.0 MiB" in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
