"""Determinism: the same seed gives byte-identical outputs, for any number of jobs.

Every output file of ``alemap ale`` (and of ``alemap run``) is compared byte
for byte between two runs with ``--jobs 1`` and runs with ``--jobs 2`` and
``--jobs 3``; ``provenance.json`` is compared field by field, and the only
fields allowed to differ are the time fields (``created``,
``runtime_seconds``) and, across job counts, ``parameters.jobs``. A different
seed must change the null (so the comparison is not vacuous).

``--max-memory 64G`` pins the cap, so the memory check never lowers the
requested number of jobs on a small machine.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from alemap.cli.main import main

FINGER = Path(str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt")))
DEMO_TSV = Path(str(resources.files("alemap.resources.demo").joinpath("motor_learning.tsv")))
TIME_FIELDS = {("created",), ("runtime_seconds",)}
JOBS_FIELD = {("parameters", "jobs")}


def leaves(obj, prefix=()):
    """(path, value) of every leaf of a JSON document."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, prefix + (i,))
    else:
        yield prefix, obj


def differing_fields(a: Path, b: Path) -> set:
    la, lb = (dict(leaves(json.loads(p.read_text()))) for p in (a, b))
    return {k for k in la.keys() | lb.keys() if la.get(k, object()) != lb.get(k, object())}


def files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def assert_identical(a: Path, b: Path, allowed: set) -> None:
    """Same files; byte-identical except provenance.json, whose differing fields must be in ``allowed``."""
    assert files(a) == files(b)
    assert not any(p.name.startswith(".tmp-") for p in files(a))
    for rel in files(a):
        if rel.name == "provenance.json":
            diff = differing_fields(a / rel, b / rel)
            assert diff <= allowed, (rel, diff - allowed)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def ale_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("determinism")
    runs = {}
    for label, jobs, seed in (("j1", 1, 5), ("j1-again", 1, 5), ("j2", 2, 5), ("j3", 3, 5), ("seed6", 1, 6)):
        out = base / label
        argv = ["ale", str(FINGER), "-o", str(out), "--iterations", "128", "--seed", str(seed), "--jobs", str(jobs),
                "--quiet", "--no-report", "--max-memory", "64G"]
        assert main(argv) == 0
        runs[label] = out
    return runs


def test_same_seed_twice_is_byte_identical(ale_runs):
    assert_identical(ale_runs["j1"], ale_runs["j1-again"], TIME_FIELDS)
    assert {p.name for p in files(ale_runs["j1"])} >= {
        "ale.nii.gz", "p.nii.gz", "z.nii.gz", "z_fdr.nii.gz", "z_vfwe.nii.gz", "z_cfwe.nii.gz", "clusters.nii.gz",
        "clusters.tsv", "null.npz", "contributions.tsv", "robustness.tsv", "provenance.json"}


@pytest.mark.parametrize("other", ["j2", "j3"])
def test_any_number_of_jobs_is_byte_identical(ale_runs, other):
    assert_identical(ale_runs["j1"], ale_runs[other], TIME_FIELDS | JOBS_FIELD)
    prov = json.loads((ale_runs[other] / "provenance.json").read_text())
    assert prov["parameters"]["jobs"] == int(other[1:])  # the jobs asked for were used


def test_time_fields_are_the_only_other_difference(ale_runs):
    """The allowed set is tight: two runs differ in exactly these fields (given the time moved)."""
    diff = differing_fields(ale_runs["j1"] / "provenance.json", ale_runs["j3"] / "provenance.json")
    assert diff - TIME_FIELDS == JOBS_FIELD


def test_another_seed_changes_the_null(ale_runs):
    a, b = (ale_runs[k] / "null.npz" for k in ("j1", "seed6"))
    assert a.read_bytes() != b.read_bytes()
    assert (ale_runs["j1"] / "ale.nii.gz").read_bytes() == (ale_runs["seed6"] / "ale.nii.gz").read_bytes()
    diff = differing_fields(ale_runs["j1"] / "provenance.json", ale_runs["seed6"] / "provenance.json")
    assert {("parameters", "seed"), ("seed", "root")} <= diff


def test_null_npz_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    """``.npz`` is a zip; its members carry a fixed timestamp, not the time of writing."""
    import time

    import numpy as np

    from alemap.io.atomic import write_npz

    write_npz(tmp_path / "a.npz", x=np.arange(5), y=np.float64(2.5))
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    monkeypatch.setattr(time, "localtime", lambda *a: (2033, 5, 18, 3, 33, 20, 2, 138, 0))
    write_npz(tmp_path / "b.npz", x=np.arange(5), y=np.float64(2.5))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2, 3, 4] and float(z["y"]) == 2.5


@pytest.mark.slow
def test_project_run_is_identical_across_jobs(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(DEMO_TSV, folder / "motor_learning.tsv")
    (folder / "project.yaml").write_text(
        "inputs: [motor_learning.tsv]\ndefaults: {iterations: 96, seed: 3}\nmin_experiments: 1\n"
        "groups:\n  sequence: {tags: {paradigm: sequence}}\n  sensorimotor: {tags: {paradigm: sensorimotor}}\n"
        "analyses:\n  sequence: {type: ale, group: sequence}\n  sensorimotor: {type: ale, group: sensorimotor}\n"
        "  both: {type: conjunction, analyses: [sequence, sensorimotor]}\n", encoding="utf-8")
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        assert main(["run", str(folder / "project.yaml"), "-o", str(out), "--jobs", jobs, "--quiet", "--no-report",
                     "--max-memory", "64G"]) == 0
        outs.append(out)
    assert_identical(outs[0], outs[1], TIME_FIELDS | JOBS_FIELD)
