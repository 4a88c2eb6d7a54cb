"""The one benchmark machinery: every sampler at every NFE on every cell, run as KSampler runs it, scored and judged.

    from bench import cells, matrix
    records = matrix.run(cells.QUICK_CELLS, ["evodiff", "euler", "dpmpp_2m"], cells.STRESS_QUICK)

Each record is a bench.cells.Point. The score of a run is the Fréchet distance (FD) between its
samples and the exact solution's samples from the same noise, in the problem's feature space (raw
for the mixture, the FeatureNet's for digits), and its RMS error against that solution, each with
its split-half noise; ``against_data`` adds the FD to the data (the unguided matrix's excess FD).
"""
from __future__ import annotations

import math
import time

import torch

from . import comfy_samplers as cs
from .cells import Cell, Point, Settings
from .common import quiet
from .metrics import changed_component, frechet_distance, moments, rms_error, split_half_noise
from .problems import problem
from .solutions import Solution, denoiser, solution
from .verdicts import judge


def _fd(features: torch.Tensor, reference_features: torch.Tensor) -> float:
    return frechet_distance(*moments(features), *moments(reference_features))


def score(cell: Cell, sampler: str, nfe: int, exact: Solution, against_data: bool = False,
          sigmas: torch.Tensor | None = None, name: str | None = None) -> Point:
    """One sampler at one NFE on one cell; ``sigmas``: run on this list instead of the scheduler's
    (a calibrated schedule), recorded under ``name``."""
    prob = problem(cell.problem)
    steps, achieved = (len(sigmas) - 1, nfe) if sigmas is not None else cs.steps_for_nfe(
        sampler, cell.family, cell.scheduler, nfe)
    record = Point(sampler=name or sampler, cell=cell.name, **cell.axes(), nfe_target=nfe, nfe=achieved, steps=steps,
                   seeds=list(exact.seeds), n_samples=len(exact.noise), finite=False, error=None, fd=math.inf,
                   fd_noise=math.nan, rms=math.inf, rms_noise=math.nan, changed=None)
    start = time.perf_counter()
    try:
        run = cs.run_sampler(sampler, cell.family, cell.scheduler, steps, denoiser(cell, exact.labels), exact.noise,
                             sigmas=sigmas)
    except Exception as error:  # noqa: BLE001 - a sampler that breaks down has diverged; say why
        return Point(record, error=f"{type(error).__name__}: {error}"[:300], seconds=time.perf_counter() - start)
    if sigmas is None and (run.nfe != achieved or float(run.sigmas[0]) != exact.sigma_start):
        raise AssertionError(f"{sampler}: NFE {run.nfe} (probed {achieved}) or start sigma "
                             f"{float(run.sigmas[0])} (exact solution's {exact.sigma_start}) differ")
    record.update(nfe=run.nfe, seconds=time.perf_counter() - start, finite=bool(torch.isfinite(run.x).all()))
    if record["finite"]:
        record.update(_scores(prob, run.x, exact, against_data))
    return record


def _scores(prob, x: torch.Tensor, exact: Solution, against_data: bool) -> dict:
    feats = prob.features(x)
    out = dict(fd=exact.target(feats), fd_noise=split_half_noise(_fd, feats, exact.features),
               rms=rms_error(x, exact.x), rms_noise=split_half_noise(rms_error, x, exact.x))
    if exact.components is not None:
        out["changed"] = changed_component(prob.components(x), exact.components)
    if against_data:
        # paired halves: the sampler's and the exact solution's features of the same noises
        excess = lambda f, rf: prob.data_target(f) - prob.data_target(rf)  # noqa: E731
        fd_data = prob.data_target(feats)
        out.update(fd_data=fd_data, excess_fd=fd_data - exact.fd_data,
                   excess_fd_noise=split_half_noise(excess, feats, exact.features))
    return out


def announce(tag: str, samplers, cells, settings: Settings) -> None:
    """The line a command prints before it runs the matrix."""
    print(f"[{tag}] {len(samplers)} samplers × {len(cells)} cells × NFE {list(settings.nfes)}, "
          f"{settings.n_samples} samples, seed {', '.join(map(str, settings.seeds))}", flush=True)


def run(cells, samplers, settings: Settings, progress=None, against_data: bool = False) -> list[Point]:
    """Every sampler at every NFE of the settings on every cell; one judged record per combination.

    ``samplers``: 'evodiff' is the pack's KSampler sampler, 'evodiff:<variant>[@shift=x]' the core's
    variants, 'evodiff@<rev>' and 'evodiff~<rule>' other cores (bench.cores), the rest ComfyUI's.
    ``progress(record)`` is called after each run.
    """
    for name in dict.fromkeys(c.problem for c in cells):
        problem(name)           # a missing model (digits-cfg's weights) fails here, before any work
    records = []
    with quiet():
        for cell in cells:
            exact = solution(cell, settings)
            cell_records = []
            for sampler in samplers:
                for nfe in settings.nfes:
                    cell_records.append(score(cell, sampler, nfe, exact, against_data))
                    if progress:
                        progress(cell_records[-1])
            records += judge(cell_records)
    return records
