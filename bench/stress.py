"""Stress matrix CLI: where each sampler diverges, over guidance scales and ComfyUI schedules.

    python -m bench.stress [--full] [--heldout] [--seed N] [--samplers a,b] [--out DIR]

Quick: 6 cells, about 45 s on 2 idle cores; --full: all 72 cells, about 80 min (the analytic mixture's
exact denoiser dominates). Both write report.md and results.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import cells as c
from . import comfy_samplers as cs
from . import matrix, stress_report
from .common import OUT, Stamp, write_json
from .verdicts import good, summarize


def progress(r) -> None:
    shown = f"FD {r['fd']:.4g} ± {r['fd_noise']:.2g}  RMS {r['rms']:.4f}" if good(r) else (r["error"] or "non-finite")
    print(f"  {r['cell']:<32} {r['sampler']:<20} NFE {r['nfe']:>2}  {shown}", flush=True)


def main(argv=None) -> int | None:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help=f"all {len(c.full_cells())} cells, NFE "
                        f"{list(c.STRESS_FULL.nfes)}, {c.STRESS_FULL.n_samples} samples (default: the quick subset)")
    c.add_seed_arguments(parser)
    parser.add_argument("--samplers", help="comma-separated subset, e.g. evodiff,euler,dpmpp_2m")
    parser.add_argument("--out", type=Path,
                        help="output folder (default bench_out/stress/, --full: bench_out/stress/full/)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    out = args.out or OUT / "stress" / ("full" if args.full else "")
    settings = (c.STRESS_FULL if args.full else c.STRESS_QUICK).with_seed(args.seed)
    cells = c.full_cells() if args.full else c.QUICK_CELLS
    # by default the pack's KSampler 'evodiff', then every deterministic ComfyUI sampler available
    samplers = tuple(args.samplers.split(",")) if args.samplers else (
        cs.EVODIFF_PREFIX, *cs.BUILTIN_SAMPLERS, *cs.offered(cs.EXTRA_DETERMINISTIC))
    stamp = Stamp("python -m bench.stress", argv)
    matrix.announce("stress", samplers, cells, settings)
    try:
        records = matrix.run(cells, samplers, settings, progress)
    except FileNotFoundError as missing:
        print(f"[stress] cannot run: {missing}", file=sys.stderr)
        return 2
    refs = matrix.summaries(cells, settings)
    verdicts = summarize(records, refs)
    results = stamp.results(settings.describe(f"{len(cells)} cells, "), settings=settings,
                            seed=settings.seeds[0], cells=[c.axes() | {"name": c.name} for c in cells],
                            references=refs, summary=verdicts, records=records)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(stress_report.markdown(
        records, refs, results["header"], f"EVODiff stress matrix ({'full' if args.full else 'quick'})"))
    write_json(out / "results.json", results)
    print(f"\n{stress_report.summary_text(verdicts)}\n\n[stress] wrote {out}/report.md and results.json in "
          f"{results['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
