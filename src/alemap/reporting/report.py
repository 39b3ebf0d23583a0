"""The HTML report of an output folder (one ``alemap ale`` run or a whole project).

``build_report(outdir)`` reads what the run wrote (provenance, maps, tables),
draws the figures into ``outdir/figures/`` and writes ``outdir/report.html``:
inputs and counts, the review flow (PRISMA 2020) and included experiments, a
methods paragraph with references built from the actual parameters, and per
analysis the figures, the labelled cluster table with robustness columns, an
offline slice viewer, the network table and heatmap, and links to every file.

Sections that need optional parts (atlases for labels) say so instead of
failing; a folder without significant clusters says that plainly.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from alemap._version import __version__
from alemap.exceptions import AlemapError, InputError
from alemap.io.atomic import write_text
from alemap.reporting import methods as M
from alemap.reporting.figures import cerebellum_figure, glass_brain_figure, save_figure, slices_figure
from alemap.reporting.viewer import VIEWER_JS, viewer_payload
from alemap.space.grid import load_mni152_2mm

__all__ = ["build_report", "MAIN_MAP"]

#: the thresholded map that shows each kind of analysis
MAIN_MAP = {"ale": "z_cfwe", "contrast": "z_contrast", "conjunction": "z_conjunction", "csale": "z_csale"}
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1100px;margin:auto;padding:1.5em}
h1{color:#1f4e79}h2{border-bottom:2px solid #1f4e79;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#e8eef5}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.note{background:#fff6dd;border-left:4px solid #e0a800;
padding:.5em 1em}.flag{color:#b00020;font-weight:bold}.muted{color:#666}canvas{width:30%;image-rendering:pixelated;
border:1px solid #333;margin:.2em;cursor:crosshair}.files li{font-family:monospace;font-size:.85em}
"""
_WATCH_JS = """
window.__alemapErrors = [];
window.addEventListener('error', function (e) { window.__alemapErrors.push(String(e.message)); });
window.addEventListener('load', function () {
  const imgs = Array.from(document.images);
  const bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.src; });
  document.body.dataset.images = imgs.length + ' images, ' + bad.length + ' broken';
  document.body.dataset.errors = String(window.__alemapErrors.length);
  document.body.dataset.ready = '1';
});
"""


@dataclass
class _Analysis:
    name: str
    kind: str
    folder: Path
    prov: dict
    clusters: pd.DataFrame
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    labelled: pd.DataFrame | None = None
    robustness: pd.DataFrame | None = None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable alemap provenance file ({exc}); is this an alemap output folder?") from None


def _kind(prov: dict, folder: Path) -> str:
    if prov.get("type") in MAIN_MAP:
        return prov["type"]
    return "ale" if (folder / "z_cfwe.nii.gz").exists() else "unknown"


def _collect(outdir: Path) -> tuple[list[_Analysis], dict | None]:
    project = outdir / "project.json"
    if project.exists():
        meta = _read_json(project)
        folders = [outdir / n for n in meta.get("analyses", {})]
    elif (outdir / "provenance.json").exists():
        meta, folders = None, [outdir]
    else:
        raise InputError(f"'{outdir}' holds neither provenance.json nor project.json: "
                         "give the output folder of 'alemap ale' or 'alemap run'.")
    out = []
    for folder in folders:
        if not (folder / "provenance.json").exists():
            raise InputError(f"'{folder}' has no provenance.json: the analysis did not finish; rerun the same "
                             "command to complete it, then 'alemap report'.")
        prov = _read_json(folder / "provenance.json")
        tsv = folder / "clusters.tsv"
        table = pd.read_csv(tsv, sep="\t") if tsv.exists() and tsv.stat().st_size else pd.DataFrame()
        a = _Analysis(folder.name if meta else "ALE", _kind(prov, folder), folder, prov, table)
        written_by = prov.get("versions", {}).get("alemap")
        if written_by and written_by != __version__:
            a.notes.append(f"This folder was written by alemap {written_by}; this report is by alemap "
                           f"{__version__}. Rerun the analysis with this version to be sure the two agree.")
        out.append(a)
    return out, meta


def _load_map(folder: Path, key: str, grid) -> np.ndarray | None:
    path = folder / f"{key}.nii.gz"
    if not path.exists():
        return None
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64).ravel()[grid.mask_flat]


