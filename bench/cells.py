"""What the benchmark measures: cells (problem x model x scheduler x cfg), their catalogues, run settings, records.

Every benchmark is a list of cells over bench.matrix: UNGUIDED (`scripts/bench`), full_cells() and QUICK_CELLS
(the stress matrix), SETS (the held-out run's tuning and validation sets)."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from typing import TypedDict

from .common import EVODIFF_PREFIX, is_flow

HELDOUT_SEED = 1000   # tune on seed 0, judge on this one
GUIDED = ("mixture-cfg", "digits-cfg", "mixture-b-cfg", "digits-b-cfg")


@dataclass(frozen=True)
class Cell:
    """A problem under a guidance scale (guided problems only) and a ComfyUI model + scheduler."""
    problem: str        # a bench.problems.PROBLEMS key: "mixture", "mixture-cfg", "digits", "digits-cfg", ...
    family: str         # a bench.comfy_samplers.FAMILIES key or flow<shift>: "eps", "edm", "flow3", ...
    scheduler: str      # a comfy.samplers scheduler name
    cfg: float | None = None
    label: str | None = field(default=None, compare=False)   # a name other than the stress matrix's

    def __post_init__(self):
        if (self.cfg is not None) != (self.problem in GUIDED):
            raise ValueError(f"{self.problem}: a guidance scale is needed exactly for {GUIDED}")

    @property
    def name(self) -> str:
        if self.label is not None:
            return self.label
        guidance = f" w={self.cfg:g}" if self.cfg is not None else ""
        model = {"eps": "SD1.5", "edm": "EDM", "flow": "flow s3"}.get(self.family) or (
            f"flow s{self.family[4:]}" if is_flow(self.family) else self.family)
        return f"{self.problem}{guidance}, {model} {self.scheduler}"

    def axes(self) -> dict:
        """The fields every record of the cell carries."""
        return {k: v for k, v in asdict(self).items() if k != "label"}


# `scripts/bench`: the unguided matrix, named as docs/benchmarks.md names it
UNGUIDED_SCHEDULES = (("eps", "karras"), ("eps", "normal"), ("flow", "simple"))
UNGUIDED = tuple(Cell(p, f, s, label=f"{p} {'flow s3' if f == 'flow' else 'EPS ' + s}")
                 for p in ("mixture", "digits") for f, s in UNGUIDED_SCHEDULES)

# the stress matrix's schedule axis: (family, scheduler)
SCHEDULES = (tuple(("eps", s) for s in ("karras", "normal", "simple", "sgm_uniform", "exponential"))
             + (("edm", "karras"), ("edm", "exponential"))
             + tuple((f"flow{shift}", s) for shift in (1, 3, 6) for s in ("simple", "beta", "normal")))
GUIDED_SCHEDULES = (("eps", "karras"), ("eps", "normal"), ("edm", "karras"), ("flow3", "simple"))
MIXTURE_CFGS = (1, 2, 4, 7)
DIGITS_CFGS = (1, 3, 5)


def full_cells() -> tuple[Cell, ...]:
    """Every schedule x {mixture, mixture-cfg w=4, digits}, then the guidance axes on four schedules."""
    every = [Cell("mixture", f, s) for f, s in SCHEDULES]
    every += [Cell("mixture-cfg", f, s, 4.0) for f, s in SCHEDULES]
    every += [Cell("digits", f, s) for f, s in SCHEDULES]
    for f, s in GUIDED_SCHEDULES:
        every += [Cell("mixture-cfg", f, s, float(w)) for w in MIXTURE_CFGS]
        every += [Cell("digits-cfg", f, s, float(w)) for w in DIGITS_CFGS]
    return tuple(dict.fromkeys(every))          # w=4 on the guided schedules is listed twice


# a representative few: strong guidance, the EDM and flow models, the learned guided model
QUICK_CELLS = (Cell("mixture-cfg", "eps", "karras", 4.0), Cell("mixture-cfg", "eps", "karras", 7.0),
               Cell("mixture", "edm", "karras"), Cell("mixture-cfg", "flow3", "simple", 4.0),
               Cell("digits-cfg", "eps", "karras", 3.0), Cell("mixture", "eps", "normal"))

# the held-out run's tuning set: every axis of the full matrix, the cells the solver's rules were developed on
TUNING_CELLS = (
    Cell("mixture-cfg", "eps", "karras", 1.0), Cell("mixture-cfg", "eps", "karras", 4.0),
    Cell("mixture-cfg", "eps", "karras", 7.0), Cell("mixture-cfg", "eps", "normal", 4.0),
    Cell("mixture-cfg", "edm", "karras", 4.0), Cell("mixture-cfg", "flow3", "simple", 4.0),
    Cell("digits-cfg", "eps", "karras", 3.0), Cell("digits-cfg", "eps", "karras", 5.0),
    Cell("digits-cfg", "flow3", "simple", 3.0),
    Cell("mixture", "edm", "karras"), Cell("digits", "edm", "karras"),
    Cell("mixture", "eps", "normal"), Cell("mixture", "eps", "simple"), Cell("mixture", "eps", "sgm_uniform"),
    Cell("mixture", "eps", "exponential"), Cell("mixture", "flow1", "normal"), Cell("mixture", "flow6", "beta"),
    Cell("digits", "flow3", "simple"))
# ... and its validation set, nothing tuned on: other problems (mixture geometry, digits net), cfgs and schedules
VALIDATION_CELLS = (
    Cell("mixture-b-cfg", "eps", "karras", 3.0), Cell("mixture-b-cfg", "eps", "exponential", 5.0),
    Cell("mixture-b-cfg", "eps", "beta", 2.0), Cell("mixture-b-cfg", "edm", "exponential", 3.0),
    Cell("mixture-b-cfg", "flow5", "beta", 3.0),
    Cell("digits-b-cfg", "eps", "karras", 2.0), Cell("digits-b-cfg", "eps", "kl_optimal", 4.0),
    Cell("digits-b-cfg", "flow2", "simple", 4.0), Cell("digits-b-cfg", "edm", "karras", 1.0),
    Cell("mixture-b", "eps", "karras"), Cell("mixture-b", "eps", "normal"),
    Cell("mixture-b", "eps", "kl_optimal"), Cell("mixture-b", "eps", "beta"),
    Cell("mixture-b", "edm", "karras"), Cell("mixture-b", "flow2", "normal"),
    Cell("mixture-b", "flow5", "simple"))
SETS = {"tuning": TUNING_CELLS, "validation": VALIDATION_CELLS}   # bench.verdicts.SET_WORDS names them
# the earlier defaults, run from their own commits, newest first: the trust-gated step before (V11)/(V12)
# (cb0fc30) and the step before the trust gate (0.2.0's, cd34a6a)
PREVIOUS = (f"{EVODIFF_PREFIX}@cb0fc30", f"{EVODIFF_PREFIX}@cd34a6a")
HELDOUT_SAMPLERS = (EVODIFF_PREFIX, *PREVIOUS, "evodiff:improved@shift=0", "evodiff:reference", "euler", "dpmpp_2m",
                    "deis", "ipndm", "uni_pc", "res_multistep", "gradient_estimation")


def of_set(records: list[dict], name: str) -> list[dict]:
    cells = {c.name for c in SETS[name]}
    return [r for r in records if r["cell"] in cells]


@dataclass(frozen=True)
class Settings:
    """How much of each cell is run: NFEs, noise samples per seed, the exact solution's RK4 steps, seeds."""
    nfes: tuple[int, ...]
    n_samples: int
    ode_steps: int
    seeds: tuple[int, ...] = (0,)
    cost_repeats: int = 0       # `scripts/bench`'s cost benchmark; 0: not run

    def with_seed(self, seed: int) -> Settings:
        return replace(self, seeds=(seed,))

    def describe(self, cells: str = "", seed: str = "seed") -> str:
        """The header's settings line; ``cells``: e.g. '6 cells, '."""
        seeds = ", ".join(map(str, self.seeds))
        return (f"{cells}NFE {list(self.nfes)}, {self.n_samples} samples per cell ({seed} {seeds}), "
                f"exact ODE: RK4 with {self.ode_steps} steps in log sigma")


