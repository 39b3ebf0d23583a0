"""Reader for NiMARE dataset JSON files.

Layout (NiMARE's ``Dataset`` source format)::

    {study_id: {"contrasts": {contrast_id: {
        "coords": {"space": "MNI", "x": [...], "y": [...], "z": [...]},
        "metadata": {"sample_sizes": [n, ...]}}}}}

Experiments are named ``"{study_id}-{contrast_id}"`` (NiMARE's id). Contrasts
without a ``"coords"`` key (image-only entries) are skipped; a ``"coords"``
entry with no foci is an error.
"""

from __future__ import annotations

import json
import math
import os
from numbers import Real
from pathlib import Path

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError
from alemap.io.sleuth import MAX_ABS_MM, MAX_SUBJECTS, resolve_space_argument, canonical_space, read_text_file

__all__ = ["read_nimare_json"]

#: NiMARE template names on top of the Sleuth spellings.
_EXTRA_SPACES = {"mni152_2mm": "MNI", "ale_2mm": "MNI", "talairach": "TAL"}


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    """``object_pairs_hook``: a key repeated in one object would silently drop the first one's foci."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load(path: Path) -> dict:
    text = read_text_file(path)
    if not text.strip().lstrip("\ufeff").strip():
        raise InputError(f"{path}: the file is empty; a NiMARE dataset is a JSON object of studies and their contrasts.")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}); fix the syntax there."
        ) from None
    except _DuplicateKey as err:
        raise InputError(
            f"{path}: key {err.args[0]!r} appears twice in one JSON object; JSON keeps only the last, so the "
            "first one's foci would be lost. Rename or merge them."
        ) from None
    except RecursionError:
        raise InputError(f"{path}: the JSON is nested too deeply to be a NiMARE dataset; check the file.") from None
    except ValueError as err:  # e.g. an integer literal with thousands of digits
        raise InputError(f"{path}: invalid JSON ({err}); fix the value.") from None
    if not isinstance(data, dict) or not data:
        raise InputError(
            f"{path}: expected a JSON object mapping study ids to {{'contrasts': {{...}}}}; "
            f"found {type(data).__name__ if data else 'an empty object'}."
        )
    return data


def _space(coords: dict, where: str, fallback: str | None) -> str:
    value = coords.get("space")
    if value is None or value == "":
        if fallback is not None:
            return fallback
        raise InputError(f"{where}: no 'coords.space'; add \"space\": \"MNI\" (or \"TAL\"), or pass space='MNI'.")
    space = _EXTRA_SPACES.get(str(value).strip().lower()) or canonical_space(value)
    if space is None:
        raise InputError(f"{where}: unknown coords.space {_short(value)}; use MNI, mni152_2mm, ale_2mm, TAL or Talairach.")
    return space


def _finite(value: object) -> bool:
    """A JSON number (not a bool) that is a finite float; huge integers are not."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _sample_size(metadata: object, where: str, key_path: str) -> int:
    if not isinstance(metadata, dict):
        metadata = {}
    value = metadata.get("sample_sizes", metadata.get("sample_size"))
    values = value if isinstance(value, list) else [value] if value is not None else []
    if not values:
        raise InputError(
            f"{where}: no sample size at {key_path}.metadata.sample_sizes; "
            'add "metadata": {"sample_sizes": [N]} to this contrast.'
        )
    for v in values:
        if not (_finite(v) and 0 < v <= MAX_SUBJECTS and float(v).is_integer()):
            raise InputError(f"{where}: metadata.sample_sizes value {_short(v)} is not a positive whole number; fix it.")
    return int(round(sum(values) / len(values)))


def _coordinates(coords: dict, where: str) -> list[tuple[float, float, float]]:
    axes = []
    for axis in "xyz":
        values = coords.get(axis)
        if values is None:
            raise InputError(f"{where}: coords has no {axis!r} list; give x, y and z lists of equal length.")
        axes.append(values if isinstance(values, list) else [values])
    if len({len(a) for a in axes}) != 1:
        lengths = ", ".join(f"{a}={len(v)}" for a, v in zip("xyz", axes))
        raise InputError(f"{where}: coords lists differ in length ({lengths}); give one x, y and z per focus.")
    if not axes[0]:
        raise InputError(f"{where}: coords has no foci; add them or remove the 'coords' entry.")
    for axis, values in zip("xyz", axes):
        for k, v in enumerate(values):
            if not _finite(v):
                raise InputError(f"{where}: coords.{axis}[{k}] = {_short(v)} is not a finite number; fix the value.")
            if abs(float(v)) > MAX_ABS_MM:
                raise InputError(
                    f"{where}: coords.{axis}[{k}] = {v!r} is implausibly large (beyond +-{MAX_ABS_MM:g} mm); "
                    "give MNI or Talairach coordinates in mm."
                )
    return [(float(x), float(y), float(z)) for x, y, z in zip(*axes)]


def _short(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"an integer of {len(str(value))} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _contrasts(data: dict, path: Path):
    """Yield ``(study_id, contrast_id, contrast)`` for contrasts that have coordinates."""
    for study_id, study in data.items():
        contrasts = study.get("contrasts") if isinstance(study, dict) else None
        if not isinstance(contrasts, dict):
            raise InputError(
                f"{path}#{study_id}: expected {{'contrasts': {{contrast_id: {{...}}}}}}; fix this study entry."
            )
        for contrast_id, contrast in contrasts.items():
            if not isinstance(contrast, dict):
                raise InputError(f"{path}#{study_id}/{contrast_id}: a contrast must be a JSON object.")
            if "coords" in contrast:
                yield str(study_id), str(contrast_id), contrast


def read_nimare_json(path: str | os.PathLike, *, space: str | None = None) -> ExperimentSet:
    """Read a NiMARE dataset JSON file.

    Parameters
    ----------
    path : str or path-like
        The ``.json`` dataset.
    space : {"MNI", "TAL", "Talairach"}, optional
        Space for contrasts whose ``coords`` have no ``space``; by default that is an error.

    Returns
    -------
    ExperimentSet
        One experiment per contrast with coordinates, named ``study-contrast``;
        sample size = ``round(mean(metadata.sample_sizes))``.
    """
    path = Path(path)
    fallback = resolve_space_argument(space)
    records = []
    for study_id, contrast_id, contrast in _contrasts(_load(path), path):
        where = f"{path}#{study_id}/{contrast_id}"
        coords = contrast["coords"]
        if not isinstance(coords, dict):
            raise InputError(f"{where}: 'coords' must be an object with space, x, y and z.")
        xyz = _coordinates(coords, where)
        records.append(
            {
                "name": f"{study_id}-{contrast_id}",
                "study": study_id,
                "n_subjects": _sample_size(contrast.get("metadata"), where, f"{study_id}.contrasts.{contrast_id}"),
                "space": _space(coords, where, fallback),
                "xyz": xyz,
                "origins": [FocusOrigin(where, 0)] * len(xyz),
            }
        )
    if not records:
        raise InputError(f"{path}: no contrast has 'coords'; this dataset holds no foci for ALE.")
    names = [r["name"] for r in records]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}: two contrasts give the experiment id {dup!r}; rename one study or contrast id.")
    return ExperimentSet.from_records(records)
