"""Fuzz and property tests of every parser and of the command line.

Each parser (Sleuth text, CSV/TSV tables, XLSX, NiMARE JSON, project YAML)
gets generated and mutated inputs; for every one it must either return a
valid :class:`~alemap.data.ExperimentSet` (or a project) or raise
:class:`~alemap.exceptions.InputError` (``ProjectError`` is one) whose
message names the file. Any other exception fails the test, and so does an
example that runs past its time budget (:func:`time_budget`, a SIGALRM timer:
no hang). The command line on garbage files must exit with 2 and one
``alemap: error:`` message, never a traceback.

The targets (``fuzz_*``) take bytes, so ``scripts/fuzz_parsers.py`` reuses
them for a long campaign (atheris when installed, else Hypothesis with many
examples). ``ALEMAP_FUZZ_EXAMPLES`` scales the number of examples per test
(default: the CI values below).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alemap.data import ExperimentSet
from alemap.exceptions import InputError
from alemap.io import load_experiments, read_nimare_json, read_sleuth, read_table

#: Seconds one example may take before it counts as a hang.
BUDGET_S = float(os.environ.get("ALEMAP_FUZZ_BUDGET_S", "10"))
_SCALE = os.environ.get("ALEMAP_FUZZ_EXAMPLES")


def examples(default: int) -> int:
    """Examples per test: the CI default, or ``ALEMAP_FUZZ_EXAMPLES``."""
    return int(_SCALE) if _SCALE else default


def fuzz_settings(default: int):
    return settings(
        max_examples=examples(default), deadline=None, derandomize=_SCALE is None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------ the guard against hangs
class Hang(BaseException):
    """An example ran past its budget (a BaseException, so no ``except Exception`` can hide it)."""


@contextlib.contextmanager
def time_budget(seconds: float = BUDGET_S):
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"example ran past its {seconds} s budget")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ scratch folder and seed corpus
SCRATCH = Path(tempfile.mkdtemp(prefix="alemap-fuzz-"))
DEMO_TSV = Path(str(resources.files("alemap.resources.demo").joinpath("motor_learning.tsv")))
FINGER = Path(str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt")))
shutil.copyfile(DEMO_TSV, SCRATCH / "motor_learning.tsv")

SLEUTH_SEEDS = [
    b"// Reference=MNI\n// Doe J, 2011: Words > Rest\n// Subjects=14\n-44\t12\t24\n-38\t20\t20\n\n"
    b"// Roe K, 2015: Pictures > Rest\n// Subjects=22\n40\t-60\t-12\n",
    b"\xef\xbb\xbf// Reference=Talairach\r\n// A, 2000: x\r\n// Subjects=8\r\n1 2 3\r\n// Reference=MNI\r\n"
    b"// B, 2001: y\r\n// Subjects=9\r\n4,5,6\r\n",
    b"\n".join(FINGER.read_bytes().splitlines()[:60]) + b"\n",
]
CSV_SEED = (
    b"study,contrast,subjects,x,y,z,space,paradigm\n"
    b"Doe J 2011,Words,14,-44,12,24,MNI,reading\nDoe J 2011,Words,14,-38,20,20.5,MNI,reading\n"
    b"Roe K 2015,Pictures,22,40,-60,-12,Talairach,viewing\n"
)
JSON_SEED = json.dumps({
    "s1": {"contrasts": {"1": {"coords": {"space": "MNI", "x": [1, 2], "y": [3, 4], "z": [5, 6]},
                               "metadata": {"sample_sizes": [20]}}}},
    "s2": {"contrasts": {"a": {"coords": {"space": "TAL", "x": [-1.5], "y": [0], "z": [2]},
                               "metadata": {"sample_size": 15}}}},
}, indent=1).encode()
YAML_SEED = b"""name: fuzz
inputs: [motor_learning.tsv]
defaults: {iterations: 32, seed: 0}
pooling: warn
min_experiments: 5
groups:
  all: {}
  sequence: {tags: {paradigm: sequence}}
  sensorimotor: {tags: {paradigm: sensorimotor}}
analyses:
  seq: {type: ale, group: sequence}
  sm: {type: ale, group: sensorimotor, cluster_forming_p: 0.001}
  both: {type: conjunction, analyses: [seq, sm]}
  diff: {type: contrast, analyses: [seq, sm], permutations: 100}
