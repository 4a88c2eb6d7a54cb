"""The benchmark's figures: the README's headline panel and the per-cell small multiples.

Drawn for GitHub width: 8 inches at 150 dpi, shown about 800 px wide, so every font is at least 12 pt.
The default EVODiff sampler is the thick black line on top; dpmpp_2m blue, Euler grey, the rest muted.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

from .cells import HELDOUT_SAMPLERS, TUNING_CELLS
from .common import DOCS, EVODIFF_PREFIX, is_evodiff
from .verdicts import BASELINE, RIVAL, by_point, lowest, nfe_words, score

HEADLINE = DOCS / "evodiff_headline.png"      # the README's figure, drawn by `python -m bench.stress_heldout`
HEADLINE_ALT = "Guided sampling: FD to the exact solution by NFE (lower is better) for evodiff, dpmpp_2m, " \
               "the best built-in per problem and euler"
WIDTH_IN = 8.0
DPI = 150
FONT = 13             # every label; titles are larger, nothing is smaller than 12

EMPHASIS = dict(color="black", lw=3.2, marker="o", ms=6, zorder=6)
RIVAL_STYLE = dict(color="tab:blue", lw=2.2, marker="s", ms=5, zorder=4)
BEST_STYLE = dict(color="tab:orange", lw=2.2, ls="--", marker="^", ms=6, zorder=5)
BASELINE_STYLE = dict(color="0.55", lw=1.6, ls=":", zorder=3)
VARIANT_COLORS = ("crimson", "darkviolet", "darkgoldenrod", "teal")   # the other EVODiff variants, in order
OTHER_STYLE = dict(color="0.8", lw=1.0, zorder=1)


def pyplot():
    """Headless, with the fonts of every figure here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT,
                         "xtick.labelsize": 12, "ytick.labelsize": 12, "legend.fontsize": 12})
    return plt


def _nfe_axis(ax, nfes):
    ax.set(xscale="log", xticks=nfes, xticklabels=[str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="major")


def save(fig, path: Path):
    """PNG with a 256-colour palette (a third of the bytes, the same look) and no version string, so
    the same figure gives the same bytes on every run."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png", facecolor="white")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def guided_aggregate(records, sampler: str = EVODIFF_PREFIX, value: str = "fd") -> dict:
    """The headline's numbers over the guided cells. lines: {name: [geometric mean of FD per NFE]} for
    sampler, RIVAL, BASELINE and 'best built-in' (the lowest FD of every built-in at each cell and NFE);
    best_single: per NFE, (name, value) of the built-in with the lowest mean. Failed runs count as inf."""
    guided = [r for r in records if r.get("cfg") is not None]
    cells = list(dict.fromkeys(r["cell"] for r in guided))
    nfes = sorted({r["nfe_target"] for r in guided})
    points = by_point(guided)
    at = {(name, cell, nfe): score(r, value) for (cell, nfe), group in points.items() for name, r in group.items()}
    builtins = [s for s in dict.fromkeys(r["sampler"] for r in guided) if not is_evodiff(s)]

    def line(pick):   # the geometric mean over the cells, per NFE
        return [math.exp(sum(math.log(pick(cell, nfe)) for cell in cells) / len(cells)) for nfe in nfes]

    lines = {name: line(lambda c, n, name=name: at[(name, c, n)]) for name in (sampler, RIVAL, BASELINE)}
    lines["best built-in"] = line(lambda c, n: lowest([r for b, r in points[(c, n)].items() if b in builtins], value))
    every = {b: line(lambda c, n, b=b: at[(b, c, n)]) for b in builtins}
    single = [min(((b, every[b][i]) for b in builtins), key=lambda bv: bv[1]) for i in range(len(nfes))]
    return dict(cells=cells, nfes=nfes, builtins=builtins, lines=lines, best_single=single)


def headline_reading(agg: dict, sampler: str = EVODIFF_PREFIX) -> str:
    """The figure in one sentence."""
    nfes, mine = agg["nfes"], agg["lines"][sampler]

    def against(name):
        below = [n for n, a, b in zip(nfes, mine, agg["lines"][name]) if a < b]
        above = [n for n in nfes if n not in below]
        name = "the best built-in per problem" if name == "best built-in" else name
        if not above:
            return f"below {name} at every NFE"
        if not below:
            return f"above {name} at every NFE"
        return f"below {name} at {nfe_words(below, nfes)} and above it at {nfe_words(above, nfes)}"

    return f"{sampler} is {against(RIVAL)}; {against('best built-in')} (geometric means, not noise-checked)."


def headline_caption(cells=TUNING_CELLS, samplers=HELDOUT_SAMPLERS) -> str:
    n_cells, n_builtins = sum(c.cfg is not None for c in cells), sum(not is_evodiff(s) for s in samplers)
    return (f"FD between each sampler's samples and the exact ODE solution's from the same noise (lower is "
            f"better), as the geometric mean over the {n_cells} guided problems of the held-out stress run "
            f"(cfg 1–7; SD1.5, EDM and flow schedules), so that every problem counts the same whatever its "
            f"scale; \"best built-in\" takes, for every problem and NFE separately, the lowest FD of "
            f"ComfyUI's {n_builtins} deterministic built-in samplers run there.")


def headline_figure(records, path: Path, sampler: str = EVODIFF_PREFIX) -> dict:
    """The README's one panel; returns the aggregate drawn."""
    agg = guided_aggregate(records, sampler)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0))
    lines, nfes = agg["lines"], agg["nfes"]
    ax.plot(nfes, lines[BASELINE], label=f"{BASELINE} (first order)", **BASELINE_STYLE)
    ax.plot(nfes, lines[RIVAL], label=RIVAL, **RIVAL_STYLE)
    ax.plot(nfes, lines["best built-in"], label=f"best of {len(agg['builtins'])} built-ins, per problem",
            **BEST_STYLE)
    ax.plot(nfes, lines[sampler], label=f"{sampler} (this pack)", **EMPHASIS)
    _nfe_axis(ax, nfes)
    ax.set_xlabel("model calls (NFE)")
    ax.set_ylabel("FD to the exact solution\n(geometric mean; lower is better)")
    ax.set_title(f"Guided sampling: {len(agg['cells'])} problems, cfg 1–7", fontsize=FONT + 2)
    ax.legend(loc="lower left", frameon=True, framealpha=0.9)
    fig.tight_layout()
    save(fig, path)
    return agg


