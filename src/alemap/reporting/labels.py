"""Peaks, sub-peaks and anatomical labels of clusters.

* :func:`peaks_table` -- the peak and up to ``max_subpeaks`` sub-peaks of each
  cluster: local maxima of the map inside the cluster (26-neighbourhood),
  taken greedily from the largest, at least ``min_distance_mm`` apart (the
  same idea as nilearn's ``get_clusters_table``, with alemap's own code).
* :func:`label_clusters` -- per cluster and atlas, the region at the peak and
  the three regions the cluster overlaps most, plus the AAL2 cerebellar lobule
  at the peak and its functional zone (motor / mixed / cognitive / vestibular;
  mapping and citations in ``resources/networks/motor_learning_network.yaml``).
* :func:`write_labelled_table` -- both for an ``alemap ale`` output folder (or
  an :class:`~alemap.result.ALEResult`), written as ``clusters_labelled.tsv``.

Atlas labels need the atlas data (``pip install "alemap[atlases]"``); with
``atlases=()`` nothing is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.io.atomic import write_text
from alemap.space.grid import Grid

__all__ = [
    "DEFAULT_ATLASES",
    "PEAK_COLUMNS",
    "peaks_table",
    "label_clusters",
    "cerebellar_zone",
    "write_labelled_table",
]

DEFAULT_ATLASES = ("juelich", "harvard_oxford", "aal")
PEAK_COLUMNS = ["cluster", "peak", "x", "y", "z", "value"]
_LABELLED_NAME = "clusters_labelled.tsv"


def _default_grid(grid: Grid | None) -> Grid:
    if grid is not None:
        return grid
    from alemap.space.grid import load_mni152_2mm

    return load_mni152_2mm()


def _in_mask(values, grid: Grid, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.shape == tuple(grid.shape):
        a = a.reshape(-1)[grid.mask_flat]
    if a.shape != (grid.n_voxels,):
        raise ParameterError(f"{what} has shape {np.asarray(values).shape}; expected ({grid.n_voxels},) over the "
                             f"grid's in-mask voxels or the grid shape {tuple(grid.shape)}.")
    return a


def _cluster_ids(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.dtype.kind == "f":
        lab = np.where(np.isfinite(lab), np.rint(lab), 0)
    lab = lab.astype(np.int64)
    return lab


# --------------------------------------------------------------------------- peaks

def peaks_table(z_or_stat_in_mask, cluster_labels_in_mask, grid: Grid | None = None,
                min_distance_mm: float = 8.0, max_subpeaks: int = 3) -> pd.DataFrame:
    """Peak and sub-peaks of every cluster.

    Parameters
    ----------
    z_or_stat_in_mask : array
        The map (e.g. z), over the grid's in-mask voxels (or the full grid).
    cluster_labels_in_mask : array of int
        Cluster number per voxel (0 = none), same layout.
    grid : Grid, optional
        The analysis grid (MNI152 2 mm by default).
    min_distance_mm : float
        Smallest distance between two reported maxima of one cluster.
    max_subpeaks : int
        Sub-peaks reported per cluster besides the main peak.

    Returns
    -------
    DataFrame
        Columns :data:`PEAK_COLUMNS`: ``peak`` 0 is the cluster's maximum,
        1, 2, ... its sub-peaks in decreasing value; ``x, y, z`` in mm. A
        candidate is a voxel whose value is >= every 26-neighbour inside the
        same cluster; candidates are taken from the largest, skipping any
        closer than ``min_distance_mm`` to one already taken.
    """
    from scipy import ndimage

    grid = _default_grid(grid)
    if min_distance_mm < 0 or not np.isfinite(min_distance_mm):
        raise ParameterError(f"min_distance_mm must be a finite number >= 0, got {min_distance_mm}.")
    if int(max_subpeaks) < 0:
        raise ParameterError(f"max_subpeaks must be >= 0, got {max_subpeaks}.")
    stat = np.asarray(_in_mask(z_or_stat_in_mask, grid, "The statistic map"), dtype=np.float64)
    labels = _cluster_ids(_in_mask(cluster_labels_in_mask, grid, "The cluster labels"))
    lab_vol = grid.to_volume(labels, dtype=np.int64)
    val_vol = grid.to_volume(np.where(np.isfinite(stat), stat, -np.inf), fill=-np.inf, dtype=np.float64)
    footprint = np.ones((3, 3, 3), dtype=bool)
    objects = ndimage.find_objects(lab_vol)
    rows = []
    for c in np.unique(labels[labels > 0]):
        sl = objects[c - 1]
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        inside = lab_vol[sl] == c
        vals = np.where(inside, val_vol[sl], -np.inf)
        local = inside & (vals >= ndimage.maximum_filter(vals, footprint=footprint, mode="constant", cval=-np.inf))
        cand = np.argwhere(local)
        cand_vals = vals[local]
        order = np.lexsort((np.arange(len(cand)), -cand_vals))  # largest first, then C order
        offset = np.array([s.start for s in sl])
        taken_mm: list[np.ndarray] = []
        for k in order:
            ijk = cand[k] + offset
            mm = grid.ijk_to_mm(ijk)[0]
            if any(np.linalg.norm(mm - t) < min_distance_mm - 1e-9 for t in taken_mm):
                continue
            rows.append({"cluster": int(c), "peak": len(taken_mm), "x": float(mm[0]), "y": float(mm[1]),
                         "z": float(mm[2]), "value": float(cand_vals[k])})
            taken_mm.append(mm)
            if len(taken_mm) > int(max_subpeaks):
                break
    return pd.DataFrame(rows, columns=PEAK_COLUMNS).astype({"cluster": np.int64, "peak": np.int64})


# --------------------------------------------------------------------------- labels

def cerebellar_zone(region: str, network="motor_learning") -> str:
    """Functional zone of an AAL2 cerebellar region ('' if not cerebellar).

    motor (anterior lobe I-V, VIII), mixed (VI), cognitive (Crus I, Crus II,
    VIIb, IX, vermis VII), vestibular (X); see the network file for the
    citations.
    """
    from alemap.reporting.network import cerebellar_zones

    return cerebellar_zones(network).get(region, "")


def _pct(f: float) -> str:
    p = 100.0 * f
    return "<1%" if 0 < p < 0.5 else f"{p:.0f}%"



def _peaks_from_table(table: pd.DataFrame) -> pd.DataFrame:
    if "cluster" not in table.columns:
        raise ParameterError("The cluster table needs a 'cluster' column.")
    t = table
    if "peak" in t.columns:  # a peaks_table: main peaks only
        t = t[t["peak"] == 0]
    for cols in (("peak_x", "peak_y", "peak_z"), ("x", "y", "z")):
        if all(c in t.columns for c in cols):
            out = pd.DataFrame({"cluster": t["cluster"].astype(np.int64).to_numpy(),
                                "x": t[cols[0]].astype(float).to_numpy(), "y": t[cols[1]].astype(float).to_numpy(),
                                "z": t[cols[2]].astype(float).to_numpy()})
            for vcol in ("value", "peak_stat_z"):
                if vcol in t.columns:
                    out["value"] = t[vcol].astype(float).to_numpy()
                    break
            return out
    raise ParameterError("The cluster table needs peak coordinates: columns peak_x/peak_y/peak_z or x/y/z.")


def _peaks_from_labels(labels: np.ndarray, stat, grid: Grid) -> pd.DataFrame:
    if stat is not None:
        p = peaks_table(stat, labels, grid, min_distance_mm=0.0, max_subpeaks=0)
        return p.drop(columns="peak")
    rows = []
    xyz_all = grid.ijk_to_mm(grid.mask_ijk)
    for c in np.unique(labels[labels > 0]):  # no statistic: the voxel nearest the centroid
        members = np.flatnonzero(labels == c)
        xyz = xyz_all[members]
        mm = xyz[np.argmin(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1))]
        rows.append({"cluster": int(c), "x": float(mm[0]), "y": float(mm[1]), "z": float(mm[2])})
    return pd.DataFrame(rows, columns=["cluster", "x", "y", "z"])


def _load(names, grid):
    from alemap.space.atlases import load_atlas

    try:
        return {a: load_atlas(a, grid) for a in names}
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"Cluster labels need the atlas data. {exc} Or pass atlases=() to skip the labels."
        ) from exc


def label_clusters(table_or_cluster_labels, grid: Grid | None = None, atlases=DEFAULT_ATLASES, *,
                   stat=None, cluster_labels=None, top: int = 3, cerebellum: bool | None = None,
                   network="motor_learning") -> pd.DataFrame:
    """Anatomical labels of clusters: one row per cluster.

    Parameters
    ----------
    table_or_cluster_labels : DataFrame or array
        Either a cluster table (a ``cluster`` column and peak coordinates
        ``peak_x/peak_y/peak_z`` as in ``clusters.tsv``, or ``x/y/z`` as in
        :func:`peaks_table`, whose main peaks are used), or the cluster number
        of every in-mask voxel (0 = none; in-mask vector or full volume).
    grid : Grid, optional
        The analysis grid (MNI152 2 mm by default).
    atlases : sequence of str
        Any of ``"juelich"``, ``"harvard_oxford"``, ``"aal"``; ``()`` gives the
        peaks only and reads no atlas.
    stat : array, optional
        With cluster labels: the map whose maximum is each cluster's peak
        (without it, the cluster voxel nearest the centroid is used).
    cluster_labels : array, optional
        With a table: the cluster numbers per voxel, for the overlap columns
        (left empty without them).
    top : int
        Regions listed in each overlap column.
    cerebellum : bool, optional
        Add ``cerebellar_lobule`` (AAL2 cerebellar region at the peak, '' if
        none) and ``cerebellar_zone``; default: when ``"aal"`` is in ``atlases``.
    network : str or path
        Network file whose ``cerebellar_zones`` give the zones.

    Returns
    -------
    DataFrame
        ``cluster, x, y, z`` (peak, mm), ``value`` (peak statistic, when
        known), ``voxels`` (when cluster labels are given), then per atlas
        ``peak_label_<atlas>`` (region at the peak; with its probability for
        Juelich and Harvard-Oxford) and ``overlap_<atlas>`` (e.g.
        ``"GM_Primary_motor_cortex_BA4p_L 36%; ..."``: for AAL the share of
        the cluster's voxels in the region, for the probabilistic atlases the
        region's mean probability over the cluster; shares under 0.5 % are
        left out), then the cerebellar columns.
    """
    from alemap.space.atlases import available_atlases, cerebellar_lobules, label_point, region_overlap

    grid = _default_grid(grid)
    atlases = tuple(atlases)
    unknown = [a for a in atlases if a not in available_atlases()]
    if unknown:
        raise ParameterError(f"Unknown atlas(es) {unknown}; expected some of {available_atlases()}.")
    if isinstance(table_or_cluster_labels, pd.DataFrame):
        peaks = _peaks_from_table(table_or_cluster_labels)
        labels = None if cluster_labels is None else _cluster_ids(_in_mask(cluster_labels, grid, "The cluster labels"))
    else:
        labels = _cluster_ids(_in_mask(table_or_cluster_labels, grid, "The cluster labels"))
        if stat is not None:
            stat = _in_mask(stat, grid, "The statistic map")
        peaks = _peaks_from_labels(labels, stat, grid)
    out = peaks.copy()
    if labels is not None:
        counts = np.bincount(labels[labels > 0], minlength=int(out["cluster"].max() if len(out) else 0) + 1)
        out["voxels"] = [int(counts[c]) if c < len(counts) else 0 for c in out["cluster"]]
    loaded = _load(atlases, grid)
    for name in atlases:
        atlas = loaded[name]
        peak_col, over_col = [], []
        for row in out.itertuples(index=False):
            hits = label_point(atlas, (row.x, row.y, row.z))
            if not hits:
                peak_col.append("")
            elif atlas.probabilistic:
                peak_col.append(f"{hits[0][0]} ({_pct(hits[0][1])})")
            else:
                peak_col.append(hits[0][0])
            if labels is None:
                over_col.append("")
            else:
                ov = [t for t in region_overlap(atlas, labels == row.cluster) if t[1] >= 0.005][: int(top)]
                over_col.append("; ".join(f"{r} {_pct(f)}" for r, f in ov))
        out[f"peak_label_{name}"] = peak_col
        out[f"overlap_{name}"] = over_col
    if cerebellum is None:
        cerebellum = "aal" in atlases
    if cerebellum:
        try:
            cb = cerebellar_lobules(grid)
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(f"Cerebellar labels need the atlas data. {exc} "
                                          "Or pass cerebellum=False.") from exc
        from alemap.reporting.network import cerebellar_zones

        zones = cerebellar_zones(network)
        lob = []
        for row in out.itertuples(index=False):
            hits = label_point(cb, (row.x, row.y, row.z))
            lob.append(hits[0][0] if hits else "")
        out["cerebellar_lobule"] = lob
        out["cerebellar_zone"] = [zones.get(r, "") for r in lob]
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- files

def _grid_of(img, cluster_vol: np.ndarray) -> Grid:
    from alemap.space.grid import load_mni152_2mm

    ref = load_mni152_2mm()
    affine = np.asarray(img.affine, dtype=np.float64)
    if tuple(img.shape[:3]) == tuple(ref.shape) and np.allclose(affine, ref.affine, atol=1e-4):
        return ref
    # another grid: label only what is there (the cluster voxels)
    return Grid(tuple(int(s) for s in img.shape[:3]), affine, cluster_vol > 0, name="clusters")


def _read(path: Path) -> tuple:
    import nibabel as nib

    if not path.is_file():
        raise InputError(f"'{path}' does not exist; write_labelled_table needs an 'alemap ale' output folder "
                         "(clusters.nii.gz and z.nii.gz).")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types
        raise InputError(f"'{path}' could not be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return img, data


def _format_subpeaks(peaks: pd.DataFrame, cluster: int) -> str:
    sub = peaks[(peaks["cluster"] == cluster) & (peaks["peak"] > 0)]
    return "; ".join(f"({r.x:.0f}, {r.y:.0f}, {r.z:.0f}) {r.value:.2f}" for r in sub.itertuples(index=False))


def write_labelled_table(result_or_folder, out_tsv: str | Path | None = None, atlases=DEFAULT_ATLASES,
                         min_distance_mm: float = 8.0, max_subpeaks: int = 3) -> pd.DataFrame:
    """Label the clusters of an ALE result and write ``clusters_labelled.tsv``.

    ``result_or_folder`` is an :class:`~alemap.result.ALEResult` or an
    ``alemap ale`` output folder (``clusters.nii.gz`` and ``z.nii.gz`` are
    read). The table is :func:`label_clusters` with the peak taken on z, plus
    ``volume_mm3`` and ``subpeaks`` (sub-peaks of :func:`peaks_table` as
    ``"(x, y, z) z; ..."``). Written atomically to ``out_tsv`` (default:
    ``<folder>/clusters_labelled.tsv``; required for a result) and returned.
    """
    if isinstance(result_or_folder, (str, Path)):
        folder = Path(result_or_folder)
        if not folder.is_dir():
            raise InputError(f"Output folder '{folder}' does not exist.")
        cimg, cvol = _read(folder / "clusters.nii.gz")
        _, zvol = _read(folder / "z.nii.gz")
        if zvol.shape != cvol.shape:
            raise InputError(f"'{folder}': z.nii.gz {zvol.shape} and clusters.nii.gz {cvol.shape} differ in shape.")
        grid = _grid_of(cimg, np.nan_to_num(cvol))
        labels = np.nan_to_num(cvol).reshape(-1)[grid.mask_flat]
        z = zvol.reshape(-1)[grid.mask_flat]
        out = folder / _LABELLED_NAME if out_tsv is None else Path(out_tsv)
    else:
        res = result_or_folder
        if not hasattr(res, "maps") or not hasattr(res, "grid"):
            raise ParameterError("Expected an ALEResult or the path of an 'alemap ale' output folder.")
        grid = res.grid
        labels, z = res.maps["clusters"], res.maps["z"]
        if out_tsv is None:
            raise ParameterError("out_tsv is required when labelling an ALEResult (it has no folder).")
        out = Path(out_tsv)
    labels = _cluster_ids(labels)
    table = label_clusters(labels, grid, atlases, stat=z)
    voxel_mm3 = grid.voxel_volume_mm3
    if len(table):
        table.insert(table.columns.get_loc("voxels") + 1, "volume_mm3", table["voxels"] * voxel_mm3)
        peaks = peaks_table(z, labels, grid, min_distance_mm=min_distance_mm, max_subpeaks=max_subpeaks)
        table["subpeaks"] = [_format_subpeaks(peaks, c) for c in table["cluster"]]
    else:
        table["volume_mm3"] = pd.Series(dtype=float)
        table["subpeaks"] = pd.Series(dtype=str)
    write_text(out, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    return table
