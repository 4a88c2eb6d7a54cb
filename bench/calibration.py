"""Calibration CLI: EVODiffCalibrate's schedules against the best built-in, on seeds the calibration never saw.

Per cell and NFE the node's calibration runs on CALIBRATION_SEED's noise (ComfyUI's stock schedules as
the guard's candidates); calibrated evodiff, at the shift it returned, is then judged on HELDOUT_SEED
against every built-in sampler on every stock schedule and table. Transfer: the schedule calibrated at
cfg c sampled at c ± 2, and the one of 8x8 digits sampled on ``digits-wide``, against karras + dpmpp_2m.

    python -m bench.calibration [--quick] [--out DIR]     # writes docs/calibration.md's tables
    python -m bench.calibration --from-results bench_out/calibration/results.json   # re-render only
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import comfy_samplers as cs
from .cells import HELDOUT_SEED, Cell, Settings
from .common import DOCS, OUT, machine, md_table, quiet, read_json, silent, write_json
from .problems import labels_for, noise_for, problem
from .matrix import denoiser, score, solution
from .verdicts import judge

DOCS_PAGE = DOCS / "calibration.md"
# the column scripts/bench adds: evodiff on the schedule (and shift) EVODiffCalibrate learns for the cell
CALIBRATED_COLUMN = f"{cs.EVODIFF_PREFIX}:calibrated"
BENCH_NFES = range(3, 17)    # the node's steps
MARKER = "<!-- measured: python -m bench.calibration -->"
CALIBRATION_SEED = 0          # the evaluation uses HELDOUT_SEED
CALIBRATION_SAMPLES = 64      # noise samples the calibration runs on (half fit, half held out)
TARGETS = {5: 0.5, 6: 0.67, 8: 0.67, 10: 1.0}   # FD ratio to the best built-in the issue asks for
CELLS = (Cell("digits", "eps", "karras"), *(Cell("digits-cfg", "eps", "karras", float(c)) for c in (1, 3, 5)),
         Cell("mixture", "eps", "karras"), Cell("mixture", "flow3", "simple"), Cell("digits", "flow3", "simple"))
TRANSFER = ((3.0, 1.0), (3.0, 5.0), (5.0, 3.0), (5.0, 7.0), (1.0, 3.0))   # (calibrated at, sampled at)
RESOLUTION_TRANSFER = (Cell("digits", "eps", "karras"), Cell("digits-wide", "eps", "karras"))   # (from, to)
STOCK = ("karras", "exponential", "simple", "beta", "kl_optimal", "normal", "sgm_uniform")
MULTI_CALL = ("heun", "dpm_2", "heunpp2", "uni_pc", "uni_pc_bh2", "exp_heun_2_x0")   # not run on the tables
FULL = Settings(nfes=(5, 6, 8, 10), n_samples=512, ode_steps=100, seeds=(HELDOUT_SEED,))
QUICK = Settings(nfes=(5, 8), n_samples=256, ode_steps=60, seeds=(HELDOUT_SEED,))


def calibrate_cell(cell: Cell, nfe: int) -> dict:
    """The node's calibration for this cell's model at this NFE."""
    from evodiff_core import calibrate
    from evodiff_core.calibrate import SHIFTS

    prob = problem(cell.problem)
    ms = cs.model_sampling(cell.family)
    noise = noise_for(prob, (CALIBRATION_SEED,), CALIBRATION_SAMPLES).float()
    labels = labels_for(prob, (CALIBRATION_SEED,), CALIBRATION_SAMPLES) if cell.cfg is not None else None
    model = cs.CountingModel(denoiser(cell, labels), ms)
    candidates = cs.pack_module("stock_schedules").stock_schedules(ms, nfe)
    start = time.perf_counter()
    result = calibrate(model, noise, nfe, float(ms.sigma_max), float(ms.sigma_min),
                       cs.core_noise_schedule(cell.family), candidates=candidates, shifts=SHIFTS)
    return dict(sigmas=result.sigmas, chosen=result.chosen, shift=result.shift, calls=result.model_calls,
                seconds=time.perf_counter() - start)


def calibrated_sampler(shift: float) -> str:
    """The default evodiff at the calibrated shift (what the node's SAMPLER is)."""
    return f"{cs.EVODIFF_PREFIX}@shift={shift:g}"


def bench_points(cells, settings: Settings, records: list, against_data=False, progress=silent) -> list:
    """The CALIBRATED_COLUMN points of scripts/bench, sampled on the run's own seed and judged against
    the run's ``records``, whose own verdicts stay as they were."""
    points = []
    with quiet():
        for cell, nfe in [(cell, nfe) for cell in cells for nfe in settings.nfes if nfe in BENCH_NFES]:
            cal = calibrate_cell(cell, nfe)
            points.append(score(cell, calibrated_sampler(cal["shift"]), nfe, solution(cell, settings),
                                against_data, sigmas=cal["sigmas"], name=CALIBRATED_COLUMN))
            points[-1].update(calibration_calls=cal["calls"], shift=cal["shift"], chosen=cal["chosen"])
            progress(points[-1])
    judge([dict(r) for r in records] + points)   # copies: only the new points get verdicts here
    return points


def fd_on(cell: Cell, sampler: str, exact, sigmas) -> float:
    """FD to the exact solution's samples of one run on a given sigma list (inf if it breaks)."""
    return score(cell, sampler, len(sigmas) - 1, exact, sigmas=sigmas)["fd"]


def best_builtin(cell: Cell, nfe: int, ref) -> dict[str, tuple[float, str]]:
    """The lowest (FD, 'sampler + schedule') of every built-in ("builtin") and of the default evodiff
    ("evodiff") on every stock schedule and table."""
    runs = []
    samplers = (cs.EVODIFF_PREFIX,) + cs.baseline_samplers()
    for scheduler in STOCK:
        for sampler in samplers:
            steps, achieved = cs.steps_for_nfe(sampler, cell.family, scheduler, nfe)
            if achieved == nfe:
                sigmas = cs.sigmas_for(sampler, cell.family, scheduler, steps)
                runs.append((fd_on(cell, sampler, ref, sigmas), sampler, scheduler))
    ms = cs.model_sampling(cell.family)
    tables = cs.pack_module("stock_schedules").table_schedules(float(ms.sigma_max), float(ms.sigma_min), nfe)
    for name, sigmas in tables.items():
        runs += [(fd_on(cell, sampler, ref, sigmas), sampler, name) for sampler in samplers
                 if sampler not in MULTI_CALL]
    best = lambda found: min((fd, f"{sampler} + {schedule}") for fd, sampler, schedule in found)  # noqa: E731
    return {"builtin": best(runs), "evodiff": best([r for r in runs if r[1] == cs.EVODIFF_PREFIX])}


def run(settings=FULL, cells=CELLS, progress=print) -> dict:
    records, schedules = [], {}
    with quiet():
        for cell in cells:
            ref = solution(cell, settings)
            for nfe in settings.nfes:
                cal = calibrate_cell(cell, nfe)
                schedules[(cell, nfe)] = cal
                fd = fd_on(cell, calibrated_sampler(cal["shift"]), ref, cal["sigmas"])
                rivals = best_builtin(cell, nfe, ref)
                (rival_fd, rival), (stock_fd, stock) = rivals["builtin"], rivals["evodiff"]
                records.append(dict(cell=cell.name, nfe=nfe, fd=fd, best_fd=rival_fd, best=rival,
                                    evodiff_stock_fd=stock_fd, evodiff_stock=stock,
                                    ratio=fd / rival_fd, target=TARGETS[nfe], chosen=cal["chosen"], shift=cal["shift"],
                                    calls=cal["calls"], seconds=cal["seconds"], sigmas=cal["sigmas"].tolist()))
                progress(f"  {cell.name:<28} NFE {nfe:>2}  calibrated FD {fd:.4g} ({cal['chosen']}, shift {cal['shift']:g}, "
                         f"{cal['calls']} calls, {cal['seconds']:.1f} s)  best built-in {rival_fd:.4g} ({rival})  "
                         f"evodiff on stock {stock_fd:.4g} ({stock})")
        transfers = transfer_records(settings, schedules, progress)
    return dict(settings=asdict(settings), records=records, transfer=transfers)


def transfer_records(settings, schedules, progress) -> list[dict]:
    """The calibrated (schedule, shift) of one cell sampled on another cell of the same model."""
    pairs = [(Cell("digits-cfg", "eps", "karras", at), Cell("digits-cfg", "eps", "karras", used))
             for at, used in TRANSFER] + [RESOLUTION_TRANSFER]
    out = []
    for source, target in pairs:
        ref = solution(target, settings)
        for nfe in settings.nfes:
            if (source, nfe) not in schedules:
                continue
            cal = schedules[(source, nfe)]
            fd = fd_on(target, calibrated_sampler(cal["shift"]), ref, cal["sigmas"])
            rival = fd_on(target, "dpmpp_2m", ref, cs.sigmas_for("dpmpp_2m", "eps", "karras", nfe))
            out.append(dict(calibrated_on=source.name, sampled_on=target.name, nfe=nfe, fd=fd, rival_fd=rival))
            progress(f"  transfer {source.name} -> {target.name} NFE {nfe}: {fd:.4g} vs karras + dpmpp_2m {rival:.4g}")
    return out


def _g(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def markdown(results: dict) -> str:
    recs = results["records"]
    lines = [MARKER, "", "Written by `python -m bench.calibration` (everything below this line).", "",
             f"Held-out seed {HELDOUT_SEED}, {results['settings']['n_samples']} samples per cell; "
             f"calibration on seed {CALIBRATION_SEED}, {CALIBRATION_SAMPLES} samples. FD to the exact solution's "
             "samples (lower is better); ratio = calibrated / best built-in; target: ≤ 0.5 at 5 NFE, ≤ 0.67 at "
             "6 and 8, ≤ 1 at 10.", "",
             md_table(["cell", "NFE", "calibrated FD", "best built-in FD", "best built-in", "ratio", "target met",
                       "evodiff on its best stock schedule", "calibrated / that", "returned", "shift", "calls",
                       "seconds"],
                      [[r["cell"], r["nfe"], _g(r["fd"]), _g(r["best_fd"]), r["best"], f"{r['ratio']:.2f}",
                        "yes" if r["ratio"] <= r["target"] else "no",
                        f"{_g(r['evodiff_stock_fd'])} ({r['evodiff_stock'].split(' + ')[1]})",
                        f"{r['fd'] / r['evodiff_stock_fd']:.2f}", r["chosen"], f"{r['shift']:g}", r["calls"],
                        f"{r['seconds']:.1f}"]
                       for r in recs], "lrrrlrclrlrrr")]
    met = sum(r["ratio"] <= r["target"] for r in recs)
    gains = [r["fd"] / r["evodiff_stock_fd"] for r in recs]
    lines += ["", f"Targets met at {met} of {len(recs)} points. Against evodiff on its own best stock schedule "
              f"(what calibrating alone buys): lower FD at {sum(g < 1 for g in gains)} of {len(recs)} points, "
              f"higher at {sum(g > 1 for g in gains)}; the median ratio is {sorted(gains)[len(gains) // 2]:.2f}, "
              f"the best {min(gains):.2f}, the worst {max(gains):.2f}."]
    lines += ["", "Calibration cost: at most "
              f"{max(r['calls'] for r in recs)} model calls and {max(r['seconds'] for r in recs):.1f} s per schedule "
              f"on this machine ({machine()}).", "",
              "**Transfer** (EPS karras range): the schedule and shift calibrated on one cell, sampled on "
              "another of the same model — another cfg (digits-cfg), another resolution (digits, 8x8, sampled "
              "on digits-wide, two digits side by side) — against karras + dpmpp_2m there. The evaluation "
              "noise is another seed than the calibration's everywhere.", "",
              md_table(["calibrated on", "sampled on", "NFE", "calibrated FD", "karras + dpmpp_2m FD", "beats it"],
                       [[t["calibrated_on"], t["sampled_on"], t["nfe"], _g(t["fd"]), _g(t["rival_fd"]),
                         "yes" if t["fd"] < t["rival_fd"] else "no"] for t in results["transfer"]], "llrrrc")]
    beats = sum(t["fd"] < t["rival_fd"] for t in results["transfer"])
    lines += ["", f"Transfer: beats karras + dpmpp_2m at {beats} of {len(results['transfer'])} points."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.calibration", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, NFE 5 and 8, no docs")
    parser.add_argument("--out", type=Path, default=OUT / "calibration")
    parser.add_argument("--from-results", type=Path, metavar="PATH", help="re-render from a results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.from_results:
        results = read_json(args.from_results)
    else:
        results = run(QUICK if args.quick else FULL)
        write_json(args.out / "results.json", results)
    text = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    if not args.quick:   # everything after MARKER: the method above it is written by hand
        DOCS_PAGE.write_text(DOCS_PAGE.read_text().split(MARKER)[0] + text)
    print(f"{text}\n[bench.calibration] {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
