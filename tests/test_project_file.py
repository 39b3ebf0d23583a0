"""Project-file errors: every message names the file, the line, the key path and what is expected.

A catalogue of malformed project files (``alemap.designs.project.load_project``)
and of the problems the runner finds before the first computation
(``alemap.designs.runner.run_project``): empty groups, contrasts of overlapping
groups, small groups, studies with several experiments, pooling.

Runner checks are tested with ``ALE.fit`` replaced by a function that raises
:class:`_Computed`, so a test fails loudly if a computation starts when it
should not, and costs nothing when it stops there on purpose.
"""

from __future__ import annotations

import os
import textwrap
import warnings

import numpy as np
import pytest

from _projects import line_of, write_project
from alemap import ALE
from alemap.cli.main import main
from alemap.designs import ProjectError, load_project
from alemap.designs.runner import run_project
from alemap.exceptions import InputError

HEAD = """
inputs: [motor_learning.tsv]
defaults: {iterations: 32, seed: 0}
groups:
  sequence: {tags: {paradigm: sequence}}
  sensorimotor: {tags: {paradigm: sensorimotor}}
"""

TOP_KEYS = "name, description, inputs, defaults, pooling, min_experiments, groups, analyses, review"


class _Computed(Exception):
    """Raised by the stand-in ``ALE.fit``: a computation started."""


@pytest.fixture
def no_computation(monkeypatch):
    """Replace ``ALE.fit``; the list receives every experiment set a fit was asked for."""
    asked = []

    def fit(self, experiments, checkpoint=None):
        asked.append(experiments)
        raise _Computed

    monkeypatch.setattr(ALE, "fit", fit)
    return asked


def _proj(folder, body: str, **kwargs):
    """A project file: :data:`HEAD` (inputs, defaults, two groups) followed by ``body`` (dedented)."""
    return write_project(folder, HEAD + textwrap.dedent(body), **kwargs)


def _load_error(path) -> str:
    with pytest.raises(ProjectError) as info:
        load_project(path)
    return str(info.value)


def _prefix(path, line: int, keypath: str) -> str:
    return f"{path.resolve()}:{line}: {keypath}: "


# ---------------------------------------------------------------- load-time errors
def test_project_error_is_an_input_error():
    assert issubclass(ProjectError, InputError) and issubclass(ProjectError, ValueError)


def test_unknown_top_level_key(tmp_path):
    path = _proj(tmp_path, """
        analysis:
          seq: {group: sequence}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "analysis:"), "analysis") + \
        f"unknown key 'analysis'; expected one of: {TOP_KEYS}"


def test_unknown_key_in_an_analysis(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence, iteratons: 100}
        """)
    msg = _load_error(path)
    assert msg.startswith(_prefix(path, line_of(path, "seq:"), "analyses.seq.iteratons"))
    assert "unknown key 'iteratons'; expected one of: type, group, iterations, seed," in msg


def test_unknown_analysis_type(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq:
            type: meta
            group: sequence
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "type: meta"), "analyses.seq.type") + \
        "unknown analysis type 'meta'; expected one of ('ale', 'contrast', 'conjunction', 'csale')"


def test_unknown_group(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq:
            type: ale
            group: sequense
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "group: sequense"), "analyses.seq.group") + \
        "unknown group 'sequense'; defined groups: sequence, sensorimotor"


def test_contrast_of_unknown_analysis(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence}
          sm: {group: sensorimotor}
          diff:
            type: contrast
            analyses: [seq, motor]
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "analyses: [seq, motor]"), "analyses.diff.analyses") + \
        "refers to unknown analysis 'motor'"


def test_contrast_of_an_analysis_with_itself(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence}
          diff:
            type: contrast
            analyses: [seq, seq]
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "analyses: [seq, seq]"), "analyses.diff.analyses") + \
        "a contrast needs two different analyses"


def test_contrast_of_a_conjunction(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence}
          sm: {group: sensorimotor}
          both: {type: conjunction, analyses: [seq, sm]}
          diff:
            type: contrast
            analyses: [seq, both]
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "analyses: [seq, both]"), "analyses.diff.analyses") + \
        "'both' is a conjunction; only ALE analyses can be combined"


