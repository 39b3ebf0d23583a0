"""The project file: a YAML description of a whole meta-analysis.

Example (every key is documented in ``docs/project-file.md``)::

    name: Motor learning
    inputs: [motor_learning.tsv]          # paths relative to this file
    defaults: {iterations: 10000, seed: 0}
    pooling: warn                         # warn | merge | off
    min_experiments: 17
    groups:
      all: {}
      sequence: {tags: {paradigm: sequence}}
    analyses:
      global: {type: ale, group: all}
      sequence: {type: ale, group: sequence}
      seq_vs_sm: {type: contrast, analyses: [sequence, sensorimotor]}
      both: {type: conjunction, analyses: [sequence, sensorimotor]}

The file is read with ``yaml.safe_load`` (no Python tags), validated
completely before any computation, and every error names the key path and the
line of the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alemap.exceptions import InputError

__all__ = ["Project", "ProjectError", "load_project", "ANALYSIS_TYPES", "ALE_PARAMETERS"]

ANALYSIS_TYPES = ("ale", "contrast", "conjunction", "csale")
ALE_PARAMETERS = (
    "iterations", "seed", "cluster_forming_p", "alpha", "connectivity", "placement", "tal2mni",
    "outside_mask", "cluster_stat", "fdr_q", "mask",
)
CONTRAST_PARAMETERS = ("method", "permutations", "p", "min_volume_mm3", "seed", "subsamples", "target_n")
CONJUNCTION_PARAMETERS = ("map", "min_volume_mm3")
CSALE_PARAMETERS = ("iterations", "seed", "p", "k", "dilate_mm", "region", "base_rate", "placement", "tal2mni",
                    "outside_mask")
TOP_KEYS = ("name", "description", "inputs", "defaults", "pooling", "min_experiments", "groups", "analyses", "review")
GROUP_KEYS = ("tags", "studies", "experiments", "exclude_studies", "exclude_experiments")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: names the runner and the report write at the top of the output folder
RESERVED_NAMES = frozenset({"project.json", "review.json", "report.html", "figures", "network.tsv", "network.png",
                            "network.svg"})


class ProjectError(InputError):
    """The project file is malformed; the message names the key path and line."""


@dataclass(frozen=True)
class Project:
    """A validated project file."""

    path: Path
    name: str
    inputs: tuple[dict, ...]
    defaults: dict
    pooling: str
    min_experiments: int
    groups: dict
    analyses: dict
    review: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def base(self) -> Path:
        """Folder of the project file (relative paths start here)."""
        return self.path.parent


class _Locator:
    """Maps key paths of the YAML document to line numbers."""

    def __init__(self, root):
        self.root = root

    def line(self, *path) -> int:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else 0
        for key in path:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == str(key):
                        line, nxt = k.start_mark.line + 1, v
                        break
                if nxt is None:
                    return line
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


class _Checker:
    def __init__(self, path: Path, locator: _Locator):
        self.path = path
        self.loc = locator
        self.raw_analyses: dict = {}

    def fail(self, message: str, *keypath) -> ProjectError:
        where = ".".join(str(k) for k in keypath) or "(top level)"
        return ProjectError(f"{self.path}:{self.loc.line(*keypath)}: {where}: {message}")

    def mapping(self, value, *keypath) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"expected a mapping (key: value lines), got {type(value).__name__}", *keypath)
        return value

    def loc_keys(self, analysis: str) -> set:
        """Keys written in the analysis's own mapping (not inherited from defaults)."""
        return set(self.raw_analyses.get(analysis, {}) or {})

    def known_keys(self, value: dict, allowed, *keypath) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r}; expected one of: {', '.join(allowed)}", *keypath, key)

    def safe_name(self, name, *keypath) -> str:
        if isinstance(name, str) and name.lower() in RESERVED_NAMES:
            raise self.fail(f"name {name!r} is reserved for a file alemap writes in the output folder; "
                            "choose another name", *keypath)
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
            raise self.fail(
                f"name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a folder name; "
                "no '/', no '..', at most 100 characters)", *keypath
            )
        return name


def _duplicate_key(node):
    """(key, line) of the first key repeated within one mapping, or None."""
    stack = [node]
    visited = set()
    while stack:
        n = stack.pop()
        if id(n) in visited:  # aliases share nodes: visit each once (no "billion laughs")
            continue
        visited.add(id(n))
        if isinstance(n, yaml.MappingNode):
            seen = {}
            for k, v in n.value:
                key = getattr(k, "value", None)
                if key in seen:
                    return key, k.start_mark.line + 1, seen[key]
                seen[key] = k.start_mark.line + 1
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"Project file '{path}' does not exist.") from None
    except UnicodeDecodeError as exc:
        raise ProjectError(f"{path}: not UTF-8 text ({exc.reason}); save the project file as UTF-8.") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectError(f"{path}{line}: not valid YAML for a project file: {problem}") from None
    dup = _duplicate_key(node) if node is not None else None
    if dup:
        raise ProjectError(f"{path}:{dup[1]}: key {dup[0]!r} appears twice in one mapping (first at line {dup[2]}); "
                           "YAML would keep only the last one. Rename or merge them.")
    return data, node