def _figures(a: _Analysis, grid, figdir: Path, outdir: Path) -> np.ndarray | None:
    key = MAIN_MAP.get(a.kind)
    values = _load_map(a.folder, key, grid) if key else None
    if values is None:
        return None
    shown = np.abs(values) if a.kind == "contrast" else values
    if not np.any(shown > 0):
        a.notes.append("No voxel survives the threshold: there is nothing to show for this analysis.")
        return shown
    base = figdir / a.name
    made = save_figure(slices_figure(shown, grid, f"{a.name}: {key}"), f"{base}_slices")
    made += save_figure(glass_brain_figure(shown, grid, f"{a.name}: {key}"), f"{base}_glass")
    if a.kind == "csale" or _has_cerebellar_voxels(shown, grid):
        made += save_figure(cerebellum_figure(shown, grid, f"{a.name}: cerebellum"), f"{base}_cerebellum")
    a.figures = [p.relative_to(outdir) for p in made if p.suffix == ".png"]
    return shown


def _has_cerebellar_voxels(values, grid) -> bool:
    mm = grid.ijk_to_mm(grid.mask_ijk[values > 0])
    return bool(np.any((mm[:, 2] < -15) & (mm[:, 1] < -40)))


def _labels(a: _Analysis, shown, grid):
    try:
        from alemap.reporting.labels import label_clusters
        from alemap.reporting.cluster_table import map_clusters

        labels, _ = map_clusters(shown, grid)
        a.labelled = label_clusters(labels, grid, stat=shown)
    except AlemapError as exc:
        a.notes.append(f"Anatomical labels unavailable: {exc}")
    except ImportError as exc:  # pragma: no cover - labels module missing
        a.notes.append(f"Anatomical labels unavailable: {exc}")


def _table_html(df: pd.DataFrame | None, empty: str) -> str:
    if df is None or not len(df):
        return f"<p class='muted'>{html.escape(empty)}</p>"
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, escape=True)


def _section(a: _Analysis) -> str:
    parts = [f"<h3 id='a-{html.escape(a.name)}'>{html.escape(a.name)} <span class='muted'>({a.kind})</span></h3>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in a.notes + list(a.prov.get("notes", []))]
    parts += [f"<img src='{html.escape(str(p))}' alt='{html.escape(a.name)} figure'>" for p in a.figures]
    parts.append("<h4>Clusters</h4>" + _table_html(a.clusters, "No significant cluster."))
    if a.labelled is not None:
        parts.append("<h4>Anatomical labels</h4>" + _table_html(a.labelled, "No cluster to label."))
    if a.robustness is not None:
        parts.append("<h4>Robustness</h4>" + _table_html(a.robustness, "No cluster."))
    files = sorted(p for p in a.folder.iterdir() if p.is_file() and not p.name.startswith("."))
    rel = [p.relative_to(a.folder.parent if a.name != "ALE" else a.folder) for p in files]
    parts.append("<details><summary>Files</summary><ul class='files'>"
                 + "".join(f"<li><a href='{html.escape(str(r))}'>{html.escape(str(r))}</a></li>" for r in rel)
                 + "</ul></details>")
    return "\n".join(parts)


def _methods(analyses) -> tuple[str, list[str]]:
    paras, keys = [], []
    writers = {"ale": M.ale_methods, "contrast": M.contrast_methods, "conjunction": M.conjunction_methods,
               "csale": M.csale_methods}
    for a in analyses:
        if a.kind in writers:
            try:
                text, k = writers[a.kind](a.prov)
            except KeyError:
                continue
            paras.append(f"<p><b>{html.escape(a.name)}.</b> {html.escape(text)}</p>")
            keys += k
    return "\n".join(paras), M.references_for(keys)


def build_report(outdir: str | Path) -> Path:
    """Write ``outdir/report.html`` (and ``outdir/figures/``); returns its path."""
    outdir = Path(outdir)
    analyses, project = _collect(outdir)
    grid = load_mni152_2mm()
    figdir = outdir / "figures"
    figdir.mkdir(exist_ok=True)
    overlays = {}
    for a in analyses:
        shown = _figures(a, grid, figdir, outdir)
        if shown is not None and np.any(shown > 0):
            overlays[a.name] = shown
            _labels(a, shown, grid)
        rob = a.folder / "robustness.tsv"
        if rob.exists():
            a.robustness = pd.read_csv(rob, sep="\t")
            stab = a.folder / "stability.tsv"
            if stab.exists():
                a.robustness = a.robustness.merge(pd.read_csv(stab, sep="\t"), on="cluster", how="left")
    methods_html, refs = _methods(analyses)
    extra = _project_sections(outdir, project, analyses)
    body = [
        f"<h1>alemap report</h1><p class='muted'>alemap {__version__}; written "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; folder {html.escape(str(outdir.resolve()))}</p>",
        _overview(analyses, project),
        extra,
        "<h2>Methods</h2>" + methods_html,
        "<h2>Results</h2>" + "\n".join(_section(a) for a in analyses),
        "<h2>Slice viewer</h2><p class='muted'>Click a slice to move; choose the map below. Works offline.</p>"
        "<select id='viewer-overlay'></select> <span id='viewer-pos'></span><br>"
        "<canvas id='viewer-sag'></canvas><canvas id='viewer-cor'></canvas><canvas id='viewer-axi'></canvas>"
        f"<script type='application/json' id='viewer-data'>{viewer_payload(grid, overlays)}</script>",
        "<h2>References</h2><ol>" + "".join(f"<li>{html.escape(r)}</li>" for r in refs) + "</ol>",
    ]
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>alemap report</title>"
            f"<style>{_CSS}</style><script>{_WATCH_JS}</script></head><body><main>"
            + "\n".join(body) + f"</main><script>{VIEWER_JS}</script></body></html>")
    out = outdir / "report.html"
    write_text(out, page)
    return out


