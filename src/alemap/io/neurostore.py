"""Reader for NeuroStore studysets exported as Parquet tables.

A studyset folder (NiMARE's ``nimare-studyset-parquet`` format) holds one
Parquet file per table, listed in ``studyset.json``::

    studyset.json        {"format": "nimare-studyset-parquet", "tables": {"analyses": "analyses.parquet", ...}}
    analyses.parquet     id, study_id, contrast_id, name           one row per analysis   (required)
    coordinates.parquet  id, x, y, z, space, ...                   one row per focus      (required)
    metadata.parquet     id, comparison_task, sample_sizes, ...    one row per analysis   (optional)
    studies.parquet      study_id, name, ...                       one row per study      (optional)

Without ``studyset.json`` the tables are looked up under those default names.

Mapping to an :class:`~alemap.data.ExperimentSet`:

* **One analysis = one experiment**, in the order of ``analyses.parquet``;
  analyses without any coordinate row (image-only analyses) are skipped.
  Foci keep the order of ``coordinates.parquet``.
* **Name = the analysis id** (``"<study_id>-<contrast_id>"``, NiMARE's id). It
  is unique by construction and stable across exports, whereas
  ``"study name: analysis name"`` is long (study names are paper titles) and
  not guaranteed unique (analysis names such as ``"Table 2."`` repeat). The
  readable names are kept as the tags ``study_name`` and ``analysis_name``.
* **Study = study_id**, so experiments of one paper share a study key (pooling).
* **Tags**: ``task`` = the group label (the ``comparison_task`` column, e.g.
  ``n-back`` / ``flanker``), then every other *scalar* metadata column with a
  non-empty value under its own name (strings stripped; whole floats written
  without ``.0``; list columns and ids skipped; a column whose name is
  already a tag, e.g. ``task``, becomes ``metadata.<column>``), then
  ``analysis_name`` from the analyses table if the metadata has none.
  ``subjects_source`` tells where the sample size came from (a metadata
  column, or ``default``); ``space_reported`` is added where the reported
  space was not MNI/TAL.
* **Sample size**: the first non-empty of the metadata columns
  ``sample_sizes`` (a list: ``round(mean)``, as NiMARE), ``sample_size``,
  ``n_subjects``, ``subjects``. NeuroStore rarely has one, so missing sample
  sizes are an :class:`~alemap.exceptions.InputError` unless
  ``default_subjects=N`` is passed; the analyses that receive it get the tag
  ``subjects_source: default`` and a :class:`UserWarning` gives their count.
* **Space** is per focus: ``MNI``/``MNI152``/``TAL``/``Talairach`` (any case).
  Other values (NeuroStore's ``OTHER``, ``UNKNOWN``, empty) follow
  ``space_unknown``: ``"error"`` (default), ``"mni"`` (read as MNI) or
  ``"drop"`` (drop those foci, and analyses left with none; counted in a
  :class:`UserWarning`). One analysis must not mix MNI and TAL foci.
  Unknown spaces and missing sample sizes are reported in one error, so a
  single run lists every fix the studyset needs.
* **Origins**: ``FocusOrigin("<coordinates.parquet>#<analysis id>", row)``
  with the 1-based row of the focus in ``coordinates.parquet``.

:func:`alemap.io.load_experiments` sends a folder or a ``.parquet`` path here
with the default arguments (its ``space=`` does not apply); call
:func:`read_neurostore` directly to pass ``default_subjects`` or
``space_unknown``. Reading needs ``pyarrow`` (``pip install 'alemap[parquet]'``).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.io.sleuth import MAX_SUBJECTS, canonical_space

__all__ = ["read_neurostore", "SPACE_UNKNOWN_OPTIONS", "SAMPLE_SIZE_COLUMNS", "LABEL_COLUMN"]

#: Accepted values of ``space_unknown``.
SPACE_UNKNOWN_OPTIONS = ("error", "mni", "drop")
#: Metadata columns holding a sample size, in order of preference.
SAMPLE_SIZE_COLUMNS = ("sample_sizes", "sample_size", "n_subjects", "subjects")
#: Metadata column with the group label; read into the tag ``task``.
LABEL_COLUMN = "comparison_task"
#: Tag that receives the group label.
LABEL_TAG = "task"

_DEFAULT_TABLES = {t: f"{t}.parquet" for t in ("analyses", "coordinates", "metadata", "studies")}
_EXTRA_SPACES = {"MNI1522MM": "MNI", "ALE2MM": "MNI"}
_ID_COLUMNS = {"id", "study_id", "contrast_id", "name"}
_MAX_SHOWN = 5


# ------------------------------------------------------------------ files
def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is installed in the test environment
        raise BackendUnavailableError(
            "reading a NeuroStore studyset (Parquet) needs pyarrow; install it with "
            "pip install 'alemap[parquet]' (or pip install pyarrow)."
        ) from None
    return pq


def _table_paths(path: Path) -> tuple[Path, dict[str, Path]]:
    """Folder of the studyset and the path of each table."""
    if not path.exists():
        raise InputError(f"{path}: not found; give a studyset folder, its studyset.json or one of its .parquet files.")
    folder = path if path.is_dir() else path.parent
    manifest = folder / "studyset.json"
    names = dict(_DEFAULT_TABLES)
    if manifest.is_file():
        try:
            spec = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(
                f"{manifest}: not valid JSON ({err}); fix the file or delete it to use the default table names."
            ) from None
        tables = spec.get("tables") if isinstance(spec, dict) else None
        if tables is not None and not isinstance(tables, dict):
            raise InputError(
                f"{manifest}: 'tables' must map table names to file names, "
                'e.g. {"analyses": "analyses.parquet"}.'
            )
        names.update({k: str(v) for k, v in (tables or {}).items() if k in names})
    paths = {k: folder / v for k, v in names.items()}
    for required in ("analyses", "coordinates"):
        if not paths[required].is_file():
            raise InputError(
                f"{folder}: not a NeuroStore studyset: no {required} table ({paths[required].name} not found). "
                "A studyset folder needs analyses.parquet and coordinates.parquet (optionally metadata.parquet "
                "and studyset.json); to read a single foci file, give its path instead of the folder."
            )
    return folder, paths


def _read(pq, path: Path, columns: list[str] | None = None):
    """A pyarrow Table (only ``columns`` that exist, or all)."""
    try:
        schema = pq.read_schema(path)
        if columns is not None:
            columns = [c for c in columns if c in schema.names]
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError) as err:  # ArrowInvalid subclasses ValueError
        raise InputError(f"{path}: not a readable Parquet file ({err}); export the table again.") from None


def _require(table, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: no {missing[0]!r} column (columns found: {', '.join(table.column_names)}); "
            f"this table needs {', '.join(columns)}."
        )


def _strings(table, column: str) -> list:
    """A column as Python strings (None stays None)."""
    return [None if v is None else str(v) for v in table.column(column).to_pylist()]


# ------------------------------------------------------------------ helpers
def _shown(items) -> str:
    items = list(items)
    text = ", ".join(repr(i) for i in items[:_MAX_SHOWN])
    return text + (f" and {len(items) - _MAX_SHOWN} more" if len(items) > _MAX_SHOWN else "")


def _space(value) -> str | None:
    if value is None:
        return None
    return canonical_space(value) or _EXTRA_SPACES.get(re.sub(r"[\s_]+", "", str(value)).upper())


def _shown_space(value) -> str:
    return "(empty)" if value is None or not str(value).strip() else str(value).strip()


def _tag_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def _sample_size(value, column: str, analysis: str, path: Path) -> int | None:
    """Positive whole sample size from one metadata cell, None when empty."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    numbers = []
    for v in values:
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number.is_integer() and 0 < number <= MAX_SUBJECTS):
            if isinstance(v, float) and math.isnan(v):
                continue
            raise InputError(
                f"{path}#{analysis}: metadata column {column!r} value {v!r} is not a positive whole number of "
                "subjects; fix it in the studyset, or clear it and pass default_subjects=N."
            )
        numbers.append(number)
    if not numbers:
        return None
    return int(round(sum(numbers) / len(numbers)))


