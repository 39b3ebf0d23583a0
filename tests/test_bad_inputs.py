"""A catalogue of bad inputs, each with the message the user sees.

Every case runs the command line (``alemap.cli.main.main``) or the reader a
user would call, and checks the exit status and the key parts of the one
``alemap: error: ...`` line (file, line, problem, fix). Cases the readers'
own tests already cover line by line (``tests/test_io_*.py``,
``tests/test_project_file.py``) appear here only where the command line adds
something (the exit status, no traceback, nothing computed).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _projects import write_project
from alemap import ALE
from alemap.cli.main import main
from alemap.data import ExperimentSet, FocusOrigin
from alemap.designs import ProjectError, load_project
from alemap.exceptions import InputError
from alemap.io import load_experiments, read_nimare_json, read_sleuth, read_table

SLEUTH = "// Reference=MNI\n// A, 2000: x\n// Subjects=10\n-38 -24 56\n-36 -22 54\n"
CSV = "study,subjects,x,y,z,space\nA,10,-38,-24,56,MNI\nA,10,-36,-22,54,MNI\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FAST = ["--quiet", "--no-report", "--iterations", "0"]


@contextlib.contextmanager
def time_budget(seconds: float):
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    class Hang(BaseException):
        pass

    def alarm(signum, frame):
        raise Hang

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang:
        pytest.fail(f"ran past its {seconds} s budget (a hang)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err


def cli_error(capsys, *argv) -> str:
    """Run the command line; it must fail with exit status 2 and one ``alemap: error:`` line (returned)."""
    rc, err = cli(capsys, *argv)
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("alemap: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def ale_error(capsys, inp, tmp_path, *extra) -> str:
    return cli_error(capsys, "ale", inp, "-o", tmp_path / "out", *FAST, *extra)


def result_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*")) if folder.exists() else []


# ---------------------------------------------------------------- empty files
@pytest.mark.parametrize("name, expected", [
    ("foci.txt", "the file is empty; a Sleuth file starts with '// Reference=MNI'."),
    ("foci.csv", "the file is empty; row 1 must name the columns (study, subjects, x, y, z, ...)."),
    ("foci.json", "the file is empty; a NiMARE dataset is a JSON object of studies and their contrasts."),
    ("foci.xlsx", "the file is empty; save the table again from the spreadsheet program."),
])
def test_empty_file(tmp_path, capsys, name, expected):
    path = write(tmp_path, name, b"")
    assert ale_error(capsys, path, tmp_path) == f"alemap: error: {path}: {expected}"
    assert result_files(tmp_path / "out") == []  # nothing computed, nothing written


def test_empty_project_file(tmp_path, capsys):
    path = write(tmp_path, "project.yaml", "")
    err = cli_error(capsys, "run", path, "-o", tmp_path / "out", "--quiet")
    assert err == (f"alemap: error: {path}:0: inputs: at least one input file is required, "
                   "e.g. 'inputs: [foci.txt]'")


# ---------------------------------------------------------------- binary files
@pytest.mark.parametrize("name", ["foci.txt", "foci.csv", "foci.tsv", "foci.json", "foci.sleuth"])
def test_binary_file(tmp_path, capsys, name):
    path = write(tmp_path, name, PNG)
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}: not a text file (binary content that is neither UTF-8 nor Latin-1 text); "
        "export the foci as plain text (UTF-8).")


def test_binary_file_named_xlsx(tmp_path, capsys):
    path = write(tmp_path, "foci.xlsx", PNG)
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}: not a readable Excel file (its content is not a zip archive, as a .xlsx file "
        "must be); save it again as .xlsx, or export it as .csv.")


def test_binary_project_file(tmp_path, capsys):
    path = write(tmp_path, "project.yaml", PNG)
    err = cli_error(capsys, "run", path, "-o", tmp_path / "out", "--quiet")
    assert err == f"alemap: error: {path}: not UTF-8 text (invalid start byte); save the project file as UTF-8."


# ---------------------------------------------------------------- encodings
def test_latin1_sleuth_is_read(tmp_path):
    path = write(tmp_path, "foci.txt", SLEUTH.replace("A, 2000", "M\u00fcller, 2000").encode("latin-1"))
    assert read_sleuth(path).names == ("M\u00fcller, 2000: x",)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_utf16_and_bom_tables_read_like_utf8(tmp_path, encoding):
    """Excel's 'Unicode text' is UTF-16 with a BOM; BOM-less UTF-16 is recognised by its zero bytes."""
    plain = read_table(write(tmp_path, "plain.csv", CSV))
    other = read_table(write(tmp_path, "other.csv", CSV.replace("A,", "\u00c5,").encode(encoding)))
    assert other.names == ("\u00c5",)
    np.testing.assert_array_equal(other.xyz, plain.xyz)