@pytest.mark.parametrize("refs", ["[seq]", "seq", "[]"])
def test_conjunction_needs_two_inputs(tmp_path, refs):
    path = _proj(tmp_path, f"""
        analyses:
          seq: {{group: sequence}}
          both:
            type: conjunction
            analyses: {refs}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, f"analyses: {refs}"), "analyses.both.analyses") + \
        "a conjunction needs two or more ALE analyses, e.g. 'analyses: [a, b]'"


def test_contrast_needs_exactly_two_inputs(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence}
          sm: {group: sensorimotor}
          seq2: {group: sequence}
          diff: {type: contrast, analyses: [seq, sm, seq2]}
        """)
    msg = _load_error(path)
    assert msg.startswith(_prefix(path, line_of(path, "diff:"), "analyses.diff.analyses"))
    assert "a contrast needs exactly two ALE analyses" in msg


@pytest.mark.parametrize("kind", ["contrast", "conjunction"])
def test_analyses_on_different_masks_are_not_combined(tmp_path, kind):
    path = _proj(tmp_path, f"""
        analyses:
          seq: {{group: sequence}}
          sm: {{group: sensorimotor, mask: my_mask.nii.gz}}
          combined:
            type: {kind}
            analyses: [seq, sm]
        """)
    msg = _load_error(path)
    assert msg.startswith(_prefix(path, line_of(path, "analyses: [seq, sm]"), "analyses.combined.analyses"))
    assert "use different masks (" in msg and "my_mask.nii.gz" in msg
    assert msg.endswith("contrasts and conjunctions need one mask")


def test_missing_input_file(tmp_path):
    path = write_project(tmp_path, """
        inputs:
          - motor_learning.tsv
          - data/missing.tsv
        analyses:
          all: {}
        """)
    msg = _load_error(path)
    looked = (tmp_path / "data" / "missing.tsv").resolve()
    assert msg == _prefix(path, line_of(path, "- data/missing.tsv"), "inputs.1") + \
        f"input file 'data/missing.tsv' not found (looked for {looked})"


def test_inputs_relative_to_the_project_file_not_the_working_directory(tmp_path, monkeypatch):
    path = _proj(tmp_path / "proj", """
        analyses:
          seq: {group: sequence}
        """)
    monkeypatch.chdir(tmp_path)
    project = load_project(path.relative_to(tmp_path))
    assert project.inputs[0]["path"] == str((tmp_path / "proj" / "motor_learning.tsv").resolve())


def test_inputs_missing(tmp_path):
    path = write_project(tmp_path, """
        name: no inputs
        analyses:
          all: {}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, 1, "inputs") + "at least one input file is required, e.g. 'inputs: [foci.txt]'"


def test_no_analyses(tmp_path):
    path = _proj(tmp_path, "analyses: {}\n")
    msg = _load_error(path)
    assert msg.startswith(_prefix(path, line_of(path, "analyses:"), "analyses"))
    assert "no analyses: add e.g. 'analyses: {main: {type: ale, group: all}}'" in msg


def test_project_file_not_found(tmp_path):
    with pytest.raises(ProjectError, match=r"Project file '.*nowhere\.yaml' does not exist\."):
        load_project(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(
    "text, bad_line, problem",
    [
        # an unclosed flow mapping: the parser notices it on the next line
        ("inputs: [motor_learning.tsv]\nanalyses:\n  a: {group: all\n  b: {}\n", 4, "expected ',' or '}'"),
        # a tab used for indentation
        ("inputs: [motor_learning.tsv]\nanalyses:\n\ta: {}\n", 3, "found character '\\t' that cannot start any token"),
        # bad indentation
        ("inputs: [motor_learning.tsv]\nanalyses:\n  a: {}\n    b: 1\n", 4, "expected <block end>"),
    ],
)
def test_invalid_yaml_names_the_line(tmp_path, text, bad_line, problem):
    path = write_project(tmp_path, text)
    msg = _load_error(path)
    assert msg.startswith(f"{path.resolve()}:{bad_line}: not valid YAML for a project file: ")
    assert problem in msg


def test_unsafe_python_tag_is_rejected_and_runs_nothing(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    path = write_project(tmp_path, """
        inputs: [motor_learning.tsv]
        analyses:
          all: !!python/object/apply:os.system ["echo hi"]
        """)
    msg = _load_error(path)
    assert msg == f"{path.resolve()}:{line_of(path, '!!python')}: not valid YAML for a project file: " \
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    out = tmp_path / "out"
    assert main(["run", str(path), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alemap: error: ") and "python/object/apply:os.system" in err
    assert calls == [] and not out.exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", "/tmp/evil", "..", "a\\b", "a..b", ".hidden", "x" * 101])
def test_analysis_names_cannot_escape_the_output_folder(tmp_path, name):
    quoted = '"' + name.replace("\\", "\\\\") + '"'
    path = _proj(tmp_path / "proj", f"""
        analyses:
          {quoted}: {{group: sequence}}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, quoted), f"analyses.{name}") + (
        f"name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a folder name; "
        "no '/', no '..', at most 100 characters)")
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # nothing written anywhere


