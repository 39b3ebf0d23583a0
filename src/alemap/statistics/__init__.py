"""Statistics layer: pure array functions of ALE.

Modelled-activation maps and their union (Turkeltaub et al. 2012), the
analytic null (Eickhoff et al. 2012), p <-> z, and voxel-wise thresholds.
Layer 4 of alemap: imports :mod:`alemap.kernels` and :mod:`alemap.space`.
"""

from alemap.statistics.ale import MAMaps, ale_from_ma, ma_maps
from alemap.statistics.null import AnalyticNull, analytic_null
from alemap.statistics.pz import p_to_z, z_to_p

__all__ = ["MAMaps", "ma_maps", "ale_from_ma", "AnalyticNull", "analytic_null", "p_to_z", "z_to_p"]