def test_invalid_utf8_falls_back_to_windows_1252_and_bad_bytes_are_located(tmp_path, capsys):
    """Bytes that are not UTF-8 are read as Windows-1252 (a name stays readable, a number does not)."""
    name_only = write(tmp_path, "names.txt", SLEUTH.encode().replace(b"A, 2000", b"Caf\xe9, 2000"))
    assert read_sleuth(name_only).names == ("Caf\u00e9, 2000: x",)
    in_number = write(tmp_path, "numbers.txt", SLEUTH.encode().replace(b"-36", b"-3\xff6"))
    assert ale_error(capsys, in_number, tmp_path) == (
        f"alemap: error: {in_number}:5: coordinate '-3\u00ff6' in '-3\u00ff6 -22 54' is not a number; header lines "
        "must start with '//', foci must be three numbers.")


def test_project_file_not_utf8(tmp_path, capsys):
    path = write_project(tmp_path, "name: Caf\u00e9\ninputs: [motor_learning.tsv]\nanalyses: {a: {}}\n")
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    err = cli_error(capsys, "run", path, "-o", tmp_path / "out", "--quiet")
    assert err == (f"alemap: error: {path.resolve()}: not UTF-8 text (invalid continuation byte); "
                   "save the project file as UTF-8.")


# ---------------------------------------------------------------- line ends
@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends_read_like_lf(tmp_path, end):
    for name, text, reader in (("foci.txt", SLEUTH, read_sleuth), ("foci.csv", CSV, read_table)):
        lf = reader(write(tmp_path, "lf_" + name, text))
        other = reader(write(tmp_path, "other_" + name, text.replace("\n", end)))
        assert other.names == lf.names
        np.testing.assert_array_equal(other.xyz, lf.xyz)
        assert [o.line for o in other.origins] == [o.line for o in lf.origins]  # line numbers survive


def test_crlf_json_and_project_files(tmp_path):
    data = {"s": {"contrasts": {"c": {"coords": {"space": "MNI", "x": [1], "y": [2], "z": [3]},
                                      "metadata": {"sample_sizes": [10]}}}}}
    path = write(tmp_path, "d.json", json.dumps(data, indent=1).replace("\n", "\r\n"))
    assert read_nimare_json(path).names == ("s-c",)
    proj = write_project(tmp_path, "inputs: [motor_learning.tsv]\nanalyses:\n  a: {iterations: 32}\n")
    proj.write_bytes(proj.read_bytes().replace(b"\n", b"\r\n"))
    assert list(load_project(proj).analyses) == ["a"]


# ---------------------------------------------------------------- NaN, infinite, huge coordinates
@pytest.mark.parametrize("value, problem", [
    ("nan", "is NaN or infinite; give finite mm values."),
    ("-inf", "is NaN or infinite; give finite mm values."),
    ("1e999", "is NaN or infinite; give finite mm values."),
    ("1e308", "is implausibly large (beyond +-10000 mm); give MNI or Talairach coordinates in mm."),
    ("-20000", "is implausibly large (beyond +-10000 mm); give MNI or Talairach coordinates in mm."),
])
def test_bad_coordinates_in_sleuth(tmp_path, capsys, value, problem):
    path = write(tmp_path, "foci.txt", SLEUTH.replace("-36 -22 54", f"{value} -22 54"))
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}:5: coordinate {value!r} in '{value} -22 54' {problem}")