def _inputs(ch: _Checker, raw) -> tuple[dict, ...]:
    if raw is None:
        raise ch.fail("at least one input file is required, e.g. 'inputs: [foci.txt]'", "inputs")
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        spec = {"path": item} if isinstance(item, str) else ch.mapping(item, "inputs", i)
        ch.known_keys(spec, ("path", "space", "sheet"), "inputs", i)
        if not isinstance(spec.get("path"), str):
            raise ch.fail("each input needs a 'path' (a file name)", "inputs", i)
        full = (ch.path.parent / spec["path"]).resolve()
        if not full.is_file():
            raise ch.fail(f"input file '{spec['path']}' not found (looked for {full})", "inputs", i)
        out.append(dict(spec, path=str(full)))
    return tuple(out)


def _groups(ch: _Checker, raw) -> dict:
    groups = {}
    for name, spec in ch.mapping(raw, "groups").items():
        ch.safe_name(name, "groups", name)
        spec = ch.mapping(spec, "groups", name)
        ch.known_keys(spec, GROUP_KEYS, "groups", name)
        tags = ch.mapping(spec.get("tags"), "groups", name, "tags")
        norm_tags = {}
        for key, val in tags.items():
            vals = val if isinstance(val, list) else [val]
            norm_tags[str(key)] = [str(v) for v in vals]
        lists = {}
        for key in ("studies", "experiments", "exclude_studies", "exclude_experiments"):
            val = spec.get(key, [])
            if not isinstance(val, list) or not all(isinstance(v, (str, int)) for v in val):
                raise ch.fail("expected a list of names", "groups", name, key)
            lists[key] = [str(v) for v in val]
        groups[name] = {"tags": norm_tags, **lists}
    if not groups:
        groups["all"] = {"tags": {}, "studies": [], "experiments": [], "exclude_studies": [], "exclude_experiments": []}
    return groups


def _analysis(ch: _Checker, name: str, spec: dict, groups: dict, defaults: dict) -> dict:
    kind = spec.get("type", "ale")
    if kind not in ANALYSIS_TYPES:
        raise ch.fail(f"unknown analysis type {kind!r}; expected one of {ANALYSIS_TYPES}", "analyses", name, "type")
    if kind in ("ale", "csale"):
        allowed = ALE_PARAMETERS if kind == "ale" else CSALE_PARAMETERS
        extra = ("stability",) if kind == "ale" else ()
        ch.known_keys(spec, ("type", "group", *allowed, *extra), "analyses", name)
        stability = spec.get("stability", 0)
        if kind == "ale" and (not isinstance(stability, int) or isinstance(stability, bool) or stability < 0):
            raise ch.fail("stability must be a whole number of subsamples (0 = off), e.g. 'stability: 100'",
                          "analyses", name, "stability")
        group = spec.get("group", "all" if "all" in groups else None)
        if group is not None and not isinstance(group, str):
            raise ch.fail(f"'group' must be one group name, got {type(group).__name__}", "analyses", name, "group")
        if group not in groups:
            if group is None:
                raise ch.fail("no 'group' given and no group named 'all' is defined; add 'group: NAME'",
                              "analyses", name)
            raise ch.fail(f"unknown group {group!r}; defined groups: {', '.join(groups)}", "analyses", name, "group")
        params = {k: v for k, v in {**defaults, **spec}.items() if k in allowed}
        out = {"type": kind, "group": group, "params": params}
        if kind == "ale" and stability:
            out["stability"] = stability
        return out
    refs_key = "analyses"
    allowed = ("type", refs_key, *(CONTRAST_PARAMETERS if kind == "contrast" else CONJUNCTION_PARAMETERS))
    ch.known_keys(spec, allowed, "analyses", name)
    refs = spec.get(refs_key)
    n_min = 2
    if not isinstance(refs, list) or len(refs) < n_min or (kind == "contrast" and len(refs) != 2):
        want = "exactly two" if kind == "contrast" else "two or more"
        raise ch.fail(f"a {kind} needs {want} ALE analyses, e.g. '{refs_key}: [a, b]'", "analyses", name, refs_key)
    params = {k: v for k, v in spec.items() if k not in ("type", refs_key)}
    return {"type": kind, "refs": [str(r) for r in refs], "params": params}


