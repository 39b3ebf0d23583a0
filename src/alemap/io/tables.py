"""Reader for foci tables: CSV, TSV, tab-separated TXT and Excel (.xlsx).

One row per focus. Column names are matched case-insensitively, with
surrounding spaces stripped and inner spaces/hyphens read as ``_``:

============  =================================================  ========
role          accepted names (first one present wins)            required
============  =================================================  ========
study         study, study_id, author                            yes
experiment    experiment, contrast, contrast_id, analysis        no
subjects      subjects, n, n_subjects, sample_size               yes
x, y, z       x, y, z                                            yes
space         space, reference                                   no [1]_
============  =================================================  ========

.. [1] Without a space column, ``space=`` must be passed.

Every other column is a string tag of the experiment. Row numbers in messages
and in :class:`FocusOrigin` are spreadsheet rows: the header is row 1.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError
from alemap.io.sleuth import MAX_ABS_MM, MAX_SUBJECTS, resolve_space_argument, canonical_space, read_text_file

__all__ = ["read_table", "TABLE_SUFFIXES"]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xls")

_ROLES = {
    "study": ("study", "study_id", "author"),
    "experiment": ("experiment", "contrast", "contrast_id", "analysis"),
    "subjects": ("subjects", "n", "n_subjects", "sample_size"),
    "x": ("x",),
    "y": ("y",),
    "z": ("z",),
    "space": ("space", "reference"),
}
_REQUIRED = ("study", "subjects", "x", "y", "z")
_MAX_ROWS_SHOWN = 5


# ------------------------------------------------------------------ reading
def _read_frame(path: Path, sheet: str | int | None) -> tuple[pd.DataFrame, str]:
    """Raw cells as stripped strings (header row included) and a display name."""
    suffix = path.suffix.lower()
    label = f"{path}[{sheet}]" if sheet is not None and suffix in (".xlsx", ".xls") else str(path)
    frame = _read_excel(path, sheet) if suffix in (".xlsx", ".xls") else _read_delimited(path, suffix)
    frame = frame.fillna("").astype(str).apply(lambda col: col.str.strip())
    if frame.shape[0] == 0 or not frame.iloc[0].str.len().any():
        raise InputError(f"{label}:1: the table is empty or has no header row; row 1 must name the columns.")
    return frame, label


def _read_delimited(path: Path, suffix: str) -> pd.DataFrame:
    text = read_text_file(path).lstrip("\ufeff")
    if not text.strip():
        raise InputError(f"{path}: the file is empty; row 1 must name the columns (study, subjects, x, y, z, ...).")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # CRLF (Windows) and CR (old Mac) line ends
    sep = _separator(text, suffix)
    try:
        return pd.read_csv(
            io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False,
            skip_blank_lines=False, engine="python",
        )
    except (pd.errors.ParserError, ValueError) as err:
        name = {"\t": "tab", ",": "comma", ";": "semicolon"}[sep]
        line = re.search(r"line (\d+)", str(err))
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise InputError(
            f"{where}: cannot read it as a {name}-separated table ({err}); every row needs the same number "
            "of fields; quote text that contains the separator."
        ) from None


def _separator(text: str, suffix: str) -> str:
    """Tab for .tsv; for .csv comma unless the header only has semicolons; .txt sniffs."""
    header = next(line for line in text.splitlines() if line.strip())
    if suffix == ".tsv":
        return "\t"
    if suffix == ".txt" and "\t" in header:
        return "\t"
    if ";" in header and "," not in header:
        return ";"
    return ","


#: First bytes of an .xlsx (a zip archive) and of an .xls (an OLE2 compound file).
_EXCEL_MAGIC = {".xlsx": b"PK\x03\x04", ".xls": b"\xd0\xcf\x11\xe0"}


def _read_excel(path: Path, sheet: str | int | None) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path and the working directory.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err}); check the file's permissions.") from None
    if not head:
        raise InputError(f"{path}: the file is empty; save the table again from the spreadsheet program.")
    magic = _EXCEL_MAGIC[path.suffix.lower()]
    if head != magic:
        kind = "a zip archive" if path.suffix.lower() == ".xlsx" else "an Excel 97-2003 file"
        raise InputError(
            f"{path}: not a readable Excel file (its content is not {kind}, as a {path.suffix} file must be); "
            "save it again as .xlsx, or export it as .csv."
        )
    try:
        return pd.read_excel(path, sheet_name=0 if sheet is None else sheet, header=None, dtype=str)
    except ImportError:
        raise InputError(
            f"{path}: reading this Excel format needs an extra package; save it as .xlsx or .csv."
        ) from None
    except ValueError as err:
        if "not found" in str(err).lower() or isinstance(sheet, int):
            raise InputError(f"{path}: sheet {sheet!r} not found ({err}); pass an existing sheet name.") from None
        raise InputError(f"{path}: not a readable Excel file ({err}); save it again as .xlsx or .csv.") from None
    except Exception as err:  # zip/XML errors from a corrupt or mislabelled file
        raise InputError(
            f"{path}: not a readable Excel file ({type(err).__name__}: {err}); save it as .xlsx or .csv."
        ) from None


# ------------------------------------------------------------------ columns
def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _map_columns(header: list[str], label: str) -> tuple[dict[str, int], dict[str, int]]:
    """Role -> column index, and tag name -> column index."""
    normal = [_normalise(h) for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(normal):
        if n and n in seen:
            raise InputError(
                f"{label}:1: columns {header[seen[n]]!r} and {header[i]!r} have the same name; rename one of them."
            )
        seen[n] = i
    roles: dict[str, int] = {}
    for role, aliases in _ROLES.items():
        found = next((a for a in aliases if a in seen), None)
        if found is not None:
            roles[role] = seen[found]
    missing = [r for r in _REQUIRED if r not in roles]
    if missing:
        role = missing[0]
        raise InputError(
            f"{label}:1: no {role!r} column (accepted names: {', '.join(_ROLES[role])}); "
            f"columns found: {', '.join(repr(h) for h in header)}. Rename or add the column in the header row."
        )
    used = set(roles.values())
    tags = {header[i]: i for i in range(len(header)) if i not in used and header[i]}
    return roles, tags


# ------------------------------------------------------------------ values
def _rows_text(lines: np.ndarray) -> str:
    shown = ", ".join(str(n) for n in lines[:_MAX_ROWS_SHOWN])
    return shown + (f" and {len(lines) - _MAX_ROWS_SHOWN} more" if len(lines) > _MAX_ROWS_SHOWN else "")


def _numbers(cells: pd.Series, lines: np.ndarray, column: str, label: str) -> np.ndarray:
    """Finite floats from text cells, or InputError at the first bad row."""
    values = pd.to_numeric(cells.str.replace("\u2212", "-", regex=False), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        k = bad[0]
        text = cells.iloc[k]
        problem = "is empty" if not text else ("is NaN or infinite" if _is_nonfinite(text) else "is not a number")
        raise InputError(f"{label}:{lines[k]}: column {column!r} value {text!r} {problem}; enter a finite number.")
    return values


def _coordinates(cells: pd.Series, lines: np.ndarray, column: str, label: str) -> np.ndarray:
    """:func:`_numbers`, and no value beyond +-MAX_ABS_MM (a typo, a unit error)."""
    values = _numbers(cells, lines, column, label)
    bad = np.flatnonzero(np.abs(values) > MAX_ABS_MM)
    if bad.size:
        k = bad[0]
        raise InputError(
            f"{label}:{lines[k]}: column {column!r} value {cells.iloc[k]!r} is implausibly large "
            f"(beyond +-{MAX_ABS_MM:g} mm); give MNI or Talairach coordinates in mm."
        )
    return values


def _is_nonfinite(text: str) -> bool:
    try:
        return not np.isfinite(float(text))
    except ValueError:
        return False


def _subjects(cells: pd.Series, lines: np.ndarray, column: str, label: str) -> np.ndarray:
    values = _numbers(cells, lines, column, label)
    bad = np.flatnonzero((values <= 0) | (values > MAX_SUBJECTS) | (values != np.round(values)))
    if bad.size:
        k = bad[0]
        raise InputError(
            f"{label}:{lines[k]}: column {column!r} value {cells.iloc[k]!r} is not a positive whole number "
            "of subjects; enter the experiment's sample size, e.g. 12."
        )
    return values.astype(np.int64)


def _required_text(cells: pd.Series, lines: np.ndarray, column: str, label: str) -> pd.Series:
    empty = np.flatnonzero((cells == "").to_numpy())
    if empty.size:
        raise InputError(f"{label}:{lines[empty[0]]}: column {column!r} is empty; every focus row needs a value.")
    return cells


def _spaces(frame: pd.DataFrame, roles: dict, lines: np.ndarray, header: list, fallback: str | None, label: str):
    if "space" not in roles:
        if fallback is None:
            raise InputError(
                f"{label}:1: no space column; add a 'space' column with MNI or Talairach for every row, "
                "or pass space='MNI' (or 'Talairach') to read the whole table in one space."
            )
        return np.full(len(frame), fallback, dtype=object)
    column = header[roles["space"]]
    cells = frame.iloc[:, roles["space"]]
    mapped = cells.map(lambda v: canonical_space(v) if v else fallback)
    bad = np.flatnonzero(mapped.isna().to_numpy())
    if bad.size:
        k = bad[0]
        raise InputError(
            f"{label}:{lines[k]}: column {column!r} value {cells.iloc[k]!r} is not a known space; "
            "use MNI, MNI152, Talairach or TAL."
        )
    return mapped.to_numpy(dtype=object)


# ------------------------------------------------------------------ experiments
def _plain(value: object) -> object:
    """numpy scalars as Python values, so messages show 10 rather than np.int64(10)."""
    return value.item() if isinstance(value, np.generic) else value


def _per_experiment(codes: np.ndarray, values: np.ndarray, column: str, names: list, lines: np.ndarray, label: str):
    """The one value each experiment has in ``column``; InputError if it varies within one."""
    frame = pd.DataFrame({"code": codes, "value": values})
    counts = frame.groupby("code", sort=True)["value"].nunique()
    varying = counts.index[counts.to_numpy() > 1]
    if len(varying):
        code = int(varying.min())
        mine = codes == code
        rows, vals = lines[mine], values[mine]
        parts = [f"{_plain(v)!r} on rows {_rows_text(rows[vals == v])}" for v in pd.unique(vals)]
        raise InputError(
            f"{label}:{rows[0]}: column {column!r} differs within experiment {names[code]!r} ({'; '.join(parts)}); "
            f"give every row of one experiment the same {column}, or name the rows as different experiments."
        )
    return frame.groupby("code", sort=True)["value"].first().to_numpy()


def _names(body: pd.DataFrame, roles: dict, header: list, lines: np.ndarray, label: str) -> tuple[pd.Series, pd.Series]:
    study_col = header[roles["study"]]
    study = _required_text(body.iloc[:, roles["study"]], lines, study_col, label)
    if "experiment" not in roles:
        return study, study
    column = header[roles["experiment"]]
    experiment = _required_text(body.iloc[:, roles["experiment"]], lines, column, label)
    return study + ": " + experiment, study


def read_table(
    path: str | os.PathLike, sheet: str | int | None = None, *, space: str | None = None
) -> ExperimentSet:
    """Read a foci table (one row per focus) into an :class:`ExperimentSet`.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (comma, or semicolon if the header has no comma), ``.tsv``,
        ``.txt`` (tab-separated) or ``.xlsx``.
    sheet : str or int, optional
        Excel sheet name or 0-based index; default the first sheet. Ignored
        for text tables.
    space : {"MNI", "TAL", "Talairach"}, optional
        Space of rows without a space column or with an empty space cell.

    Returns
    -------
    ExperimentSet
        Experiments in order of first appearance, named ``"study: experiment"``
        (or ``study`` alone when there is no experiment column).

    Raises
    ------
    InputError
        Missing columns, bad values or values that vary within an experiment;
        the message names the file, the spreadsheet row and the fix.
    """
    path = Path(path)
    fallback = resolve_space_argument(space)
    frame, label = _read_frame(path, sheet)
    header = [str(h) for h in frame.iloc[0]]
    roles, tags = _map_columns(header, label)
    body = frame.iloc[1:]
    lines = np.arange(2, len(frame) + 1)
    filled = (body != "").any(axis=1).to_numpy()
    body, lines = body[filled], lines[filled]
    if body.empty:
        raise InputError(f"{label}:2: the table has a header row but no data rows; add one row per focus.")
    names, study = _names(body, roles, header, lines, label)
    codes, uniques = pd.factorize(names, sort=False)
    unique_names = [str(u) for u in uniques]

    def constant(values, column):
        return _per_experiment(codes, np.asarray(values), column, unique_names, lines, label)

    xyz = np.column_stack([_coordinates(body.iloc[:, roles[c]], lines, header[roles[c]], label) for c in "xyz"])
    subjects_col = header[roles["subjects"]]
    n_subjects = constant(_subjects(body.iloc[:, roles["subjects"]], lines, subjects_col, label), subjects_col)
    spaces = constant(_spaces(body, roles, lines, header, fallback, label), "space")
    studies = constant(study.to_numpy(dtype=object), header[roles["study"]])
    tag_values = {name: constant(body.iloc[:, i].to_numpy(dtype=object), name) for name, i in tags.items()}
    order = np.argsort(codes, kind="stable")
    return ExperimentSet(
        names=tuple(unique_names),
        studies=tuple(str(s) for s in studies),
        n_subjects=n_subjects.astype(np.int64),
        spaces=tuple(str(s) for s in spaces),
        xyz=xyz[order],
        offsets=np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(unique_names)))]),
        origins=tuple(FocusOrigin(str(path), int(n)) for n in lines[order]),
        tags=tuple({k: str(v[i]) for k, v in tag_values.items()} for i in range(len(unique_names))),
    )