@pytest.mark.parametrize("value, problem", [
    ("NaN", "is NaN or infinite; enter a finite number."),
    ("1e308", "is implausibly large (beyond +-10000 mm); give MNI or Talairach coordinates in mm."),
])
def test_bad_coordinates_in_a_table(tmp_path, capsys, value, problem):
    path = write(tmp_path, "foci.csv", CSV.replace("-36,-22,54", f"-36,{value},54"))
    assert ale_error(capsys, path, tmp_path) == f"alemap: error: {path}:3: column 'y' value {value!r} {problem}"


@pytest.mark.parametrize("literal, shown, problem", [
    ("NaN", "nan", "is not a finite number; fix the value."),
    ("1e400", "inf", "is not a finite number; fix the value."),
    ("1" + "0" * 400, "an integer of 401 digits", "is not a finite number; fix the value."),
    ("1e308", "1e+308", "is implausibly large (beyond +-10000 mm); give MNI or Talairach coordinates in mm."),
])
def test_bad_coordinates_in_json(tmp_path, capsys, literal, shown, problem):
    text = ('{"s": {"contrasts": {"c": {"coords": {"space": "MNI", "x": [%s], "y": [1], "z": [1]}, '
            '"metadata": {"sample_sizes": [10]}}}}}' % literal)
    path = write(tmp_path, "d.json", text)
    assert ale_error(capsys, path, tmp_path) == f"alemap: error: {path}#s/c: coords.x[0] = {shown} {problem}"


def test_bad_coordinates_from_python(tmp_path):
    def one(xyz):
        return ExperimentSet.from_records([{"name": "a", "study": "a", "n_subjects": 10, "space": "MNI",
                                            "xyz": [xyz], "origins": [FocusOrigin("mine.csv", 7)]}])

    with pytest.raises(InputError, match=r"^mine\.csv:7: coordinate is not a finite number; fix or remove it\.$"):
        ALE(iterations=0, quiet=True).fit(one([np.nan, 0, 0]))
    with pytest.raises(InputError) as info:
        ALE(iterations=0, quiet=True).fit(one([1e308, 0, 0]))
    assert str(info.value) == ("mine.csv:7: coordinate (1e+308, 0.0, 0.0) is implausibly large (beyond +-10000 mm); "
                               "give MNI or Talairach coordinates in mm.")


