"""NiMARE dataset JSON reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alemap.data import FocusOrigin
from alemap.exceptions import InputError, ParameterError
from alemap.io import load_experiments, read_nimare_json

PAIN = Path("/work/shared/data/nidm-pain/nidm_pain_dset.json")
needs_data = pytest.mark.skipif(not PAIN.exists(), reason="shared sample data not available")


def contrast(x, y, z, space="MNI", sizes=(20,), key="sample_sizes"):
    entry = {"coords": {"space": space, "x": list(x), "y": list(y), "z": list(z)}, "metadata": {}}
    if sizes is not None:
        entry["metadata"][key] = list(sizes) if isinstance(sizes, (list, tuple)) else sizes
    return entry


def dataset():
    return {
        "study1": {"contrasts": {"1": contrast([1, 2], [3, 4], [5, 6]), "2": contrast([7], [8], [9], sizes=[10, 13])}},
        "study2": {"contrasts": {"a": contrast([-1.5], [0], [2], space="Talairach", sizes=15, key="sample_size")}},
        "images_only": {"contrasts": {"1": {"images": {"z": "z.nii.gz"}, "metadata": {"sample_sizes": [9]}}}},
        "study3": {"contrasts": {"x": contrast([0], [0], [0], space="mni152_2mm", sizes=[12.0])}},
    }


def write(tmp_path: Path, data, name: str = "dset.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


@needs_data
def test_pain_dataset():
    s = read_nimare_json(PAIN)
    assert (s.n_experiments, s.n_foci) == (21, 267)
    assert np.all(s.n_subjects > 0)
    assert s.n_subjects[0] == 25
    assert s.names[0] == "pain_01.nidm-1" and s.studies[0] == "pain_01.nidm"
    assert set(s.spaces) == {"MNI"}
    assert s.origins[0] == FocusOrigin(f"{PAIN}#pain_01.nidm/1", 0)
    np.testing.assert_array_equal(s.foci(0)[0], [48, -38, -24])
    assert load_experiments(PAIN).n_foci == 267


def test_constructed_dataset(tmp_path):
    path = write(tmp_path, dataset())
    s = read_nimare_json(path)
    assert s.names == ("study1-1", "study1-2", "study2-a", "study3-x")  # images-only contrast skipped
    assert s.studies == ("study1", "study1", "study2", "study3")
    assert s.spaces == ("MNI", "MNI", "TAL", "MNI")
    np.testing.assert_array_equal(s.n_subjects, [20, 12, 15, 12])  # round(mean([10, 13])) = 12
    np.testing.assert_array_equal(s.offsets, [0, 2, 3, 4, 5])
    np.testing.assert_array_equal(s.foci(0), [[1, 3, 5], [2, 4, 6]])
    np.testing.assert_array_equal(s.foci(2), [[-1.5, 0, 2]])
    assert s.origins[3] == FocusOrigin(f"{path}#study2/a", 0)  # first focus of experiment 2


@pytest.mark.parametrize(("value", "expected"), [("MNI", "MNI"), ("mni152_2mm", "MNI"), ("ale_2mm", "MNI"),
                                                 ("TAL", "TAL"), ("talairach", "TAL")])
def test_space_names(tmp_path, value, expected):
    s = read_nimare_json(write(tmp_path, {"s": {"contrasts": {"1": contrast([1], [2], [3], space=value)}}}))
    assert s.spaces == (expected,)


def test_space_fallback(tmp_path):
    data = {"s": {"contrasts": {"1": contrast([1], [2], [3])}}}
    del data["s"]["contrasts"]["1"]["coords"]["space"]
    path = write(tmp_path, data)
    with pytest.raises(InputError, match=r"dset\.json#s/1: no 'coords.space'"):
        read_nimare_json(path)
    assert read_nimare_json(path, space="TAL").spaces == ("TAL",)
    with pytest.raises(ParameterError):
        read_nimare_json(path, space="nowhere")


JSON_ERRORS = {
    "no_sample_size": ({"s": {"contrasts": {"c": contrast([1], [2], [3], sizes=None)}}},
                       "dset.json#s/c: no sample size at s.contrasts.c.metadata.sample_sizes"),
    "empty_sample_sizes": ({"s": {"contrasts": {"c": contrast([1], [2], [3], sizes=[])}}}, "s.contrasts.c.metadata"),
    "zero_sample_size": ({"s": {"contrasts": {"c": contrast([1], [2], [3], sizes=[0])}}}, "dset.json#s/c"),
    "fractional_sample_size": ({"s": {"contrasts": {"c": contrast([1], [2], [3], sizes=[12.5])}}}, "12.5"),
    "text_sample_size": ({"s": {"contrasts": {"c": contrast([1], [2], [3], sizes=["n=12"])}}}, "'n=12'"),
    "no_foci": ({"s": {"contrasts": {"c": contrast([], [], [])}}}, "dset.json#s/c: coords has no foci"),
    "ragged": ({"s": {"contrasts": {"c": contrast([1, 2], [2], [3])}}}, "x=2, y=1, z=1"),
    "missing_axis": ({"s": {"contrasts": {"c": {"coords": {"space": "MNI", "x": [1], "y": [2]}}}}}, "'z'"),
    "nan": ({"s": {"contrasts": {"c": contrast([1], [float("nan")], [3])}}}, "coords.y[0]"),
    "string_coordinate": ({"s": {"contrasts": {"c": contrast([1], [2], ["3"])}}}, "coords.z[0] = '3'"),
    "unknown_space": ({"s": {"contrasts": {"c": contrast([1], [2], [3], space="fsaverage")}}}, "'fsaverage'"),
    "no_contrasts": ({"s": {"images": {}}}, "dset.json#s"),
    "not_an_object": ([1, 2, 3], "expected a JSON object"),
    "nothing_with_coords": ({"s": {"contrasts": {"c": {"images": {}}}}}, "no contrast has 'coords'"),
}


@pytest.mark.parametrize("case", sorted(JSON_ERRORS))
def test_json_errors(tmp_path, case):
    data, fragment = JSON_ERRORS[case]
    with pytest.raises(InputError) as info:
        read_nimare_json(write(tmp_path, data))
    assert "dset.json" in str(info.value)
    assert fragment in str(info.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n "s": {\n  "contrasts": {,}\n }\n}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.json:3: invalid JSON"):
        read_nimare_json(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"gone\.json.*not found"):
        read_nimare_json(tmp_path / "gone.json")