def _check_params(default_subjects, space_unknown) -> None:
    if space_unknown not in SPACE_UNKNOWN_OPTIONS:
        raise ParameterError(
            f"space_unknown={space_unknown!r} is not valid; use one of {', '.join(map(repr, SPACE_UNKNOWN_OPTIONS))}."
        )
    if default_subjects is not None:
        ok = isinstance(default_subjects, (int, np.integer)) and not isinstance(default_subjects, bool)
        if not ok or not 0 < int(default_subjects) <= MAX_SUBJECTS:
            raise ParameterError(
                f"default_subjects={default_subjects!r} is not valid; "
                "give a positive whole number of subjects, e.g. 20."
            )


# ------------------------------------------------------------------ metadata
def _metadata(pq, path: Path | None, analysis_ids: list[str], id_pos: dict[str, int]):
    """Per analysis: sample size and its column (or None), and tags."""
    n = len(analysis_ids)
    sizes: list[tuple[int, str] | None] = [None] * n
    tags: list[dict] = [{} for _ in range(n)]
    if path is None or not path.is_file():
        return sizes, tags
    table = _read(pq, path)
    _require(table, path, ("id",))
    rows = [id_pos.get(i) for i in _strings(table, "id")]
    size_columns = [c for c in SAMPLE_SIZE_COLUMNS if c in table.column_names]
    for column in size_columns:
        for r, value in zip(rows, table.column(column).to_pylist()):
            if r is None or sizes[r] is not None:
                continue
            size = _sample_size(value, column, analysis_ids[r], path)
            if size is not None:
                sizes[r] = (size, column)
    import pyarrow.types as pat

    simple = (pat.is_string, pat.is_large_string, pat.is_integer, pat.is_floating, pat.is_boolean)
    tag_columns = [LABEL_COLUMN] if LABEL_COLUMN in table.column_names else []
    tag_columns += [
        f.name for f in table.schema
        if f.name not in _ID_COLUMNS and f.name != LABEL_COLUMN and f.name not in SAMPLE_SIZE_COLUMNS
        and any(test(f.type) for test in simple)
    ]
    for column in tag_columns:
        key = LABEL_TAG if column == LABEL_COLUMN else column
        for r, value in zip(rows, table.column(column).to_pylist()):
            text = _tag_text(value)
            if r is not None and text is not None:
                tags[r].setdefault(key if key not in tags[r] else f"metadata.{column}", text)
    return sizes, tags


