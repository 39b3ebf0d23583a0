"""Batches of ALE analyses (alemap.designs.batch): seeds, outputs, provenance, resume, CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from alemap.designs.batch import (
    analysis_seed, macm_batch, run_batch, safe_name, selections_batch, terms_batch,
)
from alemap.distributed.shards import SHARD_DIR
from alemap.exceptions import ParameterError
from alemap.io.databases import read_neurosynth

TERMS = ("alpha", "beta", "gamma delta")
CENTRES = {"alpha": (-8.0, -6.0, 6.0), "beta": (8.0, 6.0, -4.0), "gamma delta": (0.0, -10.0, -8.0)}
COMPARED = ("ale", "p", "z", "z_fdr", "z_vfwe", "z_cfwe", "clusters")


def make_database_files(folder: Path, n_studies: int = 30, seed: int = 0) -> tuple[Path, Path, Path]:
    """A small Neurosynth-style database whose foci lie inside a 25^3 sphere grid (and MNI), and that grid's mask.

    Study ``s`` is about term ``TERMS[s % 3]`` (its title says so), has two
    tables and foci near the term's centre plus scattered ones; a few studies
    are Talairach, one has an UNKNOWN space.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coords = ["id\ttable_id\ttable_num\tpeak_id\tx\ty\tz"]
    meta = ["id\tdoi\tspace\ttitle\tauthors\tyear\tjournal"]
    peak = 0
    for s in range(n_studies):
        term = TERMS[s % 3]
        sid = str(1000 + s)
        space = "UNKNOWN" if s == n_studies - 1 else ("TAL" if s % 7 == 3 else "MNI")
        meta.append(f"{sid}\t\t{space}\tA {term} study number {s}\tauthor\t{2000 + s % 15}\tjournal")
        for t in range(2):
            n = int(rng.integers(2, 5))
            near = np.asarray(CENTRES[term]) + rng.normal(0, 3.0, size=(n, 3))
            far = rng.uniform(-14, 14, size=(2, 3))
            for x, y, z in np.round(np.vstack([near, far]), 1):
                peak += 1
                coords.append(f"{sid}\t{s * 10 + t}\t{t + 1}.\t{peak}\t{x}\t{y}\t{z}")
    c, m = folder / "toy_coordinates.tsv.gz", folder / "toy_metadata.tsv.gz"
    with gzip.open(c, "wt") as fh:
        fh.write("\n".join(coords) + "\n")
    with gzip.open(m, "wt") as fh:
        fh.write("\n".join(meta) + "\n")
    shape = (25, 25, 25)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -24.0
    idx = np.indices(shape) - 12
    mask = ((idx ** 2).sum(axis=0) <= 11.5 ** 2).astype(np.uint8)
    mask_path = folder / "sphere_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine), str(mask_path))
    return c, m, mask_path


def same_outputs(a: Path, b: Path, names) -> None:
    """Null maxima arrays and maps are identical between two batch folders."""
    for name in names:
        za, zb = np.load(a / name / "null.npz"), np.load(b / name / "null.npz")
        assert za.files == zb.files
        for k in za.files:
            assert np.array_equal(za[k], zb[k]), (name, k)
        for m in COMPARED:
            va = np.asarray(nib.load(str(a / name / f"{m}.nii.gz")).dataobj)
            vb = np.asarray(nib.load(str(b / name / f"{m}.nii.gz")).dataobj)
            assert np.array_equal(va, vb), (name, m)
        assert (a / name / "clusters.tsv").read_text() == (b / name / "clusters.tsv").read_text()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toydb")
    c, m, mask = make_database_files(folder)
    return read_neurosynth(c, m), mask, folder


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """The batch run in this process, one thread, whole analyses."""
    db, mask, _ = toy
    batch = terms_batch(db, TERMS, seed=7, iterations=96, mask=mask)
    out = tmp_path_factory.mktemp("ref")
    run = run_batch(batch, out, jobs=1, shard="analyses", quiet=True)
    assert run.ok and sorted(run.computed) == sorted(a.name for a in batch.analyses)
    return batch, out


def test_analysis_seed_contract():
    s = analysis_seed(0, "motor_sequence")
    assert s == analysis_seed(0, "motor_sequence") and 0 <= s < 2 ** 32
    assert s != analysis_seed(1, "motor_sequence") and s != analysis_seed(0, "visuomotor")
    assert analysis_seed(0, "motor_sequence") == 2_684_340_738  # pinned: changing the rule changes results
    with pytest.raises(ParameterError):
        analysis_seed(-1, "x")
    assert safe_name("gamma delta") == "gamma_delta" and safe_name("macm_Frontal_Sup_2_L") == "macm_Frontal_Sup_2_L"
    assert safe_name("memor*") == "memor" and safe_name("a/b\\c..") == "a_b_c"
    with pytest.raises(ParameterError):
        safe_name("***")


