"""The embedded motor-learning demo data (derived from Neurosynth v7, ODbL 1.0).

Checks that the shipped table loads with alemap, holds both paradigms with
per-experiment tags constant and the documented default sample size, and,
when the shared Neurosynth tables are beside the project, that re-running the
derivation in-process gives exactly the shipped files.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from alemap.io import load_experiments

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCRIPT = ROOT / "scripts" / "derive_motor_learning.py"
DEMO = resources.files("alemap.resources.demo")
TSV = Path(str(DEMO.joinpath("motor_learning.tsv")))
NOTICE = Path(str(DEMO.joinpath("motor_learning_NOTICE.md")))
LICENSE = Path(str(DEMO.joinpath("LICENSE-ODbL.txt")))
DEFAULT_SUBJECTS = 15  # documented placeholder sample size (Neurosynth has none)
TAGS = ["paradigm", "year", "title", "first_author", "subjects_source", "neurosynth_id"]


def _derivation_module():
    spec = importlib.util.spec_from_file_location("derive_motor_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.fixture(scope="module")
def derive_module():
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not in this checkout (sdist/wheel without scripts/)")
    return _derivation_module()


@pytest.fixture(scope="module")
def experiments():
    return load_experiments(TSV)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(TSV, sep="\t", dtype=str, keep_default_na=False)


def test_shipped_files_present():
    assert TSV.is_file() and NOTICE.is_file() and LICENSE.is_file()
    assert "Open Database License" in LICENSE.read_text(encoding="utf-8")
    notice = NOTICE.read_text(encoding="utf-8")
    assert "ODbL 1.0" in notice and "Yarkoni" in notice and "Hardwick" in notice


def test_loads_with_both_paradigms(experiments):
    paradigms = [tag["paradigm"] for tag in experiments.tags]
    assert set(paradigms) == {"sequence", "sensorimotor"}
    for name in ("sequence", "sensorimotor"):
        assert paradigms.count(name) >= 10
    assert set(experiments.spaces) <= {"MNI", "TAL"}
    # one experiment per study
    assert len(set(experiments.studies)) == experiments.n_experiments
    sizes = experiments.offsets[1:] - experiments.offsets[:-1]
    assert sizes.min() >= 2 and sizes.max() <= 100


def test_subsets_select_by_tag(experiments):
    idx = [i for i, tag in enumerate(experiments.tags) if tag["paradigm"] == "sensorimotor"]
    subset = experiments.select(idx)
    assert subset.n_experiments == len(idx)
    assert all(tag["paradigm"] == "sensorimotor" for tag in subset.tags)


def test_tags_constant_within_experiment(raw):
    assert list(raw.columns) == ["study", "experiment", "subjects", "x", "y", "z", "space", *TAGS]
    per_study = raw.groupby(["study", "experiment"])[TAGS + ["subjects", "space"]].nunique()
    assert (per_study == 1).all().all()
    assert (raw["study"] == "ns-" + raw["neurosynth_id"]).all()
    assert not raw.apply(lambda col: col.str.contains(r"[\t\n\r\"]", regex=True)).any().any()


def test_subjects_are_the_documented_default(raw, experiments):
    assert (experiments.n_subjects == DEFAULT_SUBJECTS).all()
    assert (raw["subjects_source"] == "default").all()
    assert f"`subjects` = {DEFAULT_SUBJECTS}" in NOTICE.read_text(encoding="utf-8")


def test_rederivation_is_exact(derive_module):
    if not (SHARED / "data" / "neurosynth-v7" / derive_module.METADATA).exists():
        pytest.skip(f"shared Neurosynth v7 tables not found at {SHARED / 'data' / 'neurosynth-v7'}")
    assert derive_module.DEFAULT_SUBJECTS == DEFAULT_SUBJECTS
    selection = derive_module.derive(SHARED)
    assert derive_module.to_tsv(selection.table) == TSV.read_text(encoding="utf-8")
    assert derive_module.render_notice(selection) == NOTICE.read_text(encoding="utf-8")
