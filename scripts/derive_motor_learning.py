#!/usr/bin/env python
"""Derive the embedded motor-learning demo data set from the Neurosynth v7 tables.

The design follows the global analysis of Hardwick RM, Rottschy C, Miall RC,
Eickhoff SB (2013), "A quantitative meta-analysis and review of motor learning
in the human brain", NeuroImage 67:283-297: motor *sequence* learning (serial
reaction time task and other sequence learning) versus *sensorimotor*
(adaptation) learning. Hardwick et al.'s own curated data are NOT used; the
studies are picked from the automatically extracted Neurosynth database
(Yarkoni et al. 2011, Nature Methods 8:665; Open Database License 1.0) by
regular expressions on the article titles, documented below.

Usage (from the repository root)::

    python scripts/derive_motor_learning.py [--shared ../shared]
        [--out src/alemap/resources/demo/motor_learning.tsv] [--notice PATH] [--quiet]

``--shared`` is the folder that holds ``data/neurosynth-v7/`` (default: the
``shared`` folder beside the repository). The script prints every selected
title with its paradigm, every title rejected by an exclusion rule, and the
counts; it writes the foci table and (unless ``--notice ''``) the NOTICE file
beside it. The derivation is deterministic: the same input tables give a
byte-identical output. Only pandas and the standard library are needed.

Selection rules (all regular expressions are case-insensitive, ``re.search``
on the whitespace-normalised title):

1. ``space`` must be MNI or TAL (UNKNOWN is dropped).
2. A title is a ``sequence`` candidate if it matches any of SEQUENCE_PATTERNS
   and a ``sensorimotor`` candidate if it matches any of SENSORIMOTOR_PATTERNS,
   unless it matches that paradigm's own exclusions (SENSORIMOTOR_EXCLUDE:
   arbitrary/conditional/associative visuomotor learning and action
   observation, which are not error-based adaptation).
3. A candidate is dropped if its title matches any of EXCLUDE_PATTERNS:
   patients/diseases/drugs of abuse (healthy-adult design), non-human animals,
   reviews/meta-analyses, structural or resting-state studies (no task
   activation), eye-movement, speech, music or purely perceptual sequences
   (the design is about limb/hand motor learning).
4. A title that matches both paradigms names both (e.g. "consolidation of
   motor sequence learning and motor adaptation"); it is dropped, since one
   pooled experiment cannot be assigned to one paradigm.
5. Generic titles ("motor learning", "motor skill learning") without a cue to
   the paradigm are not selected: a title must name the task.

Experiments: one per study (all tables of the study pooled; exact duplicate
coordinates within a study removed), so that a study with several tables does
not add several non-independent experiments (Turkeltaub et al. 2012, Hum Brain
Mapp 33:1-13). Studies with fewer than MIN_FOCI or more than MAX_FOCI foci
(after de-duplication) are dropped: too few to be a result table, or likely a
whole-table dump of every contrast.

Neurosynth holds no sample sizes: every experiment gets DEFAULT_SUBJECTS (15, a
typical fMRI group size of the period) with ``subjects_source = default``. It is
a placeholder; in ALE it only sets the width of the Gaussian kernel.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "src" / "alemap" / "resources" / "demo" / "motor_learning.tsv"
NEUROSYNTH = Path("data") / "neurosynth-v7"
METADATA = "data-neurosynth_version-7_metadata.tsv.gz"
COORDINATES = "data-neurosynth_version-7_coordinates.tsv.gz"

DEFAULT_SUBJECTS = 15
MIN_FOCI = 2
MAX_FOCI = 100
EXPERIMENT = "all tables"
SPACES = {"MNI": "MNI", "TAL": "Talairach"}
COLUMNS = [
    "study", "experiment", "subjects", "x", "y", "z", "space", "paradigm", "year", "title",
    "first_author", "subjects_source", "neurosynth_id",
]

# words that mark practice / learning of a sequence
_LEARN = r"(?:learn\w*|acqui\w*|consolidat\w*|chunk\w*|practi[cs]\w*|train\w*|novel|skill\w*)"
_SEQ_EFFECTOR = r"(?:motor|movement|finger|bimanual|key[- ]?press|tapping)"

SEQUENCE_PATTERNS: dict[str, str] = {
    "serial reaction time task": r"serial reaction[- ]time|\bSRTT?\b",
    "sequence learning": r"\bsequence[- ](?:specific[- ])?(?:motor[- ])?learning\b",
    "learning of spatial/motor sequences": r"\blearning of (?:spatial|motor|movement|finger) sequences\b",
    "effector sequence + learning cue": (
        rf"\b{_SEQ_EFFECTOR}\s+(?:and\s+\w+\s+)?(?:action\s+)?sequences?\b.*\b{_LEARN}"
        rf"|\b{_LEARN}\b.*\b{_SEQ_EFFECTOR}\s+(?:and\s+\w+\s+)?(?:action\s+)?sequences?\b"
    ),
    "novel/skilled sequential finger or hand movements": (
        rf"\b{_LEARN}\b.{{0,40}}\bsequential (?:finger|hand) movements?"
    ),
}

SENSORIMOTOR_PATTERNS: dict[str, str] = {
    "visuomotor adaptation/rotation/learning": (
        r"\bvisuo-?\s?motor (?:adaptation|rotation|distortion|perturbation|learning)s?\b"
        r"|\bvisual-motor adaptations?\b|\brotational visuo-?\s?motor\b"
    ),
    "adaptation to a perturbation": (
        r"\badapt\w*\b.{0,40}\b(?:visuo-?\s?motor|rotation|distortions?|perturbations?|force[- ]fields?|torque)"
    ),
    "sensorimotor adaptation/learning": (
        r"\b(?:sensori|somatosensory-?)\s?motor (?:adaptation|learning)\b"
    ),
    "motor adaptation": r"\bmotor adaptation\b",
    "prism adaptation": r"\bprism(?:atic)? adaptation\b",
    "force-field adaptation": r"\bforce[- ]fields?\b",
    "error-based learning": r"\berror[- ](?:based|augmentation)\b",
    "visuomotor tracking learning": r"\bvisuo-?\s?motor tracking\b.*\b(?:learn\w*|train\w*|practi[cs]\w*|acqui\w*)",
}

# not error-based sensorimotor learning, although the words match
SENSORIMOTOR_EXCLUDE: dict[str, str] = {
    "arbitrary/conditional/associative mapping": r"\barbitrary\b|\bconditional\b|\bassociative\b|\bassociations?\b",
    "action observation / mirror system": r"\bobservation\b|\bobserving\b|\bmirror\b",
}

EXCLUDE_PATTERNS: dict[str, str] = {
    "patients / disease / abuse": (
        r"\bpatients?\b|\bdisease\b|\bdisorders?\b|parkinson|huntington|autis\w*|schizophren\w*|psychos\w*"
        r"|\bstroke\b|dystonia|multiple sclerosis|depress\w*|obsessive|trichotillomania|\bneglect\b"
        r"|dyslexi\w*|degeneration|lesions?\b|\bdamage\b|injur\w*|writer's cramp|tourette|\bADHD\b"
        r"|attention-deficit|epilep\w*|mutation|carriers\b|alcohol|cannabis|marijuana|addict\w*"
    ),
    "non-human animals": r"\brats?\b|\bmonkeys?\b|macaques?|\bprimates?\b|\bmice\b|\bmouse\b",
    "review / meta-analysis": r"\breview\b|meta-analy\w*",
    "structural / resting state": (
        r"gr[ae]y matter|white matter|\bstructural\b|resting[- ]state|cortical thickness|voxel-based"
        r"|morphometr\w*|diffusion"
    ),
    "eye movements / speech / music / perceptual sequences": (
        r"saccad\w*|oculomotor|eye movements?|\bspeech\b|auditory|\bpitch\b|\btonal\b|melod\w*"
        r"|vibrotactile|music\w*|improvis\w*|piano\w*"
    ),
}


@dataclass
class Selection:
    """The derived foci table and what was decided on the way (for printing and the NOTICE)."""

    table: pd.DataFrame
    selected: pd.DataFrame  # one row per kept study: id, paradigm, space, n_foci, rule, title
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (id, reason, title)


def clean_text(value: object) -> str:
    """One line of text: whitespace runs (tabs, newlines) as one space, double quotes as single."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return re.sub(r"\s+", " ", text.replace('"', "'")).strip()