"""

#: Tokens mutations insert: separators, line ends, encodings' marks, numbers at the edges.
TOKENS = [
    b"\x00", b"\r", b"\n", b"\r\n", b"\t", b",", b";", b'"', b"'", b"//", b"// Subjects=", b"// Reference=",
    b"Reference=TAL", b"nan", b"inf", b"-inf", b"1e308", b"1e309", b"-0", b"1e-320", b"99999999999999999999",
    b"\xef\xbb\xbf", b"\xff\xfe", b"\xe2\x88\x92", b"\xc3", b"\xe9", b"\x81", b"{", b"}", b"[", b"]", b":", b"- ",
    b"!!python/object/apply:os.system", b"&a", b"*a", b"<<: *a", b"null", b"true", b"~", b"%", b"\\", b"  ",
    b"0x10", b"1_000", b"12.5", b"-12", b"0",
]


@st.composite
def mutated(draw, seeds: list[bytes]):
    """A seed with 1-6 byte-level mutations (delete, insert, replace, duplicate a line, truncate)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "token", "replace", "dupline", "swaplines", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data))))
        if op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op in ("dupline", "swaplines"):
            lines = bytes(data).split(b"\n")
            i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            if op == "dupline":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


# ------------------------------------------------------------------ targets (bytes in)
def _write(data: bytes, name: str) -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


def _expect_experiments(call, path: Path):
    """Run a reader: an ExperimentSet that holds together, or InputError naming the file."""
    try:
        with time_budget():
            s = call()
    except InputError as err:
        assert path.name in str(err), f"message does not name the file: {err}"
        return None
    assert isinstance(s, ExperimentSet)
    assert s.n_experiments > 0 and np.all(s.foci_counts > 0) and np.all(s.n_subjects > 0)
    assert np.all(np.isfinite(s.xyz)) and len(s.origins) == s.n_foci
    assert len(set(s.names)) == s.n_experiments
    return s


def fuzz_sleuth(data: bytes):
    path = _write(data, "fuzz_foci.txt")
    return _expect_experiments(lambda: read_sleuth(path), path)


def fuzz_table(data: bytes, suffix: str = ".csv", space: str | None = None):
    path = _write(data, f"fuzz_table{suffix}")
    return _expect_experiments(lambda: read_table(path, space=space), path)


def fuzz_xlsx(data: bytes):
    path = _write(data, "fuzz_table.xlsx")
    return _expect_experiments(lambda: read_table(path), path)


def fuzz_nimare_json(data: bytes):
    path = _write(data, "fuzz_dset.json")
    return _expect_experiments(lambda: read_nimare_json(path), path)


def fuzz_load(data: bytes, suffix: str):
    path = _write(data, f"fuzz_any{suffix}")
    return _expect_experiments(lambda: load_experiments(path), path)


def fuzz_project(data: bytes):
    from alemap.designs import load_project

    path = _write(data, "fuzz_project.yaml")
    try:
        with time_budget():
            project = load_project(path)
    except InputError as err:  # ProjectError is one
        assert path.name in str(err), f"message does not name the file: {err}"
        return None
    assert project.analyses and project.inputs
    return project


# ------------------------------------------------------------------ Sleuth
@fuzz_settings(200)
@given(mutated(SLEUTH_SEEDS))
def test_sleuth_mutations_parse_or_raise_input_error(data):
    fuzz_sleuth(data)


@fuzz_settings(100)
@given(st.lists(st.sampled_from(TOKENS + [b"1 2 3", b"// A, 2000: x", b"// Subjects=12", b"\n"]), max_size=40))
def test_sleuth_token_soup(parts):
    fuzz_sleuth(b"// Reference=MNI\n" + b" ".join(parts))


@fuzz_settings(60)
@given(st.text(max_size=200), st.sampled_from(["utf-8", "utf-16", "utf-16-le", "latin-1", "cp1252"]))
def test_sleuth_any_text_in_any_encoding(text, encoding):
    data = ("// Reference=MNI\n// A, 2000: x\n// Subjects=10\n1 2 3\n" + text).encode(encoding, errors="replace")
    fuzz_sleuth(data)


# ------------------------------------------------------------------ tables
NASTY_CELLS = ["", " ", "nan", "NaN", "inf", "-inf", "1e308", "1e309", "-0", "0", "12", "12.0", "12.5", "-4",
               "1,5", "\u2212" + "38", "0x10", "1_000", "MNI", "TAL", "Talairach", "spm", "a,b", 'a"b', "\u00e9",
               "\t", "x" * 300, "99999999999999999999999"]
HEADERS = ["study", "study_id", "author", "experiment", "contrast", "subjects", "n", "sample_size", "x", "y", "z",
           "space", "reference", "paradigm", "Study", " X ", "sample-size", ""]