BENCH_QUICK = Settings(nfes=(5, 8, 10), n_samples=512, ode_steps=100, cost_repeats=2)
BENCH_FULL = Settings(nfes=(5, 6, 8, 10, 12, 15, 20, 25), n_samples=2048, ode_steps=200, cost_repeats=5)
STRESS_QUICK = Settings(nfes=(5, 8, 10), n_samples=384, ode_steps=100)
STRESS_FULL = Settings(nfes=(4, 5, 6, 8, 10, 12, 15, 20, 25, 30), n_samples=1024, ode_steps=200)
HELDOUT = Settings(nfes=(5, 6, 8, 10, 15, 20, 30), n_samples=384, ode_steps=100, seeds=(HELDOUT_SEED,))


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    seeds.add_argument("--heldout", dest="seed", action="store_const", const=HELDOUT_SEED,
                       help=f"use the held-out seed {HELDOUT_SEED}")


# One sampler at one NFE on one cell, keyed by (sampler, cell, nfe_target): a row of results.json. A run
# on given sigmas is one more sampler column under its own name ('evodiff:calibrated').
Point = TypedDict("Point", {
    "sampler": str, "cell": str, "problem": str, "family": str, "scheduler": str, "cfg": float | None,
    "nfe_target": int, "nfe": int, "steps": int, "seeds": list[int], "n_samples": int,  # nfe: calls, counted
    "finite": bool, "error": str | None,            # error: the sampler's exception
    # FD to the exact solution's samples (inf when failed) and RMS error against it, with split-half noise
    "fd": float, "fd_noise": float, "rms": float, "rms_noise": float,
    "changed": int | None,      # samples ending in another mixture component than the exact solution
    "fd_data": float, "excess_fd": float, "excess_fd_noise": float,  # against_data: FD to the data, - exact's
    "seconds": float,
    "diverged": bool | None, "vs_rival": str | None, "best_of_all": bool,    # bench.verdicts.judge
    "calibration_calls": int, "shift": float, "chosen": str,    # a calibrated point: its calibration's result
}, total=False)