# ---------------------------------------------------------------- outside the template
def test_foci_outside_the_template_are_reported_not_dropped_silently(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", SLEUTH + "300 0 0\n\n// B, 2001: y\n// Subjects=12\n0 0 -200\n")
    out = tmp_path / "out"
    rc, err = cli(capsys, "ale", path, "-o", out, "--no-report", "--iterations", "0")
    assert rc == 0
    assert "alemap: 2 focus/foci excluded; see provenance.json." in err
    prov = json.loads((out / "provenance.json").read_text())
    assert [(e["origin"], e["reason"]) for e in prov["excluded_foci"]] == [
        (f"{path}:6", "outside the template's bounding box"), (f"{path}:10", "outside the template's bounding box")]
    assert prov["excluded_experiments"] == [{"experiment": "B, 2001: y", "reason": "no focus left inside the template"}]
    assert prov["counts"] == {**prov["counts"], "experiments_input": 2, "experiments_used": 1, "foci_used": 2}


def test_all_foci_outside_the_template(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", "// Reference=MNI\n// A, 2000: x\n// Subjects=10\n300 0 0\n")
    assert ale_error(capsys, path, tmp_path) == (
        "alemap: error: No experiment has a focus inside the template; check the coordinates' space.")


# ---------------------------------------------------------------- duplicated experiments
def test_same_experiment_name_twice_in_one_file(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", SLEUTH + "\n" + SLEUTH[len("// Reference=MNI\n"):])
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}:7: experiment name 'A, 2000: x' is used twice (lines 2 and 7); "
        "make the names unique, for example by adding the contrast after the ':'.")


def test_same_file_given_twice(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", SLEUTH)
    assert cli_error(capsys, "ale", path, path, "-o", tmp_path / "out", *FAST) == (
        "alemap: error: Experiment 'A, 2000: x' appears in more than one input file; rename one of them.")


def test_identical_experiments_under_two_names_warn(tmp_path):
    """Run as a user would (a subprocess: pytest records warnings instead of printing them)."""
    copy = SLEUTH[len("// Reference=MNI\n"):].replace("A, 2000: x", "A, 2000: x (copy)")
    path = write(tmp_path, "foci.txt", SLEUTH + "\n" + copy)
    done = subprocess.run([sys.executable, "-m", "alemap.cli.main", "ale", str(path), "-o", str(tmp_path / "out"),
                           *FAST], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "alemap: warning: 1 experiment(s) repeat another experiment exactly (same subjects, space and foci): "
        "'A, 2000: x' = 'A, 2000: x (copy)'. ALE counts each copy as an independent experiment; delete copies "
        "that are the same experiment listed twice."]
    with pytest.warns(UserWarning, match="repeat another experiment exactly"):  # and Python sees a warning
        ALE(iterations=0, quiet=True).place(load_experiments(path))


def test_json_key_repeated_in_one_object(tmp_path, capsys):
    c = '{"coords": {"space": "MNI", "x": [1], "y": [1], "z": [1]}, "metadata": {"sample_sizes": [9]}}'
    path = write(tmp_path, "d.json", '{"s": {"contrasts": {"1": %s, "1": %s}}}' % (c, c))
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}: key '1' appears twice in one JSON object; JSON keeps only the last, so the first "
        "one's foci would be lost. Rename or merge them.")


# ---------------------------------------------------------------- size
def _mm(n: int, seed: int = 0) -> np.ndarray:
    from alemap.space.grid import load_mni152_2mm

    grid = load_mni152_2mm()
    rng = np.random.default_rng(seed)
    return grid.ijk_to_mm(grid.mask_ijk[rng.integers(0, grid.n_voxels, n)])


def test_an_experiment_with_10000_foci(tmp_path):
    lines = ["// Reference=MNI", "// Big, 2000: all peaks", "// Subjects=20"]
    lines += ["%g\t%g\t%g" % tuple(p) for p in _mm(10_000)]
    lines += ["", "// Small, 2001: x", "// Subjects=12", "0 0 0"]
    path = write(tmp_path, "big.txt", "\n".join(lines) + "\n")
    t0 = time.perf_counter()
    experiments = load_experiments(path)
    parse_s = time.perf_counter() - t0
    result = ALE(iterations=0, quiet=True).fit(path)
    fit_s = time.perf_counter() - t0 - parse_s
    assert experiments.foci_counts.tolist() == [10_000, 1]
    assert result.provenance["counts"]["foci_used"] == 10_001
    assert 0.0 <= result.maps["ale"].min() and result.maps["ale"].max() <= 1.0
    assert parse_s < 10 and fit_s < 60, (parse_s, fit_s)  # measured: 0.2 s and 1.5 s


