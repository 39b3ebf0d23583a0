"""Foci tables (CSV/TSV/TXT/XLSX) and the load_experiments dispatcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError, ParameterError
from alemap.io import load_experiments, read_sleuth, read_table

FINGER = Path("/work/shared/data/eickhoff2009-finger-tapping/EickhoffHBM09.txt")
PAIN = Path("/work/shared/data/nidm-pain/nidm_pain_dset.json")
needs_data = pytest.mark.skipif(not FINGER.exists(), reason="shared sample data not available")

ROWS = [
    # study, contrast, n, x, y, z, space, paradigm
    ("Doe J, 2011", "Words > Rest", 14, -44, 12, 24, "MNI", "reading"),
    ("Doe J, 2011", "Words > Rest", 14, -38, 20, 20.5, "MNI", "reading"),
    ("Roe K, 2015", "Pictures > Rest", 22, 40, -60, -12, "Talairach", "viewing"),
    ("Doe J, 2011", "Words > Rest", 14, 1, 2, 3, "mni", "reading"),  # non-contiguous row
    ("Doe J, 2011", "Pseudowords > Rest", 14, 5, 6, 7, "MNI", "reading"),
]
COLUMNS = ["Study", " Contrast ", "N", "x", "y", "z", "Space", "paradigm"]


def frame(rows=ROWS, columns=COLUMNS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "foci.csv", **kwargs) -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False, **kwargs)
    return path


def write_text(tmp_path: Path, text: str, name: str = "foci.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_same(a: ExperimentSet, b: ExperimentSet, origins: bool = True) -> None:
    assert a.names == b.names and a.studies == b.studies and a.spaces == b.spaces and a.tags == b.tags
    np.testing.assert_array_equal(a.n_subjects, b.n_subjects)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    if origins:
        assert [o.line for o in a.origins] == [o.line for o in b.origins]


# ---------------------------------------------------------------- reading
def test_csv_basic(tmp_path):
    path = write_csv(tmp_path, frame())
    s = read_table(path)
    assert s.names == ("Doe J, 2011: Words > Rest", "Roe K, 2015: Pictures > Rest", "Doe J, 2011: Pseudowords > Rest")
    assert s.studies == ("Doe J, 2011", "Roe K, 2015", "Doe J, 2011")
    assert s.spaces == ("MNI", "TAL", "MNI")
    np.testing.assert_array_equal(s.n_subjects, [14, 22, 14])
    np.testing.assert_array_equal(s.offsets, [0, 3, 4, 5])
    np.testing.assert_array_equal(s.foci(0), [[-44, 12, 24], [-38, 20, 20.5], [1, 2, 3]])
    assert [o.line for o in s.origins] == [2, 3, 5, 4, 6]  # spreadsheet rows, header = 1
    assert s.origins[0] == FocusOrigin(str(path), 2)
    assert s.tags[0] == {"paradigm": "reading"} and s.tags[1] == {"paradigm": "viewing"}


def test_csv_and_xlsx_give_identical_sets(tmp_path):
    csv = read_table(write_csv(tmp_path, frame()))
    xlsx_path = tmp_path / "foci.xlsx"
    frame().to_excel(xlsx_path, index=False)
    assert_same(csv, read_table(xlsx_path))
    assert_same(csv, load_experiments(xlsx_path))


def test_xlsx_sheet_selection(tmp_path):
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"notes": ["nothing here"]}).to_excel(writer, sheet_name="readme", index=False)
        frame().to_excel(writer, sheet_name="foci", index=False)
    assert read_table(path, sheet="foci").n_foci == 5
    assert load_experiments(path, sheet=1).n_foci == 5
    with pytest.raises(InputError, match=r"book\.xlsx.*'missing'"):
        read_table(path, sheet="missing")
    with pytest.raises(InputError, match=r"book\.xlsx.*'study'"):  # first sheet lacks the columns
        read_table(path)


def test_tsv_txt_and_semicolon_csv_match_csv(tmp_path):
    csv = read_table(write_csv(tmp_path, frame()))
    assert_same(csv, read_table(write_csv(tmp_path, frame(), "foci.tsv", sep="\t")))
    assert_same(csv, read_table(write_csv(tmp_path, frame(), "foci.txt", sep="\t")))
    assert_same(csv, load_experiments(tmp_path / "foci.txt"))  # .txt with a header row -> table
    assert_same(csv, read_table(write_csv(tmp_path, frame(), "semi.csv", sep=";")))


def test_aliases_and_no_experiment_column(tmp_path):
    df = pd.DataFrame(
        {"Author": ["A", "A", "B"], "Sample Size": [10, 10, 12], "X": [1, 2, 3], "Y": [4, 5, 6], "Z": [7, 8, 9],
         "Reference": ["TAL", "TAL", "mni152"]}
    )
    s = read_table(write_csv(tmp_path, df))
    assert s.names == ("A", "B") and s.studies == ("A", "B")
    assert s.spaces == ("TAL", "MNI")
    np.testing.assert_array_equal(s.n_subjects, [10, 12])
    assert s.tags == ({}, {})


def test_first_alias_wins_and_others_become_tags(tmp_path):
    df = frame().rename(columns={"Study": "study_id"}).assign(author="Doe")
    s = read_table(write_csv(tmp_path, df))
    assert s.studies[0] == "Doe J, 2011"
    assert s.tags[0] == {"paradigm": "reading", "author": "Doe"}


def test_space_argument_when_no_space_column(tmp_path):
    path = write_csv(tmp_path, frame().drop(columns="Space"))
    with pytest.raises(InputError, match=r"foci\.csv:1: no space column.*space='MNI'"):
        read_table(path)
    assert read_table(path, space="Talairach").spaces == ("TAL", "TAL", "TAL")
    assert load_experiments(path, space="MNI").spaces == ("MNI", "MNI", "MNI")
    with pytest.raises(ParameterError):
        read_table(path, space="SPM")


def test_blank_rows_and_float_subjects_are_accepted(tmp_path):
    text = "study,subjects,x,y,z,space\n\nA,10.0,1,2,3,MNI\n,,,,,\nA,10,4,5,6,MNI\n"
    s = read_table(write_text(tmp_path, text))
    np.testing.assert_array_equal(s.n_subjects, [10])
    assert [o.line for o in s.origins] == [3, 5]


@needs_data
def test_finger_table_round_trip(tmp_path):
    finger = read_sleuth(FINGER)
    rows = [
        {"study": r["study"], "experiment": r["name"][len(r["study"]) + 2 :], "subjects": r["n_subjects"],
         "x": x, "y": y, "z": z, "space": r["space"]}
        for r in finger.to_records()
        for x, y, z in r["xyz"]
    ]
    back = read_table(write_csv(tmp_path, pd.DataFrame(rows)))
    np.testing.assert_array_equal(back.xyz, finger.xyz)
    np.testing.assert_array_equal(back.offsets, finger.offsets)
    np.testing.assert_array_equal(back.n_subjects, finger.n_subjects)
    assert back.names == finger.names and back.studies == finger.studies and back.spaces == finger.spaces


# ---------------------------------------------------------------- errors
def bad_csv(tmp_path, text: str) -> Path:
    return write_text(tmp_path, text, "bad_table.csv")


HEADER = "study,contrast,subjects,x,y,z,space,task\n"
TABLE_ERRORS = {
    "missing_column": ("study,subjects,x,y,space\nA,1,2,3,MNI\n", 1, "'z' column"),
    "non_numeric": (HEADER + "A,c,10,1,2,3,MNI,t\nA,c,10,one,2,3,MNI,t\n", 3, "'one'"),
    "nan": (HEADER + "A,c,10,1,NaN,3,MNI,t\n", 2, "NaN or infinite"),
    "inf": (HEADER + "A,c,10,1,2,-inf,MNI,t\n", 2, "NaN or infinite"),
    "empty_coordinate": (HEADER + "A,c,10,1,2,3,MNI,t\nA,c,10,1,,3,MNI,t\n", 3, "empty"),
    "subjects_zero": (HEADER + "A,c,0,1,2,3,MNI,t\n", 2, "positive whole number"),
    "subjects_fraction": (HEADER + "A,c,10,1,2,3,MNI,t\nB,c,9.5,1,2,3,MNI,t\n", 3, "'9.5'"),
    "subjects_word": (HEADER + "A,c,ten,1,2,3,MNI,t\n", 2, "'ten'"),
    "subjects_vary": (HEADER + "A,c,10,1,2,3,MNI,t\nB,c,9,1,2,3,MNI,t\nA,c,12,1,2,3,MNI,t\n", 2, "'A: c' (10 on rows 2; 12 on rows 4)"),
    "space_vary": (HEADER + "A,c,10,1,2,3,MNI,t\nA,c,10,1,2,3,TAL,t\n", 2, "'space'"),
    "unknown_space": (HEADER + "A,c,10,1,2,3,SPM,t\n", 2, "'SPM'"),
    "empty_study": (HEADER + "A,c,10,1,2,3,MNI,t\n,c,10,1,2,3,MNI,t\n", 3, "'study' is empty"),
    "tag_vary": (HEADER + "A,c,10,1,2,3,MNI,t\nB,c,10,1,2,3,MNI,t\nA,c,10,1,2,3,MNI,u\n", 2, "rows 2"),
    "duplicate_column": ("study,Study,subjects,x,y,z,space\nA,A,1,2,3,4,MNI\n", 1, "same name"),
    "header_only": (HEADER, 2, "no data rows"),
}


@pytest.mark.parametrize("case", sorted(TABLE_ERRORS))
def test_table_errors_name_file_row_and_problem(tmp_path, case):
    text, line, fragment = TABLE_ERRORS[case]
    with pytest.raises(InputError) as info:
        read_table(bad_csv(tmp_path, text))
    message = str(info.value)
    assert f"bad_table.csv:{line}:" in message
    assert fragment in message


def test_missing_column_lists_columns_found(tmp_path):
    text, _, _ = TABLE_ERRORS["missing_column"]
    with pytest.raises(InputError, match=r"columns found: 'study', 'subjects', 'x', 'y', 'space'"):
        read_table(bad_csv(tmp_path, text))


def test_varying_tag_names_column_experiment_and_rows(tmp_path):
    text, _, _ = TABLE_ERRORS["tag_vary"]
    with pytest.raises(InputError, match=r"'task' differs within experiment 'A: c' \('t' on rows 2; 'u' on rows 4\)"):
        read_table(bad_csv(tmp_path, text))


def test_xlsx_error_rows(tmp_path):
    df = frame().astype({"x": object})
    df.loc[2, "x"] = "left"
    path = tmp_path / "bad.xlsx"
    df.to_excel(path, index=False)
    with pytest.raises(InputError, match=r"bad\.xlsx:4: column 'x' value 'left'"):
        read_table(path)


@pytest.mark.parametrize("content", [b"", b"\n \n"])
def test_empty_table(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"empty\.csv.*empty"):
        read_table(path)


def test_ragged_csv(tmp_path):
    with pytest.raises(InputError, match=r"bad_table\.csv:2: .*same number"):
        read_table(bad_csv(tmp_path, "study,subjects,x,y,z,space\nA,1,2,3,4,MNI,extra,more\n"))


def test_corrupt_xlsx(tmp_path):
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"corrupt\.xlsx.*Excel"):
        read_table(path)


# ---------------------------------------------------------------- dispatcher
def test_load_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match=r"absent\.csv.*not found"):
        load_experiments(tmp_path / "absent.csv")
    other = tmp_path / "foci.nii.gz"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"foci\.nii\.gz.*\.txt.*\.csv.*\.xlsx.*\.json"):
        load_experiments(other)
    with pytest.raises(InputError, match="no input files"):
        load_experiments([])


def test_load_sleuth_suffix_and_txt_detection(tmp_path):
    sleuth = "// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n"
    for name in ("a.sleuth", "a.txt", "a.TXT"):
        assert load_experiments(write_text(tmp_path, sleuth, name)).names == ("A, 2000: x",)
    with pytest.raises(InputError, match=r"b\.txt:1: focus"):  # foci only: reported as Sleuth, not as a table
        load_experiments(write_text(tmp_path, "1\t2\t3\n", "b.txt"))


@needs_data
def test_load_several_files_concatenates(tmp_path):
    table = write_csv(tmp_path, frame())
    s = load_experiments([FINGER, table, PAIN])
    assert s.n_experiments == 73 + 3 + 21
    assert s.n_foci == 654 + 5 + 267
    with pytest.raises(InputError, match="more than one input file"):
        load_experiments([table, table])
