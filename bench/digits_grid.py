"""Digit grid CLI: the picture beside the numbers, docs/evodiff_digits.png.

Digits 0–9 from the learned class-conditional model at cfg 3 (SD1.5 EPS karras), one row per sampler at
5 and 8 NFE under the converged samples; the same noise, labels and model in every row.

    python -m bench.digits_grid [--out /tmp/grid.png]    # about 20 s; `scripts/bench --full` runs it too
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import comfy_samplers as cs
from . import figures
from .cells import HELDOUT_SEED, Cell
from .common import DOCS, quiet
from .metrics import rms_error
from .problems import noise_for, problem
from .matrix import denoiser, exact

CELL = Cell("digits-cfg", "eps", "karras", 3.0)
# the pack, the usual default, the best built-in on this cell (deis at 6–20 NFE), two more
SAMPLERS = ("evodiff", "dpmpp_2m", "deis", "uni_pc", "euler")
NFES = (5, 8)
SEED = HELDOUT_SEED
ODE_STEPS = 200
OUT = DOCS / "evodiff_digits.png"
ALT = "Digits 0–9 from the learned model at cfg 3: converged samples above rows for evodiff, dpmpp_2m, deis, " \
      "uni_pc and euler at 5 and 8 NFE"
CAPTION = ("The same noise and labels in every row: the learned class-conditional digits model under cfg 3 "
           "(SD1.5 karras), solved to convergence (top) and by each sampler in 5 and 8 model calls, with each "
           "block's RMS error to the converged digits (`python -m bench.digits_grid`).")


def samples(cell=CELL, samplers=SAMPLERS, nfes=NFES, seed=SEED, ode_steps=ODE_STEPS) -> dict:
    """{'converged': x, (sampler, nfe): x, ...}: one digit per class 0..9, [10, 1, 8, 8] each."""
    labels = torch.arange(10)
    noise = noise_for(problem(cell.problem), (seed,), len(labels))
    out = {"converged": exact(cell, noise, labels, ode_steps)[0]}
    denoise = denoiser(cell, labels)
    with quiet():
        for sampler in samplers:
            for nfe in nfes:
                steps, _ = cs.steps_for_nfe(sampler, cell.family, cell.scheduler, nfe)
                run = cs.run_sampler(sampler, cell.family, cell.scheduler, steps, denoise, noise)
                if run.nfe != nfe:
                    raise AssertionError(f"{sampler}: {run.nfe} model calls, not {nfe}")
                out[(sampler, nfe)] = run.x.double()
    return out


def _strip(x: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """[N, 1, 8, 8] -> one [8 + 2 pad, N (8 + 2 pad)] image, digits side by side on white."""
    tiles = torch.nn.functional.pad(x[:, 0], (pad,) * 4, value=-1.0)
    return torch.cat(list(tiles), dim=1)


def draw(grid: dict, path: Path, samplers=SAMPLERS, nfes=NFES, cfg: float = CELL.cfg) -> None:
    """Rows: converged, then each sampler with its RMS error to it; one column block per NFE."""
    plt = figures.pyplot()
    rows = ["converged"] + list(samplers)
    fig, axes = plt.subplots(len(rows), len(nfes), figsize=(figures.WIDTH_IN, 0.62 * len(rows) + 0.7),
                             squeeze=False, layout="constrained")
    for i, row in enumerate(rows):
        for j, nfe in enumerate(nfes):
            ax = axes[i][j]
            x = grid[row] if row == "converged" else grid[(row, nfe)]
            ax.imshow(_strip(x).clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set(visible=row == "evodiff", linewidth=2.5)   # a frame round the pack's own rows
            if row != "converged":
                ax.set_xlabel(f"RMS to converged {rms_error(x, grid['converged']):.3f}", fontsize=12, labelpad=2)
            if i == 0:
                ax.set_title(f"samplers at {nfe} NFE", fontsize=figures.FONT + 2)
            if j == 0:
                label = "converged\n(exact ODE)" if row == "converged" else row
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=figures.FONT + 1,
                              fontweight="bold" if row == "evodiff" else "normal")
    fig.suptitle(f"Guided digits 0–9 (cfg {cfg:g}, SD1.5 karras), the same noise in every row", fontsize=figures.FONT)
    figures.save(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.digits_grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default {OUT})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    draw(samples(), args.out)
    print(f"[digits] wrote {args.out}")


if __name__ == "__main__":
    main()
