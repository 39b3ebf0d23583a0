"""Large coordinate databases (Neurosynth, NeuroQuery) as a columnar :class:`Database`.

A :class:`Database` holds a whole database in a few arrays: one row per study
(a pandas DataFrame: id, title, year, reported space, sample size) and the foci
of all studies in one ``(n_foci, 3)`` array in MNI mm, grouped by study
(``xyz[offsets[i]:offsets[i + 1]]`` are the foci of study ``i``) and, within a
study, by table. Neurosynth v7 (507,891 foci, 14,371 studies) loads in about
a second with pandas' C parser. Selections (title terms, metadata, foci inside
a region for MACM) are vectorised and return study indices; a selection
becomes an :class:`~alemap.data.ExperimentSet` with
:meth:`Database.to_experiment_set` (one experiment per study, its tables
pooled, or one per table).

Import rules (every drop is counted in :attr:`Database.counts`):

* Studies whose reported space is not in ``spaces`` (Neurosynth's
  ``UNKNOWN``) are dropped with their foci.
* Talairach studies are converted to MNI with Lancaster et al. (2007)
  (:func:`alemap.space.tal2mni`, variant ``other`` by default, as
  :class:`~alemap.ALE`); the reported space stays in ``studies["space"]``.
* Malformed rows are dropped: lines with the wrong number of fields, a missing
  study id, or a coordinate that is not a finite number (or beyond +-10,000 mm).
* Foci whose study is not in the metadata table are dropped; studies of the
  metadata without any focus are left out.
* Neither database reports sample sizes: every study gets ``default_subjects``
  (15 by default; it sets the kernel width, Eickhoff et al. 2009). A metadata
  column ``sample_size``/``n_subjects``/``subjects`` is used where present and
  positive. The number of studies given the default is counted
  (``studies_default_subjects``) and written into every analysis' provenance.

Neurosynth v7 columns: coordinates ``id, table_id, table_num, peak_id, x, y, z``;
metadata ``id, doi, space, title, authors, year, journal``. NeuroQuery v1:
coordinates ``id, table_id, table_name, x, y, z`` (no space column: MNI);
metadata ``id, title`` (no year).

Neurosynth data: Open Database License 1.0 (cite Yarkoni et al. 2011);
NeuroQuery data: BSD-3-Clause (cite Dockès et al. 2020). alemap ships neither.
"""

from __future__ import annotations

import difflib
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from alemap.data.experiment_set import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError, ParameterError

__all__ = [
    "Database",
    "read_neurosynth",
    "read_neuroquery",
    "read_database",
    "term_pattern",
    "DEFAULT_SUBJECTS",
]

#: Sample size given to studies without one (Neurosynth and NeuroQuery report none).
DEFAULT_SUBJECTS = 15

_SUBJECT_COLUMNS = ("sample_size", "n_subjects", "subjects")
#: Coordinates beyond this (mm) are malformed (a unit or typing error), as for the other readers.
_MAX_ABS_MM = 10_000.0
_SPACE_ALIASES = {"MNI": "MNI", "TAL": "TAL", "TALAIRACH": "TAL", "MNI152": "MNI"}


def term_pattern(term: str) -> str:
    """Regex matching ``term`` as whole words in a title (case-insensitive).

    Words may be separated by any run of spaces or hyphens, so ``"motor
    sequence"`` also matches "motor-sequence"; a trailing ``*`` allows any
    word ending (``"memor*"`` matches memory and memories).
    """
    words = term.strip().split()
    if not words:
        raise ParameterError("An empty term selects nothing; give at least one word.")
    parts = []
    for w in words:
        star = w.endswith("*")
        w = w.rstrip("*")
        parts.append(re.escape(w) + (r"\w*" if star else ""))
    return r"(?<![\w])" + r"[\s\-]+".join(parts) + r"(?![\w])"


