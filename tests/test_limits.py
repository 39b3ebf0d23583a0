"""Resource limits and numerical guards.

Memory: :mod:`alemap._limits` estimates a fit's peak memory from the
experiments, the grid and the number of jobs; the estimate is checked against
the engine's work arrays, the real MA maps and the real peak of a fit.
``--max-memory`` lowers ``--jobs`` to fit or stops before computing, with a
message saying what is needed; without it the cap is the memory available.
Disk: the output folder must be writable and have room, checked before
computing. Runtime failures (out of memory, disk full, a bug) end in one
clear line, never a traceback.

Numerical guards: ALE in [0, 1], p in (0, 1], z finite for extreme inputs;
the float32 maps written agree with the float64 maps in memory.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import namedtuple
from importlib import resources
from pathlib import Path

import nibabel as nib
from types import SimpleNamespace

import numpy as np
import pytest

import alemap._limits as limits
from alemap import ALE
from alemap._limits import (
    MemoryEstimate, ResourceLimitError, estimate_experiments_memory, estimate_fit_memory, estimate_output_bytes,
    format_size, jobs_within, parse_size,
)
from alemap.cli.main import main
from alemap.exceptions import AlemapError, InputError
from alemap.inference.plan import make_plan
from alemap.io import load_experiments
from alemap.kernels.gaussian import kernel_cubes
from alemap.space.grid import load_mni152_2mm

FINGER = Path(str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt")))
DEMO_TSV = Path(str(resources.files("alemap.resources.demo").joinpath("motor_learning.tsv")))
SLEUTH = "// Reference=MNI\n// A, 2000: x\n// Subjects=10\n-38 -24 56\n\n// B, 2001: y\n// Subjects=12\n-36 -22 54\n"
MiB = 2**20
pytestmark = pytest.mark.filterwarnings("ignore:.*repeat another experiment exactly:UserWarning")


class _Computed(BaseException):
    """Raised by a stand-in ``ALE.fit``: the computation would have started."""


@pytest.fixture
def no_fit(monkeypatch):
    def fit(self, *args, **kwargs):
        raise _Computed

    monkeypatch.setattr(ALE, "fit", fit)


@pytest.fixture
def foci(tmp_path) -> Path:
    path = tmp_path / "foci.txt"
    path.write_text(SLEUTH)
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("alemap: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize("text, expected", [
    ("2G", 2 * 2**30), ("2g", 2 * 2**30), ("2GB", 2 * 2**30), ("2GiB", 2 * 2**30), ("1.5G", 3 * 2**29),
    ("512M", 512 * MiB), ("512 mb", 512 * MiB), ("64k", 65536), ("1T", 2**40), ("1000000", 1000000), (".5G", 2**29),
    (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "0", "0M", "1e3", "2 GB extra", "two"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_cli_rejects_a_bad_size(foci, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["ale", str(foci), "-o", str(tmp_path / "out"), "--max-memory", "lots"])
    assert info.value.code == 2
    assert "alemap ale: error: argument --max-memory: 'lots' is not a size; write e.g. 2G, 512M or 1.5GiB " \
           "(units are powers of 1024)." in capsys.readouterr().err


def test_format_size():
    assert [format_size(n) for n in (10, 1536, 5 * MiB, 3 * 2**30, 2**41)] == \
        ["10 bytes", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2.0 TiB"]


# ---------------------------------------------------------------- the memory estimate against the engine
def test_limits_mirror_the_engine_tilings():
    from alemap.inference import cpu
    from alemap.inference.plan import tiles_per_focus

    from alemap.inference import windows
    from alemap.inference.simd import LANES_F32

    assert (limits.SLAB, limits.SPARSE_SLAB, limits.ROW_PAD, limits.BOUND_PAD) == \
        (cpu.SLAB, cpu.SPARSE_SLAB, cpu.ROW_PAD, cpu.BOUND_PAD)
    assert (limits.MAX_WINDOW_SHARE, limits.WINDOW, limits.LANES_F32, limits.SEPARABLE_CLASSES) == \
        (windows.MAX_WINDOW_SHARE, windows.WINDOW, LANES_F32, windows.SEPARABLE_CLASSES)
    for width in (5, 17, 31, 41):
        assert limits._tiles_per_focus(width**3) == tiles_per_focus(width)


def test_per_job_estimate_counts_the_engine_workspace_exactly():
    from alemap.inference.cpu import SLAB, SPARSE_SLAB, Workspace

    grid = load_mni152_2mm()
    n_grid = int(np.prod(grid.shape))
    n_blocks = int(np.prod((np.asarray(grid.shape) + 1) // 2))
    n_slabs = int(np.prod(-(-np.asarray(grid.shape) // np.asarray(SLAB))))
    n_sparse = int(np.prod(-(-np.asarray(grid.shape) // np.asarray(SPARSE_SLAB))))
    per_focus = limits._tiles_per_focus(31**3)
    ws = Workspace(n_grid, n_blocks)
    ws.tiles_for(SimpleNamespace(n_slabs=n_slabs, n_sparse_slabs=n_sparse, n_foci=0,
                                 max_tiles_per_focus=per_focus))  # as run_batch
    workspace_bytes = sum(a.nbytes for a in vars(ws).values() if isinstance(a, np.ndarray))
    est = estimate_fit_memory(n_foci=0, n_grid=n_grid, n_mask=grid.n_voxels, n_blocks=n_blocks, n_slabs=n_slabs,
                              n_sparse_slabs=n_sparse, shape=grid.shape)
    windows = limits._window_bytes(grid.shape, grid.n_voxels, 0, 31)
    assert est.per_job - windows == workspace_bytes  # if Workspace changes, alemap._limits must follow
    assert estimate_fit_memory(n_foci=0, n_grid=n_grid, n_mask=grid.n_voxels).per_job >= workspace_bytes + windows
    # the window path's arrays, allocated for real plans: the widest kernel (1 subject) alone,
    # then with a narrower one and enough foci for two classes of widths (the most)
    for sizes, foci, classes in (([1], 1, 1), ([1, 30], 6000, 2)):
        cubes = kernel_cubes(sizes)
        offsets = np.arange(len(sizes) + 1) * foci
        plan = make_plan(grid.mask, offsets, np.arange(len(sizes)), cubes, 0.01)
        assert int(plan.width.max()) == 31 and plan.window.env.shape[0] == classes
        work = Workspace(n_grid, n_blocks).windows_for(plan)
        assert limits._window_bytes(grid.shape, grid.n_voxels, int(offsets[-1]), 31, classes) == \
            sum(a.nbytes for a in vars(work).values() if isinstance(a, np.ndarray))
    bigger = estimate_fit_memory(n_foci=1000, n_grid=n_grid, n_mask=grid.n_voxels, n_blocks=n_blocks,
                                 n_slabs=n_slabs, n_sparse_slabs=n_sparse, shape=grid.shape)
    # one batch of relocated foci, their voxel indices, and their tile bins (int32; 9 x 9 x 2 sparse slabs for 31^3)
    assert per_focus == 162
    # and the window path's foci sorted by x-plane (int64)
    assert bigger.per_job - est.per_job == 1000 * (2 * 32 * 8 + 24 + 4 * per_focus + 8)


def test_ma_estimate_bounds_the_real_ma_maps():
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.statistics.ale import ma_maps

    grid = load_mni152_2mm()
    est = ALE(iterations=0)
    placed = est.place(load_experiments(FINGER))
    exps = placed.experiments
    cubes = kernel_cubes(exps.n_subjects, 2.0)
    ma = ma_maps(placed.ijk, exps.offsets, cubes.index(exps.n_subjects), cubes, grid.mask)
    real = ma.cols.nbytes + ma.vals.nbytes
    bound = estimate_experiments_memory(load_experiments(FINGER), grid).ma_maps
    assert real <= bound <= 3 * real
    # a plain ALE fit never holds them all: its tables stream them in chunks
    plain = estimate_experiments_memory(load_experiments(FINGER), grid, full_ma=False)
    assert plain.ma_maps == 0 and 0 < plain.tables <= limits.TABLE_BYTES_PER_ENTRY * limits.ENTRY_CHUNK + 16 * 902629
    assert plain.total(1) <= estimate_experiments_memory(load_experiments(FINGER), grid).total(1)
    # 1,000 Neurosynth tables (18,649 foci, 17^3 kernels): ~0.8 GiB of MA maps not counted for a plain fit
    big = dict(n_foci=18649, n_grid=902629, n_mask=grid.n_voxels, ma_entries=18649 * 17**3, kernel_voxels=17**3)
    full, fit = estimate_fit_memory(**big), estimate_fit_memory(**big, full_ma=False, report=True)
    assert full.ma_maps > 2**30 * 0.75 and fit.ma_maps == 0 and fit.total(2) < 2**30 <= full.total(2)


def test_limits_mirror_the_table_chunks():
    from alemap.reporting import robustness

    assert limits.ENTRY_CHUNK == robustness.ENTRY_CHUNK


def test_report_is_counted_after_the_monte_carlo():
    est = MemoryEstimate(base=0, ma_maps=0, maps=0, per_job=10, report=35, tables=25)
    assert est.total(1) == 35 and est.total(3) == 35 and est.total(4) == 40
    assert "tables 25 bytes, report 35 bytes" in est.describe(1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from /proc (Linux)")
def test_estimate_bounds_the_real_peak_of_a_fit(tmp_path):
    # VmHWM is this process's own peak; ru_maxrss would include the parent's (it survives fork + exec)
    code = (
        "import sys; from alemap import ALE; from alemap._limits import estimate_experiments_memory; "
        "from alemap.io import load_experiments; from alemap.space.grid import load_mni152_2mm; "
        f"e = load_experiments({str(FINGER)!r}); "
        "r = ALE(iterations=32, jobs=2, quiet=True).fit(e); r.save(sys.argv[1]); "
        "hwm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print(hwm, estimate_experiments_memory(e, load_mni152_2mm(), full_ma=False).total(2))"
    )
    for attempt in ("warm-up", "measured"):  # the first run may compile the engine (numba cache)
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(tmp_path / attempt)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        peak, estimate = map(int, done.stdout.split())
        assert peak <= estimate, (attempt, format_size(peak), format_size(estimate))
    assert estimate <= 2.5 * peak, (format_size(peak), format_size(estimate))  # and not uselessly loose


# ---------------------------------------------------------------- fitting the jobs to a limit
def test_jobs_within():
    est = MemoryEstimate(base=100, ma_maps=0, maps=0, per_job=50)
    assert jobs_within(est, 10_000, 8) == 8
    assert jobs_within(est, 260, 8) == 3
    assert jobs_within(est, 150, 8) == 1
    with pytest.raises(ResourceLimitError) as info:
        jobs_within(est, 149, 8)
    assert str(info.value).startswith("this analysis needs about 150 bytes with 1 job(s) (0 experiments, 0 foci):")
    assert "more than the limit of 149 bytes. Nothing was computed." in str(info.value)


def test_ma_maps_and_work_arrays_add_up():
    # the MA builder allocates its arrays once (two passes), so building is never the peak
    est = MemoryEstimate(base=0, ma_maps=100, maps=0, per_job=10)
    assert est.total(1) == 110 and est.total(5) == 150 and est.total(11) == 210


def test_max_memory_too_small_stops_before_computing(foci, tmp_path, capsys, no_fit):
    out = tmp_path / "out"
    assert main(["ale", str(foci), "-o", str(out), "--max-memory", "100M", "--quiet"]) == 2
    msg = error_line(capsys)
    assert msg.startswith("alemap: error: this analysis needs about ")
    assert "with 1 job(s) (2 experiments, 2 foci): maps " in msg and "report " in msg
    assert msg.endswith("that is more than --max-memory 100.0 MiB. Nothing was computed. Raise --max-memory if "
                        "the machine has the memory, or split the analysis into smaller ones (fewer experiments), "
                        "or use a smaller mask.")
    assert list(out.iterdir()) == []


def test_max_memory_lowers_the_jobs(foci, tmp_path, capsys, monkeypatch):
    fake = MemoryEstimate(base=0, ma_maps=0, maps=0, per_job=100 * MiB, n_experiments=2, n_foci=2)
    monkeypatch.setattr(limits, "estimate_experiments_memory", lambda e, g, **kw: fake)
    out = tmp_path / "out"
    assert main(["ale", str(foci), "-o", str(out), "--max-memory", "250M", "--jobs", "4", "--iterations", "32",
                 "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "alemap: note: using 2 job(s) instead of 4 to stay within --max-memory 250.0 MiB: about 200.0 MiB " \
           "with 2 job(s)" in err
    assert json.loads((out / "provenance.json").read_text())["parameters"]["jobs"] == 2
    size = sum(p.stat().st_size for p in out.iterdir())
    assert size <= estimate_output_bytes(902629, 32, 2, 2, report=False)


def test_without_max_memory_the_cap_is_the_memory_available(foci, tmp_path, capsys, monkeypatch, no_fit):
    monkeypatch.setattr(limits, "available_memory", lambda: 50 * MiB)
    assert main(["ale", str(foci), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert error_line(capsys).endswith(
        "that is more than the 50.0 MiB of memory available on this machine (pass --max-memory to set the cap). "
        "Nothing was computed. Raise --max-memory if the machine has the memory, or split the analysis into "
        "smaller ones (fewer experiments), or use a smaller mask.")
    with pytest.raises(_Computed):  # an explicit cap is the user's decision
        main(["ale", str(foci), "-o", str(tmp_path / "out"), "--quiet", "--max-memory", "8G"])


def test_available_memory_is_known_here():
    avail = limits.available_memory()
    assert avail is None or avail > 0


def test_project_run_checks_memory_before_any_analysis(tmp_path, capsys, no_fit):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "motor_learning.tsv").write_bytes(DEMO_TSV.read_bytes())
    (folder / "p.yaml").write_text("inputs: [motor_learning.tsv]\nanalyses: {a: {iterations: 32}}\n")
    out = tmp_path / "out"
    assert main(["run", str(folder / "p.yaml"), "-o", str(out), "--max-memory", "64M", "--quiet"]) == 2
    msg = error_line(capsys)
    assert msg.startswith("alemap: error: this analysis needs about ") and "(44 experiments," in msg
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- disk
def test_full_disk_stops_before_computing(foci, tmp_path, capsys, monkeypatch, no_fit):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "out"
    assert main(["ale", str(foci), "-o", str(out), "--quiet"]) == 2
    msg = error_line(capsys)
    assert msg.startswith(f"alemap: error: the outputs need about ")
    assert msg.endswith(f"of disk space in {out}, but its file system has only 1000 bytes free. Nothing was "
                        "computed. Free some space or choose another output folder with -o.")


@pytest.mark.slow
def test_output_estimate_bounds_a_full_output_folder_with_report(tmp_path):
    out = tmp_path / "out"
    assert main(["ale", str(FINGER), "-o", str(out), "--iterations", "32", "--quiet", "--jobs", "1"]) == 0
    used = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    bound = estimate_output_bytes(int(np.prod(load_mni152_2mm().shape)), 32, 73, 654, report=True)
    assert used <= bound <= 20 * used + 50 * MiB


def test_oversized_input_file(tmp_path, monkeypatch):
    import alemap.io.sleuth as sleuth

    monkeypatch.setattr(sleuth, "MAX_TEXT_BYTES", 10)
    path = tmp_path / "foci.txt"
    path.write_text(SLEUTH)
    with pytest.raises(InputError) as info:
        load_experiments(path)
    assert str(info.value) == (f"{path}: the file is {len(SLEUTH)} bytes, more than the 10 bytes alemap reads as a "
                               "foci file (alemap.io.sleuth.MAX_TEXT_BYTES); check that this is the foci file.")


# ---------------------------------------------------------------- failures while running: one clear line
def test_out_of_memory_while_running(foci, tmp_path, capsys, monkeypatch):
    def fit(self, *a, **k):
        raise MemoryError

    monkeypatch.setattr(ALE, "fit", fit)
    assert main(["ale", str(foci), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert error_line(capsys) == (
        "alemap: error: out of memory. Rerun with fewer --jobs, or with --max-memory set to the memory this machine "
        "can give; an interrupted Monte Carlo null resumes from its checkpoint.")


def test_disk_full_while_writing(foci, tmp_path, capsys, monkeypatch):
    from alemap.result import ALEResult

    def save(self, outdir):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(outdir) / "ale.nii.gz"))

    monkeypatch.setattr(ALEResult, "save", save)
    out = tmp_path / "out"
    assert main(["ale", str(foci), "-o", str(out), "--quiet", "--iterations", "0"]) == 2
    assert error_line(capsys) == (f"alemap: error: {out / 'ale.nii.gz'}: No space left on device; the disk is full; "
                                  "free some space and rerun the same command (it resumes).")


def test_a_bug_is_one_line_not_a_traceback(foci, tmp_path, capsys, monkeypatch):
    def fit(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(ALE, "fit", fit)
    assert main(["ale", str(foci), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == ("alemap: internal error: RuntimeError: boom. This is a bug in alemap; please report it with the "
                   "command line (ALEMAP_DEBUG=1 shows the traceback).\n")
    monkeypatch.setenv("ALEMAP_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["ale", str(foci), "-o", str(tmp_path / "out"), "--quiet"])


def test_killed_runs_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    import os

    from alemap.io.atomic import remove_stale_temps, temp_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = tmp_path / (temp_prefix("ale.nii.gz") + "abc")
    mine.write_bytes(b"x")
    stale = tmp_path / mine.name.replace(f".tmp-{os.getpid()}.", f".tmp-{dead_pid}.")
    stale.write_bytes(b"x")
    other = tmp_path / ".tmp-notours"
    other.write_bytes(b"x")
    (tmp_path / "figures").mkdir()
    nested = tmp_path / "figures" / stale.name
    nested.write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path, depth=1)) == sorted([stale, nested])
    assert mine.exists() and other.exists()


def test_outputs_have_normal_permissions(foci, tmp_path):
    import os
    import stat

    out = tmp_path / "out"
    assert main(["ale", str(foci), "-o", str(out), "--quiet", "--iterations", "0", "--no-report"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


# ---------------------------------------------------------------- numerical guards
def _fit(grid, ijk_per_experiment, n_subjects, iterations=64):
    sys.path.insert(0, str(Path(__file__).parent))
    from _simulate import records

    from alemap.data import ExperimentSet

    experiments = ExperimentSet.from_records(records(grid, ijk_per_experiment, n_subjects))
    return ALE(iterations=iterations, seed=1, quiet=True, mask=grid).fit(experiments)


def _assert_in_range(result):
    m = result.maps
    assert np.all(m["ale"] >= 0) and np.all(m["ale"] <= 1)
    assert np.all(m["p"] > 0) and np.all(m["p"] <= 1)
    assert np.all(m["p_vfwe"] >= 1 / result.null_maxima.n_iterations) and np.all(m["p_vfwe"] <= 1)
    for key, values in m.items():
        assert np.all(np.isfinite(values)), key
        if key.startswith("z"):
            assert np.all(values >= 0), key
    assert np.all(np.isfinite(result.null_maxima.ale)) and np.all(result.null_maxima.ale <= 1)


def _sphere():
    sys.path.insert(0, str(Path(__file__).parent))
    from _simulate import sphere_grid

    return sphere_grid()


@pytest.mark.parametrize("n_experiments, n_subjects", [(200, 10_000), (30, 1), (1, 1), (60, 10_000)])
def test_all_foci_in_one_voxel(n_experiments, n_subjects):
    grid = _sphere()
    centre = grid.mask_ijk[len(grid.mask_ijk) // 2]
    result = _fit(grid, [[centre]] * n_experiments, [n_subjects] * n_experiments)
    _assert_in_range(result)
    assert result.maps["ale"].max() > 0


def test_foci_at_the_mask_edge_and_the_grid_corners():
    sys.path.insert(0, str(Path(__file__).parent))
    from _simulate import box_grid

    grid = _sphere()
    edge = grid.mask_ijk[[0, -1]]
    _assert_in_range(_fit(grid, [edge] * 20, [20] * 20))
    box = box_grid((12, 12, 12))
    corners = [[0, 0, 0], [11, 11, 11], [0, 11, 0], [11, 0, 11]]
    _assert_in_range(_fit(box, [corners] * 6 + [[[0, 0, 11]]], [10] * 6 + [1], iterations=32))


def test_numerical_guard_refuses_to_write_broken_maps():
    from alemap.estimator import _check_maps

    good = {"ale": np.array([0.0, -0.0, 0.5, 1.0]), "p": np.array([1.0, 1.0, 1e-300, 5e-324]), "z": np.zeros(4)}
    _check_maps(good)
    for key, bad in (("ale", np.array([0.0, 1.5, 0, 0])), ("ale", np.array([np.nan, 0, 0, 0])),
                     ("p", np.array([0.0, 1, 1, 1])), ("z", np.array([np.inf, 0, 0, 0]))):
        with pytest.raises(AlemapError, match="numerical problem in the results"):
            _check_maps({**good, key: bad})


@pytest.fixture(scope="module")
def finger_saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("float32")
    result = ALE(iterations=32, quiet=True).fit(FINGER)
    result.save(out)
    return result, out


def _written(result, out, name):
    return np.asarray(nib.load(str(out / f"{name}.nii.gz")).dataobj, dtype=np.float64).ravel()[result.grid.mask_flat]


def test_float32_maps_agree_with_float64(finger_saved):
    result, out = finger_saved
    ale = _written(result, out, "ale")
    assert np.max(np.abs(ale - result.maps["ale"])) <= 1e-7
    z = _written(result, out, "z")
    np.testing.assert_allclose(z, result.maps["z"], rtol=1e-6, atol=1e-6)
    assert nib.load(str(out / "ale.nii.gz")).get_data_dtype() == np.float32


def test_written_p_stays_positive_on_the_demo(finger_saved):
    result, out = finger_saved
    p = _written(result, out, "p")
    assert np.all(p > 0) and np.all(p <= 1)
    np.testing.assert_allclose(p[result.maps["p"] > 1e-30], result.maps["p"][result.maps["p"] > 1e-30], rtol=1e-6)


def test_written_p_stays_positive_for_strong_convergence(tmp_path):
    """p far below float32's range (1.4e-45) is written as it is: p maps are float64 files."""
    from alemap.data import ExperimentSet, FocusOrigin

    recs = [{"name": f"e{i}", "study": f"e{i}", "n_subjects": 20, "space": "MNI",
             "xyz": [[-38 + (i % 3) * 2, -24, 56]], "origins": [FocusOrigin("x", 0)]} for i in range(40)]
    result = ALE(iterations=0, quiet=True).fit(ExperimentSet.from_records(recs))
    assert result.maps["p"].min() < 1e-100  # far below float32's range
    result.save(tmp_path)
    assert np.all(_written(result, tmp_path, "p") > 0)
