"""One entry point for every supported foci file: :func:`load_experiments`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from alemap.data import ExperimentSet
from alemap.exceptions import InputError
from alemap.io.neurostore import read_neurostore
from alemap.io.nimare_json import read_nimare_json
from alemap.io.sleuth import read_sleuth, read_text_file
from alemap.io.tables import read_table

__all__ = ["load_experiments", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".txt", ".sleuth", ".csv", ".tsv", ".xlsx", ".xls", ".json")
_NUMERIC_ROW = re.compile(r"^[\s,;]*[+\-\u2212]?[\d.]")


def _is_table_txt(path: Path) -> bool:
    """A ``.txt`` is a table when its first non-blank line is a delimited header, not ``//`` or a focus."""
    text = read_text_file(path).lstrip("\ufeff")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first or first.startswith("//") or _NUMERIC_ROW.match(first):
        return False
    return any(sep in first for sep in ("\t", ",", ";"))


def _load_one(path: Path, space: str | None, sheet: str | int | None) -> ExperimentSet:
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path and the working directory.")
    suffix = path.suffix.lower()
    if suffix == ".parquet" or path.is_dir():  # NeuroStore studyset: its folder or one of its tables
        return read_neurostore(path)
    if not path.is_file():  # a pipe or a device would block or never end
        raise InputError(f"{path}: not a regular file (a pipe or a device?); save the foci to a file and give its path.")
    if suffix == ".json":
        return read_nimare_json(path, space=space)
    if suffix in (".csv", ".tsv", ".xlsx", ".xls"):
        return read_table(path, sheet, space=space)
    if suffix == ".sleuth" or (suffix == ".txt" and not _is_table_txt(path)):
        return read_sleuth(path, space=space)
    if suffix == ".txt":
        return read_table(path, space=space)
    raise InputError(
        f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
        f"supported suffixes are {', '.join(SUPPORTED_SUFFIXES)}. Rename or convert the file."
    )


def load_experiments(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    space: str | None = None,
    sheet: str | int | None = None,
) -> ExperimentSet:
    """Read one or several foci files into one :class:`ExperimentSet`.

    Parameters
    ----------
    paths : path or sequence of paths
        Sleuth text (``.txt``, ``.sleuth``), tables (``.csv``, ``.tsv``,
        tab-separated ``.txt``, ``.xlsx``) or NiMARE JSON (``.json``). A
        ``.txt`` is Sleuth unless its first non-blank line is a delimited
        header row rather than ``//`` or a focus.
    space : {"MNI", "TAL", "Talairach"}, optional
        Fallback space for input that does not state one (a table without a
        space column, a Sleuth file without ``// Reference=``).
    sheet : str or int, optional
        Excel sheet to read; default the first.

    Returns
    -------
    ExperimentSet
        All files' experiments, in file order; names must be unique across files.

    Raises
    ------
    InputError
        Missing or unreadable files, unsupported suffixes, malformed content.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("load_experiments: no input files given; pass a path or a list of paths.")
    sets = [_load_one(p, space, sheet) for p in paths]
    return sets[0] if len(sets) == 1 else ExperimentSet.concat(sets)
