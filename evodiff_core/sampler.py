"""The sampler entry point: ComfyUI / k-diffusion signature around the EVODiff steps."""
from __future__ import annotations

import math

import torch

from . import improved, reference
from .schedule import plan
from .steps import euler_step

try:  # ComfyUI ships tqdm; the core must still import with torch alone
    from tqdm.auto import trange
except ImportError:  # pragma: no cover - exercised only without tqdm
    def trange(n, disable=None):
        return range(n)

DEFAULT_SHIFT = 0.5          # the paper's / reference's μ
SHIFT_MIN, SHIFT_MAX = 0.0, 2.0  # reference ζ = sig(|ζ*| − μ): past 2 a step grows up to 1/sig(−2) ≈ 8×
VARIANTS = ("improved", "reference")    # the first one is the default (docs/variants.md)
_STEPS = {"improved": improved.Steps, "reference": reference.Steps}
NOISE_SCHEDULES = ("ve", "flow")


def option_problems(**options) -> list[str]:
    """What is wrong with the given options (shift, variant, noise_schedule), each saying what to
    choose instead; options not given are not checked. Empty when all is well."""
    problems = []
    if "shift" in options:
        shift = options["shift"]
        if not (isinstance(shift, (int, float)) and not isinstance(shift, bool) and math.isfinite(shift)
                and SHIFT_MIN <= shift <= SHIFT_MAX):
            problems.append(f"shift must be a number in [{SHIFT_MIN}, {SHIFT_MAX}] (default {DEFAULT_SHIFT}), "
                            f"got {shift!r}")
    if "variant" in options and options["variant"] not in VARIANTS:
        problems.append(f"unknown variant {options['variant']!r}; choose one of {', '.join(VARIANTS)}")
    if "noise_schedule" in options and options["noise_schedule"] not in NOISE_SCHEDULES:
        problems.append(f"noise_schedule must be one of {', '.join(NOISE_SCHEDULES)} ('ve' for EPS/V models, "
                        f"'flow' for flow-matching CONST models), got {options['noise_schedule']!r}")
    return problems


def _check_options(shift, variant, noise_schedule):
    problems = option_problems(shift=shift, variant=variant, noise_schedule=noise_schedule)
    if problems:
        raise ValueError("EVODiff: " + "; ".join(problems) + ".")


