"""The held-out stress run the README's verdict and headline figure come from, on two sets of cells:

* the tuning set (``CELLS``): a subset of the full matrix (every axis represented: guidance on the
  analytic and the learned model, EDM 80→0.002, flow shift 1/3/6, five SD1.5 schedulers), the
  cells the solver's rules were developed on;
* the validation set (``VALIDATION_CELLS``): problems no rule was tuned on (another mixture
  geometry, a second digits net trained from another seed), other cfg values (2, 3, 5), other
  schedulers (beta, kl_optimal) and flow shifts (2, 5). A rule is kept only where this set agrees.

Both on the held-out noise seed, at NFE 5–30, beside the previous default (``PREVIOUS``, run from
its commit by bench.revisions). About 10–20 minutes on 2 shared cores; the whole matrix
(`scripts/stress --full`) takes over an hour.

    .venv/bin/python -m bench.stress_heldout      # -> bench_out/stress/heldout/results.json, docs/stress.md,
                                                  #    docs/stress-validation.md,
                                                  #    docs/evodiff_headline.png, docs/stress_{guided,unguided}.png
    .venv/bin/python -m bench.stress_heldout --from-results bench_out/stress/heldout/results.json   # re-render only

`scripts/bench --full` does not run this; docs/benchmarks.md embeds the headline figure it writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import comfy_samplers as cs
from . import figures, quality, report, stress
from .stress import ROOT, Cell

CELLS = (Cell("mixture-cfg", "eps", "karras", 1.0), Cell("mixture-cfg", "eps", "karras", 4.0),
         Cell("mixture-cfg", "eps", "karras", 7.0), Cell("mixture-cfg", "eps", "normal", 4.0),
         Cell("mixture-cfg", "edm", "karras", 4.0), Cell("mixture-cfg", "flow3", "simple", 4.0),
         Cell("digits-cfg", "eps", "karras", 3.0), Cell("digits-cfg", "eps", "karras", 5.0),
         Cell("digits-cfg", "flow3", "simple", 3.0),
         Cell("mixture", "edm", "karras"), Cell("digits", "edm", "karras"),
         Cell("mixture", "eps", "normal"), Cell("mixture", "eps", "simple"), Cell("mixture", "eps", "sgm_uniform"),
         Cell("mixture", "eps", "exponential"), Cell("mixture", "flow1", "normal"), Cell("mixture", "flow6", "beta"),
         Cell("digits", "flow3", "simple"))
# nothing below is tuned on: problems, cfg values, schedulers and shifts that CELLS does not have
VALIDATION_CELLS = (Cell("mixture-b-cfg", "eps", "karras", 3.0), Cell("mixture-b-cfg", "eps", "exponential", 5.0),
                    Cell("mixture-b-cfg", "eps", "beta", 2.0), Cell("mixture-b-cfg", "edm", "exponential", 3.0),
                    Cell("mixture-b-cfg", "flow5", "beta", 3.0),
                    Cell("digits-b-cfg", "eps", "karras", 2.0), Cell("digits-b-cfg", "eps", "kl_optimal", 4.0),
                    Cell("digits-b-cfg", "flow2", "simple", 4.0), Cell("digits-b-cfg", "edm", "karras", 1.0),
                    Cell("mixture-b", "eps", "karras"), Cell("mixture-b", "eps", "normal"),
                    Cell("mixture-b", "eps", "kl_optimal"), Cell("mixture-b", "eps", "beta"),
                    Cell("mixture-b", "edm", "karras"), Cell("mixture-b", "flow2", "normal"),
                    Cell("mixture-b", "flow5", "simple"))
# the default before the trust-gated step (0.2.0's), run from its own commit
PREVIOUS = "evodiff@cd34a6a"
SAMPLERS = ("evodiff", PREVIOUS, "evodiff:improved@shift=0", "evodiff:reference", "euler", "dpmpp_2m", "deis",
            "ipndm", "uni_pc", "res_multistep", "gradient_estimation")
SETS = {"tuning": CELLS, "validation": VALIDATION_CELLS}
NFES = (5, 6, 8, 10, 15, 20, 30)
N_SAMPLES = 384
ODE_STEPS = 100

DOCS = ROOT / "docs"
HEADLINE = DOCS / "evodiff_headline.png"      # the README's figure
HEADLINE_ALT = "Guided sampling: FD to the exact solution by NFE (lower is better) for evodiff, dpmpp_2m, " \
               "the best built-in per problem and euler"
WRITTEN_BY = ("Written by `python -m bench.stress_heldout`, with the README's headline figure "
              "(evodiff_headline.png) and the cell figures; `scripts/bench --full` does not run it. Do not edit "
              "by hand.\n\n")
CELL_FIGURES = {"guided": DOCS / "stress_guided.png", "unguided": DOCS / "stress_unguided.png"}
VALIDATION_DOC = DOCS / "stress-validation.md"
VALIDATION_WRITTEN_BY = ("Written by `python -m bench.stress_heldout` (the validation set; the tuning set is in "
                         "[stress.md](stress.md)). Do not edit by hand.\n\n")
RESULTS = ROOT / "bench_out" / "stress" / "heldout" / "results.json"


def headline_caption() -> str:
    guided = sum(c.cfg is not None for c in CELLS)
    return figures.headline_caption(guided, sum(not cs.is_evodiff(s) for s in SAMPLERS))


def headline_section(agg: dict) -> str:
    """The figure, its caption, and the numbers drawn (``agg``, from figures.headline_figure), for
    docs/stress.md."""
    lines = ["## The headline figure (guided cells)\n", f"![{HEADLINE_ALT}]({HEADLINE.name})\n",
             headline_caption() + "\n", figures.headline_reading(agg) + "\n",
             "| geometric mean of FD | " + " | ".join(f"NFE {n}" for n in agg["nfes"]) + " |",
             "|---" + "|---:" * len(agg["nfes"]) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.3g}" for v in values) + " |" for name, values in agg["lines"].items()]
    lines.append("| best single built-in at that NFE | "
                 + " | ".join(f"{v:.3g} ({name})" for name, v in agg["best_single"]) + " |")
    return "\n".join(lines) + "\n"


def summary_from_docs() -> str:
    """The summary list of the committed docs/stress.md (empty if it has none), for benchmarks.md."""
    path = DOCS / "stress.md"
    text = path.read_text() if path.is_file() else ""
    if "## Summary\n" not in text or "\nRules." not in text:
        return ""
    return text.split("## Summary\n", 1)[1].split("\nRules.", 1)[0].strip() + "\n"


def of_set(records: list[dict], name: str) -> list[dict]:
    cells = {c.name for c in SETS[name]}
    return [r for r in records if r["cell"] in cells]


def against(records: list[dict], other: str, sampler: str = cs.EVODIFF_PREFIX) -> dict[str, list[str]]:
    """{'won' | 'tie' | 'lost': ['<cell> @<NFE>', ...]}: ``sampler`` against ``other`` at every point
    both ran, by stress.verdict (the noise rule; a failed run loses to a good one)."""
    at = {(r["cell"], r["nfe_target"], r["sampler"]): r for r in records}
    found = {"won": [], "tie": [], "lost": []}
    for r in records:
        rival = at.get((r["cell"], r["nfe_target"], other))
        if r["sampler"] == sampler and rival is not None:
            found[stress.verdict(r, rival)].append(f"{r['cell']} @{r['nfe_target']}")
    return found


def previous_default_section(records: list[dict], previous: str = PREVIOUS) -> str:
    """Every (cell, NFE) where the default and the previous default differ beyond noise."""
    found = against(records, previous)
    lines = [f"## Against the previous default ({previous})\n",
             f"FD of `evodiff` against `{previous}` at {sum(map(len, found.values()))} (cell, NFE) points, noise "
             f"rule as above: better at {len(found['won'])}, tied at {len(found['tie'])}, worse at "
             f"{len(found['lost'])}.\n"]
    for verdict, word in (("lost", "Worse"), ("won", "Better")):
        if found[verdict]:
            lines.append(f"- {word} at: {'; '.join(found[verdict])}.")
    return "\n".join(lines) + "\n"


def render(results: dict) -> dict:
    """docs/stress.md (tuning set), docs/stress-validation.md and the figures from a results.json of
    this run; returns the headline's numbers."""
    everything = results["records"]
    records = of_set(everything, "tuning")
    agg = figures.headline_figure(records, HEADLINE)
    for group, path in CELL_FIGURES.items():
        rs = [r for r in records if (r["cfg"] is not None) == (group == "guided")]
        figures.cells_figure(rs, path, "fd", "FD to the exact solution", cs.EVODIFF_PREFIX, columns=3,
                             title=f"{group.capitalize()} cells, held-out seed: FD to the exact solution "
                                   "(lower is better)")
    before_cells = (headline_section(agg) + "\n" + "\n".join(
        f"![{group} cells, FD by NFE]({path.name})\n" for group, path in CELL_FIGURES.items())
        + "\n" + previous_default_section(records))
    refs = results["references"]
    (DOCS / "stress.md").write_text(stress.markdown(
        records, [r for r in refs if r["cell"] in {c.name for c in CELLS}], WRITTEN_BY + results["header"],
        "EVODiff stress matrix, tuning set (held-out seed)", before_cells))
    validation = of_set(everything, "validation")
    if validation:
        VALIDATION_DOC.write_text(stress.markdown(
            validation, [r for r in refs if r["cell"] in {c.name for c in VALIDATION_CELLS}],
            VALIDATION_WRITTEN_BY + results["header"], "EVODiff stress matrix, validation set (held-out seed)",
            previous_default_section(validation)))
    return agg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress_heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-results", type=Path, metavar="PATH", help="re-render docs from this results.json")
    args = parser.parse_args(argv)
    if args.from_results:
        render(json.loads(args.from_results.read_text()))
        print(f"[stress] re-rendered docs/stress.md and the figures from {args.from_results}")
        return 0
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    digest = report.core_digest()
    records = stress.run(CELLS + VALIDATION_CELLS, SAMPLERS, NFES, (quality.HELDOUT_SEED,), N_SAMPLES, ODE_STEPS,
                         None)
    refs = stress.references_summary()
    seconds = time.perf_counter() - start
    settings = (f"{len(CELLS)} tuning and {len(VALIDATION_CELLS)} validation cells, NFE {list(NFES)}, "
                f"{N_SAMPLES} samples per cell (held-out seed "
                f"{quality.HELDOUT_SEED}), exact ODE: RK4 with {ODE_STEPS} steps in log sigma")
    header = report.header("python -m bench.stress_heldout", seconds, settings, digest)
    results = dict(command="python -m bench.stress_heldout", header=header, seconds=seconds, records=records,
                   references=refs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = stress.jsonable(results)   # what results.json holds and --from-results reads: non-finite values are null
    RESULTS.write_text(json.dumps(results, indent=1))
    agg = render(results)
    for name in SETS:
        subset = of_set(records, name)
        print(f"[{name}]\n" + stress.summary_text(stress.summary(subset), subset, []))
    print(figures.headline_reading(agg))
    print(f"[stress] wrote docs/stress.md, {HEADLINE.relative_to(ROOT)} and the cell figures in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
