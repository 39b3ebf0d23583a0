"""The systematic-review trail: PRISMA 2020 flow diagram and consistency checks.

Page MJ, McKenzie JE, Bossuyt PM, et al. (2021). The PRISMA 2020 statement: an
updated guideline for reporting systematic reviews. BMJ 372:n71.

The project file's ``review`` section holds the counts::

    review:
      identified: {PubMed: 812, Web of Science: 640}   # records per source
      duplicates_removed: 310
      excluded_screening: 1050          # records excluded on title/abstract
      excluded_full_text: {no coordinates: 40, patients only: 30}
      included_studies: 44
      included_experiments: 44
      notes: {"ns-12345": "SRTT, block design"}   # per study/experiment inclusion notes

Counts that do not add up, or that disagree with the data actually loaded, are
flagged rather than silently drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReviewFlow", "review_flow", "prisma_figure"]


@dataclass(frozen=True)
class ReviewFlow:
    """Counts of each stage of the review and the problems found in them."""

    identified: dict
    duplicates_removed: int
    screened: int
    excluded_screening: int
    full_text: int
    excluded_full_text: dict
    included_studies: int
    included_experiments: int
    flags: list


def _int(review: dict, key: str, default=None):
    v = review.get(key, default)
    return None if v is None else int(v)


def review_flow(review: dict, loaded_studies: int, loaded_experiments: int) -> ReviewFlow:
    """Fill in derivable counts and flag inconsistencies with each other and with the data."""
    flags = []
    identified = {str(k): int(v) for k, v in (review.get("identified") or {}).items()}
    total = sum(identified.values())
    dup = _int(review, "duplicates_removed", 0)
    screened = _int(review, "screened", total - dup)
    if screened != total - dup:
        flags.append(f"screened ({screened}) differs from identified ({total}) minus duplicates ({dup}) = {total - dup}")
    excl_s = _int(review, "excluded_screening", 0)
    full = _int(review, "full_text_assessed", screened - excl_s)
    if full != screened - excl_s:
        flags.append(f"full texts assessed ({full}) differ from screened ({screened}) minus excluded ({excl_s})")
    excl_f = {str(k): int(v) for k, v in (review.get("excluded_full_text") or {}).items()}
    inc_s = _int(review, "included_studies", full - sum(excl_f.values()))
    if inc_s != full - sum(excl_f.values()):
        flags.append(f"included studies ({inc_s}) differ from full texts ({full}) minus exclusions "
                     f"({sum(excl_f.values())})")
    inc_e = _int(review, "included_experiments", loaded_experiments)
    if inc_s != loaded_studies:
        flags.append(f"the review reports {inc_s} included studies but the data hold {loaded_studies}")
    if inc_e != loaded_experiments:
        flags.append(f"the review reports {inc_e} included experiments but the data hold {loaded_experiments}")
    return ReviewFlow(identified, dup, screened, excl_s, full, excl_f, inc_s, inc_e, flags)


def prisma_figure(flow: ReviewFlow):
    """The PRISMA 2020 flow diagram (identification, screening, included) as a matplotlib figure."""
    from alemap.reporting.figures import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 8))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_axis_off()

    def box(x, y, w, h, text, fc="#ffffff"):
        ax.add_patch(plt.Rectangle((x, y), w, h, fc=fc, ec="#333333", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5, wrap=True)

    def arrow(x0, y0, x1, y1):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "#333333"})

    sources = "\n".join(f"{k} (n = {v})" for k, v in flow.identified.items()) or "(not given)"
    box(5, 78, 45, 18, f"Records identified from:\n{sources}")
    box(58, 80, 37, 14, f"Duplicate records removed\n(n = {flow.duplicates_removed})")
    box(5, 58, 45, 12, f"Records screened\n(n = {flow.screened})")
    box(58, 58, 37, 12, f"Records excluded\n(n = {flow.excluded_screening})")
    box(5, 38, 45, 12, f"Full-text reports assessed\n(n = {flow.full_text})")
    reasons = "\n".join(f"{k} (n = {v})" for k, v in flow.excluded_full_text.items()) or "(none given)"
    box(58, 30, 37, 22, f"Reports excluded:\n{reasons}")
    box(5, 8, 45, 16, f"Studies included in the meta-analysis\n(n = {flow.included_studies})\n"
                      f"Experiments (n = {flow.included_experiments})", fc="#eef5ff")
    arrow(27.5, 78, 27.5, 70)
    arrow(50, 87, 58, 87)
    arrow(27.5, 58, 27.5, 50)
    arrow(50, 64, 58, 64)
    arrow(27.5, 38, 27.5, 24)
    arrow(50, 44, 58, 41)
    for y, label in ((87, "Identification"), (54, "Screening"), (16, "Included")):
        ax.text(1, y, label, rotation=90, va="center", ha="center", fontsize=9, color="#1f4e79")
    if flow.flags:
        ax.text(50, 1, "Check: " + "; ".join(flow.flags), ha="center", va="bottom", fontsize=7, color="#b00020",
                wrap=True)
    return fig