def first_match(title: str, patterns: dict[str, str]) -> str | None:
    """Name of the first pattern that matches ``title``, or None."""
    for name, pattern in patterns.items():
        if re.search(pattern, title, flags=re.IGNORECASE):
            return name
    return None


def classify_title(title: str) -> tuple[str | None, str]:
    """(paradigm, rule) for a title; paradigm None with the reason when it is not selected."""
    title = clean_text(title)
    seq = first_match(title, SEQUENCE_PATTERNS)
    sm = first_match(title, SENSORIMOTOR_PATTERNS)
    if sm is not None:
        sm_excl = first_match(title, SENSORIMOTOR_EXCLUDE)
        if sm_excl is not None:
            if seq is None:
                return None, f"sensorimotor match '{sm}' excluded: {sm_excl}"
            sm = None
    if seq is None and sm is None:
        return None, "no paradigm pattern"
    excluded = first_match(title, EXCLUDE_PATTERNS)
    if excluded is not None:
        return None, f"excluded: {excluded}"
    if seq is not None and sm is not None:
        return None, f"matches both paradigms ('{seq}' / '{sm}')"
    return ("sequence", seq) if seq is not None else ("sensorimotor", sm)


def _format_number(value: float) -> str:
    return format(float(value), ".6g")


def load_neurosynth(shared: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metadata and coordinate tables from ``shared/data/neurosynth-v7``."""
    folder = Path(shared) / NEUROSYNTH
    meta = pd.read_csv(folder / METADATA, sep="\t", dtype={"id": "int64", "year": "Int64"}, keep_default_na=False,
                       na_values={"year": [""]})
    coords = pd.read_csv(folder / COORDINATES, sep="\t", usecols=["id", "table_id", "peak_id", "x", "y", "z"],
                         dtype={"id": "int64", "table_id": "int64", "peak_id": "int64",
                                "x": "float64", "y": "float64", "z": "float64"})
    return meta, coords


def derive(shared: str | Path = DEFAULT_SHARED) -> Selection:
    """Select the studies and build the foci table (deterministic)."""
    meta, coords = load_neurosynth(shared)
    meta = meta.sort_values("id", kind="stable")
    rows, rejected = [], []
    for rec in meta.itertuples(index=False):
        title = clean_text(rec.title)
        paradigm, rule = classify_title(title)
        if paradigm is None:
            if rule != "no paradigm pattern":
                rejected.append((int(rec.id), rule, title))
            continue
        if rec.space not in SPACES:
            rejected.append((int(rec.id), f"space {rec.space} (not MNI/TAL) [{paradigm}]", title))
            continue
        rows.append({"id": int(rec.id), "paradigm": paradigm, "rule": rule, "space": SPACES[rec.space],
                     "year": "" if pd.isna(rec.year) else str(int(rec.year)), "title": title,
                     "first_author": clean_text(str(rec.authors).split(",")[0])})
    candidates = pd.DataFrame(rows)

    foci = coords[coords["id"].isin(candidates["id"])]
    foci = foci[foci[["x", "y", "z"]].notna().all(axis=1)]
    foci = foci.sort_values(["id", "table_id", "peak_id"], kind="stable")
    foci = foci.drop_duplicates(["id", "x", "y", "z"], keep="first")
    n_foci = foci.groupby("id").size()
    candidates["n_foci"] = candidates["id"].map(n_foci).fillna(0).astype(int)

    keep = (candidates["n_foci"] >= MIN_FOCI) & (candidates["n_foci"] <= MAX_FOCI)
    for rec in candidates[~keep].itertuples(index=False):
        why = f"fewer than {MIN_FOCI} foci" if rec.n_foci < MIN_FOCI else f"more than {MAX_FOCI} foci"
        rejected.append((rec.id, f"{why} ({rec.n_foci}) [{rec.paradigm}]", rec.title))
    selected = candidates[keep].sort_values(["paradigm", "id"], kind="stable").reset_index(drop=True)

    table = foci.merge(selected, on="id", how="inner", validate="many_to_one")
    table = table.sort_values(["paradigm", "id", "table_id", "peak_id"], kind="stable")
    out = pd.DataFrame({
        "study": "ns-" + table["id"].astype(str),
        "experiment": EXPERIMENT,
        "subjects": str(DEFAULT_SUBJECTS),
        "x": table["x"].map(_format_number),
        "y": table["y"].map(_format_number),
        "z": table["z"].map(_format_number),
        "space": table["space"],
        "paradigm": table["paradigm"],
        "year": table["year"],
        "title": table["title"],
        "first_author": table["first_author"],
        "subjects_source": "default",
        "neurosynth_id": table["id"].astype(str),
    })[COLUMNS].reset_index(drop=True)
    rejected.sort(key=lambda r: (r[1], r[0]))
    return Selection(table=out, selected=selected, rejected=rejected)


def to_tsv(table: pd.DataFrame) -> str:
    """The table as TSV text (LF line ends, no quoting needed after clean_text)."""
    return table.to_csv(sep="\t", index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


def counts(sel: Selection) -> pd.DataFrame:
    """Studies and foci per paradigm and space."""
    t = sel.table
    frame = t.groupby(["paradigm", "space"]).agg(studies=("study", "nunique"), foci=("study", "size"))
    return frame.reset_index()


def _pattern_lines(patterns: dict[str, str]) -> list[str]:
    return [f"   - {name}: `{pattern}`" for name, pattern in patterns.items()]


def _reason_category(reason: str) -> str:
    """Short category of a rejection reason, for the NOTICE's summary."""
    if reason.startswith("excluded: "):
        return reason[len("excluded: "):]
    if reason.startswith("sensorimotor match"):
        return "not adaptation (" + reason.split("excluded: ", 1)[1] + ")"
    if reason.startswith("matches both"):
        return "matches both paradigms"
    if reason.startswith("space "):
        return "space UNKNOWN"
    return re.sub(r" \(\d+\).*", "", reason)


def render_notice(sel: Selection) -> str:
    """Text of motor_learning_NOTICE.md (counts filled in from the derivation)."""
    t = sel.table
    c = counts(sel)
    lines = [
        "# motor_learning.tsv: motor-learning demo data derived from Neurosynth v7",
        "",
        "<!-- Generated by scripts/derive_motor_learning.py together with motor_learning.tsv; do not edit by hand. -->",
        "",
        "`motor_learning.tsv` is a foci table (one row per focus) for a Hardwick et al. (2013)-style",
        "global motor-learning ALE, split into two paradigms: `sequence` (serial reaction time task and",
        "other motor sequence learning) and `sensorimotor` (visuomotor / force-field / prism /",
        "sensorimotor adaptation learning). It is read by `alemap.io.read_table` / `load_experiments`;",
        "`paradigm`, `year`, `title`, `first_author`, `subjects_source` and `neurosynth_id` become",
        "per-experiment tags (select a paradigm with `s.tags[i][\"paradigm\"]` and `s.select(...)`).",
        "",
        "It is a *demonstration* data set, picked automatically from article titles in an",
        "automatically extracted database; it is not a curated meta-analysis. Tables in Neurosynth",
        "mix activations, deactivations and contrasts, and the sample sizes are placeholders.",
        "",
        "## How it was derived",
        "",
        "From the repository root, with the shared Neurosynth v7 tables in `../shared/data/neurosynth-v7/`:",
        "",
        "```",
        "python scripts/derive_motor_learning.py --shared ../shared --out src/alemap/resources/demo/motor_learning.tsv",
        "```",
        "",
        "Inputs: `data-neurosynth_version-7_metadata.tsv.gz` and `data-neurosynth_version-7_coordinates.tsv.gz`",
        "(neurosynth/neurosynth-data, commit 209c33cd). The script is deterministic; `tests/test_demo_data.py`",
        "re-derives the file and compares it byte for byte when the shared data are present.",
        "",
        "Selection (case-insensitive regular expressions searched in the whitespace-normalised title):",
        "",
        "1. Space MNI or TAL; studies with space UNKNOWN are dropped.",
        "2. `sequence` if the title matches one of:",
        *_pattern_lines(SEQUENCE_PATTERNS),
        f"   where the learning cue is `{_LEARN}` and the effector is `{_SEQ_EFFECTOR}`.",
        "3. `sensorimotor` if the title matches one of:",
        *_pattern_lines(SENSORIMOTOR_PATTERNS),
        "   unless it also matches (not error-based adaptation):",
        *_pattern_lines(SENSORIMOTOR_EXCLUDE),
        "4. Dropped, to keep a healthy-adult, task-activation, limb-movement design, if the title matches:",
        *_pattern_lines(EXCLUDE_PATTERNS),
        "5. Titles matching both paradigms are dropped (one pooled experiment cannot be assigned to one).",
        "   Generic titles (\"motor learning\", \"motor skill learning\") that do not name the task are not",
        "   selected.",
        f"6. One experiment per study (`study` = `ns-<id>`, `experiment` = `{EXPERIMENT}`): all tables of",
        "   the study pooled, exact duplicate coordinates within a study removed, so that several tables",
        "   of one study do not count as independent experiments (Turkeltaub et al. 2012, Hum Brain Mapp",
        "   33:1-13). Coordinates keep the study's space (MNI or Talairach); alemap converts Talairach.",
        f"7. Studies with fewer than {MIN_FOCI} or more than {MAX_FOCI} foci (after de-duplication) are dropped",
        "   (too few for a result table; more are likely whole-table dumps of every contrast).",
        f"8. Neurosynth has no sample sizes: `subjects` = {DEFAULT_SUBJECTS} for every experiment, with",
        "   `subjects_source` = `default`. This is a placeholder (a typical fMRI group size of the period);",
        "   in ALE it only sets the width of the Gaussian kernel.",
        "",
        "Text cells are cleaned (tabs/newlines/runs of spaces as one space, double quotes as single);",
        "`first_author` is the first name in Neurosynth's author list. Rows are sorted by paradigm,",
        "Neurosynth id, table id and peak id.",
        "",
        "## Counts",
        "",
        "| paradigm | space | studies | foci |",
        "|---|---|---|---|",
        *[f"| {r.paradigm} | {r.space} | {r.studies} | {r.foci} |" for r in c.itertuples(index=False)],
    ]
    for paradigm in ("sequence", "sensorimotor"):
        sub = t[t["paradigm"] == paradigm]
        lines.append(f"| {paradigm} | all | {sub['study'].nunique()} | {len(sub)} |")
    lines.append(f"| all | all | {t['study'].nunique()} | {len(t)} |")
    reasons: dict[str, int] = {}
    for _, reason, _ in sel.rejected:
        key = _reason_category(reason)
        reasons[key] = reasons.get(key, 0) + 1
    lines += [
        "",
        "Studies matched by a paradigm pattern but dropped: "
        + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) + ".",
        "The script prints every selected and every dropped title with the rule that decided it.",
        "",
        "## Studies",
        "",
        "| paradigm | Neurosynth id | first author | year | space | foci | title |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sel.selected.sort_values(["paradigm", "id"], ascending=[False, True], kind="stable").itertuples(index=False):
        title = r.title.replace("|", "/")
        lines.append(f"| {r.paradigm} | {r.id} | {r.first_author} | {r.year} | {r.space} | {r.n_foci} | {title} |")
    lines += [
        "",
        "## Licence",
        "",
        "This file is a derived database of the Neurosynth database and is made available under the",
        "Open Database License 1.0 (ODbL 1.0): http://opendatacommons.org/licenses/odbl/1.0/. The full",
        "text is in `LICENSE-ODbL.txt` beside it. Any rights in individual contents of the database are",
        "licensed under the terms of the original sources. A database you derive from this file and",
        "share must carry the same licence. (The ODbL applies to this data file only, not to alemap's",
        "code, which is MIT-licensed.)",
        "",
        "## Cite",
        "",
        "- Yarkoni T, Poldrack RA, Nichols TE, Van Essen DC, Wager TD (2011). Large-scale automated",
        "  synthesis of human functional neuroimaging data. Nature Methods 8:665-670.",
        "- The design (sequence vs sensorimotor learning, global motor-learning analysis) follows Hardwick",
        "  RM, Rottschy C, Miall RC, Eickhoff SB (2013). A quantitative meta-analysis and review of motor",
        "  learning in the human brain. NeuroImage 67:283-297. Their own curated data are NOT used here.",
        "- The original articles of the studies you report (ids in `neurosynth_id`, PubMed ids).",
        "",
    ]
    return "\n".join(lines)


def report(sel: Selection, stream=sys.stdout) -> None:
    """Print the selected titles, the rejected ones and the counts."""
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    for paradigm in ("sequence", "sensorimotor"):
        sub = sel.selected[sel.selected["paradigm"] == paradigm]
        p(f"== {paradigm}: {len(sub)} studies")
        for r in sub.itertuples(index=False):
            p(f"  {r.id:>9} {r.space:<9} {r.n_foci:>3} foci  [{r.rule}]  {r.title}")
    p(f"== rejected ({len(sel.rejected)})")
    for rid, reason, title in sel.rejected:
        p(f"  {rid:>9}  {reason}  | {title}")
    p("== counts")
    p(counts(sel).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(DEFAULT_SHARED), help="folder holding data/neurosynth-v7")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output TSV")
    parser.add_argument("--notice", default=None,
                        help="NOTICE file to write (default: motor_learning_NOTICE.md beside --out; '' for none)")
    parser.add_argument("--quiet", action="store_true", help="print only the counts")
    args = parser.parse_args(argv)
    if not (Path(args.shared) / NEUROSYNTH / METADATA).exists():
        parser.error(f"{Path(args.shared) / NEUROSYNTH / METADATA} not found; pass --shared")
    sel = derive(args.shared)
    if args.quiet:
        print(counts(sel).to_string(index=False))
    else:
        report(sel)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_tsv(sel.table), encoding="utf-8", newline="")
    notice = out.with_name(out.stem + "_NOTICE.md") if args.notice is None else (Path(args.notice) if args.notice else None)
    if notice is not None:
        notice.write_text(render_notice(sel), encoding="utf-8", newline="")
    print(f"wrote {out}" + (f" and {notice}" if notice else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