@pytest.mark.slow
def test_100000_tiny_experiments(tmp_path):
    """Decision: the readers take 100,000 experiments; memory is checked before a run starts.

    Measured (2 cores): parsing 5 s and 0.5 GB; ``alemap ale --iterations 0`` 65 s and
    0.71 GB (session 4). A plain ALE fit never holds
    the sparse MA maps (one pass for the ALE map and the null; the tables
    stream them), so ``alemap ale`` fits in well under 4 GiB; analyses that
    hold every MA map at once (contrasts, C-SALE: about 6 GiB here) are
    stopped before they start when they would not fit (``--max-memory``, or
    the machine's available memory). The fit itself is tested on a few of them.
    """
    from alemap._limits import ResourceLimitError, preflight
    from alemap.space.grid import load_mni152_2mm

    n = 100_000
    pts = _mm(n, seed=1)
    lines = ["// Reference=MNI"]
    for e in range(n):
        lines += [f"// E{e}, 2001: x", "// Subjects=12", "%g %g %g" % tuple(pts[e])]
    path = write(tmp_path, "many.txt", "\n".join(lines) + "\n")
    t0 = time.perf_counter()
    experiments = load_experiments(path)
    assert experiments.n_experiments == n and experiments.n_foci == n
    assert time.perf_counter() - t0 < 60
    with pytest.raises(ResourceLimitError) as info:
        preflight(experiments, load_mni152_2mm(), jobs=2, iterations=10000, outdir=tmp_path / "out",
                  max_memory=4 * 2**30, quiet=True)
    msg = str(info.value)
    assert msg.startswith("this analysis needs about ") and "(100,000 experiments, 100,000 foci)" in msg
    assert msg.endswith("that is more than --max-memory 4.0 GiB. Nothing was computed. Raise --max-memory if the "
                        "machine has the memory, or split the analysis into smaller ones (fewer experiments), "
                        "or use a smaller mask.")
    assert preflight(experiments, load_mni152_2mm(), jobs=2, iterations=10000, outdir=tmp_path / "out",
                     max_memory=4 * 2**30, quiet=True, full_ma=False) == 2  # alemap ale
    few = ALE(iterations=0, quiet=True).fit(experiments.select(np.arange(20)))
    assert few.provenance["counts"]["experiments_used"] == 20


# ---------------------------------------------------------------- sample sizes
@pytest.mark.parametrize("value, problem", [
    ("0", "must be positive"), ("-4", "must be positive"), ("12.5", "is not a whole number"),
    ("1e30", "is implausibly large"), ("twelve", "is not a number"),
])
def test_bad_sample_size_in_sleuth(tmp_path, capsys, value, problem):
    path = write(tmp_path, "foci.txt", SLEUTH.replace("Subjects=10", f"Subjects={value}"))
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}:3: the number of subjects in '// Subjects={value}' {problem}; "
        "write a positive whole number of subjects, e.g. '// Subjects=12'.")


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "1e308"])
def test_bad_sample_size_in_a_table(tmp_path, capsys, value):
    path = write(tmp_path, "foci.csv", CSV.replace("A,10,-38", f"A,{value},-38"))
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}:2: column 'subjects' value {value!r} is not a positive whole number of subjects; "
        "enter the experiment's sample size, e.g. 12.")


@pytest.mark.parametrize("sizes, shown", [("[-5]", "-5"), ("[0]", "0"), ("[12.5]", "12.5"), ("[true]", "True"),
                                          ('["12"]', "'12'"), ("[10, null]", "None")])
def test_bad_sample_size_in_json(tmp_path, capsys, sizes, shown):
    text = ('{"s": {"contrasts": {"c": {"coords": {"space": "MNI", "x": [1], "y": [1], "z": [1]}, '
            '"metadata": {"sample_sizes": %s}}}}}' % sizes)
    path = write(tmp_path, "d.json", text)
    assert ale_error(capsys, path, tmp_path) == (
        f"alemap: error: {path}#s/c: metadata.sample_sizes value {shown} is not a positive whole number; fix it.")


def test_bad_sample_size_from_python():
    s = ExperimentSet.from_records([{"name": "a", "study": "a", "n_subjects": 0, "space": "MNI",
                                     "xyz": [[0, 0, 0]], "origins": [FocusOrigin("x", 1)]}])
    with pytest.raises(InputError, match=r"^Sample sizes must be positive; experiment\(s\) 'a' have 0\.$"):
        ALE(iterations=0, quiet=True).fit(s)


