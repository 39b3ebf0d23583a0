"""NeuroStore studyset (Parquet) reader."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from alemap.data import FocusOrigin  # noqa: E402
from alemap.exceptions import InputError, ParameterError  # noqa: E402
from alemap.io import load_experiments, read_neurostore  # noqa: E402

STUDYSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "nback-vs-flanker"
pytestmark = pytest.mark.filterwarnings("ignore:.*no sample size in the metadata:UserWarning")
needs_data = pytest.mark.skipif(not (STUDYSET / "coordinates.parquet").exists(), reason="shared studyset not available")


def _quiet(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = read_neurostore(STUDYSET, **kw)
    return s, [str(w.message) for w in caught]


# ---------------------------------------------------------------- real studyset
@needs_data
def test_defaults_report_both_problems_with_counts_and_fixes():
    with pytest.raises(InputError) as err:
        read_neurostore(STUDYSET)
    msg = str(err.value)
    assert "coordinates.parquet" in msg and "metadata.parquet" in msg
    # 347 OTHER + 167 UNKNOWN foci, in 49 + 9 analyses
    assert "514 foci in 58 analyses" in msg and "OTHER, UNKNOWN" in msg
    assert "space_unknown='drop'" in msg and "space_unknown='mni'" in msg
    assert "900 of 906 analyses have no sample size" in msg
    assert "default_subjects=N" in msg and "default_subjects=20" in msg
    assert "'3m9Yjt6enmjX-78cNfWM9RV4n'" in msg  # names an analysis id


@needs_data
def test_missing_sample_sizes_alone():
    msg = r"metadata\.parquet: 842 of 848 analyses have no sample size.*default_subjects"
    with pytest.raises(InputError, match=msg):
        read_neurostore(STUDYSET, space_unknown="drop")


@needs_data
def test_unknown_space_alone():
    with pytest.raises(InputError, match=r"coordinates\.parquet: 514 foci in 58 analyses .*row 1241") as err:
        read_neurostore(STUDYSET, default_subjects=20)
    assert "sample size" not in str(err.value)


@needs_data
def test_full_studyset_as_mni():
    s, warned = _quiet(default_subjects=20, space_unknown="mni")
    assert (s.n_experiments, s.n_foci) == (906, 9492)
    assert len(set(s.studies)) == 320
    assert Counter(t["task"] for t in s.tags) == {"n-back": 500, "flanker": 406}
    assert Counter(s.spaces) == {"MNI": 717 + 49 + 9, "TAL": 131}
    assert Counter(t.get("space_reported") for t in s.tags) == {None: 848, "OTHER": 49, "UNKNOWN": 9}
    sources = Counter(t["subjects_source"] for t in s.tags)
    assert sources == {"default": 900, "metadata.sample_sizes": 2, "metadata.subjects": 2, "metadata.n_subjects": 2}
    assert Counter(s.n_subjects.tolist()) == {20: 900, 13: 2, 11: 3, 16: 1}
    assert any("900 of 906 analyses have no sample size" in w and "default_subjects=20" in w for w in warned)
    # names are analysis ids; the readable names are tags
    assert s.names[0] == "25uKFzHufiGk-MwAgKDUaAoMn" and s.studies[0] == "25uKFzHufiGk"
    assert len(set(s.names)) == 906
    t0 = s.tags[0]
    assert t0["task"] == "flanker" and t0["analysis_name"] == "Table 2."
    assert t0["study_name"].startswith("When your error becomes my error")
    assert t0["matched_task_names"] == "Social Speeded Flanker Task"
    # origins: coordinates.parquet#<analysis id>, 1-based table row
    assert s.origins[0] == FocusOrigin(f"{STUDYSET / 'coordinates.parquet'}#25uKFzHufiGk-MwAgKDUaAoMn", 1)
    np.testing.assert_array_equal(s.foci(0)[0], [3, 26, 37])
    i = s.names.index("6gvt8qHsXupB-CBstVqhtZ9ZV")
    assert s.n_subjects[i] == 11 and s.tags[i]["subjects_source"] == "metadata.subjects"


@needs_data
def test_full_studyset_drop_unknown_space():
    s, warned = _quiet(default_subjects=20, space_unknown="drop")
    assert (s.n_experiments, s.n_foci) == (848, 8978)  # MNI 7,819 + TAL 1,159 foci
    assert Counter(s.spaces) == {"MNI": 717, "TAL": 131}
    assert sum(s.foci_counts[[i for i, sp in enumerate(s.spaces) if sp == "TAL"]]) == 1159
    assert any("left out 514 foci" in w and "58 analyses" in w for w in warned)
    assert any("842 of 848" in w for w in warned)
    assert "space_reported" not in set().union(*s.tags)


@needs_data
def test_loads_fast_and_through_load_experiments():
    read_neurostore(STUDYSET, default_subjects=20, space_unknown="mni")  # warm imports
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_neurostore(STUDYSET, default_subjects=20, space_unknown="mni")
    assert time.perf_counter() - t0 < 1.0
    # load_experiments dispatches a studyset folder and its .parquet tables (default arguments)
    for target in (STUDYSET, STUDYSET / "analyses.parquet"):
        with pytest.raises(InputError, match="default_subjects"):
            load_experiments(target)


# ---------------------------------------------------------------- constructed studysets
def _write(folder: Path, analyses, coordinates, metadata=None, manifest=None, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    names = names or {}
    pq.write_table(pa.table(analyses), folder / names.get("analyses", "analyses.parquet"))
    pq.write_table(pa.table(coordinates), folder / names.get("coordinates", "coordinates.parquet"))
    if metadata is not None:
        pq.write_table(pa.table(metadata), folder / names.get("metadata", "metadata.parquet"))
    if manifest is not None:
        (folder / "studyset.json").write_text(json.dumps(manifest))
    return folder


def _small(tmp_path, **changes):
    analyses = {"id": ["s1-a", "s1-b", "s2-a", "s3-img"], "study_id": ["s1", "s1", "s2", "s3"],
                "name": ["A", "B", "C", "image only"]}
    coordinates = {"id": ["s1-a", "s2-a", "s1-a", "s1-b"], "x": [1.0, 4.0, 2.0, 5.0], "y": [0.0, 0.0, 0.0, 0.0],
                   "z": [0.0, 0.0, 0.0, 0.0], "space": ["MNI", "TAL", "MNI", "mni152"]}
    metadata = {"id": ["s1-a", "s1-b", "s2-a", "s3-img"],
                "comparison_task": ["n-back", "flanker", "n-back", None],
                "sample_sizes": pa.array([[10, 13], None, None, None], type=pa.list_(pa.int64())),
                "n_subjects": ["", "", "15", None],
                "age": [21.0, 30.5, None, None],
                "note": [" keep me ", "", None, None]}
    for key, value in changes.items():
        table, column = key.split("__")
        {"a": analyses, "c": coordinates, "m": metadata}[table][column] = value
    return _write(tmp_path / "set", analyses, coordinates, metadata)


def test_constructed_studyset(tmp_path):
    folder = _small(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = read_neurostore(folder, default_subjects=25)
    assert s.names == ("s1-a", "s1-b", "s2-a")  # analyses order; the image-only analysis is skipped
    assert s.studies == ("s1", "s1", "s2")
    assert s.spaces == ("MNI", "MNI", "TAL")
    np.testing.assert_array_equal(s.n_subjects, [12, 25, 15])  # round(mean([10, 13])) = 12
    np.testing.assert_array_equal(s.foci(0), [[1, 0, 0], [2, 0, 0]])  # coordinate-table order kept
    assert [o.line for o in s.origins] == [1, 3, 4, 2]
    assert s.tags[0] == {"task": "n-back", "age": "21", "note": "keep me", "analysis_name": "A",
                         "subjects_source": "metadata.sample_sizes"}
    assert s.tags[1]["subjects_source"] == "default" and s.tags[1]["age"] == "30.5"
    assert s.tags[2]["subjects_source"] == "metadata.n_subjects"
    assert [str(w.message) for w in caught] == [
        f"{folder}: 1 of 3 analyses have no sample size in the metadata; default_subjects=25 was used for them "
        "(tag subjects_source: default)."
    ]
    # any table path, or studyset.json, reads the folder
    assert read_neurostore(folder / "coordinates.parquet", default_subjects=25).names == s.names


def test_no_default_needed_when_every_analysis_has_a_size(tmp_path):
    folder = _small(tmp_path, m__n_subjects=["", "9", "15", None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = read_neurostore(folder)
        assert load_experiments(folder).names == s.names
    np.testing.assert_array_equal(s.n_subjects, [12, 9, 15])


def test_manifest_table_names(tmp_path):
    analyses = {"id": ["s-1"], "study_id": ["s"]}
    coordinates = {"id": ["s-1"], "x": [0.0], "y": [0.0], "z": [0.0], "space": ["Talairach"]}
    names = {"analyses": "A.parquet", "coordinates": "C.parquet"}
    folder = _write(tmp_path / "m", analyses, coordinates, manifest={"tables": names}, names=names)
    s = read_neurostore(folder / "studyset.json", default_subjects=7)
    assert s.spaces == ("TAL",) and s.n_subjects.tolist() == [7] and s.tags[0] == {"subjects_source": "default"}


def test_missing_sample_size_without_metadata_table(tmp_path):
    folder = _write(tmp_path / "x", {"id": ["s-1"], "study_id": ["s"]},
                    {"id": ["s-1"], "x": [0.0], "y": [0.0], "z": [0.0], "space": ["MNI"]})
    with pytest.raises(InputError, match=r"1 of 1 analyses have no sample size \(there is no metadata\.parquet\)"):
        read_neurostore(folder)


@pytest.mark.parametrize("value", ["twelve", "0", "-3", "12.5"])
def test_bad_sample_size_names_analysis(tmp_path, value):
    folder = _small(tmp_path, m__n_subjects=["", "", value, None])
    with pytest.raises(InputError, match=rf"metadata\.parquet#s2-a: metadata column 'n_subjects' value '{value}' "
                                         r"is not a positive whole number"):
        read_neurostore(folder, default_subjects=20)


def test_unknown_space_options(tmp_path):
    folder = _small(tmp_path, c__space=["MNI", "UNKNOWN", "MNI", None])
    msg = r"2 foci in 2 analyses .*\(\(empty\), UNKNOWN\), e\.g\. row 2 \(analysis 's2-a'\)"
    with pytest.raises(InputError, match=msg):
        read_neurostore(folder, default_subjects=20)
    s = read_neurostore(folder, default_subjects=20, space_unknown="mni")
    assert s.spaces == ("MNI", "MNI", "MNI")
    assert [t.get("space_reported") for t in s.tags] == [None, "(empty)", "UNKNOWN"]
    with pytest.warns(UserWarning, match=r"left out 2 foci .*2 analyses had no other foci"):
        s = read_neurostore(folder, default_subjects=20, space_unknown="drop")
    assert s.names == ("s1-a",) and s.n_foci == 2


def test_mixed_space_analysis(tmp_path):
    folder = _small(tmp_path, c__space=["MNI", "TAL", "TAL", "MNI"])
    msg = r"coordinates\.parquet#s1-a: analysis mixes MNI and Talairach foci \(rows 1, 3\)"
    with pytest.raises(InputError, match=msg):
        read_neurostore(folder, default_subjects=20)


def test_bad_coordinates(tmp_path):
    folder = _small(tmp_path, c__x=[1.0, float("nan"), 2.0, 5.0])
    with pytest.raises(InputError, match=r"coordinates\.parquet:2: analysis 's2-a' has a missing or non-finite"):
        read_neurostore(folder, default_subjects=20)
    folder = _small(tmp_path, c__id=["s1-a", "zz-9", "s1-a", "s1-b"])
    with pytest.raises(InputError, match=r"coordinates\.parquet:2: analysis id 'zz-9' is not in analyses\.parquet"):
        read_neurostore(folder, default_subjects=20)


def test_structural_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_neurostore(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"not a NeuroStore studyset: no analyses table"):
        read_neurostore(tmp_path / "empty")
    folder = _write(tmp_path / "nocol", {"id": ["s-1"]}, {"id": ["s-1"], "x": [0.0], "y": [0.0], "z": [0.0]})
    with pytest.raises(InputError, match=r"analyses\.parquet: no 'study_id' column"):
        read_neurostore(folder)
    folder = _write(tmp_path / "dup", {"id": ["s-1", "s-1"], "study_id": ["s", "s"]},
                    {"id": ["s-1"], "x": [0.0], "y": [0.0], "z": [0.0]})
    with pytest.raises(InputError, match=r"analysis id 's-1' appears twice \(rows 1 and 2\)"):
        read_neurostore(folder)
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "analyses.parquet").write_bytes(b"not parquet")
    (bad / "coordinates.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"analyses\.parquet: not a readable Parquet file"):
        read_neurostore(bad)


@pytest.mark.parametrize("kw", [{"default_subjects": 0}, {"default_subjects": 2.5}, {"default_subjects": True},
                                {"space_unknown": "tal"}])
def test_parameter_errors(tmp_path, kw):
    with pytest.raises(ParameterError):
        read_neurostore(tmp_path, **kw)
