"""EVODiff, the entropy-aware variance-optimized diffusion sampler (Li et al., NeurIPS 2025),
for k-diffusion-style sigma schedules. Pure torch: this package never imports ComfyUI.

    from evodiff_core import sample_evodiff
    x0 = sample_evodiff(model, x, sigmas, extra_args=None, callback=None, disable=None, shift=0.5)

Read beside the spec, docs/algorithm.md (its equation numbers, and the table from them to the
paper's), and the paper; the improved variant is derived in docs/variants.md:
  schedule.py   sigma list → solver grid, per-step scalars (1)–(5), which intervals call the model
  steps.py      what both variants share: the Euler step (E1)–(E2), the step interface
  reference.py  the official steps, equations (6)–(22) and (F1)–(F5)
  improved.py   the improved variant's steps, (V1)–(V10)
  sampler.py    the ComfyUI sampler signature, the loop over the plan, dtype, progress, errors
  calibrate.py  a few-step schedule learned on the model through that sampler (docs/calibration.md)
"""
from .sampler import (DEFAULT_SHIFT, NOISE_SCHEDULES, SHIFT_MAX, SHIFT_MIN, VARIANTS,
                      option_problems, sample_evodiff)
from .calibrate import Calibration, calibrate, calibrate_schedule

__all__ = ["sample_evodiff", "option_problems", "DEFAULT_SHIFT", "SHIFT_MIN", "SHIFT_MAX", "VARIANTS", "NOISE_SCHEDULES",
           "calibrate_schedule", "calibrate", "Calibration"]