def test_batch_outputs_provenance_and_resume(toy, reference, tmp_path):
    db, mask, _ = toy
    batch, out = reference
    manifest = json.loads((out / "batch.json").read_text())
    assert manifest["seed"] == 7 and manifest["database"]["counts"]["studies_unknown_space"] == 1
    for a in batch.analyses:
        folder = out / a.name
        for f in ("ale.nii.gz", "z_cfwe.nii.gz", "null.npz", "clusters.tsv", "provenance.json"):
            assert (folder / f).is_file()
        assert not (folder / ".alemap-null-checkpoint.npz").exists()
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["analysis"] == a.name and len(prov["analysis_key"]) == 64
        assert prov["parameters"]["seed"] == analysis_seed(7, a.name) == manifest["analyses"][a.name]["seed"]
        assert prov["batch"]["studies_selected"] == a.n_studies == prov["counts"]["experiments_input"]
        assert prov["batch"]["studies_default_subjects"] == a.n_studies
        assert any("15 subjects" in n for n in prov["notes"])
        assert prov["database"]["counts"]["studies_default_subjects"] == db.n_studies
        assert {i["role"] for i in prov["inputs"]} == {"coordinates", "metadata"}
        assert int(np.load(folder / "null.npz")["seed"]) == prov["parameters"]["seed"]
    # the term selections are what the titles say
    assert batch["alpha"].studies.tolist() == db.select_title("alpha").tolist()
    # rerun: complete analyses are skipped, files untouched
    stamp = {a.name: (out / a.name / "provenance.json").stat().st_mtime_ns for a in batch.analyses}
    again = run_batch(batch, out, jobs=1, quiet=True)
    assert sorted(again.skipped) == sorted(stamp) and not again.computed
    assert all((out / n / "provenance.json").stat().st_mtime_ns == t for n, t in stamp.items())
    # other parameters: another key, recomputed (in a copy: the reference stays as it is)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    changed = terms_batch(db, ["alpha"], seed=7, iterations=96, mask=mask, alpha=0.01)
    assert run_batch(changed, copy, jobs=1, quiet=True).computed == ["alpha"]


class _Stop(Exception):
    pass


def test_iteration_shards_identical_and_resumed(toy, reference, tmp_path):
    db, mask, _ = toy
    batch, ref = reference
    names = [a.name for a in batch.analyses]
    # threads, sharded by iterations: identical to one thread, whole analyses
    out = tmp_path / "sharded"
    run = run_batch(batch, out, jobs=2, shard="iterations", shard_batches=1, quiet=True)
    assert run.ok and run.execution["shard"] == "iterations"
    same_outputs(ref, out, names)
    assert not (out / names[0] / SHARD_DIR).exists()
    # interrupted after two shards of one analysis: its shards stay, the rerun resumes from them
    out2 = tmp_path / "interrupted"
    seen = []

    def stop_after_two(name, shard):
        seen.append((name, shard["b0"]))
        if name == "beta" and sum(n == "beta" for n, _ in seen) == 2:
            raise _Stop("killed")

    first = run_batch(batch, out2, jobs=1, shard="iterations", shard_batches=1, quiet=True, on_shard=stop_after_two)
    assert first.failed == ["beta"] and sorted(first.computed) == ["alpha", "gamma_delta"]
    assert len(list((out2 / "beta" / SHARD_DIR).glob("b*.npz"))) == 2
    assert not (out2 / "beta" / "provenance.json").exists()
    second = run_batch(batch, out2, jobs=1, shard="iterations", shard_batches=1, quiet=True)
    assert second.computed == ["beta"] and sorted(second.skipped) == ["alpha", "gamma_delta"]
    assert "resumed 2 shard(s)" in second.status["beta"]
    same_outputs(ref, out2, names)
    assert json.loads((out2 / "beta" / "provenance.json").read_text())["execution"]["shards_resumed"] == 2


def test_shards_are_used_not_recomputed(toy, tmp_path):
    """A planted shard with the right key is taken as computed (proof that resume reads shards)."""
    db, mask, _ = toy
    batch = terms_batch(db, ["alpha"], seed=3, iterations=64, mask=mask)
    out = tmp_path / "plant"
    captured = {}

    def grab(name, shard):
        captured.setdefault(shard["b0"], shard)
        raise _Stop("stop after the first shard")

    run_batch(batch, out, shard="iterations", shard_batches=1, quiet=True, on_shard=grab)
    (path,) = (out / "alpha" / SHARD_DIR).glob("b*.npz")
    z = dict(np.load(path))
    z["ale"] = np.full_like(z["ale"], 0.5)  # a marker value no real iteration gives
    np.savez_compressed(path, **z)
    run_batch(batch, out, shard="iterations", shard_batches=1, quiet=True)
    null = np.load(out / "alpha" / "null.npz")["max_ale"]
    assert (null[:32] == 0.5).all() and (null[32:] != 0.5).all()


