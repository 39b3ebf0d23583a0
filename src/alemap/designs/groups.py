"""Groups of experiments, and pooling of experiments that share subjects.

A group selects experiments by tags (every listed tag must match one of its
values), by study keys or experiment names, minus exclusions. An empty group
spec selects every experiment.

Pooling (Turkeltaub et al. 2012, Hum Brain Mapp 33:1-13): several experiments
of one study usually come from the same subjects, and counting them as
independent inflates convergence. ``pooling: merge`` merges each study's
experiments into one (all foci; the sample size is the rounded mean, as the
C-SALE scripts do); ``pooling: warn`` (default) keeps them and warns.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from alemap.data.experiment_set import ExperimentSet, FocusOrigin

__all__ = ["select_group", "pool_by_study", "studies_with_several_experiments"]


def _matches(spec: dict, name: str, study: str, tags: dict) -> bool:
    if spec["experiments"] and name not in spec["experiments"]:
        return False
    if spec["studies"] and study not in spec["studies"]:
        return False
    if name in spec["exclude_experiments"] or study in spec["exclude_studies"]:
        return False
    return all(str(tags.get(k)) in vals for k, vals in spec["tags"].items())


def select_group(experiments: ExperimentSet, spec: dict) -> np.ndarray:
    """Indices of the experiments a group spec selects."""
    return np.array(
        [i for i in range(experiments.n_experiments)
         if _matches(spec, experiments.names[i], experiments.studies[i], experiments.tags[i])],
        dtype=np.int64,
    )


def studies_with_several_experiments(experiments: ExperimentSet) -> dict:
    """Study key -> number of experiments, for studies with more than one."""
    counts = Counter(experiments.studies)
    return {s: n for s, n in counts.items() if n > 1}


def pool_by_study(experiments: ExperimentSet) -> ExperimentSet:
    """Merge the experiments of each study into one experiment."""
    records = []
    by_study: dict[str, list[int]] = {}
    for i, s in enumerate(experiments.studies):
        by_study.setdefault(s, []).append(i)
    for study, idx in by_study.items():
        if len(idx) == 1:
            records.append(_record(experiments, idx[0]))
            continue
        spaces = {experiments.spaces[i] for i in idx}
        xyz = np.concatenate([experiments.foci(i) for i in idx])
        origins: list[FocusOrigin] = []
        for i in idx:
            a, b = experiments.offsets[i], experiments.offsets[i + 1]
            origins.extend(experiments.origins[a:b])
        tags = {k: v for k, v in experiments.tags[idx[0]].items()
                if all(experiments.tags[i].get(k) == v for i in idx)}
        tags["pooled_from"] = "; ".join(experiments.names[i] for i in idx)
        records.append({
            "name": f"{study} (pooled)", "study": study,
            "n_subjects": int(round(float(np.mean(experiments.n_subjects[idx])))),
            "space": spaces.pop() if len(spaces) == 1 else _mixed(experiments, idx),
            "xyz": xyz, "origins": origins, "tags": tags,
        })
    return ExperimentSet.from_records(records)


def _record(experiments: ExperimentSet, i: int) -> dict:
    a, b = experiments.offsets[i], experiments.offsets[i + 1]
    return {"name": experiments.names[i], "study": experiments.studies[i],
            "n_subjects": int(experiments.n_subjects[i]), "space": experiments.spaces[i],
            "xyz": experiments.xyz[a:b], "origins": list(experiments.origins[a:b]),
            "tags": dict(experiments.tags[i])}


def _mixed(experiments: ExperimentSet, idx) -> str:
    from alemap.exceptions import InputError

    names = ", ".join(repr(experiments.names[i]) for i in idx)
    raise InputError(f"Cannot pool experiments reported in different spaces: {names}; "
                     "give them one space or set 'pooling: warn'.")
