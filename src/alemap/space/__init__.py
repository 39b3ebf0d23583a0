"""Space layer: the analysis grid, its mask, coordinate transforms and focus placement.

Layer 2 of alemap: imports only :mod:`alemap.data` and :mod:`alemap.exceptions`.
"""

from alemap.space.grid import Grid, load_grid, load_mni152_2mm
from alemap.space.placement import PLACEMENTS, place_foci
from alemap.space.transforms import TAL2MNI_VARIANTS, mni2tal, tal2mni

__all__ = [
    "Grid",
    "load_grid",
    "load_mni152_2mm",
    "PLACEMENTS",
    "place_foci",
    "TAL2MNI_VARIANTS",
    "mni2tal",
    "tal2mni",
]
