"""Columnar container of experiments and their foci.

An *experiment* is one contrast of one study: a set of peak coordinates
reported together, with the number of subjects that produced them. ALE treats
each experiment as one random draw (Turkeltaub et al. 2012), so the set keeps
foci grouped by experiment: ``xyz[offsets[i]:offsets[i + 1]]`` are the foci of
experiment ``i``.

The set is immutable (frozen dataclass over read-only arrays); selection returns
a new set. Foci keep their origin (file and line) so every later message can
point at the line a user has to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from alemap.exceptions import InputError

__all__ = ["ExperimentSet", "FocusOrigin"]

SPACES = ("MNI", "TAL")


@dataclass(frozen=True)
class FocusOrigin:
    """Where a focus came from: file and 1-based line (0 when not line-based)."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ExperimentSet:
    """Experiments with their foci, stored column-wise.

    Parameters
    ----------
    names : sequence of str
        Unique experiment labels, ``"Study, Year: Contrast"`` for Sleuth input.
    studies : sequence of str
        Study key of each experiment; experiments with one key share subjects.
    n_subjects : array of int, shape (n_experiments,)
        Sample size of each experiment (drives the kernel width, Eickhoff 2009).
    spaces : sequence of {"MNI", "TAL"}
        Reference space each experiment's coordinates were reported in.
    xyz : array of float, shape (n_foci, 3)
        Coordinates in mm, in the experiment's own space until converted.
    offsets : array of int, shape (n_experiments + 1,)
        ``xyz[offsets[i]:offsets[i+1]]`` belong to experiment ``i``.
    origins : sequence of FocusOrigin, length n_foci
        File and line of every focus.
    tags : sequence of dict
        Free-form string tags per experiment (paradigm, stage, ...).
    """

    names: tuple[str, ...]
    studies: tuple[str, ...]
    n_subjects: np.ndarray
    spaces: tuple[str, ...]
    xyz: np.ndarray
    offsets: np.ndarray
    origins: tuple[FocusOrigin, ...]
    tags: tuple[dict, ...] = field(default=())

    def __post_init__(self) -> None:
        n_exp = len(self.names)
        object.__setattr__(self, "n_subjects", _readonly(np.asarray(self.n_subjects, dtype=np.int64)))
        object.__setattr__(self, "xyz", _readonly(np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)))
        object.__setattr__(self, "offsets", _readonly(np.asarray(self.offsets, dtype=np.int64)))
        if not self.tags:
            object.__setattr__(self, "tags", tuple({} for _ in range(n_exp)))
        lengths = {
            "studies": len(self.studies),
            "n_subjects": self.n_subjects.shape[0],
            "spaces": len(self.spaces),
            "tags": len(self.tags),
        }
        for key, n in lengths.items():
            if n != n_exp:
                raise ValueError(f"ExperimentSet: '{key}' has {n} entries for {n_exp} experiments.")
        if self.offsets.shape != (n_exp + 1,) or self.offsets[0] != 0:
            raise ValueError("ExperimentSet: 'offsets' must start at 0 and have n_experiments + 1 entries.")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != self.xyz.shape[0]:
            raise ValueError("ExperimentSet: 'offsets' must be non-decreasing and end at the number of foci.")
        if len(self.origins) != self.xyz.shape[0]:
            raise ValueError("ExperimentSet: one origin is needed per focus.")
        bad = [s for s in self.spaces if s not in SPACES]
        if bad:
            raise ValueError(f"ExperimentSet: unknown space {bad[0]!r}; expected one of {SPACES}.")

    # ------------------------------------------------------------------ sizes
    @property
    def n_experiments(self) -> int:
        """Number of experiments."""
        return len(self.names)

    @property
    def n_foci(self) -> int:
        """Total number of foci."""
        return int(self.xyz.shape[0])

    @property
    def foci_counts(self) -> np.ndarray:
        """Number of foci of each experiment."""
        return np.diff(self.offsets)

    @property
    def experiment_of_focus(self) -> np.ndarray:
        """Experiment index of every focus."""
        return np.repeat(np.arange(self.n_experiments), self.foci_counts)

    def foci(self, i: int) -> np.ndarray:
        """Coordinates (mm) of experiment ``i``."""
        return self.xyz[self.offsets[i] : self.offsets[i + 1]]

    # -------------------------------------------------------------- building
    @classmethod
    def from_records(cls, records: Iterable[dict]) -> "ExperimentSet":
        """Build a set from per-experiment dicts.

        Each record has ``name``, ``study``, ``n_subjects``, ``space``,
        ``xyz`` (list of 3-sequences), ``origins`` (list of FocusOrigin, one per
        focus) and optionally ``tags``.
        """
        records = list(records)
        xyz_parts = [np.asarray(r["xyz"], dtype=np.float64).reshape(-1, 3) for r in records]
        counts = [p.shape[0] for p in xyz_parts]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        origins: list[FocusOrigin] = []
        for r in records:
            origins.extend(r["origins"])
        return cls(
            names=tuple(r["name"] for r in records),
            studies=tuple(r.get("study", r["name"]) for r in records),
            n_subjects=np.array([r["n_subjects"] for r in records], dtype=np.int64),
            spaces=tuple(r["space"] for r in records),
            xyz=np.concatenate(xyz_parts) if xyz_parts else np.zeros((0, 3)),
            offsets=offsets,
            origins=tuple(origins),
            tags=tuple(dict(r.get("tags", {})) for r in records),
        )

    def to_records(self) -> list[dict]:
        """Inverse of :meth:`from_records`."""
        out = []
        for i in range(self.n_experiments):
            a, b = self.offsets[i], self.offsets[i + 1]
            out.append(
                {
                    "name": self.names[i],
                    "study": self.studies[i],
                    "n_subjects": int(self.n_subjects[i]),
                    "space": self.spaces[i],
                    "xyz": self.xyz[a:b].copy(),
                    "origins": list(self.origins[a:b]),
                    "tags": dict(self.tags[i]),
                }
            )
        return out

    def select(self, index: Sequence[int] | np.ndarray) -> "ExperimentSet":
        """Return the experiments at ``index`` (in that order)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (self.n_experiments,):
                raise ValueError("A boolean selection needs one value per experiment.")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        records = self.to_records()
        return ExperimentSet.from_records(records[i] for i in idx)

    def with_xyz(self, xyz: np.ndarray, spaces: Sequence[str]) -> "ExperimentSet":
        """Same experiments with replaced coordinates and spaces."""
        return ExperimentSet(
            names=self.names,
            studies=self.studies,
            n_subjects=self.n_subjects,
            spaces=tuple(spaces),
            xyz=xyz,
            offsets=self.offsets,
            origins=self.origins,
            tags=self.tags,
        )

    def drop_foci(self, keep: np.ndarray) -> "ExperimentSet":
        """Keep only foci where ``keep`` is True (experiments may become empty)."""
        keep = np.asarray(keep, dtype=bool)
        exp = self.experiment_of_focus[keep]
        counts = np.bincount(exp, minlength=self.n_experiments)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return ExperimentSet(
            names=self.names,
            studies=self.studies,
            n_subjects=self.n_subjects,
            spaces=self.spaces,
            xyz=self.xyz[keep],
            offsets=offsets,
            origins=tuple(o for o, k in zip(self.origins, keep) if k),
            tags=self.tags,
        )

    @staticmethod
    def concat(sets: Sequence["ExperimentSet"]) -> "ExperimentSet":
        """Concatenate sets; experiment names must stay unique."""
        records = [r for s in sets for r in s.to_records()]
        names = [r["name"] for r in records]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InputError(f"Experiment {dup!r} appears in more than one input file; rename one of them.")
        return ExperimentSet.from_records(records)