def _param_constraints(kind: str) -> dict:
    from alemap._validation import Interval, Options
    from alemap.estimator import _CONSTRAINTS as ale_constraints

    if kind == "ale":
        return {k: v for k, v in ale_constraints.items() if k != "jobs"}
    if kind == "contrast":
        return {"method": Options(("gingerale", "subtraction", "balanced")), "permutations": Interval(int, 1, None),
                "p": Interval(float, 0, 1, "neither"), "min_volume_mm3": Interval(float, 0, None),
                "seed": Interval(int, 0, None), "subsamples": Interval(int, 1, None),
                "target_n": Interval(int, 1, None)}
    if kind == "conjunction":
        return {"map": Options(("z_cfwe", "z_vfwe")), "min_volume_mm3": Interval(float, 0, None)}
    return {"iterations": Interval(int, 1, None), "seed": Interval(int, 0, None),
            "p": Interval(float, 0, 1, "neither"), "k": Interval(int, 1, None),
            "dilate_mm": Interval(float, 0, None), "region": Options(("cerebellum", "whole_brain")),
            "base_rate": Options(("neurosynth",)), "placement": ale_constraints["placement"],
            "tal2mni": ale_constraints["tal2mni"], "outside_mask": ale_constraints["outside_mask"]}


def _check_params(ch: _Checker, name: str, a: dict) -> None:
    from alemap._validation import validate
    from alemap.exceptions import ParameterError

    constraints = _param_constraints(a["type"])
    for key, value in a["params"].items():
        if key not in constraints or (key == "mask" and value is None):
            continue
        try:
            validate(f"analysis {name!r}", {key: constraints[key]}, {key: value})
        except ParameterError as exc:
            where = ("analyses", name, key) if key in ch.loc_keys(name) else ("defaults", key)
            raise ch.fail(str(exc), *where) from None


def _check_refs(ch: _Checker, analyses: dict) -> None:
    for name, a in analyses.items():
        for r in a.get("refs", []):
            if r not in analyses:
                raise ch.fail(f"refers to unknown analysis {r!r}", "analyses", name, "analyses")
            if analyses[r]["type"] != "ale":
                raise ch.fail(f"{r!r} is a {analyses[r]['type']}; only ALE analyses can be combined", "analyses", name, "analyses")
        if a["type"] == "contrast" and a["refs"][0] == a["refs"][1]:
            raise ch.fail("a contrast needs two different analyses", "analyses", name, "analyses")
        if a["type"] in ("contrast", "conjunction"):
            masks = {str(analyses[r]["params"].get("mask")) for r in a["refs"]}
            if len(masks) > 1:
                raise ch.fail(f"the analyses it combines use different masks ({', '.join(sorted(masks))}); "
                              "contrasts and conjunctions need one mask", "analyses", name, "analyses")


def _check_iterations(ch: _Checker, analyses: dict) -> None:
    for name, a in analyses.items():
        for r in a.get("refs", []):
            if analyses[r]["params"].get("iterations", 10000) == 0:
                raise ch.fail(f"{r!r} has iterations: 0, so it has no FWE-corrected map to "
                              f"{'contrast' if a['type'] == 'contrast' else 'combine'}; give it iterations",
                              "analyses", name, "analyses")


def load_project(path: str | Path) -> Project:
    """Read and validate a project file."""
    path = Path(path).resolve()
    data, node = _read_yaml(path)
    ch = _Checker(path, _Locator(node))
    data = ch.mapping(data)
    ch.known_keys(data, TOP_KEYS)
    inputs = _inputs(ch, data.get("inputs"))
    defaults = ch.mapping(data.get("defaults"), "defaults")
    ch.known_keys(defaults, ALE_PARAMETERS, "defaults")
    pooling = data.get("pooling", "warn")
    if pooling is False:  # YAML 1.1 reads an unquoted 'off' as false
        pooling = "off"
    if pooling not in ("warn", "merge", "off"):
        raise ch.fail("pooling must be 'warn', 'merge' or 'off'", "pooling")
    min_exp = data.get("min_experiments", 17)
    if not isinstance(min_exp, int) or isinstance(min_exp, bool) or min_exp < 1:
        raise ch.fail("min_experiments must be a positive integer", "min_experiments")
    groups = _groups(ch, data.get("groups"))
    raw_analyses = ch.mapping(data.get("analyses"), "analyses")
    ch.raw_analyses = raw_analyses
    if not raw_analyses:
        raise ch.fail("no analyses: add e.g. 'analyses: {main: {type: ale, group: all}}'", "analyses")
    analyses = {}
    for name, spec in raw_analyses.items():
        ch.safe_name(name, "analyses", name)
        analyses[name] = _analysis(ch, name, ch.mapping(spec, "analyses", name), groups, defaults)
        analyses[name]["line"] = ch.loc.line("analyses", name)
        _check_params(ch, name, analyses[name])
    _check_refs(ch, analyses)
    _check_iterations(ch, analyses)
    return Project(
        path=path, name=str(data.get("name", path.stem)), inputs=inputs, defaults=defaults,
        pooling=pooling, min_experiments=min_exp, groups=groups, analyses=analyses,
        review=ch.mapping(data.get("review"), "review"), raw=data,
    )
