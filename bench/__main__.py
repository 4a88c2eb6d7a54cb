"""Quality per NFE and cost per step of EVODiff against ComfyUI's own samplers (quick by default).

Wall time on 2 cores shared with other jobs: the quick run about 1 min 45 s (1 min 35 s with
--no-cost), `--full` about 11 min (it also writes docs/benchmarks.md); scripts/setup adds about
80 s the first time, while it builds .venv. The last line printed is the verdict.
`--from-results PATH` re-renders report.md and the figures (and docs/benchmarks.md for a full
run's results) from a results.json without running anything.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from . import comfy_samplers as cs
from . import cost, figures, quality, report

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCS_PAGE = DOCS / "benchmarks.md"   # written whole by `scripts/bench --full` (seed 0, every sampler)

QUICK = dict(nfes=quality.NFES_MATRIX, n_samples=512, ode_steps=100, cost_repeats=2)
FULL = dict(nfes=quality.NFES_FULL, n_samples=quality.N_SAMPLES_FULL, ode_steps=200, cost_repeats=5)


def figure_files(prefix: str) -> dict[str, tuple[str, str, str]]:
    """{file name: (record value, y label, title)}: the two small-multiple figures of a run."""
    return {f"{prefix}_fd.png": ("fd_converged", "FD to the exact solution",
                                 "Unguided cells: FD to the exact solution (lower is better)"),
            f"{prefix}_rms.png": ("rms", "RMS error vs exact",
                                  "Unguided cells: RMS error against the exact solution (lower is better)")}


def writes_docs(results: dict) -> bool:
    """A full run of every sampler on seed 0: the one docs/benchmarks.md comes from."""
    samplers = {r["sampler"] for r in results["quality"]}
    return results["settings"]["n_samples"] == FULL["n_samples"] and results["seed"] == 0 and \
        samplers == set(cs.all_samplers())


def render(results: dict, out: Path, docs: bool) -> list[Path]:
    """report.md and the figures into out; with docs, also docs/benchmarks.md and its figures."""
    records = results["quality"]
    full = not report.is_quick(records)
    written = [out / "report.md"]
    written[0].write_text(report.report_markdown(results, f"EVODiff benchmark ({'full' if full else 'quick'})"))
    emphasised = report.default_variant()
    for (name, (value, ylabel, title)), docs_name in zip(figure_files("benchmark").items(), figure_files("benchmarks")):
        figures.cells_figure(records, out / name, value, ylabel, emphasised, title=title)
        written.append(out / name)
        if docs:  # the docs get the same bytes (figures are saved deterministically)
            shutil.copyfile(out / name, DOCS / docs_name)
            written.append(DOCS / docs_name)
    if docs:
        from . import digits_grid, stress_heldout

        headline = (stress_heldout.HEADLINE_ALT, stress_heldout.headline_caption(), stress_heldout.HEADLINE.name)
        pictures = [(digits_grid.ALT, digits_grid.CAPTION, digits_grid.OUT.name)]
        pictures += [(title, title + ", every sampler of this run.", name)
                     for name, (_, _, title) in figure_files("benchmarks").items()]
        guided_summary = stress_heldout.summary_from_docs()
        DOCS_PAGE.write_text(report.benchmarks_markdown(results, headline, pictures, guided_summary))
        written.append(DOCS_PAGE)
    return written


def run(args, argv) -> dict:
    """The benchmark itself; returns what results.json holds."""
    torch.set_num_threads(1)
    settings = FULL if args.full else QUICK
    seed = quality.HELDOUT_SEED if args.heldout else args.seed
    samplers = args.samplers.split(",") if args.samplers else cs.all_samplers()
    command = "scripts/bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    start = time.perf_counter()
    digest = report.core_digest()

    def progress(r):
        print(f"  {r['cell']:<22} {r['sampler']:<20} NFE {r['nfe']:>2}  RMS {r['rms']:.4f}  "
              f"excess FD {r['excess_fd']:+.3f} ± {r['excess_fd_noise']:.3f}", flush=True)

    print(f"[bench] quality: {len(samplers)} samplers × {len(quality.CELLS)} cells × NFE {settings['nfes']}, "
          f"{settings['n_samples']} samples, seed {seed}", flush=True)
    records = quality.run_matrix(samplers=samplers, nfes=settings["nfes"], seeds=(seed,),
                                 n_samples=settings["n_samples"], ode_steps=settings["ode_steps"], progress=progress)
    cost_records = []
    if not args.no_cost:
        print("[bench] cost per step (trivial model) and peak memory", flush=True)
        cost_samplers = [s for s in samplers if cs.is_evodiff(s)] + list(cost.BASELINES)
        cost_records = cost.run_cost(samplers=cost_samplers, repeats=settings["cost_repeats"])
    seconds = time.perf_counter() - start
    settings_text = (f"NFE {list(settings['nfes'])}, {settings['n_samples']} samples per cell (seed {seed}), "
                     f"exact ODE: RK4 with {settings['ode_steps']} steps in log sigma")
    return dict(command=command, header=report.header(command, seconds, settings_text, digest), seconds=seconds,
                settings=settings, seed=seed, references=quality.references_summary(), quality=records,
                cost=cost_records)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help=f"all NFEs {list(FULL['nfes'])}, {FULL['n_samples']} samples, about "
                             f"{report.FULL_MINUTES} min; with all samplers and seed 0 it also writes "
                             "docs/benchmarks.md, its figures and the digit grid")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    seeds.add_argument("--heldout", action="store_true", help=f"use the held-out seed {quality.HELDOUT_SEED}")
    parser.add_argument("--samplers", help="comma-separated subset, e.g. evodiff:reference,dpmpp_2m")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost benchmark")
    parser.add_argument("--out", type=Path, help="output folder (default bench_out/, bench_out/full/ with --full; "
                                                 "with --from-results: the results file's folder)")
    parser.add_argument("--from-results", type=Path, metavar="PATH",
                        help="re-render report.md and the figures from this results.json (no sampling)")
    args = parser.parse_args(argv)

    if args.from_results:
        results = json.loads(args.from_results.read_text())
        out = args.out or args.from_results.parent
    else:
        out = args.out or ROOT / "bench_out" / ("full" if args.full else "")
        results = run(args, argv)
    out.mkdir(parents=True, exist_ok=True)
    if not args.from_results:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    docs = writes_docs(results)
    written = render(results, out, docs)
    if docs and not args.from_results:
        from . import digits_grid

        digits_grid.main([])
    if results["cost"]:
        print("\n" + report.cost_report(results["cost"]))
    print(report.verdicts(results["quality"], "excess_fd"))
    print(f"\n[bench] wrote {', '.join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in written)}"
          + ("" if args.from_results else f" and results.json in {results['seconds']:.0f} s"))
    print(report.final_verdict(results["quality"], results["cost"]))   # the last line: the verdict
    return 0


if __name__ == "__main__":
    sys.exit(main())
