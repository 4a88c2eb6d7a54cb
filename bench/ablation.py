"""Ablations of the default step's rules, as benchmark samplers 'evodiff~<rule>' (docs/variants.md §7).

Each name runs the current core with one rule of the robustness round switched off, by setting
that rule's own constant for the duration of the sampler call (the core is not edited):

  evodiff~no-gate          shift μ = 0: trust ν = c, the slopes' disagreement is ignored (V6)
  evodiff~no-conditioning  (V6') off: c = 1 whatever the ratio q of consecutive steps
  evodiff~no-probe-ending  (V10) off: the last step is (V9) and the final call denoises x_N
  evodiff~full-first-probe the first order-2 probe extrapolates with trust 1, not at the Euler point
  evodiff~no-final-extrapolation  (V11) off: a list ending in 0 returns its final call's D_N
  evodiff~no-warmup-corrector     (V12) off: the Euler warm-up is carried on uncorrected

    python -m bench.ablation     # both sets of bench.stress_heldout -> bench_out/ablation/report.md
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from evodiff_core import improved, sample_evodiff

PREFIX, SEPARATOR = "evodiff", "~"   # comfy_samplers.EVODIFF_PREFIX; that module imports this one
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _patched(owner, name, value):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _first_probe_with_full_trust():
    """Steps start with ν = 1 (a scalar tensor) instead of None, so the first probe is x_E + a1·g−."""
    init = improved.Steps.__init__

    def starting_trusted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.trust = torch.ones(())

    return _patched(improved.Steps, "__init__", starting_trusted)


def _without_warmup_corrector():
    """order2_step handed weights whose (V12) weight is 0."""
    step = improved.order2_step

    def euler_warmup(x, denoised_prev, denoised_prev2, weights, *args, **kwargs):
        return step(x, denoised_prev, denoised_prev2, dataclasses.replace(weights, warmup=0.0), *args, **kwargs)

    return _patched(improved, "order2_step", euler_warmup)


RULES = {
    "no-gate": lambda: contextlib.nullcontext(),   # shift 0, passed as an option
    "no-conditioning": lambda: _patched(improved, "SLOPE_BASELINE_RATIO", math.inf),
    "no-probe-ending": lambda: _patched(improved, "PROBE_ENDING_MIN_LOG_SNR_STEP", math.inf),
    "full-first-probe": _first_probe_with_full_trust,
    "no-final-extrapolation": lambda: _patched(improved.Steps, "final_denoised", lambda self, denoised, _: denoised),
    "no-warmup-corrector": _without_warmup_corrector,
}
SAMPLERS = tuple(f"{PREFIX}{SEPARATOR}{rule}" for rule in RULES)


def rule_of(sampler: str) -> str | None:
    name, sep, rule = sampler.partition(SEPARATOR)
    return rule if name == PREFIX and sep and rule in RULES else None


def sampler_function(rule: str):
    """sample_evodiff with ``rule`` off for the call (ComfyUI's sampler signature)."""
    def ablated(model, x, sigmas, **options):
        if rule == "no-gate":
            options["shift"] = 0.0
        with RULES[rule]():
            return sample_evodiff(model, x, sigmas, **options)
    return ablated


def main() -> int:
    from . import quality, stress, stress_heldout

    torch.set_num_threads(1)
    start = time.perf_counter()
    samplers = ("evodiff", *SAMPLERS, "euler", "dpmpp_2m")
    cells = stress_heldout.CELLS + stress_heldout.VALIDATION_CELLS
    records = stress.run(cells, samplers, stress_heldout.NFES, (quality.HELDOUT_SEED,), stress_heldout.N_SAMPLES,
                         stress_heldout.ODE_STEPS, None)
    out = ROOT / "bench_out" / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(stress.jsonable(records), indent=1))
    lines = ["# Ablation of the default step's rules (held-out seed)\n",
             f"`python -m bench.ablation`, {time.perf_counter() - start:.0f} s. Each row: the default against the "
             "default with that rule off, by FD to the exact solution (noise rule of docs/stress.md). "
             "'rule helps' = the default is better beyond noise.\n",
             "| rule off | set | rule helps | tie | rule hurts | where it hurts |", "|---|---|---:|---:|---:|---|"]
    for sampler in SAMPLERS:
        for set_name in stress_heldout.SETS:
            found = stress_heldout.against(stress_heldout.of_set(records, set_name), sampler)
            lines.append(f"| {rule_of(sampler)} | {set_name} | {len(found['won'])} | {len(found['tie'])} | "
                         f"{len(found['lost'])} | {'; '.join(found['lost']) or '—'} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
