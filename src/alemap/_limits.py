"""Resource limits: the memory and disk a run needs, checked before it starts.

A fit's peak memory is estimated from the experiments (foci per experiment and
their kernel sizes), the grid and the number of threads:

``base``
    the interpreter with numpy, numba, pandas and nibabel loaded, the compiled
    engine and the mask (measured: 0.2 GiB, and 0.3 GiB on a first run, when
    numba compiles the engine; counted as 0.375 GiB).
``MA maps``
    only for analyses that hold every experiment's sparse modelled-activation
    map at once (contrasts, C-SALE, subsampling stability; ``full_ma=True``):
    12 bytes (int32 voxel index + float64 value) per in-mask kernel voxel of
    every focus, an upper bound (overlapping kernels of one experiment share
    voxels). A plain ALE fit never holds them: the ALE map and the MA
    histograms come from one pass (:mod:`alemap.statistics.onepass`), and the
    contribution and robustness tables stream them ``ENTRY_CHUNK`` entries at a
    time (:mod:`alemap.reporting.robustness`).
``tables``
    that stream: ``TABLE_BYTES_PER_ENTRY`` per streamed entry.
``report``
    the HTML report's atlases and plotting libraries (``REPORT_BYTES``).
``maps``
    the ALE, p, z and corrected maps and the Monte Carlo plan over the mask,
    plus a few full-grid volumes (cluster labelling, writing NIfTI), and the
    experiments' own records.
``per job``
    each Monte Carlo thread's work arrays (:class:`alemap.inference.cpu.Workspace`:
    two float64, one int32 and two int64 arrays over the full grid, two small
    block arrays, and the window path's ring of float32 bound planes and
    per-window sums, a few MB on the 2 mm grid) and one batch of relocated foci.

The Monte Carlo, the tables and the report run one after the other, so the
peak is ``base + maps`` plus the largest of the three.

``alemap ale --max-memory 2G`` (and ``alemap run``/``alemap demo``) lowers
``--jobs`` until the estimate fits, or stops before any computation with a
message saying how much is needed; without ``--max-memory`` the cap is the
memory available on the machine (or in its container). The disk needed for
the outputs is checked the same way (:func:`check_disk`), and the output
folder must be writable (:func:`check_writable`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alemap.exceptions import AlemapError

__all__ = [
    "ResourceLimitError", "MemoryEstimate", "parse_size", "format_size", "estimate_fit_memory",
    "estimate_experiments_memory", "available_memory", "jobs_within", "estimate_output_bytes",
    "check_disk", "check_writable", "preflight",
]

#: Interpreter, libraries, compiling the engine (first run) and the mask (measured on Linux x86-64, rounded up).
BASE_BYTES = 384 * 2**20
#: Bytes per entry of the sparse MA maps (int32 voxel index + float64 value).
MA_ENTRY_BYTES = 12
#: Peak of the MA builder relative to its final size (two passes: allocated exactly once).
MA_BUILD_FACTOR = 1
#: Bytes per MA entry while the tables stream the MA maps: the entries (12), their experiment
#: numbers and cluster labels (int64) and the selection (measured: +156 MB over the fit for
#: 4 M-entry chunks, 1,000 Neurosynth tables).
TABLE_BYTES_PER_ENTRY = 40
#: MA entries per streamed chunk (alemap.reporting.robustness.ENTRY_CHUNK; a test checks they agree).
ENTRY_CHUNK = 4_000_000
#: The report's atlases (Juelich, Harvard-Oxford, AAL resampled to the grid) and plotting
#: libraries (measured: +330 MB over a finished fit on the 2 mm grid, Linux x86-64; rounded up).
REPORT_BYTES = 384 * 2**20
#: Per-thread work arrays per full-grid voxel: float64 + int32 + 2 int64 (cpu.Workspace).
WORKSPACE_BYTES_PER_VOXEL = 8 + 4 + 8 + 8
#: Per-thread block arrays per 2x2x2 block: float32 bound + int64 candidate list.
WORKSPACE_BYTES_PER_BLOCK = 12
#: Iterations per Monte Carlo batch (alemap.inference.montecarlo.BATCH_SIZE).
BATCH = 32
#: Per experiment: the experiment set (names, studies, tags), its placement and its
#: provenance records (measured: 1.3 KB retained after reading 100,000 one-focus experiments,
#: 0.71 GB peak for their whole alemap ale without the Monte Carlo; rounded up).
EXPERIMENT_BYTES = 2048
#: In-mask float64 vectors alive at once (maps, p-values, plan) and full-grid volumes.
MASK_VECTORS = 16
GRID_VOLUMES = 6

#: The engine's two tilings (alemap.inference.cpu.SLAB and SPARSE_SLAB; tests/test_limits.py
#: checks they agree).
SLAB = (4, 8, 96)
SPARSE_SLAB = (4, 4, 96)
#: Spare elements after each slab buffer (alemap.inference.cpu.ROW_PAD) and after the block
#: bounds (BOUND_PAD).
ROW_PAD = 8
BOUND_PAD = 16
#: The window path's work arrays (alemap.inference.windows.WindowWork): largest share of
#: candidate voxels, voxels per window, float32 lanes of the bound's rows.
MAX_WINDOW_SHARE = 0.15
WINDOW = 8
LANES_F32 = 16
#: Classes of kernel widths in the window path's bound (one ring of planes each; the most).
SEPARABLE_CLASSES = 2


def _window_bytes(shape, n_mask: int, n_foci: int, width: int, classes: int = SEPARABLE_CLASSES) -> int:
    """Bytes of one thread's window-path work arrays (as ``windows.WindowWork``) for a grid of
    ``shape``, kernels of edge up to ``width`` in ``classes`` classes."""
    nx, ny, nz = (int(v) for v in shape)
    r = int(width) // 2
    rings = int(classes) * (2 * r + 1)
    row = -(-int(width) // LANES_F32) * LANES_F32
    nzp = -(-(nz + r + row) // LANES_F32) * LANES_F32
    most = min(int(n_mask), int(MAX_WINDOW_SHARE * n_mask)) + 1
    return (
        4 * rings * ny * nzp + 4 * ny * nzp  # the rings of bound planes and one output plane
        + 2 * 8 * rings  # their row ranges
        + 8 * int(n_foci) + 8 * (nx + 1)  # foci sorted by x-plane
        + 2 * 8 * nx * ny  # first window and window bits per column
        + 8 * nx * -(-nz // WINDOW) * -(-ny // 64)  # columns holding windows, per x-plane and window row
        + (8 + 8 + 2 * WINDOW * 8) * most  # per window: position, experiment, sums and minima
    )


def _tiles_per_focus(kernel_voxels: int) -> int:
    """Most tiles of either tiling one kernel box touches (as MonteCarloPlan.max_tiles_per_focus)."""
    width = round(int(kernel_voxels) ** (1 / 3))
    return max(int(np.prod([(width + d - 2) // d + 1 for d in dims])) for dims in (SLAB, SPARSE_SLAB))


def _n_tiles(shape, dims) -> int:
    """Tiles of edges ``dims`` covering a grid of ``shape``."""
    return int(np.prod(-(-np.asarray(shape) // np.asarray(dims))))


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


class ResourceLimitError(AlemapError, RuntimeError):
    """A run would need more memory or disk than allowed or available; raised before it starts."""


# ------------------------------------------------------------------ sizes
def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``2G``, ``512M``, ``1.5GiB``, ``800mb`` or ``1000000``.

    Units are powers of 1024 (k, M, G, T; an optional ``B`` or ``iB`` is
    ignored, any case); a bare number is bytes.

    Raises
    ------
    ValueError
        If the text is not a positive size.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        m = _SIZE.match(str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a size; write e.g. 2G, 512M or 1.5GiB (units are powers of 1024).")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size; write e.g. 2G or 512M.")
    return value


def format_size(n: float) -> str:
    """``10`` -> ``'10 bytes'``; ``1536`` -> ``'1.5 KiB'``; ``3 * 2**30`` -> ``'3.0 GiB'``."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError  # pragma: no cover


