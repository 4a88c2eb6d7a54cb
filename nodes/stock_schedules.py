"""ComfyUI's own schedules for a model, as candidates for EVODiffCalibrate's guard.

The formulas stay in ComfyUI (comfy.samplers, the AlignYourSteps and GITS nodes); this only
asks for them, so the core never imports ComfyUI.
"""
from __future__ import annotations

import math

import comfy.samplers

SCHEDULERS = ("karras", "exponential", "simple", "beta", "kl_optimal")
GITS_COEFF = 1.20          # the GITSScheduler node's default, the paper's value for SD
TABLE_RANGE_TOLERANCE = 1e-3   # a published table applies where its ends are the model's sigma range


def _sigma_range(model_sampling) -> tuple[float, float]:
    return float(model_sampling.sigma_max), float(model_sampling.sigma_min)


def _fits(table, sigma_max: float, sigma_min: float) -> bool:
    return (math.isclose(float(table[0]), sigma_max, rel_tol=TABLE_RANGE_TOLERANCE)
            and math.isclose(float(table[-1]), sigma_min, rel_tol=TABLE_RANGE_TOLERANCE))


def table_schedules(sigma_max: float, sigma_min: float, steps: int) -> dict:
    """The AlignYourSteps and GITS tables whose range is the model's (SD1.5 and SDXL)."""
    out = {}
    try:
        from comfy_extras import nodes_align_your_steps as ays, nodes_gits as gits
    except ImportError:   # a ComfyUI without those nodes: the formula schedules still serve
        return out
    for model_type, table in ays.NOISE_LEVELS.items():
        if _fits(table, sigma_max, sigma_min):
            out[f"ays_{model_type.lower()}"] = ays.AlignYourStepsScheduler.execute(model_type, steps, 1.0).result[0]
    if _fits(gits.NOISE_LEVELS[GITS_COEFF][-1], sigma_max, sigma_min):
        out["gits"] = gits.GITSScheduler.execute(GITS_COEFF, steps, 1.0).result[0]
    return out


def stock_schedules(model_sampling, steps: int) -> dict:
    """{name: sigmas} of every stock schedule for this model_sampling and number of steps."""
    out = {name: comfy.samplers.calculate_sigmas(model_sampling, name, steps) for name in SCHEDULERS}
    return {**out, **table_schedules(*_sigma_range(model_sampling), steps)}