# ------------------------------------------------------------------ reader
def read_neurostore(
    path: str | os.PathLike,
    *,
    default_subjects: int | None = None,
    space_unknown: str = "error",
) -> ExperimentSet:
    """Read a NeuroStore studyset (Parquet tables) into an :class:`ExperimentSet`.

    Parameters
    ----------
    path : str or path-like
        The studyset folder, its ``studyset.json``, or any of its ``.parquet``
        tables (the folder is used).
    default_subjects : int, optional
        Sample size for analyses whose metadata has none. Without it, any
        analysis lacking a sample size is an error. Analyses that get it are
        tagged ``subjects_source: default`` and counted in a ``UserWarning``.
    space_unknown : {"error", "mni", "drop"}, default "error"
        What to do with foci whose space is neither MNI nor Talairach
        (NeuroStore's ``OTHER``/``UNKNOWN``): raise, read them as MNI (tag
        ``space_reported``), or drop them (and analyses left without foci).

    Returns
    -------
    ExperimentSet
        One experiment per analysis with coordinates, named by analysis id,
        with ``study`` = study id and tags (``task`` = group label, metadata);
        see the module docstring.

    Raises
    ------
    InputError
        Missing tables or columns, bad coordinates or sample sizes, unknown
        spaces (``space_unknown="error"``), analyses without a sample size
        (no ``default_subjects``); the message names the file, the analysis
        and the fix.
    ParameterError
        Invalid ``default_subjects`` or ``space_unknown``.
    """
    _check_params(default_subjects, space_unknown)
    pq = _pyarrow()
    folder, paths = _table_paths(Path(path))

    # analyses: order, ids, studies
    a_path = paths["analyses"]
    analyses = _read(pq, a_path, ["id", "study_id", "name"])
    _require(analyses, a_path, ("id", "study_id"))
    ids = _strings(analyses, "id")
    studies = _strings(analyses, "study_id")
    for k, (i, s) in enumerate(zip(ids, studies)):
        if not i or not s:
            column = "id" if not i else "study_id"
            raise InputError(
                f"{a_path}: row {k + 1} has an empty {column!r}; every analysis needs an id and a study_id."
            )
    id_pos: dict[str, int] = {}
    for k, i in enumerate(ids):
        if i in id_pos:
            raise InputError(
                f"{a_path}: analysis id {i!r} appears twice (rows {id_pos[i] + 1} and {k + 1}); ids must be unique."
            )
        id_pos[i] = k
    n_analyses = len(ids)

    # coordinates: one row per focus
    c_path = paths["coordinates"]
    coords = _read(pq, c_path, ["id", "x", "y", "z", "space"])
    _require(coords, c_path, ("id", "x", "y", "z"))
    c_ids = _strings(coords, "id")
    pos = np.fromiter((id_pos.get(i, -1) for i in c_ids), dtype=np.int64, count=len(c_ids))
    if (pos < 0).any():
        r = int(np.flatnonzero(pos < 0)[0])
        raise InputError(
            f"{c_path}:{r + 1}: analysis id {c_ids[r]!r} is not in {a_path.name}; "
            "every coordinate row must belong to a listed analysis."
        )
    xyz = np.column_stack(
        [coords.column(a).to_numpy(zero_copy_only=False).astype(np.float64) for a in "xyz"]
    ) if len(c_ids) else np.zeros((0, 3))
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if bad.size:
        r = int(bad[0])
        raise InputError(
            f"{c_path}:{r + 1}: analysis {c_ids[r]!r} has a missing or non-finite coordinate "
            f"({', '.join(str(v) for v in xyz[r])}); fix or remove this focus ({bad.size} such row(s))."
        )
    raw_space = _strings(coords, "space") if "space" in coords.column_names else [None] * len(c_ids)
    lookup = {v: _space(v) for v in set(raw_space)}
    focus_space = np.array([lookup[v] or "?" for v in raw_space], dtype=object)
    rows = np.arange(len(c_ids))

    unknown = focus_space == "?"
    problems = []  # reported together, so one run shows every fix the studyset needs
    if unknown.any() and space_unknown == "error":
        kinds = sorted({_shown_space(v) for v, u in zip(raw_space, unknown) if u})
        first = int(np.flatnonzero(unknown)[0])
        affected = sorted({c_ids[r] for r in np.flatnonzero(unknown)}, key=id_pos.get)
        problems.append(
            f"{c_path}: {int(unknown.sum())} foci in {len(affected)} analyses have a space that is neither MNI nor "
            f"Talairach ({', '.join(kinds)}), e.g. row {first + 1} (analysis {c_ids[first]!r}); analyses "
            f"{_shown(affected)}. Pass space_unknown='drop' to leave those foci out, or space_unknown='mni' to "
            "read them as MNI."
        )
    reported = {}
    if unknown.any() and space_unknown == "mni":
        for r in np.flatnonzero(unknown):
            reported.setdefault(int(pos[r]), _shown_space(raw_space[r]))
        focus_space[unknown] = "MNI"
    n_dropped_foci = 0
    had_foci = np.bincount(pos, minlength=n_analyses)
    if unknown.any() and space_unknown == "drop":
        keep = ~unknown
        n_dropped_foci = int(unknown.sum())
        pos, xyz, focus_space, rows = pos[keep], xyz[keep], focus_space[keep], rows[keep]

    # group foci by analysis (stable: coordinate-table order within an analysis)
    order = np.argsort(pos, kind="stable")
    pos, xyz, focus_space, rows = pos[order], xyz[order], focus_space[order], rows[order]
    counts = np.bincount(pos, minlength=n_analyses)
    present = np.flatnonzero(counts > 0)
    starts = np.concatenate([[0], np.cumsum(counts)])
    if not present.size:
        raise InputError(f"{c_path}: no analysis has coordinates; this studyset holds no foci for ALE.")

    # metadata: sample sizes and tags
    sizes, tags = _metadata(pq, paths.get("metadata"), ids, id_pos)
    if "name" in analyses.column_names:
        for k, v in enumerate(_strings(analyses, "name")):
            text = _tag_text(v)
            if text is not None:
                tags[k].setdefault("analysis_name", text)
    missing = [ids[a] for a in present if sizes[a] is None]
    if missing and default_subjects is None:
        has_meta = paths["metadata"].is_file()
        where = paths["metadata"] if has_meta else folder
        columns = (f"metadata columns {', '.join(SAMPLE_SIZE_COLUMNS)} are empty" if has_meta
                   else f"there is no {paths['metadata'].name}")
        problems.append(
            f"{where}: {len(missing)} of {len(present)} analyses have no sample size ({columns}), "
            f"e.g. {_shown(missing)}. ALE needs one per analysis: add it to the studyset, or pass "
            "default_subjects=N (e.g. read_neurostore(path, default_subjects=20)) to use N subjects for them."
        )
    if problems:
        raise InputError(problems[0] if len(problems) == 1 else " Also: ".join(problems))

    spaces = []
    for a in present:
        kinds = set(focus_space[starts[a]:starts[a + 1]])
        if len(kinds) > 1:
            raise InputError(
                f"{c_path}#{ids[a]}: analysis mixes MNI and Talairach foci "
                f"(rows {_shown(int(r) + 1 for r in rows[starts[a]:starts[a + 1]])}); one analysis must use one "
                "space. Fix the space column of its rows or split it into two analyses."
            )
        spaces.append(kinds.pop())

    n_subjects = np.empty(len(present), dtype=np.int64)
    out_tags = []
    for j, a in enumerate(present):
        t = tags[a]
        if sizes[a] is None:
            n_subjects[j] = int(default_subjects)
            t["subjects_source"] = "default"
        else:
            n_subjects[j], column = sizes[a]
            t["subjects_source"] = f"metadata.{column}"
        if int(a) in reported:
            t["space_reported"] = reported[int(a)]
        out_tags.append(t)
    if missing:
        warnings.warn(
            f"{folder}: {len(missing)} of {len(present)} analyses have no sample size in the metadata; "
            f"default_subjects={int(default_subjects)} was used for them (tag subjects_source: default).",
            UserWarning,
            stacklevel=2,
        )
    dropped_analyses = np.flatnonzero((had_foci > 0) & (counts == 0))
    if n_dropped_foci:
        warnings.warn(
            f"{c_path}: space_unknown='drop' left out {n_dropped_foci} foci whose space is neither MNI nor "
            f"Talairach; {len(dropped_analyses)} analyses had no other foci and were left out.",
            UserWarning,
            stacklevel=2,
        )
    source = str(c_path)
    origin_source = {int(a): f"{source}#{ids[a]}" for a in present}
    origins = tuple(FocusOrigin(origin_source[int(p)], int(r) + 1) for p, r in zip(pos, rows))
    return ExperimentSet(
        names=tuple(ids[a] for a in present),
        studies=tuple(studies[a] for a in present),
        n_subjects=n_subjects,
        spaces=tuple(spaces),
        xyz=xyz,
        offsets=np.concatenate([[0], np.cumsum(counts[present])]),
        origins=origins,
        tags=tuple(out_tags),
    )