@torch.no_grad()
def sample_evodiff(model, x, sigmas, extra_args=None, callback=None, disable=None,
                   shift=DEFAULT_SHIFT, variant=VARIANTS[0], noise_schedule="ve"):
    """EVODiff (Li et al., NeurIPS 2025) over a k-diffusion / ComfyUI sigma list.

    ``model(x, sigma * s_in, **extra_args)`` returns the denoised estimate; ``sigmas`` is
    non-increasing. Returns the state at ``sigmas[-1]`` (the clean sample when it is 0).

    * ``shift``: EVODiff's variance shift μ: the reference's ζ = sig(|ζ*| − μ) (docs/algorithm.md (20));
      in the improved variant the exponent of the trust ν = (1 − δ)^μ of (V6). It is not the timestep shift
      of flow models (ModelSamplingSD3/Flux).
    * ``variant``: one of :data:`VARIANTS`. ``"reference"`` reproduces the official code;
      ``"improved"`` (the default) is its consistent, schedule-aware form (docs/variants.md).
    * ``noise_schedule``: ``"ve"`` (x = x0 + σ·ε: EPS/V models) or ``"flow"`` (x = (1−σ)·x0 + σ·ε:
      CONST models). The improved variant integrates the ODE for that schedule; the reference
      variant treats every list as VE sigmas, like the original.

    Beyond the reference (docs/algorithm.md §8–9):
    * Lists ending in 0: the reference variant behaves exactly as the original (final step, then
      D(x_N, σ_N)); the improved variant ends with its consistent last step (docs/variants.md).
    * Lists that stop early (split schedules) end with a consistent second-order step instead of
      the reference's rescaled one, so the state at ``sigmas[-1]`` can be handed to a second sampler.
    * Equal consecutive sigmas are zero-length steps and are skipped (no model call).
    * Fewer than two solver steps: one sigma returns x; ``[σ, 0]`` returns D(x, σ); a single
      solver step is one Euler (DDIM) step, followed by D(x, σ) if the list ends in 0.
    * Any rank ≥ 2 (inner products per sample and channel over every later dim), any batch
      (samples independent), fp16/bf16 models (arithmetic in float32, float64 for float64 x;
      the output has x's dtype). A model that returns NaN/inf raises, naming the step and sigma;
      a sampler state that diverges first raises saying so.
    """
    _check_options(shift, variant, noise_schedule)
    if x.dim() < 2:
        raise ValueError(f"EVODiff: x must be [batch, channels, ...], got shape {tuple(x.shape)}.")
    extra_args = {} if extra_args is None else extra_args
    sigma_list = [float(s) for s in sigmas.tolist()]  # the one host read of the schedule
    p = plan(sigma_list)

    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    sigmas = sigmas.to(device=x.device, dtype=torch.promote_types(sigmas.dtype, torch.float32))
    s_in = sigmas.new_ones([x.shape[0]])
    flat = (x.shape[0], x.shape[1], -1)   # [B, C, L]: every dim after the channel flattened
    # one pair of device bools per model call (its input, its output): read once, at the end
    finite_flags = []
    call_grid_steps = []

    def denoise(x_state, j):
        """D(x, σ_j) for grid index j, as [B, C, L] in the working dtype; the model sees x's
        own shape and dtype."""
        x_model = x_state.view(x.shape).to(x.dtype)
        out = model(x_model, sigmas[p.grid_index[j]] * s_in, **extra_args)
        out = out.to(work_dtype).reshape(flat)
        # a NaN/inf anywhere makes the sum NaN/inf; the input says whether the sampler broke first
        # (the input's sum accumulates in float32: an fp16 sum overflows where no element does)
        finite_flags.append(torch.stack([torch.isfinite(x_model.sum(dtype=work_dtype)), torch.isfinite(out.sum())]))
        call_grid_steps.append(j)
        return out

    state = x.to(work_dtype).reshape(flat)
    steps = _STEPS[variant](p, shift, noise_schedule)
    steps.may_overwrite_state = callback is None   # a callback may keep every x it is handed
    # the variant's plan: improved's probe ending moves the final call into step N, the
    # reference merges near-equal sigmas
    p = steps.plan
    grid = p.grid
    denoised = None   # the newest model output D_{i−1}; after the trailing σ_N → 0, the sample

    for k in trange(len(sigma_list) - 1, disable=disable):
        iv = p.intervals[k]
        if iv.calls_model:
            denoised = denoise(state, iv.start)
            if iv.kind == "to_zero":   # the sample at σ = 0 from the final call (improved's (V11))
                denoised = steps.final_denoised(denoised)
            else:
                steps.remember(denoised)
        elif iv.kind == "to_zero":
            denoised = steps.to_zero(state)   # the final denoised, without a call (probe ending)
        if callback is not None:
            callback({"x": state.view(x.shape), "i": k, "sigma": sigmas[k], "sigma_hat": sigmas[k],
                      "denoised": (state if denoised is None else denoised).view(x.shape)})
        if iv.kind == "skip":
            continue
        if iv.kind == "to_zero":
            state = denoised
        elif iv.kind in ("warmup", "euler"):
            state = euler_step(state, denoised, grid[iv.start], grid[iv.end])
        elif iv.kind == "order2":
            state, denoised = steps.order2(iv.end, state, lambda x_probe: denoise(x_probe, iv.end))
        else:  # "final"
            state = steps.last(iv.end, state)

    cause = steps.finish(latent_dtype=x.dtype, result=state)
    result = state.view(x.shape).to(x.dtype)
    _raise_if_not_finite(finite_flags, call_grid_steps, result, p, sigma_list, variant, cause)
    return result


def _raise_if_not_finite(finite_flags, call_grid_steps, result, p, sigma_list, variant, cause=None):
    """One device→host read for the whole call: were every model input and output, and the
    result (in the latent's dtype), finite? The first non-finite one says who broke; ``cause``
    (from the variant's finish()) says why the sampler did, where the variant knows."""
    result_ok = torch.isfinite(result).all()  # exact, once per run; no float64 (MPS has none)
    *flags, (result_ok, _) = torch.stack(finite_flags + [result_ok.expand(2)]).tolist()
    if all(a and b for a, b in flags) and result_ok:
        return
    fix = cause or ("Use more steps or a lower cfg" + ("" if variant == VARIANTS[0] else
                                                        f", or the default '{VARIANTS[0]}' variant") + ".")
    for call, (input_ok, output_ok) in enumerate(flags):
        k = p.grid_index[call_grid_steps[call]]
        where = f"model call {call + 1} of {p.nfe} (step {k}, sigma = {sigma_list[k]:.6g})"
        if not input_ok:
            raise FloatingPointError(
                f"EVODiff: the sampler state diverged (NaN/inf, or beyond the latent's dtype) before "
                f"{where}; every model output until then was finite. {fix}")
        if not output_ok:
            raise FloatingPointError(
                f"EVODiff: the model returned NaN/inf at {where}. The sampler cannot recover from "
                "that. Common causes: an fp16 model overflowing (try bf16/fp32, or "
                "--force-upcast-attention), a too high cfg, or a broken LoRA/patch.")
    raise FloatingPointError(
        "EVODiff: the sampler's result is NaN/inf (or beyond the latent's dtype) although every "
        f"model input and output was finite, in its last step (sigma = {sigma_list[-1]:.6g}). {fix}")
