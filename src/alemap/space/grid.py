"""The analysis grid: voxel shape, affine and in-brain mask.

The default grid is the MNI152 2 mm brain mask shipped with alemap (91 x 109 x
91 voxels, 228,483 in the mask; the same voxel set as GingerALE's
``MNI152_wb`` and NiMARE's ``ale_2mm`` template; MIT notice beside the file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from alemap.exceptions import InputError

__all__ = ["Grid", "load_grid", "load_mni152_2mm", "MNI152_2MM_NAME"]

MNI152_2MM_NAME = "MNI152_2mm_brainmask.nii.gz"


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3-D voxel grid with an affine and a boolean mask.

    Attributes
    ----------
    shape : tuple of int
        Voxel dimensions.
    affine : ndarray (4, 4)
        Voxel-to-mm transform.
    mask : ndarray of bool, shape ``shape``
        In-analysis voxels.
    name : str
        Where the mask came from (file name), for provenance.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray
    name: str = "custom"

    @property
    def n_voxels(self) -> int:
        """Number of in-mask voxels."""
        return int(self.mask.sum())

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm3 (rounded to 1e-6 so 2 mm voxels are exactly 8)."""
        return round(float(abs(np.linalg.det(self.affine[:3, :3]))), 6)

    @property
    def mask_flat(self) -> np.ndarray:
        """C-order flat indices of the in-mask voxels (ascending)."""
        return np.flatnonzero(self.mask.ravel())

    @property
    def mask_ijk(self) -> np.ndarray:
        """Voxel indices (n_voxels, 3) of the in-mask voxels, in flat order."""
        return np.column_stack(np.unravel_index(self.mask_flat, self.shape)).astype(np.int32)

    def ijk_to_mm(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel centres in mm for integer indices."""
        ijk = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def mm_to_continuous_ijk(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel coordinates of mm positions."""
        inv = np.linalg.inv(self.affine)
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def in_grid(self, ijk: np.ndarray) -> np.ndarray:
        """True where integer indices fall inside the grid."""
        ijk = np.asarray(ijk).reshape(-1, 3)
        return np.all((ijk >= 0) & (ijk < np.asarray(self.shape)), axis=1)

    def to_volume(self, values: np.ndarray, fill: float = 0.0, dtype=np.float32) -> np.ndarray:
        """Scatter in-mask values (flat order) into a full volume."""
        vol = np.full(self.shape, fill, dtype=dtype)
        vol.reshape(-1)[self.mask_flat] = values
        return vol

    def to_image(self, values: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
        """NIfTI image of in-mask values (zero outside the mask)."""
        img = nib.Nifti1Image(self.to_volume(values, dtype=dtype), self.affine)
        img.header.set_qform(self.affine, code=4)
        img.header.set_sform(self.affine, code=4)
        return img

    def digest(self) -> str:
        """SHA-256 of the affine and mask, for provenance and resume checks."""
        h = hashlib.sha256()
        h.update(np.asarray(self.shape, dtype=np.int64).tobytes())
        h.update(np.round(self.affine, 6).astype(np.float64).tobytes())
        h.update(np.packbits(self.mask.ravel()).tobytes())
        return h.hexdigest()


def load_grid(path: str | Path) -> Grid:
    """Load a mask image as the analysis grid (non-zero voxels are in the mask)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Mask file '{path}' does not exist; pass an existing NIfTI mask or omit it to use MNI152 2 mm.")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types
        raise InputError(f"Mask file '{path}' could not be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"Mask file '{path}' has {data.ndim} dimensions; a 3-D mask is needed.")
    mask = np.asarray(data != 0) & np.isfinite(data)
    if not mask.any():
        raise InputError(f"Mask file '{path}' has no non-zero voxel.")
    return Grid(tuple(int(s) for s in data.shape), np.asarray(img.affine, dtype=np.float64), mask, name=path.name)


def load_mni152_2mm() -> Grid:
    """The shipped MNI152 2 mm brain mask (228,483 voxels)."""
    ref = resources.files("alemap.resources").joinpath(MNI152_2MM_NAME)
    with resources.as_file(ref) as p:
        grid = load_grid(p)
    return Grid(grid.shape, grid.affine, grid.mask, name=MNI152_2MM_NAME)
