"""Engagement of a brain network (by default the motor-learning network) by ALE results.

A network is a list of disjoint nodes, each built from atlas regions (see
``alemap/resources/networks/motor_learning_network.yaml`` for the rules and
the shipped definition). :func:`network_engagement` says, for one thresholded
map, how much of each node it covers and its peak there; :func:`project_network_table`
does that for every analysis of an ``alemap run`` output folder and writes a
node x analysis table of peak z (``network.tsv``); :func:`network_heatmap` draws
that table.

Node masks need the atlas data (``pip install "alemap[atlases]"``); the heatmap
needs matplotlib (``pip install matplotlib``). Neither is imported at module load.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from alemap.exceptions import BackendUnavailableError, InputError, ParameterError
from alemap.io.atomic import atomic_path, write_text
from alemap.space.grid import Grid

__all__ = [
    "Network",
    "Node",
    "load_network",
    "available_networks",
    "validate_network",
    "node_masks",
    "node_labels",
    "cerebellar_zones",
    "network_engagement",
    "project_network_table",
    "network_heatmap",
    "ENGAGEMENT_COLUMNS",
]

_RESOURCE_PACKAGE = "alemap.resources.networks"
_SUFFIX = "_network.yaml"
_HEMIS = {"L": {"h": "L", "side": "Left"}, "R": {"h": "R", "side": "Right"}}
_AXES = ("x_abs", "x", "y", "z")
_ZONES = ("motor", "mixed", "cognitive", "vestibular")

ENGAGEMENT_COLUMNS = [
    "node", "label", "hemisphere", "system", "zone", "node_voxels", "overlap_voxels", "overlap_pct",
    "peak_z", "peak_x_mm", "peak_y_mm", "peak_z_mm", "engaged",
]


@dataclass(frozen=True)
class Node:
    """One node of a network (one hemisphere of a bilateral entry)."""

    id: str
    base: str
    label: str
    name: str
    hemisphere: str
    system: str
    zone: str
    regions: dict
    exclude: dict = field(default_factory=dict)
    box: dict = field(default_factory=dict)
    min_prob: float | None = None
    cite: tuple = ()


@dataclass(frozen=True, eq=False)
class Network:
    """A network definition read from YAML (see :func:`load_network`)."""

    name: str
    title: str
    nodes: tuple
    rules: dict
    systems: dict
    citations: dict
    cerebellar_zones: dict
    source: str
    digest: str

    @property
    def node_ids(self) -> list[str]:
        """Node ids in file order."""
        return [n.id for n in self.nodes]

    def node(self, node_id: str) -> Node:
        """The node with id ``node_id``."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"No node {node_id!r} in network {self.name!r}; nodes: {self.node_ids}.")

    def atlases(self) -> list[str]:
        """Atlases the node definitions use, in priority order."""
        used = {a for n in self.nodes for a in list(n.regions) + list(n.exclude)}
        prio = list(self.rules["atlas_priority"])
        return [a for a in prio if a in used]

    def table(self) -> pd.DataFrame:
        """One row per node: id, label, name, hemisphere, system, zone and the regions used."""
        rows = []
        for n in self.nodes:
            rows.append({
                "node": n.id, "label": n.label, "name": n.name, "hemisphere": n.hemisphere, "system": n.system,
                "zone": n.zone,
                "regions": "; ".join(f"{a}: {', '.join(r)}" for a, r in n.regions.items()),
                "exclude": "; ".join(f"{a}: {', '.join(r)}" for a, r in n.exclude.items()),
                "box": ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in n.box.items()),
            })
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- loading

def available_networks() -> list[str]:
    """Names of the networks shipped with alemap (``load_network(name)``)."""
    root = resources.files(_RESOURCE_PACKAGE)
    return sorted(p.name[: -len(_SUFFIX)] for p in root.iterdir() if p.name.endswith(_SUFFIX))