@dataclass(frozen=True, eq=False)
class Database:
    """A coordinate database in columnar form (see the module docstring).

    Attributes
    ----------
    name : str
        Database name (``"neurosynth"``, ``"neuroquery"`` or a file stem).
    studies : pandas.DataFrame
        One row per study, index ``0..n_studies-1``: ``id`` (str), ``title``,
        ``year`` (nullable Int64), ``space`` (reported: MNI or TAL),
        ``n_subjects``, ``subjects_default`` (True where ``n_subjects`` is
        the default), ``n_foci``, plus any other metadata column.
    xyz : ndarray (n_foci, 3)
        Foci in MNI mm, grouped by study, then by table.
    offsets : ndarray (n_studies + 1,)
        ``xyz[offsets[i]:offsets[i + 1]]`` are study ``i``'s foci.
    table_of_focus : ndarray (n_foci,)
        Table number of every focus (index into ``table_names``); tables of
        one study are contiguous.
    table_names : ndarray of str (n_tables,)
        The database's table id of each table.
    table_subjects : ndarray (n_tables,)
        Sample size of each table.
    lines : ndarray (n_foci,)
        1-based line of each focus in the coordinates file (0 if unknown).
    sources : dict
        Files read: role -> path.
    counts : dict
        What was read, kept and dropped, and why.
    tal2mni : str
        Lancaster variant used for Talairach studies.
    default_subjects : int
        Sample size given to studies without one.
    """

    name: str
    studies: pd.DataFrame
    xyz: np.ndarray
    offsets: np.ndarray
    table_of_focus: np.ndarray
    table_names: np.ndarray
    table_subjects: np.ndarray
    lines: np.ndarray
    sources: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    tal2mni: str = "other"
    default_subjects: int = DEFAULT_SUBJECTS
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self):  # never ship cached placements to workers
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ---------------------------------------------------------------- sizes
    @property
    def n_studies(self) -> int:
        """Number of studies."""
        return int(self.offsets.shape[0] - 1)

    @property
    def n_foci(self) -> int:
        """Number of foci."""
        return int(self.xyz.shape[0])

    @property
    def n_tables(self) -> int:
        """Number of tables."""
        return int(self.table_names.shape[0])

    @property
    def study_ids(self) -> np.ndarray:
        """Study ids (str), in study order."""
        return self.studies["id"].to_numpy(dtype=object)

    @property
    def titles(self) -> np.ndarray:
        """Titles (str)."""
        return self.studies["title"].to_numpy(dtype=object)

    @property
    def years(self) -> np.ndarray:
        """Publication years as float (NaN where unknown)."""
        return self.studies["year"].to_numpy(dtype=np.float64, na_value=np.nan)

    @property
    def spaces(self) -> np.ndarray:
        """Reported space of each study (``MNI`` or ``TAL``); foci are all MNI now."""
        return self.studies["space"].to_numpy(dtype=object)

    @property
    def n_subjects(self) -> np.ndarray:
        """Sample size of each study."""
        return self.studies["n_subjects"].to_numpy(dtype=np.int64)

    @property
    def foci_counts(self) -> np.ndarray:
        """Foci per study."""
        return np.diff(self.offsets)

    @property
    def study_of_focus(self) -> np.ndarray:
        """Study index of every focus."""
        hit = self._cache.get("study_of_focus")
        if hit is None:
            hit = np.repeat(np.arange(self.n_studies, dtype=np.int64), self.foci_counts)
            hit.setflags(write=False)
            self._cache["study_of_focus"] = hit
        return hit

    def __repr__(self) -> str:
        return f"Database({self.name!r}: {self.n_studies} studies, {self.n_tables} tables, {self.n_foci} foci)"

    def summary(self) -> dict:
        """Name, sources, counts and import rules, for provenance."""
        return {
            "name": self.name,
            "sources": dict(self.sources),
            "studies": self.n_studies,
            "tables": self.n_tables,
            "foci": self.n_foci,
            "default_subjects": int(self.default_subjects),
            "tal2mni": self.tal2mni,
            "counts": dict(self.counts),
        }

    # ----------------------------------------------------------- selections
    def index_of(self, ids: Iterable) -> np.ndarray:
        """Study indices of study ids (unknown ids raise :class:`InputError`)."""
        ids = [str(i) for i in ids]
        pos = pd.Index(self.studies["id"]).get_indexer(ids)
        if (pos < 0).any():
            missing = [i for i, p in zip(ids, pos) if p < 0]
            raise InputError(f"{len(missing)} study id(s) not in {self.name}: {', '.join(missing[:5])}.")
        return pos.astype(np.int64)

    def select_title(self, terms: str | Sequence[str], *, regex: bool = False, match: str = "any") -> np.ndarray:
        """Studies whose title contains the term(s) (case-insensitive), sorted.

        Parameters
        ----------
        terms : str or list of str
            Terms matched as whole words (:func:`term_pattern`), or regular
            expressions with ``regex=True``.
        match : {"any", "all"}
            A title must contain any / all of the terms.
        """
        if match not in ("any", "all"):
            raise ParameterError(f"match must be 'any' or 'all', got {match!r}.")
        terms = [terms] if isinstance(terms, str) else list(terms)
        if not terms:
            raise ParameterError("select_title needs at least one term.")
        titles = self.studies["title"].astype(str)
        hit = None
        for t in terms:
            pat = t if regex else term_pattern(t)
            try:
                m = titles.str.contains(pat, case=False, regex=True, na=False).to_numpy(dtype=bool)
            except re.error as exc:
                raise ParameterError(f"Invalid title pattern {t!r}: {exc}") from exc
            hit = m if hit is None else (hit | m if match == "any" else hit & m)
        return np.flatnonzero(hit).astype(np.int64)

    def select_years(self, start: int | None = None, end: int | None = None) -> np.ndarray:
        """Studies published in ``start..end`` (inclusive; None = open); unknown years never match."""
        y = self.years
        ok = np.isfinite(y)
        if start is not None:
            ok &= y >= start
        if end is not None:
            ok &= y <= end
        return np.flatnonzero(ok).astype(np.int64)

    def select_where(self, column: str, values: Callable | Iterable) -> np.ndarray:
        """Studies whose metadata ``column`` is in ``values`` (or where ``values(series)`` is True)."""
        if column not in self.studies.columns:
            raise ParameterError(f"No metadata column {column!r}; columns: {list(self.studies.columns)}.")
        col = self.studies[column]
        mask = values(col) if callable(values) else col.isin(list(values))
        return np.flatnonzero(np.asarray(mask, dtype=bool)).astype(np.int64)

    def mask_positions(self, grid=None, placement: str = "nearest") -> np.ndarray:
        """Position of every focus among the grid's in-mask voxels (``grid.mask_flat``
        order), or -1 outside the grid or the mask. Computed once per grid (cached)."""
        from alemap.space.grid import load_mni152_2mm
        from alemap.space.placement import place_foci

        grid = load_mni152_2mm() if grid is None else grid
        key = ("pos", grid.digest(), placement)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        ijk = place_foci(grid, self.xyz, placement)
        inside = grid.in_grid(ijk)
        flat = np.full(ijk.shape[0], -1, dtype=np.int64)
        flat[inside] = np.ravel_multi_index(tuple(ijk[inside].T), grid.shape)
        pos = np.full(ijk.shape[0], -1, dtype=np.int64)
        mflat = grid.mask_flat
        q = np.searchsorted(mflat, flat[inside])
        q_ok = q < mflat.shape[0]
        hitm = np.zeros(q.shape[0], dtype=bool)
        hitm[q_ok] = mflat[q[q_ok]] == flat[inside][q_ok]
        sub = np.where(hitm, q, -1)
        pos[inside] = sub
        pos.setflags(write=False)
        self._cache[key] = pos
        return pos

    def select_region(self, region, *, atlas=None, grid=None, placement: str = "nearest",
                      min_foci: int = 1) -> np.ndarray:
        """Studies with at least ``min_foci`` foci inside a region (MACM seed), sorted.

        Parameters
        ----------
        region : bool array or str
            Boolean over the grid's in-mask voxels (``grid.mask_flat`` order)
            or over the full grid; or a region name of ``atlas``.
        atlas : Atlas or str, optional
            Atlas for a region name (``"aal"``, ``"harvard_oxford"``, ...); its
            grid is used. Probabilistic atlases use their maximum-probability labels.
        grid : Grid, optional
            Grid of a boolean region (default MNI152 2 mm).
        placement : str
            How foci snap to voxels (:mod:`alemap.space.placement`), as in the analysis.
        """
        if isinstance(region, str):
            atlas = _as_atlas(atlas, grid)
            rid = _region_id(atlas, region)
            inside = atlas.labels == rid
            grid = atlas.grid
        else:
            from alemap.space.grid import load_mni152_2mm

            grid = load_mni152_2mm() if grid is None else grid
            inside = np.asarray(region)
            if inside.shape == tuple(grid.shape):
                inside = inside.reshape(-1)[grid.mask_flat]
            if inside.shape != (grid.n_voxels,):
                raise ParameterError(
                    f"Region has shape {np.asarray(region).shape}; expected ({grid.n_voxels},) over the grid's "
                    f"in-mask voxels or the grid shape {tuple(grid.shape)}."
                )
            inside = inside.astype(bool)
        pos = self.mask_positions(grid, placement)
        ok = pos >= 0
        hit = np.zeros(pos.shape[0], dtype=bool)
        hit[ok] = inside[pos[ok]]
        n_in = np.bincount(self.study_of_focus[hit], minlength=self.n_studies)
        return np.flatnonzero(n_in >= max(1, int(min_foci))).astype(np.int64)

    def region_studies(self, atlas="aal", regions: Sequence[str] | None = None, *, grid=None,
                       placement: str = "nearest") -> dict[str, np.ndarray]:
        """For every region of an atlas (or those named), the studies with a focus inside it.

        One pass over all foci: each focus is placed once and looked up in the
        atlas' label vector; returns region name -> sorted study indices
        (empty arrays for regions no study reports), in the atlas' id order
        (or the order of ``regions``).
        """
        atlas = _as_atlas(atlas, grid)
        ids = [_region_id(atlas, r) for r in regions] if regions is not None else [int(i) for i in atlas.region_ids]
        pos = self.mask_positions(atlas.grid, placement)
        ok = pos >= 0
        lab = atlas.labels[pos[ok]].astype(np.int64)
        st = self.study_of_focus[ok]
        nz = lab != 0
        pairs = np.unique(lab[nz] * self.n_studies + st[nz])
        rid, sid = pairs // self.n_studies, pairs % self.n_studies
        bounds = np.searchsorted(rid, np.asarray(ids, dtype=np.int64))
        ends = np.searchsorted(rid, np.asarray(ids, dtype=np.int64), side="right")
        return {atlas.names[i]: sid[a:b].copy() for i, a, b in zip(ids, bounds, ends)}

    # ------------------------------------------------------------ conversion
    def to_experiment_set(self, index=None, *, per_table: bool = False, n_subjects: int | None = None) -> ExperimentSet:
        """The selected studies as experiments (all in MNI space).

        Parameters
        ----------
        index : array of int or bool, optional
            Studies (default all), in the order given; duplicates are dropped.
        per_table : bool
            One experiment per table (named ``"<id>:<table>"``) instead of one
            per study with its tables pooled (named by the study id). Pooling
            is the usual choice for automatically extracted databases, whose
            tables of one study share subjects (Turkeltaub et al. 2012).
        n_subjects : int, optional
            Override every sample size.
        """
        idx = self._index(index)
        counts = self.foci_counts[idx]
        starts = self.offsets[idx]
        total = int(counts.sum())
        exp_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if idx.size else np.zeros(0, np.int64)
        foci = np.repeat(starts - exp_start, counts) + np.arange(total, dtype=np.int64)
        sid = self.study_ids
        meta_title = self.titles
        years = self.years
        rep = self.spaces
        source = Path(self.sources.get("coordinates", self.name)).name
        lines = self.lines[foci]
        origins = tuple(FocusOrigin(source, int(ln)) for ln in lines.tolist())
        if not per_table:
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            subj = self.n_subjects[idx] if n_subjects is None else np.full(idx.size, int(n_subjects))
            names = tuple(str(sid[i]) for i in idx)
            studies = names
            tags = tuple(_tags(meta_title[i], years[i], rep[i]) for i in idx)
        else:
            tab = self.table_of_focus[foci]
            change = np.flatnonzero(np.diff(tab) != 0) + 1 if total else np.zeros(0, np.int64)
            first = np.concatenate([[0], change]).astype(np.int64) if total else np.zeros(0, np.int64)
            offsets = np.concatenate([first, [total]]).astype(np.int64)
            study_of_exp = np.repeat(idx, counts)[first] if total else np.zeros(0, np.int64)
            tabs = tab[first] if total else np.zeros(0, np.int64)
            subj = self.table_subjects[tabs] if n_subjects is None else np.full(tabs.size, int(n_subjects))
            names = tuple(f"{sid[s]}:{self.table_names[t]}" for s, t in zip(study_of_exp, tabs))
            studies = tuple(str(sid[s]) for s in study_of_exp)
            tags = tuple(_tags(meta_title[s], years[s], rep[s]) for s in study_of_exp)
        return ExperimentSet(
            names=names, studies=studies, n_subjects=np.asarray(subj, dtype=np.int64),
            spaces=("MNI",) * len(names), xyz=self.xyz[foci], offsets=offsets, origins=origins, tags=tags,
        )

    def subset(self, index) -> "Database":
        """A database of the selected studies only (same import record)."""
        idx = self._index(index)
        counts = self.foci_counts[idx]
        exp_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if idx.size else np.zeros(0, np.int64)
        foci = np.repeat(self.offsets[idx] - exp_start, counts) + np.arange(int(counts.sum()), dtype=np.int64)
        tabs, tab_new = np.unique(self.table_of_focus[foci], return_inverse=True)
        studies = self.studies.iloc[idx].reset_index(drop=True)
        return Database(
            name=self.name, studies=studies, xyz=_ro(self.xyz[foci]),
            offsets=_ro(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
            table_of_focus=_ro(tab_new.astype(np.int64)), table_names=_ro(self.table_names[tabs]),
            table_subjects=_ro(self.table_subjects[tabs]), lines=_ro(self.lines[foci]), sources=dict(self.sources),
            counts=dict(self.counts), tal2mni=self.tal2mni, default_subjects=self.default_subjects,
        )

    def _index(self, index) -> np.ndarray:
        if index is None:
            return np.arange(self.n_studies, dtype=np.int64)
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (self.n_studies,):
                raise ParameterError(f"A boolean selection needs {self.n_studies} values, got {idx.shape}.")
            return np.flatnonzero(idx).astype(np.int64)
        idx = idx.astype(np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_studies):
            raise ParameterError(f"Study index out of range 0..{self.n_studies - 1}.")
        _, first = np.unique(idx, return_index=True)
        return idx[np.sort(first)]

    # --------------------------------------------------------------- builder
    @classmethod
    def from_experiment_set(cls, experiments: ExperimentSet, name: str = "experiments", tal2mni: str = "other") -> "Database":
        """Wrap an :class:`ExperimentSet` (NiMARE JSON, NeuroStore, Sleuth) as a database.

        Experiments become tables of their study; titles come from the tags
        ``title`` or ``study_name`` (else the study key), years from ``year``.
        """
        from alemap.space.transforms import tal2mni as _tal2mni

        xyz = experiments.xyz.copy()
        is_tal = np.repeat(np.array([s == "TAL" for s in experiments.spaces], dtype=bool), experiments.foci_counts)
        if is_tal.any():
            xyz[is_tal] = _tal2mni(xyz[is_tal], tal2mni)
        study_keys = list(dict.fromkeys(experiments.studies))
        spos = {s: i for i, s in enumerate(study_keys)}
        exp_study = np.array([spos[s] for s in experiments.studies], dtype=np.int64)
        order = np.argsort(exp_study, kind="stable")  # experiments grouped by study
        counts = experiments.foci_counts
        focus_exp = experiments.experiment_of_focus
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        forder = np.lexsort((np.arange(focus_exp.size), rank[focus_exp]))
        per_study = np.bincount(exp_study, weights=counts, minlength=len(study_keys)).astype(np.int64)
        members: dict[str, list[int]] = {}
        for i, s in enumerate(experiments.studies):
            members.setdefault(s, []).append(i)
        rows = []
        for s in study_keys:
            e = members[s]
            t = experiments.tags[e[0]]
            year = pd.to_numeric(pd.Series([t.get("year")]), errors="coerce").iloc[0]
            rows.append({
                "id": str(s), "title": str(t.get("title") or t.get("study_name") or s),
                "year": None if pd.isna(year) else int(year), "space": experiments.spaces[e[0]],
                "n_subjects": int(round(float(np.mean(experiments.n_subjects[e])))),
            })
        studies = pd.DataFrame(rows)
        studies["year"] = studies["year"].astype("Int64")
        studies["subjects_default"] = False
        studies["n_foci"] = per_study
        keep = per_study > 0
        studies = studies[keep].reset_index(drop=True)
        offsets = np.concatenate([[0], np.cumsum(per_study[keep])]).astype(np.int64)
        lines = np.array([o.line for o in experiments.origins], dtype=np.int64)
        table_names = np.array(experiments.names, dtype=object)[order]
        nonempty = counts[order] > 0
        table_of_focus = rank[focus_exp][forder]
        remap = np.cumsum(nonempty) - 1
        srcs = sorted({o.source for o in experiments.origins})
        return cls(
            name=name, studies=studies, xyz=_ro(xyz[forder]), offsets=_ro(offsets),
            table_of_focus=_ro(remap[table_of_focus].astype(np.int64)), table_names=_ro(table_names[nonempty]),
            table_subjects=_ro(experiments.n_subjects[order][nonempty].astype(np.int64)),
            lines=_ro(lines[forder]), sources={"experiments": "; ".join(srcs)},
            counts={"studies": int(keep.sum()), "foci": int(xyz.shape[0]),
                    "studies_tal_converted": int(sum(1 for r in rows if r["space"] == "TAL")),
                    "studies_default_subjects": 0},
            tal2mni=tal2mni, default_subjects=0,
        )


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _tags(title, year, space) -> dict:
    t = {"title": str(title), "reported_space": str(space)}
    if np.isfinite(year):
        t["year"] = str(int(year))
    return t


def _as_atlas(atlas, grid):
    from alemap.space.atlases import Atlas, load_atlas

    if atlas is None:
        raise ParameterError("A region name needs an atlas (e.g. atlas='aal').")
    if isinstance(atlas, Atlas):
        return atlas
    return load_atlas(str(atlas), grid)


def _region_id(atlas, name: str) -> int:
    for i, n in atlas.names.items():
        if n == name:
            return int(i)
    low = {n.lower(): i for i, n in atlas.names.items()}
    if name.lower() in low:
        return int(low[name.lower()])
    close = difflib.get_close_matches(name, list(atlas.names.values()), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ParameterError(f"Atlas {atlas.name!r} has no region {name!r}.{hint}")


# ------------------------------------------------------------------ reading
_SKIP = re.compile(r"Skipping line (\d+)")


def _read_tsv(path: Path, dtypes: dict, required: Sequence[str], role: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a (gzipped) TSV with the C parser; returns the frame and the skipped line numbers."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {role} file not found; pass its path (e.g. --{role} FILE).")
    try:
        header = pd.read_csv(path, sep="\t", nrows=0).columns
    except Exception as exc:  # not a table, truncated gzip, bad encoding ...
        raise InputError(f"{path}: could not read the {role} table: {exc}") from exc
    cols = [c for c in header]
    missing = [c for c in required if c not in cols]
    if missing:
        raise InputError(f"{path}: the {role} table lacks column(s) {missing}; it has {cols}.")
    use = cols  # every column, no usecols: a row with a field too many is then reported, not silently cut
    skipped: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            try:
                df = pd.read_csv(path, sep="\t", dtype={c: dtypes.get(c, str) for c in use},
                                 on_bad_lines="warn", engine="c", keep_default_na=role != "metadata")
            except (UnicodeDecodeError, pd.errors.ParserError):
                raise
            except (ValueError, TypeError):
                # a non-numeric coordinate: read as text, convert (bad ones become NaN, dropped later)
                df = pd.read_csv(path, sep="\t", dtype=str, on_bad_lines="warn", engine="c")
                for c in use:
                    if dtypes.get(c) == "float64":
                        df[c] = pd.to_numeric(df[c], errors="coerce")
        except (UnicodeDecodeError, pd.errors.ParserError, EOFError, OSError) as exc:
            raise InputError(f"{path}: the {role} table could not be read ({type(exc).__name__}: {exc}); "
                             "expected a tab-separated UTF-8 table, optionally gzipped.") from exc
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            skipped.extend(int(m) for m in _SKIP.findall(str(w.message)))
        else:  # pragma: no cover
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return df, np.unique(np.asarray(skipped, dtype=np.int64))


def _file_lines(n_rows: int, skipped: np.ndarray) -> np.ndarray:
    """1-based file lines of the parsed rows (header = line 1), given skipped lines."""
    if skipped.size == 0:
        return np.arange(2, n_rows + 2, dtype=np.int64)
    return np.setdiff1d(np.arange(2, n_rows + 2 + skipped.size, dtype=np.int64), skipped)[:n_rows]


def _build(name, coordinates, metadata, *, table_col, space_col, fixed_space, default_subjects, spaces, tal2mni):
    from alemap.space.transforms import TAL2MNI_VARIANTS, tal2mni as _tal2mni

    if tal2mni not in TAL2MNI_VARIANTS:
        raise ParameterError(f"tal2mni must be one of {TAL2MNI_VARIANTS}, got {tal2mni!r}.")
    if int(default_subjects) < 1:
        raise ParameterError(f"default_subjects must be a positive sample size, got {default_subjects!r}.")
    want = []
    for s in spaces:
        s2 = _SPACE_ALIASES.get(str(s).strip().upper())
        if s2 is None:
            raise ParameterError(f"Unknown space {s!r} in spaces; use 'MNI' and/or 'TAL'.")
        want.append(s2)
    t0 = time.perf_counter()
    coord_types = {"id": str, table_col: str, "x": "float64", "y": "float64", "z": "float64"}
    coords, skipped_c = _read_tsv(coordinates, coord_types, list(coord_types), "coordinates")
    meta_required = ["id", "title"] + ([space_col] if space_col else [])
    meta, skipped_m = _read_tsv(metadata, {}, meta_required, "metadata")
    counts: dict = {"rows_read": int(len(coords)) + int(skipped_c.size), "rows_malformed": int(skipped_c.size),
                    "metadata_rows_malformed": int(skipped_m.size)}
    lines = _file_lines(len(coords), skipped_c)

    # metadata: one row per id
    meta["id"] = meta["id"].astype(str).str.strip()
    dup = meta["id"].duplicated()
    counts["metadata_duplicate_ids"] = int(dup.sum())
    meta = meta[~dup & (meta["id"] != "") & meta["id"].notna()].reset_index(drop=True)
    counts["studies_in_metadata"] = int(len(meta))
    if space_col:
        rep = meta[space_col].fillna("").astype(str).str.strip().str.upper().map(lambda s: _SPACE_ALIASES.get(s, s))
    else:
        rep = pd.Series([fixed_space] * len(meta), dtype=object)
    meta["space"] = rep.to_numpy(dtype=object)
    meta["title"] = meta["title"].fillna("").astype(str)
    if "year" in meta.columns:
        meta["year"] = pd.to_numeric(meta["year"], errors="coerce").round().astype("Int64")
    else:
        meta["year"] = pd.array([pd.NA] * len(meta), dtype="Int64")
    subj = pd.Series(np.nan, index=meta.index)
    for c in _SUBJECT_COLUMNS:
        if c in meta.columns:
            subj = subj.fillna(pd.to_numeric(meta[c], errors="coerce").where(lambda v: v > 0))
    has_n = subj.notna().to_numpy()
    meta["n_subjects"] = np.where(has_n, np.round(subj.fillna(0).to_numpy()), int(default_subjects)).astype(np.int64)
    meta["subjects_default"] = ~has_n

    # coordinates: malformed rows
    cid = coords["id"].astype(str).str.strip()
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(xyz) <= _MAX_ABS_MM).all(axis=1)  # NaN, inf or implausibly large
    bad |= coords["id"].isna().to_numpy() | (cid == "").to_numpy()
    counts["rows_malformed"] += int(bad.sum())
    # study of every focus
    spos = pd.Index(meta["id"]).get_indexer(cid)
    orphan = (spos < 0) & ~bad
    counts["foci_without_metadata"] = int(orphan.sum())
    ok = ~bad & ~orphan
    space_ok = np.isin(meta["space"].to_numpy(dtype=object), want)
    unk_foci = ok & ~space_ok[np.where(spos < 0, 0, spos)]
    study_has_foci = np.bincount(spos[ok], minlength=len(meta)) > 0
    counts["studies_unknown_space"] = int((study_has_foci & ~space_ok).sum())
    counts["foci_unknown_space"] = int(unk_foci.sum())
    if (~space_ok).any():
        counts["unknown_space_values"] = sorted(set(meta["space"][~space_ok & study_has_foci].astype(str)))
    ok &= ~unk_foci
    keep_study = np.bincount(spos[ok], minlength=len(meta)) > 0
    counts["studies_without_foci"] = int((~study_has_foci).sum())
    # renumber kept studies in metadata order
    new_of_old = np.cumsum(keep_study) - 1
    f_sid = new_of_old[spos[ok]]
    f_xyz = xyz[ok]
    f_lines = lines[ok]
    f_table = coords[table_col].astype(str).str.strip().to_numpy(dtype=object)[ok]
    studies = meta[keep_study].reset_index(drop=True)
    # tables: codes by (study, table id), in first-appearance order within the study
    tkey = pd.MultiIndex.from_arrays([f_sid, f_table])
    tcode, tuniq = pd.factorize(tkey, sort=False)
    order = np.lexsort((np.arange(f_sid.size), tcode, f_sid))  # by study, then table, then file order
    f_sid, f_xyz, f_lines, tcode = f_sid[order], f_xyz[order], f_lines[order], tcode[order]
    # renumber tables in storage order so they are contiguous and increasing
    first_pos = np.full(len(tuniq), f_sid.size, dtype=np.int64)
    np.minimum.at(first_pos, tcode, np.arange(f_sid.size))
    torder = np.argsort(first_pos, kind="stable")
    trank = np.empty_like(torder)
    trank[torder] = np.arange(torder.size)
    tcode = trank[tcode]
    table_names = np.asarray(tuniq.get_level_values(1), dtype=object)[torder]
    table_study = np.asarray(tuniq.get_level_values(0), dtype=np.int64)[torder]
    per_study = np.bincount(f_sid, minlength=len(studies)).astype(np.int64)
    studies["n_foci"] = per_study
    # Talairach -> MNI
    is_tal = (studies["space"].to_numpy(dtype=object) == "TAL")[f_sid]
    if is_tal.any():
        f_xyz = f_xyz.copy()
        f_xyz[is_tal] = _tal2mni(f_xyz[is_tal], tal2mni)
    counts["studies_tal_converted"] = int((studies["space"] == "TAL").sum())
    counts["foci_tal_converted"] = int(is_tal.sum())
    counts["studies_default_subjects"] = int((~has_n[keep_study]).sum())
    counts["studies"] = int(len(studies))
    counts["tables"] = int(table_names.size)
    counts["foci"] = int(f_sid.size)
    counts["seconds"] = round(time.perf_counter() - t0, 3)
    front = ["id", "title", "year", "space", "n_subjects", "subjects_default", "n_foci"]
    studies = studies[front + [c for c in studies.columns if c not in front and c != space_col]]
    return Database(
        name=name, studies=studies, xyz=_ro(f_xyz), offsets=_ro(np.concatenate([[0], np.cumsum(per_study)]).astype(np.int64)),
        table_of_focus=_ro(tcode.astype(np.int64)), table_names=_ro(table_names),
        table_subjects=_ro(studies["n_subjects"].to_numpy(dtype=np.int64)[table_study]), lines=_ro(f_lines),
        sources={"coordinates": str(coordinates), "metadata": str(metadata)}, counts=counts, tal2mni=tal2mni,
        default_subjects=int(default_subjects),
    )


def read_neurosynth(coordinates_tsv_gz, metadata_tsv_gz, *, default_subjects: int = DEFAULT_SUBJECTS,
                    spaces: Sequence[str] = ("MNI", "TAL"), tal2mni: str = "other") -> Database:
    """Read the Neurosynth coordinates and metadata tables (e.g. version 7).

    Parameters
    ----------
    coordinates_tsv_gz, metadata_tsv_gz : path
        ``data-neurosynth_version-7_coordinates.tsv.gz`` and ``..._metadata.tsv.gz``.
    default_subjects : int
        Sample size of every study (Neurosynth reports none); counted.
    spaces : sequence of {"MNI", "TAL"}
        Reported spaces to keep; studies in other spaces (``UNKNOWN``) are dropped and counted.
    tal2mni : {"other", "spm", "fsl"}
        Lancaster (2007) variant for Talairach studies.
    """
    return _build("neurosynth", coordinates_tsv_gz, metadata_tsv_gz, table_col="table_id", space_col="space",
                  fixed_space=None, default_subjects=default_subjects, spaces=spaces, tal2mni=tal2mni)


def read_neuroquery(coordinates_tsv_gz, metadata_tsv_gz, *, default_subjects: int = DEFAULT_SUBJECTS,
                    space: str = "MNI", tal2mni: str = "other") -> Database:
    """Read the NeuroQuery coordinates and metadata tables (version 1).

    NeuroQuery has no space column (its foci are treated as MNI, as NeuroQuery
    does; ``space`` overrides), no year and no sample sizes (``default_subjects``).
    Tables are ``table_id`` within a study.
    """
    sp = _SPACE_ALIASES.get(str(space).upper())
    if sp is None:
        raise ParameterError(f"space must be 'MNI' or 'TAL', got {space!r}.")
    return _build("neuroquery", coordinates_tsv_gz, metadata_tsv_gz, table_col="table_id", space_col=None,
                  fixed_space=sp, default_subjects=default_subjects, spaces=(sp,), tal2mni=tal2mni)


def read_database(source: str | Path, coordinates: str | Path | None = None, metadata: str | Path | None = None,
                  **kwargs) -> Database:
    """Open a database by kind or path.

    ``source`` is ``"neurosynth"`` or ``"neuroquery"`` (then ``coordinates``
    and ``metadata`` are required), a folder holding ``*coordinates.tsv.gz``
    and ``*metadata.tsv.gz`` (the kind is told from the columns), or any file
    :func:`alemap.io.load_experiments` reads (NiMARE JSON, a NeuroStore
    studyset folder or parquet, Sleuth, tables), wrapped with
    :meth:`Database.from_experiment_set`. Nothing is downloaded.
    """
    kind = str(source).lower()
    if kind in ("neurosynth", "neuroquery"):
        if coordinates is None or metadata is None:
            raise ParameterError(
                f"--database {kind} needs the paths of its two tables: --coordinates FILE --metadata FILE "
                "(alemap never downloads them)."
            )
        reader = read_neurosynth if kind == "neurosynth" else read_neuroquery
        return reader(coordinates, metadata, **kwargs)
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: database not found; give 'neurosynth', 'neuroquery' or an existing path.")
    if path.is_dir():
        coords = sorted(path.glob("*coordinates.tsv*")) if coordinates is None else [Path(coordinates)]
        metas = sorted(path.glob("*metadata.tsv*")) if metadata is None else [Path(metadata)]
        if coords and metas:
            cols = set(pd.read_csv(coords[0], sep="\t", nrows=0).columns)
            mcols = set(pd.read_csv(metas[0], sep="\t", nrows=0).columns)
            if "space" in mcols:
                return read_neurosynth(coords[0], metas[0], **kwargs)
            if "table_id" in cols:
                return read_neuroquery(coords[0], metas[0], **kwargs)
    from alemap.io import load_experiments

    exps = load_experiments(path)
    return Database.from_experiment_set(exps, name=path.stem, tal2mni=kwargs.get("tal2mni", "other"))