@st.composite
def tables(draw):
    """A delimited table: a plausible header and cells from :data:`NASTY_CELLS` or random text."""
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=9))
    if draw(st.booleans()):
        header = ["study", "subjects", "x", "y", "z", "space"] + header[:3]
    cell = st.one_of(st.sampled_from(NASTY_CELLS), st.text(max_size=12), st.integers(-200, 200).map(str))
    rows = draw(st.lists(st.lists(cell, min_size=len(header) - 1, max_size=len(header) + 1), max_size=12))
    sep = draw(st.sampled_from([",", "\t", ";"]))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    quote = draw(st.booleans())

    def fmt(c: str) -> str:
        return '"' + c.replace('"', '""') + '"' if quote and (sep in c or '"' in c or "\n" in c) else c

    text = end.join(sep.join(fmt(c) for c in row) for row in [header, *rows]) + end
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]))
    return text.encode(encoding, errors="replace"), {",": ".csv", "\t": ".tsv", ";": ".csv"}[sep]


@fuzz_settings(150)
@given(tables(), st.sampled_from([None, "MNI"]))
def test_tables_generated_parse_or_raise_input_error(table, space):
    data, suffix = table
    fuzz_table(data, suffix, space)


@fuzz_settings(150)
@given(mutated([CSV_SEED, CSV_SEED.replace(b",", b"\t"), CSV_SEED.replace(b",", b";")]), st.sampled_from([".csv", ".tsv", ".txt"]))
def test_table_mutations_parse_or_raise_input_error(data, suffix):
    fuzz_table(data, suffix)


@fuzz_settings(15)
@given(st.lists(st.lists(st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NASTY_CELLS[:25]),
    st.datetimes(min_value=pd.Timestamp("1990-01-01").to_pydatetime(), max_value=pd.Timestamp("2030-01-01").to_pydatetime()),
), min_size=6, max_size=6), min_size=0, max_size=6))
def test_xlsx_with_odd_cells_parses_or_raises_input_error(rows):
    buf = io.BytesIO()
    pd.DataFrame(rows, columns=["study", "subjects", "x", "y", "z", "space"]).to_excel(buf, index=False)
    fuzz_xlsx(buf.getvalue())


def _xlsx_seed() -> bytes:
    buf = io.BytesIO()
    pd.read_csv(io.BytesIO(CSV_SEED)).to_excel(buf, index=False)
    return buf.getvalue()


@fuzz_settings(15)
@given(mutated([_xlsx_seed()]))
def test_corrupted_xlsx_parses_or_raises_input_error(data):
    fuzz_xlsx(data)


# ------------------------------------------------------------------ NiMARE JSON
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                       st.integers(10**20, 10**300))
_JSON = st.recursive(_JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=12)


def _key(value) -> str:
    """JSON object keys are strings."""
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def nimare_documents(draw):
    """The NiMARE layout with any node possibly replaced by arbitrary JSON."""
    def maybe(value):
        return draw(_JSON) if draw(st.integers(0, 9)) == 0 else value

    def axis():
        return maybe(draw(st.lists(st.one_of(st.floats(-150, 150), st.integers(-150, 150), _JSON_LEAF), max_size=4)))

    studies = {}
    for s in range(draw(st.integers(0, 3))):
        contrasts = {}
        for c in range(draw(st.integers(0, 3))):
            coords = maybe({"space": maybe(draw(st.sampled_from(["MNI", "TAL", "mni152_2mm", "ale_2mm", "", "SPM"]))),
                            "x": axis(), "y": axis(), "z": axis()})
            meta = maybe({draw(st.sampled_from(["sample_sizes", "sample_size", "n"])): maybe(
                draw(st.lists(st.integers(-3, 40), max_size=3)))})
            contrasts[_key(maybe(str(c)))] = maybe({"coords": coords, "metadata": meta})
        studies[draw(st.text(max_size=5))] = maybe({"contrasts": maybe(contrasts)})
    return json.dumps(maybe(studies), allow_nan=True).encode()


@fuzz_settings(200)
@given(nimare_documents())
def test_nimare_json_generated_parse_or_raise_input_error(data):
    fuzz_nimare_json(data)


@fuzz_settings(150)
@given(mutated([JSON_SEED]))
def test_nimare_json_mutations_parse_or_raise_input_error(data):
    fuzz_nimare_json(data)


# ------------------------------------------------------------------ project YAML
_YAML_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 20000), st.floats(allow_nan=True),
                       st.sampled_from(["all", "sequence", "seq", "sm", "ale", "contrast", "conjunction", "csale",
                                        "motor_learning.tsv", "../x", "z_cfwe", "merge", "off", "warn"]),
                       st.text(max_size=6))
_YAML = st.recursive(_YAML_LEAF, lambda c: st.one_of(st.lists(c, max_size=3),
                                                      st.dictionaries(_YAML_LEAF.filter(lambda v: v is not None and not isinstance(v, float)), c, max_size=3)),
                     max_leaves=10)