# ---------------------------------------------------------------- Talairach and MNI mixed
def test_talairach_and_mni_in_one_file_are_converted_per_experiment(tmp_path):
    """Handling: each experiment keeps the space its header declared; Talairach ones are converted with
    Lancaster 2007 (``tal2mni`` parameter, recorded in provenance) before placement; excluded foci are
    reported in their original space."""
    from alemap.space.transforms import tal2mni

    text = ("// Reference=Talairach\n// T, 2000: tal\n// Subjects=10\n-36 -20 50\n300 0 0\n\n"
            "// Reference=MNI\n// M, 2001: mni\n// Subjects=11\n-38 -24 56\n")
    path = write(tmp_path, "mixed.txt", text)
    assert read_sleuth(path).spaces == ("TAL", "MNI")
    est = ALE(iterations=0, quiet=True)
    placed = est.place(load_experiments(path))
    tal = placed.experiments.names.index("T, 2000: tal")
    np.testing.assert_allclose(placed.experiments.foci(tal), tal2mni(np.array([[-36.0, -20.0, 50.0]]), "other"))
    assert placed.experiments.spaces == ("MNI", "MNI")
    result = est.fit(path)
    assert result.provenance["parameters"]["tal2mni"] == "other"
    assert [(e["experiment"], e["space"], e["x"]) for e in result.provenance["excluded_foci"]] == [
        ("T, 2000: tal", "TAL", 300.0)]


def test_space_column_may_differ_between_experiments_not_within_one(tmp_path):
    ok = CSV + "B,12,-36,-20,50,Talairach\n"
    assert read_table(write(tmp_path, "ok.csv", ok)).spaces == ("MNI", "TAL")
    with pytest.raises(InputError, match=r"bad\.csv:2: column 'space' differs within experiment 'A'"):
        read_table(write(tmp_path, "bad.csv", CSV + "A,10,1,2,3,TAL\n"))


# ---------------------------------------------------------------- YAML with unsafe tags
@pytest.mark.parametrize("tag", [
    "!!python/name:os.system", "!!python/object/new:subprocess.Popen [[echo, hi]]", "!!python/module:os",
    "!!python/object:alemap.estimator.ALE {}", "!include other.yaml",
])
def test_yaml_unsafe_tags_are_rejected(tmp_path, capsys, monkeypatch, tag):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    path = write_project(tmp_path, f"inputs: [motor_learning.tsv]\nanalyses:\n  a: {tag}\n")
    err = cli_error(capsys, "run", path, "-o", tmp_path / "out", "--quiet")
    name = tag.split()[0].lstrip("!")
    assert err.startswith(f"alemap: error: {path.resolve()}:3: not valid YAML for a project file: "
                          "could not determine a constructor for the tag ")
    assert name.split(":")[-1] in err
    assert calls == [] and not (tmp_path / "out").exists()


