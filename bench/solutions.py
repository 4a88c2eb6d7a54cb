"""The exact (analytic) or converged (learned) ODE solution of each cell, cached per process: what every sampler is scored against."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from . import comfy_samplers as cs
from .cells import Cell, Settings
from .metrics import FrechetTarget, moments, rms_error
from .problems import exact_solution, labels_for, noise_for, problem

START_SAMPLER = "euler"    # whose 10-step sigma list gives the start sigma every sampler of a cell shares
REFINED = 128              # samples solved again with twice the RK4 steps, the convergence check


@dataclass
class Solution:
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


_solutions: dict = {}


def denoiser(cell: Cell, labels: torch.Tensor | None):
    """The cell's data prediction in its family's convention; guided: D_u + cfg (D_c - D_u)."""
    prob = problem(cell.problem)
    if cell.cfg is None:
        return prob.denoiser(cell.family)
    return prob.guided_denoiser(cell.family, labels, cell.cfg)


def exact(cell: Cell, noise: torch.Tensor, labels: torch.Tensor | None, ode_steps: int) -> tuple[torch.Tensor, float]:
    """(x(0), start sigma): the cell's (guided) probability-flow ODE solved with RK4 from the latent
    KSAMPLER makes of ``noise``; row b is conditioned on labels[b]."""
    sigmas = cs.sigmas_for(START_SAMPLER, cell.family, cell.scheduler, 10)
    x_start = cs.initial_latent(cell.family, sigmas, noise)
    x = exact_solution(problem(cell.problem), cell.family, x_start, float(sigmas[0]), ode_steps,
                       denoiser(cell, labels))
    return x, float(sigmas[0])


def solution(cell: Cell, settings: Settings) -> Solution:
    """The exact solution of the cell's (guided) probability-flow ODE from the settings' noise; cached."""
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
    out = []
    for cell in dict.fromkeys(cells):
        s = solution(cell, settings)
        out.append(dict(cell=cell.name, **cell.axes(), n=len(s.x), ode_steps=s.ode_steps,
                        refinement_rms=s.refinement_rms, fd_data=s.fd_data, seconds=s.seconds))
    return out
