"""Quality per NFE and cost per step of EVODiff against ComfyUI's own samplers (quick by default)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from . import comfy_samplers as cs
from . import cost, quality, report

ROOT = Path(__file__).resolve().parent.parent
README_FIGURE = ROOT / "docs" / "benchmark.png"
DOCS_TABLES = ROOT / "docs" / "benchmark.md"   # the full tables the README links to

# quick: a smoke-level run of every sampler and cell in under 2 minutes on 2 shared cores
QUICK = dict(nfes=quality.NFES_MATRIX, n_samples=512, ode_steps=100, cost_repeats=2)
FULL = dict(nfes=quality.NFES_FULL, n_samples=2048, ode_steps=200, cost_repeats=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the README's run: all NFEs, 2048 samples, ~5 min; with all samplers and seed 0 it "
                             "also rewrites docs/benchmark.png")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    seeds.add_argument("--heldout", action="store_true", help=f"use the held-out seed {quality.HELDOUT_SEED}")
    parser.add_argument("--samplers", help="comma-separated subset, e.g. evodiff:reference,dpmpp_2m")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost benchmark")
    parser.add_argument("--out", type=Path, help="output folder (default bench_out/, bench_out/full/ with --full)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    args.out = args.out or ROOT / "bench_out" / ("full" if args.full else "")
    settings = FULL if args.full else QUICK
    seed = quality.HELDOUT_SEED if args.heldout else args.seed
    samplers = args.samplers.split(",") if args.samplers else cs.all_samplers()
    command = "scripts/bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    digest = report.core_digest()

    def progress(r):
        print(f"  {r['cell']:<22} {r['sampler']:<20} NFE {r['nfe']:>2}  RMS {r['rms']:.4f}  "
              f"excess FD {r['excess_fd']:+.3f} ± {r['excess_fd_noise']:.3f}", flush=True)

    print(f"[bench] quality: {len(samplers)} samplers × {len(quality.CELLS)} cells × NFE {settings['nfes']}, "
          f"{settings['n_samples']} samples, seed {seed}", flush=True)
    records = quality.run_matrix(samplers=samplers, nfes=settings["nfes"], seeds=(seed,),
                                 n_samples=settings["n_samples"], ode_steps=settings["ode_steps"], progress=progress)
    refs = quality.references_summary()
    cost_records = []
    if not args.no_cost:
        print("[bench] cost per step (trivial model) and peak memory", flush=True)
        cost_samplers = [s for s in samplers if cs.is_evodiff(s)] + list(cost.BASELINES)
        cost_records = cost.run_cost(samplers=cost_samplers, repeats=settings["cost_repeats"])
    seconds = time.perf_counter() - start

    settings_text = (f"NFE {list(settings['nfes'])}, {settings['n_samples']} samples per cell (seed {seed}), "
                     f"exact ODE: RK4 with {settings['ode_steps']} steps in log sigma")
    header = report.header(command, seconds, settings_text, digest)
    md = [f"# EVODiff benchmark ({'full' if args.full else 'quick'})\n", header,
          "## Exact ODE solutions (convergence check by refinement)\n", report.references_table(refs) + "\n",
          "## Run-to-run noise (split-half standard error)\n", report.noise_table(records) + "\n",
          "## Where EVODiff wins and loses (NFEs not listed are within noise)\n",
          report.verdicts(records, "excess_fd") + "\n",
          report.verdicts(records, "rms") + "\n", report.ranks(records) + "\n",
          "## Quality\n", report.quality_report(records)]
    if cost_records:
        md += ["## Cost\n", report.cost_report(cost_records)]
    (args.out / "report.md").write_text("\n".join(md))
    (args.out / "results.json").write_text(json.dumps(
        dict(command=command, header=header, seconds=seconds, settings=settings, seed=seed, references=refs,
             quality=records, cost=cost_records), indent=1))
    report.plot(records, args.out / "benchmark.png")
    if args.full and not args.samplers and seed == 0:
        report.plot(records, README_FIGURE)  # the README's figure comes from exactly this run
        results = json.loads((args.out / "results.json").read_text())
        DOCS_TABLES.write_text("# Benchmark: quality per NFE and cost per step (unguided cells)\n\n"
                               "Written by `scripts/bench --full`; the guided and wide-range cells are in "
                               "[stress.md](stress.md).\n\n" + report.readme_section(results))
    if cost_records:
        print("\n" + report.cost_report(cost_records))
    print(report.verdicts(records, "excess_fd"))
    print(f"\n[bench] wrote {args.out}/report.md, results.json, benchmark.png in {seconds:.0f} s")
    failed = [r for r in cost_records if r["verdict"] == "FAIL"]
    if failed:
        print(f"[bench] cost threshold FAIL for {len(failed)} (sampler, latent) pairs (reported, not fatal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
