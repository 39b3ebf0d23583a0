"""I/O layer: reads foci files into :class:`alemap.data.ExperimentSet`.

Sleuth/GingerALE text, foci tables (CSV, TSV, TXT, XLSX) and NiMARE dataset
JSON. This layer only parses and validates input, keeping the file and line of
every focus; it knows nothing of grids, kernels or statistics and converts no
coordinates (Talairach -> MNI lives in :mod:`alemap.space`).
"""

from alemap.io.load import load_experiments
from alemap.io.neurostore import read_neurostore
from alemap.io.nimare_json import read_nimare_json
from alemap.io.sleuth import read_sleuth
from alemap.io.tables import read_table

__all__ = ["load_experiments", "read_sleuth", "read_table", "read_nimare_json", "read_neurostore"]
