"""A methods paragraph built from the parameters actually used, with references.

The text is generated from ``provenance.json`` files, never typed by hand, so
it always states what was done: counts, kernel, null, thresholds, iterations,
seed, software versions.
"""

from __future__ import annotations

__all__ = ["REFERENCES", "ale_methods", "contrast_methods", "conjunction_methods", "csale_methods", "references_for"]

REFERENCES = {
    "eickhoff2009": "Eickhoff SB, Laird AR, Grefkes C, Wang LE, Zilles K, Fox PT (2009). Coordinate-based "
                    "activation likelihood estimation meta-analysis of neuroimaging data: a random-effects approach "
                    "based on empirical estimates of spatial uncertainty. Hum Brain Mapp 30:2907-2926.",
    "turkeltaub2012": "Turkeltaub PE, Eickhoff SB, Laird AR, Fox M, Wiener M, Fox P (2012). Minimizing within-"
                      "experiment and within-group effects in activation likelihood estimation meta-analyses. "
                      "Hum Brain Mapp 33:1-13.",
    "eickhoff2012": "Eickhoff SB, Bzdok D, Laird AR, Kurth F, Fox PT (2012). Activation likelihood estimation "
                    "meta-analysis revisited. NeuroImage 59:2349-2361.",
    "eickhoff2016": "Eickhoff SB, Nichols TE, Laird AR, et al. (2016). Behavior, sensitivity, and power of "
                    "activation likelihood estimation characterized by massive empirical simulation. "
                    "NeuroImage 137:70-85.",
    "lancaster2007": "Lancaster JL, Tordesillas-Gutierrez D, Martinez M, et al. (2007). Bias between MNI and "
                     "Talairach coordinates analyzed using the ICBM-152 brain template. Hum Brain Mapp 28:1194-1205.",
    "eickhoff2011": "Eickhoff SB, Bzdok D, Laird AR, et al. (2011). Co-activation patterns distinguish cortical "
                    "modules, their connectivity and functional differentiation. NeuroImage 57:938-949.",
    "nichols2005": "Nichols T, Brett M, Andersson J, Wager T, Poline JB (2005). Valid conjunction inference with "
                   "the minimum statistic. NeuroImage 25:653-660.",
    "magielse2025": "Magielse N, et al. (2025). Cerebellum-specific activation likelihood estimation (C-SALE). "
                    "Neurosci Biobehav Rev 179:106418.",
    "langner2014": "Langner R, Rottschy C, Laird AR, Fox PT, Eickhoff SB (2014). Meta-analytic connectivity and "
                   "behavioral parcellation of the human cerebellum. NeuroImage 99:6-14.",
    "yarkoni2011": "Yarkoni T, Poldrack RA, Nichols TE, Van Essen DC, Wager TD (2011). Large-scale automated "
                   "synthesis of human functional neuroimaging data. Nat Methods 8:665-670.",
}


def _n(x) -> str:
    return f"{int(x):,}"


def ale_methods(prov: dict) -> tuple[str, list[str]]:
    """(paragraph, reference keys) for an ALE analysis."""
    p = prov["parameters"]
    c = prov["counts"]
    v = prov.get("versions", {})
    excluded = len(prov.get("excluded_foci", []))
    text = (
        f"Activation likelihood estimation (ALE) was performed with alemap {v.get('alemap', '')} on "
        f"{_n(c['experiments_used'])} experiments ({_n(c['foci_used'])} foci, {_n(c['subjects_used'])} subjects). "
        "Foci reported in Talairach space were converted to MNI space with the Lancaster transform "
        f"(icbm2tal, '{p['tal2mni']}' variant). Each focus was modelled as a 3-D Gaussian whose width reflects "
        "between-subject and between-template uncertainty and depends on the experiment's sample size; an "
        "experiment's modelled-activation map was the voxel-wise maximum over its foci, so that foci of one "
        "experiment do not add up. ALE values were computed as the union of these maps within the "
        f"{prov['mask']['name']} mask ({_n(prov['mask']['n_voxels'])} voxels) and tested against the analytic "
        "null distribution of spatially independent convergence. "
        f"Results were thresholded at a cluster-level family-wise error rate of {p['alpha']} with a "
        f"cluster-forming threshold of p < {p['cluster_forming_p']} (ALE > "
        f"{prov['thresholds'].get('cluster_forming_ale', float('nan')):.5f}); the null distribution of the "
        f"largest cluster {p['cluster_stat']} ({p['connectivity']}-connectivity) was obtained from "
        f"{_n(p['iterations'])} Monte Carlo iterations with randomly relocated foci (seed {p['seed']})."
    )
    if excluded:
        text += f" {excluded} foci outside the template were excluded (listed in provenance.json)."
    return text, ["eickhoff2009", "turkeltaub2012", "eickhoff2012", "eickhoff2016", "lancaster2007"]


def contrast_methods(prov: dict) -> tuple[str, list[str]]:
    """(paragraph, reference keys) for a contrast."""
    p = prov["parameters"]
    method = {
        "gingerale": "tested only within each group's significant main effect",
        "subtraction": "tested two-sided at every voxel where either group showed convergence",
        "balanced": f"as the mean difference over {p.get('subsamples')} matched-size subsamples of "
                    f"{p.get('target_n')} experiments per group",
    }[p["method"]]
    text = (f"Differences between {prov['A']} ({p['n_a']} experiments) and {prov['B']} ({p['n_b']} experiments) "
            f"were assessed by label-exchange permutation of the pooled experiments ({_n(p['permutations'])} "
            f"permutations, seed {p['seed']}), {method}; voxels with p < {p['p']} were retained"
            + (f" in clusters of at least {p['min_volume_mm3']:g} mm3." if p["min_volume_mm3"] else "."))
    return text, ["eickhoff2011"]


def conjunction_methods(prov: dict) -> tuple[str, list[str]]:
    """(paragraph, reference keys) for a conjunction."""
    return (f"Convergence common to {', '.join(prov['inputs'])} was identified as the voxel-wise minimum of "
            f"their thresholded maps ({prov['map']}), the minimum-statistic conjunction."), ["nichols2005"]


def csale_methods(prov: dict) -> tuple[str, list[str]]:
    """(paragraph, reference keys) for a C-SALE analysis."""
    p = prov["parameters"]
    region = "a cerebellar mask (AAL2 cerebellar regions, dilated by " f"{p['dilate_mm']:g} mm)" \
        if p["region"] == "cerebellum" else "the whole-brain mask"
    return (f"Cerebellum-specific ALE was computed in {region} on {prov['experiments_used']} experiments "
            f"({prov['foci_used']} foci inside the mask). The null distribution relocated each focus with a "
            "probability proportional to a base-rate map (the summed kernels of the Neurosynth v7 database), "
            f"{_n(p['iterations'])} times (seed {p['seed']}); voxels with p < {p['p']} in clusters of at least "
            f"{p['k']} voxels were considered significant."), ["magielse2025", "langner2014", "yarkoni2011"]


def references_for(keys) -> list[str]:
    """Formatted references, each once, in first-cited order."""
    seen, out = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(REFERENCES[k])
    return out