@st.composite
def project_documents(draw):
    """A project mapping with plausible keys, each value possibly arbitrary."""
    def maybe(value):
        return draw(_YAML) if draw(st.integers(0, 5)) == 0 else value

    names = draw(st.lists(st.sampled_from(["seq", "sm", "all", "a..b", "../up", "project.json", "x" * 101, "ok-1"]),
                          min_size=1, max_size=4, unique=True))
    analyses = {}
    for n in names:
        kind = draw(st.sampled_from(["ale", "contrast", "conjunction", "csale", "other"]))
        spec = {"type": kind}
        if kind in ("contrast", "conjunction"):
            spec["analyses"] = maybe(draw(st.lists(st.sampled_from(names), max_size=3)))
        else:
            spec["group"] = maybe(draw(st.sampled_from(["all", "sequence", "missing"])))
        for key in draw(st.lists(st.sampled_from(["iterations", "seed", "alpha", "p", "mask", "k", "method", "bogus"]),
                                 max_size=2)):
            spec[key] = draw(_YAML_LEAF)
        key = maybe(n)
        analyses[key if isinstance(key, (str, int, bool, type(None))) else str(key)] = maybe(spec)
    doc = {
        "inputs": maybe(draw(st.sampled_from([["motor_learning.tsv"], "motor_learning.tsv", [{"path": "motor_learning.tsv", "space": "MNI"}], ["missing.tsv"]]))),
        "groups": maybe({"all": {}, "sequence": maybe({"tags": maybe({"paradigm": "sequence"})})}),
        "analyses": maybe(analyses),
    }
    for key in draw(st.lists(st.sampled_from(["defaults", "pooling", "min_experiments", "name", "review", "bogus"]),
                             max_size=3)):
        doc[key] = draw(_YAML)
    return yaml.safe_dump(maybe(doc), allow_unicode=True).encode()


@fuzz_settings(150)
@given(project_documents())
def test_project_generated_loads_or_raises_project_error(data):
    fuzz_project(data)


@fuzz_settings(150)
@given(mutated([YAML_SEED]))
def test_project_mutations_load_or_raise_project_error(data):
    fuzz_project(data)


# ------------------------------------------------------------------ the command line on garbage
class _Parsed(BaseException):
    """Raised instead of computing once garbage happened to be valid input."""


@pytest.fixture(scope="module")
def no_fit():
    """``ALE.fit`` and ``run_project`` replaced: a valid input stops here instead of computing."""
    import alemap.designs.runner as runner
    from alemap.estimator import ALE

    def stop(*args, **kwargs):
        raise _Parsed

    mp = pytest.MonkeyPatch()
    mp.setattr(ALE, "fit", stop)
    mp.setattr(runner, "run_project", stop)
    yield
    mp.undo()


def _cli(argv: list[str]) -> tuple[int | None, str]:
    from alemap.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            with time_budget():
                rc = main(argv)
        except _Parsed:
            rc = None
    assert out.getvalue() == ""
    return rc, err.getvalue()


GARBAGE = st.one_of(
    st.binary(max_size=300),
    mutated(SLEUTH_SEEDS), mutated([CSV_SEED]), mutated([JSON_SEED]),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", errors="replace")),
)


@fuzz_settings(60)
@given(GARBAGE, st.sampled_from([".txt", ".csv", ".tsv", ".json", ".xlsx", ".sleuth", ".dat"]))
def test_cli_ale_on_garbage_exits_2_with_one_message(no_fit, data, suffix):
    path = _write(data, f"garbage{suffix}")
    rc, err = _cli(["ale", str(path), "-o", str(SCRATCH / "out"), "--quiet", "--no-report", "--iterations", "0"])
    assert "Traceback" not in err
    if rc is None:  # it was valid input
        return
    assert rc == 2, err
    assert err.startswith("alemap: error: ") and err.count("alemap: error:") == 1, err


@fuzz_settings(40)
@given(st.one_of(st.binary(max_size=200), mutated([YAML_SEED]), project_documents()))
def test_cli_run_on_garbage_exits_2_with_one_message(no_fit, data):
    path = _write(data, "garbage.yaml")
    rc, err = _cli(["run", str(path), "-o", str(SCRATCH / "proj_out"), "--quiet", "--no-report"])
    assert "Traceback" not in err
    if rc is None:
        return
    assert rc == 2, err
    assert err.startswith("alemap: error: "), err


# ------------------------------------------------------------------ the guard itself
def test_time_budget_catches_a_hang():
    with pytest.raises(Hang):
        with time_budget(0.2):
            while True:
                pass


def test_seed_corpus_is_valid():
    """The mutations start from inputs that parse (so mutations explore near valid files)."""
    for seed in SLEUTH_SEEDS:
        assert fuzz_sleuth(seed) is not None
    assert fuzz_table(CSV_SEED) is not None
    assert fuzz_nimare_json(JSON_SEED) is not None
    assert fuzz_xlsx(_xlsx_seed()) is not None
    assert fuzz_project(YAML_SEED) is not None
    assert fuzz_load(CSV_SEED.replace(b",", b"\t"), ".txt") is not None
