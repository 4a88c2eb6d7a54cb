"""Put "evodiff" into ComfyUI's sampler lists, so every node with a sampler_name combo offers it."""
from __future__ import annotations

import logging

import comfy.k_diffusion.sampling
import comfy.samplers

from .sampler_function import sample_evodiff

log = logging.getLogger(__name__)

SAMPLER_NAME = "evodiff"


def register_evodiff_sampler() -> None:
    """Idempotent: lists are extended in place (never rebound, never at index 0), once.

    ``comfy.samplers.ksampler(name)`` looks functions up as ``k_diffusion.sampling.sample_<name>``,
    and KSampler / KSamplerAdvanced / KSamplerSelect read ``SAMPLER_NAMES`` (the same list object
    as ``KSampler.SAMPLERS``) each time their inputs are built.
    """
    attribute = "sample_" + SAMPLER_NAME
    existing = getattr(comfy.k_diffusion.sampling, attribute, None)
    if existing is None:
        setattr(comfy.k_diffusion.sampling, attribute, sample_evodiff)
    elif not getattr(existing, "evodiff_pack", False):
        log.warning("EVODiff: another custom node pack already registered the sampler '%s' (%s.%s); "
                    "leaving it in place. KSampler's '%s' runs that one; the SamplerEVODiff node "
                    "still runs this pack's.", SAMPLER_NAME, getattr(existing, "__module__", "?"),
                    getattr(existing, "__qualname__", "?"), SAMPLER_NAME)
    for names in _sampler_name_lists():
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)


def _sampler_name_lists():
    """The distinct list objects to extend; KSampler.SAMPLERS is normally SAMPLER_NAMES itself."""
    lists = [comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES, comfy.samplers.KSampler.SAMPLERS]
    distinct = []
    for names in lists:
        if isinstance(names, list) and not any(names is seen for seen in distinct):
            distinct.append(names)
    return distinct