def test_group_names_must_be_safe_too(tmp_path):
    path = write_project(tmp_path, """
        inputs: [motor_learning.tsv]
        groups:
          "a/b": {}
        analyses:
          x: {group: "a/b"}
        """)
    msg = _load_error(path)
    assert msg.startswith(_prefix(path, line_of(path, '"a/b": {}'), "groups.a/b") + "name 'a/b' must be")


@pytest.mark.parametrize("value", ["pool", "yes", "1", "[warn]"])
def test_pooling_value_invalid(tmp_path, value):
    path = _proj(tmp_path, f"""
        pooling: {value}
        analyses:
          seq: {{group: sequence}}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "pooling:"), "pooling") + "pooling must be 'warn', 'merge' or 'off'"


@pytest.mark.parametrize("value", ["0", "-3", "2.5", '"17"', "true", "[17]"])
def test_min_experiments_invalid(tmp_path, value):
    path = _proj(tmp_path, f"""
        min_experiments: {value}
        analyses:
          seq: {{group: sequence}}
        """)
    msg = _load_error(path)
    assert msg == _prefix(path, line_of(path, "min_experiments:"), "min_experiments") + \
        "min_experiments must be a positive integer"


def test_a_valid_project_loads(tmp_path):
    path = _proj(tmp_path, """
        pooling: "off"
        min_experiments: 10
        analyses:
          seq: {group: sequence, iterations: 64}
          sm: {group: sensorimotor}
          diff: {type: contrast, analyses: [seq, sm], method: balanced, permutations: 50}
          both: {type: conjunction, analyses: [seq, sm], map: z_vfwe}
        """)
    project = load_project(path)
    assert project.pooling == "off" and project.min_experiments == 10
    assert project.analyses["seq"]["params"] == {"iterations": 64, "seed": 0}
    assert project.analyses["sm"]["params"] == {"iterations": 32, "seed": 0}
    assert project.analyses["diff"]["refs"] == ["seq", "sm"]
    assert project.analyses["diff"]["params"] == {"method": "balanced", "permutations": 50}
    assert project.analyses["both"]["line"] == line_of(path, "both:")


# ---------------------------------------------------------------- checks of the runner, before computing
def test_group_that_selects_no_experiment(tmp_path, no_computation):
    path = _proj(tmp_path, """
          learning: {tags: {paradigm: learning}}
        analyses:
          seq: {group: sequence}
        """)
    out = tmp_path / "out"
    with pytest.raises(ProjectError) as info:
        run_project(load_project(path), out, quiet=True)
    msg = str(info.value)
    assert msg.startswith(f"{path.resolve()}: groups.learning: selects no experiment; check its tags (tags present: ")
    assert "paradigm: sensorimotor, sequence" in msg and "year: " in msg
    assert no_computation == [] and not out.exists()


def test_experiment_in_both_groups_of_a_contrast(tmp_path, no_computation):
    path = _proj(tmp_path, """
          all: {}
        analyses:
          everything: {group: all}
          seq: {group: sequence}
          diff:
            type: contrast
            analyses: [everything, seq]
        """)
    out = tmp_path / "out"
    with pytest.raises(ProjectError) as info:
        run_project(load_project(path), out, quiet=True)
    msg = str(info.value)
    assert msg.startswith(f"{path.resolve()}:{line_of(path, 'diff:')}: analyses.diff: "
                          "28 experiment(s) are in both groups ('")
    assert msg.endswith(" ...); a contrast needs disjoint groups.")
    assert no_computation == [] and not out.exists()


def test_group_below_min_experiments_warns(tmp_path, no_computation):
    path = _proj(tmp_path, """
        min_experiments: 17
        analyses:
          sm: {group: sensorimotor}
          seq: {group: sequence}
        """)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(_Computed):
            run_project(load_project(path), tmp_path / "out", quiet=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert messages == [
        "analysis 'sm': only 16 experiments (fewer than 17, the minimum Eickhoff et al. 2016 recommend for "
        "adequate power; results may be driven by single experiments)"
    ]  # the 28-experiment group does not warn
    with pytest.warns(UserWarning, match=r"analysis 'sm': only 16 experiments \(fewer than 17"):
        with pytest.raises(_Computed):
            run_project(load_project(path), tmp_path / "out", quiet=True)


def _several(tmp_path, pooling: str):
    return write_project(tmp_path, f"""
        inputs: [several.tsv]
        defaults: {{iterations: 32}}
        pooling: {pooling}
        min_experiments: 1
        analyses:
          all: {{}}
        """, table="several")


def test_several_experiments_per_study_warn(tmp_path, no_computation):
    path = _several(tmp_path, "warn")
    with pytest.warns(UserWarning) as caught:
        with pytest.raises(_Computed):
            run_project(load_project(path), tmp_path / "out", quiet=True)
    msg = str(caught[0].message)
    assert msg.startswith("analysis 'all': 1 study contributes several experiments (S1); if they share subjects "
                          "they inflate convergence.")
    assert "Set 'pooling: merge' to pool them (Turkeltaub et al. 2012)." in msg
    assert no_computation[0].names == ("S1: e1", "S1: e2", "S2: e1")  # kept as they are


def test_pooling_off_neither_warns_nor_merges(tmp_path, no_computation):
    path = _several(tmp_path, '"off"')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(_Computed):
            run_project(load_project(path), tmp_path / "out", quiet=True)
    assert no_computation[0].n_experiments == 3


def test_pooling_merge_merges_a_studys_experiments(tmp_path, no_computation):
    path = _several(tmp_path, "merge")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # merged: nothing to warn about
        with pytest.raises(_Computed):
            run_project(load_project(path), tmp_path / "out", quiet=True)
    merged = no_computation[0]
    assert merged.n_experiments == 2
    assert merged.names == ("S1 (pooled)", "S2: e1") and merged.studies == ("S1", "S2")
    s1 = merged.names.index("S1 (pooled)")
    foci = sorted(map(tuple, merged.foci(s1).tolist()))
    assert foci == [(-30.0, -26.0, 60.0), (0.0, -20.0, 40.0), (30.0, -26.0, 60.0)]  # every focus of e1 and e2
    assert merged.n_subjects[s1] == 12  # round(mean(10, 14))
    assert merged.tags[s1]["pooled_from"] == "S1: e1; S1: e2"
    assert merged.tags[s1]["paradigm"] == "sequence"  # tags all members share are kept
    assert np.array_equal(merged.foci(merged.names.index("S2: e1")), [[10.0, 10.0, 10.0]])


# ---------------------------------------------------------------- former defects, fixed (regression tests)
def test_duplicate_analysis_names_are_an_error(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          seq: {group: sequence}
          seq: {group: sensorimotor}
        """)
    assert "seq" in _load_error(path)


def test_unquoted_pooling_off_is_accepted(tmp_path):
    assert load_project(_several(tmp_path, "off")).pooling == "off"


def test_analysis_name_project_json_is_rejected(tmp_path):
    path = _proj(tmp_path, """
        analyses:
          project.json: {group: sequence}
        """)
    assert "project.json" in _load_error(path)


@pytest.mark.parametrize("bad", ["diff: {type: contrast, analyses: [seq, sm], method: bogus}",
                                 "both: {type: conjunction, analyses: [seq, sm], map: z_bogus}",
                                 "late: {group: sequence, iterations: -3}"])
def test_parameter_values_are_validated_at_load(tmp_path, bad):
    path = _proj(tmp_path, f"""
        analyses:
          seq: {{group: sequence}}
          sm: {{group: sensorimotor}}
          {bad}
        """)
    _load_error(path)