# ------------------------------------------------------------------ memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a fit, by part (bytes); :meth:`total` for a number of jobs."""

    base: int
    ma_maps: int
    maps: int
    per_job: int
    n_experiments: int = 0
    n_foci: int = 0
    tables: int = 0
    report: int = 0

    def total(self, jobs: int = 1) -> int:
        """Peak bytes with ``jobs`` Monte Carlo threads.

        Full MA maps (analyses that need them) are built (up to
        ``MA_BUILD_FACTOR`` times their size) before the threads start and
        kept while they run; the tables and the report come after the threads.
        """
        building = MA_BUILD_FACTOR * self.ma_maps
        running = self.ma_maps + max(1, int(jobs)) * self.per_job
        return self.base + self.maps + max(building, running, self.tables, self.report)

    def describe(self, jobs: int = 1) -> str:
        """One line: the total and its parts."""
        parts = [f"MA maps {format_size(self.ma_maps)}"] if self.ma_maps else []
        parts += [f"maps {format_size(self.maps)}", f"Monte Carlo work arrays {format_size(self.per_job)} per job"]
        parts += [f"tables {format_size(self.tables)}"] if self.tables else []
        parts += [f"report {format_size(self.report)}"] if self.report else []
        return (
            f"about {format_size(self.total(jobs))} with {jobs} job(s) ({self.n_experiments:,} experiments, "
            f"{self.n_foci:,} foci): " + ", ".join(parts + [f"libraries {format_size(self.base)}"])
        )


