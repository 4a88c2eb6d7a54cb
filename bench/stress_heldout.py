"""The held-out stress run the README's verdict and headline figure come from: a subset of the
full matrix (every axis represented: guidance on the analytic and the learned model, EDM
80→0.002, flow shift 1/3/6, five SD1.5 schedulers) on the held-out noise seed, at NFE 5–30.
About 5–10 minutes on 2 shared cores; the whole matrix (`scripts/stress --full`) takes over an hour.

    .venv/bin/python -m bench.stress_heldout      # -> bench_out/stress/heldout/results.json, docs/stress.md,
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
SAMPLERS = ("evodiff", "evodiff:improved@shift=0", "evodiff:reference", "euler", "dpmpp_2m", "deis", "ipndm",
            "uni_pc", "res_multistep", "gradient_estimation")
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


def render(results: dict) -> dict:
    """docs/stress.md and the figures from a results.json of this run; returns the headline's numbers."""
    records = results["records"]
    agg = figures.headline_figure(records, HEADLINE)
    for group, path in CELL_FIGURES.items():
        rs = [r for r in records if (r["cfg"] is not None) == (group == "guided")]
        figures.cells_figure(rs, path, "fd", "FD to the exact solution", cs.EVODIFF_PREFIX, columns=3,
                             title=f"{group.capitalize()} cells, held-out seed: FD to the exact solution "
                                   "(lower is better)")
    before_cells = headline_section(agg) + "\n" + "\n".join(
        f"![{group} cells, FD by NFE]({path.name})\n" for group, path in CELL_FIGURES.items())
    (DOCS / "stress.md").write_text(stress.markdown(records, results["references"], WRITTEN_BY + results["header"],
                                                    "EVODiff stress matrix (held-out seed)", before_cells))
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
    records = stress.run(CELLS, SAMPLERS, NFES, (quality.HELDOUT_SEED,), N_SAMPLES, ODE_STEPS, None)
    refs = stress.references_summary()
    seconds = time.perf_counter() - start
    settings = (f"{len(CELLS)} cells, NFE {list(NFES)}, {N_SAMPLES} samples per cell (held-out seed "
                f"{quality.HELDOUT_SEED}), exact ODE: RK4 with {ODE_STEPS} steps in log sigma")
    header = report.header("python -m bench.stress_heldout", seconds, settings, digest)
    results = dict(command="python -m bench.stress_heldout", header=header, seconds=seconds, records=records,
                   references=refs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = stress.jsonable(results)   # what results.json holds and --from-results reads: non-finite values are null
    RESULTS.write_text(json.dumps(results, indent=1))
    agg = render(results)
    print(stress.summary_text(stress.summary(records), records, refs))
    print(figures.headline_reading(agg))
    print(f"[stress] wrote docs/stress.md, {HEADLINE.relative_to(ROOT)} and the cell figures in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
