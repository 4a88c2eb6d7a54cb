"""The ComfyUI side of the benchmark: real schedules, real samplers, a counting model wrapper.

Nothing here re-implements ComfyUI: schedules are ``comfy.samplers.calculate_sigmas`` on real
``comfy.model_sampling`` objects, samplers are ``sampler_object(name)`` run through ``KSAMPLER.sample``
(noise scaling and its inverse included), step counts follow ``KSampler.calculate_sigmas``. The bare
name "evodiff" is the function this pack registers for KSampler, wrapped as ``ksampler("evodiff")`` does.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache

import torch

from tools import analytic
from tools.comfyui_runtime import PACK_DIR, model_patcher, prepare_comfyui

from . import cores
from .common import EVODIFF_PREFIX, core_noise_schedule, flow_shift, is_evodiff, is_flow  # noqa: F401 - its names too

BUILTIN_SAMPLERS = ("euler", "heun", "dpmpp_2m", "deis", "ipndm", "res_multistep",
                    "gradient_estimation", "uni_pc", "uni_pc_bh2")
# Deterministic samplers newer than 0.3.75, baselines wherever the running ComfyUI has them
# (exp_heun_2_x0: 0.33). Left out: cfgpp_ud10_ab (0.38) and every *_cfg_pp sampler, which take
# their uncond prediction from CFGGuider's post-CFG hook; the benchmark's model is not a guider.
NEWER_DETERMINISTIC = ("exp_heun_2_x0",)
# The stress matrix's other deterministic (ODE) samplers, where the running ComfyUI has them. Left out
# besides the cfg++ ones: those that draw noise, ddim (KSampler runs euler for it), dpm_adaptive (NFE
# not set).
EXTRA_DETERMINISTIC = ("heunpp2", "dpm_2", "lms", "ipndm_v", "dpm_fast") + NEWER_DETERMINISTIC
# Model families (the key of every schedule), as ComfyUI builds them: (config, its settings, ModelType).
# 'flow<shift>' is the SD3 flow model re-shifted as the ModelSamplingSD3 node does, e.g. flow1, flow6.
FAMILIES = {
    "eps": ("SD15", {"model_channels": 320, "context_dim": 768}, "EPS"),     # SD1.5, scaled-linear betas
    "edm": ("CosmosT2V", {"image_model": "cosmos", "in_channels": 16}, "EDM"),  # 80 -> 0.002, sigma_data 0.5
    "flow": ("SD3", {"in_channels": 16}, "FLOW"),     # sampling_settings: shift 3
}


@lru_cache(maxsize=None)
def comfyui():
    """Boot ComfyUI (CPU) once; return the `comfy` package with the modules used here imported."""
    prepare_comfyui()
    import comfy.k_diffusion.sampling
    import comfy.model_base
    import comfy.model_sampling
    import comfy.samplers
    import comfy.supported_models

    return comfy


@lru_cache(maxsize=None)
def model_sampling(family: str):
    """The real model_sampling object ComfyUI makes for the family (see FAMILIES)."""
    c = comfyui()
    shift = flow_shift(family)
    if family not in FAMILIES and shift is None:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}, flow<shift>")
    config, settings, model_type = FAMILIES["flow" if shift is not None else family]
    config = getattr(c.supported_models, config)(dict(settings))
    ms = c.model_base.model_sampling(config, c.model_base.ModelType[model_type])
    if shift is not None:   # what ModelSamplingSD3.patch does: a fresh model_sampling, then set_parameters
        ms.set_parameters(shift=shift, multiplier=1000)
    return ms


def evodiff_variants() -> tuple[str, ...]:
    """'evodiff:<variant>' for every variant the core offers (never a hard-coded list)."""
    from evodiff_core import VARIANTS

    return tuple(f"{EVODIFF_PREFIX}:{v}" for v in VARIANTS)


def offered(names) -> tuple[str, ...]:
    """Those of ``names`` the running ComfyUI offers as samplers (KSampler's list)."""
    available = comfyui().samplers.SAMPLER_NAMES
    return tuple(s for s in names if s in available)


def baseline_samplers() -> tuple[str, ...]:
    return BUILTIN_SAMPLERS + offered(NEWER_DETERMINISTIC)


def all_samplers() -> tuple[str, ...]:
    return evodiff_variants() + baseline_samplers()


@lru_cache(maxsize=None)
def pack_module(name: str):
    """A module of this pack's nodes/, which import ``..evodiff_core``: the repository as a package, made
    without running its __init__ (whose registration would put this copy into ComfyUI's global sampler
    table for the rest of the process, under the test harness's feet)."""
    comfyui()
    package = "evodiff_bench_pack"
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(PACK_DIR)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{package}.nodes.{name}")


def sigmas_for(sampler: str, family: str, scheduler: str, steps: int) -> torch.Tensor:
    """The sigma list KSampler would hand this sampler for ``steps`` steps."""
    c = comfyui()
    ms = model_sampling(family)
    if sampler in c.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        sigmas = c.samplers.calculate_sigmas(ms, scheduler, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return c.samplers.calculate_sigmas(ms, scheduler, steps)


def sampler_object(sampler: str, family: str):
    """A real comfy.samplers.KSAMPLER for a built-in or an EVODiff name: 'evodiff' is the pack's KSampler
    registration, the others run a core directly, with the noise schedule the pack would detect."""
    c = comfyui()
    if sampler == EVODIFF_PREFIX:  # what comfy.samplers.ksampler("evodiff") builds once registered
        return c.samplers.KSAMPLER(pack_module("sampler_function").sample_evodiff)
    options = {"noise_schedule": core_noise_schedule(family)}
    rule = cores.rule_of(sampler)
    if rule is not None:   # the current default with one of its rules off
        return c.samplers.KSAMPLER(cores.sampler_function(rule), options)
    _, rev = cores.split_name(sampler)
    if rev is not None:   # an earlier commit's default
        return c.samplers.KSAMPLER(cores.core_at(rev).sample_evodiff, options)
    if is_evodiff(sampler):
        from evodiff_core import sample_evodiff

        name, _, shift = sampler.partition("@shift=")   # 'evodiff:improved@shift=0': an ablation
        if shift:
            options["shift"] = float(shift)
        if ":" in name:  # 'evodiff@shift=x' keeps the core's default variant
            options["variant"] = name.split(":", 1)[1]
        return c.samplers.KSAMPLER(sample_evodiff, options)
    return c.samplers.sampler_object(sampler)


class CountingModel(analytic.CountingModel):
    """Stands where CFGGuider stands: ``model(x, sigma, model_options=..., seed=...)`` -> denoised. Every
    call is counted, and what samplers read (``inner_model.model_sampling``, ``model_patcher``) is real."""

    cfg = 1.0  # what KSAMPLER.sample logs from a guider (0.33+); there is no CFG here

    def __init__(self, denoiser, ms, exact_float64: bool = True):
        if exact_float64 and denoiser is not None:
            # exact maths in float64, handed back in the sampler's dtype as ComfyUI's models do
            super().__init__(lambda x, sigma: denoiser(x.double(), sigma.double()).to(x.dtype))
        else:
            super().__init__(denoiser)
        self.model_patcher = model_patcher(ms)
        self.inner_model = self.model_patcher.model


@dataclass
class Run:
    x: torch.Tensor          # the sampler's output latent
    nfe: int                 # model calls counted
    steps: int               # the KSampler "steps" value used
    sigmas: torch.Tensor


def run_sampler(sampler: str, family: str, scheduler: str, steps: int, denoiser,
                noise: torch.Tensor, seed: int = 0, exact_float64: bool = True, sigmas=None,
                callback=None) -> Run:
    """Sample from ``noise`` (unit Gaussian) exactly as KSampler would, txt2img, no CFG, in float32 as in
    ComfyUI; ``sigmas``: a given list (as SamplerCustom runs one); ``callback``: KSAMPLER's."""
    noise = noise.to(torch.float32)
    ms = model_sampling(family)
    if sigmas is None:
        sigmas = sigmas_for(sampler, family, scheduler, steps)
    model = CountingModel(denoiser, ms, exact_float64)
    x = sampler_object(sampler, family).sample(model, sigmas, {"model_options": {}, "seed": seed}, callback,
                                               noise, latent_image=torch.zeros_like(noise), disable_pbar=True)
    return Run(x=x, nfe=model.calls, steps=steps, sigmas=sigmas)


@lru_cache(maxsize=None)
def steps_for_nfe(sampler: str, family: str, scheduler: str, nfe: int) -> tuple[int, int]:
    """(steps, achieved NFE): the most steps whose NFE, measured on a 2x2 latent, does not exceed ``nfe``
    (heun's 2 calls a step but one on the last reach no even target)."""
    best = None
    for steps in range(1, nfe + 2):
        try:
            achieved = run_sampler(sampler, family, scheduler, steps, lambda x, s: 0.5 * x,
                                   torch.ones(1, 1, 2, 2)).nfe
        except Exception:
            if steps < 3:  # too few steps for this sampler's start-up rule
                continue
            raise
        if achieved <= nfe:
            best = (steps, achieved)
        if achieved >= nfe:
            break
    if best is None:
        raise ValueError(f"{sampler} cannot run in {nfe} model calls")
    return best


def initial_latent(family: str, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The latent KSAMPLER hands a sampler for txt2img: ComfyUI's own noise_scaling and max_denoise."""
    c = comfyui()
    ms = model_sampling(family)
    max_denoise = c.samplers.KSAMPLER(None).max_denoise(CountingModel(None, ms), sigmas)
    return ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), max_denoise)