def estimate_fit_memory(
    n_foci: int,
    n_grid: int,
    n_mask: int,
    jobs: int = 1,
    *,
    ma_entries: int | None = None,
    kernel_voxels: int = 31**3,
    n_experiments: int = 0,
    n_blocks: int | None = None,
    n_slabs: int | None = None,
    n_sparse_slabs: int | None = None,
    full_ma: bool = True,
    report: bool = False,
    shape: tuple | None = None,
) -> MemoryEstimate:
    """Peak memory of one ALE fit.

    Parameters
    ----------
    n_foci : int
        Foci in the analysis.
    n_grid, n_mask : int
        Voxels of the full grid and of the mask.
    jobs : int
        Monte Carlo threads (only used by :meth:`MemoryEstimate.total`; kept for symmetry).
    ma_entries : int, optional
        Entries of the sparse MA maps; default ``n_foci * kernel_voxels`` capped
        at ``n_mask`` per focus (see :func:`estimate_experiments_memory` for the
        exact bound from experiments).
    kernel_voxels : int
        Voxels of the largest kernel cube (31^3 for one subject).
    n_experiments : int
        Experiments (their records: ``EXPERIMENT_BYTES`` each).
    n_slabs, n_sparse_slabs : int, optional
        ``SLAB``- and ``SPARSE_SLAB``-shaped tiles covering the grid; default
        ``n_blocks`` (an upper bound).
    full_ma : bool
        Count the whole MA maps (analyses that hold them); False for a plain
        ALE fit, whose tables stream them instead.
    report : bool
        Count the HTML report.
    shape : tuple, optional
        The grid's shape, for the window path's work arrays; default twice those of a cube of
        ``n_grid`` voxels.
    n_blocks : int, optional
        2x2x2 blocks covering the grid (``prod((shape + 1) // 2)``); default
        ``n_grid``, an upper bound for any shape.
    """
    if ma_entries is None:
        ma_entries = int(n_foci) * min(int(kernel_voxels), int(n_mask))
    n_blocks = int(n_grid if n_blocks is None else n_blocks)
    n_slabs = int(n_blocks if n_slabs is None else n_slabs)
    n_sparse_slabs = int(n_blocks if n_sparse_slabs is None else n_sparse_slabs)
    width = round(int(kernel_voxels) ** (1 / 3))
    if shape is None:
        side = -(-round(n_grid ** (1 / 3) * 1e6) // 10**6)  # ceil of the cube root, robust to rounding
        windows = 2 * _window_bytes((side, side, side), n_mask, n_foci, width)
    else:
        windows = _window_bytes(shape, n_mask, n_foci, width)
    per_job = (
        WORKSPACE_BYTES_PER_VOXEL * n_grid
        + WORKSPACE_BYTES_PER_BLOCK * n_blocks
        + 8 * (n_slabs + 1) + 8 * (n_sparse_slabs + 1)  # bin pointers of both tilings
        + 16 * n_sparse_slabs  # the pruned path's z-range per sparse slab
        + 4 * BOUND_PAD  # spare float32 values after the block bounds
        + 2 * 8 * (max(int(np.prod(SLAB)), int(np.prod(SPARSE_SLAB))) + ROW_PAD)  # the two tile buffers
        + 2 * BATCH * n_foci * 8  # relocated foci of one batch, and the generator's temporary
        + 3 * 8 * n_foci  # voxel indices of one iteration
        + 4 * n_foci * _tiles_per_focus(kernel_voxels)  # the focus bins (shared by both tilings)
        + windows
    )
    maps = MASK_VECTORS * 8 * n_mask + GRID_VOLUMES * 8 * n_grid + 300 * n_foci + EXPERIMENT_BYTES * int(n_experiments)
    # one streamed chunk (at least one experiment's foci) and the MA builder's two full-grid scratch arrays
    chunk = min(int(ma_entries), max(ENTRY_CHUNK, min(int(kernel_voxels), int(n_mask))))
    return MemoryEstimate(
        base=BASE_BYTES, ma_maps=MA_ENTRY_BYTES * int(ma_entries) if full_ma else 0, maps=int(maps),
        per_job=int(per_job), n_experiments=int(n_experiments), n_foci=int(n_foci),
        tables=TABLE_BYTES_PER_ENTRY * chunk + 16 * n_grid, report=REPORT_BYTES if report else 0,
    )


def estimate_experiments_memory(experiments, grid, *, full_ma: bool = True, report: bool = False) -> MemoryEstimate:
    """:func:`estimate_fit_memory` for an :class:`~alemap.data.ExperimentSet` on a grid.

    ``full_ma``: count the whole MA maps (True, the bound for any analysis:
    contrasts, C-SALE and stability hold them; False for a plain ALE fit);
    ``report``: count the HTML report.

    Each experiment contributes at most ``min(foci x kernel voxels, mask voxels)``
    MA entries, its kernel size following from its sample size.
    """
    from alemap.kernels.gaussian import ale_kernel

    voxel = float(grid.voxel_size[0])
    sizes = np.asarray(experiments.n_subjects, dtype=np.int64)
    distinct = np.unique(sizes)
    kvox = {int(n): int(ale_kernel(int(n), voxel).size) for n in distinct}
    per_exp = np.array([kvox[int(n)] for n in sizes], dtype=np.int64) * experiments.foci_counts
    entries = int(np.minimum(per_exp, grid.n_voxels).sum())
    n_grid = int(np.prod(grid.shape))
    n_blocks = int(np.prod((np.asarray(grid.shape) + 1) // 2))
    return estimate_fit_memory(
        experiments.n_foci, n_grid, grid.n_voxels, ma_entries=entries, n_experiments=experiments.n_experiments,
        n_blocks=n_blocks, n_slabs=_n_tiles(grid.shape, SLAB), n_sparse_slabs=_n_tiles(grid.shape, SPARSE_SLAB),
        kernel_voxels=max(kvox.values()), full_ma=full_ma, report=report, shape=tuple(grid.shape),
    )


def _cgroup_available() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory() -> int | None:
    """Memory this process can still use (bytes): MemAvailable, capped by a container limit; None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            avail = None
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def jobs_within(estimate: MemoryEstimate, limit: int, jobs: int, *, what: str | None = None) -> int:
    """The largest number of jobs (<= ``jobs``) whose estimate fits in ``limit`` bytes.

    Raises
    ------
    ResourceLimitError
        If even one job does not fit; the message gives the estimate and what to do.
    """
    jobs = max(1, int(jobs))
    what = what or f"the limit of {format_size(limit)}"
    if estimate.total(1) > limit:
        raise ResourceLimitError(
            f"this analysis needs {estimate.describe(1)}; that is more than {what}. "
            "Nothing was computed. Raise --max-memory if the machine has the memory, or split the analysis "
            "into smaller ones (fewer experiments), or use a smaller mask."
        )
    while jobs > 1 and estimate.total(jobs) > limit:
        jobs -= 1
    return jobs


# ------------------------------------------------------------------ disk
def estimate_output_bytes(n_grid: int, iterations: int, n_experiments: int, n_foci: int, *, report: bool = True) -> int:
    """Upper bound of the bytes an ``alemap ale`` output folder needs.

    Seven NIfTI maps counted uncompressed (gzip only shrinks them): six
    float32 and the float64 p map, plus one float64 map more for the temporary
    file that replaces an existing one; the Monte Carlo null and its
    checkpoint, tables, provenance and the report.
    """
    maps = (6 * 4 + 8 + 8) * n_grid + 8 * 352
    null = 2 * (24 * int(iterations) + 4096)
    tables = 64 * 2**10 + 2048 * int(n_experiments)
    provenance = 16 * 2**10 + 300 * int(n_foci) + 200 * int(n_experiments)
    html = (8 * 2**20 + 1024 * int(n_experiments)) if report else 0
    return int(maps + null + tables + provenance + html)


def _existing(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def check_disk(outdir: str | Path, needed: int) -> None:
    """Raise :class:`ResourceLimitError` if ``outdir``'s file system has less than ``needed`` bytes free."""
    where = _existing(Path(outdir))
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # cannot tell (some network file systems); the writes themselves will say
    if free < needed:
        raise ResourceLimitError(
            f"the outputs need about {format_size(needed)} of disk space in {outdir}, but its file system has "
            f"only {format_size(free)} free. Nothing was computed. Free some space or choose another output "
            "folder with -o."
        )


def check_writable(outdir: str | Path) -> None:
    """Create ``outdir`` if needed and prove a file can be written in it.

    Raises
    ------
    ResourceLimitError
        With the reason (permission denied, a read-only file system, a file
        in the way) before anything is computed.
    """
    from alemap.io.atomic import TEMP_PREFIX, temp_prefix

    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temp_prefix("write-test"), dir=out)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or str(err)
        other = str(err.filename) if err.filename is not None else ""
        if other and other != str(out) and not Path(other).name.startswith(TEMP_PREFIX):
            reason += f": {other}"  # e.g. a parent folder that cannot be created
        raise ResourceLimitError(
            f"cannot write in the output folder {out} ({reason}). "
            "Nothing was computed. Choose another folder with -o, or fix its permissions."
        ) from None


# ------------------------------------------------------------------ the check before a run
def preflight(experiments, grid, *, jobs: int, iterations: int, outdir, max_memory: int | None,
              report: bool = True, n_analyses: int = 1, quiet: bool = False, full_ma: bool = True) -> int:
    """Check disk and memory before a run; return the number of jobs to use.

    ``max_memory=None`` caps memory at :func:`available_memory` (when known).
    ``full_ma=False`` for runs that never hold every MA map at once (``alemap
    ale``). A note goes to stderr when ``jobs`` is lowered.
    """
    check_writable(outdir)
    if not isinstance(jobs, int) or jobs < 1:
        return jobs  # an invalid value is the estimator's to report
    n_grid = int(np.prod(grid.shape))
    check_disk(outdir, n_analyses * estimate_output_bytes(n_grid, iterations, experiments.n_experiments,
                                                          experiments.n_foci, report=report))
    estimate = estimate_experiments_memory(experiments, grid, full_ma=full_ma, report=report)
    if max_memory is not None:
        limit, what = int(max_memory), f"--max-memory {format_size(max_memory)}"
    else:
        limit = available_memory()
        if limit is None:
            return jobs
        what = f"the {format_size(limit)} of memory available on this machine (pass --max-memory to set the cap)"
    fitted = jobs_within(estimate, limit, jobs, what=what)
    if fitted < jobs and not quiet:
        print(f"alemap: note: using {fitted} job(s) instead of {jobs} to stay within {what}: "
              f"{estimate.describe(fitted)}.", file=sys.stderr)
    return fitted
