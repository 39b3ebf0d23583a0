"""Figures of statistical maps: orthogonal slices, glass brain, cerebellum view.

Drawn with matplotlib (Agg backend, no display needed) from alemap's own grid;
no nilearn. The background is the MNI152 T1 template shipped with the optional
atlas data (``alemap[atlases]``) when present, else the brain mask.

* :func:`slices_figure`: sagittal, coronal and axial slices through a point
  (the peak by default), the map thresholded at > 0 in a hot colour map.
* :func:`glass_brain_figure`: maximum-intensity projections in three
  directions over the mask's silhouette (a "glass brain").
* :func:`cerebellum_figure`: axial and coronal slices through the cerebellum.

Each figure is written as PNG and SVG, atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alemap.exceptions import BackendUnavailableError
from alemap.io.atomic import atomic_path
from alemap.space.grid import Grid

__all__ = ["slices_figure", "glass_brain_figure", "cerebellum_figure", "save_figure", "background"]


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a report dependency
        raise BackendUnavailableError('Figures need matplotlib: pip install "alemap[report]".') from exc
    return plt


def save_figure(fig, out_base: str | Path) -> list[Path]:
    """Write ``out_base``.png and .svg atomically; returns the paths."""
    plt = _plt()
    paths = []
    for ext in ("png", "svg"):
        final = Path(f"{out_base}.{ext}")
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight", facecolor=fig.get_facecolor(),
                        metadata={"Date": None} if ext == "svg" else {"Software": None})
        paths.append(final)
    plt.close(fig)
    return paths


def background(grid: Grid) -> np.ndarray:
    """A grey background volume on the grid: T1 template if available, else the mask."""
    try:
        from alemap.space.atlases import atlas_data_dir

        import nibabel as nib
        from scipy import ndimage

        path = atlas_data_dir().parent / "templates" / "MNI152_T1_1mm_brain.nii.gz"
        img = nib.load(str(path))
        vox = np.linalg.inv(img.affine) @ np.vstack([grid.ijk_to_mm(np.argwhere(np.ones(grid.shape))).T,
                                                      np.ones(int(np.prod(grid.shape)))])
        data = np.asarray(img.dataobj, dtype=np.float32)
        vals = ndimage.map_coordinates(data, vox[:3], order=1, mode="constant")
        return vals.reshape(grid.shape)
    except Exception:  # no atlas data: fall back to the mask itself
        return grid.mask.astype(np.float32)


def _to_ras(vol: np.ndarray, grid: Grid) -> np.ndarray:
    # flip axes so that increasing index = increasing mm (x-flipped masks become RAS)
    out = vol
    for axis in range(3):
        if grid.affine[axis, axis] < 0:
            out = np.flip(out, axis=axis)
    return out


def _slice_index(grid: Grid, xyz) -> np.ndarray:
    ijk = np.rint(grid.mm_to_continuous_ijk(np.asarray(xyz, dtype=float))[0]).astype(int)
    ijk = np.clip(ijk, 0, np.asarray(grid.shape) - 1)
    for axis in range(3):
        if grid.affine[axis, axis] < 0:
            ijk[axis] = grid.shape[axis] - 1 - ijk[axis]
    return ijk


def _panel(ax, bg, stat, vmax, cmap):
    ax.imshow(bg.T, origin="lower", cmap="gray", interpolation="nearest")
    masked = np.ma.masked_where(stat.T <= 0, stat.T)
    im = ax.imshow(masked, origin="lower", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    return im


def slices_figure(values: np.ndarray, grid: Grid, title: str, at_mm=None, cmap: str = "hot"):
    """Orthogonal slices of an in-mask map through ``at_mm`` (default: its peak)."""
    plt = _plt()
    vol = _to_ras(grid.to_volume(values, dtype=np.float64), grid)
    bg = _to_ras(background(grid), grid)
    if at_mm is None:
        peak = int(np.argmax(values)) if np.any(values > 0) else 0
        at_mm = grid.ijk_to_mm(grid.mask_ijk[peak])[0]
    i, j, k = _slice_index(grid, at_mm)
    vmax = float(values.max()) if np.any(values > 0) else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), facecolor="black")
    views = [(bg[i], vol[i], f"x = {at_mm[0]:.0f}"), (bg[:, j], vol[:, j], f"y = {at_mm[1]:.0f}"),
             (bg[:, :, k], vol[:, :, k], f"z = {at_mm[2]:.0f}")]
    im = None
    for ax, (b, s, label) in zip(axes, views):
        im = _panel(ax, b, s, vmax, cmap)
        ax.set_title(label, color="white", fontsize=10)
    fig.suptitle(title, color="white", fontsize=11)
    cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    cbar.ax.tick_params(colors="white", labelsize=8)
    cbar.set_label("z", color="white")
    return fig


def glass_brain_figure(values: np.ndarray, grid: Grid, title: str, cmap: str = "hot"):
    """Maximum-intensity projections (sagittal, coronal, axial) over the mask silhouette."""
    plt = _plt()
    vol = _to_ras(grid.to_volume(np.clip(values, 0, None), dtype=np.float64), grid)
    mask = _to_ras(grid.mask.astype(float), grid)
    vmax = float(vol.max()) if vol.max() > 0 else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), facecolor="white")
    for ax, axis, label in zip(axes, (0, 1, 2), ("sagittal", "coronal", "axial")):
        sil = mask.max(axis=axis)
        mip = vol.max(axis=axis)
        ax.imshow(sil.T, origin="lower", cmap="Greys", vmin=0, vmax=4, interpolation="nearest")
        ax.contour(sil.T, levels=[0.5], colors="0.4", linewidths=0.8)
        ax.imshow(np.ma.masked_where(mip.T <= 0, mip.T), origin="lower", cmap=cmap, vmin=0, vmax=vmax,
                  interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return fig


def cerebellum_figure(values: np.ndarray, grid: Grid, title: str, cmap: str = "hot"):
    """Axial slices through the cerebellum (z = -50 ... -10 mm) and a coronal slice at y = -60."""
    plt = _plt()
    vol = _to_ras(grid.to_volume(values, dtype=np.float64), grid)
    bg = _to_ras(background(grid), grid)
    vmax = float(values.max()) if np.any(values > 0) else 1.0
    zs = (-50, -40, -30, -20, -10)
    fig, axes = plt.subplots(1, len(zs) + 1, figsize=(12, 2.8), facecolor="black")
    x0, x1 = _slice_index(grid, (-60, -95, 0))[0], _slice_index(grid, (60, -95, 0))[0]
    y0, y1 = _slice_index(grid, (0, -100, 0))[1], _slice_index(grid, (0, -30, 0))[1]
    for ax, z in zip(axes, zs):
        k = _slice_index(grid, (0, 0, z))[2]
        _panel(ax, bg[x0:x1, y0:y1, k], vol[x0:x1, y0:y1, k], vmax, cmap)
        ax.set_title(f"z = {z}", color="white", fontsize=9)
    j = _slice_index(grid, (0, -60, 0))[1]
    z0, z1 = _slice_index(grid, (0, 0, -65))[2], _slice_index(grid, (0, 0, 0))[2]
    _panel(axes[-1], bg[x0:x1, j, z0:z1], vol[x0:x1, j, z0:z1], vmax, cmap)
    axes[-1].set_title("y = -60", color="white", fontsize=9)
    fig.suptitle(title, color="white", fontsize=11)
    return fig