def _overview(analyses, project) -> str:
    rows = []
    for a in analyses:
        c = a.prov.get("counts", {})
        n_exp = c.get("experiments_used", a.prov.get("experiments_used", a.prov.get("parameters", {}).get("n_a", "")))
        rows.append({"analysis": a.name, "type": a.kind, "experiments": n_exp,
                     "foci": c.get("foci_used", a.prov.get("foci_used", "")),
                     "subjects": c.get("subjects_used", ""), "significant clusters": len(a.clusters),
                     "excluded foci": len(a.prov.get("excluded_foci", []))})
    head = "<h2>Overview</h2>"
    if project:
        head += f"<p>Project <b>{html.escape(str(project.get('project', '')))}</b></p>"
    excluded = [e for a in analyses for e in a.prov.get("excluded_foci", [])]
    ex_html = ("<h3>Excluded foci</h3>" + _table_html(pd.DataFrame(excluded), "")) if excluded else \
        "<p class='muted'>No focus was excluded.</p>"
    return head + _table_html(pd.DataFrame(rows), "") + ex_html


def _project_sections(outdir: Path, project, analyses) -> str:
    if not project:
        return ""
    parts = []
    try:
        from alemap.reporting.network import network_heatmap, project_network_table

        table = project_network_table(outdir)
        network_heatmap(table, outdir / "figures" / "network.png", outdir / "figures" / "network.svg")
        parts.append("<h2>Cortico-basal ganglia-cerebellar network</h2>"
                     "<img src='figures/network.png' alt='network heatmap'>"
                     + table.to_html(float_format=lambda v: f"{v:.2f}", border=0))
    except (AlemapError, ImportError, OSError, ValueError) as exc:
        parts.append(f"<h2>Network</h2><p class='note'>Network annotation unavailable: {html.escape(str(exc))}</p>")
    parts.append(_review_section(outdir, project, analyses))
    return "\n".join(parts)


def _review_section(outdir: Path, project, analyses) -> str:
    review_file = outdir / "review.json"
    if not review_file.exists():
        return ""
    review = _read_json(review_file)
    from alemap.reporting.prisma import prisma_figure, review_flow

    included = pd.DataFrame(review.get("included", []))
    table = "<h3>Included experiments</h3>" + _table_html(included, "No experiment listed.")
    if not review.get("review"):
        return ("<h2>Systematic review</h2><p class='muted'>The project file has no 'review' section, so no "
                "PRISMA diagram is drawn.</p>" + table)
    flow = review_flow(review["review"], review.get("loaded_studies", 0), review.get("loaded_experiments", 0))
    save_figure(prisma_figure(flow), outdir / "figures" / "prisma")
    flags = "".join(f"<p class='flag'>{html.escape(f)}</p>" for f in flow.flags)
    return ("<h2>Systematic review (PRISMA 2020)</h2><img src='figures/prisma.png' alt='PRISMA flow diagram'>"
            + flags + table)