def test_yaml_alias_bomb_is_rejected_quickly(tmp_path):
    """Aliases share nodes: a 'billion laughs' document (9^9 leaves) is checked in linear time."""
    lines = ["inputs: [motor_learning.tsv]", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = write_project(tmp_path, "\n".join(lines) + "\nanalyses: {x: {}}\n")
    with time_budget(3):
        with pytest.raises(ProjectError, match="unknown key 'a0'"):
            load_project(path)


def test_a_list_where_a_group_name_belongs(tmp_path):
    """Found by tests/test_fuzz.py: a YAML list where a group name belongs was a TypeError."""
    path = write_project(tmp_path, "inputs: [motor_learning.tsv]\nanalyses:\n  seq: {group: []}\n")
    with pytest.raises(ProjectError, match=r"analyses\.seq\.group: 'group' must be one group name, got list"):
        load_project(path)


# ---------------------------------------------------------------- names that try to leave the output folder
@pytest.mark.parametrize("name", ["a\u2215b", "a\u0000b", "CON\u002fx", " lead", "\u2024\u2024"])
def test_lookalike_and_control_characters_in_analysis_names(tmp_path, name):
    """Only ASCII letters, digits, '_', '-', '.' make a folder name: lookalike slashes and dots are refused."""
    path = write_project(tmp_path, "inputs: [motor_learning.tsv]\nanalyses:\n  %s: {}\n" % json.dumps(name))
    with pytest.raises(ProjectError, match=r"must be letters, digits, '_', '-' or '\.' \(it becomes a folder name"):
        load_project(path)


def test_output_folder_inside_a_file(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", SLEUTH)
    err = cli_error(capsys, "ale", path, "-o", path / "out", *FAST)
    assert err == (f"alemap: error: cannot write in the output folder {path / 'out'} (Not a directory). "
                   "Nothing was computed. Choose another folder with -o, or fix its permissions.")


# ---------------------------------------------------------------- directories, missing files, pipes
def test_directory_given_as_input(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    err = ale_error(capsys, folder, tmp_path)
    assert err.startswith(f"alemap: error: {folder}: not a NeuroStore studyset")
    assert err.endswith("to read a single foci file, give its path instead of the folder.")
    assert cli_error(capsys, "run", folder, "-o", tmp_path / "o", "--quiet") == (
        f"alemap: error: {folder}: Is a directory; this is a folder; give a file.")
    mask_err = ale_error(capsys, write(tmp_path, "foci.txt", SLEUTH), tmp_path, "--mask", folder)
    assert mask_err.startswith(f"alemap: error: Mask file '{folder}' could not be read as NIfTI")


def test_missing_files(tmp_path, capsys):
    assert ale_error(capsys, tmp_path / "nope.csv", tmp_path) == (
        f"alemap: error: {tmp_path / 'nope.csv'}: file not found; check the path and the working directory.")
    assert cli_error(capsys, "run", tmp_path / "nope.yaml", "-o", tmp_path / "o", "--quiet") == (
        f"alemap: error: Project file '{tmp_path / 'nope.yaml'}' does not exist.")
    assert ale_error(capsys, write(tmp_path, "foci.txt", SLEUTH), tmp_path, "--mask", tmp_path / "m.nii.gz") == (
        f"alemap: error: Mask file '{tmp_path / 'm.nii.gz'}' does not exist; pass an existing NIfTI mask or omit "
        "it to use MNI152 2 mm.")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "foci.txt"
    os.mkfifo(fifo)
    with time_budget(20):
        err = ale_error(capsys, fifo, tmp_path)
    assert err == (f"alemap: error: {fifo}: not a regular file (a pipe or a device?); save the foci to a file "
                   "and give its path.")


# ---------------------------------------------------------------- permissions
@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root (as on CI) may write anywhere")
def test_write_protected_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        err = cli_error(capsys, "ale", write(tmp_path, "foci.txt", SLEUTH), "-o", out, *FAST)
    finally:
        out.chmod(stat.S_IRWXU)
    assert err == (f"alemap: error: cannot write in the output folder {out} (Permission denied). Nothing was "
                   "computed. Choose another folder with -o, or fix its permissions.")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir() or os.access("/sys", os.W_OK) and not IS_ROOT,
                    reason="needs a Linux /sys (read-only even for root)")
def test_output_folder_on_a_read_only_file_system(tmp_path, capsys):
    out = Path("/sys/alemap-test-output")
    err = cli_error(capsys, "ale", write(tmp_path, "foci.txt", SLEUTH), "-o", out, *FAST)
    assert err.startswith(f"alemap: error: cannot write in the output folder {out} (")
    assert err.endswith("). Nothing was computed. Choose another folder with -o, or fix its permissions.")


@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root may read anything")
def test_unreadable_input(tmp_path, capsys):
    path = write(tmp_path, "foci.txt", SLEUTH)
    path.chmod(0)
    try:
        err = ale_error(capsys, path, tmp_path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert err == f"alemap: error: {path}: cannot be read (Permission denied); check the file's permissions."