def _read_text(name_or_path) -> tuple[str, str]:
    if isinstance(name_or_path, (str, Path)):
        s = str(name_or_path)
        if isinstance(name_or_path, str) and "/" not in s and "\\" not in s and not s.endswith((".yaml", ".yml")):
            stem = s[: -len("_network")] if s.endswith("_network") else s
            ref = resources.files(_RESOURCE_PACKAGE).joinpath(stem + _SUFFIX)
            if not ref.is_file():
                raise ParameterError(f"Unknown network {s!r}; shipped networks: {available_networks()}, "
                                     "or pass the path of a network YAML file.")
            return ref.read_text(encoding="utf-8"), f"{_RESOURCE_PACKAGE}/{stem}{_SUFFIX}"
        path = Path(s)
        if not path.is_file():
            raise InputError(f"Network file '{path}' does not exist.")
        return path.read_text(encoding="utf-8"), str(path)
    raise ParameterError(f"Expected a network name or a YAML path, got {type(name_or_path).__name__}.")


def _fail(src: str, msg: str):
    raise InputError(f"{src}: {msg}")


def _names_list(src, where, value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        _fail(src, f"{where}: expected a non-empty list of region names.")
    return value


def _region_map(src, where, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(src, f"{where}: expected a mapping atlas -> list of region names.")
    return {str(a): _names_list(src, f"{where}.{a}", v) for a, v in value.items()}


def _fill(names: list[str], hemi: str) -> list[str]:
    if hemi not in _HEMIS:
        return list(names)
    out = []
    for n in names:
        for k, v in _HEMIS[hemi].items():
            n = n.replace("{" + k + "}", v)
        out.append(n)
    return out


def _parse_box(src, where, box) -> dict:
    if box is None:
        return {}
    if not isinstance(box, dict):
        _fail(src, f"{where}: expected a mapping of {list(_AXES)} to [min, max].")
    out = {}
    for k, v in box.items():
        if k not in _AXES:
            _fail(src, f"{where}: unknown axis {k!r}; expected one of {list(_AXES)}.")
        if not isinstance(v, list) or len(v) != 2 or not all(b is None or isinstance(b, (int, float)) for b in v):
            _fail(src, f"{where}.{k}: expected [min, max] in mm (null = open).")
        out[k] = (None if v[0] is None else float(v[0]), None if v[1] is None else float(v[1]))
    return out


def load_network(name_or_path: str | Path | Network = "motor_learning") -> Network:
    """Read a network definition: a shipped name (``"motor_learning"``) or a YAML path.

    The structure is checked here; region names are checked against the
    atlases by :func:`validate_network` (and by :func:`node_masks`).
    """
    if isinstance(name_or_path, Network):
        return name_or_path
    text, src = _read_text(name_or_path)
    key = (src, hashlib.sha256(text.encode()).hexdigest())
    with _net_lock:
        hit = _net_cache.get(key)
    if hit is None:
        hit = _parse(text, src)
        with _net_lock:
            _net_cache[key] = hit
            while len(_net_cache) > 16:
                _net_cache.pop(next(iter(_net_cache)))
    return hit


_net_cache: dict = {}
_net_lock = threading.Lock()


def _parse(text: str, src: str) -> Network:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise InputError(f"{src}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        _fail(src, "expected a mapping with a non-empty 'nodes' list.")
    rules = dict(data.get("rules") or {})
    rules.setdefault("min_prob", 0.25)
    rules.setdefault("atlas_priority", ["juelich", "harvard_oxford", "aal"])
    rules.setdefault("midline_cut", True)
    if not 0.0 <= float(rules["min_prob"]) <= 1.0:
        _fail(src, f"rules.min_prob: {rules['min_prob']} is outside [0, 1].")
    systems = dict(data.get("systems") or {})
    zones = {str(k): str(v) for k, v in (data.get("cerebellar_zones") or {}).items()}
    for region, z in zones.items():
        if z not in _ZONES:
            _fail(src, f"cerebellar_zones.{region}: zone {z!r} is not one of {list(_ZONES)}.")
    nodes, seen = [], set()
    for i, entry in enumerate(data["nodes"]):
        where = f"nodes[{i}]"
        if not isinstance(entry, dict) or not entry.get("id"):
            _fail(src, f"{where}: each node needs an 'id'.")
        base = str(entry["id"])
        where = f"nodes[{i}] ({base})"
        system = str(entry.get("system", "other"))
        zone = str(entry.get("zone", "") or "")
        if zone and zone not in _ZONES:
            _fail(src, f"{where}.zone: {zone!r} is not one of {list(_ZONES)}.")
        hemis = entry.get("hemispheres", ["bilateral"])
        if isinstance(hemis, str):
            hemis = [hemis]
        regions = _region_map(src, f"{where}.regions", entry.get("regions"))
        if not regions:
            _fail(src, f"{where}: 'regions' is empty.")
        exclude = _region_map(src, f"{where}.exclude", entry.get("exclude"))
        for a in list(regions) + list(exclude):
            if a not in rules["atlas_priority"]:
                _fail(src, f"{where}: atlas {a!r} is not in rules.atlas_priority {rules['atlas_priority']}.")
        box = _parse_box(src, f"{where}.box", entry.get("box"))
        min_prob = entry.get("min_prob")
        for h in hemis:
            nid = f"{base}_{h}" if h in _HEMIS else base
            if nid in seen:
                _fail(src, f"{where}: node id {nid!r} is defined twice.")
            seen.add(nid)
            label = str(entry.get("label", base))
            nodes.append(Node(
                id=nid, base=base, label=f"{label} {h}" if h in _HEMIS else label, name=str(entry.get("name", base)),
                hemisphere=str(h), system=system, zone=zone,
                regions={a: _fill(r, h) for a, r in regions.items()},
                exclude={a: _fill(r, h) for a, r in exclude.items()},
                box=box, min_prob=None if min_prob is None else float(min_prob),
                cite=tuple(entry.get("cite") or ()),
            ))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Network(
        name=str(data.get("name", Path(src).stem)), title=str(data.get("title", data.get("name", ""))),
        nodes=tuple(nodes), rules=rules, systems=systems, citations=dict(data.get("citations") or {}),
        cerebellar_zones=zones, source=src, digest=digest,
    )


def cerebellar_zones(network: str | Path | Network = "motor_learning") -> dict[str, str]:
    """AAL2 cerebellar region -> functional zone (motor / mixed / cognitive / vestibular)."""
    return dict(load_network(network).cerebellar_zones)


# --------------------------------------------------------------------------- masks

_mask_cache: dict = {}
_mask_lock = threading.Lock()


def _load_atlases(names, grid: Grid) -> dict:
    from alemap.space.atlases import load_atlas

    try:
        return {a: load_atlas(a, grid) for a in names}
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"Network node masks need the atlas data. {exc}") from exc


def validate_network(network: str | Path | Network = "motor_learning", grid: Grid | None = None) -> Network:
    """Check that every region name of the network exists in its atlas.

    Raises
    ------
    InputError
        Unknown region names (the message lists close matches).
    """
    import difflib

    from alemap.space.grid import load_mni152_2mm

    net = load_network(network)
    grid = load_mni152_2mm() if grid is None else grid
    atlases = _load_atlases(net.atlases(), grid)
    bad = []
    for n in net.nodes:
        for part in (n.regions, n.exclude):
            for a, names in part.items():
                known = set(atlases[a].names.values())
                for r in names:
                    if r not in known:
                        close = difflib.get_close_matches(r, sorted(known), n=2)
                        bad.append(f"{n.id}: {a} has no region {r!r}" + (f" (did you mean {close}?)" if close else ""))
    for r in net.cerebellar_zones:
        if "aal" in atlases and r not in set(atlases["aal"].names.values()):
            bad.append(f"cerebellar_zones: aal has no region {r!r}")
    if bad:
        raise InputError(f"{net.source}: unknown atlas regions:\n  " + "\n  ".join(bad))
    return net


def _region_member(atlas, names: list[str], min_prob: float) -> np.ndarray:
    inv = {v: k for k, v in atlas.names.items()}
    ids = [inv[r] for r in names]
    sel = np.isin(atlas.labels, ids)
    if atlas.prob is not None:  # maximum-probability map, thresholded
        pos = np.flatnonzero(sel)
        lab = atlas.labels[pos]
        p = atlas.prob[lab - 1, pos]
        sel[pos[p < min_prob]] = False
    return sel


def _box_member(box: dict, xyz: np.ndarray) -> np.ndarray:
    ok = np.ones(len(xyz), dtype=bool)
    for axis, (lo, hi) in box.items():
        v = np.abs(xyz[:, 0]) if axis == "x_abs" else xyz[:, "xyz".index(axis)]
        if lo is not None:
            ok &= v >= lo - 1e-6
        if hi is not None:
            ok &= v <= hi + 1e-6
    return ok


def node_labels(network: str | Path | Network = "motor_learning", grid: Grid | None = None) -> np.ndarray:
    """Node index (1-based, file order; 0 = no node) of every in-mask voxel of ``grid``."""
    from alemap.space.grid import load_mni152_2mm

    net = load_network(network)
    grid = load_mni152_2mm() if grid is None else grid
    key = (net.digest, grid.digest())
    with _mask_lock:
        hit = _mask_cache.get(key)
    if hit is not None:
        return hit
    validate_network(net, grid)
    atlases = _load_atlases(net.atlases(), grid)
    prio = {a: k for k, a in enumerate(net.rules["atlas_priority"])}
    xyz = grid.ijk_to_mm(grid.mask_ijk)
    big = np.int32(1 << 20)
    best = np.full(grid.n_voxels, big, dtype=np.int32)
    labels = np.zeros(grid.n_voxels, dtype=np.int32)
    n_nodes = len(net.nodes)
    for order, n in enumerate(net.nodes):
        min_prob = float(net.rules["min_prob"] if n.min_prob is None else n.min_prob)
        keep = _box_member(n.box, xyz) if n.box else np.ones(grid.n_voxels, dtype=bool)
        if net.rules.get("midline_cut", True) and n.hemisphere in _HEMIS:  # stay on its side (x = 0 is both)
            keep &= (xyz[:, 0] <= 1e-6) if n.hemisphere == "L" else (xyz[:, 0] >= -1e-6)
        for a, names in n.exclude.items():  # excluded wherever the region is the most probable one
            keep &= ~_region_member(atlases[a], names, 0.0)
        rank = np.full(grid.n_voxels, big, dtype=np.int32)
        for a, names in n.regions.items():
            claim = _region_member(atlases[a], names, min_prob) & keep
            rank[claim] = np.minimum(rank[claim], prio[a] * (n_nodes + 1) + order)
        win = rank < best
        best[win] = rank[win]
        labels[win] = order + 1
    labels.setflags(write=False)
    with _mask_lock:
        _mask_cache[key] = labels
        while len(_mask_cache) > 8:
            _mask_cache.pop(next(iter(_mask_cache)))
    return labels


def node_masks(network: str | Path | Network = "motor_learning", grid: Grid | None = None) -> dict[str, np.ndarray]:
    """Node id -> boolean mask over the in-mask voxels of ``grid`` (disjoint; file order)."""
    net = load_network(network)
    labels = node_labels(net, grid)
    return {n.id: labels == k for k, n in enumerate(net.nodes, start=1)}


# --------------------------------------------------------------------------- engagement

def _in_mask(values, grid: Grid, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.shape == tuple(grid.shape):
        a = a.reshape(-1)[grid.mask_flat]
    if a.shape != (grid.n_voxels,):
        raise ParameterError(f"{what} has shape {np.asarray(values).shape}; expected ({grid.n_voxels},) over the "
                             f"grid's in-mask voxels or the grid shape {tuple(grid.shape)}.")
    return a


def network_engagement(in_mask_significant_map, stat_map, grid: Grid | None = None,
                       network: str | Path | Network = "motor_learning", min_voxels: int = 5) -> pd.DataFrame:
    """How a thresholded map engages each node of a network.

    Parameters
    ----------
    in_mask_significant_map : array
        Significant voxels (bool, or numeric where non-zero and finite means
        significant), over the grid's in-mask voxels or the full grid.
    stat_map : array or None
        The statistic (e.g. z) at the same voxels; None uses the values of
        ``in_mask_significant_map``.
    grid : Grid, optional
        The analysis grid (MNI152 2 mm by default).
    network : str, path or Network
        The network (``"motor_learning"`` by default).
    min_voxels : int
        A node is engaged when at least this many of its voxels are significant.

    Returns
    -------
    DataFrame
        One row per node (file order) with :data:`ENGAGEMENT_COLUMNS`:
        ``overlap_pct`` is the share of the node's voxels that are significant;
        ``peak_z`` the largest statistic in the overlap (0 when there is none)
        and ``peak_*_mm`` its position.
    """
    from alemap.space.grid import load_mni152_2mm

    if int(min_voxels) < 1:
        raise ParameterError(f"min_voxels must be >= 1, got {min_voxels}.")
    grid = load_mni152_2mm() if grid is None else grid
    net = load_network(network)
    sig = _in_mask(in_mask_significant_map, grid, "The significant map")
    stat = sig if stat_map is None else _in_mask(stat_map, grid, "The statistic map")
    stat = np.asarray(stat, dtype=np.float64)
    sig = (sig if sig.dtype == bool else (np.nan_to_num(np.asarray(sig, dtype=np.float64)) != 0))
    labels = node_labels(net, grid)
    node_counts = np.bincount(labels, minlength=len(net.nodes) + 1)
    hit = np.flatnonzero(sig & (labels > 0))
    overlap = np.bincount(labels[hit], minlength=len(net.nodes) + 1)
    rows = []
    for k, n in enumerate(net.nodes, start=1):
        members = hit[labels[hit] == k]
        peak_z, peak_mm = 0.0, (np.nan, np.nan, np.nan)
        if members.size:
            vals = np.where(np.isfinite(stat[members]), stat[members], -np.inf)
            top = members[int(np.argmax(vals))]
            peak_z = float(stat[top]) if np.isfinite(stat[top]) else 0.0
            peak_mm = tuple(float(v) for v in grid.ijk_to_mm(grid.mask_ijk[top])[0])
        nv = int(node_counts[k])
        ov = int(overlap[k])
        rows.append({
            "node": n.id, "label": n.label, "hemisphere": n.hemisphere, "system": n.system, "zone": n.zone,
            "node_voxels": nv, "overlap_voxels": ov, "overlap_pct": 100.0 * ov / nv if nv else 0.0,
            "peak_z": peak_z, "peak_x_mm": peak_mm[0], "peak_y_mm": peak_mm[1], "peak_z_mm": peak_mm[2],
            "engaged": bool(ov >= int(min_voxels)),
        })
    return pd.DataFrame(rows, columns=ENGAGEMENT_COLUMNS)


# --------------------------------------------------------------------------- project folders

_KIND_FILES = (("ale", "z_cfwe.nii.gz"), ("contrast", "z_contrast.nii.gz"),
               ("conjunction", "z_conjunction.nii.gz"), ("csale", "z_csale.nii.gz"))
_KIND_MAP = dict(_KIND_FILES)


def _analysis_kind(folder: Path) -> str | None:
    prov = folder / "provenance.json"
    if not prov.is_file():
        return None
    try:
        meta = json.loads(prov.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind in _KIND_MAP and (folder / _KIND_MAP[kind]).is_file():
        return kind
    for k, fname in _KIND_FILES:
        if (folder / fname).is_file():
            return k
    return None


def _grid_for(img, cache: dict) -> Grid:
    from alemap.space.grid import load_mni152_2mm

    shape = tuple(int(s) for s in img.shape[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    key = (shape, np.round(affine, 6).tobytes())
    if key not in cache:
        ref = load_mni152_2mm()
        if shape == tuple(ref.shape) and np.allclose(affine, ref.affine, atol=1e-4):
            cache[key] = ref
        else:  # another analysis grid: every voxel of the box counts
            cache[key] = Grid(shape, affine, np.ones(shape, dtype=bool), name="image-box")
    return cache[key]


def _read_map(path: Path, cache: dict) -> tuple[Grid, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types
        raise InputError(f"'{path}' could not be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    grid = _grid_for(img, cache)
    return grid, np.nan_to_num(data.reshape(-1)[grid.mask_flat])


def _analysis_order(outdir: Path) -> list[str]:
    names = sorted(p.name for p in outdir.iterdir() if p.is_dir())
    pj = outdir / "project.json"
    if pj.is_file():
        try:
            listed = list(json.loads(pj.read_text(encoding="utf-8")).get("analyses", {}))
        except (OSError, ValueError, AttributeError):
            listed = []
        names = [n for n in listed if n in names] + [n for n in names if n not in listed]
    return names


def project_network_table(outdir: str | Path, network: str | Path | Network = "motor_learning",
                          min_voxels: int = 5, out_tsv: str | Path | None = None) -> pd.DataFrame:
    """Node x analysis table of peak z for every analysis of an ``alemap run`` output folder.

    Each subfolder with a ``provenance.json`` is an analysis; its kind comes
    from the provenance ``type`` or from which thresholded map it holds. The
    map used: ALE ``z_cfwe``; contrast ``z_contrast``, split into an
    ``"<name>: <A>>B>"`` column (z > 0) and a ``"<name>: <B>><A>"`` column (z < 0,
    sign flipped); conjunction ``z_conjunction``; C-SALE ``z_csale``. A cell is
    the node's peak z, or 0 when fewer than ``min_voxels`` of its voxels are
    significant. Columns follow ``project.json`` (run order) when present.

    Writes the table to ``out_tsv`` (default ``<outdir>/network.tsv``)
    atomically and returns it (index ``node``).
    """
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise InputError(f"Project output folder '{outdir}' does not exist.")
    net = load_network(network)
    columns: dict[str, pd.Series] = {}
    cache: dict = {}

    def add(col, sig, stat, grid):
        e = network_engagement(sig, stat, grid, net, min_voxels)
        columns[col] = pd.Series(np.where(e["engaged"], e["peak_z"], 0.0), index=e["node"].to_numpy())

    for name in _analysis_order(outdir):
        folder = outdir / name
        kind = _analysis_kind(folder)
        if kind is None:
            continue
        grid, z = _read_map(folder / _KIND_MAP[kind], cache)
        if kind == "contrast":
            try:
                meta = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            a, b = str(meta.get("A", "A")), str(meta.get("B", "B"))
            add(f"{name}: {a}>{b}", z > 0, z, grid)
            add(f"{name}: {b}>{a}", z < 0, -z, grid)
        else:
            add(name, z > 0, z, grid)
    if not columns:
        raise InputError(f"'{outdir}' holds no analysis folder (a subfolder with provenance.json and one of "
                         f"{[f for _, f in _KIND_FILES]}).")
    table = pd.DataFrame(columns, index=pd.Index(net.node_ids, name="node"))
    out = outdir / "network.tsv" if out_tsv is None else Path(out_tsv)
    write_text(out, table.to_csv(sep="\t", float_format="%.4g"))
    return table


# --------------------------------------------------------------------------- heatmap

def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendUnavailableError(
            "The network heatmap needs matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return matplotlib, Figure


def network_heatmap(table: pd.DataFrame | str | Path, out_png: str | Path, out_svg: str | Path | None = None,
                    network: str | Path | Network = "motor_learning", title: str | None = None,
                    vmax: float | None = None, annotate: bool = True, cmap: str = "YlOrRd") -> list[Path]:
    """Draw a node x analysis table (from :func:`project_network_table`) as a heatmap.

    Rows are the network's nodes grouped by system (cortex, basal ganglia &
    thalamus, cerebellum), columns the analyses; colour is the peak z, grey a
    node that is not engaged (0 or missing). ``table`` may be the DataFrame or
    the path of ``network.tsv``. Writes a PNG (and an SVG when ``out_svg`` is
    given) atomically, with matplotlib's Agg renderer (pyplot is not used, the
    global backend is left alone). Returns the paths written.
    """
    matplotlib, Figure = _matplotlib()
    if not isinstance(table, pd.DataFrame):
        table = pd.read_csv(table, sep="\t", index_col=0)
    if table.shape[1] == 0:
        raise ParameterError("The table has no analysis column.")
    net = load_network(network)
    sys_order = list(net.systems) or []
    by_id = {n.id: n for n in net.nodes}
    for n in net.nodes:
        if n.system not in sys_order:
            sys_order.append(n.system)
    rows, groups = [], []
    for s in sys_order + ["other"]:
        ids = [n.id for n in net.nodes if n.system == s and n.id in table.index] if s != "other" else \
            [i for i in table.index if i not in by_id]
        if ids:
            groups.append((net.systems.get(s, s.replace("_", " ").capitalize()), len(rows), len(rows) + len(ids)))
            rows.extend(ids)
    data = table.loc[rows].to_numpy(dtype=np.float64)
    shown = np.ma.masked_where(~np.isfinite(data) | (data <= 0), data)
    top = float(vmax) if vmax is not None else (float(shown.max()) if shown.count() else 1.0)
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#d9d9d9")

    n_rows, n_cols = data.shape
    longest = max(len(str(c)) for c in table.columns)
    top_in = 0.3 + 0.035 * longest + (0.35 if title else 0.0)  # rotated column labels (and title)
    bottom_in = 1.1  # colour bar and its label
    width = max(5.0, 3.4 + 0.75 * n_cols)
    height = top_in + bottom_in + 0.24 * n_rows
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes([2.0 / width, bottom_in / height, 1 - 3.4 / width, 1 - (top_in + bottom_in) / height])
    im = ax.imshow(shown, cmap=cm, vmin=0.0, vmax=top, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([str(c) for c in table.columns], rotation=35, ha="left", fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([by_id[i].label if i in by_id else str(i) for i in rows], fontsize=8)
    ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    for name, start, stop in groups:
        if start:
            ax.axhline(start - 0.5, color="black", linewidth=1.2)
        ax.text(n_cols - 0.5 + 0.15, (start + stop - 1) / 2, name, rotation=-90, va="center", ha="left",
                fontsize=8, fontweight="bold")
    if annotate:
        for r in range(n_rows):
            for c in range(n_cols):
                if not np.ma.is_masked(shown[r, c]):
                    v = float(shown[r, c])
                    ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 * top else "black")
    cax = fig.add_axes([2.0 / width, 0.55 / height, min(0.45, 1 - 3.4 / width), 0.14 / height])
    cb = fig.colorbar(im, cax=cax, orientation="horizontal")
    cb.set_label("peak z (grey: not engaged)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")

    written = []
    for path, fmt, meta in ((out_png, "png", {"Software": None}), (out_svg, "svg", {"Date": None})):
        if path is None:
            continue
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta, bbox_inches="tight", pad_inches=0.15)
        written.append(path)
    return written