def _styles(samplers, emphasised: str) -> dict[str, tuple[dict, str | None]]:
    """{sampler: (line style, legend label or None for the muted crowd)}."""
    variants = itertools.cycle(VARIANT_COLORS)
    named = {RIVAL: (RIVAL_STYLE, RIVAL), BASELINE: (BASELINE_STYLE, BASELINE),
             emphasised: (EMPHASIS, f"{emphasised} (default)")}
    variant = lambda s: (dict(color=next(variants), lw=1.6, ls="-.", zorder=3), s)  # noqa: E731
    return {s: named.get(s) or (variant(s) if is_evodiff(s) else (OTHER_STYLE, None)) for s in samplers}


def cells_figure(records, path: Path, value: str, ylabel: str, emphasised: str, columns: int = 2,
                 title: str | None = None) -> None:
    """Small multiples: one panel per cell, ``value`` by NFE, log-log; failed runs left out."""
    plt = pyplot()
    cells = list(dict.fromkeys(r["cell"] for r in records))
    samplers = list(dict.fromkeys(r["sampler"] for r in records))
    # muted first, the emphasised sampler last, so it is drawn on top
    styles = _styles(samplers, emphasised)
    order = sorted(samplers, key=lambda s: styles[s][0]["zorder"])
    rows = math.ceil(len(cells) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH_IN * columns / 2, 3.2 * rows + 1.0), squeeze=False,
                             layout="constrained")
    nfes = sorted({r["nfe_target"] for r in records})
    for ax, cell in zip(axes.flat, cells):
        for s in order:
            pts = sorted((r["nfe"], r[value]) for r in records if r["cell"] == cell and r["sampler"] == s
                         and r.get(value) is not None and r[value] > 0 and math.isfinite(r[value]))
            style, label = styles[s]
            if pts:
                ax.plot(*zip(*pts), label=label, **dict(style, ms=4 if s == emphasised else 3))
        _nfe_axis(ax, nfes)
        ax.set_title(cell)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes[-1]:
        ax.set_xlabel("NFE")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles, labels = handles[::-1] + [plt.Line2D([], [], **OTHER_STYLE)], labels[::-1] + ["other built-ins"]
    # the title heads the legend: a suptitle and an outside legend collide in constrained layout
    fig.legend(handles, labels, loc="outside upper center", ncol=3, frameon=False, title=title,
               title_fontproperties={"size": FONT + 2})
    save(fig, path)
