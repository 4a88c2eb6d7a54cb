"""The one benchmark machinery: each cell's exact solution, and every sampler at every NFE scored against it.

A run, made as KSampler makes it, scores (a bench.cells.Point) by the Fréchet distance (FD) of its
samples to the exact solution's from the same noise, in the problem's feature space, and by its RMS
error, each with its split-half noise; ``against_data`` adds the FD to the data.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from . import comfy_samplers as cs
from .cells import Cell, Point, Settings
from .common import quiet, silent
from .metrics import FrechetTarget, changed_component, frechet_distance, moments, rms_error, split_half_noise
from .problems import exact_solution, labels_for, noise_for, problem
from .verdicts import judge


START_SAMPLER = "euler"    # whose 10-step sigma list gives the start sigma every sampler of a cell shares
REFINED = 128              # samples solved again with twice the RK4 steps, the convergence check


@dataclass
class Solution:
    """A cell's exact solution from the noise of some settings: what its samplers are scored against."""
    seeds: tuple[int, ...]
    ode_steps: int
    noise: torch.Tensor             # unit Gaussian, float64, one block per seed
    labels: torch.Tensor | None     # class labels of a guided problem, aligned with noise
    x: torch.Tensor                 # the exact ODE solution from that noise
    sigma_start: float              # where every sampler of the cell starts
    features: torch.Tensor
    target: FrechetTarget           # the exact samples' feature moments
    components: torch.Tensor | None  # mixture components the exact samples end in
    refinement_rms: float           # RMS change when the RK4 steps double (first REFINED samples)
    fd_data: float                  # the exact samples' FD to the data: the zero of a sampler's excess FD
    seconds: float


_solutions: dict = {}   # the cache of solution()


def denoiser(cell: Cell, labels: torch.Tensor | None):
    """The cell's data prediction in its family's convention; guided: D_u + cfg (D_c - D_u)."""
    prob = problem(cell.problem)
    if cell.cfg is None:
        return prob.denoiser(cell.family)
    return prob.guided_denoiser(cell.family, labels, cell.cfg)


def exact(cell: Cell, noise: torch.Tensor, labels: torch.Tensor | None, ode_steps: int) -> tuple[torch.Tensor, float]:
    """(x(0), start sigma): the cell's probability-flow ODE from the latent KSAMPLER makes of ``noise``."""
    sigmas = cs.sigmas_for(START_SAMPLER, cell.family, cell.scheduler, 10)
    x_start = cs.initial_latent(cell.family, sigmas, noise)
    x = exact_solution(problem(cell.problem), cell.family, x_start, float(sigmas[0]), ode_steps,
                       denoiser(cell, labels))
    return x, float(sigmas[0])


def solution(cell: Cell, settings: Settings) -> Solution:
    """The exact solution of the cell's probability-flow ODE from the settings' noise; cached."""
    key = (cell, settings.seeds, settings.n_samples, settings.ode_steps)
    if key in _solutions:
        return _solutions[key]
    start = time.perf_counter()
    prob = problem(cell.problem)
    noise = noise_for(prob, settings.seeds, settings.n_samples)
    labels = labels_for(prob, settings.seeds, settings.n_samples) if cell.cfg is not None else None
    x, sigma_start = exact(cell, noise, labels, settings.ode_steps)
    few = slice(0, min(REFINED, len(x)))
    finer, _ = exact(cell, noise[few], None if labels is None else labels[few], 2 * settings.ode_steps)
    feats = prob.features(x)
    solved = _solutions[key] = Solution(
        seeds=settings.seeds, ode_steps=settings.ode_steps, noise=noise, labels=labels, x=x, sigma_start=sigma_start,
        features=feats, target=FrechetTarget(*moments(feats)), components=prob.components(x),
        refinement_rms=rms_error(x[few], finer), fd_data=prob.data_target(feats), seconds=time.perf_counter() - start)
    return solved


