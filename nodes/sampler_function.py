"""The one sampler function ComfyUI calls, for KSampler ("evodiff") and for SamplerEVODiff alike.

It only decides which noise schedule the model uses and hands everything else to the core.
"""
from __future__ import annotations

import logging

import comfy.model_sampling

from ..evodiff_core import sample_evodiff as core_sample_evodiff

log = logging.getLogger(__name__)

# Widget value meaning "ask the model"; the other choices are the core's NOISE_SCHEDULES.
AUTO_NOISE_SCHEDULE = "auto"


def find_model_sampling(model):
    """The model's ``model_sampling`` object, or None when a wrapper hides it.

    ``model`` is what KSAMPLER hands a sampler: KSamplerX0Inpaint around the guider, whose
    ``model_patcher`` knows the patched model_sampling (ModelSamplingSD3/Flux replace it).
    """
    inner = getattr(model, "inner_model", None)
    patcher = getattr(inner, "model_patcher", None)
    if patcher is not None and hasattr(patcher, "get_model_object"):
        try:
            return patcher.get_model_object("model_sampling")
        except (AttributeError, KeyError):
            pass
    # Older k-diffusion style path: guider.inner_model is the BaseModel.
    return getattr(getattr(inner, "inner_model", None), "model_sampling", None)


def noise_schedule_for(model) -> str:
    """'flow' for flow-matching models (CONST: SD3, Flux, Wan, ...), 've' for EPS / V / EDM."""
    model_sampling = find_model_sampling(model)
    if model_sampling is None:
        log.debug("EVODiff: no model_sampling reachable through %s; assuming a VE model (EPS/V).",
                  type(model).__name__)
        return "ve"
    return noise_schedule_of(model_sampling)


def noise_schedule_of(model_sampling) -> str:
    """'flow' for a CONST (flow-matching) model_sampling, 've' for the others."""
    return "flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "ve"


def sample_evodiff(model, x, sigmas, extra_args=None, callback=None, disable=None,
                   noise_schedule=AUTO_NOISE_SCHEDULE, **options):
    """ComfyUI sampler signature; ``options`` (shift, variant) go to the core unchanged."""
    if noise_schedule == AUTO_NOISE_SCHEDULE:
        noise_schedule = noise_schedule_for(model)
    return core_sample_evodiff(model, x, sigmas, extra_args=extra_args, callback=callback,
                               disable=disable, noise_schedule=noise_schedule, **options)


# Marks the function as this pack's, so a second load recognises its own registration.
sample_evodiff.evodiff_pack = True