def test_min_studies_limit_and_errors(toy, tmp_path):
    db, mask, _ = toy
    batch = terms_batch(db, ["alpha", "nothing matches this"], seed=0, iterations=0, mask=mask, min_studies=3)
    run = run_batch(batch, tmp_path / "o", quiet=True)
    assert run.computed == ["alpha"] and run.skipped == ["nothing_matches_this"]
    assert "min_studies" in run.status["nothing_matches_this"]
    assert run_batch(batch, tmp_path / "p", limit=1, quiet=True).status.keys() == {"alpha"}
    with pytest.raises(ParameterError, match="folder name"):
        terms_batch(db, ["gamma delta", "gamma/delta"])
    with pytest.raises(ParameterError, match="Unknown ALE parameter"):
        terms_batch(db, ["alpha"], iterationz=5)
    with pytest.raises(ParameterError):
        terms_batch(db, ["alpha"], alpha=2.0)
    with pytest.raises(ParameterError, match="shard"):
        run_batch(batch, tmp_path / "q", shard="voxels")
    with pytest.raises(ParameterError, match="null_backend"):
        run_batch(batch, tmp_path / "q", null_backend="tpu")
    # the GPU engine runs in this process, whole analyses one after another: said before any work
    with pytest.raises(ParameterError, match="--scheduler"):
        run_batch(batch, tmp_path / "q", scheduler="local:2", null_backend="gpu")
    with pytest.raises(ParameterError, match="--shard auto or analyses"):
        run_batch(batch, tmp_path / "q", shard="iterations", null_backend="gpu")
    assert not (tmp_path / "q").exists()


def test_selections_and_macm_batches(toy):
    from alemap.space.atlases import Atlas
    from alemap.space.grid import load_grid

    db, mask, _ = toy
    sel = selections_batch(db, {"early": db.select_years(2000, 2004), "late studies": db.select_years(2010, None)})
    assert [a.name for a in sel.analyses] == ["early", "late_studies"]
    assert sel["early"].studies.tolist() == db.select_years(2000, 2004).tolist()
    grid = load_grid(mask)
    labels = np.zeros(grid.n_voxels, dtype=np.int32)
    x = grid.ijk_to_mm(grid.mask_ijk)[:, 0]
    labels[x < -2] = 1
    labels[x > 2] = 2
    toy_atlas = Atlas("toy", labels, {1: "Left half", 2: "Right half"}, grid)
    macm = macm_batch(db, toy_atlas, mask=mask)
    assert [a.name for a in macm.analyses] == ["macm_Left_half", "macm_Right_half"]
    assert macm["macm_Left_half"].studies.tolist() == db.select_region(labels == 1, grid=grid).tolist()
    assert macm.description["atlas"] == "toy"


def test_cli_batch(toy, tmp_path, capsys):
    from alemap.cli.main import main

    _, mask, folder = toy
    out = tmp_path / "cli"
    argv = ["batch", "--database", str(folder), "--terms", "alpha", "beta", "--iterations", "64", "--seed", "7",
            "--mask", str(mask), "--jobs", "1", "-o", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2 computed, 0 skipped" in err and "studies_unknown_space 1" in err
    assert main(argv + ["--quiet"]) == 0
    assert json.loads((out / "batch.json").read_text())["analyses"]["alpha"]["status"] == "skipped (complete)"
    assert main(argv + ["--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("alpha\t") and f"seed {analysis_seed(7, 'beta')}" in listing
    terms = tmp_path / "terms.txt"
    terms.write_text("# my terms\nalpha\n\ngamma delta  # two words\n")
    assert main(["batch", "--database", str(folder), "--terms-file", str(terms), "--dry-run", "-o", str(out)]) == 0
    assert [ln.split("\t")[0] for ln in capsys.readouterr().out.splitlines()] == ["alpha", "gamma_delta"]
    assert main(["batch", "--database", "neurosynth", "--terms", "x", "-o", str(out)]) == 2
    assert "--coordinates" in capsys.readouterr().err


def test_batch_json_follows_the_run(toy, tmp_path, monkeypatch):
    """batch.json is rewritten as analyses finish, so a job killed midway leaves a current summary."""
    import alemap.designs.batch as batch_mod

    db, mask, _ = toy
    batch = terms_batch(db, TERMS, seed=7, iterations=32, mask=mask)
    monkeypatch.setattr(batch_mod, "SUMMARY_EVERY_S", 0.0)
    snapshots = []
    real_write = batch_mod.write_json

    def spy(path, obj):
        if path.name == "batch.json":
            snapshots.append(sorted(n for n, a in obj["analyses"].items() if "significant" in str(a.get("status"))))
        return real_write(path, obj)

    monkeypatch.setattr(batch_mod, "write_json", spy)
    run = run_batch(batch, tmp_path / "out", jobs=1, shard="analyses", quiet=True)
    n = len(run.computed)
    assert n == len(batch.analyses) >= 2
    # one write before, one after each analysis, one at the end; the finished set only grows
    assert len(snapshots) == n + 2
    assert [len(s) for s in snapshots[1:-1]] == list(range(1, n + 1))
    assert all(set(a) <= set(b) for a, b in zip(snapshots, snapshots[1:]))