def summaries(cells, settings: Settings) -> list[dict]:
    """The convergence check of each cell's solution under the settings, as results.json lists it."""
    solved = {cell: solution(cell, settings) for cell in cells}
    return [dict(cell=c.name, **c.axes(), n=len(s.x), ode_steps=s.ode_steps, refinement_rms=s.refinement_rms,
                 fd_data=s.fd_data, seconds=s.seconds) for c, s in solved.items()]


def score(cell: Cell, sampler: str, nfe: int, solved: Solution, against_data: bool = False,
          sigmas: torch.Tensor | None = None, name: str | None = None) -> Point:
    """One sampler at one NFE on one cell; ``sigmas``: run on this list instead of the scheduler's
    (a calibrated schedule), recorded under ``name``."""
    prob = problem(cell.problem)
    steps, achieved = (len(sigmas) - 1, nfe) if sigmas is not None else cs.steps_for_nfe(
        sampler, cell.family, cell.scheduler, nfe)
    record = Point(sampler=name or sampler, cell=cell.name, **cell.axes(), nfe_target=nfe, nfe=achieved, steps=steps,
                   seeds=list(solved.seeds), n_samples=len(solved.noise), finite=False, error=None, fd=math.inf,
                   fd_noise=math.nan, rms=math.inf, rms_noise=math.nan, changed=None)
    start = time.perf_counter()
    try:
        run = cs.run_sampler(sampler, cell.family, cell.scheduler, steps, denoiser(cell, solved.labels), solved.noise,
                             sigmas=sigmas)
    except Exception as error:  # noqa: BLE001 - a sampler that breaks down has diverged; say why
        return Point(record, error=f"{type(error).__name__}: {error}"[:300], seconds=time.perf_counter() - start)
    if sigmas is None and (run.nfe != achieved or float(run.sigmas[0]) != solved.sigma_start):
        raise AssertionError(f"{sampler}: NFE {run.nfe} (probed {achieved}) or start sigma "
                             f"{float(run.sigmas[0])} (exact solution's {solved.sigma_start}) differ")
    record.update(nfe=run.nfe, seconds=time.perf_counter() - start, finite=bool(torch.isfinite(run.x).all()))
    if record["finite"]:
        record.update(_scores(prob, run.x, solved, against_data))
    return record


def _scores(prob, x: torch.Tensor, solved: Solution, against_data: bool) -> dict:
    feats = prob.features(x)
    fd = lambda f, rf: frechet_distance(*moments(f), *moments(rf))  # noqa: E731
    out = dict(fd=solved.target(feats), fd_noise=split_half_noise(fd, feats, solved.features),
               rms=rms_error(x, solved.x), rms_noise=split_half_noise(rms_error, x, solved.x))
    if solved.components is not None:
        out["changed"] = changed_component(prob.components(x), solved.components)
    if against_data:
        # paired halves: the sampler's and the exact solution's features of the same noises
        excess = lambda f, rf: prob.data_target(f) - prob.data_target(rf)  # noqa: E731
        fd_data = prob.data_target(feats)
        out.update(fd_data=fd_data, excess_fd=fd_data - solved.fd_data,
                   excess_fd_noise=split_half_noise(excess, feats, solved.features))
    return out


def announce(tag: str, samplers, cells, settings: Settings) -> None:
    print(f"[{tag}] {len(samplers)} samplers × {len(cells)} cells × NFE {list(settings.nfes)}, "
          f"{settings.n_samples} samples, seed {', '.join(map(str, settings.seeds))}", flush=True)


def run(cells, samplers, settings: Settings, progress=silent, against_data: bool = False) -> list[Point]:
    """Every sampler at every NFE of the settings on every cell; one judged record per combination,
    each handed to ``progress`` as it is made."""
    for name in dict.fromkeys(c.problem for c in cells):
        problem(name)           # a missing model (digits-cfg's weights) fails here, before any work
    records = []
    with quiet():
        for cell in cells:
            solved = solution(cell, settings)
            cell_records = []
            for sampler in samplers:
                for nfe in settings.nfes:
                    cell_records.append(score(cell, sampler, nfe, solved, against_data))
                    progress(cell_records[-1])
            records += judge(cell_records)
    return records
