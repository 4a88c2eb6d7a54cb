"""Main benchmark CLI (`scripts/bench`): quality per NFE and cost per step against ComfyUI's own samplers.

On 2 shared cores the quick run takes about 1 min 45 s, `--full` about 11 min (it also writes
docs/benchmarks.md). `--from-results PATH` re-renders from a results.json. The last line is the verdict.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from . import comfy_samplers as cs
from . import calibration, cost, digits_grid, figures, matrix, report, stress_report
from .cells import BENCH_FULL, BENCH_QUICK, UNGUIDED, add_seed_arguments
from .common import DOCS, OUT, Stamp, read_json, shown, write_json
from .verdicts import Summary

DOCS_PAGE = DOCS / "benchmarks.md"   # written whole by `scripts/bench --full` (seed 0, every sampler)
GUIDED_SUMMARY = DOCS / "stress-summary.json"   # written by `python -m bench.stress_heldout`


# a run's two small-multiple figures, {record value: (y label, title)}: benchmark_<value>.png in the run's
# folder, docs/benchmarks_<value>.png for the docs
FIGURES = {"fd": ("FD to the exact solution", "Unguided cells: FD to the exact solution (lower is better)"),
           "rms": ("RMS error vs exact", "Unguided cells: RMS error against the exact solution (lower is better)")}


def writes_docs(results: dict) -> bool:
    """A full run of every sampler on seed 0: the one docs/benchmarks.md comes from."""
    samplers = {r["sampler"] for r in results["quality"]} - {calibration.CALIBRATED_COLUMN}
    return results["settings"]["n_samples"] == BENCH_FULL.n_samples and results["seed"] == 0 and \
        samplers == set(cs.all_samplers())


def render(results: dict, out: Path, docs: bool) -> list[Path]:
    """report.md and the figures into out; with docs, also docs/benchmarks.md and its figures."""
    records = results["quality"]
    written = [out / "report.md"]
    written[0].write_text(report.report_markdown(
        results, f"EVODiff benchmark ({'quick' if report.is_quick(records) else 'full'})"))
    for value, (ylabel, title) in FIGURES.items():
        written.append(out / f"benchmark_{value}.png")
        figures.cells_figure(records, written[-1], value, ylabel, report.default_variant(), title=title)
        if docs:  # the docs get the same bytes (figures are saved deterministically)
            written.append(shutil.copyfile(written[-1], DOCS / f"benchmarks_{value}.png"))
    if docs:
        headline = (figures.HEADLINE_ALT, figures.headline_caption(), figures.HEADLINE.name)
        pictures = [(digits_grid.ALT, digits_grid.CAPTION, digits_grid.OUT.name)]
        pictures += [(title, title + ", every sampler of this run.", f"benchmarks_{value}.png")
                     for value, (_, title) in FIGURES.items()]
        # the held-out stress run's verdict on its tuning set, in words (none before that run)
        guided = stress_report.summary_text(Summary(**read_json(GUIDED_SUMMARY))) + "\n" \
            if GUIDED_SUMMARY.is_file() else ""
        DOCS_PAGE.write_text(report.benchmarks_markdown(results, headline, pictures, guided))
        written.append(DOCS_PAGE)
    return written


def progress(r) -> None:
    print(f"  {r['cell']:<22} {r['sampler']:<20} NFE {r['nfe']:>2}  RMS {r['rms']:.4f}  "
          f"excess FD {r['excess_fd']:+.3f} ± {r['excess_fd_noise']:.3f}", flush=True)


def run(args, argv) -> dict:
    """The benchmark itself; returns what results.json holds."""
    torch.set_num_threads(1)
    settings = (BENCH_FULL if args.full else BENCH_QUICK).with_seed(args.seed)
    samplers = args.samplers.split(",") if args.samplers else cs.all_samplers()
    stamp = Stamp("scripts/bench", argv)
    matrix.announce("bench", samplers, UNGUIDED, settings)
    records = matrix.run(UNGUIDED, samplers, settings, progress, against_data=True)
    if not args.no_calibration:
        print(f"[bench] {calibration.CALIBRATED_COLUMN}: EVODiffCalibrate's schedule for each cell and NFE "
              f"(calibrated on seed {calibration.CALIBRATION_SEED})", flush=True)
        records += calibration.bench_points(UNGUIDED, settings, records, against_data=True, progress=progress)
    cost_records = []
    if not args.no_cost:
        print("[bench] cost per step (trivial model) and peak memory", flush=True)
        cost_samplers = [s for s in samplers if cs.is_evodiff(s)] + list(cost.BASELINES)
        cost_records = cost.run_cost(samplers=cost_samplers, repeats=settings.cost_repeats)
    return stamp.results(settings.describe(), settings=settings, seed=settings.seeds[0],
                         references=matrix.summaries(UNGUIDED, settings), quality=records, cost=cost_records)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help=f"all NFEs {list(BENCH_FULL.nfes)}, {BENCH_FULL.n_samples} samples, about "
                             f"{report.FULL_MINUTES} min; with all samplers and seed 0 it also writes "
                             "docs/benchmarks.md, its figures and the digit grid")
    add_seed_arguments(parser)
    parser.add_argument("--samplers", help="comma-separated subset, e.g. evodiff:reference,dpmpp_2m")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost benchmark")
    parser.add_argument("--no-calibration", action="store_true",
                        help=f"skip the {calibration.CALIBRATED_COLUMN} rows (EVODiffCalibrate's schedules)")
    parser.add_argument("--out", type=Path, help="output folder (default bench_out/, bench_out/full/ with --full; "
                                                 "with --from-results: the results file's folder)")
    parser.add_argument("--from-results", type=Path, metavar="PATH",
                        help="re-render report.md and the figures from this results.json (no sampling)")
    args = parser.parse_args(argv)

    if args.from_results:
        out = args.out or args.from_results.parent
    else:
        out = args.out or OUT / ("full" if args.full else "")
        write_json(out / "results.json", run(args, argv))
    results = read_json(args.from_results or out / "results.json")
    docs = writes_docs(results)
    written = render(results, out, docs)
    if docs and not args.from_results:
        digits_grid.main([])
    if results["cost"]:
        print("\n" + report.cost_report(results["cost"]))
    print(report.verdicts(results["quality"], "excess_fd"))
    print(f"\n[bench] wrote {', '.join(shown(p) for p in written)}"
          + ("" if args.from_results else f" and results.json in {results['seconds']:.0f} s"))
    print(report.final_verdict(results["quality"], results["cost"]))   # the last line: the verdict
    return 0


if __name__ == "__main__":
    sys.exit(main())
