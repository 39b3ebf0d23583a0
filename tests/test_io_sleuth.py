"""Sleuth / GingerALE text reader: real files, format variants, every error path, properties."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError, ParameterError
from alemap.io import load_experiments, read_sleuth
from alemap.io.sleuth import parse_sleuth, study_key

DATA = Path("/work/shared/data/eickhoff2009-finger-tapping")
FINGER = DATA / "EickhoffHBM09.txt"
TASTE = DATA / "Taste.txt"
needs_data = pytest.mark.skipif(not FINGER.exists(), reason="shared sample data not available")

CLEAN = """// Reference=MNI
// Doe J, 2011: Words > Rest
// Subjects=14
-44\t12\t24
-38\t20\t20

// Roe K, 2015: Pictures > Rest
// Subjects=22
40\t-60\t-12
"""


def write(tmp_path: Path, text: str | bytes, name: str = "foci.txt") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def assert_same_content(a: ExperimentSet, b: ExperimentSet) -> None:
    """Everything but the origins (line numbers move with blank-line noise)."""
    assert a.names == b.names
    assert a.studies == b.studies
    assert a.spaces == b.spaces
    np.testing.assert_array_equal(a.n_subjects, b.n_subjects)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.xyz, b.xyz)


# ---------------------------------------------------------------- real data
@needs_data
def test_finger_tapping_file():
    s = read_sleuth(FINGER)
    assert (s.n_experiments, s.n_foci) == (73, 654)
    assert s.names[0] == "Aoki T, 2005: Index Finger - Rest"
    assert s.studies[0] == "Aoki T, 2005"
    assert s.n_subjects[0] == 10
    np.testing.assert_array_equal(s.foci(0), [[-36, -28, 58]])
    assert s.origins[0] == FocusOrigin(str(FINGER), 4)
    assert set(s.spaces) == {"MNI"}
    assert np.all(s.n_subjects > 0) and np.all(s.foci_counts > 0)
    # a name split over two header lines is joined with one space
    assert "Riecker A, 2006: Main Effects During Index Finger Movements, Younger Subjects" in s.names


@needs_data
def test_taste_file():
    s = read_sleuth(TASTE)
    assert (s.n_experiments, s.n_foci) == (86, 521)
    assert len(set(s.names)) == 86
    assert "Plassmann H, 2008:" in s.names  # empty contrast after the colon


@needs_data
def test_load_experiments_dispatches_txt_to_sleuth():
    s = load_experiments(FINGER)
    assert (s.n_experiments, s.n_foci) == (73, 654)
    both = load_experiments([FINGER, TASTE])
    assert (both.n_experiments, both.n_foci) == (73 + 86, 654 + 521)


# ---------------------------------------------------------------- clean file
def test_clean_file(tmp_path):
    path = write(tmp_path, CLEAN)
    s = read_sleuth(path)
    assert s.names == ("Doe J, 2011: Words > Rest", "Roe K, 2015: Pictures > Rest")
    assert s.studies == ("Doe J, 2011", "Roe K, 2015")
    assert s.spaces == ("MNI", "MNI")
    np.testing.assert_array_equal(s.n_subjects, [14, 22])
    np.testing.assert_array_equal(s.offsets, [0, 2, 3])
    np.testing.assert_array_equal(s.xyz, [[-44, 12, 24], [-38, 20, 20], [40, -60, -12]])
    assert [o.line for o in s.origins] == [4, 5, 9]
    assert all(o.source == str(path) for o in s.origins)


VARIANTS = {
    "crlf": CLEAN.replace("\n", "\r\n"),
    "cr_only": CLEAN.replace("\n", "\r"),
    "spaces": CLEAN.replace("\t", " "),
    "many_spaces": CLEAN.replace("\t", "    "),
    "commas": CLEAN.replace("\t", ", "),
    "bare_commas": CLEAN.replace("\t", ","),
    "mixed_separators": CLEAN.replace("-44\t12\t24", "-44 ,\t12   24"),
    "bom": "\ufeff" + CLEAN,
    "trailing_whitespace": CLEAN.replace("\n", " \t \n"),
    "leading_whitespace": CLEAN.replace("\n", "\n  "),
    "blank_lines_everywhere": CLEAN.replace("\n", "\n\n \n\t\n"),
    "trailing_blank_lines": CLEAN + "\n\n   \n\n",
    "no_final_newline": CLEAN.rstrip("\n"),
    "no_blank_between": CLEAN.replace("\n\n", "\n"),
    "key_spelling": CLEAN.replace("// Reference=MNI", "//reference = mni")
    .replace("// Subjects=14", "//SUBJECTS = 14")
    .replace("// Subjects=22", "// subjects=22.0"),
    "mni152": CLEAN.replace("Reference=MNI", "Reference=MNI152"),
    "extra_header_line": CLEAN.replace("// Doe J, 2011: Words > Rest", "// Doe J, 2011: Words\n// > Rest"),
    "comment_before_reference": "// exported by Sleuth 3.0.4\n" + CLEAN,
    "decimals": CLEAN.replace("-44\t12\t24", "-44.0\t12.00\t+24"),
    "unicode_minus": CLEAN.replace("-44", "\u221244"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_parse_like_clean_file(tmp_path, variant):
    clean = read_sleuth(write(tmp_path, CLEAN, "clean.txt"))
    other = read_sleuth(write(tmp_path, VARIANTS[variant], "variant.txt"))
    assert_same_content(clean, other)


def test_crlf_and_bom_keep_line_numbers(tmp_path):
    s = read_sleuth(write(tmp_path, "\ufeff" + CLEAN.replace("\n", "\r\n")))
    assert [o.line for o in s.origins] == [4, 5, 9]


def test_latin1_file_is_read(tmp_path):
    text = CLEAN.replace("Doe J", "M\u00fcller J")
    s = read_sleuth(write(tmp_path, text.encode("latin-1")))
    assert s.names[0] == "M\u00fcller J, 2011: Words > Rest"


def test_cp1252_apostrophe_is_read(tmp_path):
    text = CLEAN.replace("Doe J", "O\u2019Doherty J")
    s = read_sleuth(write(tmp_path, text.encode("cp1252")))
    assert s.names[0].startswith("O\u2019Doherty J")


def test_reference_can_change_mid_file(tmp_path):
    text = CLEAN.replace("// Roe K", "// Reference=Talairach\n// Roe K") + "\n// Reference = TAL\n// Poe, 2001: A\n// Subjects=5\n1 2 3\n"
    text += "// Reference=MNI\n// Zoe, 2002: B\n// Subjects=6\n4 5 6\n"
    s = read_sleuth(write(tmp_path, text))
    assert s.spaces == ("MNI", "TAL", "TAL", "MNI")


def test_coordinates_are_not_converted(tmp_path):
    s = read_sleuth(write(tmp_path, CLEAN.replace("MNI", "Talairach")))
    assert s.spaces == ("TAL", "TAL")
    np.testing.assert_array_equal(s.foci(1), [[40, -60, -12]])


def test_blank_lines_inside_an_experiment_are_ignored(tmp_path):
    text = "// Reference=MNI\n// A, 2000: x\n\n// Subjects=3\n1 2 3\n\n4 5 6\n"
    s = read_sleuth(write(tmp_path, text))
    assert s.names == ("A, 2000: x",)
    np.testing.assert_array_equal(s.foci_counts, [2])
    assert [o.line for o in s.origins] == [5, 7]


def test_space_argument_is_a_fallback(tmp_path):
    body = CLEAN.replace("// Reference=MNI\n", "")
    s = read_sleuth(write(tmp_path, body), space="Talairach")
    assert s.spaces == ("TAL", "TAL")
    s = read_sleuth(write(tmp_path, CLEAN), space="TAL")  # the file's own line wins
    assert s.spaces == ("MNI", "MNI")
    with pytest.raises(ParameterError):
        read_sleuth(write(tmp_path, CLEAN), space="SPM")


@pytest.mark.parametrize(
    ("name", "study"),
    [
        ("Aoki T, 2005: Index Finger - Rest", "Aoki T, 2005"),
        ("Smith, 2005a: A; B: C", "Smith, 2005a"),
        ("Lee; 1999: A", "Lee; 1999"),  # split after the year, not at the first ';'
        ("Lee: Foo 2001", "Lee"),  # no ':' after the year -> first ':'
        ("Study one; contrast", "Study one"),
        ("Plain name 2003", "Plain name 2003"),
        ("Case 12001: x", "Case 12001"),  # 12001 is not a year -> first ':'
        (": odd", ": odd"),  # empty key falls back to the whole name
    ],
)
def test_study_key(name, study):
    assert study_key(name) == study


# ---------------------------------------------------------------- errors
ERRORS = {
    "two_numbers": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n1 2\n", 5, "exactly 3 numbers"),
    "four_numbers": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3 4\n", 4, "'1 2 3 4'"),
    "decimal_commas": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1,5 2,5 3,5\n", 4, "exactly 3 numbers"),
    "word": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 two 3\n", 4, "'two'"),
    "nan": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\nNaN 2 3\n", 5, "NaN or infinite"),
    "inf": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 -inf 3\n", 4, "NaN or infinite"),
    "overflow": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1e999 2 3\n", 4, "NaN or infinite"),
    "header_without_slashes": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\nB, 2001: y\n", 5, "'B, 2001: y'"),
    "missing_subjects": ("// Reference=MNI\n\n// A, 2000: x\n1 2 3\n", 3, "// Subjects="),
    "subjects_zero": ("// Reference=MNI\n// A, 2000: x\n// Subjects=0\n1 2 3\n", 3, "positive"),
    "subjects_negative": ("// Reference=MNI\n// A, 2000: x\n// Subjects=-4\n1 2 3\n", 3, "positive"),
    "subjects_fraction": ("// Reference=MNI\n// A, 2000: x\n// Subjects=12.5\n1 2 3\n", 3, "whole number"),
    "subjects_word": ("// Reference=MNI\n// A, 2000: x\n// Subjects=twelve\n1 2 3\n", 3, "'// Subjects=twelve'"),
    "subjects_empty": ("// Reference=MNI\n// A, 2000: x\n// Subjects=\n1 2 3\n", 3, "not a number"),
    "subjects_without_name": ("// Reference=MNI\n// Subjects=10\n1 2 3\n", 2, "no experiment name"),
    "no_foci_next_header": (
        "// Reference=MNI\n// A, 2000: x\n// Subjects=3\n\n// B, 2001: y\n// Subjects=4\n1 2 3\n", 2, "no foci"),
    "no_foci_at_end": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n// B, 2001: y\n// Subjects=4\n\n", 5, "no foci"),
    "header_at_end": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n\n// B, 2001: y\n", 6, "Subjects"),
    "foci_before_header": ("// Reference=MNI\n\n1 2 3\n// A, 2000: x\n// Subjects=3\n1 2 3\n", 3, "before any experiment"),
    "foci_first_line": ("1 2 3\n", 1, "before any experiment"),
    "no_reference": ("// A, 2000: x\n// Subjects=3\n1 2 3\n", 1, "// Reference=MNI"),
    "reference_too_late": ("// A, 2000: x\n// Subjects=3\n1 2 3\n// Reference=MNI\n", 1, "// Reference=MNI"),
    "unknown_reference": ("// Reference=SPM99\n// A, 2000: x\n// Subjects=3\n1 2 3\n", 1, "Talairach"),
    "empty_reference": ("// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n// Reference=\n", 5, "MNI"),
    "duplicate_names": (
        "// Reference=MNI\n// A, 2000: x\n// Subjects=3\n1 2 3\n\n// A, 2000: x\n// Subjects=3\n4 5 6\n", 6, "lines 2 and 6"),
    "only_reference": ("// Reference=MNI\n\n", 1, "no experiments"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_file_line_and_problem(tmp_path, case):
    text, line, fragment = ERRORS[case]
    path = write(tmp_path, text, "bad_foci.txt")
    with pytest.raises(InputError) as info:
        read_sleuth(path)
    message = str(info.value)
    assert f"bad_foci.txt:{line}:" in message
    assert fragment in message


def test_error_line_numbers_survive_crlf_and_bom(tmp_path):
    text, line, _ = ERRORS["two_numbers"]
    path = write(tmp_path, "\ufeff" + text.replace("\n", "\r\n"), "bad_foci.txt")
    with pytest.raises(InputError, match=f"bad_foci.txt:{line}:"):
        read_sleuth(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\ufeff"])
def test_empty_file(tmp_path, content):
    with pytest.raises(InputError, match=r"empty\.txt.*empty"):
        read_sleuth(write(tmp_path, content, "empty.txt"))


def test_binary_file(tmp_path):
    path = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "image.txt")
    with pytest.raises(InputError, match=r"image\.txt.*not a text file"):
        read_sleuth(path)


def test_undecodable_control_bytes(tmp_path):
    path = write(tmp_path, b"// Reference=MNI\n\x81\x8d\x90\x9d\x01\x02", "ctrl.txt")
    with pytest.raises(InputError, match=r"ctrl\.txt.*not a text file"):
        read_sleuth(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.txt.*not found"):
        read_sleuth(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="directory"):
        read_sleuth(tmp_path)


# ---------------------------------------------------------------- properties
_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789>-+()&", min_size=1, max_size=8)
_SURNAMES = ["Aoki", "Doe", "Roe", "Li", "Van Essen", "O'Neil", "Mueller-Lyer"]
REFERENCE_SPELLINGS = {"MNI": ["MNI", "mni", " MNI152"], "TAL": ["Talairach", "TAL", "tal ", "TALAIRACH"]}
_PADS, _BLANKS = ["", "", " ", "\t", "  "], ["", " ", "\t", "  \t "]
_SEPS = ["\t", " ", "   ", ",", ", ", " ,\t"]


@st.composite
def experiment_names(draw):
    author = draw(st.sampled_from(_SURNAMES)) + "".join(" " + c for c in draw(st.text("ABCDEFGHJKLMNPRST", max_size=2)))
    year = draw(st.integers(1990, 2029))
    contrast = " ".join(draw(st.lists(_WORD, min_size=1, max_size=4)))
    return f"{author}, {year}: {contrast}"


def coordinate_text(value: int, rnd) -> str:
    """``value`` thousandths of a mm written with 0-3 decimals (or as an integer)."""
    digits = rnd.choice([0, 0, 1, 2, 3])
    return str(round(value / 1000)) if digits == 0 else f"{value / 1000:.{digits}f}"


def header_lines(name: str, n: int, rnd) -> list[str]:
    """Name (maybe split over two ``//`` lines) and a Subjects line, with noise."""

    def pad() -> str:
        return rnd.choice(_PADS)

    words = name.split(" ")
    cut = rnd.randint(1, len(words))
    lines = ["// " + " ".join(words[:cut]) + pad()]
    if cut < len(words):
        lines.append(pad() + "//" + pad() + " ".join(words[cut:]))
    key = rnd.choice(["Subjects", "subjects", "SUBJECTS"])
    return lines + [f"//{pad()}{key}{pad()}={pad()}{n}"]


@st.composite
def sleuth_documents(draw):
    """(text, expected records) for a random valid Sleuth file with noise."""
    rnd = draw(st.randoms(use_true_random=False))
    names = draw(st.lists(experiment_names(), min_size=1, max_size=6, unique=True))
    lines, expected, space = [], [], None
    for i, name in enumerate(names):
        if i == 0 or draw(st.booleans()):
            space = draw(st.sampled_from(["MNI", "TAL"]))
            pads = [rnd.choice(_PADS) for _ in range(3)]
            lines.append(f"//{pads[0]}Reference{pads[1]}={pads[2]}{rnd.choice(REFERENCE_SPELLINGS[space])}")
        lines += [rnd.choice(_BLANKS) for _ in range(rnd.randint(0 if i == 0 else 1, 2))]
        n = draw(st.integers(1, 400))
        lines += header_lines(name, n, rnd)
        values = draw(st.lists(st.tuples(*[st.integers(-120_000, 120_000)] * 3), min_size=1, max_size=6))
        foci = [[coordinate_text(v, rnd) for v in focus] for focus in values]
        for focus in foci:
            lines.append(rnd.choice(_PADS) + rnd.choice(_SEPS).join(focus) + rnd.choice(_PADS))
            lines += [rnd.choice(_BLANKS) for _ in range(rnd.randint(0, 1))]
        expected.append((name, n, space, [tuple(float(v) for v in f) for f in foci]))
    text = "".join(line + rnd.choice(["\n", "\r\n"]) for line in lines)
    return ("\ufeff" if rnd.random() < 0.3 else "") + text, expected


@settings(max_examples=150, deadline=None)
@given(sleuth_documents())
def test_random_valid_files_round_trip(document):
    text, expected = document
    s = parse_sleuth(text, "gen.txt")
    assert list(s.names) == [e[0] for e in expected]
    assert list(s.studies) == [e[0].split(":")[0] for e in expected]
    assert s.n_subjects.tolist() == [e[1] for e in expected]
    assert list(s.spaces) == [e[2] for e in expected]
    assert s.foci_counts.tolist() == [len(e[3]) for e in expected]
    np.testing.assert_array_equal(s.xyz, np.array([f for e in expected for f in e[3]]).reshape(-1, 3))
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").split("\n")
    for origin in s.origins:  # every origin points at a focus line
        assert lines[origin.line - 1].strip()[0] in "+-0123456789."


_FRAGMENTS = st.sampled_from(
    ["// Reference=MNI", "// Reference=TAL", "// Reference=?", "// A, 2001: x", "// B; y", "// Subjects=12",
     "// Subjects=0", "// Subjects=1.5", "//", "1 2 3", "1,2,3", "1 2", "nan 1 2", "4\t5\t6 7", "", "   ", "x y z"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=25).map("\n".join)))
def test_random_text_parses_or_raises_input_error(text):
    try:
        s = parse_sleuth(text, "garbage.txt")
    except InputError as err:
        assert "garbage.txt" in str(err)
    else:
        assert s.n_experiments > 0 and np.all(s.foci_counts > 0) and np.all(s.n_subjects > 0)


_SCRATCH = Path(tempfile.mkdtemp(prefix="alemap-io-"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_input_error(data):
    path = _SCRATCH / "bytes.txt"
    path.write_bytes(data)
    try:
        read_sleuth(path)
    except InputError as err:
        assert "bytes.txt" in str(err)
