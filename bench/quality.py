"""Quality per NFE: every sampler on every cell (problem x schedule), against the exact ODE solution.

``run_matrix`` is the API (returns a list of records, one per sampler, cell and NFE);
``table`` turns records into markdown.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch

from . import comfy_samplers as cs
from .metrics import FrechetTarget, changed_component, metric_score, moments, rms_error, split_half_noise
from .problems import exact_solution, noise_for, problem

NFES_FULL = (5, 6, 8, 10, 12, 15, 20, 25)
N_SAMPLES_FULL = 2048  # per cell in `scripts/bench --full`; the quick run's 512 tie most points
NFES_MATRIX = (5, 8, 10)
HELDOUT_SEED = 1000   # tune on seed 0, judge on this one


@dataclass(frozen=True)
class Cell:
    """One column of the matrix: a problem under a ComfyUI model family and scheduler."""
    problem: str       # "mixture" (analytic) | "digits" (learned)
    family: str        # "eps" (SD1.5 EPS) | "flow" (SD3-style CONST, shift 3)
    scheduler: str     # a comfy.samplers scheduler name

    @property
    def name(self) -> str:
        schedule = "flow s3" if self.family == "flow" else f"EPS {self.scheduler}"
        return f"{self.problem} {schedule}"


SCHEDULES = (("eps", "karras"), ("eps", "normal"), ("flow", "simple"))
CELLS = tuple(Cell(p, f, s) for p in ("mixture", "digits") for f, s in SCHEDULES)


@dataclass
class Reference:
    x: torch.Tensor                 # the exact (converged) samples
    sigma_start: float              # where every sampler of the cell starts
    features: torch.Tensor
    fd_data: float                  # its Fréchet distance to the data: the floor
    converged_target: FrechetTarget
    labels: torch.Tensor | None
    refinement_rms: float           # RMS change when the ODE steps double (128 samples)
    seconds: float


_references: dict = {}


def reference(cell: Cell, seeds: tuple[int, ...], n_per_seed: int, ode_steps: int) -> Reference:
    key = (cell.problem, cell.family, cell.scheduler, seeds, n_per_seed, ode_steps)
    if key not in _references:
        start = time.perf_counter()
        prob = problem(cell.problem)
        noise = noise_for(prob, seeds, n_per_seed)
        sigmas = cs.sigmas_for("euler", cell.family, cell.scheduler, 10)
        x_start = cs.initial_latent(cell.family, sigmas, noise)
        sigma_start = float(sigmas[0])
        x = exact_solution(prob, cell.family, x_start, sigma_start, ode_steps)
        few = slice(0, min(128, len(x)))
        finer = exact_solution(prob, cell.family, x_start[few], sigma_start, 2 * ode_steps)
        feats = prob.features(x)
        _references[key] = Reference(
            x=x, sigma_start=sigma_start, features=feats, fd_data=prob.data_target(feats),
            converged_target=FrechetTarget(*moments(feats)), labels=prob.components(x),
            refinement_rms=rms_error(x[few], finer), seconds=time.perf_counter() - start)
    return _references[key]


def run_matrix(samplers=None, nfes=NFES_MATRIX, seeds=(0,), cells=CELLS, n_samples: int = 512,
               ode_steps: int = 200, progress=None) -> list[dict]:
    """Run every sampler at every NFE on every cell; one record (a dict) per combination.

    ``samplers``: names from ``bench.comfy_samplers.all_samplers()`` (default: all of them:
    'evodiff:<variant>' for each core variant, then ComfyUI's built-ins). ``seeds``: noise seeds,
    ``n_samples`` samples each (use ``(HELDOUT_SEED,)`` to judge a tuned variant). Record keys:
    sampler, cell, problem, family, scheduler, nfe_target, nfe (measured), steps, rms (vs the
    exact solution), excess_fd (FD to the data minus the exact solution's), fd_data,
    fd_converged (FD to the exact solution's samples), changed (mixture component changes),
    and the split-half noise of each: rms_noise, excess_fd_noise.
    """
    samplers = tuple(samplers) if samplers is not None else cs.all_samplers()
    seeds = tuple(seeds)
    records = []
    with _quiet("evodiff_core"):  # its few-step warnings are the point of the benchmark, not news
        for cell in cells:
            records += _run_cell(cell, samplers, nfes, seeds, n_samples, ode_steps, progress)
    return records


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_cell(cell, samplers, nfes, seeds, n_samples, ode_steps, progress) -> list[dict]:
    records = []
    prob = problem(cell.problem)
    ref = reference(cell, seeds, n_samples, ode_steps)
    noise = noise_for(prob, seeds, n_samples)
    denoise = prob.denoiser(cell.family)
    # paired halves: the sampler's and the exact solution's features of the same noises
    excess = lambda f, rf: prob.data_target(f) - prob.data_target(rf)  # noqa: E731
    for sampler in samplers:
        for nfe in nfes:
            steps, achieved = cs.steps_for_nfe(sampler, cell.family, cell.scheduler, nfe)
            start = time.perf_counter()
            run = cs.run_sampler(sampler, cell.family, cell.scheduler, steps, denoise, noise)
            seconds = time.perf_counter() - start
            if run.nfe != achieved or float(run.sigmas[0]) != ref.sigma_start:
                raise AssertionError(f"{sampler}: NFE {run.nfe} (probed {achieved}) or start sigma "
                                     f"{float(run.sigmas[0])} (exact solution's {ref.sigma_start}) differ")
            feats = prob.features(run.x)
            fd_data = prob.data_target(feats)
            record = dict(
                sampler=sampler, cell=cell.name, problem=cell.problem, family=cell.family,
                scheduler=cell.scheduler, nfe_target=nfe, nfe=run.nfe, steps=steps,
                seeds=list(seeds), n_samples=len(noise),
                rms=rms_error(run.x, ref.x),
                rms_noise=split_half_noise(rms_error, run.x, ref.x),
                fd_data=fd_data, excess_fd=fd_data - ref.fd_data,
                excess_fd_noise=split_half_noise(excess, feats, ref.features),
                fd_converged=ref.converged_target(feats),
                changed=(changed_component(prob.components(run.x), ref.labels)
                         if ref.labels is not None else None),
                finite=bool(torch.isfinite(run.x).all()), seconds=seconds)
            records.append(record)
            if progress:
                progress(record)
    return records


def references_summary() -> list[dict]:
    """The convergence check of every exact solution computed so far."""
    return [dict(problem=k[0], family=k[1], scheduler=k[2], n=len(r.x), ode_steps=k[5],
                 refinement_rms=r.refinement_rms, fd_data=r.fd_data, seconds=r.seconds)
            for k, r in _references.items()]


def _fmt(value, digits=3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "nan"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def table(records, value: str, rows=None, columns: str = "cell", where=None) -> str:
    """Markdown table of ``value``: rows = samplers, columns = cells or NFEs ("nfe_target").

    Cells whose measured NFE differs from the target (heun at even targets) show it as "@n".
    Each column's best value is bold (lowest, or for excess FD lowest in absolute value).
    """
    recs = [r for r in records if all(r[k] == v for k, v in (where or {}).items())]
    rows = rows or list(dict.fromkeys(r["sampler"] for r in recs))
    cols = list(dict.fromkeys(r[columns] for r in recs))
    lookup = {(r["sampler"], r[columns]): r for r in recs}
    best = {}
    for c in cols:
        vals = [lookup[(s, c)][value] for s in rows if (s, c) in lookup and lookup[(s, c)][value] is not None]
        vals = [v for v in vals if v == v]
        best[c] = min(vals, key=lambda v: metric_score(value, v)) if vals else None
    header = "| sampler | " + " | ".join(str(c) for c in cols) + " |"
    lines = [header, "|---" + "|---:" * len(cols) + "|"]
    for s in rows:
        cells = []
        for c in cols:
            r = lookup.get((s, c))
            if r is None:
                cells.append("")
                continue
            text = _fmt(r[value])
            if r[value] is not None and r[value] == best[c]:
                text = f"**{text}**"
            if r["nfe"] != r["nfe_target"]:
                text += f" @{r['nfe']}"
            cells.append(text)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
