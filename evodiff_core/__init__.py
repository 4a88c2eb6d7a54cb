"""EVODiff, the entropy-aware variance-optimized diffusion sampler (Li et al., NeurIPS 2025),
for k-diffusion-style sigma schedules. Pure torch: this package never imports ComfyUI.

    from evodiff_core import sample_evodiff
    x0 = sample_evodiff(model, x, sigmas, extra_args=None, callback=None, disable=None, shift=0.5)

Read beside the spec (evodiff-algorithm.md) and the paper:
  schedule.py   sigma list → solver grid and per-step scalars, equations (1)–(5)
  reference.py  the steps, equations (6)–(22) and (F1)–(F5)
  sampler.py    the ComfyUI sampler signature, dtype, progress, error reporting
"""
from .sampler import (DEFAULT_SHIFT, NOISE_SCHEDULES, SHIFT_MAX, SHIFT_MIN, VARIANTS,
                      option_problems, sample_evodiff)

__all__ = ["sample_evodiff", "option_problems", "DEFAULT_SHIFT", "SHIFT_MIN", "SHIFT_MAX", "VARIANTS", "NOISE_SCHEDULES"]
