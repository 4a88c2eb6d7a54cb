"""Held-out stress run CLI: docs/stress.md, docs/stress-validation.md, their verdict and the README's headline figure.

The tuning and the validation set of bench.cells (a rule is kept only where the validation set, which no
rule was tuned on, agrees) on the held-out noise seed, beside the previous defaults (cells.PREVIOUS).
About 10–20 minutes on 2 shared cores; the whole matrix (`scripts/stress --full`) takes over an hour.

    .venv/bin/python -m bench.stress_heldout [--from-results bench_out/stress/heldout/results.json]

It writes RESULTS (unless re-rendering), PAGES, SUMMARY (which docs/benchmarks.md quotes) and the figures.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import figures, matrix, stress_report
from .cells import HELDOUT, HELDOUT_SAMPLERS, PREVIOUS, SETS, TUNING_CELLS, VALIDATION_CELLS, of_set
from .common import DOCS, OUT, Stamp, md_table, read_json, shown, write_json
from .verdicts import SET_WORDS, against, summarize

WRITTEN_BY = "Written by `python -m bench.stress_heldout`"
PAGES = {"tuning": (DOCS / "stress.md", f"{WRITTEN_BY}, with the README's headline figure "
                    "(evodiff_headline.png) and the cell figures; `scripts/bench --full` does not run it. "
                    "Do not edit by hand.\n\n"),
         "validation": (DOCS / "stress-validation.md", f"{WRITTEN_BY} (the validation set; the tuning set "
                        "is in [stress.md](stress.md)). Do not edit by hand.\n\n")}
CELL_FIGURES = {"guided": DOCS / "stress_guided.png", "unguided": DOCS / "stress_unguided.png"}
SUMMARY = DOCS / "stress-summary.json"   # the tuning set's verdict, which docs/benchmarks.md quotes
RESULTS = OUT / "stress" / "heldout" / "results.json"


def headline_section(agg: dict) -> str:
    """The figure, its caption, and the numbers drawn (``agg``, from figures.headline_figure)."""
    lines = ["## The headline figure (guided cells)\n", f"![{figures.HEADLINE_ALT}]({figures.HEADLINE.name})\n",
             figures.headline_caption() + "\n", figures.headline_reading(agg) + "\n"]
    rows = [[name, *(f"{v:.3g}" for v in values)] for name, values in agg["lines"].items()]
    rows.append(["best single built-in at that NFE", *(f"{v:.3g} ({name})" for name, v in agg["best_single"])])
    table = md_table(["geometric mean of FD", *(f"NFE {n}" for n in agg["nfes"])], rows, "l" + "r" * len(agg["nfes"]))
    return "\n".join(lines + [table]) + "\n"


def previous_default_section(records: list[dict], previous: str) -> str:
    """Every (cell, NFE) where the default and an earlier default differ beyond noise."""
    found = against(records, previous)
    lines = [f"## Against an earlier default ({previous})\n",
             f"FD of `evodiff` against `{previous}` at {sum(map(len, found.values()))} (cell, NFE) points, noise "
             f"rule as above: better at {len(found['won'])}, tied at {len(found['tie'])}, worse at "
             f"{len(found['lost'])}.\n"]
    for verdict, word in (("lost", "Worse"), ("won", "Better")):
        if found[verdict]:
            lines.append(f"- {word} at: {'; '.join(found[verdict])}.")
    return "\n".join(lines) + "\n"


def figures_section(records: list[dict]) -> str:
    """Draws the headline and the two cell figures; their markdown."""
    agg = figures.headline_figure(records, figures.HEADLINE)
    for group, path in CELL_FIGURES.items():
        rs = [r for r in records if (r["cfg"] is not None) == (group == "guided")]
        figures.cells_figure(rs, path, "fd", "FD to the exact solution", figures.EVODIFF_PREFIX, columns=3,
                             title=f"{group.capitalize()} cells, held-out seed: FD to the exact solution "
                                   "(lower is better)")
    return headline_section(agg) + "\n" + "\n".join(
        f"![{group} cells, FD by NFE]({path.name})\n" for group, path in CELL_FIGURES.items()) + "\n"


def render(results: dict) -> None:
    """PAGES, SUMMARY and the figures from a results.json of this run."""
    for name, cells in SETS.items():
        records = of_set(results["records"], name)
        if not records:
            continue
        names = {c.name for c in cells}
        refs = [r for r in results["references"] if r["cell"] in names]
        before_cells = (figures_section(records) if name == "tuning" else "") + "\n".join(
            previous_default_section(records, previous) for previous in PREVIOUS)
        page, written_by = PAGES[name]
        page.write_text(stress_report.markdown(
            records, refs, written_by + results["header"],
            f"EVODiff stress matrix, {SET_WORDS[name]} (held-out seed)", before_cells))
        if name == "tuning":
            write_json(SUMMARY, summarize(records, refs))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stress_heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-results", type=Path, metavar="PATH", help="re-render docs from this results.json")
    args = parser.parse_args(argv)
    if args.from_results:
        render(read_json(args.from_results))
        print(f"[stress] re-rendered docs/stress.md and the figures from {args.from_results}")
        return
    import torch

    torch.set_num_threads(1)
    stamp = Stamp("python -m bench.stress_heldout", [])
    cells = TUNING_CELLS + VALIDATION_CELLS
    records = matrix.run(cells, HELDOUT_SAMPLERS, HELDOUT)
    settings = HELDOUT.describe(f"{len(TUNING_CELLS)} tuning and {len(VALIDATION_CELLS)} validation cells, ",
                                seed="held-out seed")
    write_json(RESULTS, stamp.results(settings, records=records, references=matrix.summaries(cells, HELDOUT)))
    results = read_json(RESULTS)   # what --from-results reads: non-finite values are null
    render(results)
    for name in SETS:
        print(f"[{name}]\n" + stress_report.summary_text(summarize(of_set(records, name))))
    print(f"{figures.headline_reading(figures.guided_aggregate(of_set(records, 'tuning')))}\n[stress] wrote "
          f"docs/stress.md, {shown(figures.HEADLINE)} and the cell figures in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
